//! The default command: a TLS server and four clients in one process, with
//! the transcript printed.
//!
//! Run with: `cargo run -p tls-echo` (no second terminal needed).
//!
//! What to watch: the first two clients trust the CA the demo just made and
//! get their echoes, over TLS 1.3 and then TLS 1.2 (note the different
//! cipher suite names: TLS 1.2's also name the key exchange and the
//! signature, `ECDHE_ECDSA`). The last two are refused *before sending
//! anything*: one trusts another CA, the other asks for a name the
//! certificate does not cover. The server's summary counts them as errors
//! and it went on serving. Logs are at `warn` (`RUST_LOG=info` shows the
//! server's line per connection), so stdout is just the transcript.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use common::cli::HostPort;
use common::{ServerConfig, Shutdown};
use tokio::net::TcpListener;

use crate::pki::{Ca, SERVER_NAMES, TlsVersions, client_config, server_config};
use crate::{client, install_crypto_provider, server};

/// Run the whole demo on its own tokio runtime.
pub fn run(out: &mut dyn Write) -> anyhow::Result<()> {
    install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(demo(out))
}

async fn demo(out: &mut dyn Write) -> anyhow::Result<()> {
    let ca = Ca::new("tls-echo demo CA")?;
    let tls = Arc::new(server_config(ca.issue_server(&SERVER_NAMES)?, None)?);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = Shutdown::new();
    let config = server::Config::new(ServerConfig::default(), tls);
    let server = tokio::spawn(server::serve(listener, config, shutdown.clone()));
    writeln!(
        out,
        "server: listening on {addr} with a certificate for localhost, 127.0.0.1 and ::1,\n        signed by a CA made a moment ago"
    )?;

    // Whatever the clients' part does, even fail half-way (say, stdout
    // closed under `tls-echo | head -1`), the server is shut down the
    // graceful way before we return: dropping the runtime with connections
    // open would cancel their tasks mid-echo and log them as cut.
    let result = clients(addr, &ca, out).await;
    shutdown.trigger();
    let stats = server.await.context("server task")??;
    result?;
    writeln!(out, "\nserver stopped: {stats}")?;
    Ok(())
}

/// The four clients of the demo, against the server at `addr`.
async fn clients(addr: std::net::SocketAddr, ca: &Ca, out: &mut dyn Write) -> anyhow::Result<()> {
    let messages: Vec<Vec<u8>> = vec![b"hello".to_vec(), b"TLS keeps this secret".to_vec()];
    let options = |versions, roots, name: &str| -> anyhow::Result<client::Options> {
        Ok(client::Options {
            addr: HostPort::Ip(addr),
            server_name: name.to_string(),
            framing: common::Framing::Line,
            max_frame: common::framing::DEFAULT_MAX_FRAME,
            timeout: Duration::from_secs(10),
            handshake_timeout: client::DEFAULT_HANDSHAKE_TIMEOUT,
            tls: Arc::new(client_config(roots, None, versions)?),
        })
    };

    writeln!(out, "\n== 1. a client that trusts the demo CA")?;
    let opts = options(TlsVersions::Any, ca.roots()?, "localhost")?;
    client::run(&opts, &messages, out).await?;

    writeln!(out, "\n== 2. the same client, offering only TLS 1.2")?;
    let opts = options(TlsVersions::Tls12, ca.roots()?, "localhost")?;
    client::run(&opts, &messages[..1], out).await?;

    writeln!(out, "\n== 3. a client that trusts a different CA")?;
    let other = Ca::new("some other CA")?;
    let opts = options(TlsVersions::Any, other.roots()?, "localhost")?;
    match client::run(&opts, &messages[..1], out).await {
        Ok(()) => anyhow::bail!("a client trusting another CA was accepted"),
        Err(e) => writeln!(out, "error: {e:#}")?,
    }

    writeln!(
        out,
        "\n== 4. the right CA, but the client asked for example.com"
    )?;
    let opts = options(TlsVersions::Any, ca.roots()?, "example.com")?;
    match client::run(&opts, &messages[..1], out).await {
        Ok(()) => anyhow::bail!("a certificate for localhost was accepted for example.com"),
        Err(e) => writeln!(out, "error: {e:#}")?,
    }

    Ok(())
}
