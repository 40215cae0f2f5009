//! `epoll-ref`: the smallest correct epoll echo server, the **reference
//! row** ("practical limit") of `loadgen compare`.
//!
//! Run with (two terminals):
//!
//! ```text
//! cargo run --release -p loadgen --bin epoll-ref -- --addr 127.0.0.1:7010   # terminal 1
//! nc 127.0.0.1 7010                                                         # terminal 2: type, see it back
//! strace -c -f target/release/epoll-ref --addr 127.0.0.1:7010               # count its syscalls under load
//! ```
//!
//! What it is: level-triggered epoll, non-blocking sockets, no framing (raw
//! bytes are echoed as they arrive), no limits, no timeouts, no logging on
//! the hot path. libc directly: `epoll_create1`, `epoll_ctl`, `epoll_wait`,
//! `accept4(SOCK_NONBLOCK)`, `read`, `write`, and a `signalfd` so SIGTERM is
//! just another readable descriptor in the same `epoll_wait`.
//!
//! Why it is the practical limit: a closed-loop echo needs the kernel three
//! times per request, and this server asks it exactly three times, no more:
//! `epoll_wait` (which connections have bytes), `read` (take them), `write`
//! (give them back). Nothing else runs between them: no allocation, no
//! timer, no framing, no lock, no task switch. Any real server (framing,
//! limits, timeouts, back-pressure, fairness, a runtime) does this plus
//! something, so its server CPU per request divided by this one's (the
//! `x ref` column) says what that something costs on this machine, today.
//! Under load one `epoll_wait` reports many ready connections, so the
//! figure drops below three syscalls per echo; completion I/O (io_uring)
//! can go lower still by batching the reads and writes themselves.
//!
//! Correctness it does keep (what makes it "smallest *correct*"):
//!
//! - a short `write` (the client's receive window is full: it reads slowly)
//!   keeps the unsent rest in that connection's pending buffer and waits for
//!   `EPOLLOUT`; only then is the connection asked for `EPOLLOUT` (asking
//!   for it all the time would wake the loop for every idle writable
//!   socket: level-triggered means "still true, still reported");
//! - while output is pending the connection is not read (interest is
//!   `EPOLLOUT` only), so the pending buffer never holds more than one read
//!   and a client that never reads costs one buffer, not unbounded memory;
//! - `read` returning 0 is the client's FIN: everything it sent has already
//!   been echoed (we never read past pending output), so we close;
//! - `EAGAIN` is not an error (a spurious wake-up); `ECONNRESET` and
//!   friends close that one connection, never the server;
//! - `EMFILE` on accept: level-triggered epoll would report the listener
//!   again at once and spin, so it leaves the interest set for 100 ms;
//! - SIGTERM/SIGINT arrive on the signalfd: close everything, print one
//!   line on stderr, exit 0.
//!
//! What to watch: `loadgen compare --servers epoll-ref,event-loop --pin`
//! and the `x ref` column; `strace -c -f` on this binary under
//! `loadgen run --framing raw` shows `epoll_wait`, `read` and `write` with
//! about equal call counts, and nothing else.

use std::io::{self, Write as _};
use std::net::TcpListener;
use std::os::fd::{IntoRawFd, RawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use loadgen::refs::{self, Accepted};

#[derive(Parser, Debug)]
#[command(
    name = "epoll-ref",
    about = "The smallest correct epoll echo server (raw bytes, no limits): the reference of `loadgen compare`"
)]
struct Args {
    /// Address to listen on; port 0 picks a free one, printed as `listening on ADDR`.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7010", value_parser = common::cli::parse_host_port)]
    addr: common::cli::HostPort,
}

/// epoll tokens: a connection's token is its file descriptor (never
/// negative), so these two cannot collide with one.
const LISTENER: u64 = u64::MAX;
const SIGNALS: u64 = u64::MAX - 1;
/// One read's worth: the most a connection ever has pending.
const CHUNK: usize = 64 * 1024;

/// One client: its socket and the echo bytes the kernel has not taken yet.
struct Conn {
    fd: RawFd,
    pending: Vec<u8>,
    /// How much of `pending` has been written already.
    sent: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match serve(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("epoll-ref: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The return value of a libc call that reports failure as -1, as io::Result.
fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn ctl(epfd: RawFd, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: `ev` is a valid epoll_event we own for the duration of the
    // call; epoll_ctl copies it. Bad descriptors come back as errors.
    check(unsafe { libc::epoll_ctl(epfd, op, fd, &mut ev) }).map(drop)
}

fn close(fd: RawFd) {
    // SAFETY: `fd` is a descriptor this process owns and nobody else uses
    // (it is removed from our table before or right after); close(2)
    // touches no memory. Closing also removes it from the epoll set.
    unsafe { libc::close(fd) };
}

fn serve(args: &Args) -> io::Result<()> {
    // Block SIGTERM and SIGINT before anything else, then read them from a
    // signalfd: a signal becomes a readable descriptor, so the one
    // `epoll_wait` also waits for shutdown and no handler runs at a random
    // point. Rust ignores SIGPIPE in every binary, so a `write` to a reset
    // connection returns EPIPE instead of killing us.
    // SAFETY: sigset_t is plain data; all-zero then sigemptyset is its
    // documented initialisation.
    let mut mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `mask` is a valid sigset_t we own; these calls only write it,
    // and pthread_sigmask only reads it (we are the only thread).
    let sigfd = unsafe {
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
        ))?
    };

    let addr = args.addr.resolve()?;
    // bind + listen with SO_REUSEADDR, like every server (setup, not the
    // hot path, so the shared helper is fine).
    let listener: TcpListener = common::net::listen(addr)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let lfd = listener.into_raw_fd();

    // SAFETY: epoll_create1 takes a flag and returns a new descriptor or -1.
    let epfd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    ctl(
        epfd,
        libc::EPOLL_CTL_ADD,
        lfd,
        libc::EPOLLIN as u32,
        LISTENER,
    )?;
    ctl(
        epfd,
        libc::EPOLL_CTL_ADD,
        sigfd,
        libc::EPOLLIN as u32,
        SIGNALS,
    )?;

    {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{}{local}", common::net::ANNOUNCE_PREFIX);
        let _ = out.flush();
    }

    // The connection table, indexed by file descriptor (the kernel hands
    // out the lowest free number, so this stays dense).
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    // SAFETY: epoll_event is plain data; zeroed is a valid (empty) value.
    let mut events: Vec<libc::epoll_event> = vec![unsafe { std::mem::zeroed() }; 1024];
    let (mut accepted, mut echoed) = (0u64, 0u64);
    // Set while the listener is out of the interest set after EMFILE:
    // when to put it back.
    let mut paused_until: Option<Instant> = None;

    'run: loop {
        let timeout = paused_until.map_or(-1, |t| {
            t.saturating_duration_since(Instant::now()).as_millis() as i32 + 1
        });
        // ANCHOR: wait
        // SAFETY: `events` is a valid, writable array of `len` epoll_events;
        // the kernel writes at most that many.
        let n =
            unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), events.len() as i32, timeout) };
        // ANCHOR_END: wait
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // Only while paused (a clock read is not on the hot path
        // otherwise); under load events keep coming, so the deadline is
        // checked after every wake-up, not only after a timeout.
        if paused_until.is_some_and(|t| Instant::now() >= t) {
            ctl(
                epfd,
                libc::EPOLL_CTL_ADD,
                lfd,
                libc::EPOLLIN as u32,
                LISTENER,
            )?;
            paused_until = None;
        }
        for ev in &events[..n as usize] {
            let (token, flags) = (ev.u64, ev.events);
            if token == SIGNALS {
                break 'run;
            }
            if token == LISTENER {
                loop {
                    // The same accept rule as the select and poll rows
                    // (loadgen/src/refs.rs): EAGAIN ends the batch, a client
                    // that left is skipped, EMFILE pauses the listener, any
                    // other error ends the server (main prints it once).
                    let fd = match refs::accept(lfd)? {
                        Accepted::Empty => break,
                        Accepted::Again => continue,
                        Accepted::Pause(e) => {
                            eprintln!("epoll-ref: accept: {e}; pausing accepts for 100 ms");
                            ctl(epfd, libc::EPOLL_CTL_DEL, lfd, 0, LISTENER)?;
                            paused_until = Some(Instant::now() + Duration::from_millis(100));
                            break;
                        }
                        Accepted::Conn(fd) => fd,
                    };
                    if let Err(e) = ctl(
                        epfd,
                        libc::EPOLL_CTL_ADD,
                        fd,
                        libc::EPOLLIN as u32,
                        fd as u64,
                    ) {
                        eprintln!("epoll-ref: epoll_ctl(ADD): {e}");
                        close(fd);
                        continue;
                    }
                    let i = fd as usize;
                    if conns.len() <= i {
                        conns.resize_with(i + 1, || None);
                    }
                    conns[i] = Some(Conn {
                        fd,
                        pending: Vec::new(),
                        sent: 0,
                    });
                    accepted += 1;
                }
                continue;
            }
            let i = token as usize;
            let Some(conn) = conns.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            let keep = if conn.sent < conn.pending.len() {
                // Interest is EPOLLOUT only: room in the send buffer (or
                // EPOLLERR/EPOLLHUP, which the write then reports).
                flush(epfd, conn, &mut echoed)
            } else if flags & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                echo(epfd, conn, &mut buf, &mut echoed)
            } else {
                true
            };
            if !keep {
                close(conn.fd);
                conns[i] = None;
            }
        }
    }

    // Shutdown: the smallest one. Close the listener (the kernel resets
    // connections still in its backlog) and every connection.
    close(lfd);
    let open = conns.iter().flatten().count();
    for c in conns.iter().flatten() {
        close(c.fd);
    }
    close(epfd);
    close(sigfd);
    eprintln!(
        "epoll-ref stopped: {accepted} connections served, {open} open at shutdown, {echoed} bytes echoed"
    );
    Ok(())
}

/// The connection is readable: one `read`, one `write` of what came. False
/// when the connection is finished (FIN, reset, error).
fn echo(epfd: RawFd, conn: &mut Conn, buf: &mut [u8], echoed: &mut u64) -> bool {
    // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes.
    let n = unsafe { libc::read(conn.fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n == 0 {
        return false; // FIN: every byte it sent has been echoed already
    }
    if n < 0 {
        // EAGAIN: a spurious wake-up, try again later; anything else
        // (ECONNRESET, ...): this connection is over.
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
        // A short write: keep the rest, stop reading, wait for EPOLLOUT.
        conn.pending.clear();
        conn.pending.extend_from_slice(&data[written..]);
        conn.sent = 0;
        return ctl(
            epfd,
            libc::EPOLL_CTL_MOD,
            conn.fd,
            libc::EPOLLOUT as u32,
            conn.fd as u64,
        )
        .is_ok();
    }
    true
}

/// The connection is writable and has pending output: write more of it;
/// once it is all gone, go back to reading.
fn flush(epfd: RawFd, conn: &mut Conn, echoed: &mut u64) -> bool {
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
        return ctl(
            epfd,
            libc::EPOLL_CTL_MOD,
            conn.fd,
            libc::EPOLLIN as u32,
            conn.fd as u64,
        )
        .is_ok();
    }
    true
}
