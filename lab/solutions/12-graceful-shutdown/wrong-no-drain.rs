//! Exercise 12: graceful shutdown that loses nothing (the workspace's
//! shutdown contract, for one blocking line-echo server).
//!
//! On SIGTERM (or Ctrl-C) a server should stop accepting and then, for the
//! client it is serving:
//! 1. echo every complete line already received: the ones in our buffer AND
//!    the ones still waiting in the kernel's receive queue (read them without
//!    waiting for new bytes: a non-blocking read until WouldBlock);
//! 2. send FIN (`stream.shutdown(std::net::Shutdown::Write)`): "no more from
//!    me";
//! 3. read and throw away until the client's FIN (read returns 0) or the
//!    grace deadline, so that close() never finds unread input: closing a
//!    socket with unread input sends a RST, and the client may lose echoes
//!    still in flight;
//! 4. all of it within `--grace-ms` from the signal, whatever the client does.
//!
//! The accept loop and the echo loop are done. Fill in `finish`.
//!
//! Run:   cargo run --manifest-path lab/exercises/Cargo.toml -p ex12-graceful-shutdown
//! Then:  nc 127.0.0.1 7112 in a second terminal, type, and Ctrl-C the server.
//! Grade: cargo run -p lab -- check 12

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often a blocked read or accept looks at the shutdown flag.
const TICK: Duration = Duration::from_millis(50);

fn is_timeout(e: &io::Error) -> bool {
    // A read timeout is WouldBlock (EAGAIN) on Unix, TimedOut elsewhere.
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Write back every complete line in `pending`; keep a partial last line.
fn echo_lines(stream: &mut TcpStream, pending: &mut Vec<u8>) -> io::Result<()> {
    while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
        stream.write_all(&pending[..=pos])?;
        pending.drain(..=pos);
    }
    Ok(())
}

/// Shutdown was asked while serving this client. `pending` holds bytes
/// read but not echoed (at most a partial line); the kernel may hold more.
fn finish(stream: &mut TcpStream, pending: &mut Vec<u8>, grace: Duration) -> io::Result<()> {
    let deadline = Instant::now() + grace;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    // 1. What the kernel already holds, without waiting for new bytes.
    let mut buf = [0u8; 4096];
    stream.set_nonblocking(true)?;
    let mut peer_done = false;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => {
                peer_done = true;
                break;
            }
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    stream.set_nonblocking(false)?;
    // (The receive queue is bounded by the socket's buffer, a few MiB at
    // most; the workspace's servers also write as they go.)
    // The echoes, each write bounded by the time left.
    stream.set_write_timeout(Some(left()))?;
    echo_lines(stream, pending)?;
    // 2. FIN: the client's read returns 0 after the last echo.
    stream.shutdown(Shutdown::Write)?;
    // 3. Read and discard until the client's FIN or the deadline, so close()
    // finds no unread input (which would send a RST).
    // MISTAKE: no step 3: the stream is closed while the client is still
    // sending, so its next bytes find no reader and the kernel answers RST.
    let _ = (peer_done, deadline);
    Ok(())
}

/// Serve one client until it leaves or shutdown is asked.
fn serve(mut stream: TcpStream, stop: &AtomicBool, grace: Duration) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(TICK))?;
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if stop.load(Ordering::Relaxed) {
            return finish(&mut stream, &mut pending, grace);
        }
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                echo_lines(&mut stream, &mut pending)?;
            }
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
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
    let addr = flag("--addr").unwrap_or_else(|| "127.0.0.1:7112".into());
    let grace = Duration::from_millis(
        flag("--grace-ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(5000),
    );

    // The signal handler only sets this flag; the loops look at it.
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))?;

    let listener = TcpListener::bind(&addr)?;
    // A blocking accept() would not notice the flag: poll a non-blocking one.
    listener.set_nonblocking(true)?;
    println!("listening on {}", listener.local_addr()?);
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Err(e) = serve(stream, &stop, grace) {
                    eprintln!("{peer}: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(TICK),
            Err(e) => {
                eprintln!("accept failed: {e}");
                std::thread::sleep(TICK);
            }
        }
    }
    // Dropping the listener closes it: connections still in its backlog,
    // never accepted, are reset by the kernel.
    drop(listener);
    eprintln!("stopped after {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
