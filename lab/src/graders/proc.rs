//! What the graders learn about the student's server from outside it, with
//! no cooperation from its code: its descriptors and threads (`/proc/PID`),
//! its epoll registrations (`/proc/PID/fdinfo` of its epoll descriptor), and
//! its descriptor limit, lowered and raised again with `prlimit(2)` while it
//! runs. Each one turns a requirement the source could only claim into one
//! the grader observes.

use std::io;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{Check, Run, Server, connect, describe_status, expect_bytes, fail, send};

/// The descriptor numbers the process has open now.
pub fn open_fds(pid: u32) -> io::Result<Vec<u32>> {
    let mut fds = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        if let Some(n) = e?.file_name().to_str().and_then(|s| s.parse().ok()) {
            fds.push(n);
        }
    }
    fds.sort_unstable();
    Ok(fds)
}

/// How many sockets the process has open now.
fn sockets(pid: u32) -> usize {
    open_fds(pid)
        .unwrap_or_default()
        .iter()
        .filter(|fd| {
            std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

/// How many threads the process runs now.
pub fn threads(pid: u32) -> io::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/task"))?.count())
}

/// Set the process's soft RLIMIT_NOFILE; returns the old (soft, hard).
fn set_nofile(pid: u32, soft: Option<u64>) -> io::Result<(u64, u64)> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit reads `new` (when given) and writes `old`, both valid
    // for the call; it acts on our own child process only.
    let rc = unsafe {
        libc::prlimit(
            pid,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old as *mut libc::rlimit,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if let Some(soft) = soft {
        let new = libc::rlimit {
            rlim_cur: soft.min(old.rlim_max),
            rlim_max: old.rlim_max,
        };
        // SAFETY: as above.
        let rc = unsafe {
            libc::prlimit(
                pid,
                libc::RLIMIT_NOFILE,
                &new as *const libc::rlimit,
                std::ptr::null_mut(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((old.rlim_cur, old.rlim_max))
}

/// The epoll registrations of the process: (target fd, event mask, data).
pub fn epoll_registrations(pid: u32) -> io::Result<Vec<(u32, u32, u64)>> {
    let mut out = Vec::new();
    for fd in open_fds(pid)? {
        let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap_or_default();
        if !link.to_string_lossy().contains("eventpoll") {
            continue;
        }
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))?;
        // Lines like "tfd:        7 events: 8000201d data:                1  pos:0 ino:..."
        for line in info.lines().filter(|l| l.starts_with("tfd:")) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let after = |key: &str| {
                words
                    .iter()
                    .position(|w| *w == key)
                    .and_then(|i| words.get(i + 1))
                    .copied()
            };
            let tfd = after("tfd:").and_then(|w| w.parse().ok());
            let mask = after("events:").and_then(|w| u32::from_str_radix(w, 16).ok());
            let data = after("data:").and_then(|w| u64::from_str_radix(w, 16).ok());
            if let (Some(t), Some(m), Some(d)) = (tfd, mask, data) {
                out.push((t, m, d));
            }
        }
    }
    Ok(out)
}

const WHY_ACCEPT: &str = "an accept error is not the end of the server: out of descriptors (EMFILE, \"Too many \
     open files\") or a connection aborted before accept (ECONNABORTED) pass. Log it, back off a \
     little, and accept again; `?` or break on accept's error ends the accept loop, and the server \
     with it";

/// The server runs out of descriptors: with its RLIMIT_NOFILE lowered so
/// that no new socket fits, a client X connects and accept fails with
/// EMFILE. The server must stay up, and once the limit is back it must
/// serve X (still in its listen queue) and a new client Y. The lines are
/// echoed, so this fits every echo exercise.
pub fn survives_emfile(run: &mut Run, server: &mut Server) -> Check {
    let pid = server.pid();
    let io = |e: io::Error| fail("to read /proc or set the limit", e.to_string(), "");
    // The clients of the steps before may still be closing: wait until the
    // listener is the only socket left, so that no descriptor is freed
    // under the lowered limit.
    let deadline = Instant::now() + Duration::from_secs(3);
    while sockets(pid) > 1 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let fds = open_fds(pid).map_err(io)?;
    // accept() takes the lowest free number; a limit at that number leaves
    // no room for one more descriptor.
    let lowest_free = (0..).find(|n| !fds.contains(n)).unwrap_or(0);
    run.step(format!(
        "out of descriptors: your server's RLIMIT_NOFILE lowered to {lowest_free} (no room for one more), \
         clients P (leaves at once) and X (sends \"x\\n\") connect: accept fails with EMFILE, your server \
         must go on"
    ));
    let (old_soft, _) = set_nofile(pid, Some(u64::from(lowest_free))).map_err(io)?;
    let restore = |server: &Server| {
        let _ = set_nofile(server.pid(), Some(old_soft));
    };
    // A blocking accept() reserves its descriptor before it sleeps, so a
    // server already waiting in accept gets one more connection under the
    // old limit. P takes it (and leaves at once); after P, every accept
    // needs a descriptor that does not fit.
    if let Ok(mut p) = connect(server.addr) {
        let _ = send(&mut p, b"p\n");
    }
    let mut x = connect(server.addr);
    let sent = match x.as_mut() {
        Ok(x) => send(x, b"x\n"),
        Err(f) => Err(f.clone()),
    };
    // Until the server says so on stderr, or 2 s have passed: accept is
    // called at once for a waiting connection, so a server that dies of it
    // dies within that time.
    let deadline = Instant::now() + Duration::from_secs(2);
    let exited = loop {
        if let Some(s) = server.exited() {
            break Some(s);
        }
        let tail = server.stderr_tail();
        if Instant::now() >= deadline
            || tail.contains("os error 24")
            || tail.contains("Too many open files")
        {
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    // Whatever the server does with the flood of errors, it gets a moment to
    // show whether it survives them.
    let exited = exited.or_else(|| server.wait_exit(Duration::from_millis(300)));
    restore(server);
    if let Some(s) = exited.or_else(|| server.wait_exit(Duration::from_millis(300))) {
        return Err(fail(
            "your server still running after an accept failed with EMFILE (\"Too many open files\")",
            format!(
                "it exited ({}){}",
                describe_status(Some(s)),
                server.stderr_tail()
            ),
            WHY_ACCEPT,
        ));
    }
    sent?;
    let mut x = x?;

    run.step(
        "the limit back up: X, waiting in the listen queue, is echoed, and so is a new client Y",
    );
    // Y's arrival is also a new readiness edge for a loop that gave up on
    // the listener after the error (edge-triggered epoll reports none for X).
    let mut y: TcpStream = connect(server.addr)?;
    send(&mut y, b"y\n")?;
    expect_bytes(
        &mut x,
        b"x\n",
        "once descriptors are free again, accept must succeed for the connection that waited: keep \
         calling accept after an error (with a short back-off), do not leave the accept loop",
    )?;
    drop(x);
    expect_bytes(
        &mut y,
        b"y\n",
        "after the EMFILE, the accept loop must go on serving new clients",
    )?;
    drop(y);
    if let Some(s) = server.exited() {
        return Err(fail(
            "your server still running",
            format!(
                "it exited ({}){}",
                describe_status(Some(s)),
                server.stderr_tail()
            ),
            WHY_ACCEPT,
        ));
    }
    Ok(())
}

/// How many received bytes wait unread in the TCP socket `local` <-> `remote`
/// (IPv4), from /proc/net/tcp's rx_queue.
pub fn tcp_rx_queue(local: std::net::SocketAddr, remote: std::net::SocketAddr) -> Option<u64> {
    let hex = |a: std::net::SocketAddr| match a {
        std::net::SocketAddr::V4(v4) => Some(format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        )),
        std::net::SocketAddr::V6(_) => None,
    };
    let (l, r) = (hex(local)?, hex(remote)?);
    let text = std::fs::read_to_string("/proc/net/tcp").ok()?;
    text.lines().skip(1).find_map(|line| {
        let w: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st tx_queue:rx_queue ...
        if w.get(1) == Some(&l.as_str()) && w.get(2) == Some(&r.as_str()) {
            u64::from_str_radix(w.get(4)?.split(':').nth(1)?, 16).ok()
        } else {
            None
        }
    })
}
