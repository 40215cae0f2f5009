//! Exercise 17: one socket for IPv4 and IPv6, and who is calling (chapter 2,
//! what a socket is).
//!
//! `ex17-dual-stack --addr [::]:PORT` listens, and answers every client with
//! one line naming the family and address it came from, then closes:
//!
//!   IPv4 127.0.0.1:40312      (a client that connected to 127.0.0.1)
//!   IPv6 [::1]:51544          (a client that connected to ::1)
//!
//! A socket is made for one address family: `socket(AF_INET, ...)` speaks
//! IPv4, `socket(AF_INET6, ...)` IPv6. One AF_INET6 socket bound to `[::]`
//! also takes IPv4 clients when its IPV6_V6ONLY option is off ("dual
//! stack"); Linux's default is off (the sysctl net.ipv6.bindv6only), but
//! Windows and the BSDs default to on, so a server that wants both says so:
//! with socket2, `Socket::new(Domain::IPV6, Type::STREAM, None)`,
//! `set_only_v6(false)`, then bind and listen. The IPv4 client then appears
//! as an IPv4-mapped IPv6 address, `[::ffff:127.0.0.1]:40312`: say what it
//! really is (`IpAddr::to_canonical`).
//!
//! Fill in `listen` and `greeting`. Try it (two terminals):
//!   cargo run --manifest-path lab/exercises/Cargo.toml -p ex17-dual-stack -- --addr [::]:7117
//!   nc -4 127.0.0.1 7117   and   nc -6 ::1 7117
//! Grade it: cargo run -p lab -- check 17

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};

/// A listening socket on `addr`. For `[::]:PORT` it must take IPv4 and
/// IPv6 clients on every system, whatever the system's default.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    // Your code here. std's bind leaves IPV6_V6ONLY at the system's default.
    TcpListener::bind(addr)
}

/// The line for a client whose address accept() returned: "IPv4 ADDR:PORT"
/// or "IPv6 [ADDR]:PORT", the family the client really used.
fn greeting(peer: SocketAddr) -> String {
    // Your code here.
    let _ = peer;
    "hello".to_string()
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr = match args.iter().position(|a| a == "--addr") {
        Some(i) => args.get(i + 1).and_then(|a| a.parse().ok()),
        None => "[::]:7117".parse().ok(),
    }
    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "usage: --addr HOST:PORT"))?;
    let listener = listen(addr)?;
    println!("listening on {}", listener.local_addr()?);
    for conn in listener.incoming() {
        match conn {
            Ok(mut stream) => {
                // peer_addr is getpeername(2): the address accept() filled in.
                let line = match stream.peer_addr() {
                    Ok(peer) => greeting(peer),
                    Err(e) => format!("unknown peer: {e}"),
                };
                if let Err(e) = writeln!(stream, "{line}") {
                    eprintln!("write: {e}");
                }
            }
            // A client that reset while queued, or no file descriptors left:
            // that client is lost, the server goes on.
            Err(e) => eprintln!("accept: {e}"),
        }
    }
    Ok(())
}
