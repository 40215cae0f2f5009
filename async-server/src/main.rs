//! `async-server`: the async chapter's binary. One server, two designs.
//!
//! ```text
//! async-server                                   # demo: both models, concurrent clients
//! async-server server --model tokio --threads 1  # terminal 1
//! async-server server --model event-loop         # (or this one)
//! async-server server --model uring              # (or io_uring, where allowed)
//! async-server server --model event-loop --loops 2 --balance acceptor
//! async-server server --addr unix:/tmp/echo.sock # then: nc -U /tmp/echo.sock
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

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use async_server::{Balance, Config, Listener, Model, Offload, UnixSocketFile};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
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

    /// Event loops (event-loop model only): N threads, each with its own
    /// epoll, sharing --max-conns and the shutdown deadline. [default: 1]
    #[arg(long, value_name = "N", value_parser = parse_loops)]
    loops: Option<usize>,

    /// How --loops spreads connections: `reuseport` (a listener per loop,
    /// the kernel hashes) or `acceptor` (loop 0 accepts and deals them
    /// round-robin). [default: reuseport]
    #[arg(long, value_enum)]
    balance: Option<Balance>,
}

impl ServerCmd {
    /// Flags that are valid alone but not with this `--model`.
    fn conflict(&self) -> Option<String> {
        let unix = self.unix_path().is_some();
        let loops = self.loops.unwrap_or(1);
        match (self.model, self.threads, self.offload) {
            (Model::EventLoop, Some(n), _) if n != 1 => {
                return Some(format!(
                    "--threads {n} is for --model tokio; --model event-loop is one thread per loop (--loops N)"
                ));
            }
            (Model::EventLoop, _, Offload::Rayon) => {
                return Some(
                    "--offload rayon is for --model tokio; the event loop runs --work inline"
                        .into(),
                );
            }
            (Model::Uring, Some(n), _) if n != 1 => {
                return Some(format!(
                    "--threads {n} is for --model tokio; --model uring is one thread by design"
                ));
            }
            (Model::Uring, _, Offload::Rayon) => {
                return Some(
                    "--offload rayon is for --model tokio; the uring model runs --work inline"
                        .into(),
                );
            }
            _ => {}
        }
        if self.model != Model::EventLoop {
            if let Some(n) = self.loops.filter(|&n| n != 1) {
                return Some(format!("--loops {n} is for --model event-loop"));
            }
            if let Some(b) = self.balance {
                return Some(format!(
                    "--balance {} is for --model event-loop --loops N",
                    b.name()
                ));
            }
        }
        if unix && self.model == Model::Uring {
            return Some(
                "--addr unix:PATH is for --model event-loop and tokio (the uring model serves TCP)"
                    .into(),
            );
        }
        if unix && loops > 1 && self.balance.unwrap_or_default() == Balance::Reuseport {
            return Some(
                "--addr unix:PATH with --loops N needs --balance acceptor (a socket file can be bound only once; SO_REUSEPORT is for TCP)"
                    .into(),
            );
        }
        None
    }

    fn config(&self) -> Config {
        Config {
            common: self.common.config(),
            offload: self.offload,
            threads: self.threads.unwrap_or_else(async_server::default_threads),
            loops: self.loops.unwrap_or(1),
            balance: self.balance.unwrap_or_default(),
        }
    }

    /// `--addr unix:PATH`: the path (see [`parse_listen_addr`]).
    fn unix_path(&self) -> Option<PathBuf> {
        match &self.common.addr {
            Some(HostPort::Name { host, .. }) => host.strip_prefix(UNIX_PREFIX).map(PathBuf::from),
            _ => None,
        }
    }
}

const UNIX_PREFIX: &str = "unix:";

/// The server's `--addr`: what `common::cli::parse_host_port` accepts, or
/// `unix:PATH`, a Unix domain socket. `common::cli::HostPort` has no Unix
/// variant yet, so the path travels as `HostPort::Name { host: "unix:PATH",
/// port: 0 }`, which `parse_host_port` can never produce (a host name has
/// no `:`), and [`ServerCmd::unix_path`] takes it back out.
fn parse_listen_addr(s: &str) -> Result<HostPort, String> {
    let Some(path) = s.strip_prefix(UNIX_PREFIX) else {
        return parse_host_port(s);
    };
    if path.is_empty() {
        return Err("empty path after `unix:` (write unix:PATH, e.g. unix:/tmp/echo.sock)".into());
    }
    // sockaddr_un.sun_path is 108 bytes, the last one a NUL.
    if path.len() > 107 {
        return Err(format!(
            "a Unix socket path is at most 107 bytes (sun_path); this one is {}",
            path.len()
        ));
    }
    Ok(HostPort::Name {
        host: s.to_owned(),
        port: 0,
    })
}

/// [`Cli`] with the server's `--addr` taking `unix:PATH` too; otherwise the
/// same, so `common::cli::parse` fills in the default port as everywhere.
struct Args(Cli);

fn with_unix_addr(cmd: clap::Command) -> clap::Command {
    cmd.mut_subcommand("server", |server| {
        server.mut_arg("addr", |addr| {
            addr.value_parser(parse_listen_addr)
                .value_name("HOST:PORT|unix:PATH")
                .help(
                    "Address to listen on: IPV4:PORT, [IPV6]:PORT, HOSTNAME:PORT, or unix:PATH \
                     (a Unix domain socket; event-loop and tokio). Port 0 picks a free port, \
                     printed as `listening on ADDR`",
                )
        })
    })
}

impl CommandFactory for Args {
    fn command() -> clap::Command {
        with_unix_addr(Cli::command())
    }
    fn command_for_update() -> clap::Command {
        with_unix_addr(Cli::command_for_update())
    }
}

impl FromArgMatches for Args {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Cli::from_arg_matches(matches).map(Args)
    }
    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(matches)
    }
}

impl Parser for Args {}

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

/// `--loops`: 1 to 256.
fn parse_loops(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number"))?;
    if (1..=256).contains(&n) {
        Ok(n)
    } else {
        Err("must be between 1 and 256".into())
    }
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
    let Args(cli) = common::cli::parse(ports::ASYNC_SERVER);
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
    let listener: Listener = match cmd.unix_path() {
        // Its errors name the path (and say what to do about a live one).
        Some(path) => UnixSocketFile::bind(&path)?.into(),
        None => {
            let addr = cmd.common.socket_addr(ports::ASYNC_SERVER)?;
            // More loops, each with its own listener: all of them, this
            // first one included, need SO_REUSEPORT before bind().
            let reuseport = config.loops > 1 && config.balance == Balance::Reuseport;
            let bound = if reuseport {
                async_server::listen_reuseport(addr)
            } else {
                common::net::listen(addr)
            };
            bound
                .with_context(|| format!("listening on {addr}"))?
                .into()
        }
    };
    let shown = listener.describe();
    let shutdown = common::Shutdown::new();
    shutdown
        .install_signal_handler()
        .context("installing the signal handler")?;
    match &listener {
        Listener::Tcp(l) => common::net::announce(l.local_addr()?),
        // `listening on unix:/tmp/echo.sock`: the same line, which
        // `common::net::parse_announce` (a SocketAddr) does not parse yet.
        // Like `announce`, a closed stdout is not an error.
        Listener::Unix(_) => {
            let _ = common::outln!("{}{shown}", common::net::ANNOUNCE_PREFIX);
        }
    }
    async_server::run(cmd.model, listener, config, shutdown)
        .with_context(|| format!("{} server on {shown}", cmd.model.name()))?;
    Ok(())
}
