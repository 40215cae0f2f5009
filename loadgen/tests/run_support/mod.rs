//! In-process echo servers for `loadgen`'s own tests: a correct one, and
//! faulty ones that corrupt a byte, drop a frame or close early, so the
//! tests can show that every such fault is caught.
//!
//! Blocking std sockets and a thread per connection: the simplest server
//! that can be trusted, and independent of the tokio code under test.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{FramedStream, Framing};

/// What the test server does wrong.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    None,
    /// Flip one bit of the Nth echoed frame (counted over the whole server).
    CorruptFrame(u64),
    /// Never echo the Nth frame.
    DropFrame(u64),
    /// Close each connection after echoing N frames.
    CloseAfter(u64),
}

/// A running test server; counts frames it saw.
pub struct TestServer {
    pub addr: SocketAddr,
    pub frames: Arc<AtomicU64>,
    pub conns: Arc<AtomicU64>,
}

pub fn tcp_server(framing: Framing, fault: Fault) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let frames = Arc::new(AtomicU64::new(0));
    let conns = Arc::new(AtomicU64::new(0));
    let (f2, c2) = (frames.clone(), conns.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            c2.fetch_add(1, Ordering::Relaxed);
            let frames = f2.clone();
            std::thread::spawn(move || serve(stream, framing, fault, &frames));
        }
    });
    TestServer {
        addr,
        frames,
        conns,
    }
}

fn serve(mut stream: TcpStream, framing: Framing, fault: Fault, frames: &AtomicU64) {
    // A test must never hang: a connection idle for 10 s is dropped.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    if framing == Framing::Raw {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let k = frames.fetch_add(1, Ordering::Relaxed) + 1;
            let chunk = &mut buf[..n];
            match fault {
                Fault::CorruptFrame(c) if c == k => chunk[n / 2] ^= 0x20,
                Fault::DropFrame(d) if d == k => continue,
                Fault::CloseAfter(c) if k > c => return,
                _ => {}
            }
            if stream.write_all(chunk).is_err() {
                return;
            }
        }
    }
    let mut framed = FramedStream::new(stream, framing, 1 << 20);
    let mut served = 0u64;
    loop {
        let frame = match framed.read_frame() {
            Ok(Some(f)) => f,
            _ => return,
        };
        let k = frames.fetch_add(1, Ordering::Relaxed) + 1;
        let mut payload = frame.to_vec();
        match fault {
            Fault::CorruptFrame(c) if c == k => {
                let i = payload.len() / 2;
                payload[i] ^= 0x20;
            }
            Fault::DropFrame(d) if d == k => continue,
            Fault::CloseAfter(c) if served >= c => return,
            _ => {}
        }
        served += 1;
        if framed.write_frame(&payload).is_err() {
            return;
        }
    }
}

/// A UDP echo server; `drop_nth` (1-based) datagrams are never echoed.
pub fn udp_server(drop_nth: Option<u64>) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let mut k = 0u64;
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                return;
            };
            k += 1;
            if Some(k) == drop_nth {
                continue;
            }
            let _ = sock.send_to(&buf[..n], peer);
        }
    });
    addr
}

/// An address nobody listens on (bound, then closed).
pub fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Wait for `child` at most `limit` and collect its output. stdout and
/// stderr (whichever are piped) are drained on threads of their own, so a
/// chatty child never blocks on a full pipe, and no read waits without a
/// deadline: past `limit` the child is killed and the test fails.
pub fn output_within(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    use std::time::Instant;
    fn drain<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    }
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child still running after {limit:?}; killed");
        }
        // std has no wait-with-timeout for a child: poll its exit.
        std::thread::sleep(Duration::from_millis(10));
    };
    // The child has exited: its pipes reach EOF (unless it left a
    // grandchild holding them, which none of ours does).
    std::process::Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// The first line `r` yields, within `limit` (read on a thread; the test
/// fails past the deadline instead of hanging).
pub fn first_line_within<R: Read + Send + 'static>(r: R, limit: Duration) -> (String, R) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut r = r;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while let Ok(1) = r.read(&mut byte) {
            if byte[0] == b'\n' {
                break;
            }
            line.push(byte[0]);
        }
        let _ = tx.send((String::from_utf8_lossy(&line).into_owned(), r));
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("no line within {limit:?}"))
}

/// Is `python3` installed? (Asked with a deadline like every other child.)
pub fn python3_available() -> bool {
    use std::process::{Command, Stdio};
    match Command::new("python3")
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => output_within(child, Duration::from_secs(20))
            .status
            .success(),
        Err(_) => false,
    }
}
