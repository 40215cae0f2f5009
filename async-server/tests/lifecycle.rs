//! Connection lifecycle for every model (and the event loop with two loops
//! in each balance mode): graceful shutdown with clients
//! mid-conversation, `--max-conns` refusal, `--idle-timeout`.
// Test code: a panic is a failed test, so unwrap freely (clippy.toml
// allows it only inside #[test] functions, not in their helpers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::Framing;
use support::{
    Counts, READ_TIMEOUT, Server, config, connect, counts, payload, read_to_eof, stream_chunk,
    unacked, wait_until_acked, wire, write_until_blocked,
};

fn echo(s: &mut TcpStream, framing: Framing, msg: &[u8]) {
    let w = wire(framing, &[msg]);
    s.write_all(&w).unwrap();
    let mut got = vec![0; w.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, w);
}

#[test]
fn shutdown_mid_conversation_returns_every_owed_echo() {
    for model in support::variants() {
        for framing in Framing::ALL {
            let what = format!("{} / {framing}", model.name());
            let server = Server::start(model, config(framing));
            let mut clients = Vec::new();
            for c in 0..20 {
                let mut s = connect(server.addr);
                // A conversation under way: five echoes, each awaited...
                for i in 0..5 {
                    echo(&mut s, framing, &payload(c, i));
                }
                // ...and five more sent but not yet read: owed.
                let owed: Vec<Vec<u8>> = (5..10).map(|i| payload(c, i)).collect();
                let refs: Vec<&[u8]> = owed.iter().map(Vec::as_slice).collect();
                let owed = wire(framing, &refs);
                s.write_all(&owed).unwrap();
                clients.push((s, owed));
            }
            for (s, _) in &clients {
                wait_until_acked(s);
            }
            server.shutdown.trigger();
            for (c, (mut s, owed)) in clients.into_iter().enumerate() {
                // Every owed echo, then the server's FIN.
                assert_eq!(read_to_eof(&mut s), owed, "{what}: client {c}");
            }
            let addr = server.addr;
            let Counts {
                accepted,
                errors,
                frames,
                ..
            } = counts(&server.join());
            assert_eq!((accepted, errors), (20, 0), "{what}");
            if framing != Framing::Raw {
                assert_eq!(frames, 200, "{what}");
            }
            // The listening socket is closed: new clients are refused.
            let e = TcpStream::connect(addr).expect_err("connected after shutdown");
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{what}");
        }
    }
}

/// Shutdown while a connection is backpressured: the server has stopped
/// reading from a client that does not read, so bytes the kernel has
/// acknowledged sit unread in the server's receive queue. They are owed too:
/// once the client reads, every frame of them must come back, then EOF.
/// (A server that simply closed would send RST and lose them.)
#[test]
fn shutdown_while_backpressured_echoes_everything_received() {
    for model in support::variants() {
        for framing in Framing::ALL {
            let what = format!("{} / {framing}", model.name());
            let mut cfg = config(framing);
            cfg.common.max_pending = 16 * 1024;
            let server = Server::start(model, cfg);
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            sock.set_recv_buffer_size(16 * 1024).unwrap();
            sock.set_send_buffer_size(16 * 1024).unwrap();
            sock.connect(&server.addr.into()).unwrap();
            let mut s: TcpStream = sock.into();
            s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
            // Every buffer on the way full, the server's reading paused.
            let sent = write_until_blocked(&mut s, framing, 64 << 20);
            let received = sent - unacked(&s);
            server.shutdown.trigger();
            let got = read_to_eof(&mut s);
            // Every whole frame received; at most one is unfinished (40
            // bytes on the wire at most).
            assert!(
                got.len() + 40 >= received,
                "{what}: {} bytes echoed, but the server had received {received}",
                got.len()
            );
            let chunk = stream_chunk(framing);
            assert!(
                got.iter()
                    .enumerate()
                    .all(|(k, &b)| b == chunk[k % chunk.len()]),
                "{what}: the echoes are not the bytes sent"
            );
            drop(s);
            let Counts { errors, .. } = counts(&server.join());
            assert_eq!(errors, 0, "{what}");
        }
    }
}

/// Refused means: accepted and closed at once. The client sees EOF (or a
/// reset, or a failed write), never an echo.
fn is_refused(s: &mut TcpStream) -> bool {
    if s.write_all(b"anyone?\n").is_err() {
        return true;
    }
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if common::net::is_disconnect(&e) => true,
        Err(e) => panic!("unexpected {e}"),
    }
}

#[test]
fn over_max_conns_is_refused_and_a_freed_slot_is_reused() {
    for model in support::variants() {
        let mut cfg = config(Framing::Line);
        cfg.common.max_conns = 2;
        let server = Server::start(model, cfg);
        let mut a = connect(server.addr);
        let mut b = connect(server.addr);
        // An echo on each proves both hold a slot.
        echo(&mut a, Framing::Line, b"a");
        echo(&mut b, Framing::Line, b"b");
        let mut c = connect(server.addr);
        assert!(
            is_refused(&mut c),
            "{}: third client was served",
            model.name()
        );
        drop(a);
        // The slot frees once the server has seen `a` close; each attempt is
        // a round trip through the server, so this loop is paced by it.
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            let mut d = connect(server.addr);
            if !is_refused(&mut d) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: slot never freed",
                model.name()
            );
        }
        echo(&mut b, Framing::Line, b"b still served");
        drop(b);
        let Counts {
            accepted, refused, ..
        } = counts(&server.stop());
        assert_eq!(accepted, 3, "{}", model.name());
        assert!(refused >= 1, "{}", model.name());
    }
}

#[test]
fn idle_client_is_closed() {
    for model in support::variants() {
        let mut cfg = config(Framing::Line);
        cfg.common.idle_timeout = Some(Duration::from_millis(300));
        let server = Server::start(model, cfg);
        let mut s = connect(server.addr);
        echo(&mut s, Framing::Line, b"then silence");
        // The next read returns EOF once the server gives up on us (the
        // read timeout is far longer than the idle timeout).
        let mut buf = [0u8; 8];
        assert_eq!(s.read(&mut buf).unwrap(), 0, "{}", model.name());
        let Counts {
            errors,
            timed_out,
            frames,
            ..
        } = counts(&server.stop());
        assert_eq!((errors, timed_out, frames), (0, 1, 1), "{}", model.name());
    }
}

/// Block until the peer has closed or reset this socket, without reading
/// (reading would take the echoes and end the stall). `poll` for
/// `POLLRDHUP` only: unread echoes make the socket readable, and `POLLIN`
/// would answer at once; `POLLHUP` and `POLLERR` (a reset) come anyway.
fn wait_until_closed_by_peer(s: &TcpStream, what: &str) {
    let mut fd = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    let ms = READ_TIMEOUT.as_millis() as libc::c_int;
    // SAFETY: one pollfd we own, and its length 1.
    let n = unsafe { libc::poll(&mut fd, 1, ms) };
    assert_eq!(n, 1, "{what}: not closed within {READ_TIMEOUT:?}");
    assert!(
        fd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0,
        "{what}: revents {:#x}",
        fd.revents
    );
}

/// A client that sends and stops reading: once the kernel has taken none
/// of its echoes for `--stall-timeout`, the server closes it (a blocked
/// write is not activity), counts it as timed out, and serves the others
/// all along.
#[test]
fn client_that_stops_reading_is_closed_by_the_stall_timeout_while_another_is_served() {
    for model in support::variants() {
        for framing in Framing::ALL {
            let what = format!("{} / {framing}", model.name());
            let mut cfg = config(framing);
            cfg.common.stall_timeout = Duration::from_millis(300);
            cfg.common.max_pending = 16 * 1024;
            let server = Server::start(model, cfg);
            let mut good = connect(server.addr);
            echo(&mut good, framing, b"before");
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            sock.set_recv_buffer_size(16 * 1024).unwrap();
            sock.connect(&server.addr.into()).unwrap();
            let mut stuck: TcpStream = sock.into();
            let sent = write_until_blocked(&mut stuck, framing, 64 << 20);
            assert!(sent < 64 << 20, "{what}: the server read 64 MiB unechoed");
            echo(&mut good, framing, b"while the other one stalls");
            wait_until_closed_by_peer(&stuck, &what);
            echo(&mut good, framing, b"after");
            drop((good, stuck));
            let Counts {
                accepted,
                errors,
                timed_out,
                ..
            } = counts(&server.stop());
            assert_eq!((accepted, errors, timed_out), (2, 0, 1), "{what}");
        }
    }
}
