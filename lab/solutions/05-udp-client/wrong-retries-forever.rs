//! Exercise 5: a UDP client that copes with loss (chapter 6).
//!
//! UDP keeps each datagram whole, and promises nothing else: a datagram may
//! be lost (and nobody tells the sender), duplicated, or overtaken. So a
//! client that needs an answer numbers its requests, waits with a timeout,
//! sends again, and checks that a reply answers THIS request.
//!
//! `ex05-udp-client --addr HOST:PORT --count N` sends "0 hello", "1 hello",
//! ... (sequence number first) and prints, per request, `seq N: <reply>` or
//! `seq N: lost`, then `A/N answered`. The server echoes each datagram.
//! The grader's server drops some datagrams and sends every reply twice.
//!
//! What counts as the answer to request N: a datagram from the server's
//! address AND port (a connected socket lets the kernel drop the others;
//! with `recv_from`, compare the source yourself) whose number is N. A
//! timeout is not an error: it means "send again", up to TRIES times.
//!
//! Fill in `ask`. Try it against the real server, which drops on request:
//!   cargo run -p udp-echo -- server --addr 127.0.0.1:7002 --drop 30 --seed 1
//!   cargo run --manifest-path lab/exercises/Cargo.toml -p ex05-udp-client -- --addr 127.0.0.1:7002 --count 10
//! Grade it: cargo run -p lab -- check 5

use std::io;
use std::net::UdpSocket;
use std::time::Duration;

/// How long to wait for a reply before sending again, and how many tries.
const TIMEOUT: Duration = Duration::from_millis(200);
const TRIES: u32 = 5;

/// Send request `seq` and return its reply, or `None` if every try was lost.
fn ask(socket: &UdpSocket, seq: u32) -> io::Result<Option<String>> {
    let request = format!("{seq} hello");
    let mut buf = [0u8; 1500];
    // recv gives up after TIMEOUT: on Unix it then returns WouldBlock.
    socket.set_read_timeout(Some(TIMEOUT))?;
    // MISTAKE: no limit on the tries: a request that is lost for good (the
    // server is down) keeps the client sending forever.
    let _ = TRIES;
    loop {
        socket.send(request.as_bytes())?;
        loop {
            match socket.recv(&mut buf) {
                Ok(n) => {
                    let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
                    // A late or duplicated reply to an earlier request: skip it.
                    if reply.split(' ').next() == Some(seq.to_string().as_str()) {
                        return Ok(Some(reply));
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let addr = flag("--addr").unwrap_or_else(|| "127.0.0.1:7002".into());
    let count: u32 = flag("--count").and_then(|c| c.parse().ok()).unwrap_or(5);

    let socket = UdpSocket::bind("127.0.0.1:0")?;
    // A connected UDP socket: send/recv talk to that one address only, and
    // datagrams from anyone else are dropped by the kernel.
    socket.connect(&addr)?;

    let mut answered = 0;
    for seq in 0..count {
        match ask(&socket, seq)? {
            Some(reply) => {
                answered += 1;
                println!("seq {seq}: {reply}");
            }
            None => println!("seq {seq}: lost"),
        }
    }
    println!("{answered}/{count} answered");
    Ok(())
}
