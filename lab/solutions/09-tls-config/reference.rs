//! Exercise 9: a rustls server and client configuration (chapter 8).
//!
//! TLS gives a client two promises: nobody on the way can read or change
//! the bytes, AND the server is who it claims to be. The second one rests on
//! one decision the client makes: which certificate authorities (CAs) it
//! trusts. Trust only the CA you were given, and check the name.
//!
//! - `server_config`: load the server's certificate chain and private key
//!   (PEM) into a `rustls::ServerConfig` (no client certificates asked).
//!   The chain may hold several certificates, the server's own first, then
//!   the intermediate CAs that link it to a root: the server sends them all.
//! - `client_config`: a `rustls::ClientConfig` that trusts exactly the CA
//!   certificate(s) in `ca_pem`, and nothing else. `ca_pem` may be a bundle
//!   of several CAs: each one is trusted.
//!
//! The grader makes a CA and a certificate for `localhost` with rcgen, runs
//! your server config and your client config against each other over
//! 127.0.0.1, then again with a chain through an intermediate CA and a
//! bundle of two CAs, then checks that your client refuses an impostor (a
//! certificate from another CA) and a certificate for another name.
//! Useful: `rustls_pki_types::pem::PemObject` (`CertificateDer::pem_slice_iter`,
//! `PrivateKeyDer::from_pem_slice`), `rustls::RootCertStore`.
//! The workspace's full version: tls-echo/src/server.rs and client.rs.
//!
//! Grade: cargo run -p lab -- check 9

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// A server configuration from a PEM certificate chain and a PEM private key.
pub fn server_config(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>, String> {
    let certs = CertificateDer::pem_slice_iter(cert_chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("reading the certificate chain: {e}"))?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("reading the key: {e}"))?;
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not fit: {e}"))?;
    Ok(Arc::new(config))
}

/// A client configuration that trusts the CA certificate(s) in `ca_pem` only.
pub fn client_config(ca_pem: &[u8]) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| format!("reading the CA certificate: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no CA certificate in ca_pem".into());
    }
    // The default verifier checks the chain up to these roots AND the name.
    Ok(Arc::new(
        ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}
