//! The contract every server of the workspace keeps, for the three chat
//! designs: shutdown (members told, queued lines delivered, FIN, within
//! `--grace`, one summary), `--max-conns`, the idle timeout, and the stall
//! timeout of a member that stops reading. Every read has a deadline.

// A test's panic is its failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat::{ChatConfig, ChatStats, Model, SlowPolicy};
use common::{ServerConfig, Shutdown};
use loadgen::chat::check::Member;

type Running = (
    SocketAddr,
    Shutdown,
    std::thread::JoinHandle<Arc<ChatStats>>,
);

fn start(model: Model, server: ServerConfig) -> Running {
    let listener = common::net::listen(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let config = ChatConfig {
        server,
        slow: SlowPolicy::Skip,
    };
    let s = shutdown.clone();
    let handle = std::thread::spawn(move || chat::run(model, listener, &config, &s).unwrap());
    (addr, shutdown, handle)
}

fn name(model: Model, who: &str) -> String {
    format!("{who}{}", model.name().replace('-', ""))
}

#[test]
fn shutdown_tells_members_delivers_and_ends_within_grace() {
    for model in Model::ALL {
        let grace = Duration::from_secs(5);
        let (addr, shutdown, server) = start(
            model,
            ServerConfig {
                grace,
                ..ServerConfig::default()
            },
        );
        let (a, b) = (name(model, "a"), name(model, "b"));
        let (mut ma, _) = Member::join(addr, &a).unwrap();
        let (mut mb, _) = Member::join(addr, &b).unwrap();
        ma.expect_line(&format!("* {b} has entered the room"), "join")
            .unwrap();
        // A line in flight when the signal comes is still delivered first.
        ma.send("last words").unwrap();
        mb.expect_line(&format!("[{a}] last words"), "before shutdown")
            .unwrap();
        let t = Instant::now();
        shutdown.trigger();
        for m in [&mut ma, &mut mb] {
            m.expect_line(
                "* server shutting down",
                &format!("{model}: the shutdown notice"),
            )
            .unwrap();
            // Then the server's FIN.
            assert!(m.expect_closed(0).is_ok(), "{model}: FIN after the notice");
        }
        drop((ma, mb));
        let stats = server.join().unwrap();
        assert!(
            t.elapsed() < grace + Duration::from_secs(2),
            "{model}: took {:?}",
            t.elapsed()
        );
        assert_eq!(
            stats.joined.load(std::sync::atomic::Ordering::Relaxed),
            2,
            "{model}"
        );
    }
}

#[test]
fn over_max_conns_is_told_and_closed() {
    for model in Model::ALL {
        let (addr, shutdown, server) = start(
            model,
            ServerConfig {
                max_conns: 2,
                ..ServerConfig::default()
            },
        );
        let m1 = Member::connect(addr, "one").unwrap();
        let m2 = Member::connect(addr, "two").unwrap();
        let mut third = TcpStream::connect(addr).unwrap();
        third
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut got = Vec::new();
        let _ = third.read_to_end(&mut got);
        assert_eq!(got, chat::protocol::ROOM_FULL, "{model}");
        drop((m1, m2));
        shutdown.trigger();
        let stats = server.join().unwrap();
        assert_eq!(
            stats
                .base
                .refused
                .load(std::sync::atomic::Ordering::Relaxed),
            1,
            "{model}"
        );
    }
}

#[test]
fn an_idle_member_is_closed_and_its_leave_announced() {
    for model in Model::ALL {
        let idle = Duration::from_millis(1500);
        let (addr, shutdown, server) = start(
            model,
            ServerConfig {
                idle_timeout: Some(idle),
                ..ServerConfig::default()
            },
        );
        let (a, b) = (name(model, "talker"), name(model, "quiet"));
        let (mut ma, _) = Member::join(addr, &a).unwrap();
        let (mut mb, _) = Member::join(addr, &b).unwrap();
        ma.expect_line(&format!("* {b} has entered the room"), "join")
            .unwrap();
        // a keeps talking (every 300 ms, so it is never idle) from a
        // thread, while this thread waits for b (silent) to be announced.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut w = ma.stream().try_clone().unwrap();
        let talking = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    if w.write_all(b"ping\n").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            })
        };
        let left = format!("* {b} has left the room");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut heard = false;
        while Instant::now() < deadline {
            match ma.line() {
                Ok(l) if l == left => {
                    heard = true;
                    break;
                }
                Ok(l) => panic!("{model}: {a} got {l:?} while waiting for {b} to leave"),
                Err(_) => {} // a read timeout: keep waiting until the deadline
            }
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        talking.join().unwrap();
        let _ = &mut mb;
        assert!(heard, "{model}: the idle member's leave was not announced");
        drop((ma, mb));
        shutdown.trigger();
        server.join().unwrap();
    }
}

#[test]
fn a_member_that_stops_reading_is_closed_after_the_stall_timeout() {
    for model in Model::ALL {
        let (addr, shutdown, server) = start(
            model,
            ServerConfig {
                stall_timeout: Duration::from_secs(1),
                max_pending: 64 * 1024,
                ..ServerConfig::default()
            },
        );
        let (a, s) = (name(model, "flood"), name(model, "stall"));
        let (mut ma, _) = Member::join(addr, &a).unwrap();
        let (ms, _) = Member::join(addr, &s).unwrap();
        ma.expect_line(&format!("* {s} has entered the room"), "join")
            .unwrap();
        // a says lines until it hears s leave (s never reads); at most 64 MiB
        // and 60 s. a reads nothing meanwhile (it receives nothing but that).
        let text = "z".repeat(4000);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut sent = 0usize;
        let mut raw = ma_stream(&mut ma);
        raw.set_nonblocking(true).unwrap();
        let mut seen = Vec::new();
        let want = format!("* {s} has left the room\n");
        while Instant::now() < deadline && sent < 64 << 20 {
            raw.set_nonblocking(false).unwrap();
            raw.write_all(format!("{text}\n").as_bytes()).unwrap();
            raw.set_nonblocking(true).unwrap();
            sent += text.len() + 1;
            let mut buf = [0u8; 4096];
            while let Ok(n) = raw.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            if seen.windows(want.len()).any(|w| w == want.as_bytes()) {
                break;
            }
            if sent > 8 << 20 {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        assert!(
            seen.windows(want.len()).any(|w| w == want.as_bytes()),
            "{model}: the stalled member was not closed after {sent} bytes said"
        );
        drop((ma, ms, raw));
        shutdown.trigger();
        let stats = server.join().unwrap();
        assert!(
            stats
                .base
                .timed_out
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1,
            "{model}"
        );
    }
}

/// The raw socket under a checker member (its writes, unbuffered reads).
fn ma_stream(m: &mut Member) -> TcpStream {
    m.stream().try_clone().unwrap()
}
