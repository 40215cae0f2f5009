//! The event loop with several loops (`--loops N`, `event_loop::run`)
//! over real sockets on 127.0.0.1:0: connections spread over every loop in
//! both balance modes (asserted with the per-loop counts the run returns),
//! `--max-conns` counted across loops, one shutdown deadline for every loop,
//! the acceptor skipping a stalled loop, and the listener `--balance
//! reuseport` needs. (Every test of `echo.rs`
//! and `lifecycle.rs` runs with two loops in each mode too.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use async_server::Report;
use async_server::event_loop;
use async_server::{Balance, Listener};
use common::{Framing, Shutdown};
use support::{Counts, READ_TIMEOUT, Variant, config, connect, counts, payload, read_to_eof, wire};

struct Server {
    addr: SocketAddr,
    shutdown: Shutdown,
    done: mpsc::Receiver<io::Result<Report>>,
}

impl Server {
    fn start(
        loops: usize,
        balance: Balance,
        tune: impl FnOnce(&mut async_server::Config),
    ) -> Server {
        common::log::init_for_tests();
        let variant = Variant::loops(loops, balance);
        let mut cfg = config(Framing::Line);
        variant.configure(&mut cfg);
        tune(&mut cfg);
        let listener = variant.listen();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let (tx, done) = mpsc::channel();
        {
            let shutdown = shutdown.clone();
            thread::spawn(move || {
                let _ = tx.send(event_loop::run(listener.into(), cfg, shutdown));
            });
        }
        Server {
            addr,
            shutdown,
            done,
        }
    }

    fn stop(self) -> Report {
        self.shutdown.trigger();
        self.join(Duration::from_secs(20))
    }

    fn join(self, within: Duration) -> Report {
        self.done
            .recv_timeout(within)
            .expect("the server did not return in time")
            .expect("the server failed")
    }
}

fn echo(s: &mut TcpStream, msg: &[u8]) {
    let w = wire(Framing::Line, &[msg]);
    s.write_all(&w).unwrap();
    let mut got = vec![0; w.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, w);
}

/// 200 concurrent clients after a first one: both loops serve some. The
/// first client's echo proves loop 0 is serving, and every loop's listener
/// is bound before any loop starts, so the 200 all find both listeners.
#[test]
fn two_hundred_clients_are_spread_over_both_loops() {
    for balance in [Balance::Reuseport, Balance::Acceptor] {
        let server = Server::start(2, balance, |_| {});
        let mut first = connect(server.addr);
        echo(&mut first, b"first");
        let addr = server.addr;
        let clients: Vec<_> = (0..200)
            .map(|c| {
                thread::spawn(move || {
                    let mut s = connect(addr);
                    for i in 0..3 {
                        echo(&mut s, &payload(c, i));
                    }
                    s.shutdown(std::net::Shutdown::Write).unwrap();
                    assert!(read_to_eof(&mut s).is_empty(), "client {c}");
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        drop(first);
        let report = server.stop();
        let Counts {
            accepted,
            refused,
            errors,
            frames,
            ..
        } = counts(&report.stats);
        assert_eq!(
            (accepted, refused, errors, frames),
            (201, 0, 0, 601),
            "{balance:?}"
        );
        assert_eq!(report.per_loop.len(), 2, "{balance:?}");
        assert_eq!(report.per_loop.iter().sum::<u64>(), 201, "{balance:?}");
        // Reuseport: the kernel's hash of 201 client ports, all on one loop
        // with a probability of 2^-200. Acceptor: in turn, [101, 100],
        // unless loop 1 was not scheduled for STALLED_AFTER on a busy
        // machine and the acceptor skipped it meanwhile.
        assert!(
            report.per_loop.iter().all(|&n| n > 0),
            "{balance:?}: {:?}",
            report.per_loop
        );
        eprintln!("{balance:?}: connections per loop {:?}", report.per_loop);
    }
}

/// `--max-conns 4` with two loops: four clients hold the four slots, on
/// whichever loops, and the fifth is refused, whichever loop it lands on.
#[test]
fn max_conns_is_counted_across_loops() {
    for balance in [Balance::Reuseport, Balance::Acceptor] {
        let server = Server::start(2, balance, |cfg| cfg.common.max_conns = 4);
        let mut held: Vec<TcpStream> = (0..4).map(|_| connect(server.addr)).collect();
        for (c, s) in held.iter_mut().enumerate() {
            echo(s, &payload(c, 0));
        }
        for attempt in 0..6 {
            let mut s = connect(server.addr);
            let mut buf = [0u8; 8];
            let refused = match s.write_all(b"anyone?\n") {
                Err(_) => true,
                Ok(()) => match s.read(&mut buf) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => common::net::is_disconnect(&e),
                },
            };
            assert!(refused, "{balance:?}: attempt {attempt} was served");
        }
        drop(held);
        let report = server.stop();
        let Counts {
            accepted, refused, ..
        } = counts(&report.stats);
        assert_eq!((accepted, refused), (4, 6), "{balance:?}");
    }
}

/// A client on each loop that never reads its echoes, and one on each that
/// behaves: at shutdown the good ones get everything and EOF, the stuck
/// ones are cut, both at the one deadline, `--grace` after the trigger.
/// (With the acceptor the loops alternate, so clients 0 and 2 are on loop
/// 0, clients 1 and 3 on loop 1.)
#[test]
fn every_loop_drains_and_cuts_by_the_same_deadline() {
    const GRACE: Duration = Duration::from_millis(800);
    let server = Server::start(2, Balance::Acceptor, |cfg| cfg.common.grace = GRACE);
    let mut stuck = Vec::new();
    for _ in 0..2 {
        let mut s = connect(server.addr);
        echo(&mut s, b"then I stop reading");
        let sent = support::write_until_blocked(&mut s, Framing::Line, 64 << 20);
        assert!(sent >= 1 << 20, "blocked after {sent} bytes");
        stuck.push(s);
    }
    let mut good = Vec::new();
    for c in 0..2 {
        let mut s = connect(server.addr);
        echo(&mut s, b"hello");
        let owed: Vec<Vec<u8>> = (0..4).map(|i| payload(c, i)).collect();
        let refs: Vec<&[u8]> = owed.iter().map(Vec::as_slice).collect();
        let owed = wire(Framing::Line, &refs);
        s.write_all(&owed).unwrap();
        support::wait_until_acked(&s);
        good.push((s, owed));
    }
    let triggered = Instant::now();
    server.shutdown.trigger();
    for (c, (mut s, owed)) in good.into_iter().enumerate() {
        assert_eq!(read_to_eof(&mut s), owed, "good client {c}");
    }
    let report = server.join(GRACE + Duration::from_secs(5));
    let took = triggered.elapsed();
    assert!(
        took >= GRACE,
        "returned {took:?} after the trigger, before --grace"
    );
    assert!(
        took < GRACE + Duration::from_secs(3),
        "returned {took:?} after the trigger"
    );
    assert_eq!(report.per_loop, [2, 2]);
    let Counts {
        accepted,
        errors,
        cut,
        ..
    } = counts(&report.stats);
    assert_eq!((accepted, errors, cut), (4, 0, 2));
    drop(stuck);
}

/// `--balance reuseport` adds listeners to the one it is given: that one
/// must have `SO_REUSEPORT` (set before `bind()`), or the others could not
/// bind. Without it: a clear error at once, nothing served.
#[test]
fn reuseport_needs_a_listener_bound_with_so_reuseport() {
    let plain = common::net::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut cfg = config(Framing::Line);
    Variant::loops(2, Balance::Reuseport).configure(&mut cfg);
    let e = event_loop::run(plain.into(), cfg, Shutdown::new()).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("SO_REUSEPORT"), "{e}");
}

/// Every loop's listener is closed at shutdown: a new client is refused.
#[test]
fn after_shutdown_no_loop_accepts() {
    for balance in [Balance::Reuseport, Balance::Acceptor] {
        let server = Server::start(2, balance, |_| {});
        let addr = server.addr;
        let mut s = connect(addr);
        echo(&mut s, b"x");
        drop(s);
        let report = server.stop();
        assert_eq!(report.per_loop.iter().sum::<u64>(), 1);
        for _ in 0..10 {
            let e = TcpStream::connect_timeout(&addr, READ_TIMEOUT).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{balance:?}");
        }
    }
}

/// A listener argument that is not TCP cannot use reuseport.
#[test]
fn a_unix_socket_with_reuseport_is_refused() {
    let dir = std::env::temp_dir().join(format!("async-server-loops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("reuseport.sock");
    let _ = std::fs::remove_file(&path);
    let unix = async_server::UnixSocketFile::bind(&path).unwrap();
    let mut cfg = config(Framing::Line);
    Variant::loops(2, Balance::Reuseport).configure(&mut cfg);
    let e = event_loop::run(Listener::Unix(unix), cfg, Shutdown::new()).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("--balance acceptor"), "{e}");
    // The listener was dropped with the error: its file too.
    assert!(!path.exists());
    let _ = std::fs::remove_dir(&dir);
}

/// `--balance acceptor` with a stalled loop: loop 1 computes for most of a
/// second (a big frame under `--work`, which runs inline), while new
/// clients arrive 20 ms apart. Dealt strictly in turn, loop 1 would get
/// half of them (6 of 12 with the first two); the acceptor skips it once it
/// has left a connection waiting for `STALLED_AFTER`, so it gets fewer.
/// Nobody is lost: every client gets its echo once loop 1 is back.
#[test]
fn the_acceptor_skips_a_stalled_loop() {
    let big = vec![b'x'; 100_000];
    // Calibrate: rounds of work that keep a loop busy about 800 ms here.
    let t = Instant::now();
    std::hint::black_box(common::work::work(&big, 4));
    let per_round = (t.elapsed() / 4).max(Duration::from_nanos(1));
    let rounds = (Duration::from_millis(800).as_nanos() / per_round.as_nanos()).clamp(1, 1_000_000);
    let server = Server::start(2, Balance::Acceptor, |cfg| {
        cfg.common.work = rounds as u32;
    });
    let mut a = connect(server.addr);
    echo(&mut a, b"a"); // loop 0
    let mut b = connect(server.addr);
    echo(&mut b, b"b"); // loop 1
    let big_wire = wire(Framing::Line, &[&big]);
    b.write_all(&big_wire).unwrap();
    let mut late = Vec::new();
    for c in 0..10 {
        // Time passing is the condition under test (a loop that leaves a
        // connection waiting 50 ms is stalled), not a synchronisation.
        thread::sleep(Duration::from_millis(20));
        let mut s = connect(server.addr);
        let w = wire(Framing::Line, &[&payload(c, 0)]);
        s.write_all(&w).unwrap();
        late.push((s, w));
    }
    for (c, (mut s, w)) in late.into_iter().enumerate() {
        let mut got = vec![0; w.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, w, "late client {c}");
    }
    let mut got = vec![0; big_wire.len()];
    b.read_exact(&mut got).unwrap();
    assert!(got == big_wire, "the big echo differs");
    drop((a, b));
    let report = server.stop();
    assert_eq!(report.per_loop.iter().sum::<u64>(), 12);
    assert!(
        report.per_loop[1] < 6,
        "loop 1 was never skipped: {:?} (work {rounds} rounds)",
        report.per_loop
    );
    eprintln!(
        "with loop 1 stalled: connections per loop {:?}",
        report.per_loop
    );
}
