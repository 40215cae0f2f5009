//! The TLS echo client: verify the server against a CA we chose, show what
//! was negotiated, send frames, check every echo.
//!
//! Run with (two terminals):
//!
//! ```text
//! cargo run -p tls-echo -- server
//! cargo run -p tls-echo -- client hello world            # or lines on stdin
//! cargo run -p tls-echo -- client --tls 1.2 hello        # the older protocol
//! cargo run -p tls-echo -- client --server-name example.com hello   # refused: wrong name
//! ```
//!
//! What to watch: the `protocol`, `cipher suite` and `key exchange` lines,
//! and how each way of failing (a CA we do not trust, a name the
//! certificate does not cover, a plaintext server, a server that wants a
//! client certificate) becomes one plain sentence instead of a stack trace.
//!
//! The two checks that make TLS worth having both happen in the handshake,
//! before a single byte of our data leaves: the server's certificate chain
//! must end at a CA in `--ca` (otherwise anyone could claim to be the
//! server), and the name we dialled must be in the certificate (otherwise
//! any server with *some* valid certificate could impersonate this one).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use common::cli::HostPort;
use common::framing::tokio_io::AsyncFramed;
use common::{ConnError, Framing};
use rustls::pki_types::ServerName;
use rustls::{AlertDescription, CertificateError};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::Negotiated;

/// Default `client --handshake-timeout`: a TLS server answers a ClientHello
/// in one round trip; this is long only for a server under heavy load.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// A TLS connection with the echo framing on top.
pub type Framed = AsyncFramed<TlsStream<TcpStream>>;

/// The name the server's certificate must carry when `--server-name` is
/// not given: the host of `--addr` (`[::1]:7005` gives `::1`).
pub fn default_server_name(addr: &HostPort) -> String {
    match addr {
        HostPort::Ip(a) => a.ip().to_string(),
        HostPort::Name { host, .. } => host.trim_end_matches('.').to_string(),
    }
}

/// TCP connect (bounded by `timeout`), then the TLS handshake (bounded by
/// `handshake_timeout`).
///
/// `server_name` is what the server's certificate must be valid for; it is
/// also sent in clear in the ClientHello as SNI (Server Name Indication) when
/// it is a DNS name, so one IP address can host many TLS sites.
///
/// Why two deadlines: a plaintext server that waits for a newline (the
/// `line` framing of every other chapter) never answers a ClientHello,
/// which rarely contains a `\n`; the handshake would sit there for the
/// whole echo timeout. A TLS server answers a ClientHello in one round
/// trip, so a few seconds is plenty and the mistake is named sooner.
pub async fn connect(
    addr: &HostPort,
    server_name: &str,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    handshake_timeout: Duration,
) -> anyhow::Result<(TlsStream<TcpStream>, Negotiated)> {
    let name = ServerName::try_from(server_name.to_string())
        .with_context(|| format!("`{server_name}` is not a valid DNS name or IP address"))?;
    let connecting = async {
        match addr {
            HostPort::Ip(a) => TcpStream::connect(a).await,
            // A host name (never a malformed string: `parse_host_port`
            // refused those) is resolved by tokio off the runtime thread.
            HostPort::Name { host, port } => TcpStream::connect((host.as_str(), *port)).await,
        }
    };
    let tcp = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| anyhow!("connecting to {addr}: no answer within {timeout:?}"))?
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    let tls = tokio::time::timeout(handshake_timeout, TlsConnector::from(tls).connect(name, tcp))
        .await
        .map_err(|_| {
            anyhow!(
                "TLS handshake with {addr}: no answer within {handshake_timeout:?} (is this a TLS server? a plaintext server never answers a ClientHello)"
            )
        })?
        .map_err(|e| anyhow!("TLS handshake with {addr} failed: {}", explain(&e)))?;
    let negotiated = Negotiated::of(tls.get_ref().1);
    Ok((tls, negotiated))
}

/// Send one frame and wait (at most `timeout`) for its echo.
pub async fn exchange(
    framed: &mut Framed,
    payload: &[u8],
    timeout: Duration,
) -> anyhow::Result<Bytes> {
    framed
        .write_frame(payload)
        .await
        .map_err(|e| anyhow!("sending: {}", explain_conn(&e)))?;
    let echo = tokio::time::timeout(timeout, framed.read_frame())
        .await
        .map_err(|_| anyhow!("no echo within {timeout:?}"))?
        .map_err(|e| anyhow!("reading the echo: {}", explain_conn(&e)))?;
    let Some(echo) = echo else {
        bail!("the server closed the connection instead of echoing");
    };
    if echo != payload {
        bail!(
            "echo differs: sent {} bytes, got {} bytes back",
            payload.len(),
            echo.len()
        );
    }
    Ok(echo)
}

/// Close the TLS session properly: `close_notify`, then TCP FIN.
pub async fn close(framed: &mut Framed) {
    use tokio::io::AsyncWriteExt;
    let _ = framed.get_mut().shutdown().await;
}

/// Options for [`run`], the whole client session.
#[derive(Debug, Clone)]
pub struct Options {
    pub addr: HostPort,
    pub server_name: String,
    pub framing: Framing,
    pub max_frame: usize,
    /// Deadline for the TCP connect and for each echo.
    pub timeout: Duration,
    /// Deadline for the TLS handshake, shorter (see [`connect`]).
    pub handshake_timeout: Duration,
    pub tls: Arc<rustls::ClientConfig>,
}

/// Connect, print the negotiated parameters and every echo to `out`.
pub async fn run(
    opts: &Options,
    messages: &[Vec<u8>],
    out: &mut dyn io::Write,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel(messages.len().max(1));
    for msg in messages {
        // Cannot fail: the channel has room for every message.
        let _ = tx.try_send(msg.clone());
    }
    drop(tx);
    run_from(opts, rx, out).await
}

/// Like [`run`], with messages arriving while the session is open (lines
/// typed on stdin): each is sent as soon as it arrives.
pub async fn run_from(
    opts: &Options,
    mut messages: mpsc::Receiver<Vec<u8>>,
    out: &mut dyn io::Write,
) -> anyhow::Result<()> {
    let (tls, negotiated) = connect(
        &opts.addr,
        &opts.server_name,
        opts.tls.clone(),
        opts.timeout,
        opts.handshake_timeout,
    )
    .await?;
    writeln!(out, "connected to {} as `{}`", opts.addr, opts.server_name)?;
    negotiated.print(out)?;
    let mut framed = AsyncFramed::new(tls, opts.framing, opts.max_frame);
    while let Some(msg) = messages.recv().await {
        let echo = exchange(&mut framed, &msg, opts.timeout).await?;
        writeln!(out, "echo: {}", String::from_utf8_lossy(&echo))?;
    }
    close(&mut framed).await;
    Ok(())
}

fn explain_conn(e: &ConnError) -> String {
    match e {
        ConnError::Io(e) => explain(e),
        ConnError::Frame(e) => e.to_string(),
    }
}

/// One sentence for a TLS failure: rustls' own message plus, for the cases
/// a student will meet, what it most likely means.
pub fn explain(e: &io::Error) -> String {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                format!("{e} (the server hung up without a TLS close_notify; did it refuse us?)")
            }
            _ => e.to_string(),
        };
    };
    let hint = match tls {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "the server's certificate is not signed by a CA in --ca"
        }
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "the server's certificate does not name the host we asked for (--server-name)",
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "the server's certificate has expired",
        rustls::Error::InvalidMessage(_)
        | rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. } => {
            "the other end does not speak TLS: is it a plaintext server?"
        }
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
            "the server requires a client certificate (--cert and --key)"
        }
        rustls::Error::AlertReceived(
            AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::AccessDenied
            | AlertDescription::DecryptError,
        ) => "the server refused our client certificate",
        rustls::Error::AlertReceived(AlertDescription::ProtocolVersion) => {
            "the server does not speak the TLS version we offered (--tls)"
        }
        _ => return tls.to_string(),
    };
    format!("{tls} ({hint})")
}
