//! The smallest correct readiness loop: one thread, non-blocking sockets,
//! mio (epoll on Linux), partial writes kept and finished on WRITABLE. It is
//! what Python's `selectors` example does, and what asyncio does under the
//! hood. `src/event_loop/` adds framing, --max-conns, --max-pending
//! (back-pressure), idle and stall timeouts, accept back-off and shutdown.
//!
//! Run it (two terminals):
//!   cargo run -p async-server --example bare_mio_echo          # 127.0.0.1:8082
//!   nc 127.0.0.1 8082
//! What to watch: `head -c 50000000 /dev/zero | nc -q1 127.0.0.1 8082 | wc -c`
//! prints 50000000: the writes came up short many times (the client reads
//! slower than it sends) and the loop finished each one on WRITABLE.
//!
//! | Python (selectors / asyncio)              | Rust (mio)                                  | syscalls |
//! |-------------------------------------------|---------------------------------------------|----------|
//! | `sel = selectors.DefaultSelector()`       | `Poll::new()`                                | `epoll_create1` |
//! | `sock.setblocking(False)`                 | mio sockets are always non-blocking          | `fcntl(O_NONBLOCK)` / `accept4(SOCK_NONBLOCK)` |
//! | `sel.register(sock, EVENT_READ, data)`    | `registry().register(&mut s, token, READABLE)` | `epoll_ctl(ADD)` |
//! | `sel.select()`                            | `poll.poll(&mut events, None)`               | `epoll_wait` |
//! | `BlockingIOError` from `recv` / `send`    | `Err(e)` with `e.kind() == WouldBlock`       | `EAGAIN` |
//! | `sent = sock.send(data)` (may be short)   | `Ok(n) = stream.write(&out)`, keep `out[n..]` | `write` |
//! | `sel.modify(sock, EVENT_READ | EVENT_WRITE)` | `registry().reregister(.., READABLE | WRITABLE)` | `epoll_ctl(MOD)` |
//!
//! mio is edge-triggered: an event says "something changed", once. So read
//! and accept until WouldBlock, or the rest is never announced again.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(0);

struct Conn {
    stream: TcpStream,
    out: Vec<u8>,   // read, not yet written back
    eof: bool,      // the client sent FIN
    writable: bool, // registered for WRITABLE right now
}

// ANCHOR: drive
/// Read all there is, then write all the kernel takes. `Ok(true)`: done.
fn drive(c: &mut Conn) -> io::Result<bool> {
    let mut buf = [0u8; 64 * 1024];
    while !c.eof {
        match c.stream.read(&mut buf) {
            Ok(0) => c.eof = true,
            Ok(n) => c.out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        // (No back-pressure here: a client that never reads makes `out`
        // grow. The event loop stops reading past --max-pending.)
    }
    while !c.out.is_empty() {
        match c.stream.write(&c.out) {
            Ok(n) => drop(c.out.drain(..n)), // a short write: keep the rest
            Err(e) if e.kind() == ErrorKind::WouldBlock => break, // wait for WRITABLE
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(c.eof && c.out.is_empty())
}
// ANCHOR_END: drive

fn main() -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(([127, 0, 0, 1], 8082).into())?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("listening on {}", listener.local_addr()?);
    let (mut conns, mut next) = (HashMap::new(), 1);
    let mut events = Events::with_capacity(256);
    // ANCHOR: events
    loop {
        match poll.poll(&mut events, None) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            r => r?,
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let t = Token(next);
                            next += 1;
                            poll.registry()
                                .register(&mut stream, t, Interest::READABLE)?;
                            conns.insert(
                                t,
                                Conn {
                                    stream,
                                    out: Vec::new(),
                                    eof: false,
                                    writable: false,
                                },
                            );
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            eprintln!("accept: {e}"); // e.g. EMFILE: try on the next event
                            break;
                        }
                    }
                }
                continue;
            }
            let t = ev.token();
            let Some(c) = conns.get_mut(&t) else { continue };
            match drive(c) {
                Ok(false) => {
                    // WRITABLE only while output waits: otherwise every
                    // free byte of send buffer would wake us for nothing.
                    let want_writable = !c.out.is_empty();
                    if want_writable != c.writable {
                        let want = if want_writable {
                            Interest::READABLE | Interest::WRITABLE
                        } else {
                            Interest::READABLE
                        };
                        poll.registry().reregister(&mut c.stream, t, want)?;
                        c.writable = want_writable;
                    }
                }
                done => {
                    if let Err(e) = done {
                        eprintln!("connection {}: {e}", t.0);
                    }
                    conns.remove(&t); // drop = close(); epoll forgets it
                }
            }
        }
    }
    // ANCHOR_END: events
}
