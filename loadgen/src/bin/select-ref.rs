//! `select-ref`: the smallest correct `select(2)` echo server, a reference
//! row of `loadgen compare` beside `epoll-ref` and `poll-ref`.
//!
//! Run with (two terminals):
//!
//! ```text
//! cargo run --release -p loadgen --bin select-ref -- --addr 127.0.0.1:7010   # terminal 1
//! nc 127.0.0.1 7010                                                          # terminal 2: type, see it back
//! ```
//!
//! What it is: the same raw echo as `epoll-ref` (non-blocking sockets, one
//! `read` and one `write` per readable connection, a short write kept in a
//! pending buffer until the socket is writable, no framing, no limits),
//! but the readiness call is `select(2)`, the oldest one (4.2BSD, 1983).
//!
//! What `select` costs, and what to watch in `loadgen compare`:
//!
//! - every call passes the *whole* interest set: the loop rebuilds two
//!   `fd_set` bitmaps (read, write) from the connection table, the kernel
//!   copies them in, checks every descriptor up to the highest, and
//!   overwrites them with the ready ones; we then test every bit again.
//!   Work per wake-up grows with the number of connections, not with the
//!   number that are ready: at 1 connection it is as cheap as epoll, at
//!   1,000 it is not;
//! - `fd_set` is a fixed bitmap of `FD_SETSIZE` = 1,024 bits: it limits
//!   descriptor **numbers**, not how many you watch. A connection whose
//!   number is 1,024 or more cannot be put in an `fd_set` at all (`FD_SET`
//!   would write past the bitmap: memory corruption, not an error). Raising
//!   `ulimit -n` does not help, the kernel hands out higher numbers and
//!   they still do not fit. This server therefore refuses such a
//!   connection: it logs why and closes it, and keeps serving the others.
//!   `loadgen compare` shows the 10,000-connection cell as "cannot run".
//!
//! Correctness kept, as in `epoll-ref`: a short write is buffered and the
//! connection is not read until it is sent (one buffer per client, however
//! slowly it reads); `read` = 0 is the client's FIN; `EAGAIN` is a
//! spurious wake-up; an error closes that connection only; `EMFILE` on
//! accept stops watching the listener for 100 ms (level-triggered, it
//! would be reported again at once); SIGTERM/SIGINT arrive on a signalfd:
//! close everything, one line on stderr, exit 0.
//!
//! `--fill-fds-below N` is a test aid: it opens `/dev/null` until the
//! next free descriptor number is N, so a test reaches the FD_SETSIZE
//! limit with three clients instead of a thousand.

use std::io;
use std::os::fd::RawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use loadgen::refs::{self, Accepted, CHUNK, Conn, close};

#[derive(Parser, Debug)]
#[command(
    name = "select-ref",
    about = "The smallest correct select(2) echo server (raw bytes, no limits): a reference row of `loadgen compare`"
)]
struct Args {
    /// Address to listen on; port 0 picks a free one, printed as `listening on ADDR`.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7010", value_parser = common::cli::parse_host_port)]
    addr: common::cli::HostPort,

    /// Test aid: open /dev/null until the next free descriptor number is N
    /// (connections then get numbers from N up).
    #[arg(long, value_name = "N")]
    fill_fds_below: Option<RawFd>,
}

/// The size of an `fd_set` in bits: descriptor numbers 0..FD_SETSIZE fit.
const FD_SETSIZE: RawFd = libc::FD_SETSIZE as RawFd;

fn main() -> ExitCode {
    let args = Args::parse();
    match serve(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("select-ref: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn empty_set() -> libc::fd_set {
    // SAFETY: fd_set is plain data (a bitmap); all-zero then FD_ZERO is
    // its documented initialisation.
    let mut set: libc::fd_set = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid fd_set we own.
    unsafe { libc::FD_ZERO(&mut set) };
    set
}

/// `FD_SET`, only for numbers that fit (every caller has checked; the
/// assertion is the proof, never reached by client input).
fn add(set: &mut libc::fd_set, fd: RawFd) {
    assert!((0..FD_SETSIZE).contains(&fd), "fd {fd} outside an fd_set");
    // SAFETY: 0 <= fd < FD_SETSIZE, so the bit is inside the bitmap.
    unsafe { libc::FD_SET(fd, set) };
}

fn has(set: &libc::fd_set, fd: RawFd) -> bool {
    // SAFETY: every fd tested was added, hence is below FD_SETSIZE.
    (0..FD_SETSIZE).contains(&fd) && unsafe { libc::FD_ISSET(fd, set) }
}

fn serve(args: &Args) -> io::Result<()> {
    let sigfd = refs::signal_fd()?;
    refs::raise_nofile();
    let lfd = refs::listen(args.addr.resolve()?)?;
    if lfd >= FD_SETSIZE || sigfd >= FD_SETSIZE {
        return Err(io::Error::other(format!(
            "the listener (fd {lfd}) or the signalfd (fd {sigfd}) is numbered FD_SETSIZE ({FD_SETSIZE}) or above: select(2) cannot watch it"
        )));
    }
    if let Some(n) = args.fill_fds_below {
        let opened = refs::fill_fds_below(n)?;
        eprintln!("select-ref: opened {opened} /dev/null descriptors: connections start at fd {n}");
    }

    // The connection table, indexed by descriptor number (all below
    // FD_SETSIZE: the bitmap's own bound keeps this table small too).
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let (mut accepted, mut refused, mut echoed) = (0u64, 0u64, 0u64);
    let mut paused_until: Option<Instant> = None;

    'run: loop {
        // ANCHOR: wait
        // The whole interest set, rebuilt for every call: select
        // overwrites its arguments with the ready subset.
        let mut readable = empty_set();
        let mut writable = empty_set();
        add(&mut readable, sigfd);
        let mut highest = sigfd;
        if paused_until.is_none() {
            add(&mut readable, lfd);
            highest = highest.max(lfd);
        }
        for c in conns.iter().flatten() {
            if c.wants_write() {
                add(&mut writable, c.fd);
            } else {
                add(&mut readable, c.fd);
            }
            highest = highest.max(c.fd);
        }
        let mut timeout = paused_until.map(|t| {
            let left = t.saturating_duration_since(Instant::now());
            libc::timeval {
                tv_sec: left.as_secs() as libc::time_t,
                tv_usec: left.subsec_micros() as libc::suseconds_t + 1,
            }
        });
        let timeout_ptr = timeout
            .as_mut()
            .map_or(std::ptr::null_mut(), |t| t as *mut libc::timeval);
        // SAFETY: both sets and the optional timeval are valid and ours;
        // every descriptor in them is below FD_SETSIZE and `highest + 1`
        // bounds them, as select requires.
        let n = unsafe {
            libc::select(
                highest + 1,
                &mut readable,
                &mut writable,
                std::ptr::null_mut(),
                timeout_ptr,
            )
        };
        // ANCHOR_END: wait
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if paused_until.is_some_and(|t| Instant::now() >= t) {
            paused_until = None;
        }
        if has(&readable, sigfd) {
            break 'run;
        }
        if has(&readable, lfd) {
            loop {
                match refs::accept(lfd)? {
                    Accepted::Empty => break,
                    Accepted::Again => continue,
                    Accepted::Pause(e) => {
                        eprintln!("select-ref: accept: {e}; pausing accepts for 100 ms");
                        paused_until = Some(Instant::now() + Duration::from_millis(100));
                        break;
                    }
                    Accepted::Conn(fd) if fd >= FD_SETSIZE => {
                        // The limit of select itself: this number has no
                        // bit in an fd_set. Refuse it, keep the others.
                        eprintln!(
                            "select-ref: refusing a connection: its descriptor number {fd} is FD_SETSIZE ({FD_SETSIZE}) or above, and select(2) cannot watch it (FD_SETSIZE limits descriptor numbers, not the count of sockets)"
                        );
                        close(fd);
                        refused += 1;
                    }
                    Accepted::Conn(fd) => {
                        let i = fd as usize;
                        if conns.len() <= i {
                            conns.resize_with(i + 1, || None);
                        }
                        conns[i] = Some(Conn::new(fd));
                        accepted += 1;
                    }
                }
            }
        }
        // Every connection is tested, ready or not: the cost of select.
        for slot in conns.iter_mut() {
            let Some(conn) = slot else { continue };
            let keep = if conn.wants_write() {
                !has(&writable, conn.fd) || refs::flush(conn, &mut echoed)
            } else {
                !has(&readable, conn.fd) || refs::echo(conn, &mut buf, &mut echoed)
            };
            if !keep {
                close(conn.fd);
                *slot = None;
            }
        }
    }

    close(lfd);
    let open = conns.iter().flatten().count();
    for c in conns.iter().flatten() {
        close(c.fd);
    }
    close(sigfd);
    eprintln!(
        "select-ref stopped: {accepted} connections served, {refused} refused (descriptor number >= FD_SETSIZE), {open} open at shutdown, {echoed} bytes echoed"
    );
    Ok(())
}
