//! `async-server`: the async chapter's binary. One server, two designs.
//!
//! ```text
//! async-server                                   # demo: both models, concurrent clients
//! async-server server --model tokio --threads 1  # terminal 1
//! async-server server --model event-loop         # (or this one)
//! nc 127.0.0.1 7004                              # terminal 2
//! async-server client hello world                # or our client
//! ```
//!
//! `main` only parses arguments and binds; the servers live in the library
//! (`tokio_server.rs`, `event_loop.rs`) so tests can start them in-process.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use async_server::{Config, DEFAULT_MAX_PENDING, Model, Offload};
use clap::{Parser, Subcommand};
use common::Framing;
use common::cli::{ServerArgs, parse_duration, parse_size, ports};

#[derive(Parser, Debug)]
#[command(
    name = "async-server",
    version,
    about = "Async I/O (tokio) and multiplexing (a mio readiness loop): one echo server, two designs"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run an echo server.
    Server(ServerCmd),
    /// Send messages (or stdin lines) and print the echoes.
    Client(ClientCmd),
    /// Both models in-process with concurrent clients (the default).
    Demo,
}

#[derive(clap::Args, Debug)]
struct ServerCmd {
    /// Which design serves the connections.
    #[arg(long, value_enum, default_value_t = Model::Tokio)]
    model: Model,

    #[command(flatten)]
    common: ServerArgs,

    /// tokio worker threads; 1 runs the current-thread runtime (one thread,
    /// like the event loop). The event loop accepts only 1. [default: CPUs]
    #[arg(long, value_name = "N")]
    threads: Option<usize>,

    /// Where `--work` runs: `none` (inline, blocking the runtime thread) or
    /// `rayon` (on rayon's pool, answer back over a oneshot; tokio only).
    #[arg(long, value_enum, default_value_t = Offload::None)]
    offload: Offload,

    /// Backpressure: stop reading from a client once this many bytes of its
    /// echoes are unsent; resume when they drain.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_PENDING, value_parser = parse_size)]
    max_pending: usize,

    /// On Ctrl-C/SIGTERM, how long to wait for owed echoes before cutting
    /// the remaining connections.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    grace: Duration,
}

#[derive(clap::Args, Debug)]
struct ClientCmd {
    /// Server address, HOST:PORT. [default: 127.0.0.1:7004]
    #[arg(long, value_name = "HOST:PORT")]
    addr: Option<String>,

    /// `line`, `length` or `raw` (must match the server's).
    #[arg(long, value_enum, default_value_t = Framing::Line)]
    framing: Framing,

    /// Largest echo accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value = "1MiB", value_parser = parse_size)]
    max_frame: usize,

    /// Give up on a read after this long.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,

    /// Messages to send, one frame each; stdin lines when none.
    messages: Vec<String>,
}

fn main() -> ExitCode {
    common::log::init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Demo) {
        Command::Server(cmd) => server(cmd),
        Command::Client(cmd) => {
            let addr = common::cli::resolve(cmd.addr.as_deref(), ports::ASYNC_SERVER)?;
            let mut out = std::io::stdout().lock();
            async_server::client::run(
                addr,
                cmd.framing,
                cmd.max_frame,
                cmd.timeout,
                &cmd.messages,
                &mut out,
            )
        }
        Command::Demo => {
            async_server::raise_fd_limit_logged();
            async_server::demo::run(&mut std::io::stdout().lock())
        }
    }
}

fn server(cmd: ServerCmd) -> anyhow::Result<()> {
    let mut config = Config::from_args(&cmd.common);
    config.offload = cmd.offload;
    config.max_pending = cmd.max_pending;
    config.grace = cmd.grace;
    if cmd.max_pending == 0 {
        bail!("--max-pending must be at least 1 byte");
    }
    match (cmd.model, cmd.threads) {
        (_, Some(0)) => bail!("--threads must be at least 1"),
        (Model::EventLoop, Some(n)) if n != 1 => {
            bail!("--model event-loop is one thread by design; --threads {n} is for --model tokio")
        }
        (Model::EventLoop, _) if cmd.offload == Offload::Rayon => {
            bail!("--offload rayon is for --model tokio; the event loop runs --work inline")
        }
        (_, Some(n)) => config.threads = n,
        (_, None) => {}
    }
    async_server::raise_fd_limit_logged();
    let addr = cmd.common.socket_addr(ports::ASYNC_SERVER)?;
    let listener = common::net::listen(addr).with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr()?;
    common::net::announce(local);
    let shutdown = common::Shutdown::new();
    shutdown
        .install_signal_handler()
        .context("installing the signal handler")?;
    async_server::run(cmd.model, listener, config, shutdown)
        .with_context(|| format!("{} server on {local}", cmd.model.name()))?;
    Ok(())
}
