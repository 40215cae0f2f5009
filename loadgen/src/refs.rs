//! What the `select-ref` and `poll-ref` reference servers share: the
//! syscalls of a raw echo around the readiness call (non-blocking accept,
//! one `read` and one `write` per wake-up, a pending buffer for a short
//! write, SIGTERM as a readable signalfd). Each binary
//! (`src/bin/select-ref.rs`, `src/bin/poll-ref.rs`) is then only its
//! readiness loop, so the two read side by side show just the difference
//! between `select(2)` and `poll(2)`; `epoll-ref` keeps its own copy of
//! these few lines because its interest changes go through `epoll_ctl`.
//!
//! Not a server by itself; see the binaries. Run one with:
//!
//! ```text
//! cargo run --release -p loadgen --bin poll-ref -- --addr 127.0.0.1:7010
//! nc 127.0.0.1 7010
//! ```

use std::io::{self, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{IntoRawFd, RawFd};

/// One read's worth: the most a connection ever has pending.
pub const CHUNK: usize = 64 * 1024;

/// One client: its socket and the echo bytes the kernel has not taken yet.
/// While `pending` holds unsent bytes the connection is not read, so it
/// never holds more than one read ([`CHUNK`]).
#[derive(Debug)]
pub struct Conn {
    pub fd: RawFd,
    pub pending: Vec<u8>,
    /// How much of `pending` has been written already.
    pub sent: usize,
}

impl Conn {
    pub fn new(fd: RawFd) -> Self {
        Conn {
            fd,
            pending: Vec::new(),
            sent: 0,
        }
    }

    /// Unsent echo bytes: wait for "writable", not "readable".
    pub fn wants_write(&self) -> bool {
        self.sent < self.pending.len()
    }
}

/// The return value of a libc call that reports failure as -1, as io::Result.
pub fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

pub fn close(fd: RawFd) {
    // SAFETY: `fd` is a descriptor this process owns and nobody else uses
    // (the caller drops it from its table); close(2) touches no memory.
    unsafe { libc::close(fd) };
}

/// Block SIGTERM and SIGINT and return a signalfd that becomes readable
/// when one arrives: shutdown is one more descriptor in the readiness
/// call, and no handler runs at a random point. Call before any thread
/// starts (there is none in these servers).
pub fn signal_fd() -> io::Result<RawFd> {
    // SAFETY: sigset_t is plain data; all-zero then sigemptyset is its
    // documented initialisation.
    let mut mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `mask` is a valid sigset_t we own; these calls only write it,
    // and pthread_sigmask/signalfd only read it (we are the only thread).
    unsafe {
        libc::sigemptyset(&mut mask);
        libc::sigaddset(&mut mask, libc::SIGTERM);
        libc::sigaddset(&mut mask, libc::SIGINT);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &mask, std::ptr::null_mut()) != 0 {
            return Err(io::Error::other("pthread_sigmask failed"));
        }
        check(libc::signalfd(
            -1,
            &mask,
            libc::SFD_NONBLOCK | libc::SFD_CLOEXEC,
        ))
    }
}

/// Bind, listen (non-blocking), print `listening on ADDR` on stdout.
pub fn listen(addr: SocketAddr) -> io::Result<RawFd> {
    let listener: TcpListener = common::net::listen(addr)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{}{local}", common::net::ANNOUNCE_PREFIX);
    let _ = out.flush();
    Ok(listener.into_raw_fd())
}

/// What one `accept4` gave.
#[derive(Debug)]
pub enum Accepted {
    /// A new non-blocking connection (TCP_NODELAY set).
    Conn(RawFd),
    /// EAGAIN: the backlog is empty.
    Empty,
    /// The client left before we took it (ECONNABORTED, EPROTO, EINTR):
    /// try the next one.
    Again,
    /// Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM): a
    /// level-triggered loop would see the listener ready again at once
    /// and spin, so the caller stops watching it for a while.
    Pause(io::Error),
}

pub fn accept(lfd: RawFd) -> io::Result<Accepted> {
    // SAFETY: null address pointers are allowed (we do not want the
    // peer's address); accept4 returns a new fd or -1.
    let fd = unsafe {
        libc::accept4(
            lfd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) => Ok(Accepted::Empty),
            Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO) => Ok(Accepted::Again),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                Ok(Accepted::Pause(e))
            }
            _ => Err(e),
        };
    }
    // Echoes must leave at once: Nagle's algorithm would hold a small
    // echo back waiting for an ACK.
    let one: libc::c_int = 1;
    // SAFETY: `one` outlives the call and its size is passed.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    Ok(Accepted::Conn(fd))
}

/// The connection is readable: one `read`, one `write` of what came (the
/// unsent rest, after a short write, goes to `pending`). False when the
/// connection is finished: FIN, reset, any error.
pub fn echo(conn: &mut Conn, buf: &mut [u8], echoed: &mut u64) -> bool {
    // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes.
    let n = unsafe { libc::read(conn.fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n == 0 {
        return false; // FIN: every byte it sent has been echoed already
    }
    if n < 0 {
        // EAGAIN: a spurious wake-up; anything else (ECONNRESET, ...):
        // this connection is over.
        return io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock;
    }
    let data = &buf[..n as usize];
    // SAFETY: `data` is a valid readable slice of `data.len()` bytes.
    let w = unsafe { libc::write(conn.fd, data.as_ptr().cast(), data.len()) };
    let written = if w < 0 {
        if io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock {
            return false; // EPIPE, ECONNRESET: gone
        }
        0
    } else {
        w as usize
    };
    *echoed += written as u64;
    if written < data.len() {
        // A short write: keep the rest; the loop now waits for "writable"
        // on this connection and stops reading it.
        conn.pending.clear();
        conn.pending.extend_from_slice(&data[written..]);
        conn.sent = 0;
    }
    true
}

/// The connection is writable and has pending output: write more of it.
/// False when the connection is finished.
pub fn flush(conn: &mut Conn, echoed: &mut u64) -> bool {
    let rest = &conn.pending[conn.sent..];
    // SAFETY: `rest` is a valid readable slice of `rest.len()` bytes.
    let w = unsafe { libc::write(conn.fd, rest.as_ptr().cast(), rest.len()) };
    if w < 0 {
        return io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock;
    }
    conn.sent += w as usize;
    *echoed += w as u64;
    if conn.sent == conn.pending.len() {
        conn.pending.clear();
        conn.sent = 0;
    }
    true
}

/// Raise the soft RLIMIT_NOFILE to the hard limit, so what stops a
/// server is its readiness call's own limit, not the default 1,024
/// descriptors of a login shell.
pub fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own, setrlimit reads it.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// A test aid (`--fill-fds-below N`): open `/dev/null` until the lowest
/// free descriptor number is at least `n`, so the next connections get
/// numbers near `n` without a thousand clients. Returns how many it opened
/// (they stay open, unused, until exit).
pub fn fill_fds_below(n: RawFd) -> io::Result<usize> {
    let mut opened = 0;
    loop {
        // SAFETY: a NUL-terminated path literal; open returns a fd or -1.
        let fd =
            check(unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })?;
        // The kernel hands out the lowest free number: once it is n - 1
        // or more, the next one is at least n.
        opened += 1;
        if fd >= n - 1 {
            return Ok(opened);
        }
    }
}
