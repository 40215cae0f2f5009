//! `test-support`: the process and socket helpers that every chapter's
//! integration tests share, so each crate's `tests/support/mod.rs` keeps
//! only what is its own (an in-process server of that chapter, its wire
//! format written out by hand, its counters).
//!
//! | helper | what it promises |
//! |---|---|
//! | [`LIMIT`], [`wait_until`] | every wait is bounded and decided on an event, never a lone sleep |
//! | [`connect`], [`read_n`], [`read_to_end`], [`read_until_error`] | every socket has read and write timeouts |
//! | [`assert_closed`], [`assert_silent`], [`is_timeout`] | what "closed" and "not served" look like on a socket |
//! | [`unacked`], [`wait_until_acked`] | what the kernel still holds of what a test sent (`SIOCOUTQ`) |
//! | [`tcp_echo`], [`udp_echo`], [`udp_socket_like`] | peers on 127.0.0.1:0, each on its own thread |
//! | [`ServerProcess`] | a chapter binary as a child on 127.0.0.1:0: its announced address, its log lines as they come, its exit within a bound, killed on drop |
//! | [`run_bounded`], [`exits_within`] | a command run to completion, killed if it outlives its bound |
//! | [`bytes`] | reproducible test data |
//!
//! A dev-dependency only (`publish = false`). Helpers panic on failure:
//! a failed unwrap here is a failed test, which is what a test wants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

/// The bound on every read and every wait: generous, because tests run on
/// machines busy compiling; a hang fails after it instead of blocking.
pub const LIMIT: Duration = Duration::from_secs(10);

/// Signals for [`ServerProcess::signal`].
pub use libc::{SIGCONT, SIGINT, SIGKILL, SIGSTOP, SIGTERM};

/// `127.0.0.1:0`: an ephemeral port on loopback.
pub fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Poll `cond` until it holds, failing the test after [`LIMIT`]. For a
/// counter or a gauge the code under test moves: it returns as soon as the
/// event happened, and fails loudly if it never does.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// A TCP connection with connect, read and write timeouts of [`LIMIT`].
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, LIMIT)
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.set_write_timeout(Some(LIMIT)).unwrap();
    s
}

/// Read exactly `n` bytes (each read bounded by the socket's timeout).
pub fn read_n(r: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; n];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

/// Read until EOF; an error (a timeout, a reset) fails the test.
pub fn read_to_end(r: &mut impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    r.read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("reading to EOF after {} bytes: {e}", out.len()));
    out
}

/// Read until EOF or an error; the bytes read and how it ended.
pub fn read_until_error(r: &mut impl Read) -> (Vec<u8>, io::Result<()>) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return (out, Ok(())),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (out, Err(e)),
        }
    }
}

/// Is this error "nothing arrived before the read timeout"? (`EAGAIN` on
/// Linux, `TimedOut` elsewhere.)
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The server closed this connection: the next read returns 0 (FIN) or a
/// reset (closed with our bytes unread). Anything else fails the test.
pub fn assert_closed(s: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Ok(n) => panic!(
            "expected the server to close, got {n} bytes: {:?}",
            &buf[..n]
        ),
        Err(e) => panic!("expected the server to close, got {e}"),
    }
}

/// Nothing arrives within `window`: the read times out. Only for showing
/// that a client is *not* served (a negative can only be observed over
/// time). Restores the read timeout to [`LIMIT`].
pub fn assert_silent(s: &mut TcpStream, window: Duration) {
    s.set_read_timeout(Some(window)).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Err(e) if is_timeout(&e) => {}
        other => panic!("expected no reply within {window:?}, got {other:?}"),
    }
    s.set_read_timeout(Some(LIMIT)).unwrap();
}

/// Bytes written on `s` that the peer's kernel has not acknowledged yet
/// (`SIOCOUTQ`, alias `TIOCOUTQ`): 0 once everything sent sits in the
/// peer's receive queue.
pub fn unacked(s: &TcpStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ for TCP) writes one c_int we own, for a
    // descriptor `s` keeps open through the call.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    assert_eq!(r, 0, "ioctl(SIOCOUTQ): {}", io::Error::last_os_error());
    usize::try_from(queued).unwrap_or(0)
}

/// Wait (bounded) until the peer's kernel has acknowledged every byte sent
/// on `s`: everything is in the server's receive queue. A condition checked
/// in a loop, not a guess with `sleep`.
pub fn wait_until_acked(s: &TcpStream) {
    wait_until("every byte sent is acknowledged", || unacked(s) == 0);
}

/// `len` reproducible pseudo-random bytes.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    common::rng::SplitMix64::new(seed).fill(&mut v);
    v
}

/// A TCP echo on 127.0.0.1:0, a thread per connection: echoes until EOF,
/// then sends FIN. A stand-in for a chapter's server where the test is
/// about something else (a relay, a sniffer).
pub fn tcp_echo() -> SocketAddr {
    let l = TcpListener::bind(localhost()).unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                let _ = s.set_read_timeout(Some(LIMIT));
                let mut buf = [0u8; 8192];
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                let _ = s.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
}

/// A UDP echo on 127.0.0.1:0: every datagram back to its sender,
/// unchanged. Ends after [`LIMIT`] without a datagram.
pub fn udp_echo() -> SocketAddr {
    let s = UdpSocket::bind(localhost()).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    let addr = s.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
    addr
}

/// A UDP socket on the loopback of `addr`'s family (127.0.0.1 or ::1),
/// with a read timeout of `timeout`.
pub fn udp_socket_like(addr: SocketAddr, timeout: Duration) -> UdpSocket {
    let local: SocketAddr = if addr.is_ipv6() {
        "[::1]:0".parse().unwrap()
    } else {
        localhost()
    };
    let s = UdpSocket::bind(local).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    s
}

/// Run `cmd` to completion with `stdin` as its input and its output
/// captured; kill it and fail if it takes longer than `limit`.
pub fn run_bounded(cmd: &mut Command, stdin: &[u8], limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // A thread of its own, so a child that never reads cannot block us;
    // dropping `input` afterwards is the child's end of input.
    thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    exits_within(child, limit, &format!("{cmd:?}"))
}

/// Wait at most `limit` for `child` to exit and return its output; kill it
/// and fail the test, naming `who`, if it keeps running.
pub fn exits_within(child: Child, limit: Duration, who: &str) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            kill(pid, SIGKILL);
            panic!("{who} did not finish within {limit:?}");
        }
    }
}

/// kill(2) on a child of this process.
fn kill(pid: u32, sig: libc::c_int) -> bool {
    // SAFETY: kill(2) takes plain integers; `pid` is a child we spawned,
    // reaped only by a thread that also owns its `Child`.
    unsafe { libc::kill(pid as libc::pid_t, sig) == 0 }
}

/// A chapter's server binary as a child process: started with its address
/// set to `127.0.0.1:0`, its address read from the `listening on` line it
/// prints first (`common::net::announce`), its stderr lines delivered as
/// they come, its exit awaited within a bound. Killed on drop unless it
/// was seen to exit, so a failing test leaves no server behind.
#[derive(Debug)]
pub struct ServerProcess {
    child: Option<Child>,
    pid: u32,
    exited: Arc<AtomicBool>,
    /// The address it announced.
    pub addr: SocketAddr,
    stderr: Receiver<String>,
    /// Everything on stdout after the announce line, once stdout closes.
    rest: Receiver<String>,
    /// The stderr lines seen so far (by [`expect_log`](Self::expect_log)).
    pub log: Vec<String>,
}

impl ServerProcess {
    /// Spawn `cmd` (which must make the server listen on an ephemeral
    /// port) and wait at most [`LIMIT`] for its announce line.
    pub fn spawn(cmd: &mut Command) -> ServerProcess {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (line_tx, line_rx) = mpsc::channel();
        let (rest_tx, rest) = mpsc::channel();
        thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = String::new();
            let _ = stdout.read_line(&mut line);
            let _ = line_tx.send(line);
            let mut rest = String::new();
            let _ = stdout.read_to_string(&mut rest);
            let _ = rest_tx.send(rest);
        });
        let (tx, stderr) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let pid = child.id();
        let Ok(line) = line_rx.recv_timeout(LIMIT) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?}: no `listening on` line within {LIMIT:?}");
        };
        let Some(addr) = common::net::parse_announce(&line) else {
            let _ = child.kill();
            let _ = child.wait();
            let log: Vec<String> = stderr.try_iter().collect();
            panic!("{cmd:?}: first stdout line is not the announce: {line:?}; stderr: {log:#?}");
        };
        ServerProcess {
            child: Some(child),
            pid,
            exited: Arc::new(AtomicBool::new(false)),
            addr,
            stderr,
            rest,
            log: Vec::new(),
        }
    }

    /// Wait (at most [`LIMIT`]) for a stderr line containing `needle`, and
    /// return it. Lines before it are kept in [`log`](Self::log).
    pub fn expect_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => panic!("no log line containing {needle:?} ({e}): {:#?}", self.log),
            }
        }
    }

    /// Send `sig` (`SIGTERM`, `SIGSTOP`...) to the server.
    pub fn signal(&self, sig: libc::c_int) {
        assert!(
            !self.exited.load(Ordering::SeqCst) && kill(self.pid, sig),
            "signal {sig} to {}: {}",
            self.pid,
            io::Error::last_os_error()
        );
    }

    /// The process id, for tools that take one.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Wait in the background for the exit: the receiver gets the status
    /// and every stderr line not yet read once the process has exited; the
    /// caller bounds its wait with `recv_timeout`. Meanwhile the server can
    /// still be signalled.
    pub fn exit_receiver(&mut self) -> Receiver<(ExitStatus, Vec<String>)> {
        let mut child = self.child.take().expect("already waiting for the exit");
        let exited = self.exited.clone();
        // The stderr lines go with the waiting thread; `self` keeps a
        // receiver whose sender is gone.
        let stderr = std::mem::replace(&mut self.stderr, mpsc::channel().1);
        let mut log = std::mem::take(&mut self.log);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let status = child.wait();
            exited.store(true, Ordering::SeqCst);
            // stderr reaches EOF when the process exits; bounded anyway,
            // in case it left a child holding the pipe.
            while let Ok(line) = stderr.recv_timeout(LIMIT) {
                log.push(line);
            }
            if let Ok(status) = status {
                let _ = tx.send((status, log));
            }
        });
        rx
    }

    /// Wait at most `limit` for the exit; also checks that nothing but the
    /// announce line ever went to stdout. Returns the status and every
    /// stderr line.
    pub fn wait_exit(mut self, limit: Duration) -> (ExitStatus, Vec<String>) {
        let exit = self.exit_receiver();
        let Ok((status, log)) = exit.recv_timeout(limit) else {
            kill(self.pid, SIGKILL);
            panic!("server still running {limit:?} later");
        };
        let rest = self.rest.recv_timeout(LIMIT).expect("stdout never closed");
        assert_eq!(rest, "", "stdout after the announce line");
        (status, log)
    }

    /// `SIGTERM`, then the exit code and the whole stderr as one text,
    /// within [`LIMIT`].
    pub fn terminate(self) -> (Option<i32>, String) {
        self.signal(SIGTERM);
        let (status, log) = self.wait_exit(LIMIT);
        (status.code(), log.join("\n"))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        match self.child.as_mut() {
            Some(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            // Waited for in the background but not seen to exit (a failed
            // test): kill it, so no server outlives the test run.
            None if !self.exited.load(Ordering::SeqCst) => {
                kill(self.pid, SIGKILL);
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_peers_echo_and_reads_are_exact() {
        let mut c = connect(tcp_echo());
        c.write_all(b"hello").unwrap();
        assert_eq!(read_n(&mut c, 5).unwrap(), b"hello");
        c.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(read_to_end(&mut c), b"");
        let echo = udp_echo();
        let u = udp_socket_like(echo, LIMIT);
        u.send_to(b"ping", echo).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(u.recv_from(&mut buf).unwrap(), (4, echo));
        assert_eq!(&buf[..4], b"ping");
        assert_eq!(bytes(8, 1), bytes(8, 1));
        assert_ne!(bytes(8, 1), bytes(8, 2));
    }

    #[test]
    fn a_command_that_outlives_its_bound_fails() {
        let r = std::panic::catch_unwind(|| {
            run_bounded(
                Command::new("sleep").arg("5"),
                b"",
                Duration::from_millis(200),
            )
        });
        assert!(r.is_err());
        let out = run_bounded(&mut Command::new("cat"), b"abc", LIMIT);
        assert_eq!(out.stdout, b"abc");
    }
}
