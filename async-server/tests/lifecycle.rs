//! Connection lifecycle for both models: graceful shutdown with clients
//! mid-conversation, `--max-conns` refusal, `--idle-timeout`.
// Test code: a panic is a failed test, so unwrap freely (clippy.toml
// allows it only inside #[test] functions, not in their helpers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use async_server::Model;
use common::Framing;
use support::{READ_TIMEOUT, Server, config, connect, counts, payload, read_to_eof, wire};

/// Wait until the kernel has no unacknowledged bytes for this socket
/// (`SIOCOUTQ` == 0): everything we sent is in the server's receive queue.
/// A condition checked in a bounded loop, not a guess with `sleep`.
fn wait_until_acked(s: &TcpStream) {
    let deadline = Instant::now() + READ_TIMEOUT;
    loop {
        let mut queued: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (SIOCOUTQ for TCP) writes one c_int we own.
        let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
        assert_eq!(r, 0, "ioctl(SIOCOUTQ): {}", std::io::Error::last_os_error());
        if queued == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{queued} bytes never acknowledged"
        );
        std::thread::yield_now();
    }
}

fn echo(s: &mut TcpStream, framing: Framing, msg: &[u8]) {
    let w = wire(framing, &[msg]);
    s.write_all(&w).unwrap();
    let mut got = vec![0; w.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, w);
}

#[test]
fn shutdown_mid_conversation_returns_every_owed_echo() {
    for model in Model::ALL {
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
            let (accepted, _, errors, frames, _) = counts(&server.join());
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
/// once the client reads, every acknowledged byte must come back, then EOF.
/// (A server that simply closed would send RST and lose them.)
#[test]
fn shutdown_while_backpressured_echoes_everything_received() {
    let pattern: Vec<u8> = (0..(64 * 1024 + 251)).map(|k| (k % 251) as u8).collect();
    for model in Model::ALL {
        let mut cfg = config(Framing::Raw);
        cfg.max_pending = 16 * 1024;
        let server = Server::start(model, cfg);
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(16 * 1024).unwrap();
        sock.set_send_buffer_size(16 * 1024).unwrap();
        sock.connect(&server.addr.into()).unwrap();
        let mut s: TcpStream = sock.into();
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        // Write until a write makes no progress for 300 ms: every buffer on
        // the way is full and the server has paused reading us.
        s.set_write_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut sent = 0usize;
        while sent < 64 << 20 {
            let off = sent % 251;
            match s.write(&pattern[off..off + 16 * 1024]) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        let mut unacked: libc::c_int = 0;
        // SAFETY: TIOCOUTQ writes one c_int we own.
        assert_eq!(
            unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut unacked) },
            0
        );
        let received = sent - unacked as usize;
        server.shutdown.trigger();
        let got = read_to_eof(&mut s);
        assert!(
            got.len() >= received,
            "{}: {} bytes echoed, but the server had received {received}",
            model.name(),
            got.len()
        );
        assert!(
            got.iter().enumerate().all(|(k, &b)| b == (k % 251) as u8),
            "{}",
            model.name()
        );
        drop(s);
        let (_, _, errors, _, _) = counts(&server.join());
        assert_eq!(errors, 0, "{}", model.name());
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
    for model in Model::ALL {
        let mut cfg = config(Framing::Line);
        cfg.max_conns = 2;
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
        let (accepted, refused, _, _, _) = counts(&server.stop());
        assert_eq!(accepted, 3, "{}", model.name());
        assert!(refused >= 1, "{}", model.name());
    }
}

#[test]
fn idle_client_is_closed() {
    for model in Model::ALL {
        let mut cfg = config(Framing::Line);
        cfg.idle_timeout = Some(Duration::from_millis(300));
        let server = Server::start(model, cfg);
        let mut s = connect(server.addr);
        echo(&mut s, Framing::Line, b"then silence");
        // The next read returns EOF once the server gives up on us (the
        // read timeout is far longer than the idle timeout).
        let mut buf = [0u8; 8];
        assert_eq!(s.read(&mut buf).unwrap(), 0, "{}", model.name());
        let (_, _, errors, frames, _) = counts(&server.stop());
        assert_eq!((errors, frames), (1, 1), "{}", model.name());
    }
}

/// A client that sends but never reads makes no progress either: once the
/// server cannot write to it for the idle time, it is closed too.
#[test]
fn client_that_never_reads_is_closed_when_idle() {
    for model in Model::ALL {
        let mut cfg = config(Framing::Raw);
        cfg.idle_timeout = Some(Duration::from_millis(300));
        cfg.max_pending = 16 * 1024;
        let server = Server::start(model, cfg);
        let mut s = connect(server.addr);
        s.set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let chunk = vec![b'z'; 64 * 1024];
        let mut sent = 0usize;
        // Fill every buffer until our write blocks (bounded by 64 MiB).
        while sent < 64 << 20 {
            match s.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        // Now read: echoes, then EOF or a reset (the server closed with our
        // unread bytes still in its queue).
        let mut got = Vec::new();
        match s.read_to_end(&mut got) {
            Ok(_) => {}
            Err(e) if common::net::is_disconnect(&e) => {}
            Err(e) => panic!("{}: {e}", model.name()),
        }
        assert!(
            got.len() < sent,
            "{}: everything was echoed, nothing was idle",
            model.name()
        );
        let (_, _, errors, _, _) = counts(&server.stop());
        assert_eq!(errors, 1, "{}", model.name());
    }
}
