//! `loadgen run` against a correct in-process echo server: it sends and
//! verifies exactly what it says, in every framing, pipelined or not, in
//! open and closed loop, with churn, over UDP.

// Helpers outside #[test] functions may unwrap too: a test failing loudly is the point.
#![allow(clippy::unwrap_used)]

mod run_support;

use std::time::Duration;

use common::Framing;
use loadgen::run::{Proto, RunConfig, Stop, run};
use run_support::{Fault, tcp_server, udp_server};

fn config(addr: std::net::SocketAddr, framing: Framing) -> RunConfig {
    let mut c = RunConfig::new(addr);
    c.framing = framing;
    c.timeout = Duration::from_secs(5);
    c
}

#[test]
fn counts_exactly_in_every_framing() {
    for framing in Framing::ALL {
        let server = tcp_server(framing, Fault::None);
        let mut c = config(server.addr, framing);
        c.conns = 7;
        c.pipeline = 4;
        c.stop = Stop::Requests(1000);
        let r = run(&c).unwrap();
        assert!(r.ok(), "{framing}: {r}");
        assert_eq!((r.sent, r.verified, r.measured), (1000, 1000, 1000), "{r}");
        assert_eq!(r.latency.count, 1000);
        assert_eq!(r.connects, 7);
        assert_eq!(r.errors.total(), 0);
        assert!(r.requests_per_sec > 0.0 && r.latency.p99_us >= r.latency.p50_us);
        if framing != Framing::Raw {
            // Raw has no frame boundaries: the server may see any chunking.
            assert_eq!(
                server.frames.load(std::sync::atomic::Ordering::Relaxed),
                1000
            );
        }
    }
}

#[test]
fn large_pipelined_frames_do_not_deadlock() {
    // 16 KiB x 16 in flight on 4 connections: more than a socket buffer
    // each way, which only works if reading and writing overlap.
    let server = tcp_server(Framing::Raw, Fault::None);
    let mut c = config(server.addr, Framing::Raw);
    c.conns = 4;
    c.size = 16 * 1024;
    c.pipeline = 16;
    c.stop = Stop::Requests(400);
    let r = run(&c).unwrap();
    assert!(r.ok(), "{r}");
    assert_eq!(r.verified, 400);
    assert!((r.mb_per_sec - r.requests_per_sec * 16384.0 / 1e6).abs() < 1e-6);
}

#[test]
fn churn_opens_a_connection_every_k_requests() {
    let server = tcp_server(Framing::Length, Fault::None);
    let mut c = config(server.addr, Framing::Length);
    c.conns = 2;
    c.churn = Some(10);
    c.stop = Stop::Requests(100);
    let r = run(&c).unwrap();
    assert!(r.ok(), "{r}");
    assert_eq!((r.verified, r.connects), (100, 10));
    assert_eq!(server.conns.load(std::sync::atomic::Ordering::Relaxed), 10);
    assert_eq!(r.connect.count, 10);
}

#[test]
fn open_loop_keeps_the_schedule() {
    let server = tcp_server(Framing::Line, Fault::None);
    let mut c = config(server.addr, Framing::Line);
    c.conns = 4;
    c.rate = Some(2000.0);
    c.stop = Stop::Requests(400);
    let r = run(&c).unwrap();
    assert!(r.ok(), "{r}");
    assert_eq!(r.verified, 400);
    // 400 requests scheduled at 2,000/s cannot finish in less than ~0.2 s
    // (the last one is due at 0.1995 s): a client that ignored the
    // schedule would finish in a few milliseconds.
    assert!(r.measured_secs >= 0.19, "{r}");
    assert!(r.requests_per_sec <= 2100.0, "{r}");
}

#[test]
fn duration_and_warmup_split_the_counts() {
    let server = tcp_server(Framing::Length, Fault::None);
    let mut c = config(server.addr, Framing::Length);
    c.conns = 2;
    c.warmup = Duration::from_millis(150);
    c.stop = Stop::Duration(Duration::from_millis(300));
    let r = run(&c).unwrap();
    assert!(r.ok(), "{r}");
    assert!(r.verified > r.measured && r.measured > 0, "{r}");
    assert_eq!(r.latency.count, r.measured);
    assert!(r.measured_secs >= 0.29, "{r}");
}

#[test]
fn udp_counts_exactly() {
    let addr = udp_server(None);
    let mut c = config(addr, Framing::Raw);
    c.proto = Proto::Udp;
    c.conns = 3;
    c.pipeline = 2;
    c.stop = Stop::Requests(300);
    let r = run(&c).unwrap();
    assert!(r.ok(), "{r}");
    assert_eq!((r.sent, r.verified), (300, 300));
}

#[test]
fn udp_lost_datagram_is_missing() {
    let addr = udp_server(Some(5));
    let mut c = config(addr, Framing::Raw);
    c.proto = Proto::Udp;
    c.conns = 1;
    c.timeout = Duration::from_millis(300);
    c.stop = Stop::Requests(20);
    let r = run(&c).unwrap();
    assert!(!r.ok());
    assert_eq!((r.sent, r.verified, r.errors.missing), (20, 19, 1), "{r}");
    assert!(r.error_samples[0].contains("lost"), "{r}");
}
