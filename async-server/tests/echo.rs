//! Echo correctness for every model (and the event loop with two loops in
//! each balance mode) over real sockets: 1,000 concurrent
//! clients in every framing, half-close, truncated and oversized frames, a
//! client that never reads, and `--offload rayon` against inline work.
// Test code: a panic is a failed test, so unwrap freely (clippy.toml
// allows it only inside #[test] functions, not in their helpers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_server::{Model, Offload};
use common::Framing;
use support::{Counts, READ_TIMEOUT, Server, config, connect, counts, payload, read_to_eof, wire};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROUNDS: usize = 5;

async fn conversation(
    addr: SocketAddr,
    framing: Framing,
    c: usize,
    barrier: Arc<tokio::sync::Barrier>,
) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Every client is connected before any of them talks: the server really
    // holds them all at once.
    barrier.wait().await;
    for i in 0..ROUNDS {
        let w = wire(framing, &[&payload(c, i)]);
        s.write_all(&w).await.unwrap();
        let mut got = vec![0; w.len()];
        tokio::time::timeout(READ_TIMEOUT, s.read_exact(&mut got))
            .await
            .unwrap_or_else(|_| panic!("client {c}: echo {i} timed out"))
            .unwrap();
        assert_eq!(got, w, "client {c}, echo {i}");
    }
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(READ_TIMEOUT, s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(
        rest.is_empty(),
        "client {c}: {} unexpected bytes",
        rest.len()
    );
}

#[test]
fn thousand_concurrent_clients_every_framing_both_models() {
    // Each connection costs two descriptors in this process (client and
    // server end); the default soft limit of 1024 would not do.
    let (_, limit) = common::net::raise_fd_limit().unwrap();
    let clients = 1000.min((limit.saturating_sub(200) / 2) as usize);
    assert!(
        clients >= 100,
        "RLIMIT_NOFILE hard limit {limit} too low for this test"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for model in support::variants() {
        for framing in Framing::ALL {
            let server = Server::start(model, config(framing));
            let addr = server.addr;
            let barrier = Arc::new(tokio::sync::Barrier::new(clients));
            rt.block_on(async {
                let mut set = tokio::task::JoinSet::new();
                for c in 0..clients {
                    set.spawn(conversation(addr, framing, c, barrier.clone()));
                }
                while let Some(done) = set.join_next().await {
                    done.unwrap();
                }
            });
            let Counts {
                accepted,
                refused,
                errors,
                frames,
                bytes,
                ..
            } = counts(&server.stop());
            let want_bytes: usize = (0..clients)
                .flat_map(|c| (0..ROUNDS).map(move |i| payload(c, i).len()))
                .sum();
            let what = format!("{} / {framing}", model.name());
            assert_eq!(
                (accepted, refused, errors),
                (clients as u64, 0, 0),
                "{what}"
            );
            assert_eq!(bytes, want_bytes as u64, "{what}");
            if framing != Framing::Raw {
                // Raw has no frames: it counts reads.
                assert_eq!(frames, (clients * ROUNDS) as u64, "{what}");
            }
        }
    }
}

#[test]
fn half_close_gets_every_echo_then_eof() {
    for model in support::variants() {
        for framing in Framing::ALL {
            let server = Server::start(model, config(framing));
            let frames: [&[u8]; 3] = [b"first", b"", b"third frame"];
            let w = wire(framing, &frames);
            let mut s = connect(server.addr);
            s.write_all(&w).unwrap();
            // FIN: "I will send no more", but we still read.
            s.shutdown(std::net::Shutdown::Write).unwrap();
            assert_eq!(read_to_eof(&mut s), w, "{} / {framing}", model.name());
            let Counts { errors, .. } = counts(&server.stop());
            assert_eq!(errors, 0);
        }
    }
}

#[test]
fn truncated_last_frame_echoes_the_rest_and_counts_an_error() {
    for model in support::variants() {
        for (framing, sent, echoed) in [
            (Framing::Line, &b"whole\nhalf"[..], &b"whole\n"[..]),
            (
                Framing::Length,
                &b"\0\0\0\x02ok\0\0\0\x05abc"[..],
                &b"\0\0\0\x02ok"[..],
            ),
        ] {
            let server = Server::start(model, config(framing));
            let mut s = connect(server.addr);
            s.write_all(sent).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            assert_eq!(read_to_eof(&mut s), echoed, "{} / {framing}", model.name());
            let Counts { errors, frames, .. } = counts(&server.stop());
            assert_eq!((errors, frames), (1, 1), "{} / {framing}", model.name());
        }
    }
}

#[test]
fn oversized_frame_closes_only_that_connection() {
    for model in support::variants() {
        for (framing, bad) in [
            (Framing::Length, b"\xff\xff\xff\xff".to_vec()),
            (Framing::Line, vec![b'x'; 2000]),
        ] {
            let mut cfg = config(framing);
            cfg.common.max_frame = 1024;
            let server = Server::start(model, cfg);
            let mut good = connect(server.addr);
            let mut evil = connect(server.addr);
            evil.write_all(&bad).unwrap();
            // Closed: EOF, or a reset if our bytes were still unread.
            let mut buf = [0u8; 16];
            match evil.read(&mut buf) {
                Ok(0) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                other => panic!(
                    "{} / {framing}: expected close, got {other:?}",
                    model.name()
                ),
            }
            let w = wire(framing, &[b"still served"]);
            good.write_all(&w).unwrap();
            let mut got = vec![0; w.len()];
            good.read_exact(&mut got).unwrap();
            assert_eq!(got, w);
            drop(good);
            let Counts {
                accepted, errors, ..
            } = counts(&server.stop());
            assert_eq!((accepted, errors), (2, 1), "{} / {framing}", model.name());
        }
    }
}

/// A client that sends and never reads: the server must stop reading from it
/// (its bytes then pile up in the kernel buffers, which are bounded, until
/// the client's own `write` blocks) instead of buffering echoes forever.
#[test]
fn never_reading_client_is_throttled_and_loses_nothing() {
    const CAP: usize = 96 << 20;
    const BOUND: usize = 48 << 20;
    // Byte k of the stream is k % 251, so any offset can be checked.
    let pattern: Vec<u8> = (0..(64 * 1024 + 251)).map(|k| (k % 251) as u8).collect();
    for model in support::variants() {
        let mut cfg = config(Framing::Raw);
        cfg.common.max_pending = 64 * 1024;
        let server = Server::start(model, cfg);
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        // Small, fixed client buffers (this also turns off autotuning), so
        // what the client can push is mostly what the *server* holds.
        sock.set_recv_buffer_size(64 * 1024).unwrap();
        sock.set_send_buffer_size(64 * 1024).unwrap();
        sock.connect(&server.addr.into()).unwrap();
        let mut s: std::net::TcpStream = sock.into();
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut sent = 0usize;
        while sent < CAP {
            let off = sent % 251;
            match s.write(&pattern[off..off + 64 * 1024]) {
                Ok(n) => sent += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => panic!("{}: write failed after {sent} bytes: {e}", model.name()),
            }
        }
        eprintln!(
            "{}: a non-reading client could send {sent} bytes before blocking",
            model.name()
        );
        assert!(
            sent < BOUND,
            "{}: the server kept reading ({sent} bytes) from a client that never reads",
            model.name()
        );
        // Throttled, not dropped: every byte comes back once we read.
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let got = read_to_eof(&mut s);
        assert_eq!(got.len(), sent, "{}", model.name());
        assert!(
            got.iter().enumerate().all(|(k, &b)| b == (k % 251) as u8),
            "{}: bytes differ",
            model.name()
        );
        let Counts { errors, bytes, .. } = counts(&server.stop());
        assert_eq!((errors, bytes), (0, sent as u64));
    }
}

/// The same conversation with `--work` inline and on rayon: same bytes.
#[test]
fn rayon_offload_gives_the_same_bytes_as_inline() {
    let mut echoes = Vec::new();
    for offload in [Offload::None, Offload::Rayon] {
        let mut cfg = config(Framing::Length);
        cfg.common.work = 20;
        cfg.offload = offload;
        let server = Server::start(Model::Tokio, cfg);
        let clients: Vec<_> = (0..8)
            .map(|c| {
                let addr = server.addr;
                std::thread::spawn(move || {
                    let mut s = connect(addr);
                    // Pipelined: all ten frames in one write, so several are
                    // in flight to rayon at once and order must hold.
                    let frames: Vec<Vec<u8>> = (0..10).map(|i| payload(c, i)).collect();
                    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
                    let w = wire(Framing::Length, &refs);
                    s.write_all(&w).unwrap();
                    s.shutdown(std::net::Shutdown::Write).unwrap();
                    let got = read_to_eof(&mut s);
                    assert_eq!(got, w, "client {c} with {offload:?}");
                    got
                })
            })
            .collect();
        let got: Vec<Vec<u8>> = clients.into_iter().map(|h| h.join().unwrap()).collect();
        let Counts { errors, frames, .. } = counts(&server.stop());
        assert_eq!((errors, frames), (0, 80));
        echoes.push(got);
    }
    assert_eq!(echoes[0], echoes[1]);
}

/// The tokio model checks the shutdown flag instead of polling the signal's
/// future with every read (`StopSignal`): a connection waiting for its next
/// frame must still notice shutdown at once, not at the `--grace` deadline.
/// The grace period here is far longer than the read timeout, so a
/// connection that only ended at the deadline fails the test; `cut` counts
/// those. Both runtimes: one thread and a pool.
#[test]
fn tokio_connections_notice_shutdown_at_once_not_at_the_deadline() {
    for threads in [1, 2] {
        let mut cfg = config(Framing::Line);
        cfg.threads = threads;
        cfg.common.grace = Duration::from_secs(120);
        let server = Server::start(Model::Tokio, cfg);
        // One client between frames, one halfway through a frame. An echo
        // each first: both are accepted (not in the backlog, which shutdown
        // resets).
        let [mut idle, mut halfway] = [(); 2].map(|()| {
            let mut s = connect(server.addr);
            s.write_all(b"one\n").unwrap();
            let mut got = [0; 4];
            s.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"one\n");
            s
        });
        halfway.write_all(b"unfinish").unwrap();
        support::wait_until_acked(&halfway);
        server.shutdown.trigger();
        // The server's FIN, long before the deadline (or the read times out).
        assert_eq!(read_to_eof(&mut idle), b"", "{threads} thread(s)");
        assert_eq!(read_to_eof(&mut halfway), b"", "{threads} thread(s)");
        drop((idle, halfway));
        let Counts {
            accepted,
            cut,
            frames,
            ..
        } = counts(&server.join());
        assert_eq!((accepted, cut, frames), (2, 0, 2), "{threads} thread(s)");
    }
}

/// The tokio model's idle timer is moved lazily (`IdleTimer`): a frame only
/// notes that the client talked, and the timer looks when it fires. So a
/// client that talks more often than `--idle-timeout`, by whole frames or
/// by bytes of one unfinished frame, is never closed, however many idle
/// periods go by; once silent, it is. Pacing with `sleep` (100 ms steps
/// against a 1 s timeout), asserted by events: every echo comes back, then
/// EOF. Both runtimes at once, in two threads.
#[test]
fn tokio_idle_timer_is_moved_by_every_frame_and_every_byte() {
    let clients: Vec<_> = [1, 2]
        .into_iter()
        .map(|threads| {
            std::thread::spawn(move || {
                let mut cfg = config(Framing::Line);
                cfg.threads = threads;
                cfg.common.idle_timeout = Some(Duration::from_secs(1));
                let server = Server::start(Model::Tokio, cfg);
                let mut s = connect(server.addr);
                let step = Duration::from_millis(100);
                // Two idle periods of whole frames...
                for i in 0..20 {
                    std::thread::sleep(step);
                    let line = format!("frame {i}\n");
                    s.write_all(line.as_bytes()).unwrap();
                    let mut got = vec![0; line.len()];
                    s.read_exact(&mut got)
                        .unwrap_or_else(|e| panic!("{threads} thread(s), echo {i}: {e}"));
                    assert_eq!(got, line.as_bytes());
                }
                // ...then two of one frame, a byte at a time.
                let line = b"abcdefghijklmnopqrst\n";
                for &b in line {
                    std::thread::sleep(step);
                    s.write_all(&[b]).unwrap();
                }
                let mut got = vec![0; line.len()];
                s.read_exact(&mut got)
                    .unwrap_or_else(|e| panic!("{threads} thread(s), the trickled frame: {e}"));
                assert_eq!(got, line);
                // Silence: closed by the idle timeout.
                assert_eq!(read_to_eof(&mut s), b"", "{threads} thread(s)");
                let Counts {
                    timed_out, frames, ..
                } = counts(&server.stop());
                assert_eq!((timed_out, frames), (1, 21), "{threads} thread(s)");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}
