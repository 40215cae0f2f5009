//! `loadgen run` against faulty servers: a corrupted byte, a dropped frame,
//! an early close, a refused connect. Each is counted, described, and makes
//! the run fail (and the binary exit non-zero).

// Helpers outside #[test] functions may unwrap too: a test failing loudly is the point.
#![allow(clippy::unwrap_used)]

mod run_support;

use std::process::Command;
use std::time::Duration;

use common::Framing;
use loadgen::run::{RunConfig, Stop, run};
use run_support::{Fault, closed_port, tcp_server};

fn config(addr: std::net::SocketAddr, framing: Framing) -> RunConfig {
    let mut c = RunConfig::new(addr);
    c.framing = framing;
    c.conns = 1;
    c.timeout = Duration::from_secs(2);
    c.stop = Stop::Requests(50);
    c
}

#[test]
fn corrupted_byte_is_caught_in_every_framing() {
    for framing in Framing::ALL {
        let server = tcp_server(framing, Fault::CorruptFrame(10));
        let r = run(&config(server.addr, framing)).unwrap();
        assert!(!r.ok(), "{framing}: {r}");
        assert_eq!(r.errors.wrong, 1, "{framing}: {r}");
        assert_eq!(r.verified, 9, "{framing}: {r}");
        assert!(r.error_samples[0].contains("differs at byte"), "{r}");
    }
}

#[test]
fn dropped_frame_is_caught_as_misplaced_echo() {
    // With two frames in flight, the echo of request 6 arrives where the
    // echo of request 5 was expected: the payload names itself.
    let server = tcp_server(Framing::Length, Fault::DropFrame(6));
    let mut c = config(server.addr, Framing::Length);
    c.pipeline = 2;
    let r = run(&c).unwrap();
    assert!(!r.ok());
    assert_eq!(r.errors.wrong, 1, "{r}");
    assert!(
        r.error_samples[0].contains("carries request 6"),
        "{:?}",
        r.error_samples
    );
}

#[test]
fn dropped_frame_without_pipelining_times_out() {
    let server = tcp_server(Framing::Line, Fault::DropFrame(3));
    let mut c = config(server.addr, Framing::Line);
    c.timeout = Duration::from_millis(300);
    let r = run(&c).unwrap();
    assert!(!r.ok());
    assert_eq!((r.errors.timeouts, r.errors.missing), (1, 1), "{r}");
}

#[test]
fn early_close_is_reported_with_what_was_owed() {
    let server = tcp_server(Framing::Length, Fault::CloseAfter(5));
    let mut c = config(server.addr, Framing::Length);
    c.conns = 2;
    c.pipeline = 3;
    let r = run(&c).unwrap();
    assert!(!r.ok());
    assert_eq!(r.errors.early_close + r.errors.io, 2, "{r}");
    assert_eq!(r.verified, 10, "{r}");
    assert!(r.errors.missing >= 2, "{r}");
}

#[test]
fn refused_connect_is_a_failure() {
    let mut c = config(closed_port(), Framing::Line);
    c.conns = 3;
    let r = run(&c).unwrap();
    assert!(!r.ok());
    assert_eq!(r.errors.connect_failures, 3);
    assert!(r.error_samples[0].contains("refused"), "{r}");
}

fn loadgen() -> Command {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
}

#[test]
fn binary_exits_non_zero_on_a_corrupt_echo_and_zero_on_a_good_run() {
    let bad = tcp_server(Framing::Line, Fault::CorruptFrame(3));
    let out = loadgen()
        .args(["run", "--addr", &bad.addr.to_string(), "--requests", "20"])
        .args(["--conns", "1", "--timeout", "2s"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("wrong 1"), "{stdout}");

    let good = tcp_server(Framing::Length, Fault::None);
    let out = loadgen()
        .args(["run", "--addr", &good.addr.to_string(), "--requests", "200"])
        .args(["--framing", "length", "--conns", "4", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verified"], 200);
    assert_eq!(v["errors"]["wrong"], 0);
    assert!(v["latency"]["p99_us"].as_f64().unwrap() > 0.0);
}

#[test]
fn binary_rejects_bad_flags_with_one_line() {
    let out = loadgen()
        .args(["run", "--pipeline", "0", "--addr", "127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--pipeline"), "{stderr}");
}

/// An iterative echo server: one client at a time, the next only after the
/// previous one leaves (like tcp-echo).
fn iterative_echo_server() -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = s.read(&mut buf) {
                if s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
    addr
}

#[test]
fn a_client_served_only_after_the_run_ends_counts_as_starved() {
    // Connection 2 waits in the backlog while connection 1 is served; it is
    // served only when the load stops and connection 1 closes. Its late echo
    // must not make it look served.
    let addr = iterative_echo_server();
    let mut c = RunConfig::new(addr);
    c.framing = Framing::Raw;
    c.conns = 2;
    c.warmup = Duration::ZERO;
    c.timeout = Duration::from_secs(5);
    c.stop = Stop::Duration(Duration::from_millis(300));
    let r = run(&c).unwrap();
    assert_eq!(r.starved_conns, 1, "{r}");
}
