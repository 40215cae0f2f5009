//! The course's Python UDP echo server, in Rust, std only. No connection,
//! no accept: one socket, and each `recv_from` is one whole datagram with
//! the address to answer. `src/server.rs` adds loss simulation, the
//! reflection guard, counters and shutdown on top of this.
//!
//! Run it (two terminals):
//!   cargo run -p udp-echo --example bare_udp_echo          # listens on 127.0.0.1:8081
//!   nc -u 127.0.0.1 8081                          # each line is one datagram
//! What to watch: there is no "client connected" or "client left": UDP has
//! no connection, so the server cannot tell when a client is gone.
//!
//! | Python                                   | Rust                         | syscalls        |
//! |------------------------------------------|------------------------------|-----------------|
//! | `s = socket.socket(AF_INET, SOCK_DGRAM)` + `s.bind(('127.0.0.1', 8081))` | `UdpSocket::bind("127.0.0.1:8081")` | `socket`, `bind` |
//! | `data, addr = s.recvfrom(1024)`          | `socket.recv_from(&mut buf)` | `recvfrom`      |
//! | `s.sendto(data, addr)`                   | `socket.send_to(&buf[..n], src)` | `sendto`    |
//!
//! The trap: `recvfrom(1024)` CUTS a longer datagram to 1024 bytes and the
//! rest is gone. A UDP payload can be up to 65,507 bytes over IPv4, so the
//! buffer here is 64 KiB.

// ANCHOR: bare
use std::net::UdpSocket;

fn main() -> std::io::Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:8081")?;
    println!("listening on {}", socket.local_addr()?);
    let mut buf = vec![0u8; 65_536];
    loop {
        // One datagram, whole (or cut to the buffer), and who sent it.
        let (n, src) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("recv_from: {e}"); // e.g. an ICMP error: keep serving
                continue;
            }
        };
        // A real server checks `src` first: never answer a port below 1024
        // (the reflection guard, src/guard.rs; lab exercise 6).
        if let Err(e) = socket.send_to(&buf[..n], src) {
            eprintln!("send_to {src}: {e}");
        }
    }
}
// ANCHOR_END: bare
