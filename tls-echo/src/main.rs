//! `tls-echo`: the echo server and client over TLS, a sniffing relay, and a
//! certificate maker. The command line only; the work is in the library.
//!
//! Run with:
//!
//! ```text
//! cargo run -p tls-echo                                  # demo: server + clients in one process
//! cargo run -p tls-echo -- server                        # terminal 1
//! cargo run -p tls-echo -- client hello                  # terminal 2
//! openssl s_client -connect 127.0.0.1:7005 -CAfile /tmp/tls-echo-ca.pem -quiet
//! cargo run -p tls-echo -- certs --out /tmp/pki          # files for --cert/--key/--client-ca
//! cargo run -p tls-echo -- sniff --to 127.0.0.1:7005     # then: client --addr localhost:7015
//! ```
//!
//! What to watch: `server` prints `listening on ADDR` and nothing else on
//! stdout; its logs (stderr) name the CA file to trust and, per connection,
//! what was negotiated or why the handshake failed.

use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use common::Shutdown;
use common::cli::{ClientArgs, HostPort, ServerArgs, parse_host_port, parse_timeout, ports};
use tls_echo::pki::{self, Ca, Identity, TlsVersions};
use tls_echo::{client, demo, server, sniff};

/// Default of `sniff --listen`: the TLS echo port plus ten.
const SNIFF_LISTEN: &str = "127.0.0.1:7015";
/// Default of `sniff --to`: this chapter's server.
const SNIFF_TO: &str = "127.0.0.1:7005";

const NAME: &str = "tls-echo";
const ABOUT: &str = "Chapter 8: the echo server over TLS (rustls), and what encryption protects. Without a subcommand: the demo.";

/// The same order in every chapter: demo, server, client, then extras.
#[derive(Subcommand, Debug)]
enum Command {
    /// Server and clients in one process; prints the transcript (the default).
    Demo,
    /// The TLS echo server.
    Server(ServerCmd),
    /// Connect over TLS, print what was negotiated, send frames, print echoes.
    Client(ClientCmd),
    /// Write a CA, a server and a client certificate (PEM) into a directory.
    Certs(CertsCmd),
    /// A relay that prints every byte it forwards: what an eavesdropper sees.
    Sniff(SniffCmd),
}

#[derive(clap::Args, Debug)]
struct ServerCmd {
    #[command(flatten)]
    common: ServerArgs,

    /// Certificate chain (PEM) to present instead of generating one at start-up.
    #[arg(long, value_name = "PEM", requires = "key")]
    cert: Option<PathBuf>,

    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) for --cert.
    #[arg(long, value_name = "PEM", requires = "cert")]
    key: Option<PathBuf>,

    /// Where to write the generated CA certificate, for clients to trust.
    /// [default: <temp dir>/tls-echo-ca.pem]
    #[arg(long, value_name = "PATH", conflicts_with = "cert")]
    ca_out: Option<PathBuf>,

    /// Mutual TLS: require a client certificate signed by a CA in this file.
    #[arg(long, value_name = "PEM")]
    client_ca: Option<PathBuf>,

    /// Deadline for the whole TLS handshake of one connection.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    handshake_timeout: Duration,
}

#[derive(clap::Args, Debug)]
struct ClientCmd {
    #[command(flatten)]
    common: ClientArgs,

    /// The name the server's certificate must carry [default: the HOST of --addr].
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,

    /// CA certificate(s) (PEM) to trust. [default: <temp dir>/tls-echo-ca.pem,
    /// where `tls-echo server` writes its CA]
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,

    /// Client certificate (PEM) for servers that require one (mutual TLS).
    #[arg(long, value_name = "PEM", requires = "key")]
    cert: Option<PathBuf>,

    /// Private key (PEM) for --cert.
    #[arg(long, value_name = "PEM", requires = "cert")]
    key: Option<PathBuf>,

    /// TLS versions to offer.
    #[arg(long, value_enum, default_value_t = TlsVersions::Any)]
    tls: TlsVersions,

    /// Deadline for the TLS handshake: a TLS server answers at once, a
    /// plaintext one never does.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_timeout)]
    handshake_timeout: Duration,
}

#[derive(clap::Args, Debug)]
struct SniffCmd {
    /// Where clients connect, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", default_value = SNIFF_LISTEN, value_parser = parse_host_port)]
    listen: HostPort,

    /// The real server, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", default_value = SNIFF_TO, value_parser = parse_host_port)]
    to: HostPort,

    /// Show at most this many bytes of each chunk.
    #[arg(long, value_name = "BYTES", default_value_t = sniff::DEFAULT_DUMP_BYTES)]
    dump_bytes: usize,
}

#[derive(clap::Args, Debug)]
struct CertsCmd {
    /// Directory to write ca.pem, server.pem, server.key, client.pem, client.key into.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

fn main() -> ExitCode {
    // Bad flags end here, with clap's message and status 2, before
    // anything is bound or printed.
    let command =
        common::cli::parse_commands(NAME, ABOUT, ports::TLS_ECHO).unwrap_or(Command::Demo);
    match &command {
        // The demo's stdout is the transcript; the server's per-connection
        // lines would interleave with it on a terminal.
        Command::Demo => common::log::init_with_default("warn"),
        // rustls logs a warning of its own before returning the error we
        // explain; a client's failure should read as one line.
        Command::Client(_) => common::log::init_with_default("error"),
        _ => common::log::init(),
    }
    common::cli::exit(NAME, run(command))
}

fn run(command: Command) -> anyhow::Result<()> {
    // Before any rustls config is built: exactly one crypto provider, ring.
    tls_echo::install_crypto_provider();
    match command {
        Command::Demo => demo::run(&mut io::stdout().lock()),
        Command::Server(cmd) => run_server(cmd),
        Command::Client(cmd) => run_client(cmd),
        Command::Certs(cmd) => run_certs(&cmd.out),
        Command::Sniff(cmd) => run_sniff(cmd),
    }
}

fn run_server(cmd: ServerCmd) -> anyhow::Result<()> {
    let addr = cmd.common.socket_addr(ports::TLS_ECHO)?;
    let identity = match (&cmd.cert, &cmd.key) {
        (Some(cert), Some(key)) => Identity::from_pem_files(cert, key)?,
        _ => {
            // The CA file must exist before `listening on` is printed:
            // scripts start a client the moment they read that line.
            let ca = Ca::new("tls-echo CA (made at start-up)")?;
            let path = cmd.ca_out.clone().unwrap_or_else(pki::default_ca_path);
            pki::write_pem_atomically(&path, &ca.cert_pem())?;
            log::info!(
                "CA certificate written to {} (trust it: `tls-echo client --ca {0}`, `openssl s_client -CAfile {0}`)",
                path.display()
            );
            ca.issue_server(&pki::SERVER_NAMES)?
        }
    };
    let client_ca = cmd.client_ca.as_deref().map(pki::load_roots).transpose()?;
    if let Some(path) = &cmd.client_ca {
        log::info!(
            "mutual TLS: clients need a certificate signed by a CA in {}",
            path.display()
        );
    }
    let tls = Arc::new(pki::server_config(identity, client_ca)?);

    match common::net::raise_fd_limit() {
        Ok((old, new)) => log::debug!("file descriptor limit {old} -> {new}"),
        Err(e) => log::warn!("could not raise the file descriptor limit: {e}"),
    }
    let listener = common::net::listen(addr).with_context(|| format!("listening on {addr}"))?;
    common::net::announce(listener.local_addr()?);

    let shutdown = Shutdown::new();
    shutdown.install_signal_handler()?;
    let mut config = server::Config::new(cmd.common.config(), tls);
    config.handshake_timeout = cmd.handshake_timeout;
    server::run(listener, config, shutdown)?;
    Ok(())
}

fn run_client(cmd: ClientCmd) -> anyhow::Result<()> {
    let ca = cmd.ca.clone().unwrap_or_else(pki::default_ca_path);
    let roots = pki::load_roots(&ca).with_context(|| {
        if cmd.ca.is_none() {
            "no --ca given and the default CA file is missing (start `tls-echo server` first)"
        } else {
            "--ca"
        }
    })?;
    let identity = match (&cmd.cert, &cmd.key) {
        (Some(cert), Some(key)) => Some(Identity::from_pem_files(cert, key)?),
        _ => None,
    };
    let addr = cmd.common.addr.clone().unwrap_or_else(|| {
        HostPort::Ip(std::net::SocketAddr::from((
            std::net::Ipv4Addr::LOCALHOST,
            ports::TLS_ECHO,
        )))
    });
    let server_name = cmd
        .server_name
        .unwrap_or_else(|| client::default_server_name(&addr));
    let opts = client::Options {
        addr,
        server_name,
        framing: cmd.common.framing,
        max_frame: cmd.common.max_frame,
        timeout: cmd.common.timeout,
        handshake_timeout: cmd.handshake_timeout,
        tls: Arc::new(pki::client_config(roots, identity, cmd.tls)?),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut out = io::stdout().lock();
    if cmd.common.messages.is_empty() {
        // stdin is read on a plain thread: a blocking read inside the
        // runtime would stall it. Each line is sent as soon as it is typed.
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        std::thread::spawn(move || {
            for line in io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line.into_bytes()).is_err() {
                    break; // the session ended
                }
            }
        });
        runtime.block_on(client::run_from(&opts, rx, &mut out))?;
    } else {
        let messages: Vec<Vec<u8>> = cmd
            .common
            .messages
            .into_iter()
            .map(String::into_bytes)
            .collect();
        runtime.block_on(client::run(&opts, &messages, &mut out))?;
    }
    out.flush()?;
    Ok(())
}

fn run_sniff(cmd: SniffCmd) -> anyhow::Result<()> {
    let addr = cmd.listen.resolve()?;
    let listener = common::net::listen(addr).with_context(|| format!("listening on {addr}"))?;
    common::net::announce(listener.local_addr()?);
    log::info!("relaying to {}; every byte is printed on stdout", cmd.to);
    let shutdown = Shutdown::new();
    shutdown.install_signal_handler()?;
    let out: sniff::Output = Arc::new(Mutex::new(StdoutOrStop(shutdown.clone())));
    let config = sniff::Config {
        upstream: cmd.to.to_string(),
        dump_bytes: cmd.dump_bytes,
    };
    sniff::run(listener, config, out, shutdown)?;
    Ok(())
}

/// The relay's stdout. Its only output is the dump, so once stdout is
/// closed (`sniff | head -40`) there is nothing left to do: a write that
/// fails with `BrokenPipe` stops the relay as Ctrl-C would, and the
/// program ends quietly with status 0.
struct StdoutOrStop(Shutdown);

impl StdoutOrStop {
    fn check<T>(&self, r: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &r
            && e.kind() == io::ErrorKind::BrokenPipe
        {
            self.0.trigger();
        }
        r
    }
}

impl Write for StdoutOrStop {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = io::stdout().write(buf);
        self.check(r)
    }

    fn flush(&mut self) -> io::Result<()> {
        let r = io::stdout().flush();
        self.check(r)
    }
}

fn run_certs(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca = Ca::new("tls-echo CA")?;
    let server = ca.issue_server(&pki::SERVER_NAMES)?;
    let client = ca.issue_client("tls-echo client")?;
    let files = [
        ("ca.pem", ca.cert_pem()),
        ("server.pem", server.cert_pem()),
        ("server.key", server.key_pem()),
        ("client.pem", client.cert_pem()),
        ("client.key", client.key_pem()),
    ];
    for (name, pem) in files {
        let path = dir.join(name);
        // Private keys get mode 0600: whoever reads one can impersonate us.
        if name.ends_with(".key") {
            pki::write_secret_pem(&path, &pem)?;
        } else {
            pki::write_pem_atomically(&path, &pem)?;
        }
        common::outln!("wrote {}", path.display())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_defaults_follow_the_chapter_port() {
        assert_eq!(SNIFF_TO, format!("127.0.0.1:{}", ports::TLS_ECHO));
        assert_eq!(SNIFF_LISTEN, format!("127.0.0.1:{}", ports::TLS_ECHO + 10));
    }
}
