//! Exercise 17, a typical wrong solution: IPv4 clients called IPv6.
//! MISTAKE: the IPv4-mapped address ::ffff:127.0.0.1 is taken at face value.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// A listening socket on `addr`. For `[::]:PORT` it must take IPv4 and
/// IPv6 clients on every system, whatever the system's default.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // Before bind: the kernel decides at bind time which families the
        // port is taken for (both, with V6ONLY off).
        socket.set_only_v6(false)?;
    }
    // What std's bind does too: a restarted server can rebind at once.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(socket.into())
}

/// The line for a client whose address accept() returned: "IPv4 ADDR:PORT"
/// or "IPv6 [ADDR]:PORT", the family the client really used.
fn greeting(peer: SocketAddr) -> String {
    // MISTAKE: no to_canonical: an IPv4 client shows as ::ffff:127.0.0.1
    // and is greeted as IPv6.
    let family = if peer.is_ipv4() { "IPv4" } else { "IPv6" };
    format!("{family} {peer}")
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
