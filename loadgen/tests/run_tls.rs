//! `loadgen run --tls --ca FILE` against an in-process rustls echo server:
//! the handshake is counted as part of the connect time, every echo is
//! verified, and a CA that did not sign the server's certificate fails the
//! connect (and the run).

// Helpers outside #[test] functions may unwrap too: a test failing loudly is the point.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::Framing;
use loadgen::run::{RunConfig, Stop, run};
use loadgen::tls::TlsClient;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// Start a TLS raw echo server; returns its address and the CA PEM to trust.
fn tls_server() -> (SocketAddr, String) {
    loadgen::tls::install_provider();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let pem = ck.cert.pem();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = std_listener.local_addr().unwrap();
    std_listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let (mut rd, mut wr) = tokio::io::split(tls);
                    let _ = tokio::io::copy(&mut rd, &mut wr).await;
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut wr).await;
                });
            }
        });
    });
    (addr, pem)
}

fn write_temp(name: &str, contents: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("loadgen-{}-{name}", std::process::id()));
    std::fs::write(&p, contents).unwrap();
    p
}

#[test]
fn tls_run_verifies_every_echo() {
    let (addr, pem) = tls_server();
    let ca = write_temp("ca.pem", &pem);
    let mut c = RunConfig::new(addr);
    c.framing = Framing::Raw;
    c.conns = 3;
    c.pipeline = 2;
    c.churn = Some(20);
    c.stop = Stop::Requests(120);
    c.tls = Some(TlsClient::new(&ca, "localhost").unwrap());
    let r = run(&c).unwrap();
    assert!(r.ok(), "{r}");
    assert_eq!((r.verified, r.connects), (120, 6), "{r}");
    assert!(r.tls);
    std::fs::remove_file(ca).unwrap();
}

#[test]
fn tls_with_the_wrong_ca_fails_to_connect() {
    let (addr, _) = tls_server();
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let ca = write_temp("wrong-ca.pem", &other.cert.pem());
    let mut c = RunConfig::new(addr);
    c.framing = Framing::Raw;
    c.conns = 1;
    c.timeout = Duration::from_secs(3);
    c.stop = Stop::Requests(5);
    c.tls = Some(TlsClient::new(&ca, "localhost").unwrap());
    let r = run(&c).unwrap();
    assert!(!r.ok());
    assert_eq!(r.errors.connect_failures, 1);
    assert!(r.error_samples[0].contains("certificate"), "{r}");
    let empty = write_temp("empty.pem", "");
    assert!(TlsClient::new(&empty, "localhost").is_err());
    std::fs::remove_file(ca).unwrap();
    std::fs::remove_file(empty).unwrap();
}
