//! Thread-per-client: the acceptor spawns one named OS thread for every
//! connection it accepts; the thread serves it and ends with it.
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
//! Diff this file with `pool.rs`: the accept loop, the limit and what
//! happens on a connection (`conn.rs`) are the same; who runs an accepted
//! connection is the difference.
//!
//! - **Limit**: over `--max-conns` a new client is told nothing and closed
//!   (it reads EOF), and that is logged and counted as refused. Out of
//!   threads: the same, logged as such.
//! - **Panics**: a panic while serving ends that connection only; its
//!   thread logs it and ends, as it would have anyway.
//! - **Shutdown**: stop accepting, close the listener, and join every
//!   connection thread by the `--grace` deadline (each echoes what it has
//!   received, sends FIN, waits for the client's, and is cut at the deadline).

use std::io;
use std::net::TcpListener;
use std::sync::Arc;

use common::{Shutdown, Stats};
use log::info;

use crate::accept::Acceptor;
use crate::conn::{self, ConnLimit, Job};
use crate::{Config, Model, Report};

/// Serve with one thread per connection until `shutdown` is triggered.
pub fn run(
    listener: TcpListener,
    config: &Config,
    shutdown: &Shutdown,
    stats: &Arc<Stats>,
) -> io::Result<Report> {
    let mut acceptor = Acceptor::new(listener, shutdown)?;
    let limit = ConnLimit::new(config.common.max_conns);
    info!(
        "per-client: one thread per connection, at most {} at once, {} KiB of stack each",
        limit.max(),
        config.stack_size / 1024
    );

    let mut threads = Vec::new();
    let mut spawned = 0u64;
    while let Some((stream, peer)) = acceptor.accept() {
        // Join the threads that have finished, so the list stays as long as
        // the number of live connections.
        conn::join_by(&mut threads, None);
        let Some(slot) = limit.try_acquire(peer, stats) else {
            continue; // `stream` is dropped: close(2), the client reads EOF.
        };
        let job = Job { stream, peer, slot };

        // ANCHOR: spawn
        // A thread of its own, for as long as the connection lasts.
        spawned += 1;
        let (config_, shutdown_, stats_) = (config.clone(), shutdown.clone(), Arc::clone(stats));
        let body = move || job.serve(&config_, &shutdown_, &stats_);
        match conn::spawn(format!("conn-{spawned}"), config, body) {
            Some(thread) => {
                Stats::inc(&stats.accepted);
                threads.push(thread);
            }
            // The closure (and with it the stream) was dropped: closed.
            None => Stats::inc(&stats.refused),
        }
        // ANCHOR_END: spawn
    }

    let result = acceptor.finish();
    info!(
        "per-client: stopped accepting; waiting for {} connection threads",
        threads.len()
    );
    let deadline = shutdown.deadline(config.common.grace);
    let (_, abandoned) = conn::join_by(&mut threads, deadline);
    info!("per-client: {spawned} threads spawned");
    info!("threaded-server stopped: {stats}");
    result.map(|()| Report {
        model: Model::PerClient,
        workers: Vec::new(),
        threads_spawned: spawned,
        drained: 0,
        abandoned,
    })
}
