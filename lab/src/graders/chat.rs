//! Grader for exercise 15 (the chat chapter): the tokio room with bounded
//! per-member queues. Three members over real sockets; one of them stops
//! reading while another floods the room; the grader watches the two
//! things a slow member must never do: hold up the others, or make the
//! server keep everything for it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{Check, End, Run, Server, connect, expect_bytes, fail, read_upto, send};

const WELCOME: &[u8] = b"Welcome to budgetchat! What shall I call you?\n";
/// What alice says while slow does not read: well over what the kernel
/// buffers for one socket (a few MiB), so a bounded queue must drop.
const FLOOD: usize = 16 << 20;
const MARKER: &[u8] = b"[alice] marker\n";
const LINE: usize = 1000;

fn join(server: &Server, name: &str) -> Result<TcpStream, crate::harness::Fail> {
    let mut s = connect(server.addr)?;
    expect_bytes(
        &mut s,
        WELCOME,
        "a new connection is greeted with the welcome line first",
    )?;
    send(&mut s, format!("{name}\n").as_bytes())?;
    Ok(s)
}

pub fn ex15_tokio_room(run: &mut Run) -> Check {
    let server = Server::start(run, &["--queue", "16"])?;

    run.step("alice, bob and slow connect, read the welcome, send their names");
    let mut alice = join(&server, "alice")?;
    let mut bob = join(&server, "bob")?;
    let mut slow = join(&server, "slow")?;

    run.step("alice says hello: bob and slow each receive \"[alice] hello\\n\"");
    // The names are sent; give the server a moment's worth of a round trip
    // by having bob's and slow's joins confirmed through alice's line.
    send(&mut alice, b"hello\n")?;
    let why = "broadcast must offer the line to every other member's queue (try_send), and each \
               member's own task must write what its queue receives to its socket";
    expect_bytes(&mut bob, b"[alice] hello\n", why)?;
    expect_bytes(&mut slow, b"[alice] hello\n", why)?;

    run.step(format!(
        "slow stops reading; alice says {} MiB in {LINE}-byte lines while bob keeps reading",
        FLOOD >> 20
    ));
    let lines = FLOOD / (LINE + 1);
    let text = "x".repeat(LINE - 10);
    let mut w = alice
        .try_clone()
        .map_err(|e| fail("a socket handle", e.to_string(), ""))?;
    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        let mut r = Ok(());
        for i in 0..lines {
            if let Err(e) = w.write_all(format!("{i:09} {text}\n").as_bytes()) {
                r = Err(e.to_string());
                break;
            }
        }
        let _ = done_tx.send(r);
    });
    // bob reads everything, in a thread, and raises a flag at the marker.
    let seen_marker = Arc::new(AtomicBool::new(false));
    let mut bob_r = bob
        .try_clone()
        .map_err(|e| fail("a socket handle", e.to_string(), ""))?;
    let flag = seen_marker.clone();
    thread::spawn(move || {
        let _ = bob_r.set_read_timeout(Some(Duration::from_secs(60)));
        let mut chunk = vec![0u8; 64 * 1024];
        let mut tail = Vec::new();
        while let Ok(n) = bob_r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&chunk[..n]);
            if tail.windows(MARKER.len()).any(|w| w == MARKER) {
                flag.store(true, Ordering::SeqCst);
            }
            if tail.len() > 64 {
                tail.drain(..tail.len() - 64);
            }
        }
    });
    match done_rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(fail(
                "alice to say all her lines",
                format!("the server closed alice's connection: {e}"),
                "slow's queue was full, and the server ended alice (the one talking) for it. A full \
                 queue is that member's problem only: on Err(TrySendError::Full(_)) skip that member \
                 (it misses the line) and go on; never return an error",
            ));
        }
        Err(_) => {
            return Err(fail(
                "alice to say all her lines within 30 s",
                "alice's writes blocked: the server stopped reading her",
                "the room waited for slow: a socket written (or anything awaited) while holding the \
                 room's lock stalls every member behind the slowest one. Under the lock only \
                 try_send to each member's queue; each member's own task does the writing",
            ));
        }
    }

    run.step("bob still hears alice: she says \"marker\" until bob receives it (10 s)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen_marker.load(Ordering::SeqCst) {
        if Instant::now() >= deadline {
            return Err(fail(
                "bob to receive \"[alice] marker\\n\"",
                "nothing from the room for 10 s",
                "while one member does not read, the others must go on receiving: never wait for a \
                 member (no write or .await under the room's lock; try_send, not send().await)",
            ));
        }
        send(&mut alice, b"marker\n")?;
        thread::sleep(Duration::from_millis(200));
    }

    run.step("slow reads again: with a bounded queue it missed most of the flood");
    // Read until 2 s of silence (at most 60 s): everything the server kept.
    let (mut received, mut closed) = (0usize, false);
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        let (got, end) = read_upto(&mut slow, usize::MAX, Duration::from_secs(2));
        received += got.iter().filter(|&&b| b == b'\n').count();
        match end {
            End::Timeout if got.is_empty() => break,
            End::Eof | End::Reset(_) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    if closed && received == 0 {
        return Err(fail(
            "slow to be still in the room",
            "its connection was closed",
            "a slow member skips what does not fit; it is not disconnected in this exercise",
        ));
    }
    if received >= lines {
        return Err(fail(
            format!("slow to receive far fewer than the {lines} lines said while it did not read"),
            format!("all {received} lines"),
            "the server kept every line for slow while it did not read: its queue grows without \
             bound (an unbounded channel). Use mpsc::channel(queue_len) and try_send",
        ));
    }
    run.note(&format!(
        "slow got {received} of {lines} lines after not reading; the rest were skipped for it alone"
    ));
    drop((alice, bob, slow));
    Ok(())
}
