//! Exercise 11: a mio readiness loop that survives partial writes
//! (chapter 9, multiplexing).
//!
//! One thread, many non-blocking sockets, and `poll` (epoll on Linux) as the
//! only place the program sleeps. On a non-blocking socket:
//! - `read` returns `Err(WouldBlock)` when nothing more has arrived: not an
//!   error, it means "come back on the next readable event". mio is
//!   edge-triggered: read until WouldBlock, or the rest may never be announced;
//! - `write` may take only part of what you give it (the kernel's send
//!   buffer is full because the client is not reading), and then returns
//!   `Err(WouldBlock)`. Keep the rest in `conn.out`, register interest in
//!   WRITABLE, and write more when that event comes;
//! - register WRITABLE only while `conn.out` is not empty: a socket is
//!   writable almost all the time, and nothing to write means nothing to do.
//!
//! Fill in `on_readable`, `flush` and `interest`; the loop in `main` is done.
//!
//! Run:   cargo run --manifest-path lab/exercises/Cargo.toml -p ex11-mio-writable
//! Then:  nc 127.0.0.1 7111, and in another terminal
//!        head -c 50000000 /dev/zero | nc -q1 127.0.0.1 7111 | wc -c   (all 50000000 back?)
//! Grade: cargo run -p lab -- check 11

use std::collections::HashMap;
use std::io::{self, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(0);

struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet written back: what the kernel did not take yet.
    out: Vec<u8>,
    /// The client sent FIN (read returned 0).
    read_closed: bool,
    /// What the connection is registered for right now.
    registered: Interest,
}

/// A readable event. Read everything there is (until WouldBlock), append
/// it to `conn.out`, set `read_closed` on Ok(0), then `flush`.
fn on_readable(conn: &mut Conn) -> io::Result<()> {
    let mut buf = [0u8; 65536];
    loop {
        match conn.stream.read(&mut buf) {
            Ok(0) => {
                conn.read_closed = true; // FIN: echo what is left, then close
                break;
            }
            Ok(n) => conn.out.extend_from_slice(&buf[..n]),
            // Drained: the next readable event will say when there is more.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // (The workspace's event loop also stops reading past --max-pending, so
    // a client that never reads cannot make `out` grow without bound.)
    flush(conn)
}

/// Write as much of `conn.out` as the kernel takes now; keep the rest.
fn flush(conn: &mut Conn) -> io::Result<()> {
    while !conn.out.is_empty() {
        // MISTAKE: WouldBlock (the kernel's buffer is full) is treated like
        // any other error, so the connection is closed mid-echo.
        let n = conn.stream.write(&conn.out)?;
        conn.out.drain(..n);
    }
    Ok(())
}

/// What the connection should be registered for, given what it holds.
fn interest(conn: &Conn) -> Interest {
    if conn.out.is_empty() {
        Interest::READABLE
    } else {
        Interest::READABLE | Interest::WRITABLE
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr = match args.iter().position(|a| a == "--addr") {
        Some(i) => args.get(i + 1).cloned().unwrap_or_default(),
        None => "127.0.0.1:7111".to_string(),
    };
    let addr = addr
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("--addr {addr}: {e}")))?;
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(addr)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("listening on {}", listener.local_addr()?);

    let mut conns: HashMap<Token, Conn> = HashMap::new();
    let mut next_token = 1;
    let mut events = Events::with_capacity(256);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue; // a signal woke epoll_wait: not an error
            }
            return Err(e);
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                // Accept every waiting connection: edge-triggered again.
                loop {
                    match listener.accept() {
                        Ok((mut stream, _peer)) => {
                            let token = Token(next_token);
                            next_token += 1;
                            poll.registry()
                                .register(&mut stream, token, Interest::READABLE)?;
                            let registered = Interest::READABLE;
                            conns.insert(
                                token,
                                Conn {
                                    stream,
                                    out: Vec::new(),
                                    read_closed: false,
                                    registered,
                                },
                            );
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            eprintln!("accept failed: {e}");
                            break;
                        }
                    }
                }
                continue;
            }
            let token = event.token();
            let Some(conn) = conns.get_mut(&token) else {
                continue;
            };
            let mut result = Ok(());
            if event.is_readable() {
                result = on_readable(conn);
            }
            if result.is_ok() && event.is_writable() {
                result = flush(conn);
            }
            // Done: the client finished sending and has all its echo.
            let finished = conn.read_closed && conn.out.is_empty();
            if let Err(e) = &result {
                eprintln!("connection {}: {e}", token.0);
            }
            if result.is_err() || finished {
                if let Some(mut c) = conns.remove(&token) {
                    let _ = poll.registry().deregister(&mut c.stream);
                } // dropping the stream closes the socket
                continue;
            }
            let want = interest(conn);
            if want != conn.registered {
                poll.registry().reregister(&mut conn.stream, token, want)?;
                conn.registered = want;
            }
        }
    }
}
