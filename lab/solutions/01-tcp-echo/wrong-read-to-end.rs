//! Exercise 1: the bare TCP echo server (chapter 5).
//!
//! The course's Python program, in Rust: `socket()` + `bind()` + `listen()`
//! (all three inside `TcpListener::bind`), `accept()` in a loop, then
//! `recv`/`send` until the client closes. `main` is done; fill in `handle`.
//!
//! Run it:   cargo run --manifest-path lab/exercises/Cargo.toml -p ex01-tcp-echo
//! Talk to it from a second terminal: nc 127.0.0.1 7101
//! Grade it: cargo run -p lab -- check 1
//!
//! What `handle` must do:
//! - `read` into the buffer. It returns how many bytes arrived: `Ok(n)`,
//!   anything from 1 to the buffer's size, NOT one "message" (TCP is a stream).
//! - `Ok(0)` means end of stream: the client closed its side (FIN). Return.
//! - Write back exactly those `n` bytes, all of them (`write_all`).
//!
//! And the server as a whole: an error ends one client, never the server.
//! That includes a failed `accept` (out of file descriptors, EMFILE): log
//! it and accept again; the grader checks it by lowering your process's
//! descriptor limit while it runs.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};

/// Echo every byte the client sends until it closes its side.
fn handle(mut stream: TcpStream) -> io::Result<()> {
    // MISTAKE: read_to_end returns only at end of stream (the client's FIN),
    // so nothing is echoed while the client waits for its echo.
    let mut all = Vec::new();
    stream.read_to_end(&mut all)?;
    stream.write_all(&all)?;
    Ok(())
}

fn main() -> io::Result<()> {
    // `--addr HOST:PORT` (the lab's grader passes 127.0.0.1:0: any free port).
    let args: Vec<String> = std::env::args().collect();
    let addr = match args.iter().position(|a| a == "--addr") {
        Some(i) => args.get(i + 1).cloned().unwrap_or_default(),
        None => "127.0.0.1:7101".to_string(),
    };
    let listener = TcpListener::bind(&addr)?;
    // The grader reads this line to learn the port the kernel chose.
    println!("listening on {}", listener.local_addr()?);
    // One client at a time: accept, serve until it leaves, accept the next.
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                // A client's error ends that client, never the server.
                if let Err(e) = handle(stream) {
                    eprintln!("client error: {e}");
                }
            }
            Err(e) => eprintln!("accept failed: {e}"),
        }
    }
    Ok(())
}
