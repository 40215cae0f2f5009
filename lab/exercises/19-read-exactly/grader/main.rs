//! The lab's grader driver for exercise 19: calls your `read_exactly` on
//! real TCP connections over 127.0.0.1, with a peer that sends in pieces,
//! closes early, goes silent or trickles, and reports each step to
//! `cargo run -p lab -- check 19`. Not yours to edit.

#[path = "../../grader_support.rs"]
mod support;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ex19_read_exactly::{ReadError, read_exactly};
use support::{call, fail, pass, show, step};

/// A connected pair on loopback: (your end, the peer's end).
fn pair() -> (TcpStream, TcpStream) {
    let made = (|| {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let peer = TcpStream::connect(l.local_addr()?)?;
        let (mine, _) = l.accept()?;
        peer.set_nodelay(true)?;
        Ok::<_, std::io::Error>((mine, peer))
    })();
    match made {
        Ok(p) => p,
        Err(e) => fail("a connection on 127.0.0.1 for the test", &e.to_string(), ""),
    }
}

fn res(r: &Result<Vec<u8>, ReadError>) -> String {
    match r {
        Ok(b) => format!("Ok({})", show(b)),
        Err(ReadError::Eof { got }) => format!("Err(Eof {{ got: {got} }})"),
        Err(ReadError::TimedOut { got }) => format!("Err(TimedOut {{ got: {got} }})"),
        Err(ReadError::Io(e)) => format!("Err(Io({:?}: {e}))", e.kind()),
    }
}

/// Call `read_exactly` in a thread; a call still running after `limit`
/// fails the step with `why_stuck`. Returns the result and how long it took.
fn call_within(
    mut mine: TcpStream,
    n: usize,
    timeout: Duration,
    limit: Duration,
    why_stuck: &str,
) -> (Result<Vec<u8>, ReadError>, Duration) {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    thread::spawn(move || {
        let r = call("read_exactly", || read_exactly(&mut mine, n, timeout));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(limit) {
        Ok(r) => (r, start.elapsed()),
        Err(_) => fail(
            &format!(
                "read_exactly to return within {} s (its timeout is {} ms)",
                limit.as_secs(),
                timeout.as_millis()
            ),
            &format!("it was still reading after {} s", limit.as_secs()),
            why_stuck,
        ),
    }
}

fn main() {
    step(
        "\"hello world\" (11 bytes) arrives in three pieces, 100 ms apart: read_exactly(11) returns all of it",
    );
    let (mine, mut peer) = pair();
    let sender = thread::spawn(move || {
        for piece in [&b"hel"[..], b"lo w", b"orld"] {
            if peer.write_all(piece).is_err() {
                break;
            }
            // Spacing only (not synchronisation): each piece its own segment.
            thread::sleep(Duration::from_millis(100));
        }
        peer
    });
    let (got, _) = call_within(
        mine,
        11,
        Duration::from_secs(5),
        Duration::from_secs(8),
        "read until n bytes have arrived, each read into the part of the buffer still empty",
    );
    let _peer = sender.join();
    if !matches!(&got, Ok(b) if b == b"hello world") {
        let why = match &got {
            Ok(b) if b.len() < 11 => {
                "one read returns what has arrived so far, here only a piece: loop, reading into \
                 &mut buf[got..], until all n bytes are in"
            }
            _ => "the 11 bytes, in order, nothing more",
        };
        fail("Ok(\"hello world\")", &res(&got), why);
    }

    step("5 bytes of 10, then the peer closes: Err(Eof { got: 5 })");
    let (mine, mut peer) = pair();
    if let Err(e) = peer.write_all(b"12345") {
        fail("the test's peer to send", &e.to_string(), "");
    }
    drop(peer);
    let (got, _) = call_within(
        mine,
        10,
        Duration::from_secs(5),
        Duration::from_secs(8),
        "read returns Ok(0) when the peer has closed: stop there with Eof",
    );
    if !matches!(got, Err(ReadError::Eof { got: 5 })) {
        let why = match &got {
            Err(ReadError::Eof { .. }) => {
                "say how many bytes arrived before the close: count them yourself (std's \
                 read_exact does not tell, its UnexpectedEof has no count)"
            }
            Err(ReadError::TimedOut { .. }) => {
                "the peer closed, it did not go quiet: read returning Ok(0) is the end, Eof"
            }
            _ => "read returning Ok(0) before n bytes: Err(Eof { got }) with the bytes so far",
        };
        fail("Err(Eof { got: 5 })", &res(&got), why);
    }

    step("3 bytes of 10, then silence: Err(TimedOut { got: 3 }) after the 1 s timeout");
    let (mine, mut peer) = pair();
    if let Err(e) = peer.write_all(b"abc") {
        fail("the test's peer to send", &e.to_string(), "");
    }
    let (got, _) = call_within(
        mine,
        10,
        Duration::from_secs(1),
        Duration::from_secs(6),
        "a read waits forever by default: set_read_timeout(Some(time left)) before each read",
    );
    drop(peer);
    if !matches!(got, Err(ReadError::TimedOut { got: 3 })) {
        let why = match &got {
            Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                "on Linux a read timeout comes back as ErrorKind::WouldBlock (EAGAIN), not \
                 TimedOut: match both and return TimedOut"
            }
            Err(ReadError::TimedOut { .. }) => "count the bytes that did arrive: got is 3",
            _ => "when the read timeout fires: Err(TimedOut { got }) with the bytes so far",
        };
        fail("Err(TimedOut { got: 3 })", &res(&got), why);
    }

    step("a byte every 200 ms, 100 wanted, a 1 s timeout: TimedOut after about 1 s");
    let (mine, mut peer) = pair();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let trickle = thread::spawn(move || {
        // Bounded: at most 40 bytes (8 s), and it stops when told to.
        for _ in 0..40 {
            if peer.write_all(b"x").is_err() {
                break;
            }
            if stop_rx.recv_timeout(Duration::from_millis(200)).is_ok() {
                break;
            }
        }
        peer
    });
    let (got, took) = call_within(
        mine,
        100,
        Duration::from_secs(1),
        Duration::from_secs(4),
        "the timeout is for the whole message: each byte arriving in time does not buy more; \
         set each read's timeout to the time left before one deadline",
    );
    let _ = stop_tx.send(());
    let _peer = trickle.join();
    if !matches!(got, Err(ReadError::TimedOut { got }) if (1..100).contains(&got))
        || took > Duration::from_secs(3)
    {
        fail(
            "Err(TimedOut { got: about 5 }) after about 1 s",
            &format!("{} after {} ms", res(&got), took.as_millis()),
            "one deadline for the whole message, Instant::now() + timeout; the time left before it \
             is each read's timeout",
        );
    }
    pass();
}
