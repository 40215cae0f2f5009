//! `async-server`: the async chapter's binary. One server, two designs.
//!
//! ```text
//! async-server                                   # demo: both models, concurrent clients
//! async-server server --model tokio --threads 1  # terminal 1
//! async-server server --model event-loop         # (or this one)
//! async-server server --model uring              # (or io_uring, where allowed)
//! nc 127.0.0.1 7004                              # terminal 2
//! async-server client hello world                # or our client
//! ```
//!
//! `main` only parses arguments and binds; the servers live in the library
//! (`tokio_server.rs`, `event_loop.rs`, `uring.rs`) so tests can start them
//! in-process.
//! Every flag is checked while parsing, before anything is bound or
//! printed: a bad value or a flag that does not fit `--model` exits with
//! status 2 and one `error:` line naming it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use async_server::{Config, Model, Offload};
use clap::{CommandFactory, Parser, Subcommand};
use common::Framing;
use common::cli::{HostPort, ServerArgs, parse_duration, parse_host_port, parse_max_frame, ports};

#[derive(Parser, Debug)]
#[command(
    name = "async-server",
    version,
    about = "Async I/O (tokio), multiplexing (a mio readiness loop) and completion I/O (io_uring): one echo server, three designs"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Both models in-process with concurrent clients (the default).
    Demo,
    /// Run an echo server.
    Server(ServerCmd),
    /// Send messages (or stdin lines) and print the echoes.
    Client(ClientCmd),
}

#[derive(clap::Args, Debug)]
struct ServerCmd {
    /// Which design serves the connections.
    #[arg(long, value_enum, default_value_t = Model::Tokio)]
    model: Model,

    #[command(flatten)]
    common: ServerArgs,

    /// tokio worker threads; 1 runs the current-thread runtime (one thread,
    /// like the event loop). The event loop and uring accept only 1.
    /// [default: CPUs]
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    threads: Option<usize>,

    /// Where `--work` runs: `none` (inline, blocking the runtime thread) or
    /// `rayon` (on rayon's pool, answer back over a oneshot; tokio only).
    #[arg(long, value_enum, default_value_t = Offload::None)]
    offload: Offload,
}

impl ServerCmd {
    /// Flags that are valid alone but not with this `--model`.
    fn conflict(&self) -> Option<String> {
        match (self.model, self.threads, self.offload) {
            (Model::EventLoop, Some(n), _) if n != 1 => Some(format!(
                "--threads {n} is for --model tokio; --model event-loop is one thread by design"
            )),
            (Model::EventLoop, _, Offload::Rayon) => Some(
                "--offload rayon is for --model tokio; the event loop runs --work inline".into(),
            ),
            (Model::Uring, Some(n), _) if n != 1 => Some(format!(
                "--threads {n} is for --model tokio; --model uring is one thread by design"
            )),
            (Model::Uring, _, Offload::Rayon) => Some(
                "--offload rayon is for --model tokio; the uring model runs --work inline".into(),
            ),
            _ => None,
        }
    }

    fn config(&self) -> Config {
        Config {
            common: self.common.config(),
            offload: self.offload,
            threads: self.threads.unwrap_or_else(async_server::default_threads),
        }
    }
}

#[derive(clap::Args, Debug)]
struct ClientCmd {
    /// Server address: IPV4:PORT, [IPV6]:PORT or HOSTNAME:PORT.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port)]
    addr: Option<HostPort>,

    /// `line`, `length` or `raw` (must match the server's).
    #[arg(long, value_enum, default_value_t = Framing::Line)]
    framing: Framing,

    /// Largest echo accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value = "1MiB", value_parser = parse_max_frame)]
    max_frame: usize,

    /// Give up on connecting or on a read after this long (1ms to 1h).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_timeout)]
    timeout: Duration,

    /// Messages to send, one frame each; stdin lines when none.
    messages: Vec<String>,
}

/// `--threads`: 1 to 1024.
fn parse_threads(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number"))?;
    if (1..=1024).contains(&n) {
        Ok(n)
    } else {
        Err("must be between 1 and 1024".into())
    }
}

/// The client's `--timeout`: 1 ms to an hour (0 would mean "no timeout" to
/// the socket API, and a silent server would hang the client).
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if (Duration::from_millis(1)..=Duration::from_secs(3600)).contains(&d) {
        Ok(d)
    } else {
        Err("must be between 1ms and 3600s".into())
    }
}

fn main() -> ExitCode {
    // Exits with status 2 and clap's one line on any bad flag or value.
    let cli: Cli = common::cli::parse(ports::ASYNC_SERVER);
    let command = cli.command.unwrap_or(Command::Demo);
    if let Command::Server(cmd) = &command
        && let Some(conflict) = cmd.conflict()
    {
        // Reported the way clap reports its own errors (status 2, usage).
        let clap = Cli::command();
        let mut server = match clap.find_subcommand("server") {
            Some(server) => server.clone().bin_name("async-server server"),
            None => clap,
        };
        server
            .error(clap::error::ErrorKind::ArgumentConflict, conflict)
            .exit();
    }
    match command {
        // The demo's transcript is on stdout; the servers' per-connection
        // `info` lines would interleave with it on the terminal.
        Command::Demo => common::log::init_with_default("warn"),
        _ => common::log::init(),
    }
    common::cli::exit("async-server", run(command))
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Demo => {
            async_server::raise_fd_limit_logged();
            async_server::demo::run()
        }
        Command::Server(cmd) => server(cmd),
        Command::Client(cmd) => {
            let addr = match &cmd.addr {
                Some(addr) => addr.resolve()?,
                None => common::cli::resolve(None, ports::ASYNC_SERVER)?,
            };
            async_server::client::run(addr, cmd.framing, cmd.max_frame, cmd.timeout, &cmd.messages)
        }
    }
}

fn server(cmd: ServerCmd) -> anyhow::Result<()> {
    let config = cmd.config();
    if cmd.model == Model::Uring {
        // Before binding or announcing: where the kernel refuses io_uring
        // the one line says which refusal and how to check.
        async_server::uring::probe().map_err(anyhow::Error::msg)?;
    }
    async_server::raise_fd_limit_logged();
    let addr = cmd.common.socket_addr(ports::ASYNC_SERVER)?;
    let listener = common::net::listen(addr).with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr()?;
    let shutdown = common::Shutdown::new();
    shutdown
        .install_signal_handler()
        .context("installing the signal handler")?;
    common::net::announce(local);
    async_server::run(cmd.model, listener, config, shutdown)
        .with_context(|| format!("{} server on {local}", cmd.model.name()))?;
    Ok(())
}
