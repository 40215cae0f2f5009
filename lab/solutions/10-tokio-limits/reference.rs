//! Exercise 10: a tokio echo server with an idle timeout and a connection
//! limit (chapter 9).
//!
//! The course's asyncio server, `await reader.read(100)` then
//! `writer.write(data)`, has two holes every real server must close:
//! - a client that connects and sends nothing holds its connection (a file
//!   descriptor, a task, a buffer) forever: close it after `--idle-timeout-ms`
//!   with nothing received (the timer restarts after every read);
//! - any number of clients may connect: beyond `--max-conns`, answer
//!   "busy\n" and close at once.
//!
//! Fill in `handle` (the timeout) and the marked part of `main` (the limit,
//! with the `tokio::sync::Semaphore` already made there).
//!
//! Run:   cargo run --manifest-path lab/exercises/Cargo.toml -p ex10-tokio-limits -- --idle-timeout-ms 5000 --max-conns 2
//! Then:  three `nc 127.0.0.1 7110`: the third gets "busy"; leave one quiet for 5 s.
//! Grade: cargo run -p lab -- check 10

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Echo until the client closes, or until it has sent nothing for `idle`.
async fn handle(mut stream: TcpStream, idle: Duration) -> io::Result<()> {
    let mut buf = vec![0u8; 4096];
    loop {
        // A fresh timer for every read: `idle` means "nothing received for
        // this long", so it restarts each time bytes arrive.
        let n = match tokio::time::timeout(idle, stream.read(&mut buf)).await {
            Ok(read) => read?,
            Err(_elapsed) => {
                eprintln!("idle for {} ms: closing", idle.as_millis());
                return Ok(()); // dropping the stream sends FIN
            }
        };
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let addr = flag("--addr").unwrap_or_else(|| "127.0.0.1:7110".into());
    let idle = Duration::from_millis(
        flag("--idle-timeout-ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(30_000),
    );
    let max_conns: usize = flag("--max-conns")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);

    let listener = TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    // One permit per connection we are willing to serve at once.
    let permits = Arc::new(Semaphore::new(max_conns));
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // (The workspace's servers back off here on EMFILE:
                // common::net::accept_policy.)
                eprintln!("accept failed: {e}");
                continue;
            }
        };
        // try_acquire_owned: no waiting; an owned permit can move into the task.
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Five bytes into an empty send buffer: this never waits.
                let _ = stream.write_all(b"busy\n").await;
                continue; // the stream is dropped here: closed
            }
        };
        tokio::spawn(async move {
            // Held until the task ends, then the next client may come in.
            let _permit = permit;
            if let Err(e) = handle(stream, idle).await {
                eprintln!("{peer}: {e}");
            }
        });
    }
}
