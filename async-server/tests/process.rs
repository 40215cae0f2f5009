//! The binary as a user runs it: the `listening on` line, SIGTERM with
//! frames in flight and with a client that never reads, a real client
//! nobody here wrote (Python's socket module), bad flags and values (exit 2,
//! one line naming them), a closed stdout, the demo, `--max-conns 1000000`,
//! and running out of file descriptors (EMFILE) without spinning.
//!
//! Every read of a child's stdout and every wait for a child is bounded.
// Test code: a panic is a failed test, so unwrap freely (clippy.toml
// allows it only inside #[test] functions, not in their helpers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Framing;
use support::{READ_TIMEOUT, connect, payload, read_to_eof, wait_until_acked, wire};
use test_support::ServerProcess;

const BIN: &str = env!("CARGO_BIN_EXE_async-server");
/// The longest any child may take to print a line or to exit.
const CHILD_TIMEOUT: Duration = Duration::from_secs(20);

/// Run a command to completion; kill it and fail after CHILD_TIMEOUT.
fn run_bounded(cmd: &mut Command) -> Output {
    test_support::run_bounded(cmd, b"", CHILD_TIMEOUT)
}

/// A server child process (`test_support::ServerProcess`), and when it was
/// sent SIGTERM.
struct Proc {
    process: ServerProcess,
    addr: SocketAddr,
    terminated_at: Option<Instant>,
}

fn start(cmd: &mut Command) -> Proc {
    let process = ServerProcess::spawn(cmd);
    Proc {
        addr: process.addr,
        process,
        terminated_at: None,
    }
}

impl Proc {
    fn sigterm(&mut self) {
        self.process.signal(test_support::SIGTERM);
        self.terminated_at = Some(Instant::now());
    }

    /// Wait for the exit (bounded); the status, the whole log, and how long
    /// it took from the SIGTERM.
    fn wait(mut self) -> (ExitStatus, Vec<String>, Duration) {
        let Ok((status, lines)) = self.process.exit_receiver().recv_timeout(CHILD_TIMEOUT) else {
            panic!("server did not exit within {CHILD_TIMEOUT:?}");
        };
        let took = self.terminated_at.map_or(Duration::ZERO, |t| t.elapsed());
        (status, lines, took)
    }

    /// SIGTERM, then [`wait`](Self::wait).
    fn terminate(mut self) -> (ExitStatus, Vec<String>, Duration) {
        self.sigterm();
        self.wait()
    }
}

fn server(model: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["server", "--model", model, "--addr", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "info");
    cmd
}

/// [`server`] for a [`support::Variant`]: a model, or the event loop with
/// `--loops 2` in a balance mode.
fn server_variant(v: &support::Variant, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("server")
        .args(v.args())
        .args(["--addr", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "info");
    cmd
}

/// `connections per loop: [3, 2]`, logged once by a run with `--loops N`.
fn per_loop(log: &[String], what: &str) -> Vec<u64> {
    let lines: Vec<&str> = log
        .iter()
        .filter_map(|l| {
            l.split_once("connections per loop: [")
                .map(|(_, rest)| rest)
        })
        .collect();
    assert_eq!(lines.len(), 1, "{what}: {log:#?}");
    lines[0]
        .trim_end_matches(']')
        .split(", ")
        .map(|n| n.parse().unwrap())
        .collect()
}

/// The one summary line of a run.
fn summary(log: &[String], what: &str) -> String {
    let lines: Vec<_> = log
        .iter()
        .filter(|l| l.contains("async-server stopped: "))
        .collect();
    assert_eq!(lines.len(), 1, "{what}: {log:#?}");
    lines[0].clone()
}

#[test]
fn python_client_half_close_and_sigterm_exit_zero() {
    for model in support::model_names() {
        let proc = start(&mut server(model, &[]));
        let script = "import socket,sys\n\
            s=socket.create_connection(('127.0.0.1',int(sys.argv[1])),timeout=10)\n\
            s.sendall(b'one\\ntwo\\n'); s.shutdown(socket.SHUT_WR)\n\
            d=b''\n\
            while True:\n    c=s.recv(4096)\n    if not c: break\n    d+=c\n\
            sys.stdout.buffer.write(d)\n";
        let out = run_bounded(Command::new("python3").args([
            "-c",
            script,
            &proc.addr.port().to_string(),
        ]));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, b"one\ntwo\n", "{model}");
        let (status, log, _) = proc.terminate();
        assert!(status.success(), "{model}: {status}");
        let line = summary(&log, model);
        assert!(
            line.ends_with(
                "async-server stopped: 1 connections served, 0 refused, 0 closed on error, \
                 0 timed out, 0 cut at the deadline, 2 frames, 6 payload bytes echoed"
            ),
            "{line}"
        );
        assert!(log.iter().any(|l| l.contains("RLIMIT_NOFILE")), "{model}");
    }
}

#[test]
fn our_client_against_the_server() {
    let proc = start(&mut server("event-loop", &["--framing", "length"]));
    let out = run_bounded(Command::new(BIN).args([
        "client",
        "--framing",
        "length",
        "--addr",
        &proc.addr.to_string(),
        "hello",
        "world",
    ]));
    assert!(out.status.success());
    assert_eq!(out.stdout, b"hello\nworld\n");
    let (status, _, _) = proc.terminate();
    assert!(status.success());
}

/// Clients with echoes owed (sent, acknowledged by the server's kernel, not
/// yet read) when SIGTERM arrives: each gets every one of them, then a
/// clean EOF; the server exits 0 with one summary line. Every model, and
/// the event loop with `--loops 2` in both balance modes.
#[test]
fn sigterm_with_frames_in_flight_returns_them_all_then_eof() {
    for v in support::variants() {
        for framing in Framing::ALL {
            let what = format!("{} / {framing}", v.name());
            let mut proc = start(&mut server_variant(&v, &["--framing", framing.name()]));
            let mut clients = Vec::new();
            for c in 0..5 {
                let mut s = connect(proc.addr);
                let first = wire(framing, &[&payload(c, 0)]);
                s.write_all(&first).unwrap();
                let mut got = vec![0; first.len()];
                s.read_exact(&mut got).unwrap();
                assert_eq!(got, first, "{what}");
                let owed: Vec<Vec<u8>> = (1..6).map(|i| payload(c, i)).collect();
                let refs: Vec<&[u8]> = owed.iter().map(Vec::as_slice).collect();
                let owed = wire(framing, &refs);
                s.write_all(&owed).unwrap();
                clients.push((s, owed));
            }
            for (s, _) in &clients {
                wait_until_acked(s);
            }
            proc.sigterm();
            for (c, (mut s, owed)) in clients.into_iter().enumerate() {
                assert_eq!(read_to_eof(&mut s), owed, "{what}: client {c}");
            }
            let (status, log, _) = proc.wait();
            assert!(status.success(), "{what}: {status}");
            let line = summary(&log, &what);
            assert!(
                line.contains(
                    "5 connections served, 0 refused, 0 closed on error, 0 timed out, 0 cut"
                ),
                "{what}: {line}"
            );
            if v.loops > 1 {
                assert_eq!(per_loop(&log, &what).iter().sum::<u64>(), 5, "{what}");
            }
        }
    }
}

/// A client that wrote megabytes and never reads cannot hold the shutdown:
/// the server exits within `--grace` (plus a margin for a loaded machine),
/// the well-behaved clients got every echo, and the non-reader is cut.
/// Every model, and `--loops 2` in both balance modes (the loops share one
/// deadline).
#[test]
fn never_reading_client_cannot_hold_shutdown_past_grace() {
    const GRACE: Duration = Duration::from_secs(1);
    const MARGIN: Duration = Duration::from_secs(3);
    for v in support::variants() {
        for framing in Framing::ALL {
            let what = format!("{} / {framing}", v.name());
            let mut proc = start(&mut server_variant(
                &v,
                &["--framing", framing.name(), "--grace", "1s"],
            ));
            let mut stuck = connect(proc.addr);
            let sent = support::write_until_blocked(&mut stuck, framing, 256 << 20);
            assert!(sent >= 1 << 20, "{what}: blocked after {sent} bytes");
            let mut good = Vec::new();
            for c in 0..3 {
                let mut s = connect(proc.addr);
                // One echo first: the server has accepted this client (a
                // connection still in the backlog is reset at shutdown).
                let first = wire(framing, &[b"hello"]);
                s.write_all(&first).unwrap();
                let mut got = vec![0; first.len()];
                s.read_exact(&mut got).unwrap();
                let owed: Vec<Vec<u8>> = (0..4).map(|i| payload(c, i)).collect();
                let refs: Vec<&[u8]> = owed.iter().map(Vec::as_slice).collect();
                let owed = wire(framing, &refs);
                s.write_all(&owed).unwrap();
                wait_until_acked(&s);
                good.push((s, owed));
            }
            proc.sigterm();
            for (c, (mut s, owed)) in good.into_iter().enumerate() {
                assert_eq!(read_to_eof(&mut s), owed, "{what}: client {c}");
            }
            let (status, log, took) = proc.wait();
            assert!(status.success(), "{what}: {status}");
            assert!(
                took <= GRACE + MARGIN,
                "{what}: exited {took:?} after SIGTERM, --grace {GRACE:?}"
            );
            let line = summary(&log, &what);
            assert!(
                line.contains("4 connections served, 0 refused, 0 closed on error, 0 timed out, 1 cut at the deadline"),
                "{what}: {line}"
            );
            drop(stuck);
        }
    }
}

#[test]
fn max_conns_of_a_million_starts_and_serves() {
    for model in support::model_names() {
        let proc = start(&mut server(model, &["--max-conns", "1000000"]));
        let mut s = connect(proc.addr);
        s.write_all(b"a million\n").unwrap();
        let mut got = [0u8; 10];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"a million\n", "{model}");
        drop(s);
        let (status, log, _) = proc.terminate();
        assert!(status.success(), "{model}: {status}: {log:#?}");
        assert!(!log.iter().any(|l| l.contains("panicked")), "{model}");
    }
}

/// Exit 2, nothing on stdout, and one `error:` line naming the flag and the
/// value (clap adds a blank line and a `--help` hint after it).
fn assert_refused(args: &[&str], flag: &str, value: &str) {
    let out = run_bounded(Command::new(BIN).args(args));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(out.stdout.is_empty(), "{args:?}: stdout {:?}", out.stdout);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{args:?}: {err}");
    assert!(
        errors[0].contains(flag) && errors[0].contains(value),
        "{args:?}: {}",
        errors[0]
    );
    assert!(!err.contains("panicked"), "{args:?}: {err}");
}

#[test]
fn bad_values_exit_2_with_one_line_naming_flag_and_value() {
    for model in support::model_names() {
        for (flag, value) in [
            ("--max-conns", "0"),
            ("--max-frame", "0"),
            ("--grace", "0"),
            ("--idle-timeout", "-1s"),
            ("--addr", "127.0.0.1"),
            ("--addr", "[::1:7000"),
        ] {
            let arg = format!("{flag}={value}");
            assert_refused(&["server", "--model", model, &arg], flag, value);
        }
    }
    for (flag, value) in [
        ("--addr", "127.0.0.1"),
        ("--addr", "[::1:7000"),
        ("--timeout", "0"),
    ] {
        let arg = format!("{flag}={value}");
        assert_refused(&["client", &arg, "x"], flag, value);
    }
    // Valid alone, not with this model: refused the same way.
    assert_refused(&["server", "--threads", "0"], "--threads", "0");
    assert_refused(
        &["server", "--model", "event-loop", "--threads", "2"],
        "--threads",
        "2",
    );
    assert_refused(
        &["server", "--model", "event-loop", "--offload", "rayon"],
        "--offload",
        "rayon",
    );
    assert_refused(&["server", "--loops", "0"], "--loops", "0");
    assert_refused(
        &["server", "--model", "event-loop", "--loops", "257"],
        "--loops",
        "257",
    );
    assert_refused(
        &["server", "--model", "event-loop", "--balance", "kernel"],
        "--balance",
        "kernel",
    );
    assert_refused(
        &["server", "--model", "tokio", "--loops", "2"],
        "--loops",
        "2",
    );
    assert_refused(
        &["server", "--model", "tokio", "--balance", "acceptor"],
        "--balance",
        "acceptor",
    );
    assert_refused(&["server", "--addr", "unix:"], "--addr", "unix:");
    let long = format!("unix:/tmp/{}", "x".repeat(120));
    assert_refused(&["server", "--addr", &long], "--addr", "107 bytes");
    assert_refused(
        &["server", "--model", "uring", "--addr", "unix:/tmp/x.sock"],
        "--addr",
        "unix:",
    );
    assert_refused(
        &[
            "server",
            "--model",
            "event-loop",
            "--loops",
            "2",
            "--addr",
            "unix:/tmp/x.sock",
        ],
        "--addr",
        "--balance acceptor",
    );
    // Checked while parsing, so even where io_uring is refused.
    assert_refused(
        &["server", "--model", "uring", "--threads", "2"],
        "--threads",
        "2",
    );
    assert_refused(
        &["server", "--model", "uring", "--offload", "rayon"],
        "--offload",
        "rayon",
    );
    // The ring's own flags, for the uring model only, and bounded.
    assert_refused(
        &["server", "--model", "tokio", "--sqpoll", "10ms"],
        "--sqpoll",
        "--model uring",
    );
    assert_refused(
        &["server", "--model", "event-loop", "--recv", "oneshot"],
        "--recv",
        "--model uring",
    );
    assert_refused(
        &["server", "--model", "uring", "--sqpoll", "0"],
        "--sqpoll",
        "between 1ms and 10s",
    );
    assert_refused(
        &["server", "--model", "uring", "--recv", "twice"],
        "--recv",
        "twice",
    );
}

#[test]
fn client_against_nothing_is_one_error_line_and_exit_1() {
    // Refused, not a hang: nothing listens on the client's target.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run_bounded(Command::new(BIN).args([
        "client",
        "--addr",
        &format!("127.0.0.1:{port}"),
        "x",
    ]));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("async-server: error: ") && err.contains("refused"),
        "{err}"
    );
}

/// `async-server client | head -1`: the client's next echo hits a closed
/// pipe. That is a normal end: exit 0, nothing on stderr, no panic.
#[test]
fn closed_stdout_is_a_quiet_exit_zero() {
    let proc = start(&mut server("event-loop", &[]));
    let mut client = Command::new(BIN)
        .args(["client", "--addr", &proc.addr.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"one\n").unwrap();
    // Read the first echo (its one `write` of 4 bytes arrives whole), with
    // a timeout: poll(2) the pipe before reading it.
    let mut stdout = client.stdout.take().unwrap();
    let mut fd = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&stdout),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd we own, and its length 1.
    let ready = unsafe { libc::poll(&mut fd, 1, CHILD_TIMEOUT.as_millis() as libc::c_int) };
    assert_eq!(ready, 1, "no echo within {CHILD_TIMEOUT:?}");
    let mut first = [0u8; 64];
    let n = stdout.read(&mut first).unwrap();
    assert_eq!(&first[..n], b"one\n");
    // Close the read end: the next echo the client prints hits EPIPE.
    drop(stdout);
    stdin.write_all(b"two\n").unwrap();
    drop(stdin);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(client.wait_with_output()));
    let out = rx.recv_timeout(CHILD_TIMEOUT).unwrap().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _, _) = proc.terminate();
    assert!(status.success());
}

#[test]
fn demo_runs_both_models_with_a_clean_transcript() {
    let out = run_bounded(Command::new(BIN).env_remove("RUST_LOG"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Logs at `warn` unless RUST_LOG says otherwise: nothing to say here.
    assert!(err.is_empty(), "{err}");
    let text = String::from_utf8(out.stdout).unwrap();
    let models = support::model_names();
    for model in &models {
        assert!(text.contains(&format!("== --model {model}:")), "{text}");
    }
    assert_eq!(
        text.matches("server summary: 3 connections served, 0 refused, 0 closed on error, 0 timed out, 0 cut at the deadline, 6 frames").count(),
        models.len(),
        "{text}"
    );
    assert!(text.contains("client 3 <- \"bye from client 3\""), "{text}");
}

#[test]
fn help_shows_the_real_port_and_subcommands_in_order() {
    let out = run_bounded(Command::new(BIN).arg("--help"));
    let help = String::from_utf8(out.stdout).unwrap();
    let at = |name: &str| {
        help.find(&format!("\n  {name} "))
            .unwrap_or_else(|| panic!("{name} missing: {help}"))
    };
    assert!(
        at("demo") < at("server") && at("server") < at("client"),
        "{help}"
    );
    for sub in ["server", "client"] {
        let out = run_bounded(Command::new(BIN).args([sub, "--help"]));
        let help = String::from_utf8(out.stdout).unwrap();
        assert!(help.contains("[default: 127.0.0.1:7004]"), "{sub}: {help}");
    }
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the `(comm)`, which may itself contain spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// Out of file descriptors: the server must keep serving the clients it has,
/// not spin on `accept()`, and accept again once descriptors are freed.
#[test]
fn emfile_backs_off_and_recovers() {
    for model in support::model_names() {
        let mut cmd = server(model, &["--threads", "1", "--grace", "2s"]);
        // SAFETY: only async-signal-safe setrlimit between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 64,
                    rlim_max: 64,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let proc = start(&mut cmd);
        // The kernel completes every handshake (backlog 1024); the server
        // can only accept the first fifty-odd.
        let mut conns: Vec<TcpStream> = (0..80).map(|_| connect(proc.addr)).collect();
        let mut first = conns.remove(0);
        first.write_all(b"first\n").unwrap();
        let mut buf = [0u8; 6];
        first.read_exact(&mut buf).unwrap();
        assert_eq!(
            &buf, b"first\n",
            "{model}: an accepted client is still served"
        );

        let mut last = conns.pop().unwrap();
        last.write_all(b"last\n").unwrap();
        // The last one is stuck in the backlog. While it waits, the server
        // must not burn CPU retrying accept().
        last.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let cpu_before = cpu_seconds(proc.process.pid());
        let err = last
            .read_exact(&mut [0u8; 5])
            .expect_err("served while out of fds?");
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{err}"
        );
        let cpu = cpu_seconds(proc.process.pid()) - cpu_before;
        assert!(
            cpu < 0.5,
            "{model}: {cpu:.2} s of CPU in a 1 s wait: spinning on accept"
        );

        // Free descriptors: close forty clients.
        conns.drain(..40);
        last.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut got = [0u8; 5];
        last.read_exact(&mut got).unwrap();
        assert_eq!(
            &got, b"last\n",
            "{model}: accepting again after fds were freed"
        );
        drop((first, last, conns));

        let (status, log, _) = proc.terminate();
        assert!(status.success(), "{model}: {status}");
        let warnings = log
            .iter()
            .filter(|l| l.contains("out of file descriptors"))
            .count();
        // Back-off: a handful of warnings, not one per spin.
        assert!(
            (1..=30).contains(&warnings),
            "{model}: {warnings} EMFILE warnings"
        );
    }
}
