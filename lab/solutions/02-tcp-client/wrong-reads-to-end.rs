//! Exercise 2: a TCP client that fails well (chapter 5).
//!
//! `ex02-tcp-client --addr HOST:PORT MESSAGE` sends MESSAGE and a newline to a
//! line echo server, prints the line that comes back, and exits 0. This
//! starter works when all goes well. Make it fail well:
//! - nothing listening: ONE line on stderr that says so, exit status 1 (not a
//!   panic and a backtrace hint: that is a bug report, not an error message);
//! - a server that accepts and never answers: give up after a few seconds
//!   with one line that says the read timed out, exit status 1;
//! - a server whose connect never completes (its accept queue is full, so
//!   the kernel drops our SYN): give up after a few seconds too, with one
//!   line that says the connection timed out, exit status 1.
//!
//! Run it against a real server (two terminals):
//!   cargo run -p tcp-echo -- server --addr 127.0.0.1:7001
//!   cargo run --manifest-path lab/exercises/Cargo.toml -p ex02-tcp-client -- --addr 127.0.0.1:7001 hello
//! and with nothing listening: stop the server and run the client again.
//! Grade it: cargo run -p lab -- check 2

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};

/// Send `message` + "\n", return the line the server sends back.
fn run(addr: SocketAddr, message: &str) -> io::Result<String> {
    // connect(): the kernel's three-way handshake; refused = RST from the peer.
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    // Without this a read waits forever for a server that never answers.
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    stream.write_all(message.as_bytes())?;
    stream.write_all(b"\n")?;
    let mut reply = String::new();
    // read_line loops on read() until it sees '\n' (or EOF).
    // MISTAKE: read_to_string reads until the server closes; an echo server
    // keeps the connection open after its reply, so this waits until the
    // read timeout turns a correct answer into an error.
    let _ = BufReader::new(io::empty()).read_line(&mut String::new());
    io::Read::read_to_string(&mut stream, &mut reply)?;
    Ok(reply)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr: SocketAddr = match args.iter().position(|a| a == "--addr") {
        Some(i) => args.get(i + 1).and_then(|a| a.parse().ok()),
        None => "127.0.0.1:7001".parse().ok(),
    }
    .unwrap_or_else(|| {
        eprintln!("usage: ex02-tcp-client --addr HOST:PORT MESSAGE");
        std::process::exit(2)
    });
    let message = args.last().cloned().unwrap_or_default();

    match run(addr, &message) {
        Ok(reply) => print!("{reply}"),
        Err(e) => {
            // One line for the user, no panic, no backtrace.
            eprintln!("error: {addr}: {}", describe(&e));
            std::process::exit(1);
        }
    }
}

const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Say what happened in words. On Unix a read timeout is EAGAIN, which std
/// reports as WouldBlock ("Resource temporarily unavailable"), not TimedOut.
fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused (is the server running?)".into(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!(
                "timed out after {} s waiting for the server",
                TIMEOUT.as_secs()
            )
        }
        _ => e.to_string(),
    }
}
