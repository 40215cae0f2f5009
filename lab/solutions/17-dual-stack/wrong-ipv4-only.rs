//! Exercise 17, a typical wrong solution: listens on IPv4 only.
//! MISTAKE: binds 0.0.0.0, so IPv6 clients are refused.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// A listening socket on `addr`. For `[::]:PORT` it must take IPv4 and
/// IPv6 clients on every system, whatever the system's default.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    // MISTAKE: Python's habit, bind(("0.0.0.0", port)): an AF_INET socket
    // on every IPv4 address, whatever family --addr asked for.
    let addr = SocketAddr::from(([0, 0, 0, 0], addr.port()));
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    // What std's bind does too: a restarted server can rebind at once.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(socket.into())
}

/// The line for a client whose address accept() returned: "IPv4 ADDR:PORT"
/// or "IPv6 [ADDR]:PORT", the family the client really used.
fn greeting(peer: SocketAddr) -> String {
    // An IPv4 client of a dual-stack socket shows as ::ffff:a.b.c.d;
    // to_canonical turns that back into the IPv4 address it is.
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
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
