//! The `udp-echo` binary as a user runs it: flags, output, exit status.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use udp_echo::server::ServerConfig;

use support::{TestServer, bin, connected, run_with_timeout};

const LIMIT: Duration = Duration::from_secs(20);

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn server_announces_echoes_and_shuts_down_on_sigterm_with_a_summary() {
    let mut child = bin()
        .args([
            "server",
            "--addr",
            "127.0.0.1:0",
            "--drop",
            "0",
            "--seed",
            "3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(LIMIT).expect("no `listening on` line");
    let addr: SocketAddr = common::net::parse_announce(&line)
        .unwrap_or_else(|| panic!("first stdout line is not an announce: {line:?}"));
    assert_ne!(addr.port(), 0);

    let s = connected(addr);
    s.send(b"over the wire").unwrap();
    let mut buf = [0u8; 64];
    let n = s.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"over the wire");

    // SAFETY: kill(2) on our own child's pid, not yet reaped.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let mut err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        let _ = tx.send((child.wait(), s));
    });
    let (status, log) = rx
        .recv_timeout(LIMIT)
        .expect("server did not exit on SIGTERM");
    assert!(status.unwrap().success(), "{log}");
    assert!(
        log.contains(
            "shutting down: 1 datagrams (13 payload bytes) from 1 peer: 1 echoed, 0 dropped"
        ),
        "{log}"
    );
}

#[test]
fn client_prints_each_echo_and_a_summary() {
    let server = TestServer::start(ServerConfig::default());
    let mut cmd = bin();
    cmd.args([
        "client",
        "--addr",
        &server.addr.to_string(),
        "hello",
        "",
        "world",
    ]);
    let o = run_with_timeout(cmd, b"", LIMIT);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert!(lines[0].starts_with("seq=0 11 bytes rtt=") && lines[0].ends_with(" \"hello\""));
    assert!(lines[1].starts_with("seq=1 6 bytes rtt=") && lines[1].ends_with(" \"\""));
    assert!(lines[2].starts_with("seq=2 11 bytes rtt=") && lines[2].ends_with(" \"world\""));
    assert_eq!(
        lines[3],
        format!("--- {} udp echo statistics ---", server.addr)
    );
    assert_eq!(
        lines[4],
        "3 datagrams sent (3 transmissions with retries), 3 received, 0 lost, 0 duplicated, 0 reordered"
    );
    assert!(lines[5].starts_with("rtt min/median/p99/max = "), "{out}");
    assert_eq!(server.stop().echoed, 3);
}

#[test]
fn client_reads_stdin_lines_when_given_no_messages() {
    let server = TestServer::start(ServerConfig::default());
    let mut cmd = bin();
    cmd.args(["client", "--addr", &server.addr.to_string()]);
    let o = run_with_timeout(cmd, b"first line\r\nsecond\n", LIMIT);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(" \"first line\"\n") && out.contains(" \"second\"\n"),
        "{out}"
    );
    assert_eq!(server.stop().bytes, 6 + 10 + 6 + 6);
}

#[test]
fn client_exits_non_zero_with_one_clear_line_when_no_server_listens() {
    let addr = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cmd = bin();
    cmd.args([
        "client",
        "--addr",
        &addr.to_string(),
        "--timeout",
        "5s",
        "hello",
    ]);
    let start = Instant::now();
    let o = run_with_timeout(cmd, b"", LIMIT);
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "waited for the timeout"
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("error: no UDP server at {addr}: ")),
        "{err}"
    );
    assert!(!err.contains("panic") && stdout(&o).is_empty());
}

#[test]
fn client_refuses_a_65508_byte_datagram_and_sends_the_65507_byte_one() {
    let server = TestServer::start(ServerConfig::default());
    let addr = server.addr.to_string();
    let mut cmd = bin();
    cmd.args(["client", "--addr", &addr, "--count", "1", "--size", "65508"]);
    let o = run_with_timeout(cmd, b"", LIMIT);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: datagram 0 is 65508 bytes"), "{err}");
    assert!(err.contains("Message too long"), "{err}");

    let mut cmd = bin();
    cmd.args(["client", "--addr", &addr, "--count", "2", "--size", "65507"]);
    let o = run_with_timeout(cmd, b"", LIMIT);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("seq=1 65507 bytes rtt="),
        "{}",
        stdout(&o)
    );
    let summary = server.stop();
    assert_eq!((summary.datagrams, summary.bytes), (2, 2 * 65_507));
}

#[test]
fn client_reports_losses_and_exits_non_zero() {
    let server = TestServer::start(ServerConfig {
        drop_percent: 100.0,
        ..ServerConfig::default()
    });
    let mut cmd = bin();
    cmd.args([
        "client",
        "--addr",
        &server.addr.to_string(),
        "--timeout",
        "100ms",
        "--retries",
        "1",
        "x",
    ]);
    let o = run_with_timeout(cmd, b"", LIMIT);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.starts_with("seq=0 no reply after "), "{out}");
    assert!(
        out.contains("resending (attempt 2)\nseq=0 lost (no reply to 2 attempts)\n"),
        "{out}"
    );
    assert!(out.contains("1 datagrams sent (2 transmissions with retries), 0 received, 1 lost"));
    assert!(out.contains("rtt: no replies, total time "), "{out}");
    assert_eq!(
        stderr(&o).trim(),
        "error: 1 of 1 datagrams got no reply after 1 retries"
    );
    assert_eq!(server.stop().dropped, 2);
}

#[test]
fn demo_runs_by_default_and_recovers_every_drop() {
    let o = run_with_timeout(bin(), b"", LIMIT);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("resending (attempt 2)"), "{out}");
    assert!(out.contains("seq=7 65507 bytes rtt="), "{out}");
    assert!(
        out.contains(
            "client: 8 datagrams sent (12 transmissions with retries), 8 received, 0 lost"
        ),
        "{out}"
    );
    assert!(out.contains("server: 12 datagrams"), "{out}");
    assert!(out.contains("8 echoed, 4 dropped by --drop"), "{out}");
}

#[test]
fn bad_flags_are_usage_errors() {
    for args in [
        &["server", "--drop", "150"][..],
        &["server", "--guard-ports", "9-7"],
        &["client", "--timeout", "0"],
        &["client", "--window", "0"],
        &["client", "--count", "2", "message"],
    ] {
        let mut cmd = bin();
        cmd.args(args);
        let o = run_with_timeout(cmd, b"", LIMIT);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).starts_with("error: "), "{args:?}");
    }
}
