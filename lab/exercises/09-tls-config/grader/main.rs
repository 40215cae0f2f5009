//! The lab's grader driver for exercise 9: makes certificates with rcgen,
//! runs your configurations over 127.0.0.1, and reports each step to
//! `cargo run -p lab -- check 9`. Not yours to edit.

#[path = "../../grader_support.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use ex09_tls_config::{client_config, server_config};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection, StreamOwned};
use support::{call, fail, pass, step};

#[global_allocator]
static ALLOC: support::Guarded = support::Guarded;

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

/// A CA named `ca_name` and a certificate for `names` that it signs.
fn make_pki(ca_name: &str, names: &[&str]) -> Result<Pki, rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    leaf.distinguished_name.push(DnType::CommonName, names[0]);
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(Pki {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// One TLS echo of a line between `server` and `client` over 127.0.0.1,
/// the client asking for `name`. Returns the echo, or the client's error.
fn exchange(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: &str,
) -> Result<Vec<u8>, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    thread::spawn(move || {
        let Ok((tcp, _)) = l.accept() else { return };
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
        let Ok(conn) = ServerConnection::new(server) else {
            return;
        };
        let mut tls = StreamOwned::new(conn, tcp);
        let mut buf = [0u8; 256];
        if let Ok(n) = tls.read(&mut buf) {
            let _ = tls.write_all(&buf[..n]);
            let _ = tls.flush();
        }
    });
    let server_name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let conn = ClientConnection::new(client, server_name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    let mut tls = StreamOwned::new(conn, tcp);
    // The handshake happens on the first write/read.
    tls.write_all(b"hello over TLS\n")
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 256];
    let n = tls.read(&mut buf).map_err(|e| e.to_string())?;
    Ok(buf[..n].to_vec())
}

fn main() {
    let pki = make_pki("lab CA", &["localhost"])
        .unwrap_or_else(|e| fail("certificates", &e.to_string(), ""));
    let other = make_pki("impostor CA", &["localhost"])
        .unwrap_or_else(|e| fail("certificates", &e.to_string(), ""));

    step("server_config(the certificate for localhost, its key)");
    let server = match call("server_config", || {
        server_config(pki.cert_pem.as_bytes(), pki.key_pem.as_bytes())
    }) {
        Ok(s) => s,
        Err(e) => fail(
            "Ok(a ServerConfig)",
            &format!("Err({e:?})"),
            "read the PEM with CertificateDer::pem_slice_iter and PrivateKeyDer::from_pem_slice, then ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key)",
        ),
    };

    step("client_config(the CA certificate)");
    let client = match call("client_config", || client_config(pki.ca_pem.as_bytes())) {
        Ok(c) => c,
        Err(e) => fail(
            "Ok(a ClientConfig)",
            &format!("Err({e:?})"),
            "put the CA certificate in a RootCertStore, then ClientConfig::builder().with_root_certificates(roots).with_no_client_auth()",
        ),
    };

    step("your client and your server: handshake as \"localhost\" and echo a line");
    match exchange(Arc::clone(&server), Arc::clone(&client), "localhost") {
        Ok(b) if b == b"hello over TLS\n" => {}
        Ok(b) => fail("\"hello over TLS\\n\" back", &support::show(&b), ""),
        Err(e) => fail(
            "the handshake to succeed and the line to come back",
            &e,
            if e.contains("UnknownIssuer") {
                "your client does not trust the CA that signed the server's certificate: add each certificate of ca_pem to the RootCertStore"
            } else {
                "check that the server's certificate chain and key are loaded as given"
            },
        ),
    }

    step("an impostor: a certificate for \"localhost\" signed by ANOTHER CA must be refused");
    let fake =
        server_config(other.cert_pem.as_bytes(), other.key_pem.as_bytes()).unwrap_or_else(|e| {
            fail(
                "a server config for the impostor",
                &e,
                "server_config must work for any valid certificate",
            )
        });
    if let Ok(b) = exchange(fake, Arc::clone(&client), "localhost") {
        fail(
            "the handshake to fail: invalid peer certificate (UnknownIssuer)",
            &format!(
                "your client accepted a certificate signed by a CA it was never told to trust, and got {}",
                support::show(&b)
            ),
            "a client that accepts any certificate is encrypted but not authenticated: anyone on the path can be the server. Trust only the CA in ca_pem: no custom verifier that says yes",
        );
    }

    step("the right CA, the wrong name: connecting to \"example.com\" must be refused");
    if let Ok(b) = exchange(server, client, "example.com") {
        fail(
            "the handshake to fail: the certificate is for localhost, not example.com",
            &format!("your client accepted it and got {}", support::show(&b)),
            "the name check is part of verification: let rustls's WebPkiServerVerifier do it",
        );
    }
    pass();
}
