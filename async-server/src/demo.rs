//! The default command: every model in one process (tokio, the event loop,
//! and io_uring where the kernel allows it), each with three concurrent
//! clients, and the transcript printed.
//!
//! Run with: `cargo run -p async-server` (the transcript on stdout; server
//! logs on stderr at `warn` unless `RUST_LOG` says otherwise, e.g.
//! `RUST_LOG=debug` shows every frame as the server sees it).
//!
//! What to watch: the three clients are connected *at the same time* (a
//! barrier holds them until all are in), and one thread (event loop,
//! uring) or a couple (tokio) serve all of them. Where the kernel refuses
//! io_uring, the transcript says `== --model uring: skipped: <why>`.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use anyhow::{Context, anyhow};
use common::{Framing, Shutdown, outln};

use crate::client::Client;
use crate::{Config, Model};

const CLIENTS: usize = 3;

/// Print the transcript on stdout. A closed stdout (`| head -3`) ends the
/// demo with a `BrokenPipe` error, which `main` treats as a normal end.
pub fn run() -> anyhow::Result<()> {
    let (models, uring_refused) = Model::available();
    if let Some(reason) = uring_refused {
        outln!("== --model uring: skipped: {reason}")?;
    }
    for model in models {
        let listener = common::net::listen("127.0.0.1:0".parse()?)?;
        let addr = listener.local_addr()?;
        let shutdown = Shutdown::new();
        let config = Config {
            threads: 2,
            ..Config::default()
        };
        let server = {
            let shutdown = shutdown.clone();
            thread::spawn(move || crate::run(model, listener, config, shutdown))
        };
        outln!("== --model {}: listening on {addr}", model.name())?;
        let barrier = Arc::new(Barrier::new(CLIENTS));
        let clients: Vec<_> = (1..=CLIENTS)
            .map(|c| {
                let barrier = barrier.clone();
                thread::spawn(move || -> anyhow::Result<Vec<String>> {
                    let mut client =
                        Client::connect(addr, Framing::Line, 1024, Duration::from_secs(5))?;
                    barrier.wait(); // all three connected at once
                    let mut lines = Vec::new();
                    for msg in [
                        format!("hello from client {c}"),
                        format!("bye from client {c}"),
                    ] {
                        let echo = client.echo(msg.as_bytes())?;
                        lines.push(format!("client {c} -> {msg:?}"));
                        lines.push(format!(
                            "client {c} <- {:?}",
                            String::from_utf8_lossy(&echo)
                        ));
                    }
                    Ok(lines)
                })
            })
            .collect();
        let mut result = Ok(());
        for client in clients {
            match client
                .join()
                .map_err(|_| anyhow!("a client thread panicked"))?
            {
                Ok(lines) => {
                    for line in lines {
                        outln!("   {line}")?;
                    }
                }
                Err(e) => result = Err(e),
            }
        }
        shutdown.trigger();
        let stats = server
            .join()
            .map_err(|_| anyhow!("the server thread panicked"))?
            .with_context(|| format!("{} server", model.name()))?;
        outln!("   server summary: {stats}")?;
        result?;
    }
    Ok(())
}
