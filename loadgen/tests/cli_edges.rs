//! The `loadgen` binary at its edges, as a user meets them: a stdout closed
//! early (`| head -1`) is a quiet exit 0; a run that got no echo says why in
//! one or two lines; the Python baseline with its port taken says so in one
//! line. Every child is waited for with a deadline.
//!
//! Run with: `cargo test -p loadgen --test cli_edges`

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod run_support;

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::Framing;
use run_support::{Fault, closed_port, first_line_within, output_within, tcp_server};

const LOADGEN: &str = env!("CARGO_BIN_EXE_loadgen");

/// A pipe whose read end is already closed: every write to the other end
/// fails with EPIPE, exactly what `| head -1` does once head has exited.
fn closed_pipe() -> Stdio {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) writes two fds into the array we pass.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both fds were just created by pipe(2) and are owned here only.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    Stdio::from(write)
}

/// Wait for `child` at most `limit`, draining its pipes on threads.
fn wait_output(child: Child, limit: Duration) -> Output {
    output_within(child, limit)
}

fn loadgen(args: &[&str], stdout: Stdio) -> Child {
    Command::new(LOADGEN)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn assert_quiet_success(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what}: exit {} (stderr: {stderr})",
        out.status
    );
    assert!(stderr.is_empty(), "{what}: stderr not empty: {stderr}");
}

#[test]
fn a_closed_stdout_is_a_quiet_success_for_list() {
    for args in [["compare", "--list"], ["check", "--list"]] {
        let out = wait_output(loadgen(&args, closed_pipe()), Duration::from_secs(20));
        assert_quiet_success(&out, &args.join(" "));
    }
}

#[test]
fn run_piped_into_head_ends_quietly() {
    let server = tcp_server(Framing::Line, Fault::None);
    let addr = server.addr.to_string();
    let args = [
        "run",
        "--addr",
        &addr,
        "--conns",
        "2",
        "--duration",
        "300ms",
    ];
    // Like `loadgen run ... | head -1`: read the first line, then close.
    let mut child = loadgen(&args, Stdio::piped());
    let stdout = child.stdout.take().unwrap();
    let (first, stdout) = first_line_within(stdout, Duration::from_secs(20));
    drop(stdout);
    let out = wait_output(child, Duration::from_secs(20));
    assert!(first.starts_with("target "), "{first}");
    assert_quiet_success(&out, "run | head -1");
    // And with the pipe closed before the report is written at all.
    let out = wait_output(loadgen(&args, closed_pipe()), Duration::from_secs(20));
    assert_quiet_success(&out, "run > closed pipe");
}

/// stderr of a failed run: exit status 1, nothing on stdout, at most two
/// lines on stderr.
fn failed_run(args: &[&str]) -> String {
    let out = wait_output(loadgen(args, Stdio::piped()), Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.lines().count() <= 2,
        "more than two lines:\n{stderr}"
    );
    stderr
}

#[test]
fn run_against_a_closed_port_names_the_cause() {
    let addr = closed_port().to_string();
    let stderr = failed_run(&["run", "--addr", &addr, "--duration", "300ms"]);
    assert!(
        stderr.contains(&format!("nothing listening at {addr}")),
        "{stderr}"
    );
}

#[test]
fn run_in_the_wrong_framing_names_the_likely_cause() {
    // A line server, driven with length framing: it waits for a newline
    // the length prefix never sends.
    let server = tcp_server(Framing::Line, Fault::None);
    let addr = server.addr.to_string();
    let stderr = failed_run(&[
        "run",
        "--addr",
        &addr,
        "--framing",
        "length",
        "--conns",
        "3",
        "--duration",
        "300ms",
        "--timeout",
        "500ms",
    ]);
    assert!(stderr.contains("probably a framing mismatch"), "{stderr}");
    assert!(stderr.contains("--framing length"), "{stderr}");
}

#[test]
fn asyncio_baseline_with_its_port_taken_says_so_in_one_line() {
    if !run_support::python3_available() {
        eprintln!("python3 not found: skipped");
        return;
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/asyncio_echo.py");
    let child = Command::new("python3")
        .args([script, "--addr", &addr])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!("asyncio_echo.py: cannot listen on {addr}: address already in use\n")
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_malformed_addr_is_refused_naming_flag_and_value() {
    for (sub, bad) in [
        ("run", "127.0.0.1"),
        ("run", "[::1:7000"),
        ("check", "127.0.0.1:"),
    ] {
        let out = wait_output(
            loadgen(&[sub, "--addr", bad], Stdio::piped()),
            Duration::from_secs(20),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{sub} --addr {bad}: {stderr}");
        assert!(
            stderr.contains(&format!("invalid value '{bad}' for '--addr")),
            "{sub} --addr {bad}: {stderr}"
        );
        // Parsed, not looked up: no resolver error.
        assert!(!stderr.contains("Name or service"), "{stderr}");
    }
}
