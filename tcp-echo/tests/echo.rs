//! The iterative server over real sockets on 127.0.0.1:0: byte-exact echoes
//! in every framing, limits, half-close, idle timeout, shutdown, and real
//! clients nobody here wrote (`nc`, Python).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod support;

use std::io::{self, Read, Write};
use std::net::{Shutdown as Direction, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::ServerConfig as Config;
use common::framing::{Framing, encode};
use common::{Shutdown, Stats};
use tcp_echo::server;

use support::T;

struct Server {
    addr: SocketAddr,
    shutdown: Shutdown,
    handle: Option<JoinHandle<std::io::Result<Arc<Stats>>>>,
}

impl Server {
    fn start(config: Config) -> Server {
        common::log::init_for_tests();
        let listener = common::net::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        let handle = std::thread::spawn(move || server::run(listener, &config, &s));
        Server {
            addr,
            shutdown,
            handle: Some(handle),
        }
    }

    fn framing(framing: Framing) -> Server {
        Server::start(Config {
            framing,
            ..Config::default()
        })
    }

    fn connect(&self) -> TcpStream {
        test_support::connect(self.addr)
    }

    fn stop(mut self) -> Arc<Stats> {
        self.shutdown.trigger();
        self.handle.take().unwrap().join().unwrap().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// Read until EOF with a deadline: "everything the server sent before it
/// closed". Fails with `TimedOut` if the server never closes.
fn read_to_end_within(stream: &mut TcpStream, limit: Duration) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no EOF before the deadline",
            ));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn wire(framing: Framing, frames: &[&[u8]]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for f in frames {
        encode(framing, f, &mut out).unwrap();
    }
    out.to_vec()
}

fn payload(len: usize, framing: Framing) -> Vec<u8> {
    // Every byte value except '\n' for line frames; varied so a misplaced
    // byte cannot go unnoticed.
    (0..len)
        .map(|i| {
            let b = (i * 131 + i / 251) as u8;
            if framing == Framing::Line && b == b'\n' {
                b'x'
            } else {
                b
            }
        })
        .collect()
}

/// Send `data` (in chunks of `chunk` bytes), half-close, and return all bytes
/// the server sent back before closing.
fn round_trip(server: &Server, data: &[u8], chunk: usize) -> Vec<u8> {
    let mut s = server.connect();
    let writer = {
        let mut w = s.try_clone().unwrap();
        let data = data.to_vec();
        // Write on another thread: a 1 MiB echo fills the socket buffers in
        // both directions, so writing everything before reading deadlocks.
        std::thread::spawn(move || {
            for c in data.chunks(chunk.max(1)) {
                w.write_all(c).unwrap();
            }
            w.shutdown(Direction::Write).unwrap();
        })
    };
    let got = read_to_end_within(&mut s, T).unwrap();
    writer.join().unwrap();
    got
}

#[test]
fn every_framing_echoes_0_1_and_1mib_frames_byte_exact() {
    for framing in Framing::ALL {
        let server = Server::framing(framing);
        let sizes: &[usize] = if framing == Framing::Raw {
            &[1, 1 << 20]
        } else {
            &[0, 1, 1 << 20]
        };
        for &len in sizes {
            let p = payload(len, framing);
            let w = wire(framing, &[&p]);
            assert_eq!(
                round_trip(&server, &w, 64 * 1024),
                w,
                "{framing} {len} bytes"
            );
        }
        let stats = server.stop();
        assert_eq!(Stats::get(&stats.errors), 0);
    }
}

#[test]
fn one_byte_at_a_time_still_echoes_whole_frames() {
    for framing in Framing::ALL {
        let server = Server::framing(framing);
        let a = payload(300, framing);
        let w = wire(framing, &[b"first", &a, b""]);
        let w = if framing == Framing::Raw {
            w[..w.len()].to_vec()
        } else {
            w
        };
        assert_eq!(round_trip(&server, &w, 1), w, "{framing}");
        server.stop();
    }
}

#[test]
fn pipelined_frames_in_one_write() {
    let server = Server::framing(Framing::Length);
    let frames: Vec<Vec<u8>> = (0..500).map(|i| payload(i % 37, Framing::Length)).collect();
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    let w = wire(Framing::Length, &refs);
    assert_eq!(round_trip(&server, &w, w.len()), w);
    let stats = server.stop();
    assert_eq!(Stats::get(&stats.frames), 500);
}

#[test]
fn oversized_frames_close_that_client_and_the_next_is_served() {
    // Length prefix of 4 GiB: rejected from the header alone.
    let server = Server::start(Config {
        framing: Framing::Length,
        max_frame: 1024,
        ..Config::default()
    });
    let mut bad = server.connect();
    bad.write_all(&[0xff, 0xff, 0xff, 0xff, b'x']).unwrap();
    // Closed without an echo: EOF, or a reset because our 'x' was unread.
    match read_to_end_within(&mut bad, T) {
        Ok(bytes) => assert!(bytes.is_empty(), "no echo for a rejected frame"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    let w = wire(Framing::Length, &[b"next client"]);
    assert_eq!(round_trip(&server, &w, 3), w);
    let stats = server.stop();
    assert_eq!(
        (Stats::get(&stats.errors), Stats::get(&stats.frames)),
        (1, 1)
    );

    // A line longer than the limit, newline never sent.
    let server = Server::start(Config {
        framing: Framing::Line,
        max_frame: 1024,
        ..Config::default()
    });
    let mut bad = server.connect();
    bad.write_all(&[b'a'; 1025]).unwrap();
    match read_to_end_within(&mut bad, T) {
        Ok(bytes) => assert!(bytes.is_empty()),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    let w = wire(Framing::Line, &[&[b'b'; 1024]]);
    assert_eq!(
        round_trip(&server, &w, 4096),
        w,
        "a line exactly at the limit is fine"
    );
    let stats = server.stop();
    assert_eq!(Stats::get(&stats.errors), 1);
}

#[test]
fn half_close_returns_the_full_echo_then_eof() {
    let server = Server::framing(Framing::Line);
    let mut s = server.connect();
    s.write_all(b"one\ntwo\nthree\n").unwrap();
    s.shutdown(Direction::Write).unwrap();
    // read_to_end_within fails unless EOF arrives: the server must close.
    assert_eq!(read_to_end_within(&mut s, T).unwrap(), b"one\ntwo\nthree\n");
    server.stop();
}

#[test]
fn unfinished_frame_at_eof_is_an_error_and_not_echoed() {
    let server = Server::framing(Framing::Line);
    let mut s = server.connect();
    s.write_all(b"whole\nhalf").unwrap();
    s.shutdown(Direction::Write).unwrap();
    assert_eq!(read_to_end_within(&mut s, T).unwrap(), b"whole\n");
    let stats = server.stop();
    assert_eq!(Stats::get(&stats.errors), 1);
}

#[test]
fn idle_client_is_closed_and_the_next_one_served() {
    let server = Server::start(Config {
        idle_timeout: Some(Duration::from_millis(300)),
        ..Config::default()
    });
    let mut idle = server.connect();
    let t0 = Instant::now();
    // The server closes the silent client: EOF, no bytes.
    assert_eq!(read_to_end_within(&mut idle, T).unwrap(), b"");
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert_eq!(round_trip(&server, b"after\n", 100), b"after\n");
    // An idle close is a timeout, not an error.
    let stats = server.stop();
    assert_eq!(
        (Stats::get(&stats.timed_out), Stats::get(&stats.errors)),
        (1, 0)
    );
}

#[test]
fn second_client_waits_in_the_backlog_until_the_first_leaves() {
    // The chapter's lesson, as a test: connect() succeeds (the kernel
    // completes the handshake) but nothing is echoed until client 1 is gone.
    let server = Server::framing(Framing::Line);
    let mut first = server.connect();
    first.write_all(b"1\n").unwrap();
    let mut buf = [0u8; 2];
    first.read_exact(&mut buf).unwrap();
    let mut second = server.connect();
    second.write_all(b"2\n").unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let err = second.read(&mut buf).unwrap_err();
    assert!(
        common::framing::is_timeout(&err),
        "second client must not be served yet: {err}"
    );
    drop(first);
    second.set_read_timeout(Some(T)).unwrap();
    second.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"2\n");
    drop(second);
    server.stop();
}

/// Bytes waiting in the receive queue of the server-side socket of the
/// connection `client` (from /proc/net/tcp: `tx_queue:rx_queue` in hex).
fn server_rx_queue(server: SocketAddr, client: SocketAddr) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let hex = |a: SocketAddr| format!("{:04X}", a.port());
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (local, remote) = (f.get(1)?, f.get(2)?);
        if local.ends_with(&format!(":{}", hex(server)))
            && remote.ends_with(&format!(":{}", hex(client)))
        {
            u64::from_str_radix(f.get(4)?.split(':').nth(1)?, 16).ok()
        } else {
            None
        }
    })
}

#[test]
fn shutdown_mid_conversation_echoes_everything_received() {
    // `--work` keeps the server busy on frame "b" while "c" lands in its
    // kernel receive queue and shutdown is triggered. Those bytes were
    // received; the server must drain and echo them before closing, and only
    // the unfinished frame may be dropped.
    let server = Server::start(Config {
        work: 300_000,
        ..Config::default()
    });
    let mut s = server.connect();
    // A full round trip first: the server has accepted us and is reading.
    s.write_all(b"a\n").unwrap();
    let mut buf = [0u8; 2];
    s.read_exact(&mut buf).unwrap();
    s.write_all(b"b\n").unwrap();
    // Wait (bounded) until the server has taken "b" off its receive queue,
    // so "c" cannot arrive in the same read().
    let deadline = Instant::now() + T;
    while server_rx_queue(server.addr, s.local_addr().unwrap()) != Some(0) {
        assert!(Instant::now() < deadline, "server never read frame b");
        std::thread::yield_now();
    }
    s.write_all(b"c\nunfinished").unwrap();
    server.shutdown.trigger();
    let got = read_to_end_within(&mut s, T).unwrap();
    assert_eq!(got, b"b\nc\n");
    // Our FIN answers the server's: the drain ends cleanly, nothing is cut.
    drop(s);
    let stats = server.stop();
    assert_eq!(Stats::get(&stats.frames), 3);
    assert_eq!((Stats::get(&stats.cut), Stats::get(&stats.errors)), (0, 0));
}

use support::bin;

/// Run a command with a deadline; returns (status, stdout, stderr).
fn run_with_timeout(mut cmd: Command, stdin: &[u8]) -> (std::process::ExitStatus, String, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: plain kill(2) on our own child.
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("command did not finish within 20 s");
        }
    };
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn demo_prints_a_transcript_and_exits_0() {
    let (status, out, err) = run_with_timeout(bin(), b"");
    assert!(status.success(), "{err}");
    for framing in ["line", "length", "raw"] {
        assert!(out.contains(&format!("framing `{framing}`")), "{out}");
    }
    assert_eq!(
        out.matches("< TCP keeps bytes in order").count(),
        3,
        "{out}"
    );
    assert_eq!(out.matches("closed cleanly").count(), 3, "{out}");
}

#[test]
fn client_prints_echoes_and_fails_clearly_on_a_closed_port() {
    let server = Server::framing(Framing::Line);
    let mut cmd = bin();
    cmd.args([
        "client",
        "--addr",
        &server.addr.to_string(),
        "hello",
        "world",
    ]);
    let (status, out, err) = run_with_timeout(cmd, b"");
    assert!(status.success(), "{err}");
    assert!(out.contains("< hello") && out.contains("< world"), "{out}");

    // Stdin lines when no message is given.
    let mut cmd = bin();
    cmd.args(["client", "--addr", &server.addr.to_string()]);
    let (status, out, _) = run_with_timeout(cmd, b"from stdin\n");
    assert!(status.success() && out.contains("< from stdin"), "{out}");
    server.stop();

    // A port nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = bin();
    cmd.args([
        "client",
        "--addr",
        &format!("127.0.0.1:{port}"),
        "--timeout",
        "2s",
        "x",
    ]);
    let (status, _, err) = run_with_timeout(cmd, b"");
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("refused"), "{err}");
    assert_eq!(
        err.trim().lines().count(),
        1,
        "one line, no backtrace: {err}"
    );
    assert!(!err.contains("panicked"));
}

/// Frames in flight when SIGTERM arrives all come back, then a clean EOF;
/// the process exits 0 with the one summary line.
#[test]
fn sigterm_returns_every_frame_in_flight_then_eof() {
    let mut server = support::spawn_server(&["--work", "20000"]);
    let mut s = TcpStream::connect_timeout(&server.addr, T).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(b"ping\n").unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping\n");
    // Twenty frames pipelined; with --work each takes a while, so most are
    // still owed when the signal lands.
    let frames: Vec<u8> = (0..20)
        .flat_map(|i| format!("frame {i}\n").into_bytes())
        .collect();
    s.write_all(&frames).unwrap();
    server.signal(libc::SIGTERM);
    server.expect_log("SIGTERM");
    assert_eq!(read_to_end_within(&mut s, T).unwrap(), frames);
    drop(s); // our FIN answers the server's
    let (status, log) = server.wait_exit(T);
    assert!(status.success(), "{status:?}");
    let summary = log
        .iter()
        .find(|l| l.contains("tcp-echo stopped:"))
        .cloned();
    assert!(
        summary.as_deref().is_some_and(|l| l.ends_with(
            "tcp-echo stopped: 1 connections served, 0 refused, 0 closed on error, \
             0 timed out, 0 cut at the deadline, 21 frames, 154 payload bytes echoed"
        )),
        "{log:#?}"
    );
}

/// A client that wrote megabytes and never reads cannot hold the shutdown
/// past --grace: it is cut at the deadline (counted in `cut`), well before
/// its --stall-timeout (10 s) would have closed it.
#[test]
fn a_client_that_never_reads_cannot_hold_shutdown_past_grace() {
    let mut server = support::spawn_server(&["--grace", "500ms", "--stall-timeout", "1h"]);
    let hog = TcpStream::connect_timeout(&server.addr, T).unwrap();
    let writer = {
        let mut w = hog.try_clone().unwrap();
        w.set_write_timeout(Some(T)).unwrap();
        std::thread::spawn(move || {
            let line = [b'x'; 1023]
                .iter()
                .chain(b"\n")
                .copied()
                .collect::<Vec<u8>>();
            // Until the server stops reading (its echoes are not read)
            // and our own send buffer is full, or the connection is cut.
            let mut sent = 0usize;
            while sent < 64 << 20 && w.write_all(&line).is_ok() {
                sent += line.len();
            }
            sent
        })
    };
    server.expect_log("connected");
    server.signal(libc::SIGTERM);
    // Exits within grace + a margin far below the stall timeout.
    let (status, log) = server.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status:?}");
    assert!(writer.join().unwrap() > 1 << 20, "the hog wrote megabytes");
    assert!(
        log.iter().any(|l| l.contains(
            "1 connections served, 0 refused, 0 closed on error, 0 timed out, 1 cut at the deadline"
        )),
        "{log:#?}"
    );
    drop(hog);
}

/// A client that stops reading is closed by --stall-timeout (counted as
/// timed out, not as an error), and the client waiting behind it in the
/// backlog is served next.
#[test]
fn a_client_that_stops_reading_is_closed_by_the_stall_timeout() {
    let server = Server::start(Config {
        stall_timeout: Duration::from_millis(300),
        max_pending: 64 << 10,
        ..Config::default()
    });
    let hog = server.connect();
    let writer = {
        let mut w = hog.try_clone().unwrap();
        std::thread::spawn(move || {
            let line: Vec<u8> = [b'y'; 4095].iter().chain(b"\n").copied().collect();
            // Ends when the server closes us (reset) or after 64 MiB.
            for _ in 0..(64 << 20) / line.len() {
                if w.write_all(&line).is_err() {
                    return;
                }
            }
        })
    };
    // Served only once the hog is gone (one client at a time).
    let w = wire(Framing::Line, &[b"next"]);
    assert_eq!(round_trip(&server, &w, 100), w);
    writer.join().unwrap();
    drop(hog);
    let stats = server.stop();
    assert_eq!(
        (
            Stats::get(&stats.timed_out),
            Stats::get(&stats.errors),
            Stats::get(&stats.cut)
        ),
        (1, 0, 0)
    );
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn netcat_gets_its_echo() {
    assert!(
        have("nc"),
        "nc is missing: install netcat-openbsd (scripts/test.sh does)"
    );
    let server = Server::framing(Framing::Line);
    let mut cmd = Command::new("nc");
    // -N: shutdown(SHUT_WR) after stdin's EOF (a half-close), so the server
    // echoes and closes; -w: give up after 10 s of silence.
    cmd.args([
        "-N",
        "-w",
        "10",
        "127.0.0.1",
        &server.addr.port().to_string(),
    ]);
    let (status, out, err) = run_with_timeout(cmd, b"hello from nc\nsecond line\n");
    assert!(status.success(), "{err}");
    assert_eq!(out, "hello from nc\nsecond line\n");
    server.stop();
}

#[test]
fn socat_gets_its_echo_in_raw_mode() {
    assert!(
        have("socat"),
        "socat is missing: install socat (scripts/test.sh does)"
    );
    let server = Server::framing(Framing::Raw);
    let mut cmd = Command::new("socat");
    cmd.args([
        "-t",
        "10",
        "-",
        &format!("TCP:127.0.0.1:{}", server.addr.port()),
    ]);
    let (status, out, err) = run_with_timeout(cmd, b"raw bytes \x01\x02 from socat");
    assert!(status.success(), "{err}");
    assert_eq!(out.as_bytes(), b"raw bytes \x01\x02 from socat");
    server.stop();
}

#[test]
fn python_socket_client_gets_its_echo() {
    let server = Server::framing(Framing::Length);
    let script = r#"
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
msg = b"hello from python"
s.sendall(struct.pack(">I", len(msg)) + msg)
data = b""
while len(data) < 4 + len(msg):
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
sys.stdout.write(repr(data))
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script, &server.addr.port().to_string()]);
    let (status, out, err) = run_with_timeout(cmd, b"");
    assert!(status.success(), "{err}");
    assert_eq!(out, r"b'\x00\x00\x00\x11hello from python'");
    server.stop();
}

#[test]
fn ipv6_loopback_works_when_available() {
    let Ok(listener) = common::net::listen("[::1]:0".parse().unwrap()) else {
        eprintln!("no IPv6 loopback in this sandbox; nothing to test");
        return;
    };
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    let h = std::thread::spawn(move || server::run(listener, &Config::default(), &s));
    let mut c = TcpStream::connect_timeout(&addr, T).unwrap();
    c.write_all(b"v6\n").unwrap();
    c.shutdown(Direction::Write).unwrap();
    assert_eq!(read_to_end_within(&mut c, T).unwrap(), b"v6\n");
    shutdown.trigger();
    h.join().unwrap().unwrap();
}
