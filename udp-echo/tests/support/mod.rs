//! Helpers shared by the integration tests: an in-process server on an
//! ephemeral port, and sockets whose every read has a timeout. The helpers
//! every chapter shares come from the `test-support` crate.
// Test support: a failed unwrap here is a failed test, which is what we want.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::thread::JoinHandle;
use std::time::Duration;

use common::Shutdown;
use udp_echo::server::{self, ServerConfig, Summary};

/// Upper bound for any single read in the tests.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A server running in a thread of the test process.
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Shutdown,
    handle: Option<JoinHandle<io::Result<Summary>>>,
}

impl TestServer {
    pub fn start(config: ServerConfig) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), config).unwrap()
    }

    pub fn start_on(addr: SocketAddr, config: ServerConfig) -> io::Result<Self> {
        common::log::init_for_tests();
        let socket = server::bind(addr)?;
        let addr = socket.local_addr()?;
        let shutdown = Shutdown::new();
        let handle = {
            let shutdown = shutdown.clone();
            std::thread::spawn(move || server::run(socket, config, shutdown))
        };
        Ok(TestServer {
            addr,
            shutdown,
            handle: Some(handle),
        })
    }

    /// Trigger shutdown and return the server's summary.
    pub fn stop(mut self) -> Summary {
        self.shutdown.trigger();
        self.handle
            .take()
            .unwrap()
            .join()
            .expect("server thread panicked")
            .expect("server returned an error")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // A failing test must not leave the thread running forever.
        self.shutdown.trigger();
    }
}

/// A UDP socket on 127.0.0.1 (or ::1) with a read timeout.
pub fn socket_like(addr: SocketAddr) -> UdpSocket {
    test_support::udp_socket_like(addr, READ_TIMEOUT)
}

/// A connected UDP socket with a read timeout.
pub fn connected(addr: SocketAddr) -> UdpSocket {
    let s = socket_like(addr);
    s.connect(addr).unwrap();
    s
}

#[allow(unused_imports)] // each test binary uses its own subset
pub use test_support::{bytes, is_timeout};

/// Run `cmd` to completion with `stdin` as input; kill it and panic if it
/// takes longer than `limit`.
pub fn run_with_timeout(
    mut cmd: std::process::Command,
    stdin: &[u8],
    limit: Duration,
) -> std::process::Output {
    test_support::run_bounded(&mut cmd, stdin, limit)
}

/// The `udp-echo` binary cargo built for these tests.
pub fn bin() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_udp-echo"));
    cmd.env("RUST_LOG", "info");
    cmd
}
