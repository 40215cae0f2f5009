//! A thread pool: `--workers N` threads, started once, take accepted
//! connections from a **bounded** crossbeam-channel (`--queue` long) and
//! serve them one at a time.
//!
//! Run with (three terminals):
//!
//! ```text
//! RUST_LOG=info cargo run -p threaded-server -- server --model pool --workers 2 --queue 1
//! nc 127.0.0.1 7003        # served by worker-0 or worker-1; open three of these
//! threaded-server client --connections 20 --echoes 100
//! ```
//!
//! What to watch: two `nc`s that type nothing occupy both workers, and the
//! third client's echoes wait until one of them leaves or hits
//! `--idle-timeout` (the pool's classic failure, see the README). At Ctrl-C
//! the pool logs how many connections and frames each worker served.
//!
//! Diff this file with `per_client.rs`: the accept loop, the limit and what
//! happens on a connection (`conn.rs`) are the same; an accepted connection
//! goes into a queue instead of a new thread.
//!
//! - **Limit**: over `--max-conns` a new client is told nothing and closed
//!   (it reads EOF), and that is logged and counted as refused. With every
//!   worker busy and the queue full, `--when-full` ([`WhenFull`]) decides:
//!   `wait` (stop accepting: back-pressure) or `refuse` (close it at once).
//! - **Panics**: a worker outlives the connections it serves, so a panic
//!   while serving ends that connection only and the worker takes the next
//!   job (otherwise the pool would shrink by one thread per panic).
//! - **Shutdown**: stop accepting, close the listener; each busy worker
//!   drains its connection. The connections still queued (and the one the
//!   acceptor may hold, waiting for room) were accepted and their bytes
//!   received, so they are owed their echoes within the same `--grace`; one
//!   worker serving them one after another could not promise that, so each
//!   gets a short-lived `drain-N` thread (at most `--queue` + 1). Then every
//!   thread is joined by the deadline.
//!
//! Coming from the Rust book's `ThreadPool` and its
//! `Arc<Mutex<mpsc::Receiver<Job>>>`: a crossbeam `Receiver` is `Clone` (each
//! worker `recv()`s, no lock to hold by mistake across a job), the queue is
//! bounded, the acceptor can `select!` on room in the queue *and* on
//! [`Shutdown::receiver`], and stopping needs no `impl Drop` (which Ctrl-C
//! never runs). The README ("From the Rust book's `ThreadPool`") has more.

use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;

use common::{Shutdown, Stats};
use crossbeam_channel::{Receiver, TrySendError, select};
use log::{debug, error, info};

use crate::accept::Acceptor;
use crate::conn::{self, ConnLimit, Job};
use crate::{Config, Model, Report, WhenFull, WorkerReport};

/// Serve with a fixed pool of worker threads until `shutdown` is triggered.
pub fn run(
    listener: TcpListener,
    config: &Config,
    shutdown: &Shutdown,
    stats: &Arc<Stats>,
) -> io::Result<Report> {
    let mut acceptor = Acceptor::new(listener, shutdown)?;
    let limit = ConnLimit::new(config.common.max_conns);
    info!(
        "pool: {} workers, queue of {} connections (when full: {:?}), at most {} connections held",
        config.workers,
        config.queue,
        config.when_full,
        limit.max()
    );
    // Capacity 0 is allowed: a rendezvous channel, where the acceptor hands
    // each connection straight to an idle worker.
    let (jobs, queue) = crossbeam_channel::bounded::<Job>(config.queue);
    let mut workers = Vec::with_capacity(config.workers);
    for i in 0..config.workers {
        let (queue, config_, shutdown_, stats_) = (
            queue.clone(),
            config.clone(),
            shutdown.clone(),
            Arc::clone(stats),
        );
        let body = move || worker(queue, &config_, &shutdown_, &stats_);
        // If this fails, returning drops `jobs`: the workers already started
        // see the channel disconnect and end.
        let thread = conn::spawn(format!("worker-{i}"), config, body)
            .ok_or_else(|| io::Error::other("cannot start the worker threads"))?;
        workers.push(thread);
    }

    let stop = shutdown.receiver();
    let mut full_since: Option<Instant> = None;
    // Shutdown may find the acceptor holding one job, waiting for room.
    let mut held = None;
    while let Some((stream, peer)) = acceptor.accept() {
        let Some(slot) = limit.try_acquire(peer, stats) else {
            continue; // `stream` is dropped: close(2), the client reads EOF.
        };
        let job = Job { stream, peer, slot };

        // Into the queue, for the next free worker.
        match config.when_full {
            WhenFull::Refuse => match jobs.try_send(job) {
                Ok(()) => Stats::inc(&stats.accepted),
                Err(TrySendError::Full(job)) => {
                    info!(
                        "{}: refused, all {} workers busy and {} queued (--when-full refuse)",
                        job.peer, config.workers, config.queue
                    );
                    Stats::inc(&stats.refused);
                }
                Err(TrySendError::Disconnected(_)) => return Err(no_workers()),
            },
            WhenFull::Wait => {
                // (A zero-capacity queue is always "full": nothing to report.)
                if config.queue > 0 && jobs.is_full() && full_since.is_none() {
                    full_since = Some(Instant::now());
                    info!(
                        "pool: all {} workers busy and {} queued: not accepting until one is free \
                         (new clients wait in the kernel's listen backlog)",
                        config.workers, config.queue
                    );
                }
                // Wait for room in the queue *or* for shutdown, whichever
                // comes first. (`job` is moved only if the send is chosen.)
                // ANCHOR: select
                select! {
                    send(jobs, job) -> sent => {
                        if sent.is_err() {
                            return Err(no_workers());
                        }
                        Stats::inc(&stats.accepted);
                    }
                    recv(stop) -> _ => {
                        Stats::inc(&stats.accepted);
                        held = Some(job);
                    }
                }
                // ANCHOR_END: select
                if let Some(since) = full_since.filter(|_| !jobs.is_full()) {
                    info!("pool: queue has room again after {:?}", since.elapsed());
                    full_since = None;
                }
            }
        }
    }

    let result = acceptor.finish();
    // Accepted, not yet started: served and drained now, side by side.
    let waiting: Vec<Job> = held.into_iter().chain(queue.try_iter()).collect();
    info!(
        "pool: stopped accepting; draining {} queued connections, waiting for {} workers",
        waiting.len(),
        workers.len()
    );
    let mut drains = Vec::new();
    for (i, job) in waiting.into_iter().enumerate() {
        let (config_, shutdown_, stats_) = (config.clone(), shutdown.clone(), Arc::clone(stats));
        // If no thread can be had, the job is dropped: closed unanswered.
        drains.extend(conn::spawn(format!("drain-{i}"), config, move || {
            job.serve(&config_, &shutdown_, &stats_)
        }));
    }
    // The workers' `for job in jobs` ends when the queue is empty and this,
    // the last Sender, is gone.
    drop(jobs);
    let deadline = shutdown.deadline(config.common.grace);
    let (reports, abandoned) = conn::join_by(&mut workers, deadline);
    let (drained, more) = conn::join_by(&mut drains, deadline);
    let mut reports: Vec<WorkerReport> = reports
        .into_iter()
        .filter_map(|r| r.map_err(|panic| error!("a worker died: {panic}")).ok())
        .collect();
    // In the order they were started (worker-2 before worker-10).
    reports.sort_by(|a, b| (a.name.len(), &a.name).cmp(&(b.name.len(), &b.name)));
    WorkerReport::log_fairness(&reports);
    info!("threaded-server stopped: {stats}");
    result.map(|()| Report {
        model: Model::Pool,
        threads_spawned: (reports.len() + drained.len()) as u64,
        workers: reports,
        drained: drained.len() as u64,
        abandoned: abandoned + more,
    })
}

// ANCHOR: worker
/// One worker: serve queued connections until the queue is drained and
/// disconnected. Returns what it did, for the fairness report.
fn worker(
    queue: Receiver<Job>,
    config: &Config,
    shutdown: &Shutdown,
    stats: &Stats,
) -> WorkerReport {
    let name = std::thread::current().name().unwrap_or("worker").to_owned();
    let mut report = WorkerReport {
        name,
        ..WorkerReport::default()
    };
    // Blocks in recv() while the queue is empty: an idle worker costs nothing.
    for job in queue.iter() {
        debug!(
            "{}: took {} from the queue ({} still queued)",
            report.name,
            job.peer,
            queue.len()
        );
        report.connections += 1;
        match job.serve(config, shutdown, stats) {
            Some(served) => {
                report.frames += served.frames;
                report.bytes += served.bytes;
            }
            None => report.panics += 1,
        }
    }
    report
}
// ANCHOR_END: worker

fn no_workers() -> io::Error {
    // Workers only end when the queue disconnects, and catch panics; if this
    // ever happens it is a bug, and the server stops instead of hanging.
    error!("pool: every worker has exited");
    io::Error::other("the thread pool has no workers left")
}
