//! `threaded-server`: chapter 7, threads + sockets. Thin: parse the command
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

use anyhow::Context;
use common::cli::{Chapter, ClientArgs, ServerArgs, count_in, parse_max_frame, parse_size, ports};
use common::{Shutdown, Stats};
use threaded_server::client::{EchoClient, LoadSpec};
use threaded_server::conn::PanicAt;
use threaded_server::{Config, Model, WhenFull};

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
    #[command(flatten)]
    common: ClientArgs,

    /// Load mode: this many concurrent connections (one thread each).
    #[arg(long, value_name = "N", value_parser = parse_connections)]
    connections: Option<usize>,

    /// Load mode: round trips per connection, each echo verified.
    #[arg(long, value_name = "M", default_value_t = 10)]
    echoes: usize,

    /// Load mode: payload bytes per frame.
    #[arg(long, value_name = "BYTES", default_value = "64", value_parser = parse_max_frame)]
    size: usize,
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

/// Subcommands (`common::cli::Chapter`): the demo (both models in this
/// process, with concurrent clients; the default), `server`, `client`.
fn main() -> ExitCode {
    common::cli::chapter_main(
        "threaded-server",
        "Chapter 7: threads + sockets. A thread-per-client and a thread-pool echo server. Without a subcommand: the demo.",
        ports::THREADED_SERVER,
        run,
    )
}

fn run(command: Chapter<ServerCmd, ClientCmd>) -> anyhow::Result<()> {
    match command {
        Chapter::Demo => threaded_server::demo::run(&mut io::stdout().lock()),
        Chapter::Server(cmd) => server(cmd),
        Chapter::Client(cmd) => client(cmd),
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
    let addr = cmd.common.socket_addr(ports::THREADED_SERVER)?;
    let (framing, timeout) = (cmd.common.framing, cmd.common.timeout);

    if let Some(connections) = cmd.connections {
        let spec = LoadSpec {
            addr,
            framing,
            connections,
            echoes: cmd.echoes,
            size: cmd.size,
            timeout,
        };
        let r = threaded_server::client::load(&spec);
        common::outln!(
            "{connections} connections x {} echoes of {} bytes ({}): {} verified in {:.3} s, \
             slowest first echo {} ms, {} failed connections",
            cmd.echoes,
            cmd.size,
            framing,
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

    let mut conn = EchoClient::connect(addr, framing, timeout)
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
    if cmd.common.messages.is_empty() {
        for line in io::stdin().lock().lines() {
            send(line.context("reading stdin")?.as_bytes())?;
        }
    } else {
        for msg in &cmd.common.messages {
            send(msg.as_bytes())?;
        }
    }
    Ok(())
}
