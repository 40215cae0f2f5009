//! Helpers shared by the integration tests: an in-process TLS server on
//! 127.0.0.1:0, a blocking rustls client written independently of the
//! crate's own async client, a plain TCP echo, and self-deleting temp files.
#![allow(dead_code)]
// each test binary uses a different subset
// Helpers outside `#[test]` functions: clippy.toml's test allowance does
// not reach them, and a panic here is a failed test, as intended.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::{Framing, ServerConfig, Shutdown, Stats};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, RootCertStore, StreamOwned};
use tls_echo::pki::{Ca, Identity, SERVER_NAMES, TlsVersions, client_config, server_config};
use tls_echo::server;

/// Every read in the tests gives up after this long.
pub const TIMEOUT: Duration = Duration::from_secs(10);

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

/// Read exactly `n` bytes (each read bounded by the socket timeout).
pub fn read_n(r: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

/// Send `bytes`, read back exactly as many, compare.
pub fn round_trip(c: &mut TlsClient, bytes: &[u8]) -> io::Result<()> {
    c.write_all(bytes)?;
    c.flush()?;
    let back = read_n(c, bytes.len())?;
    assert_eq!(back, bytes, "echo must be byte-exact");
    Ok(())
}

/// A plain TCP echo (raw framing) on 127.0.0.1:0 for `conns` connections:
/// the stand-in for tcp-echo, whose binary these tests cannot rely on.
pub fn plain_echo(conns: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(conns) {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                s.set_read_timeout(Some(TIMEOUT)).ok();
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
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

/// `tls-echo server` as a child process, killed on drop unless it was
/// seen to exit.
pub struct ServerChild {
    child: Option<Child>,
    pid: u32,
    exited: Arc<AtomicBool>,
    pub addr: SocketAddr,
}

impl ServerChild {
    /// Start `tls-echo server --addr 127.0.0.1:0 ARGS`, read its first
    /// stdout line (which must be the announce line), within TIMEOUT.
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["server", "--addr", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(TIMEOUT).expect("no announce line");
        let addr = common::net::parse_announce(&line)
            .unwrap_or_else(|| panic!("first stdout line is not the announce: {line:?}"));
        ServerChild {
            pid: child.id(),
            child: Some(child),
            exited: Arc::new(AtomicBool::new(false)),
            addr,
        }
    }

    /// Send SIGTERM. The receiver gets (exit status, whole stderr) once the
    /// process has exited; the caller bounds the wait with `recv_timeout`.
    pub fn sigterm(&mut self) -> mpsc::Receiver<(ExitStatus, String)> {
        let pid = self.pid.to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let mut child = self.child.take().expect("SIGTERM sent twice");
        let exited = self.exited.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // stderr reaches EOF when the process exits.
            let mut text = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut text);
            }
            if let Ok(status) = child.wait() {
                exited.store(true, Ordering::SeqCst);
                let _ = tx.send((status, text));
            }
        });
        rx
    }

    /// Send a signal by name (`STOP`, `CONT`) with kill(1).
    pub fn signal(&self, name: &str) {
        assert!(
            Command::new("kill")
                .args([&format!("-{name}"), &self.pid.to_string()])
                .status()
                .unwrap()
                .success()
        );
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

impl Drop for ServerChild {
    fn drop(&mut self) {
        match self.child.as_mut() {
            Some(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            // Signalled but not seen to exit (a failed test): kill it, so
            // no server outlives the test run.
            None if !self.exited.load(Ordering::SeqCst) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &self.pid.to_string()])
                    .status();
            }
            None => {}
        }
    }
}
