//! `poll-ref`: the smallest correct `poll(2)` echo server, a reference row
//! of `loadgen compare` beside `epoll-ref` and `select-ref`.
//!
//! Run with (two terminals):
//!
//! ```text
//! cargo run --release -p loadgen --bin poll-ref -- --addr 127.0.0.1:7010   # terminal 1
//! nc 127.0.0.1 7010                                                        # terminal 2: type, see it back
//! ```
//!
//! What it is: the same raw echo as `epoll-ref` and `select-ref` (one
//! `read` and one `write` per readable connection, a short write kept
//! until the socket is writable, no framing, no limits), on `poll(2)`.
//!
//! What `poll` fixes and what it keeps, next to `select`:
//!
//! - no `FD_SETSIZE`: the interest set is an array of `pollfd` (number,
//!   events wanted, events returned), as long as you like, so a
//!   descriptor numbered 50,000 is as welcome as one numbered 5;
//! - but every call still passes the *whole* array: the kernel copies it
//!   in, polls every entry and writes every `revents` back, and we scan
//!   every entry for what is ready. The work per wake-up still grows with
//!   the connections watched, not with the ones ready; that is what
//!   `epoll` removes (the interest set lives in the kernel, `epoll_wait`
//!   returns only the ready ones). Watch CPU per echo at 1,000 and 10,000
//!   connections in `loadgen compare`.
//!
//! Correctness kept, as in `epoll-ref`: a short write is buffered and the
//! connection is not read until it is sent; `read` = 0 is the client's
//! FIN; `EAGAIN` is a spurious wake-up; an error closes that connection
//! only (`POLLERR`/`POLLHUP` are passed to the `read` or `write`, which
//! reports them); `EMFILE` on accept stops watching the listener for
//! 100 ms; SIGTERM/SIGINT arrive on a signalfd: close everything, one
//! line on stderr, exit 0.

use std::io;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use loadgen::refs::{self, Accepted, CHUNK, Conn, close};

#[derive(Parser, Debug)]
#[command(
    name = "poll-ref",
    about = "The smallest correct poll(2) echo server (raw bytes, no limits): a reference row of `loadgen compare`"
)]
struct Args {
    /// Address to listen on; port 0 picks a free one, printed as `listening on ADDR`.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7010", value_parser = common::cli::parse_host_port)]
    addr: common::cli::HostPort,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match serve(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("poll-ref: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn entry(fd: i32, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

fn serve(args: &Args) -> io::Result<()> {
    let sigfd = refs::signal_fd()?;
    refs::raise_nofile();
    let lfd = refs::listen(args.addr.resolve()?)?;

    // The connections, in the same order as their entries in `fds`
    // (after the two fixed entries): entry k + 2 is conns[k].
    let mut conns: Vec<Conn> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let (mut accepted, mut echoed) = (0u64, 0u64);
    let mut paused_until: Option<Instant> = None;

    'run: loop {
        // ANCHOR: wait
        // The whole interest set, rebuilt for every call (a real server
        // would update it in place; the kernel's cost is the same: it
        // walks every entry either way). A negative fd is skipped by
        // poll: that is how the paused listener leaves the set.
        fds.clear();
        fds.push(entry(sigfd, libc::POLLIN));
        fds.push(entry(
            if paused_until.is_some() { -1 } else { lfd },
            libc::POLLIN,
        ));
        for c in &conns {
            let wanted = if c.wants_write() {
                libc::POLLOUT
            } else {
                libc::POLLIN
            };
            fds.push(entry(c.fd, wanted));
        }
        let timeout = paused_until.map_or(-1, |t| {
            t.saturating_duration_since(Instant::now()).as_millis() as i32 + 1
        });
        // SAFETY: `fds` is a valid, writable array of `len` pollfds; the
        // kernel writes only their `revents`.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
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
        if fds[0].revents != 0 {
            break 'run;
        }
        // Every connection's entry is looked at, ready or not: the cost
        // of poll. Walk backwards so swap_remove keeps the indexes of the
        // entries still to visit.
        for k in (0..conns.len()).rev() {
            let ready = fds[k + 2].revents;
            if ready == 0 {
                continue;
            }
            let conn = &mut conns[k];
            let keep = if conn.wants_write() {
                refs::flush(conn, &mut echoed)
            } else {
                refs::echo(conn, &mut buf, &mut echoed)
            };
            if !keep {
                close(conn.fd);
                conns.swap_remove(k);
            }
        }
        // Accept last: new connections join the table at the end, after
        // this round's entries were matched to their connections.
        if fds[1].revents != 0 {
            loop {
                match refs::accept(lfd)? {
                    Accepted::Empty => break,
                    Accepted::Again => continue,
                    Accepted::Pause(e) => {
                        eprintln!("poll-ref: accept: {e}; pausing accepts for 100 ms");
                        paused_until = Some(Instant::now() + Duration::from_millis(100));
                        break;
                    }
                    Accepted::Conn(fd) => {
                        conns.push(Conn::new(fd));
                        accepted += 1;
                    }
                }
            }
        }
    }

    close(lfd);
    let open = conns.len();
    for c in &conns {
        close(c.fd);
    }
    close(sigfd);
    eprintln!(
        "poll-ref stopped: {accepted} connections served, {open} open at shutdown, {echoed} bytes echoed"
    );
    Ok(())
}
