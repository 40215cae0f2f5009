//! Exercise 18: the same messages over TCP and over UDP (chapter 4, TCP or
//! UDP).
//!
//! `ex18-tcp-vs-udp --addr 127.0.0.1:PORT` listens for TCP on ADDR and
//! receives UDP datagrams on the same address and port. It answers every
//! message with the message's length in bytes, in decimal:
//! - over TCP a message is a line: "three\n" is answered "5\n";
//! - over UDP a message is one datagram, whatever bytes it holds (newlines
//!   too, or none at all): the datagram "a\nb\n" is answered with one
//!   datagram "4", the empty datagram with "0".
//!
//! TCP carries a stream of bytes, not messages: three lines written at once
//! can come out of one read (粘包), one line can take three reads (拆包), so
//! the lines are found in what has arrived so far, and a piece of a line
//! waits for the rest. UDP keeps each datagram whole and apart: one
//! `recv_from` is exactly one datagram, and a read of 0 bytes is an empty
//! datagram, not the end of anything (UDP has no connection to end).
//!
//! Fill in `serve_tcp` and `serve_udp`. Try it (two terminals):
//!   cargo run --manifest-path lab/exercises/Cargo.toml -p ex18-tcp-vs-udp -- --addr 127.0.0.1:7118
//!   printf 'one\ntwo\nthree\n' | nc -q1 127.0.0.1 7118     and     printf 'a\nb\n' | nc -u -q1 127.0.0.1 7118
//! Grade it: cargo run -p lab -- check 18

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::thread;

/// A line longer than this is refused: the client decides how long a line
/// is, and a server must not buffer whatever it is sent.
const MAX_LINE: usize = 64 * 1024;

/// One TCP client: answer every line (the bytes before a b'\n') with its
/// length and "\n", until the client closes.
fn serve_tcp(mut stream: TcpStream) -> io::Result<()> {
    // Your code here. This reads once and answers nothing.
    let mut buf = [0u8; 4096];
    let _ = stream.read(&mut buf)?;
    let _ = stream.write_all(b"");
    let _ = MAX_LINE;
    Ok(())
}

/// Every datagram, from any sender: answer it with its length, as one
/// datagram to the address it came from.
fn serve_udp(socket: &UdpSocket) -> io::Result<()> {
    // Your code here. This receives and never answers.
    let mut buf = [0u8; 65536];
    loop {
        let _ = socket.recv_from(&mut buf)?;
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr: SocketAddr = match args.iter().position(|a| a == "--addr") {
        Some(i) => args.get(i + 1).and_then(|a| a.parse().ok()),
        None => "127.0.0.1:7118".parse().ok(),
    }
    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "usage: --addr HOST:PORT"))?;
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    // TCP and UDP ports are separate spaces: the same number can be taken
    // by both, and here is, so one address serves both protocols.
    let udp = UdpSocket::bind(local)?;
    thread::spawn(move || {
        if let Err(e) = serve_udp(&udp) {
            eprintln!("udp: {e}");
        }
    });
    println!("listening on {local}");
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                thread::spawn(move || {
                    if let Err(e) = serve_tcp(stream) {
                        eprintln!("tcp client: {e}");
                    }
                });
            }
            Err(e) => eprintln!("accept: {e}"),
        }
    }
    Ok(())
}
