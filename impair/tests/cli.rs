//! The `impair` binary as a user runs it: a bad flag is one line and exit
//! status 2 before anything is bound; a good one prints `listening on ADDR`,
//! relays, and on SIGTERM logs the summary and exits 0.

// Helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use support::{LIMIT, udp_echo, udp_socket};

fn impair() -> Command {
    Command::new(env!("CARGO_BIN_EXE_impair"))
}

/// Run with `args`, expect exit status 2 and a first stderr line that
/// starts with `error:` and contains every one of `words`.
fn usage_error(args: &[&str], words: &[&str]) {
    let out = impair().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {args:?}");
    let first = err.lines().next().unwrap_or_default();
    assert!(first.starts_with("error: "), "{args:?}: {err}");
    for w in words {
        assert!(first.contains(w), "{args:?}: `{first}` should mention {w}");
    }
}

const UDP: [&str; 5] = [
    "udp",
    "--listen",
    "127.0.0.1:0",
    "--upstream",
    "127.0.0.1:7002",
];
const TCP: [&str; 5] = [
    "tcp",
    "--listen",
    "127.0.0.1:0",
    "--upstream",
    "127.0.0.1:7001",
];

fn with(base: &[&'static str], extra: &[&'static str]) -> Vec<&'static str> {
    base.iter().chain(extra).copied().collect()
}

#[test]
fn bad_flags_get_one_line_errors_and_exit_2() {
    usage_error(
        &with(&UDP, &["--loss", "150%"]),
        &["--loss", "150%", "0% to 100%"],
    );
    usage_error(&with(&UDP, &["--dup", "lots"]), &["--dup", "lots"]);
    usage_error(&with(&UDP, &["--rate", "1MB"]), &["--rate", "1MB", "bits"]);
    usage_error(&with(&UDP, &["--delay", "5 parsecs"]), &["--delay"]);
    usage_error(&with(&UDP, &["--queue", "0"]), &["--queue", "0"]);
    usage_error(&with(&TCP, &["--split", "0"]), &["--split"]);
    usage_error(&with(&TCP, &["--buffer", "10"]), &["--buffer", "10"]);
    usage_error(
        &with(&TCP, &["--direction", "sideways"]),
        &["--direction", "sideways"],
    );
    usage_error(&with(&TCP, &["--loss", "5%"]), &["--loss"]);
    usage_error(
        &[
            "udp",
            "--listen",
            "localhost:1",
            "--upstream",
            "127.0.0.1:1",
        ],
        &["--listen", "localhost:1", "numeric"],
    );
    // A missing flag is clap's two-line form, naming it on the second.
    let out = impair()
        .args(["tcp", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--upstream <HOST:PORT>"));
    // The loopback rule, and the flag that lifts it.
    usage_error(
        &[
            "udp",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "192.0.2.1:7002",
        ],
        &[
            "--upstream 192.0.2.1:7002",
            "loopback",
            "--allow-non-loopback",
        ],
    );
    usage_error(
        &["tcp", "--listen", "0.0.0.0:0", "--upstream", "127.0.0.1:1"],
        &["--listen 0.0.0.0:0", "loopback"],
    );
}

#[test]
fn announces_relays_and_prints_a_summary_on_sigterm() {
    let echo = udp_echo();
    let mut child = impair()
        .env("RUST_LOG", "debug")
        .args(["udp", "--listen", "127.0.0.1:0", "--upstream"])
        .arg(echo.to_string())
        .args(["--dup", "100%", "--seed", "3"])
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
    let addr = common::net::parse_announce(&line).unwrap();
    assert_ne!(addr.port(), 0);

    // --dup 100% both ways: one datagram up arrives twice at the echo
    // server, each echo is doubled on the way down: four replies.
    let c = udp_socket();
    c.connect(addr).unwrap();
    c.send(b"ping").unwrap();
    let mut buf = [0u8; 16];
    for i in 0..4 {
        match c.recv(&mut buf) {
            Ok(n) => assert_eq!(&buf[..n], b"ping"),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("reply {i} of 4: {e}; the relay logged:\n{err}");
            }
        }
    }

    // SAFETY: kill(2) on our own child, not yet waited for.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{status}: {err}");
    assert!(
        err.contains("impair udp stopped: 1 flows (0 expired, 0 refused); up: 1 datagrams (4 bytes) in, 2 out (8 bytes), 0 lost, 0 tail-dropped, 1 duplicated"),
        "{err}"
    );
    assert!(
        err.contains(
            "down: 2 datagrams (8 bytes) in, 4 out (16 bytes), 0 lost, 0 tail-dropped, 2 duplicated"
        ),
        "{err}"
    );
}
