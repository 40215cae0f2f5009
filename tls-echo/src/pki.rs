//! Certificates: who vouches for whom, made with rcgen and read from PEM.
//!
//! A TLS server proves its identity with a *certificate chain*: its own
//! certificate (its public key and its names, `localhost`, `127.0.0.1`...)
//! signed by a *certificate authority* (CA) that the client already trusts.
//! The client checks the CA's signature (asymmetric crypto: anyone holding
//! the CA's public key can verify, only the CA's private key can sign) and
//! that the name it dialled is in the certificate. Browsers trust a hundred
//! or so public CAs; this chapter makes its own tiny CA at start-up, so
//! nothing has to be bought or installed, and the client trusts exactly that
//! CA through `--ca FILE`.
//!
//! Run with:
//!
//! ```text
//! cargo run -p tls-echo -- certs --out /tmp/pki      # CA + server + client, as PEM files
//! openssl x509 -in /tmp/pki/server.pem -noout -text  # read what a certificate holds
//! ```
//!
//! Watch for: `Subject Alternative Name` (the names a client may dial),
//! `CA:TRUE` on the CA only, and `Public-Key: (256 bit)` (ECDSA P-256: rcgen's
//! default, a short key with the strength of a ~3000-bit RSA key).
//!
//! PEM is base64 of DER between `-----BEGIN ...-----` lines; we read it with
//! `rustls-pki-types`' `PemObject` (the older `rustls-pemfile` crate is
//! unmaintained).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The names the generated server certificate is valid for: what a client
/// on this machine may dial. rcgen turns strings that parse as IP addresses
/// into `IP:` entries and the rest into `DNS:` entries.
pub const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Where `server` writes its CA certificate and `client` looks for it when
/// neither `--ca-out` nor `--ca` is given, so two terminals work with no flags.
pub fn default_ca_path() -> PathBuf {
    std::env::temp_dir().join("tls-echo-ca.pem")
}

/// rustls has pluggable cryptography ("crypto providers"). The workspace
/// builds exactly one, *ring*; installing it as the process default means
/// `ServerConfig::builder()` never has to guess. Calling this twice (two
/// tests in one process) is fine: the second install fails and is ignored.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A certificate chain and its private key: what one side shows in the
/// handshake to prove who it is.
#[derive(Debug)]
pub struct Identity {
    /// Leaf first, then any intermediates (never the root: the peer has it).
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// Read `--cert` (one or more `CERTIFICATE` blocks) and `--key` (PKCS#8,
    /// PKCS#1 or SEC1 private key) PEM files.
    pub fn from_pem_files(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let chain = load_certs(cert)?;
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("reading private key from {}", key.display()))?;
        Ok(Identity { chain, key })
    }

    /// The leaf certificate as PEM text.
    pub fn cert_pem(&self) -> String {
        self.chain
            .iter()
            .map(|c| to_pem("CERTIFICATE", c))
            .collect()
    }

    /// The private key as PEM text. Anyone holding it can impersonate us.
    pub fn key_pem(&self) -> String {
        to_pem("PRIVATE KEY", self.key.secret_der())
    }
}

/// A certificate authority that lives only in this process.
#[derive(Debug)]
pub struct Ca {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A fresh self-signed CA: a new ECDSA P-256 key pair and a certificate
    /// that says "this key may sign other certificates" (`CA:TRUE`).
    /// The name gets a suffix from the public key, so two CAs never share
    /// a name (a verifier looks an issuer up by name, then checks its key).
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let key = KeyPair::generate()?;
        let id: String = key
            .public_key_raw()
            .iter()
            .skip(1) // 0x04: "uncompressed point" marker, the same for every key
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} {id}"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, "tls-echo");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate (public): what clients put in their trust store.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    pub fn cert_pem(&self) -> String {
        to_pem("CERTIFICATE", &self.cert)
    }

    /// A trust store holding only this CA.
    pub fn roots(&self) -> anyhow::Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.clone())?;
        Ok(roots)
    }

    /// A server certificate for `names`, signed by this CA.
    pub fn issue_server(&self, names: &[&str]) -> anyhow::Result<Identity> {
        self.issue(
            names,
            "tls-echo server",
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate (for mutual TLS), signed by this CA.
    pub fn issue_client(&self, name: &str) -> anyhow::Result<Identity> {
        self.issue(&[name], name, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        names: &[&str],
        common_name: &str,
        usage: ExtendedKeyUsagePurpose,
    ) -> anyhow::Result<Identity> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Identity {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }
}

/// PEM-encode DER bytes: base64 in 64-column lines between BEGIN/END markers.
fn to_pem(label: &str, der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len() * 4 / 3 + 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every 64-byte slice is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Every `CERTIFICATE` block in a PEM file; an empty file is an error
/// (almost always a wrong path or a key file given as `--cert`).
pub fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading certificates from {}", path.display()))?;
    if certs.is_empty() {
        bail!("{}: no CERTIFICATE block found", path.display());
    }
    Ok(certs)
}

/// A trust store made of every certificate in a PEM file (`--ca`, `--client-ca`).
pub fn load_roots(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .with_context(|| format!("{}: not a usable CA certificate", path.display()))?;
    }
    Ok(roots)
}

/// Write a PEM file so that a reader never sees half of it: write a
/// temporary file next to it, then `rename()`, which replaces the name
/// atomically. A client started the moment the server prints its address
/// reads either the old CA or the new one, never a truncated file.
pub fn write_pem_atomically(path: &Path, pem: &str) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, pem).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Write a private key readable by its owner only (mode 0600 on Unix),
/// set when the file is created so it is never readable by others.
pub fn write_secret_pem(path: &Path, pem: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(pem.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// rustls' server configuration: our certificate chain and key, TLS 1.3 and
/// 1.2 with rustls' safe defaults (AEAD cipher suites only, forward-secret
/// key exchange only), and, when `client_ca` is given, mutual TLS: every
/// client must present a certificate signed by one of those CAs.
pub fn server_config(
    identity: Identity,
    client_ca: Option<RootCertStore>,
) -> anyhow::Result<rustls::ServerConfig> {
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .context("building the client-certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(identity.chain, identity.key)
        .context("the server certificate and key do not go together")
}

/// Which protocol versions a client offers (`client --tls`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TlsVersions {
    /// TLS 1.3 and 1.2; the server picks the highest both speak (1.3).
    #[default]
    Any,
    /// Only TLS 1.3.
    #[value(name = "1.3")]
    Tls13,
    /// Only TLS 1.2, to see what the older handshake leaves in clear.
    #[value(name = "1.2")]
    Tls12,
}

/// rustls' client configuration: trust `roots` only, offer `versions`, and
/// show `identity` if the server asks for a client certificate.
pub fn client_config(
    roots: RootCertStore,
    identity: Option<Identity>,
    versions: TlsVersions,
) -> anyhow::Result<rustls::ClientConfig> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match versions {
        TlsVersions::Any => rustls::DEFAULT_VERSIONS,
        TlsVersions::Tls13 => &[&rustls::version::TLS13],
        TlsVersions::Tls12 => &[&rustls::version::TLS12],
    };
    let builder = rustls::ClientConfig::builder_with_protocol_versions(versions)
        .with_root_certificates(roots);
    Ok(match identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder
            .with_client_auth_cert(id.chain, id.key)
            .context("the client certificate and key do not go together")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips_through_pki_types() {
        install_crypto_provider();
        let ca = Ca::new("test CA").unwrap();
        let pem = ca.cert_pem();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        let back = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(&back, ca.cert_der());
        let id = ca.issue_server(&SERVER_NAMES).unwrap();
        let key = PrivateKeyDer::from_pem_slice(id.key_pem().as_bytes()).unwrap();
        assert_eq!(key.secret_der(), id.key.secret_der());
        // Base64 padding cases: 1, 2 and 3 bytes in the last group.
        assert!(to_pem("X", b"a").contains("\nYQ==\n"));
        assert!(to_pem("X", b"ab").contains("\nYWI=\n"));
        assert!(to_pem("X", b"abc").contains("\nYWJj\n"));
    }
}
