//! The default subcommand: both thread models in this process, each on an
//! ephemeral port, with several clients talking to it at the same time, and
//! a transcript of what happened.
//!
//! Run with:
//!
//! ```text
//! cargo run -p threaded-server            # or: cargo run -p threaded-server -- demo
//! ```
//!
//! What to watch: the same four clients against each model. Per-client gives
//! every client its own thread at once, so every first echo is immediate.
//! The pool has two workers and a queue: two clients are served, the other
//! two wait in the queue until a worker is free, and their "first echo
//! after" times show it. The pool's fairness lines show who served whom.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use common::{Framing, ServerConfig, Shutdown, Stats};

use crate::client::EchoClient;
use crate::{Config, Model, Report};

/// Clients per model.
pub const CLIENTS: usize = 4;
/// Echoes per client.
pub const ECHOES: usize = 3;
/// Pause between a client's messages, so connections overlap in time (pacing
/// for the show, not synchronisation).
const PAUSE: Duration = Duration::from_millis(40);

/// Run the demo, writing the transcript to `out`.
pub fn run(out: &mut impl Write) -> anyhow::Result<()> {
    writeln!(
        out,
        "threaded-server demo: {CLIENTS} concurrent clients x {ECHOES} line echoes against each thread model\n"
    )?;
    for model in Model::ALL {
        let config = Config {
            common: ServerConfig {
                framing: Framing::Line,
                idle_timeout: Some(Duration::from_secs(5)),
                ..ServerConfig::default()
            },
            model,
            workers: 2,
            queue: 4,
            ..Config::default()
        };
        one_model(out, &config)?;
    }
    writeln!(
        out,
        "Try it yourself: `threaded-server server --model pool --workers 2` in one terminal, \
         `nc 127.0.0.1 7003` in two others."
    )?;
    Ok(())
}

fn one_model(out: &mut impl Write, config: &Config) -> anyhow::Result<()> {
    let listener = common::net::listen("127.0.0.1:0".parse()?).context("binding 127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let how = match config.model {
        Model::PerClient => "one thread per connection".to_string(),
        Model::Pool => format!("{} workers, queue of {}", config.workers, config.queue),
    };
    writeln!(
        out,
        "== {} model ({how}), listening on {addr}",
        config.model
    )?;

    let shutdown = Shutdown::new();
    let stats = Arc::new(Stats::new());
    let server = {
        let (config, shutdown, stats) = (config.clone(), shutdown.clone(), Arc::clone(&stats));
        thread::Builder::new()
            .name(format!("{}-server", config.model))
            .spawn(move || crate::run(listener, &config, &shutdown, &stats))?
    };

    let clients: Vec<_> = (1..=CLIENTS)
        .map(|c| thread::spawn(move || client(addr, c)))
        .collect();
    let mut transcripts = Vec::new();
    for (c, handle) in clients.into_iter().enumerate() {
        let transcript = handle
            .join()
            .map_err(|_| anyhow::anyhow!("client {} panicked", c + 1))?
            .with_context(|| format!("client {}", c + 1))?;
        transcripts.push(transcript);
    }
    shutdown.trigger();
    let report: Report = server
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))??;

    for t in transcripts {
        for line in t {
            writeln!(out, "  {line}")?;
        }
    }
    writeln!(out, "  threaded-server stopped: {stats}")?;
    for w in &report.workers {
        writeln!(
            out,
            "  server: {} served {} connections, {} frames",
            w.name, w.connections, w.frames
        )?;
    }
    writeln!(
        out,
        "  server: {} threads spawned\n",
        report.threads_spawned
    )?;
    Ok(())
}

/// One client: connect, a few paced echoes, a transcript of them.
fn client(addr: SocketAddr, c: usize) -> anyhow::Result<Vec<String>> {
    let start = Instant::now();
    let mut conn = EchoClient::connect(addr, Framing::Line, Duration::from_secs(5))?;
    let mut lines = Vec::new();
    let mut first_echo = Duration::ZERO;
    for i in 1..=ECHOES {
        if i > 1 {
            thread::sleep(PAUSE);
        }
        let msg = format!("hello from client {c}, message {i}");
        let echo = conn.echo(msg.as_bytes())?;
        if i == 1 {
            first_echo = start.elapsed();
        }
        anyhow::ensure!(echo == msg.as_bytes(), "echo differs from {msg:?}");
        lines.push(format!("client {c} > {msg}"));
        lines.push(format!("client {c} < {}", String::from_utf8_lossy(&echo)));
    }
    lines.insert(
        0,
        format!(
            "client {c}: connected, first echo after {} ms",
            first_echo.as_millis()
        ),
    );
    Ok(lines)
}
