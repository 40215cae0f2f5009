//! Helpers shared by the tests: tiny upstream servers on 127.0.0.1:0 (each
//! on its own thread, every read with a timeout so nothing hangs a test
//! run), and a bounded wait for a counter to reach a value.
// Test support: a failed unwrap here is a failed test, which is what we want.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The bound on every read and wait in the tests.
pub const LIMIT: Duration = Duration::from_secs(10);

pub fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A UDP echo server: every datagram back to its sender, unchanged. Ends
/// after LIMIT without a datagram.
pub fn udp_echo() -> SocketAddr {
    let s = UdpSocket::bind(localhost()).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    let addr = s.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
    addr
}

/// A UDP socket with a receive timeout.
pub fn udp_socket() -> UdpSocket {
    let s = UdpSocket::bind(localhost()).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s
}

/// Wait (bounded) until `counter` reaches `want`. Polling a counter the
/// relay bumps is waiting for an event, not sleeping for luck: it returns
/// as soon as the event happened, and fails loudly if it never does.
pub fn wait_for(what: &str, counter: &AtomicU64, want: u64) {
    let deadline = Instant::now() + LIMIT;
    while counter.load(Relaxed) < want {
        assert!(
            Instant::now() < deadline,
            "{what}: should have reached {want}, but was {}",
            counter.load(Relaxed)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A TCP echo server for one connection at a time: echoes until EOF, then
/// half-closes (FIN) after the last echo. Connection errors end that
/// connection only.
pub fn tcp_echo() -> SocketAddr {
    let l = TcpListener::bind(localhost()).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                s.set_read_timeout(Some(LIMIT)).unwrap();
                let mut buf = [0u8; 8192];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = s.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
}

/// A TCP listener the test accepts from itself.
pub fn tcp_listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind(localhost()).unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// Accept one connection, bounded by LIMIT.
pub fn accept(l: &TcpListener) -> TcpStream {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + LIMIT;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(LIMIT)).unwrap();
                return s;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "nobody connected");
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, LIMIT).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.set_write_timeout(Some(LIMIT)).unwrap();
    s
}

/// Read until EOF; an error (timeout, reset) fails the test.
pub fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    out
}

/// Read until an error; return the bytes read and the error.
pub fn read_until_error(s: &mut TcpStream) -> (Vec<u8>, io::Result<()>) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, Ok(())),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return (out, Err(e)),
        }
    }
}

/// `len` reproducible pseudo-random bytes.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    common::rng::SplitMix64::new(seed).fill(&mut v);
    v
}

/// Wait (bounded) until `cond` holds; for a gauge going back to zero.
pub fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: never happened");
        std::thread::sleep(Duration::from_millis(1));
    }
}
