//! The binary's edges: bad flags and addresses refused before anything is
//! bound (exit 2, one line naming the flag, nothing on stdout), the real
//! default port in `--help`, and a closed stdout ending the program quietly.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;

use support::{T, bin};

/// Run to the end with a deadline.
fn output(mut cmd: Command) -> Output {
    test_support::run_bounded(&mut cmd, b"", T)
}

#[test]
fn each_bad_value_exits_2_with_one_line_naming_the_flag() {
    let server_only = [
        ("--max-conns", "0"),
        ("--max-frame", "0"),
        ("--grace", "0"),
        ("--idle-timeout", "-1s"),
    ];
    let both = [("--addr", "127.0.0.1"), ("--addr", "[::1:7000")];
    let cases = server_only
        .iter()
        .map(|c| ("server", *c))
        .chain(both.iter().flat_map(|c| [("server", *c), ("client", *c)]))
        .chain([("client", ("--timeout", "0"))]);
    for (sub, (flag, value)) in cases {
        let mut cmd = bin();
        // `--flag=value`, so that `-1s` is read as a value, not a flag.
        cmd.args([sub, &format!("{flag}={value}")]);
        if sub == "server" && flag != "--addr" {
            cmd.args(["--addr", "127.0.0.1:0"]);
        } else if sub == "client" {
            cmd.arg("hello");
        }
        let out = output(cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{sub} {flag}={value}: {err}");
        assert!(
            out.stdout.is_empty(),
            "{sub} {flag}={value}: stdout {:?}",
            out.stdout
        );
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: invalid value")
                && first.contains(flag)
                && first.contains(value),
            "{sub} {flag}={value}: {err}"
        );
        // clap adds a usage hint after a blank line; the error itself is one line.
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
        let mut cmd = bin();
        cmd.args([sub, "--help"]);
        let out = output(cmd);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("[default: 127.0.0.1:7001]"), "{sub}: {help}");
    }
    let mut cmd = bin();
    cmd.arg("--help");
    let help = String::from_utf8_lossy(&output(cmd).stdout).into_owned();
    let pos = |s: &str| {
        help.find(&format!("\n  {s} "))
            .unwrap_or_else(|| panic!("{s}: {help}"))
    };
    assert!(
        pos("demo") < pos("server") && pos("server") < pos("client"),
        "{help}"
    );
}

/// `tcp-echo client | head -1`: the reader leaves after one line. The
/// client's next write meets a closed pipe (EPIPE), and it must end with
/// status 0 and no panic ("failed printing to stdout"), not status 101.
#[test]
fn a_closed_stdout_is_a_normal_end() {
    let listener = common::net::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = common::Shutdown::new();
    let server = {
        let shutdown = shutdown.clone();
        thread::spawn(move || {
            tcp_echo::server::run(listener, &common::ServerConfig::default(), &shutdown)
        })
    };
    let mut child = bin()
        .args(["client", "--addr", &addr.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        let _ = reader.read_line(&mut line);
        drop(reader); // closes the pipe, before the test goes on
        let _ = tx.send(line);
    });
    let first = rx.recv_timeout(T).expect("no first line");
    assert!(first.starts_with("connected "), "{first:?}");
    // The pipe is closed now (the reader thread dropped it, then sent): the
    // client's `> hello` line is written into a pipe nobody reads.
    stdin.write_all(b"hello\n").unwrap();
    drop(stdin);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx.recv_timeout(T).expect("client did not end").unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(err, "", "nothing on stderr, no panic");
    shutdown.trigger();
    server.join().unwrap().unwrap();
}
