//! The binary's edges: the default demo, the client subcommand, errors
//! reported as one line with a non-zero exit status (never a panic), bad
//! flags refused before anything is bound, and a closed stdout.

// Helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::thread;

use support::*;
use threaded_server::{Config, Model};

/// Run to the end, bounded by [`TIMEOUT`].
fn bin(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_threaded-server"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(TIMEOUT)
        .expect("did not finish in time")
        .unwrap()
}

#[test]
fn demo_is_the_default_and_runs_both_models() {
    let out = bin(&[]);
    assert!(out.status.success(), "{out:?}");
    // Logs at warn unless RUST_LOG says otherwise: a clean transcript.
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("== per-client model"), "{stdout}");
    assert!(stdout.contains("== pool model (2 workers"), "{stdout}");
    for c in 1..=4 {
        assert!(
            stdout.contains(&format!("client {c} < hello from client {c}, message 3")),
            "{stdout}"
        );
    }
    assert_eq!(
        stdout
            .matches(
                "threaded-server stopped: 4 connections served, 0 refused, 0 closed on error, \
                 0 timed out, 0 cut at the deadline, 12 frames"
            )
            .count(),
        2,
        "{stdout}"
    );
    assert!(stdout.contains("worker-1 served"), "{stdout}");
}

#[test]
fn client_messages_and_load_mode() {
    let server = start(Config {
        model: Model::Pool,
        workers: 4,
        ..Config::default()
    });
    let addr = server.addr.to_string();
    let out = bin(&["client", "--addr", &addr, "hello", "world"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"hello\nworld\n");

    let out = bin(&[
        "client",
        "--addr",
        &addr,
        "--framing",
        "line",
        "--connections",
        "20",
        "--echoes",
        "10",
    ]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains(": 200 verified in"), "{stdout}");
    assert!(stdout.contains(", 0 failed connections"), "{stdout}");
    server.stop();
}

#[test]
fn errors_are_one_line_and_exit_non_zero() {
    // Nothing listens on a port we just closed.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = bin(&["client", "--addr", &format!("127.0.0.1:{port}"), "hi"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("threaded-server: error: connecting to 127.0.0.1:"),
        "{stderr}"
    );
    assert!(stderr.contains("refused"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// Each value that would make a server useless, and each malformed
/// address, ends the program with status 2 and clap's one line naming the
/// flag and the value, before anything is bound: nothing on stdout (no
/// `listening on` to fool a script).
#[test]
fn each_bad_value_exits_2_with_one_line_naming_the_flag() {
    let server_only = [
        ("--max-conns", "0"),
        ("--max-frame", "0"),
        ("--grace", "0"),
        ("--idle-timeout", "-1s"),
        ("--workers", "0"),
        // Chapter flags: refused before a queue or a thread is allocated.
        ("--queue", "99999999999"),
        ("--stack-size", "1"),
    ];
    let both = [("--addr", "127.0.0.1"), ("--addr", "[::1:7000")];
    let cases = server_only
        .iter()
        .map(|c| ("server", *c))
        .chain(both.iter().flat_map(|c| [("server", *c), ("client", *c)]))
        .chain([("client", ("--timeout", "0"))]);
    for (sub, (flag, value)) in cases {
        // `--flag=value`, so that `-1s` is read as a value, not a flag.
        let arg = format!("{flag}={value}");
        let mut args = vec![sub, arg.as_str()];
        if sub == "server" && flag != "--addr" {
            args.extend(["--model", "pool", "--addr", "127.0.0.1:0"]);
        } else if sub == "client" {
            args.push("hello");
        }
        let out = bin(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: stdout {:?}", out.stdout);
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: invalid value")
                && first.contains(flag)
                && first.contains(value),
            "{args:?}: {err}"
        );
        // clap adds a usage hint after a blank line; the error is one line.
        assert_eq!(
            err.split("\n\n").next().unwrap().lines().count(),
            1,
            "{err}"
        );
    }
}

#[test]
fn help_shows_the_real_default_port_and_the_demo_first() {
    for sub in ["server", "client"] {
        let out = bin(&[sub, "--help"]);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("[default: 127.0.0.1:7003]"), "{sub}: {help}");
    }
    let help = String::from_utf8_lossy(&bin(&["--help"]).stdout).into_owned();
    let pos = |s: &str| {
        help.find(&format!("\n  {s} "))
            .unwrap_or_else(|| panic!("{s}: {help}"))
    };
    assert!(
        pos("demo") < pos("server") && pos("server") < pos("client"),
        "{help}"
    );
}

/// `threaded-server client | head -1`: after the reader leaves, the next
/// echo meets a closed pipe (EPIPE). Exit 0, nothing on stderr, no panic.
#[test]
fn a_closed_stdout_is_a_normal_end() {
    let server = start(Config::default());
    let mut child = Command::new(env!("CARGO_BIN_EXE_threaded-server"))
        .args(["client", "--addr", &server.addr.to_string()])
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"first\n").unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        let _ = reader.read_line(&mut line);
        drop(reader); // closes the pipe, before the test goes on
        let _ = tx.send(line);
    });
    assert_eq!(rx.recv_timeout(TIMEOUT).unwrap(), "first\n");
    // This echo is written into a pipe nobody reads any more.
    stdin.write_all(b"second\n").unwrap();
    drop(stdin);
    let (tx, rx) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(TIMEOUT)
        .expect("client did not end")
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(err, "", "nothing on stderr, no panic");
    server.stop();
}
