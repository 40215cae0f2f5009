//! `async-server`: the async chapter's binary. One server, three designs
//! (tokio, a mio event loop, io_uring).
//!
//! ```text
//! async-server                                   # demo: every model, concurrent clients
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
//! (`tokio_server.rs`, `event_loop/`, `uring/`) so tests can start them
//! in-process.
//! Every flag is checked while parsing, before anything is bound or
//! printed: a bad value or a flag that does not fit `--model` exits with
//! status 2 and one `error:` line naming it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use async_server::uring::RecvMode;
use async_server::{Balance, Config, Listener, Model, Offload, UnixSocketFile};
use clap::Args as _;
use common::cli::{Chapter, ClientArgs, HostPort, ServerArgs, parse_host_port, ports};

const NAME: &str = "async-server";
const ABOUT: &str = "Async I/O (tokio), multiplexing (a mio readiness loop) and completion I/O (io_uring): one echo server, three designs. Without a subcommand: the demo.";

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

    /// uring model: a kernel thread polls the submission ring
    /// (IORING_SETUP_SQPOLL) and sleeps after this long without work, so the
    /// loop rarely calls io_uring_enter to submit. Off by default: that
    /// thread's CPU is the price (see the README's Exercise 11).
    #[arg(long, value_name = "IDLE", value_parser = parse_sqpoll)]
    sqpoll: Option<Duration>,

    /// uring model: `multishot` (one recv per connection stays armed, with
    /// a byte budget), `multishot-cancel` (no budget: cancelled at
    /// --max-pending) or `oneshot` (a recv submitted again after every
    /// completion, as on a kernel older than 6.0). [default: multishot]
    #[arg(long, value_enum)]
    recv: Option<RecvMode>,
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
        if self.model != Model::Uring {
            if self.sqpoll.is_some() {
                return Some("--sqpoll is for --model uring".into());
            }
            if self.recv.is_some() {
                return Some("--recv is for --model uring".into());
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
            uring: async_server::uring::RingOptions {
                sqpoll_idle: self.sqpoll,
                recv: self.recv.unwrap_or_default(),
                ..Default::default()
            },
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

/// The server's `--addr` takes `unix:PATH` too; everything else is the
/// common command line, so `common::cli::parse_commands_with` fills in the
/// default port as everywhere.
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

/// `--loops`: 1 to 256.
fn parse_loops(s: &str) -> Result<usize, String> {
    common::cli::count_in(s, 1, 256)
}

/// `--sqpoll`: the polling thread's idle time, 1 ms to 10 s.
fn parse_sqpoll(s: &str) -> Result<Duration, String> {
    let d = common::cli::parse_duration(s)?;
    if (Duration::from_millis(1)..=Duration::from_secs(10)).contains(&d) {
        Ok(d)
    } else {
        Err("must be between 1ms and 10s".into())
    }
}

/// `--threads`: 1 to 1024.
fn parse_threads(s: &str) -> Result<usize, String> {
    common::cli::count_in(s, 1, 1024)
}

/// Subcommands (`common::cli::Chapter`): the demo (every model in-process
/// with concurrent clients; the default), `server`, `client`.
fn main() -> ExitCode {
    // Exits with status 2 and clap's one line on any bad flag or value.
    let command: Chapter<ServerCmd, ClientArgs> =
        common::cli::parse_commands_with(NAME, ABOUT, ports::ASYNC_SERVER, with_unix_addr)
            .unwrap_or(Chapter::Demo);
    if let Chapter::Server(cmd) = &command
        && let Some(conflict) = cmd.conflict()
    {
        // Reported the way clap reports its own errors (status 2, usage).
        ServerCmd::augment_args(clap::Command::new("async-server server"))
            .error(clap::error::ErrorKind::ArgumentConflict, conflict)
            .exit();
    }
    let demo = matches!(command, Chapter::Demo);
    common::cli::main_with(NAME, demo, || run(command))
}

fn run(command: Chapter<ServerCmd, ClientArgs>) -> anyhow::Result<()> {
    match command {
        Chapter::Demo => {
            async_server::raise_fd_limit_logged();
            async_server::demo::run()
        }
        Chapter::Server(cmd) => server(cmd),
        Chapter::Client(c) => {
            let addr = c.socket_addr(ports::ASYNC_SERVER)?;
            async_server::client::run(addr, c.framing, c.max_frame, c.timeout, &c.messages)
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
