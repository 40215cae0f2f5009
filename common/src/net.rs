//! Small socket helpers shared by the chapters, each explaining the OS
//! behaviour it hides.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::Shutdown;

/// The listen backlog we ask for: how many connections the kernel completes
/// (three-way handshake done) and queues before the program calls `accept()`.
/// Linux silently caps it at `net.core.somaxconn` (4096 on recent kernels).
pub const BACKLOG: i32 = 1024;

// ANCHOR: listen
/// `socket()` + `setsockopt()` + `bind()` + `listen()`, one call each, with
/// socket2. std's `TcpListener::bind` already makes these calls, with
/// `SO_REUSEADDR` set and a backlog of 128, but sets nothing else between
/// `socket()` and `bind()`; this helper exists for the two things it cannot do:
///
/// - `IPV6_V6ONLY` off for `[::]`: one socket accepts IPv4 and IPv6 clients;
/// - a longer backlog ([`BACKLOG`]) for bursts of connections.
///
/// `SO_REUSEADDR` is set here too, as std does: after a server exits, its old
/// connections linger in TIME_WAIT for a minute, and without the option a
/// restart fails with "address already in use". (It does *not* let two
/// servers share a port; that is `SO_REUSEPORT`.)
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}
// ANCHOR_END: listen

/// The line a server prints on **stdout** once it is listening, e.g.
/// `listening on 127.0.0.1:40123`. With `--addr 127.0.0.1:0` the kernel picks
/// the port; this line is how a person, a script, a test or `loadgen compare`
/// learns it. Logs go to stderr, so this is the only thing on stdout.
pub fn announce(addr: SocketAddr) {
    use std::io::Write;
    let mut out = io::stdout().lock();
    // If stdout is closed nobody is listening for the port; not an error.
    let _ = writeln!(out, "{ANNOUNCE_PREFIX}{addr}");
    let _ = out.flush();
}

/// The prefix [`announce`] prints before the address.
pub const ANNOUNCE_PREFIX: &str = "listening on ";

/// Parse a line printed by [`announce`].
pub fn parse_announce(line: &str) -> Option<SocketAddr> {
    line.trim().strip_prefix(ANNOUNCE_PREFIX)?.parse().ok()
}

/// Raise the soft `RLIMIT_NOFILE` (max open file descriptors) to the hard
/// limit. The soft limit is often 1024, which caps a server at about a
/// thousand clients: every socket is a file descriptor. Returns
/// `(old_soft, new_soft)`.
pub fn raise_fd_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; no other memory.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // `rlim_t` is u64 on Linux; `From` keeps this portable without a cast.
    #[allow(clippy::useless_conversion)]
    let old = u64::from(lim.rlim_cur);
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[allow(clippy::useless_conversion)]
    let new = u64::from(lim.rlim_cur);
    Ok((old, new))
}

/// What an accept loop does after `accept()` failed. One classification,
/// used by every accept loop of the workspace through [`accept_policy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptAction {
    /// Try again at once: the error was about one connection, which is gone.
    Retry,
    /// Wait this long before the next `accept()` (and let shutdown cut the
    /// wait short): a resource is short and retrying at once would spin.
    Wait(Duration),
    /// The listener itself is broken; stop serving.
    Fatal,
}

// ANCHOR: classify
/// How to read an `accept()` error, in three classes (accept(2), "Error
/// handling", and what each error means to a server that must stay up):
///
/// - **retry at once**: `ECONNABORTED` (on the BSDs, a client that reset
///   while queued; Linux does not return it for that: it hands the
///   connection over and the reset shows on the first read, `ECONNRESET`),
///   `EINTR` (a signal), and the pending network errors Linux reports
///   through `accept()` and asks callers to treat like `EAGAIN`: `EPROTO`,
///   `ENOPROTOOPT`, `EHOSTDOWN`, `ENONET`, `EHOSTUNREACH`, `EOPNOTSUPP`,
///   `ENETDOWN`, `ENETUNREACH`, plus `EPERM` (a firewall rule refused this
///   one connection);
/// - **back off**: `EMFILE`/`ENFILE` (out of file descriptors),
///   `ENOBUFS`/`ENOMEM` (out of memory for socket buffers). The pending
///   connection stays in the backlog, the listener stays readable, and an
///   immediate retry fails the same way at 100% CPU. Anything unknown is
///   treated the same: it neither spins nor stops the server;
/// - **fatal**: `EBADF`, `EINVAL`, `ENOTSOCK`, `EFAULT`: the listening
///   socket is gone or was never listening.
pub fn classify_accept_error(e: &io::Error) -> AcceptClass {
    match e.raw_os_error() {
        Some(
            libc::ECONNABORTED
            | libc::EINTR
            | libc::EPROTO
            | libc::ENOPROTOOPT
            | libc::EHOSTDOWN
            | libc::ENONET
            | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP
            | libc::ENETDOWN
            | libc::ENETUNREACH
            | libc::EPERM,
        ) => AcceptClass::Retry,
        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EFAULT) => AcceptClass::Fatal,
        _ if e.kind() == io::ErrorKind::Interrupted => AcceptClass::Retry,
        _ => AcceptClass::BackOff,
    }
}
// ANCHOR_END: classify

/// The three classes of [`classify_accept_error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptClass {
    Retry,
    BackOff,
    Fatal,
}

/// The accept-error policy of every server: classify `e`, log it once at
/// the level it deserves, and say what to do. `Wait` takes the next delay
/// from `backoff` (call [`Backoff::reset`] after the next successful
/// accept). The caller must make the wait interruptible by shutdown:
/// `shutdown.wait_timeout(d)` in a blocking loop, `select!` with
/// `shutdown.triggered()` under tokio, a poll timeout with the listener
/// deregistered in a mio loop.
///
/// `WouldBlock` is not an error here: a non-blocking accept loop handles it
/// before calling this (it means "the backlog is empty, go back to poll").
pub fn accept_policy(e: &io::Error, backoff: &mut Backoff) -> AcceptAction {
    match classify_accept_error(e) {
        AcceptClass::Retry => {
            log::debug!("accept: {e} (one connection lost; retrying at once)");
            AcceptAction::Retry
        }
        AcceptClass::BackOff => {
            let delay = backoff.next_delay();
            let why = if is_fd_exhaustion(e) {
                " (out of file descriptors: see ulimit -n)"
            } else {
                ""
            };
            log::warn!("accept failed: {e}{why}; pausing accepts for {delay:?}");
            AcceptAction::Wait(delay)
        }
        // Logged by `fatal_accept`, which every loop calls next.
        AcceptClass::Fatal => AcceptAction::Fatal,
    }
}

// ANCHOR: fatal
/// The one rule for [`AcceptAction::Fatal`], in every accept loop: the
/// listening socket is unusable, so the server stops the way a Ctrl-C
/// stops it. This logs the error once, triggers `shutdown` (the loop stops
/// accepting, the connections already open get their echoes and their
/// `--grace`, the summary line is written), and returns the error the loop
/// ends with once that is done, so the process exits with status 1.
///
/// ```ignore
/// AcceptAction::Fatal => {
///     fatal = Some(common::net::fatal_accept(e, &shutdown));
///     break; // then drain as in any shutdown, and return Err(fatal)
/// }
/// ```
pub fn fatal_accept(e: io::Error, shutdown: &Shutdown) -> io::Error {
    log::error!("accept failed: {e}: the listening socket is unusable; shutting down");
    shutdown.trigger();
    e
}
// ANCHOR_END: fatal

/// Out of file descriptors (`EMFILE` for the process, `ENFILE` for the
/// system).
pub fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// The peer went away abruptly (RST, or we wrote after it closed). Normal on
/// the Internet; logged at `info`, not as a server fault.
pub fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

// ANCHOR: backoff
/// Exponential back-off for accept errors: 10 ms, 20 ms, ... up to 1 s,
/// reset after the next successful accept.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    pub fn new() -> Self {
        Backoff { next: Self::MIN }
    }

    /// The delay to wait now; the one after it will be twice as long.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }

    pub fn reset(&mut self) {
        self.next = Self::MIN;
    }
}
// ANCHOR_END: backoff

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fatal accept error stops the server the way a signal does, and is
    /// what the loop returns.
    #[test]
    fn fatal_accept_triggers_the_shutdown_and_hands_the_error_back() {
        let shutdown = Shutdown::new();
        let e = io::Error::from_raw_os_error(libc::EBADF);
        assert_eq!(accept_policy(&e, &mut Backoff::new()), AcceptAction::Fatal);
        assert!(!shutdown.is_triggered());
        let back = fatal_accept(e, &shutdown);
        assert!(shutdown.is_triggered());
        assert_eq!(back.raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn backoff_grows_and_caps() {
        let mut b = Backoff::new();
        let d: Vec<_> = (0..10).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(d, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 10);
    }

    #[test]
    fn classify_errors() {
        let class = |n| classify_accept_error(&io::Error::from_raw_os_error(n));
        for n in [
            libc::ECONNABORTED,
            libc::EINTR,
            libc::EPROTO,
            libc::EOPNOTSUPP,
            libc::EPERM,
        ] {
            assert_eq!(class(n), AcceptClass::Retry, "errno {n}");
        }
        for n in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::ENOMEM,
            libc::EIO,
        ] {
            assert_eq!(class(n), AcceptClass::BackOff, "errno {n}");
        }
        for n in [libc::EBADF, libc::EINVAL, libc::ENOTSOCK, libc::EFAULT] {
            assert_eq!(class(n), AcceptClass::Fatal, "errno {n}");
        }
        let mut b = Backoff::new();
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert!(is_fd_exhaustion(&emfile));
        assert_eq!(
            accept_policy(&emfile, &mut b),
            AcceptAction::Wait(Duration::from_millis(10))
        );
        assert_eq!(
            accept_policy(&emfile, &mut b),
            AcceptAction::Wait(Duration::from_millis(20))
        );
        let aborted = io::Error::from_raw_os_error(libc::ECONNABORTED);
        assert_eq!(accept_policy(&aborted, &mut b), AcceptAction::Retry);
    }

    #[test]
    fn listen_on_ephemeral_port_v4_and_v6() {
        let l = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(l.local_addr().unwrap().port(), 0);
        // ::1 may be missing in some sandboxes; only check when it exists.
        if let Ok(l6) = listen("[::1]:0".parse().unwrap()) {
            assert!(l6.local_addr().unwrap().is_ipv6());
        }
        assert_eq!(
            parse_announce("listening on [::1]:80\n"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(parse_announce("hello"), None);
        let (old, new) = raise_fd_limit().unwrap();
        assert!(new >= old);
    }
}
