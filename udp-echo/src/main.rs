//! `udp-echo`: the UDP chapter's one binary.
//!
//! ```text
//! udp-echo                      demo: server + client in one process (default)
//! udp-echo server [--addr HOST:PORT] [--drop PERCENT --seed N] [--guard-ports LIST]
//! udp-echo client [--addr HOST:PORT] [--timeout 1s] [--retries 3] [--window 1]
//!                 [--count N --size BYTES] [MESSAGE ...]     (stdin lines when none)
//! ```
//!
//! Run with, in two terminals: `cargo run -p udp-echo -- server` and
//! `nc -u 127.0.0.1 7002` (or `cargo run -p udp-echo -- client hello`).
//! Watch the server's log (`RUST_LOG=debug` shows every datagram) and the
//! client's per-datagram RTTs. The work is in the library (`src/server.rs`,
//! `src/client.rs`); this file only parses flags and prints.

use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use common::Shutdown;
use common::cli::{Chapter, HostPort, parse_host_port, parse_size, parse_timeout, ports};

use udp_echo::client::{self, ClientConfig};
use udp_echo::guard::PortSet;
use udp_echo::server::{self, ServerConfig};

#[derive(clap::Args, Debug)]
struct ServerCmd {
    /// Address to bind: IPV4:PORT, [IPV6]:PORT ([::] takes IPv4 too) or
    /// HOSTNAME:PORT. Port 0 picks a free port, printed as `listening on ADDR`.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port)]
    addr: Option<HostPort>,

    /// Throw away this share of incoming datagrams (0-100), to see loss happen.
    #[arg(long, value_name = "PERCENT", default_value_t = 0.0, value_parser = parse_percent)]
    drop: f64,

    /// Seed for --drop: the same seed drops the same datagrams every run.
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,

    /// Source ports never answered (reflection guard): ports and ranges like
    /// `0-1023,5353`, or `none`.
    #[arg(long, value_name = "LIST", default_value_t = PortSet::privileged())]
    guard_ports: PortSet,
}

#[derive(clap::Args, Debug)]
struct ClientCmd {
    /// Server address: IPV4:PORT, [IPV6]:PORT or HOSTNAME:PORT.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port)]
    addr: Option<HostPort>,

    /// Wait this long for a reply before resending (`1s`, `200ms`).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_timeout)]
    timeout: Duration,

    /// Resend a datagram this many times before counting it lost.
    #[arg(long, value_name = "N", default_value_t = 3)]
    retries: u16,

    /// Datagrams in flight at once (1 = send, wait, send the next).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    window: u16,

    /// Send N generated datagrams instead of messages.
    #[arg(long, value_name = "N", conflicts_with = "messages")]
    count: Option<u64>,

    /// Size of each generated datagram in bytes, our 6-byte header included
    /// (65507 is the IPv4 maximum; try 65508).
    #[arg(long, value_name = "BYTES", default_value = "64", value_parser = parse_datagram_size)]
    size: usize,

    /// Messages to send, one datagram each. With none (and no --count), each
    /// line of stdin is one datagram.
    messages: Vec<String>,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches('%').parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("`{s}` is not a percentage from 0 to 100")),
    }
}

/// `--size`: no UDP datagram is larger than 65,535 bytes (its length field
/// has 16 bits), so a bigger one is refused here rather than allocated.
/// 65,508 to 65,535 stay allowed, to watch the kernel refuse them.
fn parse_datagram_size(s: &str) -> Result<usize, String> {
    match parse_size(s)? {
        n if n <= 65_535 => Ok(n),
        _ => Err("must be at most 65535 (a UDP datagram's 16-bit length)".to_owned()),
    }
}

/// Subcommands (`common::cli::Chapter`): the demo (server and client in one
/// process, with simulated loss; the default), `server`, `client`.
fn main() -> ExitCode {
    common::cli::chapter_main(
        "udp-echo",
        "Chapter 6: UDP echo server and client (loss, retries, reflection guard). Without a subcommand: the demo.",
        ports::UDP_ECHO,
        run,
    )
}

fn run(command: Chapter<ServerCmd, ClientCmd>) -> anyhow::Result<()> {
    match command {
        Chapter::Demo => udp_echo::demo::run(&mut io::stdout().lock())
            .map(drop)
            .context("demo"),
        Chapter::Server(cmd) => serve(cmd),
        Chapter::Client(cmd) => send(cmd),
    }
}

/// `--addr`, or 127.0.0.1 and this chapter's port. Parsed already (a
/// malformed address never gets here); resolved only if it is a host name.
fn socket_addr(addr: Option<&HostPort>) -> io::Result<SocketAddr> {
    match addr {
        Some(a) => a.resolve(),
        None => common::cli::resolve(None, ports::UDP_ECHO),
    }
}

fn serve(cmd: ServerCmd) -> anyhow::Result<()> {
    let addr = socket_addr(cmd.addr.as_ref()).context("resolving --addr")?;
    let socket = server::bind(addr).with_context(|| format!("binding UDP {addr}"))?;
    let shutdown = Shutdown::new();
    shutdown
        .install_signal_handler()
        .context("installing the signal handler")?;
    common::net::announce(socket.local_addr()?);
    let config = ServerConfig {
        drop_percent: cmd.drop,
        seed: cmd.seed,
        guard: cmd.guard_ports,
    };
    server::run(socket, config, shutdown).context("serving")?;
    Ok(())
}

fn send(cmd: ClientCmd) -> anyhow::Result<()> {
    let addr = socket_addr(cmd.addr.as_ref()).context("resolving --addr")?;
    let socket = client::connect(addr).with_context(|| format!("connecting to UDP {addr}"))?;
    let config = ClientConfig {
        timeout: cmd.timeout,
        retries: cmd.retries,
        window: usize::from(cmd.window),
    };
    let payloads: Box<dyn Iterator<Item = io::Result<Vec<u8>>>> = if let Some(count) = cmd.count {
        Box::new(client::generated(count, cmd.size))
    } else if !cmd.messages.is_empty() {
        Box::new(cmd.messages.into_iter().map(|m| Ok(m.into_bytes())))
    } else {
        // One datagram per line, without its line ending. Lines are read
        // one at a time, so with --window 1 you can type and see each echo.
        Box::new(io::stdin().lock().split(b'\n').map(|line| {
            line.map(|mut l| {
                if l.last() == Some(&b'\r') {
                    l.pop();
                }
                l
            })
        }))
    };

    let mut out = io::stdout().lock();
    let mut write_error = None;
    let report = client::run(&socket, payloads, &config, |event| {
        if write_error.is_none()
            && let Err(e) = writeln!(out, "{event}")
        {
            write_error = Some(e);
        }
    })?;
    if let Some(e) = write_error {
        return Err(e).context("writing to stdout");
    }
    writeln!(out, "--- {addr} udp echo statistics ---\n{report}")?;
    out.flush()?;
    if report.lost > 0 {
        bail!(
            "{} of {} datagrams got no reply after {} retries",
            report.lost,
            report.sent,
            config.retries
        );
    }
    Ok(())
}
