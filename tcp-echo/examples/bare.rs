//! The course's first Python socket program, in Rust, std only: the
//! smallest correct iterative TCP echo server. Everything `src/server.rs`
//! adds (framing, limits, idle timeout, shutdown, logs) comes on top of this.
//!
//! Run it (two terminals):
//!   cargo run -p tcp-echo --example bare_tcp_echo          # listens on 127.0.0.1:8080
//!   nc 127.0.0.1 8080                             # type lines: they come back
//! What to watch: a second `nc` gets nothing until the first one quits (one
//! client at a time), and Ctrl-D in `nc` (its FIN) ends that client's loop.
//!
//! | Python                               | Rust                          | syscalls                       |
//! |--------------------------------------|-------------------------------|--------------------------------|
//! | `s = socket.socket(AF_INET, SOCK_STREAM)` + `s.bind(('127.0.0.1', 8080))` + `s.listen(5)` | `TcpListener::bind("127.0.0.1:8080")` | `socket`, `setsockopt(SO_REUSEADDR)`, `bind`, `listen(128)` |
//! | `conn, addr = s.accept()`            | `listener.accept()`           | `accept4`                      |
//! | `data = conn.recv(1024)`             | `stream.read(&mut buf)`       | `recvfrom` / `read`            |
//! | `if not data: break`                 | `Ok(0) => break`              | read returned 0: the peer's FIN |
//! | `conn.sendall(data)`                 | `stream.write_all(&buf[..n])` | `sendto` / `write`, looped     |
//! | `conn.close()`                       | `drop(stream)` (end of scope) | `close`                        |

// ANCHOR: bare
use std::io::{Read, Write};
use std::net::TcpListener;

fn main() -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:8080")?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (mut stream, peer) = listener.accept()?;
        println!("{peer} connected");
        let mut buf = [0u8; 1024];
        loop {
            // Whatever has arrived, 1..=1024 bytes: not "a message".
            let n = match stream.read(&mut buf) {
                Ok(0) => break, // the client closed its side
                Ok(n) => n,
                Err(e) => {
                    eprintln!("{peer}: {e}"); // a reset ends this client only
                    break;
                }
            };
            // `write` (Python's `send`) may write less than asked; `write_all` loops.
            if let Err(e) = stream.write_all(&buf[..n]) {
                eprintln!("{peer}: {e}");
                break;
            }
        }
        println!("{peer} left"); // `stream` is dropped here: close()
    }
}
// ANCHOR_END: bare
