//! The smallest correct io_uring echo: one thread, one ring, accept, recv and
//! send handed to the kernel as requests that come back finished. A short
//! send (the kernel took fewer bytes than asked) is resubmitted for the
//! rest, as often as it takes; the next recv waits until all is sent. No
//! limits, no timeouts, no shutdown: `src/uring/` adds those, with the
//! multishot recv, the provided-buffer ring and the byte budget.
//!
//! Run with (two terminals):
//!
//! ```text
//! cargo run -p async-server --example bare_uring_echo        # 127.0.0.1:8083
//! nc 127.0.0.1 8083
//! ```
//!
//! What to watch: `head -c 50000000 /dev/zero | nc -q1 127.0.0.1 8083 | wc -c`
//! prints 50000000: nc reads slower than it writes, sends come back short,
//! and each rest is sent again. Where the kernel refuses io_uring (a
//! container's seccomp profile, `kernel.io_uring_disabled`), it says so and
//! exits.
//!
//! | Python (blocking `socket`)          | here: the SQE we submit                 | the kernel's answer (CQE `result`) |
//! |-------------------------------------|-----------------------------------------|------------------------------------|
//! | `conn, addr = sock.accept()`        | `IORING_OP_ACCEPT` (`opcode::Accept`)   | the new fd, or `-errno`            |
//! | `data = conn.recv(16384)`           | `IORING_OP_RECV` into the conn's buffer | bytes received; 0 = the peer's FIN |
//! | `n = conn.send(data)` (may be short) | `IORING_OP_SEND` of `buf[sent..len]`   | bytes taken, maybe fewer than asked |
//! | `conn.sendall(data)`                | resubmit `SEND` for the rest until done | (one CQE per attempt)              |
//! | blocking in any of the above        | `io_uring_enter` (`submit_and_wait`)    | submits every SQE, sleeps for a CQE |
//! | `conn.close()`                      | plain `close(2)`, with nothing in flight | -                                  |
//!
//! The rule that makes it correct: from submit to completion the kernel owns
//! the buffer and the fd an SQE names. Each connection has at most one
//! operation in flight, so its buffer is never read and written at once and
//! it is closed only when nothing is pending.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use io_uring::{IoUring, opcode, squeue, types};

/// Bytes per connection buffer: the most one recv takes.
const BUF: usize = 16 * 1024;

// ANCHOR: token
/// What a completion is about: the 64-bit `user_data` we gave the SQE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Accept,
    Recv(usize),
    Send(usize),
}

impl Token {
    fn encode(self) -> u64 {
        match self {
            Token::Accept => 0,
            Token::Recv(slot) => (slot as u64) << 2 | 1,
            Token::Send(slot) => (slot as u64) << 2 | 2,
        }
    }

    fn decode(u: u64) -> Token {
        let slot = (u >> 2) as usize;
        match u & 3 {
            1 => Token::Recv(slot),
            2 => Token::Send(slot),
            _ => Token::Accept,
        }
    }
}
// ANCHOR_END: token

// ANCHOR: conn
struct Conn {
    stream: TcpStream,
    /// Received bytes being echoed. Its heap storage stays put when the
    /// `Conn` moves within the table, so the kernel's pointer stays valid.
    buf: Vec<u8>,
    /// `buf[..len]` was received; `buf[..sent]` of it is sent already.
    len: usize,
    sent: usize,
}
// ANCHOR_END: conn

/// Queue one SQE; if the submission ring is full, hand the queued ones to
/// the kernel first to make room.
///
/// # Safety
/// Every buffer and fd `entry` names stays valid until its completion.
unsafe fn push(ring: &mut IoUring, entry: squeue::Entry) -> io::Result<()> {
    // SAFETY: forwarded from the caller.
    while unsafe { ring.submission().push(&entry) }.is_err() {
        ring.submit()?;
    }
    Ok(())
}

fn accept(ring: &mut IoUring, listener: &TcpListener) -> io::Result<()> {
    let fd = types::Fd(listener.as_raw_fd());
    let entry = opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
        .flags(libc::SOCK_CLOEXEC)
        .build()
        .user_data(Token::Accept.encode());
    // SAFETY: a null address: the accept writes no memory of ours; the
    // listener lives as long as `serve`.
    unsafe { push(ring, entry) }
}

fn recv(ring: &mut IoUring, slot: usize, c: &mut Conn) -> io::Result<()> {
    let fd = types::Fd(c.stream.as_raw_fd());
    let entry = opcode::Recv::new(fd, c.buf.as_mut_ptr(), BUF as u32)
        .build()
        .user_data(Token::Recv(slot).encode());
    // SAFETY: `c.buf` (BUF bytes) is not touched, moved or freed until this
    // recv completes: the connection has no other operation in flight and
    // is dropped only after a completion.
    unsafe { push(ring, entry) }
}

// ANCHOR: send
fn send(ring: &mut IoUring, slot: usize, c: &Conn) -> io::Result<()> {
    let fd = types::Fd(c.stream.as_raw_fd());
    let rest = &c.buf[c.sent..c.len];
    let entry = opcode::Send::new(fd, rest.as_ptr(), rest.len() as u32)
        .flags(libc::MSG_NOSIGNAL) // a peer gone: EPIPE, not SIGPIPE
        .build()
        .user_data(Token::Send(slot).encode());
    // SAFETY: as for `recv`: nothing else touches `c.buf` until the send's
    // completion.
    unsafe { push(ring, entry) }
}
// ANCHOR_END: send

/// Echo every client of `listener`, forever.
pub fn serve(listener: TcpListener) -> io::Result<()> {
    let mut ring = IoUring::new(256)?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    accept(&mut ring, &listener)?;
    let mut done = Vec::new();
    // ANCHOR: loop
    loop {
        // The one syscall per turn: submit what is queued, sleep for a CQE.
        ring.submit_and_wait(1)?;
        done.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        for (user_data, res) in done.drain(..) {
            match Token::decode(user_data) {
                // ANCHOR_END: loop
                Token::Accept => {
                    if res >= 0 {
                        // SAFETY: a successful accept's result is a new fd
                        // that nothing else owns.
                        let stream = unsafe { TcpStream::from_raw_fd(res as RawFd) };
                        let _ = stream.set_nodelay(true);
                        let mut c = Conn {
                            stream,
                            buf: vec![0; BUF],
                            len: 0,
                            sent: 0,
                        };
                        let slot = free.pop().unwrap_or_else(|| {
                            conns.push(None);
                            conns.len() - 1
                        });
                        recv(&mut ring, slot, &mut c)?;
                        conns[slot] = Some(c);
                    } else {
                        eprintln!("accept: {}", io::Error::from_raw_os_error(-res));
                    }
                    accept(&mut ring, &listener)?; // one accept at a time
                }
                // ANCHOR: recv
                Token::Recv(slot) => {
                    let Some(c) = conns.get_mut(slot).and_then(Option::as_mut) else {
                        continue;
                    };
                    if res <= 0 {
                        // 0: the peer's FIN, and everything it sent is
                        // echoed (we recv only after a send is complete).
                        // Nothing is in flight: dropping closes the fd.
                        conns[slot] = None;
                        free.push(slot);
                        continue;
                    }
                    (c.len, c.sent) = (res as usize, 0);
                    send(&mut ring, slot, c)?;
                }
                // ANCHOR_END: recv
                // ANCHOR: short-send
                Token::Send(slot) => {
                    let Some(c) = conns.get_mut(slot).and_then(Option::as_mut) else {
                        continue;
                    };
                    if res <= 0 {
                        conns[slot] = None; // reset, broken pipe: close
                        free.push(slot);
                        continue;
                    }
                    c.sent += res as usize;
                    if c.sent < c.len {
                        // A short send: the rest, from where the kernel
                        // stopped. Treating it as done would lose bytes.
                        send(&mut ring, slot, c)?;
                    } else {
                        recv(&mut ring, slot, c)?;
                    }
                }
            }
            // ANCHOR_END: short-send
        }
    }
}

#[allow(dead_code)] // the test includes this file for `serve` alone
fn main() -> io::Result<()> {
    let addr = std::env::args().nth(1);
    let listener = TcpListener::bind(addr.as_deref().unwrap_or("127.0.0.1:8083"))?;
    println!("listening on {}", listener.local_addr()?);
    serve(listener).map_err(|e| {
        eprintln!("io_uring echo: {e} (the kernel may refuse io_uring here)");
        e
    })
}
