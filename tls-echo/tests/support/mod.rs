//! Helpers shared by the integration tests: an in-process TLS server on
//! 127.0.0.1:0, a blocking rustls client written independently of the
//! crate's own async client, the binary as a child process, and
//! self-deleting temp files. The helpers every chapter shares (bounded
//! waits, child processes, a plain TCP echo) come from `test-support`.
#![allow(dead_code)]
// each test binary uses a different subset
// Helpers outside `#[test]` functions: clippy.toml's test allowance does
// not reach them, and a panic here is a failed test, as intended.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::{Framing, ServerConfig, Shutdown, Stats};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, RootCertStore, StreamOwned};
use test_support::ServerProcess;
use tls_echo::pki::{Ca, Identity, SERVER_NAMES, TlsVersions, client_config, server_config};
use tls_echo::server;

/// Every read in the tests gives up after this long.
pub const TIMEOUT: Duration = test_support::LIMIT;

#[allow(unused_imports)] // each test binary uses its own subset
pub use test_support::{SIGCONT, SIGSTOP, exits_within, read_n, tcp_echo};

pub struct TestServer {
    pub addr: SocketAddr,
    pub ca: Ca,
    pub shutdown: Shutdown,
    handle: Option<JoinHandle<io::Result<Arc<Stats>>>>,
}

impl TestServer {
    pub fn start(framing: Framing) -> Self {
        Self::start_with(framing, |_| {}, None)
    }

    /// `tweak` adjusts the config; `client_ca` turns on mutual TLS.
    pub fn start_with(
        framing: Framing,
        tweak: impl FnOnce(&mut server::Config),
        client_ca: Option<RootCertStore>,
    ) -> Self {
        common::log::init_for_tests();
        tls_echo::install_crypto_provider();
        let ca = Ca::new("test CA").unwrap();
        let tls = server_config(ca.issue_server(&SERVER_NAMES).unwrap(), client_ca).unwrap();
        let common = ServerConfig {
            framing,
            ..Default::default()
        };
        let mut config = server::Config::new(common, Arc::new(tls));
        tweak(&mut config);
        let listener = common::net::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        let handle = std::thread::spawn(move || server::run(listener, config, s));
        TestServer {
            addr,
            ca,
            shutdown,
            handle: Some(handle),
        }
    }

    /// A client config trusting this server's CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        Arc::new(client_config(self.ca.roots().unwrap(), None, TlsVersions::Any).unwrap())
    }

    /// Trigger shutdown and wait for `run` to return its counters.
    pub fn stop(mut self) -> Arc<Stats> {
        self.shutdown.trigger();
        self.handle.take().unwrap().join().unwrap().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

pub type TlsClient = StreamOwned<ClientConnection, TcpStream>;

/// A blocking rustls client, handshake completed (or the error).
pub fn tls_connect(
    addr: SocketAddr,
    name: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<TlsClient, io::Error> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(TIMEOUT))?;
    tcp.set_write_timeout(Some(TIMEOUT))?;
    let conn = ClientConnection::new(config, ServerName::try_from(name.to_string()).unwrap())
        .map_err(io::Error::other)?;
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// The rustls error inside an io::Error, if there is one.
pub fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Send `bytes`, read back exactly as many, compare.
pub fn round_trip(c: &mut TlsClient, bytes: &[u8]) -> io::Result<()> {
    c.write_all(bytes)?;
    c.flush()?;
    let back = read_n(c, bytes.len())?;
    assert_eq!(back, bytes, "echo must be byte-exact");
    Ok(())
}

/// A file under the temp dir with a name unique to this process and call,
/// removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(stem: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        TempFile(
            std::env::temp_dir().join(format!("tls-echo-test-{}-{n}-{stem}", std::process::id())),
        )
    }

    pub fn with(stem: &str, contents: &str) -> Self {
        let f = Self::new(stem);
        std::fs::write(&f.0, contents).unwrap();
        f
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A client identity and its PEM files.
pub fn identity_files(id: &Identity) -> (TempFile, TempFile) {
    (
        TempFile::with("client.pem", &id.cert_pem()),
        TempFile::with("client.key", &id.key_pem()),
    )
}

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tls-echo");

/// `tls-echo server` as a child process (`test_support::ServerProcess`),
/// killed on drop unless it was seen to exit.
pub struct ServerChild {
    process: ServerProcess,
    pub addr: SocketAddr,
}

impl ServerChild {
    /// Start `tls-echo server --addr 127.0.0.1:0 ARGS`, read its first
    /// stdout line (which must be the announce line), within TIMEOUT.
    pub fn start(args: &[&str]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.args(["server", "--addr", "127.0.0.1:0"]).args(args);
        let process = ServerProcess::spawn(&mut cmd);
        ServerChild {
            addr: process.addr,
            process,
        }
    }

    /// Send SIGTERM. The receiver gets (exit status, whole stderr) once the
    /// process has exited; the caller bounds the wait with `recv_timeout`.
    pub fn sigterm(&mut self) -> mpsc::Receiver<(ExitStatus, String)> {
        self.process.signal(test_support::SIGTERM);
        let exit = self.process.exit_receiver();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            if let Ok((status, lines)) = exit.recv() {
                let _ = tx.send((status, lines.join("\n")));
            }
        });
        rx
    }

    /// Send a signal (`SIGSTOP`, `SIGCONT`).
    pub fn signal(&self, sig: i32) {
        self.process.signal(sig);
    }

    /// SIGTERM, then the exit status and stderr, within TIMEOUT.
    pub fn terminate(mut self) -> (Option<i32>, String) {
        let (status, text) = self
            .sigterm()
            .recv_timeout(TIMEOUT)
            .expect("server did not exit on SIGTERM");
        (status.code(), text)
    }
}
