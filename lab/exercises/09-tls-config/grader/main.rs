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
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned,
};
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

/// A root CA, an intermediate CA it signs, and a certificate for localhost
/// the intermediate signs: what real servers have. Returns (the chain the
/// server sends: leaf then intermediate, the root's PEM, the leaf's key).
fn make_chain() -> Result<(String, String, String), rcgen::Error> {
    let root_key = KeyPair::generate()?;
    let mut root = CertificateParams::new(Vec::<String>::new())?;
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.distinguished_name
        .push(DnType::CommonName, "lab root CA");
    let root_cert = root.self_signed(&root_key)?;
    let root_issuer = Issuer::new(root, root_key);
    let int_key = KeyPair::generate()?;
    let mut int = CertificateParams::new(Vec::<String>::new())?;
    int.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    int.distinguished_name
        .push(DnType::CommonName, "lab intermediate CA");
    let int_cert = int.signed_by(&int_key, &root_issuer)?;
    let int_issuer = Issuer::new(int, int_key);
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = leaf.signed_by(&key, &int_issuer)?;
    Ok((
        format!("{}{}", cert.pem(), int_cert.pem()),
        root_cert.pem(),
        key.serialize_pem(),
    ))
}

/// The grader's own configurations, correct ones, to tell which side of a
/// failed handshake is at fault.
fn grader_server(chain_pem: &[u8], key_pem: &[u8]) -> Option<Arc<ServerConfig>> {
    let certs = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).ok()?;
    let c = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .ok()?;
    Some(Arc::new(c))
}

fn grader_client(ca_pem: &[u8]) -> Option<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(c.ok()?).ok()?;
    }
    Some(Arc::new(
        ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
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

    step(
        "a real chain: server_config(leaf + intermediate CA), client_config(a bundle of two CAs, the root that signed second); handshake and echo",
    );
    let (chain_pem, root_pem, chain_key) =
        make_chain().unwrap_or_else(|e| fail("certificates", &e.to_string(), ""));
    let bundle = format!("{}{}", other.ca_pem, root_pem);
    let chain_server = match call("server_config", || {
        server_config(chain_pem.as_bytes(), chain_key.as_bytes())
    }) {
        Ok(s) => s,
        Err(e) => fail(
            "Ok(a ServerConfig) for a chain of two certificates",
            &format!("Err({e:?})"),
            "cert_chain_pem may hold several certificates: the server's own first, then the intermediates; load them all",
        ),
    };
    let bundle_client = match call("client_config", || client_config(bundle.as_bytes())) {
        Ok(c) => c,
        Err(e) => fail(
            "Ok(a ClientConfig) for a bundle of two CA certificates",
            &format!("Err({e:?})"),
            "ca_pem may hold several CA certificates: add every one to the RootCertStore",
        ),
    };
    if let Err(e) = exchange(
        Arc::clone(&chain_server),
        Arc::clone(&bundle_client),
        "localhost",
    ) {
        // Which side is wrong? Pair each of yours with the grader's own.
        let (Some(good_server), Some(good_client)) = (
            grader_server(chain_pem.as_bytes(), chain_key.as_bytes()),
            grader_client(root_pem.as_bytes()),
        ) else {
            fail("the grader's own configurations", "none", "")
        };
        let server_ok = exchange(Arc::clone(&chain_server), good_client, "localhost").is_ok();
        let client_ok = exchange(good_server, Arc::clone(&bundle_client), "localhost").is_ok();
        let why = if !server_ok {
            "your server sends only part of its chain: a client that trusts the root needs the intermediate too. Collect EVERY certificate of cert_chain_pem (pem_slice_iter, all of them) into with_single_cert, leaf first"
        } else if !client_ok {
            "your client does not trust the root that signed, the SECOND CA of the bundle: add every certificate of ca_pem to the RootCertStore, not only the first"
        } else {
            "each of your configs works with the grader's, but not with each other"
        };
        fail(
            "the handshake to succeed and the line to come back",
            &format!(
                "{e} (your server with a correct client: {}; your client with a correct server: {})",
                if server_ok { "works" } else { "fails" },
                if client_ok { "works" } else { "fails" }
            ),
            why,
        );
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
