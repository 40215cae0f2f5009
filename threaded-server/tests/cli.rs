//! The binary's edges: the default demo, the client subcommand, and errors
//! reported as one line with a non-zero exit status (never a panic).

// Helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Output};

use support::*;
use threaded_server::{Config, Model};

fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_threaded-server"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn demo_is_the_default_and_runs_both_models() {
    let out = bin(&[]);
    assert!(out.status.success(), "{out:?}");
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
            .matches("4 connections served, 0 refused, 0 closed on error, 12 frames")
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
        stderr.starts_with("error: connecting to 127.0.0.1:"),
        "{stderr}"
    );
    assert!(stderr.contains("refused"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let out = bin(&["server", "--model", "pool", "--workers", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 1"));
}
