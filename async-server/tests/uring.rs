//! The io_uring model (`async_server::uring`) over real sockets on
//! 127.0.0.1:0, started in-process with a `Shutdown` the test triggers.
//!
//! Where the kernel refuses io_uring (a seccomp profile, the
//! `kernel.io_uring_disabled` sysctl, an old kernel), every test prints
//! `skipped: <the reason>` and returns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use async_server::Config;
use async_server::uring::{self, RecvMode, RingCounters, RingOptions};
use bytes::BytesMut;
use common::{Framing, ServerConfig, Shutdown, Stats, encode};

/// Every read gives up after this long.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

fn skipped() -> bool {
    match uring::probe() {
        Ok(()) => false,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            true
        }
    }
}

struct Server {
    addr: SocketAddr,
    shutdown: Shutdown,
    done: mpsc::Receiver<io::Result<async_server::Report>>,
}

/// What a uring run reports: the summary counters and the ring's own.
struct Report {
    stats: Arc<Stats>,
    ring: RingCounters,
}

/// The uring model with the workspace's contract in `common` and these ring
/// sizes.
fn config_with(common: ServerConfig, uring: RingOptions) -> Config {
    Config {
        common,
        uring,
        ..Config::default()
    }
}

impl Server {
    fn start(config: ServerConfig) -> Server {
        Self::start_with(config, RingOptions::default(), |_| {})
    }

    fn start_with(
        config: ServerConfig,
        options: RingOptions,
        tune: impl FnOnce(&TcpListener),
    ) -> Server {
        common::log::init_for_tests();
        let listener = common::net::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        tune(&listener);
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let (tx, done) = mpsc::channel();
        {
            let shutdown = shutdown.clone();
            thread::spawn(move || {
                let config = config_with(config, options);
                let _ = tx.send(uring::run(listener.into(), config, shutdown));
            });
        }
        Server {
            addr,
            shutdown,
            done,
        }
    }

    /// Trigger shutdown and wait (bounded) for the report.
    fn stop(self) -> Report {
        self.shutdown.trigger();
        self.join(Duration::from_secs(20))
    }

    fn join(self, within: Duration) -> Report {
        self.done
            .recv_timeout(within)
            .expect("the server did not return in time")
            .map(|report| Report {
                stats: report.stats,
                ring: report.ring.expect("the uring model reports its ring"),
            })
            .expect("the server failed")
    }
}

fn config(framing: Framing) -> ServerConfig {
    ServerConfig {
        framing,
        ..ServerConfig::default()
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    s
}

fn wire(framing: Framing, frames: &[&[u8]]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for f in frames {
        encode(framing, f, &mut out).unwrap();
    }
    out.to_vec()
}

fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).unwrap();
    buf
}

/// The next read must be end-of-stream (the server's FIN), not data.
///
/// EINTR is retried, as `read_exact` does: on this kernel (6.18) a blocking
/// `recv` in a process that also drives an io_uring sometimes returns EINTR
/// with no signal delivered (io_uring's task-work notification).
fn expect_eof(s: &mut TcpStream) {
    let mut byte = [0u8; 1];
    loop {
        match s.read(&mut byte) {
            Ok(0) => return,
            Ok(_) => panic!("expected EOF, got data {byte:?}"),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("expected EOF, got {e}"),
        }
    }
}

/// The server closed this connection: EOF or a reset, never data.
fn expect_closed(s: &mut TcpStream) {
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue, // echoes owed before the close
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("expected the server to close, got {e}"),
        }
    }
}

fn get(counter: &std::sync::atomic::AtomicU64) -> u64 {
    Stats::get(counter)
}

/// `clients` connections at once, each sending `rounds` length-prefixed
/// frames (`payload(client, round)`) one at a time and reading back exactly
/// each echo before the next; then FIN, and the server's EOF.
fn ping_pong_clients(
    addr: SocketAddr,
    clients: u64,
    rounds: u64,
    payload: fn(u64, u64) -> Vec<u8>,
) {
    let clients: Vec<_> = (0..clients)
        .map(|c| {
            thread::spawn(move || {
                let mut s = connect(addr);
                for k in 0..rounds {
                    let bytes = wire(Framing::Length, &[&payload(c, k)]);
                    s.write_all(&bytes).unwrap();
                    assert_eq!(read_exact(&mut s, bytes.len()), bytes);
                }
                s.shutdown(std::net::Shutdown::Write).unwrap();
                expect_eof(&mut s);
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

/// Send `frames`, read back exactly their echo, half-close, see EOF.
fn round_trip(addr: SocketAddr, framing: Framing, frames: &[&[u8]]) {
    let mut s = connect(addr);
    let bytes = wire(framing, frames);
    s.write_all(&bytes).unwrap();
    assert_eq!(read_exact(&mut s, bytes.len()), bytes);
    s.shutdown(std::net::Shutdown::Write).unwrap();
    expect_eof(&mut s);
}

#[test]
fn echo_in_every_framing_exact_bytes() {
    if skipped() {
        return;
    }
    let big: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    for framing in Framing::ALL {
        let server = Server::start(config(framing));
        match framing {
            Framing::Line => {
                round_trip(server.addr, framing, &[b"hello", b"", b"w\xf6rld\r", &big])
            }
            Framing::Length => {
                round_trip(server.addr, framing, &[b"", b"\n\0\xff", b"x", &big]);
            }
            Framing::Raw => {
                // Raw: no frames, bytes come back as they are.
                let mut s = connect(server.addr);
                s.write_all(b"any\nbytes\0").unwrap();
                assert_eq!(read_exact(&mut s, 10), b"any\nbytes\0");
                s.write_all(&big).unwrap();
                assert_eq!(read_exact(&mut s, big.len()), big);
                s.shutdown(std::net::Shutdown::Write).unwrap();
                expect_eof(&mut s);
            }
        }
        let report = server.stop();
        let st = &report.stats;
        assert_eq!(get(&st.accepted), 1, "{framing}");
        assert_eq!(get(&st.errors), 0, "{framing}");
        if framing != Framing::Raw {
            assert_eq!(get(&st.frames), 4, "{framing}");
            assert_eq!(
                get(&st.bytes),
                if framing == Framing::Line {
                    5 + 6
                } else {
                    3 + 1
                } + big.len() as u64,
                "{framing}"
            );
        }
    }
}

#[test]
fn two_hundred_concurrent_clients() {
    if skipped() {
        return;
    }
    let server = Server::start(config(Framing::Length));
    let addr = server.addr;
    ping_pong_clients(addr, 200, 10, |c, k| {
        format!("client {c} frame {k}").into_bytes()
    });
    let report = server.stop();
    assert_eq!(get(&report.stats.accepted), 200);
    assert_eq!(get(&report.stats.frames), 2000);
    assert_eq!(get(&report.stats.errors), 0);
    assert_eq!(get(&report.stats.refused), 0);
}

/// A ring of 4 SQEs and 2 provided buffers of 64 bytes, for 50 clients
/// sending frames bigger than a buffer: the full submission queue and the
/// empty buffer ring are both hit, and no byte is lost. With multishot
/// recvs (ENOBUFS ends one, and it is re-armed) and one-shot recvs; once
/// more with SQPOLL, where a submit does not empty the queue at once (the
/// kernel thread does, later), so SQEs wait in the backlog.
#[test]
fn tiny_ring_full_queue_and_empty_buffer_ring_lose_nothing() {
    if skipped() {
        return;
    }
    for (sqpoll_idle, mode) in [
        (None, RecvMode::MultishotBudget),
        (None, RecvMode::Multishot),
        (None, RecvMode::OneShot),
        (Some(Duration::from_millis(10)), RecvMode::MultishotBudget),
    ] {
        if sqpoll_idle.is_some()
            && let Err(e) = io_uring::IoUring::<io_uring::squeue::Entry>::builder()
                .setup_sqpoll(10)
                .build(4)
        {
            eprintln!("skipped the SQPOLL variant: {e}");
            continue;
        }
        let options = RingOptions {
            sq_entries: 4,
            sqpoll_idle,
            ..ring(mode, 2, 64)
        };
        let server = Server::start_with(config(Framing::Line), options, |_| {});
        let addr = server.addr;
        let clients: Vec<_> = (0..50)
            .map(|c| {
                thread::spawn(move || {
                    let mut s = connect(addr);
                    let frames: Vec<Vec<u8>> = (0..20)
                        .map(|k| format!("{c:02}-{k:02}-{}", "x".repeat(300)).into_bytes())
                        .collect();
                    let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
                    let bytes = wire(Framing::Line, &refs);
                    s.write_all(&bytes).unwrap();
                    assert_eq!(read_exact(&mut s, bytes.len()), bytes);
                    s.shutdown(std::net::Shutdown::Write).unwrap();
                    expect_eof(&mut s);
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        let report = server.stop();
        eprintln!(
            "sqpoll {sqpoll_idle:?}, {mode:?}: ring counters: {:?}",
            report.ring
        );
        assert_eq!(get(&report.stats.frames), 50 * 20);
        assert_eq!(get(&report.stats.errors), 0);
        assert!(report.ring.sq_full > 0, "the submission ring never filled");
        assert!(report.ring.enobufs > 0, "the buffer ring never ran dry");
    }
}

/// The server's send buffer is 4 KiB and the client's receive buffer is
/// 4 KiB; the client reads 1 KiB at a time, slowly, while 1 MiB of echoes
/// wait: sends complete short again and again, and every byte arrives.
#[test]
fn short_sends_to_a_slow_reader_lose_nothing() {
    if skipped() {
        return;
    }
    let server = Server::start_with(config(Framing::Length), RingOptions::default(), |l| {
        socket2::SockRef::from(l)
            .set_send_buffer_size(4096)
            .unwrap();
    });
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let frames: Vec<Vec<u8>> = (0..16u8)
        .map(|k| {
            (0..65536u32)
                .map(|i| (i as u8).wrapping_mul(k | 1))
                .collect()
        })
        .collect();
    let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
    let bytes = wire(Framing::Length, &refs);
    let writer = {
        let mut w = s.try_clone().unwrap();
        let bytes = bytes.clone();
        thread::spawn(move || {
            w.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
            w.write_all(&bytes).unwrap();
            w.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let mut got = Vec::with_capacity(bytes.len());
    let mut chunk = [0u8; 1024];
    while got.len() < bytes.len() {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "EOF after {} of {} bytes", got.len(), bytes.len());
        got.extend_from_slice(&chunk[..n]);
        if got.len() % (64 * 1024) < 1024 {
            // A slow reader: the window stays nearly closed. (Pacing, not
            // synchronisation: the test waits on the data itself.)
            thread::sleep(Duration::from_millis(2));
        }
    }
    assert!(got == bytes, "echoed bytes differ");
    expect_eof(&mut s);
    writer.join().unwrap();
    let report = server.stop();
    eprintln!("ring counters: {:?}", report.ring);
    assert!(
        report.ring.short_sends > 1,
        "expected many short sends, saw {}",
        report.ring.short_sends
    );
    assert_eq!(get(&report.stats.frames), 16);
    assert_eq!(get(&report.stats.errors), 0);
}

#[test]
fn half_close_gets_every_echo_then_fin() {
    if skipped() {
        return;
    }
    let server = Server::start(config(Framing::Line));
    // Clean: whole frames, then FIN.
    let mut s = connect(server.addr);
    s.write_all(b"one\ntwo\nthree\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_exact(&mut s, 14), b"one\ntwo\nthree\n");
    expect_eof(&mut s);
    // An unfinished frame at FIN: the whole frames are still echoed, then FIN.
    let mut s = connect(server.addr);
    s.write_all(b"four\nunfinished").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_exact(&mut s, 5), b"four\n");
    expect_eof(&mut s);
    let report = server.stop();
    assert_eq!(get(&report.stats.frames), 4);
    assert_eq!(
        get(&report.stats.errors),
        1,
        "the truncated frame is an error"
    );
}

#[test]
fn oversized_frame_closes_that_connection_only() {
    if skipped() {
        return;
    }
    let server = Server::start(ServerConfig {
        max_frame: 16,
        ..config(Framing::Length)
    });
    let mut good = connect(server.addr);
    let hello = wire(Framing::Length, &[b"hello"]);
    good.write_all(&hello).unwrap();
    assert_eq!(read_exact(&mut good, hello.len()), hello);

    let mut bad = connect(server.addr);
    bad.write_all(&1000u32.to_be_bytes()).unwrap();
    expect_closed(&mut bad);

    // A 4 GiB claim: refused from the four header bytes, nothing allocated.
    let mut huge = connect(server.addr);
    huge.write_all(&[0xff; 4]).unwrap();
    expect_closed(&mut huge);

    good.write_all(&hello).unwrap();
    assert_eq!(read_exact(&mut good, hello.len()), hello);
    drop(good);
    let report = server.stop();
    assert_eq!(get(&report.stats.errors), 2);
    assert_eq!(get(&report.stats.frames), 2);
}

#[test]
fn overlong_line_closes_that_connection_only() {
    if skipped() {
        return;
    }
    let server = Server::start(ServerConfig {
        max_frame: 16,
        ..config(Framing::Line)
    });
    let mut good = connect(server.addr);
    let mut bad = connect(server.addr);
    // 17 bytes and no newline: over the limit whatever comes next.
    bad.write_all(&[b'z'; 17]).unwrap();
    expect_closed(&mut bad);
    good.write_all(b"exactly sixteen!\n").unwrap();
    assert_eq!(read_exact(&mut good, 17), b"exactly sixteen!\n");
    drop(good);
    let report = server.stop();
    assert_eq!(get(&report.stats.errors), 1);
    assert_eq!(get(&report.stats.frames), 1);
}

/// A client that resets (SO_LINGER 0, then close) while echoes are owed to
/// it: that connection ends on its error, the others carry on.
#[test]
fn a_reset_client_is_closed_alone() {
    if skipped() {
        return;
    }
    let server = Server::start(ServerConfig {
        max_pending: 4096,
        ..config(Framing::Line)
    });
    let mut other = connect(server.addr);
    // Reset a client with echoes waiting for it.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut s: TcpStream = socket.try_clone().unwrap().into();
    s.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    s.write_all(&[b"r".repeat(1023), b"\n".to_vec()].concat().repeat(64))
        .unwrap();
    socket.set_linger(Some(Duration::ZERO)).unwrap();
    drop((s, socket)); // close with SO_LINGER 0: RST
    other.write_all(b"still fine\n").unwrap();
    assert_eq!(read_exact(&mut other, 11), b"still fine\n");
    drop(other);
    let report = server.stop();
    assert_eq!(
        get(&report.stats.errors),
        1,
        "the reset is that connection's error"
    );
    assert_eq!(get(&report.stats.cut), 0);
}

#[test]
fn idle_timeout_closes_a_silent_client() {
    if skipped() {
        return;
    }
    let server = Server::start(ServerConfig {
        idle_timeout: Some(Duration::from_millis(200)),
        ..config(Framing::Line)
    });
    let mut s = connect(server.addr);
    s.write_all(b"hi\n").unwrap();
    assert_eq!(read_exact(&mut s, 3), b"hi\n");
    expect_eof(&mut s); // then silence: the server closes
    let report = server.stop();
    assert_eq!(get(&report.stats.timed_out), 1);
    assert_eq!(get(&report.stats.errors), 0);
}

/// Writes `total` bytes of line frames and never reads; returns how the
/// writing ended.
fn flood(addr: SocketAddr, total: usize) -> thread::JoinHandle<io::Result<usize>> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut s: TcpStream = socket.into();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    thread::spawn(move || {
        let line = [b"x".repeat(1023), b"\n".to_vec()].concat();
        let mut sent = 0;
        while sent < total {
            s.write_all(&line)?;
            sent += line.len();
        }
        Ok(sent)
    })
}

#[test]
fn stall_timeout_closes_a_non_reader_while_another_client_is_served() {
    if skipped() {
        return;
    }
    let server = Server::start(ServerConfig {
        stall_timeout: Duration::from_millis(300),
        max_pending: 16 * 1024,
        ..config(Framing::Line)
    });
    // Far more than every buffer on the way can hold: the writer blocks,
    // then fails when the server gives up on it.
    let flooder = flood(server.addr, 256 << 20);
    let mut other = connect(server.addr);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(flooder.join().unwrap());
    });
    // Served all along, and until the non-reader is closed.
    let until = Instant::now() + Duration::from_secs(30);
    let ended = loop {
        assert!(Instant::now() < until, "the non-reader was never closed");
        other.write_all(b"still here\n").unwrap();
        assert_eq!(read_exact(&mut other, 11), b"still here\n");
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(result) => break result,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(e) => panic!("{e}"),
        }
    };
    let e = ended.expect_err("the non-reader's writes should fail once it is closed");
    assert!(
        matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ),
        "{e}"
    );
    other.write_all(b"after\n").unwrap();
    assert_eq!(read_exact(&mut other, 6), b"after\n");
    drop(other);
    let report = server.stop();
    assert_eq!(get(&report.stats.timed_out), 1);
}

#[test]
fn shutdown_with_frames_in_flight_returns_every_echo_then_eof() {
    if skipped() {
        return;
    }
    for framing in Framing::ALL {
        let server = Server::start(config(framing));
        let mut clients = Vec::new();
        for c in 0..20 {
            let mut s = connect(server.addr);
            // One echo first, so the connection is surely accepted.
            let first = wire(framing, &[b"first"]);
            s.write_all(&first).unwrap();
            assert_eq!(read_exact(&mut s, first.len()), first);
            let frames: Vec<Vec<u8>> = (0..10).map(|k| format!("c{c}f{k}").into_bytes()).collect();
            let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
            let bytes = wire(framing, &refs);
            s.write_all(&bytes).unwrap(); // in flight: not read yet
            clients.push((s, bytes));
        }
        server.shutdown.trigger();
        for (mut s, bytes) in clients {
            assert_eq!(read_exact(&mut s, bytes.len()), bytes, "{framing}");
            expect_eof(&mut s);
            // Only now does the client close: the server waited for this FIN.
        }
        let report = server.join(Duration::from_secs(20));
        let st = &report.stats;
        assert_eq!(get(&st.cut), 0, "{framing}");
        assert_eq!(get(&st.errors), 0, "{framing}");
        if framing != Framing::Raw {
            assert_eq!(get(&st.frames), 20 * 11, "{framing}");
        }
    }
}

/// Bytes the kernel has not yet handed to the peer (`TIOCOUTQ`): zero once
/// loopback delivered everything we wrote into the server's receive queue.
fn unsent(s: &TcpStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ writes one c_int into `n`.
    assert_eq!(
        unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut n) },
        0
    );
    n as usize
}

/// The echoes owed at shutdown include bytes the server has not read yet:
/// backpressure (`--max-pending` 1 KiB, 4 KiB send buffers, a client that
/// does not read) leaves some of the 64 KiB in the server's kernel receive
/// queue when shutdown begins (the multishot recv paused, or the one-shot
/// recv not re-armed). Every one must come back, then EOF.
#[test]
fn shutdown_echoes_what_waits_in_the_kernel_receive_queue() {
    if skipped() {
        return;
    }
    for mode in MODES {
        shutdown_echoes_what_waits(mode);
    }
}

fn shutdown_echoes_what_waits(mode: RecvMode) {
    let config = ServerConfig {
        max_pending: 1024,
        ..config(Framing::Line)
    };
    let options = ring(mode, 1024, 8192);
    let server = Server::start_with(config, options, |l| {
        socket2::SockRef::from(l)
            .set_send_buffer_size(4096)
            .unwrap();
    });
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(8192).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    let frames: Vec<Vec<u8>> = (0..64)
        .map(|k| format!("{k:04}{}", "y".repeat(1019)).into_bytes())
        .collect();
    let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
    let bytes = wire(Framing::Line, &refs);
    s.write_all(&bytes).unwrap();
    // Wait until every byte sits in the server's receive queue (or was
    // read): the event is the kernel's own count reaching zero.
    let until = Instant::now() + READ_TIMEOUT;
    while unsent(&s) > 0 {
        assert!(Instant::now() < until, "{} bytes never left", unsent(&s));
        thread::sleep(Duration::from_millis(1));
    }
    server.shutdown.trigger();
    let got = read_exact(&mut s, bytes.len());
    assert!(got == bytes, "echoes differ ({mode:?})");
    expect_eof(&mut s);
    drop(s);
    let report = server.join(Duration::from_secs(20));
    eprintln!("{mode:?}: {:?}", report.ring);
    assert_eq!(get(&report.stats.frames), 64);
    assert_eq!(get(&report.stats.cut), 0);
    // One 8 KiB receive is 8 echoes of 1 KiB: over the limit at once.
    assert_backpressure_paused(&report.ring, &format!("{mode:?}"));
}

#[test]
fn shutdown_with_a_never_reading_client_returns_within_grace() {
    if skipped() {
        return;
    }
    let grace = Duration::from_millis(500);
    let server = Server::start(ServerConfig {
        grace,
        stall_timeout: Duration::from_secs(3600),
        ..config(Framing::Line)
    });
    let flooder = flood(server.addr, 256 << 20);
    let mut quiet = connect(server.addr);
    quiet.write_all(b"x\n").unwrap();
    assert_eq!(read_exact(&mut quiet, 2), b"x\n");
    // Wait until the flood is being refused by backpressure: a second
    // client's echo proves the loop runs; the flooder is blocked by now or
    // soon, and either way it never reads.
    let started = Instant::now();
    server.shutdown.trigger();
    let report = server.join(grace + Duration::from_secs(5));
    let took = started.elapsed();
    assert!(took < grace + Duration::from_secs(3), "took {took:?}");
    // `quiet` read its echo and got our FIN but never sent its own: cut too.
    expect_eof(&mut quiet);
    assert!(get(&report.stats.cut) >= 1);
    let _ = flooder.join();
}

#[test]
fn max_conns_refuses_the_one_over() {
    if skipped() {
        return;
    }
    let server = Server::start(ServerConfig {
        max_conns: 2,
        ..config(Framing::Line)
    });
    let mut a = connect(server.addr);
    let mut b = connect(server.addr);
    for s in [&mut a, &mut b] {
        s.write_all(b"in\n").unwrap();
        assert_eq!(read_exact(s, 3), b"in\n");
    }
    let mut c = connect(server.addr);
    let _ = c.write_all(b"over\n");
    expect_closed(&mut c);
    drop((a, b));
    let report = server.stop();
    assert_eq!(get(&report.stats.refused), 1);
    assert_eq!(get(&report.stats.accepted), 2);
}

/// A logger (for the child process only) that prints every warning and
/// sends those containing `needle` down the returned channel.
fn watch_log(needle: &'static str) -> mpsc::Receiver<String> {
    struct Watch {
        needle: &'static str,
        tx: std::sync::Mutex<mpsc::Sender<String>>,
    }
    impl log::Log for Watch {
        fn enabled(&self, m: &log::Metadata<'_>) -> bool {
            m.level() <= log::Level::Warn
        }
        fn log(&self, r: &log::Record<'_>) {
            let msg = r.args().to_string();
            eprintln!("child log: {} {msg}", r.level());
            if msg.contains(self.needle) {
                let _ = self.tx.lock().unwrap().send(msg);
            }
        }
        fn flush(&self) {}
    }
    let (tx, rx) = mpsc::channel();
    let watch = Box::leak(Box::new(Watch {
        needle,
        tx: std::sync::Mutex::new(tx),
    }));
    log::set_logger(watch).expect("the child installs the first logger");
    log::set_max_level(log::LevelFilter::Warn);
    rx
}

/// The child half of `emfile_is_survived_with_back_off`: does nothing unless
/// the parent started this binary with URING_EMFILE_CHILD=1, because the
/// open-file limit it lowers is the whole process's.
#[test]
fn emfile_child() {
    if std::env::var_os("URING_EMFILE_CHILD").is_none() || skipped() {
        return;
    }
    // Lower the soft limit *before* the server arms its accept: io_uring
    // reads RLIMIT_NOFILE when an accept is submitted, not when it
    // completes, so a multishot accept armed earlier would not notice.
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        // Room for the ring, its eventfd and a warm-up connection's two ends.
        lim.rlim_cur = open + 16;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    let backoffs = watch_log("pausing accepts");
    let server = Server::start(config(Framing::Line));
    // Warm up, and keep the connection open: a connection the server closed
    // late would free an fd after the table is filled below.
    let mut warm = connect(server.addr);
    warm.write_all(b"warm-up\n").unwrap();
    assert_eq!(read_exact(&mut warm, 8), b"warm-up\n");
    // Fill the fd table, then free exactly one for the next client: the
    // server's accept of it fails with EMFILE.
    let mut placeholders = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        placeholders.push(f);
    }
    placeholders.pop();
    let mut s = connect(server.addr);
    s.write_all(b"queued\n").unwrap();
    assert!(
        std::fs::File::open("/dev/null").is_err(),
        "the fd table should be full"
    );
    // The server's accept failed: it says so, once per back-off.
    let line = backoffs
        .recv_timeout(Duration::from_secs(10))
        .expect("the server never reported EMFILE");
    assert!(line.contains("Too many open files"), "{line}");
    // The connection waits in the backlog while the server backs off; free
    // fds, and the next retry accepts it.
    placeholders.clear();
    assert_eq!(read_exact(&mut s, 7), b"queued\n");
    s.shutdown(std::net::Shutdown::Write).unwrap();
    expect_eof(&mut s);
    drop(warm);
    let report = server.stop();
    assert!(
        report.ring.accept_backoffs >= 1,
        "no accept back-off was seen: {:?}",
        report.ring
    );
    println!(
        "emfile: survived after {} back-off(s)",
        report.ring.accept_backoffs
    );
}

#[test]
fn emfile_is_survived_with_back_off() {
    if skipped() {
        return;
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["emfile_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("URING_EMFILE_CHILD", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        let _ = tx.send(out);
    });
    let out = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out,
        Err(_) => {
            let _ = child.kill();
            panic!("the EMFILE child did not finish in 60 s");
        }
    };
    let status = child.wait().unwrap();
    assert!(status.success(), "child failed: {out}");
    assert!(
        out.contains("emfile: survived after"),
        "child output: {out}"
    );
}

#[test]
fn probe_is_one_line() {
    match uring::probe() {
        Ok(()) => {}
        Err(reason) => {
            assert!(!reason.contains('\n'), "{reason}");
            assert!(reason.starts_with("io_uring is unavailable"), "{reason}");
        }
    }
    // And `run` says the same where the kernel refuses.
    if let Err(reason) = uring::probe() {
        let listener = common::net::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let e = uring::run(listener.into(), Config::default(), Shutdown::new()).unwrap_err();
        assert_eq!(e.to_string(), reason);
    }
}

/// Make io_uring_setup fail with `errno` for this thread (and the threads it
/// starts): a seccomp filter, as a container runtime's profile would.
/// Err where this process may not install one.
fn refuse_io_uring_here(errno: u32) -> io::Result<()> {
    let op = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let mut filter = [
        // A = seccomp_data.nr (offset 0): the system call number.
        op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
        op(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            libc::SYS_io_uring_setup as u32,
            0,
            1,
        ),
        op(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | errno,
            0,
            0,
        ),
        op(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW, 0, 0),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: prctl reads `prog` and the filter it points to during the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            ) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Where a seccomp profile refuses io_uring, `probe` and `run` say so in
/// the same one line, and `run` serves nothing. (Seccomp filters belong to
/// the thread that installs them, so the other tests are not affected.)
#[test]
fn refused_by_seccomp_run_fails_with_probes_line() {
    for (errno, needle) in [(libc::EPERM, "seccomp"), (libc::ENOSYS, "ENOSYS")] {
        let line = thread::spawn(move || {
            if let Err(e) = refuse_io_uring_here(errno as u32) {
                return format!("skipped: no seccomp filter here ({e})");
            }
            let reason = uring::probe().expect_err("io_uring should be refused");
            let listener = common::net::listen("127.0.0.1:0".parse().unwrap()).unwrap();
            let e = uring::run(listener.into(), Config::default(), Shutdown::new()).unwrap_err();
            assert_eq!(e.to_string(), reason);
            assert_eq!(e.kind(), io::ErrorKind::Unsupported);
            reason
        })
        .join()
        .unwrap();
        if line.starts_with("skipped") {
            eprintln!("{line}");
            return;
        }
        eprintln!("refused as expected: {line}");
        assert!(line.starts_with("io_uring is unavailable: "), "{line}");
        assert!(line.contains(needle), "{needle}: {line}");
        assert!(line.contains("check: "), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }
}

// ---------------------------------------------------------------------------
// Multishot recv: one recv per connection, paused by --max-pending

/// Every recv mode, best first. Asking for one the kernel refuses gets the
/// next one down (`RingCounters::recv_mode` says which ran).
const MODES: [RecvMode; 3] = [
    RecvMode::MultishotBudget,
    RecvMode::Multishot,
    RecvMode::OneShot,
];

fn ring(mode: RecvMode, buffers: u16, buffer_size: u32) -> RingOptions {
    RingOptions {
        buffers,
        buffer_size,
        recv: mode,
        ..RingOptions::default()
    }
}

/// `--max-pending` paused the receiving the way the mode that ran does it:
/// a budgeted multishot recv ended at its budget, a plain one cancelled.
/// (A one-shot recv is simply not re-armed: nothing to count.)
fn assert_backpressure_paused(r: &RingCounters, what: &str) {
    match r.recv_mode {
        RecvMode::MultishotBudget => assert!(r.recv_budget_ends > 0, "{what}: {r:?}"),
        RecvMode::Multishot => assert!(r.recv_pauses > 0, "{what}: never paused: {r:?}"),
        RecvMode::OneShot => {}
    }
}

/// Frames of many sizes (empty ones too), none with a `\n` inside, so that
/// every framing can carry them.
fn assorted_frames(n: usize, largest: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|k| {
            let len = (k * 7919) % (largest + 1);
            (0..len)
                .map(|i| b'A' + ((i + k) % 26) as u8)
                .collect::<Vec<u8>>()
        })
        .collect()
}

/// The kernel keeps one multishot recv armed per connection: 10 clients
/// doing 50 round trips each cost about 10 recv SQEs, not 500 as one-shot
/// recvs do. (This is the counter behind the SQEs-per-echo figure.)
#[test]
fn multishot_recv_is_armed_once_per_connection() {
    if skipped() {
        return;
    }
    const CLIENTS: u64 = 10;
    const ROUNDS: u64 = 50;
    for mode in MODES {
        let options = ring(mode, 1024, 8192);
        let server = Server::start_with(config(Framing::Length), options, |_| {});
        let addr = server.addr;
        ping_pong_clients(addr, CLIENTS, ROUNDS, |c, k| {
            format!("{c}:{k}").into_bytes()
        });
        let report = server.stop();
        let echoes = get(&report.stats.frames);
        let r = &report.ring;
        eprintln!(
            "{mode:?}: {} recv SQEs, {} SQEs for {echoes} echoes ({:.3} recv SQEs per echo): {r:?}",
            r.recvs,
            r.sqes,
            r.recvs as f64 / echoes as f64
        );
        assert_eq!(echoes, CLIENTS * ROUNDS);
        assert_eq!(get(&report.stats.errors), 0);
        assert_eq!(r.enobufs, 0, "1024 buffers for 10 clients");
        match (mode, r.recv_mode) {
            // One per echo, and the one that sees the FIN.
            (RecvMode::OneShot, _) => assert_eq!(r.recvs, CLIENTS * (ROUNDS + 1)),
            // One per connection: 50 small frames are far from the budget.
            (asked, ran) if asked == ran => {
                assert_eq!(r.recvs, CLIENTS, "one multishot recv per connection")
            }
            // The kernel refused the mode asked for: one more each.
            (_, RecvMode::OneShot) => panic!("multishot refused on this kernel: {r:?}"),
            _ => assert!(r.recvs <= 2 * CLIENTS, "{r:?}"),
        }
    }
}

/// A client writes 300 KB of frames as fast as it can and reads its echoes
/// through a 4 KiB receive buffer, from a server with a 4 KiB send buffer,
/// `--max-pending` 1 KiB and 8 provided buffers of 1 KiB: echoes pile up
/// to the limit again and again. A budgeted multishot recv ends at its
/// budget, so the pile stays within the limit plus an unfinished frame that
/// a receive completed plus one buffer; a plain multishot recv is
/// cancelled, the bytes that
/// came in completions posted before the cancel landed are echoed too, and
/// the pile stays within the bound the README argues ("How the io_uring
/// loop works"; plus one buffer per completion already posted). Either way it is armed again once the echoes
/// drain, and every byte comes back.
#[test]
fn echoes_piling_past_max_pending_pause_the_recv_and_all_come_back() {
    if skipped() {
        return;
    }
    const MAX_PENDING: usize = 1024;
    const LARGEST: usize = 2000;
    let (buffers, buffer_size) = (8u16, 1024u32);
    for (mode, framing) in MODES.into_iter().flat_map(|m| Framing::ALL.map(|f| (m, f))) {
        let config = ServerConfig {
            max_pending: MAX_PENDING,
            ..config(framing)
        };
        let server = Server::start_with(config, ring(mode, buffers, buffer_size), |l| {
            socket2::SockRef::from(l)
                .set_send_buffer_size(4096)
                .unwrap();
        });
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&server.addr.into()).unwrap();
        let mut s: TcpStream = socket.into();
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let frames = assorted_frames(300, LARGEST);
        let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
        let bytes = wire(framing, &refs);
        let writer = {
            let mut w = s.try_clone().unwrap();
            let bytes = bytes.clone();
            thread::spawn(move || {
                w.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
                w.write_all(&bytes).unwrap();
                w.shutdown(std::net::Shutdown::Write).unwrap();
            })
        };
        let got = read_exact(&mut s, bytes.len());
        assert!(got == bytes, "{mode:?}, {framing}: echoed bytes differ");
        expect_eof(&mut s);
        writer.join().unwrap();
        let report = server.stop();
        let r = &report.ring;
        let what = format!("{mode:?}, {framing}");
        eprintln!("{what}: {r:?}");
        assert_eq!(get(&report.stats.errors), 0, "{what}");
        if framing != Framing::Raw {
            assert_eq!(get(&report.stats.frames), 300, "{what}");
        }
        assert_backpressure_paused(r, &what);
        // Armed again after a pause (the last one may take the FIN in a
        // completion posted before its cancel landed).
        assert!(r.recvs > 1, "{what}: {r:?}");
        // The limit, an unfinished frame a receive completed, and what the
        // mode lets arrive past the limit: one buffer with a budget (its
        // last receive may fill a whole one) or a one-shot recv, every
        // buffer with a cancelled multishot.
        let past = match r.recv_mode {
            RecvMode::MultishotBudget | RecvMode::OneShot => buffer_size as usize,
            RecvMode::Multishot => usize::from(buffers) * buffer_size as usize,
        };
        let bound = MAX_PENDING + LARGEST + 4 + past;
        assert!(
            r.most_pending <= bound,
            "{what}: {} echo bytes waited, over the bound of {bound}",
            r.most_pending
        );
    }
}

/// Many frames in one write, and writes that split frames anywhere (one
/// byte, a length prefix in two, a line without its `\n`), in every framing
/// and both recv modes, with buffers small enough that frames straddle
/// them: every echo comes back, exactly, in order.
#[test]
fn pipelined_frames_in_every_framing_come_back_exactly() {
    if skipped() {
        return;
    }
    for mode in MODES {
        for framing in Framing::ALL {
            let server = Server::start_with(config(framing), ring(mode, 64, 256), |_| {});
            let mut s = connect(server.addr);
            let frames = assorted_frames(400, 700);
            let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
            let bytes = wire(framing, &refs);
            let reader = {
                let mut r = s.try_clone().unwrap();
                let n = bytes.len();
                thread::spawn(move || read_exact(&mut r, n))
            };
            // Odd cuts: 1 byte, 3 (inside a length prefix), a prime, ...
            let mut rest = &bytes[..];
            for cut in [1usize, 3, 2, 4099, 17, 65_536].into_iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (now, later) = rest.split_at(cut.min(rest.len()));
                s.write_all(now).unwrap();
                rest = later;
            }
            let got = reader.join().unwrap();
            assert!(got == bytes, "{framing}, {mode:?}: echoes differ");
            s.shutdown(std::net::Shutdown::Write).unwrap();
            expect_eof(&mut s);
            let report = server.stop();
            assert_eq!(get(&report.stats.errors), 0, "{framing}");
            if framing != Framing::Raw {
                assert_eq!(get(&report.stats.frames), 400, "{framing}");
            }
        }
    }
}

/// A frame of 300 KB through provided buffers of 1 KiB: one frame is
/// hundreds of receives (and the 16-buffer ring runs dry under it), and its
/// echo, a frame either side of it, comes back exactly.
#[test]
fn a_frame_of_many_provided_buffers_comes_back_exactly() {
    if skipped() {
        return;
    }
    let big: Vec<u8> = (0..300_000u32)
        .map(|i| b'a' + (i.wrapping_mul(31) % 26) as u8)
        .collect();
    for mode in MODES {
        for framing in Framing::ALL {
            let server = Server::start_with(config(framing), ring(mode, 16, 1024), |_| {});
            let mut s = connect(server.addr);
            let bytes = wire(framing, &[b"before", &big, b"after"]);
            let reader = {
                let mut r = s.try_clone().unwrap();
                let n = bytes.len();
                thread::spawn(move || read_exact(&mut r, n))
            };
            s.write_all(&bytes).unwrap();
            let got = reader.join().unwrap();
            assert!(got == bytes, "{framing}, {mode:?}: echo differs");
            s.shutdown(std::net::Shutdown::Write).unwrap();
            expect_eof(&mut s);
            let report = server.stop();
            assert_eq!(get(&report.stats.errors), 0, "{framing}");
            if framing != Framing::Raw {
                assert_eq!(get(&report.stats.frames), 3, "{framing}");
                assert_eq!(get(&report.stats.bytes), 11 + big.len() as u64);
            }
            assert!(report.ring.recvs >= 1, "{framing}: {:?}", report.ring);
        }
    }
}

/// Shutdown with echoes owed and an unfinished frame at the end, in every
/// framing and both recv modes: each client gets the echo of every whole
/// frame it sent before the signal, then EOF; the unfinished bytes are
/// dropped, not echoed, and no connection is cut.
#[test]
fn shutdown_drain_echoes_every_whole_frame_received_in_both_recv_modes() {
    if skipped() {
        return;
    }
    for mode in MODES {
        for framing in Framing::ALL {
            let server = Server::start_with(config(framing), ring(mode, 1024, 8192), |_| {});
            let mut clients = Vec::new();
            for c in 0..10 {
                let mut s = connect(server.addr);
                let first = wire(framing, &[b"first"]);
                s.write_all(&first).unwrap();
                assert_eq!(read_exact(&mut s, first.len()), first);
                let frames: Vec<Vec<u8>> =
                    (0..20).map(|k| format!("c{c}f{k}").into_bytes()).collect();
                let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
                let mut bytes = wire(framing, &refs);
                let whole = bytes.len();
                if framing != Framing::Raw {
                    // An unfinished frame: a length prefix of 100 and 3 of
                    // its bytes, or a line without its `\n`.
                    let tail: &[u8] = match framing {
                        Framing::Length => &[0, 0, 0, 100, b'a', b'b', b'c'],
                        _ => b"no newline",
                    };
                    bytes.extend_from_slice(tail);
                }
                s.write_all(&bytes).unwrap();
                clients.push((s, bytes, whole));
            }
            // Every byte is in the server's receive queue (or taken) first.
            let until = Instant::now() + READ_TIMEOUT;
            while clients.iter().any(|(s, _, _)| unsent(s) > 0) {
                assert!(Instant::now() < until, "bytes never left");
                thread::sleep(Duration::from_millis(1));
            }
            server.shutdown.trigger();
            for (mut s, bytes, whole) in clients {
                assert_eq!(
                    read_exact(&mut s, whole),
                    &bytes[..whole],
                    "{framing}, {mode:?}"
                );
                expect_eof(&mut s);
            }
            let report = server.join(Duration::from_secs(20));
            let st = &report.stats;
            assert_eq!(get(&st.cut), 0, "{framing}");
            assert_eq!(get(&st.errors), 0, "{framing}");
            if framing != Framing::Raw {
                assert_eq!(get(&st.frames), 10 * 21, "{framing}");
            }
        }
    }
}
