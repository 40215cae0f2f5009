//! Exercise 8: the Rust book's thread pool, made bounded (chapter 7).
//!
//! The book's final chapter builds a `ThreadPool` from `std::sync::mpsc`
//! and an `Arc<Mutex<Receiver>>`. Two things make it unfit for a server:
//! its queue is unbounded (a flood of connections queues without limit,
//! each one a file descriptor and a client waiting forever), and the lock
//! around the receiver is easy to hold while a job runs, which lets only one
//! worker work at a time. crossbeam-channel fixes both: a `bounded(n)`
//! channel whose `try_send` says `Full` at once, and a `Receiver` that every
//! worker can clone: no Mutex at all.
//!
//! Fill in `ThreadPool` (its fields, `new`, `try_execute`); `main` is done:
//! when the pool refuses a connection, it writes "busy\n" and closes it.
//!
//! Run:   cargo run --manifest-path lab/exercises/Cargo.toml -p ex08-bounded-pool -- --workers 2 --queue 1
//! Then open four `nc 127.0.0.1 7108`: the fourth gets "busy".
//! Grade: cargo run -p lab -- check 8

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};

type Job = Box<dyn FnOnce() + Send + 'static>;

pub struct ThreadPool {
    sender: crossbeam_channel::Sender<Job>,
    _workers: Vec<std::thread::JoinHandle<()>>,
}

impl ThreadPool {
    /// `workers` threads, taking jobs from a queue of at most `queue` jobs.
    pub fn new(workers: usize, queue: usize) -> io::Result<ThreadPool> {
        // At most `queue` jobs wait; try_send says Full beyond that.
        // MISTAKE: one place too many ("plus the one being handed over"):
        // --queue 1 holds two waiting jobs.
        let (sender, receiver) = crossbeam_channel::bounded::<Job>(queue + 1);
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers {
            // Every worker has its own clone of the receiver: no Mutex, so
            // no lock a running job could hold.
            let receiver = receiver.clone();
            let h = std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    // Ends when every sender is gone (the pool dropped).
                    for job in receiver {
                        job();
                    }
                })?;
            handles.push(h);
        }
        Ok(ThreadPool {
            sender,
            _workers: handles,
        })
    }

    /// Hand `job` to a worker, or give it back at once if the queue is full.
    pub fn try_execute(&self, job: Job) -> Result<(), Job> {
        self.sender.try_send(job).map_err(|e| e.into_inner())
    }
}

fn handle(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let addr = flag("--addr").unwrap_or_else(|| "127.0.0.1:7108".into());
    let workers: usize = flag("--workers").and_then(|v| v.parse().ok()).unwrap_or(4);
    let queue: usize = flag("--queue").and_then(|v| v.parse().ok()).unwrap_or(16);

    let pool = ThreadPool::new(workers, queue)?;
    let listener = TcpListener::bind(&addr)?;
    println!("listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                eprintln!("accept failed: {e}");
                continue;
            }
        };
        // A second handle on the same socket, to answer "busy" if refused.
        let busy = stream.try_clone();
        let job: Job = Box::new(move || {
            if let Err(e) = handle(stream) {
                eprintln!("client: {e}");
            }
        });
        if let Err(refused) = pool.try_execute(job) {
            drop(refused); // closes the job's handle on the connection
            if let Ok(mut b) = busy {
                let _ = b.write_all(b"busy\n");
            } // ... and this closes the last one: the client sees EOF
        }
    }
    Ok(())
}
