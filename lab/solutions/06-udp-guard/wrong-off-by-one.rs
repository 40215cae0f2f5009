//! Exercise 6: a UDP echo server with a reflection guard (chapter 6).
//!
//! UDP has no handshake, so a datagram's source address is whatever the
//! sender wrote in it. Forge a datagram "from" another host's echo port (7)
//! or chargen port (19), send it to an echo server, and the two services
//! answer each other forever (CERT CA-1996-01). Well-known services live
//! below port 1024 and real clients send from high ephemeral ports, so an
//! echo server should never answer a source port below 1024.
//!
//! `ex06-udp-guard --addr HOST:PORT [--guard-below PORT]` echoes every
//! datagram except those from a source port below `--guard-below` (default
//! 1024; the grader raises it, as it cannot send from a port below 1024
//! without root): port `guard - 1` is refused, port `guard` itself and
//! every port above it are answered (port 0, which no real sender has, is
//! refused too). Fill in `refuse`.
//!
//! Run it:  cargo run --manifest-path lab/exercises/Cargo.toml -p ex06-udp-guard
//! Talk:    nc -u 127.0.0.1 7106     (type a line: it comes back)
//! Grade:   cargo run -p lab -- check 6

use std::io;
use std::net::{SocketAddr, UdpSocket};

/// Should a datagram from `src` go unanswered?
fn refuse(src: SocketAddr, guard_below: u16) -> bool {
    // Port 0 cannot be a real sender; low ports are other services.
    // MISTAKE: <= refuses the guard port itself, the first port that is
    // supposed to be answered ("below 1024" does not include 1024).
    src.port() <= guard_below || src.port() == 0
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let addr = flag("--addr").unwrap_or_else(|| "127.0.0.1:7106".into());
    let guard_below: u16 = flag("--guard-below")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1024);

    let socket = UdpSocket::bind(&addr)?;
    println!("listening on {}", socket.local_addr()?);
    // 65,507 bytes is the largest UDP payload over IPv4; a smaller buffer
    // would silently cut a larger datagram (recv_from truncates).
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, src) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("recv_from: {e}");
                continue;
            }
        };
        if refuse(src, guard_below) {
            eprintln!("refused {n} bytes from {src}");
            continue;
        }
        if let Err(e) = socket.send_to(&buf[..n], src) {
            eprintln!("send_to {src}: {e}");
        }
    }
}
