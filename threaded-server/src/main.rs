//! `threaded-server`: chapter 5.3, threads + sockets. Thin: parse the command
//! line, bind, hand over to the library (`src/lib.rs` maps the files).
//!
//! Run with:
//!
//! ```text
//! cargo run -p threaded-server                                         # demo: both models, transcript
//! cargo run -p threaded-server -- server --model pool --workers 4      # terminal 1
//! nc 127.0.0.1 7003                                                    # terminal 2
//! cargo run -p threaded-server -- client --connections 100 --echoes 50 # terminal 3
//! ```

use std::io::{self, BufRead, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use common::cli::{
    HostPort, ServerArgs, parse_duration, parse_host_port, parse_max_frame, parse_size, ports,
};
use common::{Framing, Shutdown, Stats};
use threaded_server::client::{EchoClient, LoadSpec};
use threaded_server::conn::PanicAt;
use threaded_server::{Config, Model, WhenFull};

/// Subcommands in the order of every chapter: demo, server, client.
#[derive(Subcommand, Debug)]
enum Command {
    /// Both models in this process, with concurrent clients (the default).
    Demo,
    /// Run an echo server until Ctrl-C.
    Server(ServerCmd),
    /// Send messages (arguments, or stdin lines) and print the echoes; or,
    /// with --connections, drive N concurrent connections and verify echoes.
    Client(ClientCmd),
}

/// Chapter 5.3: threads + sockets. A thread-per-client and a thread-pool
/// echo server. Without a subcommand: the demo.
#[derive(Parser, Debug)]
#[command(name = "threaded-server", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Args, Debug)]
struct ServerCmd {
    /// Which design serves the clients.
    #[arg(long, value_enum, default_value_t = Model::PerClient)]
    model: Model,

    #[command(flatten)]
    common: ServerArgs,

    /// Pool: number of worker threads (each serves one connection at a time).
    #[arg(long, value_name = "N", default_value_t = threaded_server::DEFAULT_WORKERS,
          value_parser = parse_workers)]
    workers: usize,

    /// Pool: accepted connections that may wait for a free worker.
    #[arg(long, value_name = "N", default_value_t = threaded_server::DEFAULT_QUEUE,
          value_parser = parse_queue)]
    queue: usize,

    /// Pool: when every worker is busy and the queue is full, `wait`
    /// (stop accepting; clients wait in the kernel backlog) or `refuse`
    /// (close new connections at once, logged).
    #[arg(long, value_enum, default_value_t = WhenFull::Wait)]
    when_full: WhenFull,

    /// Stack reserved for each serving thread (K, KiB, M, MiB). Rust's own
    /// default is 2MiB.
    #[arg(long, value_name = "BYTES", default_value = "256KiB", value_parser = parse_stack_size)]
    stack_size: usize,

    /// TESTING ONLY: panic the thread serving the N-th connection as it
    /// starts, to watch the panic being contained.
    #[arg(long, value_name = "N", hide = true)]
    inject_panic_on: Option<u64>,
}

#[derive(clap::Args, Debug)]
struct ClientCmd {
    /// Server address: IPV4:PORT, [IPV6]:PORT or HOSTNAME:PORT.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port)]
    addr: Option<HostPort>,

    /// Framing, as the server's --framing.
    #[arg(long, value_enum, default_value_t = Framing::Line)]
    framing: Framing,

    /// Load mode: this many concurrent connections (one thread each).
    #[arg(long, value_name = "N", value_parser = parse_connections)]
    connections: Option<usize>,

    /// Load mode: round trips per connection, each echo verified.
    #[arg(long, value_name = "M", default_value_t = 10)]
    echoes: usize,

    /// Load mode: payload bytes per frame.
    #[arg(long, value_name = "BYTES", default_value = "64", value_parser = parse_max_frame)]
    size: usize,

    /// Bound on connect and on every read.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    timeout: Duration,

    /// Messages to send, one frame each; without any, each stdin line is one.
    message: Vec<String>,
}

/// A whole number in `lo..=hi`, with clap's kind of message.
fn count_in(s: &str, lo: usize, hi: usize) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        Ok(_) => Err(format!("must be between {lo} and {hi}")),
        Err(_) => Err(format!("`{s}` is not a whole number")),
    }
}

/// `--workers`: 0 would be a pool that never serves anyone; the top keeps a
/// typo from asking the kernel for a billion threads.
fn parse_workers(s: &str) -> Result<usize, String> {
    count_in(s, 1, 100_000)
}

/// `--queue`: crossbeam allocates a bounded queue's slots up front, so an
/// absurd length must be refused here, not fail an allocation at start-up.
fn parse_queue(s: &str) -> Result<usize, String> {
    count_in(s, 0, 1_000_000)
}

/// `--connections` (load mode): one thread each.
fn parse_connections(s: &str) -> Result<usize, String> {
    count_in(s, 1, 100_000)
}

/// `--stack-size`: 16 KiB (below that a thread cannot even log) to 1 GiB.
fn parse_stack_size(s: &str) -> Result<usize, String> {
    match parse_size(s)? {
        n if (16 << 10..=1 << 30).contains(&n) => Ok(n),
        _ => Err("must be between 16KiB and 1GiB".to_owned()),
    }
}

/// `--timeout`: 1 ms to an hour. Zero would mean "no timeout" to a socket
/// option, and `connect_timeout` refuses it.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if (Duration::from_millis(1)..=Duration::from_secs(3600)).contains(&d) => Ok(d),
        _ => Err("must be between 1ms and 1h".to_owned()),
    }
}

fn main() -> ExitCode {
    let cli: Cli = common::cli::parse(ports::THREADED_SERVER);
    match cli.command {
        // The demo's transcript is on stdout; the servers' per-connection
        // `info` lines would interleave with it (RUST_LOG=info brings them).
        None | Some(Command::Demo) => common::log::init_with_default("warn"),
        Some(_) => common::log::init(),
    }
    common::cli::exit("threaded-server", run(cli))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Demo) {
        Command::Demo => threaded_server::demo::run(&mut io::stdout().lock()),
        Command::Server(cmd) => server(cmd),
        Command::Client(cmd) => client(cmd),
    }
}

fn server(cmd: ServerCmd) -> anyhow::Result<()> {
    let addr = cmd
        .common
        .socket_addr(ports::THREADED_SERVER)
        .context("resolving --addr")?;
    // Every connection is a file descriptor; the usual soft limit of 1024
    // would cap us near a thousand clients.
    match common::net::raise_fd_limit() {
        Ok((old, new)) if old != new => {
            log::info!("raised the open-files limit from {old} to {new}")
        }
        Ok(_) => {}
        Err(e) => log::warn!("could not raise the open-files limit: {e}"),
    }
    let listener = common::net::listen(addr).with_context(|| format!("listening on {addr}"))?;
    let shutdown = Shutdown::new();
    shutdown
        .install_signal_handler()
        .context("installing the Ctrl-C handler")?;
    let config = Config {
        workers: cmd.workers,
        queue: cmd.queue,
        when_full: cmd.when_full,
        stack_size: cmd.stack_size,
        inject_panic: cmd.inject_panic_on.map(PanicAt::connection),
        ..Config::from_args(&cmd.common, cmd.model)
    };
    common::net::announce(listener.local_addr()?);
    let stats = Arc::new(Stats::new());
    threaded_server::run(listener, &config, &shutdown, &stats).context("serving")?;
    Ok(())
}

fn client(cmd: ClientCmd) -> anyhow::Result<()> {
    let addr = match &cmd.addr {
        Some(a) => a.resolve()?,
        None => common::cli::resolve(None, ports::THREADED_SERVER)?,
    };

    if let Some(connections) = cmd.connections {
        let spec = LoadSpec {
            addr,
            framing: cmd.framing,
            connections,
            echoes: cmd.echoes,
            size: cmd.size,
            timeout: cmd.timeout,
        };
        let r = threaded_server::client::load(&spec);
        common::outln!(
            "{connections} connections x {} echoes of {} bytes ({}): {} verified in {:.3} s, \
             slowest first echo {} ms, {} failed connections",
            cmd.echoes,
            cmd.size,
            cmd.framing,
            r.verified,
            r.elapsed.as_secs_f64(),
            r.max_first_echo.as_millis(),
            r.failures.len()
        )?;
        for f in r.failures.iter().take(10) {
            common::outln!("  {f}")?;
        }
        anyhow::ensure!(
            r.failures.is_empty(),
            "{} connections failed",
            r.failures.len()
        );
        return Ok(());
    }

    let mut conn = EchoClient::connect(addr, cmd.framing, cmd.timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    let mut send = |msg: &[u8]| -> anyhow::Result<()> {
        let echo = conn.echo(msg)?;
        // The echo's bytes as they came (not necessarily UTF-8), then a
        // newline; `?` on every write: a closed stdout is a normal end.
        let mut out = io::stdout().lock();
        out.write_all(&echo)?;
        out.write_all(b"\n")?;
        out.flush()?;
        Ok(())
    };
    if cmd.message.is_empty() {
        for line in io::stdin().lock().lines() {
            send(line.context("reading stdin")?.as_bytes())?;
        }
    } else {
        for msg in &cmd.message {
            send(msg.as_bytes())?;
        }
    }
    Ok(())
}
