//! The sniffing relay: the same message through a plaintext echo and
//! through the TLS echo, and what the eavesdropper's dump shows of it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns
mod support;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};

use common::{Framing, Shutdown};
use support::*;
use tls_echo::sniff;

const SECRET: &[u8] = b"attack at dawn\n";
/// The hex dump row of SECRET, ASCII column included (15 bytes: one row).
const SECRET_ROW: &str = "0000  61 74 74 61 63 6b 20 61 74 20 64 61 77 6e 0a     |attack at dawn.|";

struct Sniffer {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<u8>>>,
    shutdown: Shutdown,
    handle: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl Sniffer {
    fn start(upstream: SocketAddr) -> Self {
        let listener = common::net::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let out: sniff::Output = log.clone();
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        let config = sniff::Config {
            upstream: upstream.to_string(),
            dump_bytes: 4096,
        };
        let handle = std::thread::spawn(move || sniff::run(listener, config, out, s));
        Sniffer {
            addr,
            log,
            shutdown,
            handle: Some(handle),
        }
    }

    /// Everything printed so far. Each chunk is printed *before* it is
    /// forwarded, so once a client has its echo, both directions are in.
    fn text(&self) -> String {
        String::from_utf8(self.log.lock().unwrap().clone()).unwrap()
    }

    fn stop(mut self) {
        self.shutdown.trigger();
        self.handle.take().unwrap().join().unwrap().unwrap();
    }
}

/// The dump's ASCII column, all rows joined, so that a word split across
/// two 16-byte rows is found too.
fn ascii_column(text: &str) -> String {
    text.lines()
        .filter(|l| l.starts_with("    ") && l.ends_with('|'))
        .filter_map(|l| {
            let inner = &l[..l.len() - 1];
            inner.find("  |").map(|i| inner[i + 3..].to_string())
        })
        .collect()
}

#[test]
fn plaintext_echo_is_readable_on_the_wire() -> io::Result<()> {
    let echo = tcp_echo();
    let sniffer = Sniffer::start(echo);
    let mut c = TcpStream::connect(sniffer.addr)?;
    c.set_read_timeout(Some(TIMEOUT))?;
    c.write_all(SECRET)?;
    assert_eq!(read_n(&mut c, SECRET.len())?, SECRET);
    let text = sniffer.text();
    assert!(text.contains("client -> server: 15 bytes"), "{text}");
    assert!(text.contains("server -> client: 15 bytes"), "{text}");
    assert_eq!(
        text.matches(SECRET_ROW).count(),
        2,
        "readable both ways:\n{text}"
    );
    assert_eq!(ascii_column(&text), "attack at dawn.attack at dawn.");
    assert!(text.contains("(not TLS"), "{text}");
    assert!(!text.contains("TLS record"), "{text}");
    sniffer.stop();
    Ok(())
}

#[test]
fn tls_echo_shows_only_records_on_the_wire() -> io::Result<()> {
    let server = TestServer::start(Framing::Line);
    let sniffer = Sniffer::start(server.addr);
    let mut c = tls_connect(sniffer.addr, "localhost", server.client_config())?;
    round_trip(&mut c, SECRET)?;
    let text = sniffer.text();
    // The handshake's first messages travel in clear, including the name
    // of the server we asked for (SNI)...
    assert!(text.contains("handshake, in clear: ClientHello"), "{text}");
    assert!(text.contains("handshake, in clear: ServerHello"), "{text}");
    assert!(ascii_column(&text).contains("localhost"), "{text}");
    // ... the message does not: only encrypted records.
    assert!(text.contains("application_data: encrypted"), "{text}");
    assert!(
        !ascii_column(&text).contains("attack"),
        "plaintext leaked:\n{text}"
    );
    // TLS 1.3 encrypts the certificate too: its names never appear in clear.
    assert!(!text.contains("Certificate (the server's"), "{text}");
    assert!(!text.contains("test CA"), "{text}");
    // The relay forwarded a working TLS session: echo was verified above.
    drop(c);
    sniffer.stop();
    Ok(())
}

#[test]
fn tls12_shows_the_certificate_in_clear() -> io::Result<()> {
    let server = TestServer::start(Framing::Line);
    let sniffer = Sniffer::start(server.addr);
    let config = tls_echo::pki::client_config(
        server.ca.roots().unwrap(),
        None,
        tls_echo::pki::TlsVersions::Tls12,
    )
    .unwrap();
    let mut c = tls_connect(sniffer.addr, "localhost", Arc::new(config))?;
    round_trip(&mut c, SECRET)?;
    let text = sniffer.text();
    assert!(text.contains("Certificate (the server's"), "{text}");
    assert!(
        !ascii_column(&text).contains("attack"),
        "plaintext leaked:\n{text}"
    );
    drop(c);
    sniffer.stop();
    Ok(())
}

#[test]
fn sniffer_reports_an_unreachable_upstream() -> io::Result<()> {
    // A port with nothing listening: bind, learn the port, close.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    let sniffer = Sniffer::start(dead);
    let mut c = TcpStream::connect(sniffer.addr)?;
    c.set_read_timeout(Some(TIMEOUT))?;
    let mut buf = [0u8; 1];
    // The relay hangs up on us after failing to connect upstream.
    assert_eq!(c.read(&mut buf)?, 0);
    let text = sniffer.text();
    assert!(text.contains(&format!("cannot reach {dead}")), "{text}");
    sniffer.stop();
    Ok(())
}
