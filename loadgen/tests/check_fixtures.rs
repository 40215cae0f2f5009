//! `loadgen check` against small in-process servers: a correct echo server
//! passes every case, and each deliberately broken server is caught by the
//! case named for its flaw. This is how we know the checker can fail.
//!
//! Run with: `cargo test -p loadgen --test check_fixtures`
//! (`-- --nocapture` shows the checker's lines).

// A test fails by panicking; helpers outside #[test] fns may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{ConnError, FramedStream, Framing};
use loadgen::check::{self, CheckArgs, Report, Status};

/// How each fixture misbehaves.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Flaw {
    /// A correct thread-per-client echo server.
    None,
    /// Frames over 64 KiB are echoed cut to their first 64 KiB.
    TruncatesLarge,
    /// Serves its first client, then accepts but never reads anyone.
    StopsAfterFirstClient,
    /// One client at a time (like the iterative `tcp-echo`).
    Iterative,
    /// Reads everything a client sends into memory and answers only once
    /// the client stops sending: no back-pressure.
    BuffersUnbounded,
}

const MAX_FRAME: usize = 1 << 20;

fn serve_client(stream: TcpStream, framing: Framing, flaw: Flaw) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
    if flaw == Flaw::BuffersUnbounded {
        // Swallow until 200 ms of silence, then echo it all at once.
        let mut s = stream;
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        let mut all = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = s.write_all(&all);
        return;
    }
    let mut fs = FramedStream::new(stream, framing, MAX_FRAME);
    loop {
        match fs.read_frame() {
            Ok(Some(frame)) => {
                let out = if flaw == Flaw::TruncatesLarge && frame.len() > 65536 {
                    &frame[..65536]
                } else {
                    &frame[..]
                };
                if fs.write_frame(out).is_err() {
                    return;
                }
            }
            // EOF, protocol error (oversized, truncated), reset: close.
            Ok(None) | Err(ConnError::Frame(_)) | Err(ConnError::Io(_)) => return,
        }
    }
}

/// Start a fixture server on 127.0.0.1:0; it lives until the test process
/// ends.
fn fixture(framing: Framing, flaw: Flaw) -> SocketAddr {
    let listener = common::net::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let mut served = 0;
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            served += 1;
            match flaw {
                Flaw::Iterative => serve_client(stream, framing, flaw),
                Flaw::StopsAfterFirstClient if served > 1 => held.lock().unwrap().push(stream),
                Flaw::StopsAfterFirstClient => serve_client(stream, framing, flaw),
                _ => {
                    thread::spawn(move || serve_client(stream, framing, flaw));
                }
            }
        }
    });
    addr
}

fn check(addr: SocketAddr, extra: &[&str]) -> Report {
    let addr = addr.to_string();
    let mut flags = vec![
        "--addr",
        addr.as_str(),
        "--idle-clients",
        "50",
        "--clients",
        "100",
    ];
    flags.extend_from_slice(extra);
    let args = CheckArgs::from_flags(&flags).unwrap();
    let report = check::run(&args, |r| println!("{}", r.line())).unwrap();
    println!("{}", report.closing_line());
    report
}

fn status(report: &Report, case: &str) -> Status {
    report
        .get(case)
        .unwrap_or_else(|| panic!("no case {case}"))
        .status
}

#[test]
fn correct_fixture_passes_every_case_in_every_framing() {
    for framing in Framing::ALL {
        let addr = fixture(framing, Flaw::None);
        let report = check(addr, &["--framing", framing.name()]);
        assert!(report.ok(), "{framing}: {}", report.closing_line());
        // Exactly the framing-specific cases are skipped, plus the 3 UDP ones.
        let skipped: Vec<&str> = report
            .cases
            .iter()
            .filter(|c| c.status == Status::Skip)
            .map(|c| c.name)
            .collect();
        // And the contract case that needs --server-pid (the shutdown
        // cases are not picked by a bare `*`).
        let mut expect_skipped = vec![
            "datagram-sizes",
            "datagram-burst",
            "guard-port",
            "stall-timeout",
        ];
        match framing {
            Framing::Line => expect_skipped.insert(0, "oversized-length"),
            Framing::Length => expect_skipped.insert(0, "oversized-line"),
            Framing::Raw => {
                expect_skipped.insert(0, "oversized-line");
                expect_skipped.insert(0, "oversized-length");
            }
        }
        assert_eq!(skipped, expect_skipped, "{framing}");
        let ends_server = check::CASES.iter().filter(|c| c.ends_server).count();
        assert_eq!(
            report.passed + report.skipped,
            check::CASES.len() - ends_server
        );
    }
}

#[test]
fn truncating_fixture_is_caught_by_echo_sizes() {
    for framing in [Framing::Line, Framing::Length] {
        let addr = fixture(framing, Flaw::TruncatesLarge);
        let report = check(
            addr,
            &[
                "--framing",
                framing.name(),
                "--cases",
                "echo-*,pipelined,half-close",
            ],
        );
        let r = report.get("echo-sizes").unwrap();
        assert_eq!(r.status, Status::Fail, "{}", r.line());
        // The detail names the first bad frame and both sizes.
        assert!(
            r.got
                .contains("frame #12 of 14: expected 65537 B, got 65536 B"),
            "{}",
            r.got
        );
        // Small frames are fine, so the small-frame cases still pass.
        assert_eq!(status(&report, "pipelined"), Status::Pass);
        assert_eq!(status(&report, "half-close"), Status::Pass);
        assert_eq!(report.closing_line(), "2 passed, 1 failed");
    }
}

#[test]
fn fixture_that_stops_after_first_client_is_caught_by_reset_mid_frame() {
    let addr = fixture(Framing::Line, Flaw::StopsAfterFirstClient);
    let report = check(addr, &["--cases", "reset-mid-frame"]);
    let r = report.get("reset-mid-frame").unwrap();
    // The first client (the one that resets) is served; the new one is not.
    assert_eq!(r.status, Status::Fail, "{}", r.line());
    assert!(r.got.contains("new client:"), "{}", r.got);
    assert!(!report.ok());
}

#[test]
fn iterative_fixture_fails_idle_clients_and_expect_turns_it_into_xfail() {
    let addr = fixture(Framing::Line, Flaw::Iterative);
    let report = check(addr, &["--cases", "idle-clients,pipelined,oversized-line"]);
    assert_eq!(status(&report, "idle-clients"), Status::Fail);
    // The offender connects first, so even one-at-a-time passes this.
    assert_eq!(status(&report, "oversized-line"), Status::Pass);
    assert!(!report.ok());
    // The same server declared as `tcp-echo`, whose EXPECTED entry this is.
    let report = check(
        addr,
        &["--cases", "idle-clients,pipelined", "--expect", "tcp-echo"],
    );
    let r = report.get("idle-clients").unwrap();
    assert_eq!(r.status, Status::Xfail);
    assert!(r.line().starts_with("XFAIL idle-clients: "), "{}", r.line());
    assert!(
        r.line().contains("[expected failure: the iterative server"),
        "{}",
        r.line()
    );
    assert!(report.ok());
    assert_eq!((report.passed, report.failed, report.xfailed), (1, 0, 1));
}

#[test]
fn unbounded_buffering_fixture_is_caught_by_send_never_read() {
    let addr = fixture(Framing::Raw, Flaw::BuffersUnbounded);
    let report = check(addr, &["--framing", "raw", "--cases", "send-never-read"]);
    let r = report.get("send-never-read").unwrap();
    assert_eq!(r.status, Status::Fail, "{}", r.line());
    assert!(r.got.contains("never pushed back"), "{}", r.got);
}

#[test]
fn nothing_listening_fails_every_case_quickly() {
    // A port that was free a moment ago: connect is refused.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let report = check(addr, &["--cases", "echo-sizes,half-close"]);
    assert_eq!(report.closing_line(), "0 passed, 2 failed");
    assert!(
        report
            .get("echo-sizes")
            .unwrap()
            .got
            .contains("connection refused")
    );
}

/// A UDP echo server; when `guard` is set, datagrams from that source port
/// get no reply.
fn udp_fixture(guard: Option<u16>) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            if Some(peer.port()) != guard {
                let _ = sock.send_to(&buf[..n], peer);
            }
        }
    });
    addr
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn udp_fixture_passes_and_an_unguarded_one_is_caught() {
    let guard = free_udp_port();
    let g = guard.to_string();
    let report = check(
        udp_fixture(Some(guard)),
        &["--proto", "udp", "--guard-ports", &g],
    );
    assert!(report.ok(), "{}", report.closing_line());
    assert_eq!(status(&report, "datagram-sizes"), Status::Pass);
    assert_eq!(status(&report, "datagram-burst"), Status::Pass);
    assert_eq!(status(&report, "guard-port"), Status::Pass);
    assert_eq!(report.passed, 3);

    let guard = free_udp_port();
    let g = guard.to_string();
    let report = check(
        udp_fixture(None),
        &[
            "--proto",
            "udp",
            "--guard-ports",
            &g,
            "--cases",
            "guard-port",
        ],
    );
    let r = report.get("guard-port").unwrap();
    assert_eq!(r.status, Status::Fail, "{}", r.line());
    assert!(r.got.contains("reflection"), "{}", r.got);
}

#[test]
fn udp_with_nobody_listening_fails() {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let report = check(addr, &["--proto", "udp", "--cases", "datagram-sizes"]);
    let r = report.get("datagram-sizes").unwrap();
    assert_eq!(r.status, Status::Fail, "{}", r.line());
}
