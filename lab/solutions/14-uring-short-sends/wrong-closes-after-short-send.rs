//! Exercise 14: an io_uring echo that resubmits short sends (chapter 10,
//! completion I/O).
//!
//! With io_uring you do not call `send()`: you submit a SEND request
//! (`opcode::Send`: this fd, these bytes) and later reap its completion,
//! whose `result` says how many bytes the kernel took, or `-errno`. Like a
//! `send()` on a socket whose buffer is full, a SEND can complete **short**:
//! it took fewer bytes than you asked for. The rest is still yours to send.
//! The classic io_uring echo bug treats a short send as done (the rest is
//! lost, and the next recv overwrites it) or gives up on the connection.
//!
//! Each connection has one buffer and at most one request in flight: a RECV
//! into `buf`, then SENDs of `buf[sent..len]` until all `len` bytes are
//! sent, then the next RECV. Fill in `on_sent`; everything else is done.
//! (`main` makes the kernel's send buffer small, 8 KiB, so short sends are
//! common, as they are with a slow client and big echoes.)
//!
//! Python's `conn.send(data)` may be short too; `conn.sendall(data)` is the
//! loop you are writing: `while sent < len: sent += send(data[sent:])`.
//!
//! Run:   cargo run --manifest-path lab/exercises/Cargo.toml -p ex14-uring-short-sends
//! Then:  nc 127.0.0.1 7114, and in another terminal
//!        head -c 50000000 /dev/zero | nc -q1 127.0.0.1 7114 | wc -c   (all 50000000 back?)
//! Grade: cargo run -p lab -- check 14
//! (Where the kernel refuses io_uring, a container's seccomp profile say,
//! the program says so and exits; the grader then skips.)

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use io_uring::{IoUring, opcode, squeue, types};

/// Bytes per connection buffer: the most one RECV takes.
const BUF: usize = 16 * 1024;

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// `buf[..len]` came from the last RECV; `buf[..sent]` of it is sent.
    len: usize,
    sent: usize,
}

/// What to submit next for a connection.
#[derive(Debug, PartialEq, Eq)]
#[allow(dead_code)] // until `on_sent` returns each of them
enum Next {
    /// A RECV into `buf`: everything received so far has been echoed.
    Recv,
    /// A SEND of `buf[sent..len]`: the rest of the echo.
    SendRest,
    /// Close the connection (an error).
    Close,
}

/// A SEND completed. `res` > 0: the kernel took `res` bytes of
/// `buf[sent..len]`, maybe fewer than that. `res` <= 0: the connection
/// failed (`-errno`). Update `conn.sent` and say what comes next.
fn on_sent(conn: &mut Conn, res: i32) -> Next {
    if res <= 0 {
        return Next::Close;
    }
    conn.sent += res as usize;
    if conn.sent < conn.len {
        // MISTAKE: a short send taken for a dead peer.
        Next::Close
    } else {
        Next::Recv
    }
}

// ---------------------------------------------------------------------------
// The loop: done, nothing to change below.

/// What a completion is about: the `user_data` given to its request.
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

/// Queue one request, making room in a full submission ring first.
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

fn submit_accept(ring: &mut IoUring, listener: &TcpListener) -> io::Result<()> {
    let fd = types::Fd(listener.as_raw_fd());
    let entry = opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
        .build()
        .user_data(Token::Accept.encode());
    // SAFETY: no address is written; the listener outlives the loop.
    unsafe { push(ring, entry) }
}

fn submit_recv(ring: &mut IoUring, slot: usize, conn: &mut Conn) -> io::Result<()> {
    let fd = types::Fd(conn.stream.as_raw_fd());
    let entry = opcode::Recv::new(fd, conn.buf.as_mut_ptr(), BUF as u32)
        .build()
        .user_data(Token::Recv(slot).encode());
    // SAFETY: one request per connection at a time, and a connection is
    // dropped only after a completion: `buf` stays put until this one.
    unsafe { push(ring, entry) }
}

fn submit_send(ring: &mut IoUring, slot: usize, conn: &Conn) -> io::Result<()> {
    let fd = types::Fd(conn.stream.as_raw_fd());
    let rest = &conn.buf[conn.sent.min(conn.len)..conn.len];
    let entry = opcode::Send::new(fd, rest.as_ptr(), rest.len() as u32)
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(Token::Send(slot).encode());
    // SAFETY: as for `submit_recv`.
    unsafe { push(ring, entry) }
}

/// The kernel's send buffer of every accepted connection (Linux copies it
/// from the listener): 4096 asked, about 8 KiB given, less than one RECV.
fn small_send_buffer(listener: &TcpListener) -> io::Result<()> {
    let size: libc::c_int = 4096;
    // SAFETY: setsockopt reads one c_int from `size`, which outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr = match args.iter().position(|a| a == "--addr") {
        Some(i) => args.get(i + 1).cloned().unwrap_or_default(),
        None => "127.0.0.1:7114".to_string(),
    };
    let mut ring = match IoUring::new(256) {
        Ok(ring) => ring,
        Err(e) => {
            eprintln!("io_uring is unavailable here: {e}");
            std::process::exit(3);
        }
    };
    let listener = TcpListener::bind(&addr)?;
    small_send_buffer(&listener)?;
    println!("listening on {}", listener.local_addr()?);

    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    submit_accept(&mut ring, &listener)?;
    let mut done = Vec::new();
    loop {
        ring.submit_and_wait(1)?;
        done.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        for (user_data, res) in done.drain(..) {
            let (slot, next) = match Token::decode(user_data) {
                Token::Accept => {
                    if res >= 0 {
                        // SAFETY: a new fd that nothing else owns.
                        let stream = unsafe { TcpStream::from_raw_fd(res as RawFd) };
                        let slot = free.pop().unwrap_or_else(|| {
                            conns.push(None);
                            conns.len() - 1
                        });
                        conns[slot] = Some(Conn {
                            stream,
                            buf: vec![0; BUF],
                            len: 0,
                            sent: 0,
                        });
                        if let Some(conn) = conns[slot].as_mut() {
                            submit_recv(&mut ring, slot, conn)?;
                        }
                    } else {
                        eprintln!("accept: {}", io::Error::from_raw_os_error(-res));
                    }
                    submit_accept(&mut ring, &listener)?;
                    continue;
                }
                Token::Recv(slot) => {
                    let Some(conn) = conns.get_mut(slot).and_then(Option::as_mut) else {
                        continue;
                    };
                    if res <= 0 {
                        (slot, Next::Close) // 0: the client's FIN, all echoed
                    } else {
                        (conn.len, conn.sent) = (res as usize, 0);
                        (slot, Next::SendRest)
                    }
                }
                Token::Send(slot) => {
                    let Some(conn) = conns.get_mut(slot).and_then(Option::as_mut) else {
                        continue;
                    };
                    (slot, on_sent(conn, res))
                }
            };
            let Some(conn) = conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            match next {
                Next::Recv => submit_recv(&mut ring, slot, conn)?,
                Next::SendRest if conn.sent < conn.len => submit_send(&mut ring, slot, conn)?,
                // Nothing left to send: receive.
                Next::SendRest => submit_recv(&mut ring, slot, conn)?,
                Next::Close => {
                    // Nothing is in flight for it: dropping closes the fd.
                    conns[slot] = None;
                    free.push(slot);
                }
            }
        }
    }
}
