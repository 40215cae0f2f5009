//! Small socket helpers shared by the chapters, each explaining the OS
//! behaviour it hides.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// The listen backlog we ask for: how many connections the kernel completes
/// (three-way handshake done) and queues before the program calls `accept()`.
/// Linux silently caps it at `net.core.somaxconn` (4096 on recent kernels).
pub const BACKLOG: i32 = 1024;

/// `socket()` + `setsockopt()` + `bind()` + `listen()`, done with socket2
/// because std's `TcpListener::bind` does not let us set options first:
///
/// - `SO_REUSEADDR`: after a server exits, its old connections linger in
///   TIME_WAIT for a minute; without this option a restart fails with
///   "address already in use". (It does *not* let two servers share a port.)
/// - `IPV6_V6ONLY` off for `[::]`: one socket accepts IPv4 and IPv6 clients.
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

/// Can the accept loop carry on after this `accept()` error?
///
/// Almost always yes. `ECONNABORTED` (the client gave up while queued),
/// `EINTR`, and `EMFILE`/`ENFILE` (out of file descriptors), `ENOBUFS`/
/// `ENOMEM` are about one connection or a passing shortage. Linux's man page
/// adds that pending network errors (`ENETDOWN`, `EPROTO`, `EHOSTUNREACH`...)
/// are reported by `accept()` and must be treated like `EAGAIN`. Only errors
/// that say the listener itself is broken (`EBADF`, `EINVAL`, `ENOTSOCK`,
/// `EFAULT`) are fatal.
pub fn is_transient_accept_error(e: &io::Error) -> bool {
    !matches!(
        e.raw_os_error(),
        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EFAULT | libc::EOPNOTSUPP)
    )
}

/// Out of file descriptors (`EMFILE` for the process, `ENFILE` for the
/// system). The pending connection stays in the backlog and the listener
/// stays readable, so retrying at once spins at 100% CPU: back off instead.
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

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert!(is_transient_accept_error(&emfile) && is_fd_exhaustion(&emfile));
        assert!(!is_transient_accept_error(&io::Error::from_raw_os_error(
            libc::EBADF
        )));
        assert!(is_transient_accept_error(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
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
