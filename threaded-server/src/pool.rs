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
//! Diff this file with `per_client.rs`: the accept loop is the same; an
//! accepted connection goes into a queue instead of a new thread.
//!
//! ## Starting from the Rust book's `ThreadPool`
//!
//! The book's final chapter shares one `std::sync::mpsc::Receiver` between
//! workers as `Arc<Mutex<mpsc::Receiver<Job>>>`, because mpsc has a single
//! consumer:
//!
//! ```text
//! let job = receiver.lock().unwrap().recv().unwrap();
//! ```
//!
//! crossbeam-channel changes four things:
//!
//! 1. **Multi-consumer.** `Receiver` is `Clone`; every worker owns one and
//!    `recv()`s directly. No `Mutex`, so no lock to poison and none to hold
//!    by mistake across a job (the book warns that `while let Ok(job) =
//!    receiver.lock().unwrap().recv()` keeps the guard alive for the whole
//!    loop body and serialises the workers).
//! 2. **Bounded.** `bounded(queue)` caps how many accepted connections wait:
//!    each one is a file descriptor and a client staring at a silent socket.
//!    The book's `channel()` is unbounded and would queue without limit.
//! 3. **`select!`.** A thread can wait on several channels at once. The
//!    acceptor, waiting for room in a full queue, also waits on
//!    [`Shutdown::receiver`], which disconnects at Ctrl-C: shutdown does not
//!    have to wait for a worker to become free.
//! 4. **Shutdown without `Drop`.** The book stops the pool in `impl Drop`,
//!    which Ctrl-C never runs (the default SIGINT action kills the process).
//!    Here the signal thread triggers [`Shutdown`], the acceptor stops and
//!    drops the only `Sender`, and each worker's `for job in jobs` ends once
//!    the queue is *empty and disconnected*: every connection already
//!    accepted is served (it echoes what it has received, then closes)
//!    before the workers are joined. We deliberately do *not* `select!` on
//!    shutdown in the workers: a worker that left at the signal could leave
//!    accepted connections unserved in the queue.
//!
//! ## When every worker is busy and the queue is full (`--when-full`)
//!
//! - `wait` (default): the acceptor blocks on the queue and stops calling
//!   `accept()`. New clients still complete the TCP handshake (the kernel
//!   does it) and wait in the listen backlog; when that fills too, the
//!   kernel drops their SYNs and their `connect()` retries. Back-pressure:
//!   nobody is turned away, everybody waits.
//! - `refuse`: the acceptor closes the new connection at once and logs it;
//!   the client reads EOF (or a reset) and can retry later or elsewhere.
//!
//! ## Panics
//!
//! A worker outlives the connections it serves, so a panic in one must not
//! end the worker: the pool would shrink by one thread per panic and end up
//! serving nobody. `catch_unwind` around each connection contains it: the
//! connection's state (its socket, its buffers) is dropped, the panic is
//! logged and counted, and the worker takes the next job.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use common::{Shutdown, Stats};
use crossbeam_channel::{Receiver, TrySendError, select};
use log::{debug, error, info, warn};

use crate::accept::Acceptor;
use crate::conn::{self, ConnLimit, Slot};
use crate::per_client::panic_message;
use crate::{Config, Model, Report, WhenFull, WorkerReport};

/// An accepted connection waiting in the queue for a worker.
#[derive(Debug)]
struct Job {
    stream: TcpStream,
    peer: SocketAddr,
    /// Its place under `--max-conns`, given back when the job is done.
    slot: Slot,
}

/// Serve with a fixed pool of worker threads until `shutdown` is triggered.
pub fn run(
    listener: TcpListener,
    config: &Config,
    shutdown: &Shutdown,
    stats: &Arc<Stats>,
) -> io::Result<Report> {
    let mut acceptor = Acceptor::new(listener, shutdown)?;
    let limit = ConnLimit::new(config.max_conns);
    // Capacity 0 is allowed: a rendezvous channel, where the acceptor hands
    // each connection straight to an idle worker.
    let (jobs, queue) = crossbeam_channel::bounded::<Job>(config.queue);

    let mut workers = Vec::with_capacity(config.workers);
    for i in 0..config.workers {
        let (queue, config, shutdown, stats) = (
            queue.clone(),
            config.clone(),
            shutdown.clone(),
            Arc::clone(stats),
        );
        // If this fails, returning drops `jobs`: the workers already started
        // see the channel disconnect and end.
        let handle = thread::Builder::new()
            .name(format!("worker-{i}"))
            .stack_size(config.stack_size)
            .spawn(move || worker(queue, &config, &shutdown, &stats))?;
        workers.push(handle);
    }
    drop(queue); // Only the workers hold receivers now.
    info!(
        "pool: {} workers, queue of {} connections (when full: {:?}), at most {} connections held",
        config.workers,
        config.queue,
        config.when_full,
        limit.max()
    );

    let stop = shutdown.receiver();
    let mut full_since: Option<Instant> = None;
    while let Some((stream, peer)) = acceptor.accept() {
        let Some(slot) = limit.try_acquire() else {
            info!(
                "{peer}: refused, {} connections already (--max-conns); closing without a word",
                limit.max()
            );
            Stats::inc(&stats.refused);
            continue;
        };
        let job = Job { stream, peer, slot };

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
                select! {
                    send(jobs, job) -> sent => {
                        if sent.is_err() {
                            return Err(no_workers());
                        }
                        Stats::inc(&stats.accepted);
                    }
                    recv(stop) -> _ => {
                        // Shutdown while holding an accepted connection: serve
                        // it here (it echoes what already arrived, then closes)
                        // rather than wait for a worker or drop it unanswered.
                        Stats::inc(&stats.accepted);
                        let Job { stream, peer, slot } = job;
                        let served = panic::catch_unwind(AssertUnwindSafe(|| {
                            conn::serve(stream, peer, config, shutdown, stats)
                        }));
                        if served.is_err() {
                            Stats::inc(&stats.errors);
                            error!("acceptor: panicked while serving {peer} at shutdown");
                        }
                        drop(slot);
                    }
                }
                if let Some(since) = full_since.filter(|_| !jobs.is_full()) {
                    info!("pool: queue has room again after {:?}", since.elapsed());
                    full_since = None;
                }
            }
        }
    }

    let result = acceptor.finish();
    info!(
        "pool: stopped accepting; {} connections queued, waiting for {} workers",
        jobs.len(),
        workers.len()
    );
    // The workers' `for job in jobs` ends when the queue is empty and this,
    // the last Sender, is gone.
    drop(jobs);
    let mut reports = Vec::with_capacity(workers.len());
    for handle in workers {
        let name = handle.thread().name().unwrap_or("?").to_owned();
        match handle.join() {
            Ok(report) => reports.push(report),
            // Only a bug outside `catch_unwind` (say, in logging) gets here.
            Err(panic) => error!("{name}: died: {}", panic_message(&*panic)),
        }
    }
    log_fairness(&reports);
    info!("pool: shut down: {stats}");
    result.map(|()| Report {
        model: Model::Pool,
        threads_spawned: reports.len() as u64,
        workers: reports,
    })
}

/// One worker: serve queued connections until the queue is drained and
/// disconnected. Returns what it did, for the fairness report.
fn worker(
    queue: Receiver<Job>,
    config: &Config,
    shutdown: &Shutdown,
    stats: &Stats,
) -> WorkerReport {
    let name = thread::current().name().unwrap_or("worker").to_owned();
    let mut report = WorkerReport {
        name,
        ..WorkerReport::default()
    };
    // Blocks in recv() while the queue is empty: an idle worker costs nothing.
    for Job { stream, peer, slot } in queue.iter() {
        debug!(
            "{}: took {peer} from the queue ({} still queued)",
            report.name,
            queue.len()
        );
        // AssertUnwindSafe: if `serve` panics, everything it was using for
        // this connection is dropped with it; what it shares with others
        // (`stats`: atomics; `shutdown`: a flag and a Mutex-guarded list) has
        // no half-updated state a panic could expose.
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            conn::serve(stream, peer, config, shutdown, stats)
        }));
        drop(slot);
        report.connections += 1;
        match outcome {
            Ok(served) => {
                report.frames += served.frames;
                report.bytes += served.bytes;
            }
            Err(panic) => {
                report.panics += 1;
                Stats::inc(&stats.errors);
                error!(
                    "{}: panicked while serving {peer} ({}); that connection is closed, \
                     the worker carries on",
                    report.name,
                    panic_message(&*panic)
                );
            }
        }
    }
    report
}

/// Per-worker counts at shutdown, so a reader sees how evenly work spread.
fn log_fairness(reports: &[WorkerReport]) {
    let total_frames: u64 = reports.iter().map(|r| r.frames).sum();
    for r in reports {
        let share = if total_frames == 0 {
            0.0
        } else {
            100.0 * r.frames as f64 / total_frames as f64
        };
        info!(
            "pool: {}: {} connections, {} frames ({share:.1}% of all frames), {} panics",
            r.name, r.connections, r.frames, r.panics
        );
    }
    if let (Some(min), Some(max)) = (
        reports.iter().map(|r| r.frames).min(),
        reports.iter().map(|r| r.frames).max(),
    ) {
        info!("pool: frames per worker: min {min}, max {max}");
    }
}

fn no_workers() -> io::Error {
    // Workers only end when the queue disconnects, and catch panics; if this
    // ever happens it is a bug, and the server stops instead of hanging.
    warn!("pool: every worker has exited");
    io::Error::other("the thread pool has no workers left")
}
