//! Exercise 18, a typical wrong solution: UDP datagrams cut at newlines.
//! MISTAKE: one datagram answered as several messages.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::thread;

/// A line longer than this is refused: the client decides how long a line
/// is, and a server must not buffer whatever it is sent.
const MAX_LINE: usize = 64 * 1024;

/// One TCP client: answer every line (the bytes before a b'\n') with its
/// length and "\n", until the client closes.
fn serve_tcp(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    // What has arrived and is not a whole line yet: it waits for the rest.
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        pending.extend_from_slice(&buf[..n]);
        // One read may hold several lines (粘包), or the end of one.
        while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
            writeln!(stream, "{pos}")?;
            pending.drain(..=pos);
        }
        if pending.len() > MAX_LINE {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
    }
}

/// Every datagram, from any sender: answer it with its length, as one
/// datagram to the address it came from.
fn serve_udp(socket: &UdpSocket) -> io::Result<()> {
    // 65,535 bytes: room for the largest datagram, so none is cut short
    // (recv_from drops what does not fit, silently).
    let mut buf = [0u8; 65536];
    loop {
        // One recv_from is one datagram, never part of one or two of them.
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            // A signal, or an ICMP error reported on the socket: go on.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(e) => return Err(e),
        };
        // MISTAKE: the datagram re-framed by newline, as a TCP stream is.
        for piece in buf[..n].split_inclusive(|&b| b == b'\n') {
            let line = piece.strip_suffix(b"\n").unwrap_or(piece);
            let _ = socket.send_to(line.len().to_string().as_bytes(), from);
        }
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
