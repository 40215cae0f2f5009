//! Exercise 13: CPU work off the event loop, with rayon (chapter 9).
//!
//! An async runtime runs many connections on few threads; here, one (a
//! `current_thread` runtime, like asyncio's single loop). While one task
//! computes, no other task on that thread runs: every other client waits.
//! `.await` only gives the thread back at an await point, and a loop of
//! arithmetic has none. So CPU-heavy work goes to a thread pool made for it
//! (rayon), and the task awaits the answer without blocking the loop:
//! `rayon::spawn` + a `tokio::sync::oneshot` channel.
//!
//! Protocol: a line `work MS` is answered at once with `started`, then with
//! `done X` when `MS` milliseconds of CPU work are done, X being the value
//! `cpu_work(MS)` returned; any other line is echoed. Fill in `offload`.
//!
//! Run:   cargo run --manifest-path lab/exercises/Cargo.toml -p ex13-rayon-offload
//! Then:  nc 127.0.0.1 7113 and type `work 5000`; in a second nc, type `hi`:
//!        is it echoed at once, or after five seconds?
//! Grade: cargo run -p lab -- check 13

use std::io;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The stand-in for real CPU work (parsing, compression, crypto): `ms`
/// milliseconds of arithmetic, with no await point anywhere inside.
fn cpu_work(ms: u64) -> u64 {
    let start = Instant::now();
    let mut x: u64 = 1;
    while start.elapsed() < Duration::from_millis(ms) {
        for _ in 0..1000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
        }
    }
    x
}

/// Run `cpu_work(ms)` without holding up the loop's thread, and return its result.
async fn offload(ms: u64) -> u64 {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A rayon worker computes; the loop thread goes on serving others.
    rayon::spawn(move || {
        // The receiver may be gone (the client left): nothing to do then.
        let _ = tx.send(cpu_work(ms));
    });
    // Awaiting a oneshot gives the thread back until the answer is in.
    // Err only if the worker dropped the sender without sending (a panic).
    rx.await.unwrap_or(0)
}

async fn handle(stream: TcpStream) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(ms) = line
            .strip_prefix("work ")
            .and_then(|m| m.trim().parse::<u64>().ok())
        {
            write.write_all(b"started\n").await?;
            let x = offload(ms.min(60_000)).await;
            write.write_all(format!("done {x}\n").as_bytes()).await?;
        } else {
            write.write_all(format!("{line}\n").as_bytes()).await?;
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr = match args.iter().position(|a| a == "--addr") {
        Some(i) => args.get(i + 1).cloned().unwrap_or_default(),
        None => "127.0.0.1:7113".to_string(),
    };
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("accept failed: {e}");
                continue;
            }
        };
        tokio::spawn(async move {
            if let Err(e) = handle(stream).await {
                eprintln!("{peer}: {e}");
            }
        });
    }
}
