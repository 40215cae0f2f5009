//! The TLS side of `loadgen run --tls --ca FILE`: a rustls client that
//! trusts exactly the certificate authority the server wrote out
//! (`tls-echo server --ca-out ca.pem`), nothing from the system store.
//!
//! rustls needs one crypto provider per process. The workspace enables only
//! `ring`; we install it as the process default before building any config,
//! otherwise `ClientConfig::builder()` panics at run time when it cannot
//! decide between providers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

/// The TLS flags, written once and flattened into `loadgen run` and
/// `loadgen check`: `--tls`, `--ca FILE`, `--server-name NAME`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// Connect with TLS (rustls), trusting only the CA in `--ca`.
    #[arg(long, requires = "ca")]
    pub tls: bool,

    /// PEM file of the certificate authority (or self-signed certificate)
    /// to trust with `--tls` (`tls-echo server --ca-out FILE` writes it).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// Name to verify the server's certificate against with `--tls`.
    #[arg(long, value_name = "NAME", default_value = "localhost")]
    pub server_name: String,
}

impl TlsArgs {
    /// The client to connect with, or None without `--tls`.
    pub fn client(&self) -> Result<Option<TlsClient>> {
        if !self.tls {
            return Ok(None);
        }
        let ca = self.ca.as_deref().context("--tls needs --ca FILE")?;
        Ok(Some(TlsClient::new(ca, &self.server_name)?))
    }
}

/// What a connection needs to do a TLS handshake.
#[derive(Clone)]
pub struct TlsClient {
    pub connector: tokio_rustls::TlsConnector,
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// Install `ring` as the process's rustls provider (harmless if already done).
pub fn install_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl TlsClient {
    /// Trust the PEM certificates in `ca` and expect the server to present a
    /// certificate for `server_name` (`localhost` for `tls-echo`).
    pub fn new(ca: &Path, server_name: &str) -> Result<Self> {
        install_provider();
        let mut roots = RootCertStore::empty();
        let mut count = 0;
        for cert in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("reading CA certificates from {}", ca.display()))?
        {
            let cert = cert.with_context(|| format!("parsing PEM in {}", ca.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("bad CA certificate in {}", ca.display()))?;
            count += 1;
        }
        if count == 0 {
            bail!("{} holds no PEM certificate", ca.display());
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = ServerName::try_from(server_name.to_string())
            .with_context(|| format!("`{server_name}` is not a valid TLS server name"))?;
        Ok(TlsClient {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}
