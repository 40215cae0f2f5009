//! Helpers shared by the tests: tiny upstream servers on 127.0.0.1:0 (each
//! on its own thread, every read with a timeout so nothing hangs a test
//! run), and a bounded wait for a counter to reach a value. The helpers
//! every chapter shares come from the `test-support` crate.
// Test support: a failed unwrap here is a failed test, which is what we want.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

#[allow(unused_imports)] // each test binary uses its own subset
pub use test_support::{
    LIMIT, bytes, connect, localhost, read_to_end, read_until_error, tcp_echo, udp_echo, wait_until,
};

/// A UDP socket with a receive timeout.
pub fn udp_socket() -> UdpSocket {
    test_support::udp_socket_like(localhost(), LIMIT)
}

/// Wait (bounded) until `counter` reaches `want`. Polling a counter the
/// relay bumps is waiting for an event, not sleeping for luck: it returns
/// as soon as the event happened, and fails loudly if it never does.
pub fn wait_for(what: &str, counter: &AtomicU64, want: u64) {
    wait_until(&format!("{what} reaches {want}"), || {
        counter.load(Relaxed) >= want
    });
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
