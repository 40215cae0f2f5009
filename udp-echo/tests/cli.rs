//! The `udp-echo` binary as a user runs it: flags, output, exit status.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

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
            "udp-echo stopped: 1 datagrams (13 payload bytes) from 1 peer: 1 echoed, 0 dropped"
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
    // A reply timeout of an hour: ending within LIMIT at all proves the
    // client did not wait for a timeout; the ICMP error ended it.
    cmd.args([
        "client",
        "--addr",
        &addr.to_string(),
        "--timeout",
        "1h",
        "hello",
    ]);
    let o = run_with_timeout(cmd, b"", LIMIT);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("udp-echo: error: no UDP server at {addr}: ")),
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
    assert!(
        err.starts_with("udp-echo: error: datagram 0 is 65508 bytes"),
        "{err}"
    );
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
        "udp-echo: error: 1 of 1 datagrams got no reply after 1 retries"
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

/// Each malformed address ends the program with status 2 and clap's one
/// line naming the flag and the value, before anything is bound: nothing on
/// stdout (no `listening on`), and never a DNS lookup.
#[test]
fn each_bad_address_exits_2_with_one_line_naming_the_flag() {
    for sub in ["server", "client"] {
        for (flag, value) in [
            ("--addr", "127.0.0.1"),
            ("--addr", "[::1:7000"),
            ("--timeout", "-1s"),
            // Refused before anything is allocated for it.
            ("--size", "1G"),
        ] {
            if sub == "server" && (flag == "--timeout" || flag == "--size") {
                continue;
            }
            let mut cmd = bin();
            // `--flag=value`, so that `-1s` is read as a value, not a flag.
            cmd.args([sub, &format!("{flag}={value}")]);
            if sub == "client" && flag != "--size" {
                cmd.arg("hello");
            }
            let o = run_with_timeout(cmd, b"", LIMIT);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{sub} {flag}={value}: {err}");
            assert!(o.stdout.is_empty(), "{sub} {flag}={value}: {}", stdout(&o));
            let first = err.lines().next().unwrap_or_default();
            assert!(
                first.starts_with("error: invalid value")
                    && first.contains(flag)
                    && first.contains(value),
                "{sub} {flag}={value}: {err}"
            );
        }
    }
}

#[test]
fn help_shows_the_real_default_port_and_the_demo_first() {
    for sub in ["server", "client"] {
        let mut cmd = bin();
        cmd.args([sub, "--help"]);
        let help = stdout(&run_with_timeout(cmd, b"", LIMIT));
        assert!(help.contains("[default: 127.0.0.1:7002]"), "{sub}: {help}");
    }
    let mut cmd = bin();
    cmd.arg("--help");
    let help = stdout(&run_with_timeout(cmd, b"", LIMIT));
    let pos = |s: &str| {
        help.find(&format!("\n  {s} "))
            .unwrap_or_else(|| panic!("{s}: {help}"))
    };
    assert!(
        pos("demo") < pos("server") && pos("server") < pos("client"),
        "{help}"
    );
}

/// `udp-echo client | head -1`: after the reader leaves, the next line
/// meets a closed pipe (EPIPE). Exit 0, nothing on stderr, no panic.
#[test]
fn a_closed_stdout_is_a_normal_end() {
    use std::io::Write;
    let server = TestServer::start(ServerConfig::default());
    let mut child = bin()
        .args(["client", "--addr", &server.addr.to_string()])
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"first\n").unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let mut reader = BufReader::new(out);
        let _ = reader.read_line(&mut line);
        drop(reader); // closes the pipe, before the test goes on
        let _ = tx.send(line);
    });
    let first = rx.recv_timeout(LIMIT).expect("no first line");
    assert!(first.starts_with("seq=0 "), "{first:?}");
    // This reply's line is written into a pipe nobody reads any more.
    stdin.write_all(b"second\n").unwrap();
    drop(stdin);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let o = rx.recv_timeout(LIMIT).expect("client did not end").unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "nothing on stderr, no panic");
    server.stop();
}
