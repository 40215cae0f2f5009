//! Thread-per-client: the acceptor spawns one named OS thread for every
//! connection it accepts; the thread runs the echo loop and ends with it.
//!
//! Run with (three terminals):
//!
//! ```text
//! RUST_LOG=info cargo run -p threaded-server -- server --model per-client --max-conns 2
//! nc 127.0.0.1 7003        # served by thread conn-1
//! nc 127.0.0.1 7003        # conn-2; a third nc is closed at once: over --max-conns
//! ```
//!
//! What to watch: `ps -T -p $(pgrep threaded-server)` lists one thread per
//! client (`conn-1`, `conn-2`, ...). Each costs a kernel task and a stack
//! (`--stack-size`, reserved address space; only touched pages use memory),
//! and creating one costs a `clone(2)`: cheap per client, but 10,000 clients
//! is 10,000 threads for the scheduler. A silent client costs one sleeping
//! thread and hurts nobody else; compare [`crate::pool`], where it
//! occupies one of N workers.
//!
//! Diff this file with `pool.rs`: the accept loop is the same; what happens
//! to an accepted connection is the difference.
//!
//! - **Limit**: over `--max-conns` a new client is told nothing and closed
//!   (it reads EOF), and that is logged and counted as refused.
//! - **Panics**: a panic while serving ends that connection's thread only;
//!   the OS thread *is* the containment boundary. `join()` reports it.
//! - **Shutdown**: stop accepting, close the listener, join every
//!   connection thread (each echoes what it has received, then closes).

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use common::{Shutdown, Stats};
use log::{error, info, warn};

use crate::accept::Acceptor;
use crate::conn::{self, ConnLimit, Served};
use crate::{Config, Model, Report};

/// Serve with one thread per connection until `shutdown` is triggered.
pub fn run(
    listener: TcpListener,
    config: &Config,
    shutdown: &Shutdown,
    stats: &Arc<Stats>,
) -> io::Result<Report> {
    let mut acceptor = Acceptor::new(listener, shutdown)?;
    let limit = ConnLimit::new(config.max_conns);
    info!(
        "per-client: one thread per connection, at most {} at once, {} KiB of stack each",
        limit.max(),
        config.stack_size / 1024
    );

    let mut threads: Vec<(JoinHandle<Served>, SocketAddr)> = Vec::new();
    let mut spawned = 0u64;
    while let Some((stream, peer)) = acceptor.accept() {
        // Join the threads that have finished, so the list stays as long as
        // the number of live connections.
        reap(&mut threads, stats, false);

        let Some(slot) = limit.try_acquire() else {
            info!(
                "{peer}: refused, {} connections already (--max-conns); closing without a word",
                limit.max()
            );
            Stats::inc(&stats.refused);
            continue; // `stream` is dropped: close(2), the client reads EOF.
        };

        spawned += 1;
        let (config, shutdown, stats_for_thread) =
            (config.clone(), shutdown.clone(), Arc::clone(stats));
        let thread = thread::Builder::new()
            .name(format!("conn-{spawned}"))
            .stack_size(config.stack_size)
            .spawn(move || {
                // Held until this thread ends, however it ends.
                let _slot = slot;
                conn::serve(stream, peer, &config, &shutdown, &stats_for_thread)
            });
        match thread {
            Ok(handle) => {
                Stats::inc(&stats.accepted);
                threads.push((handle, peer));
            }
            Err(e) => {
                // The closure (and with it the stream) was dropped: closed.
                warn!("{peer}: {}: {e}; closing", conn::describe_spawn_error(&e));
                Stats::inc(&stats.refused);
            }
        }
    }

    let result = acceptor.finish();
    info!(
        "per-client: stopped accepting; waiting for {} connection threads",
        threads.len()
    );
    reap(&mut threads, stats, true);
    info!("per-client: shut down, {spawned} threads spawned: {stats}");
    result.map(|()| Report {
        model: Model::PerClient,
        workers: Vec::new(),
        threads_spawned: spawned,
    })
}

/// Join finished threads (all of them when `all`), logging any panic.
fn reap(threads: &mut Vec<(JoinHandle<Served>, SocketAddr)>, stats: &Stats, all: bool) {
    let mut i = 0;
    while i < threads.len() {
        if !all && !threads[i].0.is_finished() {
            i += 1;
            continue;
        }
        let (handle, peer) = threads.swap_remove(i);
        let name = handle.thread().name().unwrap_or("?").to_owned();
        if let Err(panic) = handle.join() {
            // The default panic hook already printed the message and where;
            // this line ties it to the client. Nothing else was affected.
            error!(
                "{name}: panicked while serving {peer} ({}); that connection is closed, the server carries on",
                panic_message(&*panic)
            );
            Stats::inc(&stats.errors);
        }
    }
}

/// The text of a panic payload (`panic!("...")` carries a `String` or `&str`).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}
