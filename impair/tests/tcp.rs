//! The TCP relay over real sockets on 127.0.0.1: split, coalesce, delay and
//! jitter keep every byte in order; FIN is passed on both ways;
//! `--reset-after N` resets right after byte N; and the relay's buffers stay
//! within `--buffer` when the upstream stops reading.

// Helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use impair::cli::Direction;
use impair::{Relay, TcpConfig};

use support::*;

#[test]
fn split_with_delay_and_jitter_keeps_every_byte_in_order_both_ways() {
    let mut config = TcpConfig::new(tcp_echo());
    config.toxics.split = Some(7);
    config.toxics.split_gap = Duration::ZERO;
    config.toxics.delay = Duration::from_millis(2);
    config.toxics.jitter = Duration::from_millis(2);
    let relay = Relay::tcp(localhost(), config).unwrap();

    let data = bytes(200_000, 5);
    let mut c = connect(relay.addr);
    let mut writer = c.try_clone().unwrap();
    let sent = data.clone();
    // Write from another thread while this one reads: the echo comes back
    // while we are still sending, and neither side may block the other.
    let w = std::thread::spawn(move || {
        for piece in sent.chunks(3000) {
            writer.write_all(piece).unwrap();
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let echoed = read_to_end(&mut c);
    w.join().unwrap();
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data, "the echo differs from what was sent");

    let s = &relay.stats;
    for d in [&s.up, &s.down] {
        assert_eq!(d.bytes_out.load(Relaxed), data.len() as u64);
        // Pieces of at most 7 bytes: at least len/7 writes.
        assert!(d.sent.load(Relaxed) >= data.len() as u64 / 7);
    }
    // Both FINs went through: the connection ended by both sides closing.
    wait_for("connections closed", &s.closed, 1);
    assert_eq!(s.resets.load(Relaxed), 0);
    relay.stop().unwrap();
}

#[test]
fn coalesce_merges_separate_writes_into_one_and_keeps_the_bytes() {
    let (upstream, up_addr) = tcp_listener();
    let mut config = TcpConfig::new(up_addr);
    // A long window: the five writes below (each waits until the relay has
    // read the one before) always fall into it, however busy the machine.
    config.toxics.coalesce = Some(Duration::from_secs(2));
    config.direction = Direction::Up;
    let relay = Relay::tcp(localhost(), config).unwrap();

    let mut c = connect(relay.addr);
    c.set_nodelay(true).unwrap();
    let mut server = accept(&upstream);
    let s = &relay.stats;
    let mut sent = Vec::new();
    for i in 0..5u64 {
        let msg = format!("msg {i}\n");
        c.write_all(msg.as_bytes()).unwrap();
        sent.extend_from_slice(msg.as_bytes());
        // The relay read this write on its own: five reads, not one.
        wait_for("relay reads", &s.up.received, i + 1);
    }
    // One write from the relay, one segment: the server's first read gets
    // all five messages at once (the "sticky packets" of 粘包).
    let mut buf = [0u8; 1024];
    let n = server.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], &sent[..]);
    // The relay counts a write after write() returns, which may be just
    // after our read: wait for the count, then check it is exactly one.
    wait_for("relay writes", &s.up.sent, 1);
    assert_eq!(s.up.sent.load(Relaxed), 1);
    assert_eq!(s.up.coalesced.load(Relaxed), 1);
    relay.stop().unwrap();
}

#[test]
fn half_close_is_passed_on_and_the_reply_still_arrives() {
    let (upstream, up_addr) = tcp_listener();
    let relay = Relay::tcp(localhost(), TcpConfig::new(up_addr)).unwrap();
    let mut c = connect(relay.addr);
    let mut server = accept(&upstream);
    c.write_all(b"question").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    // The server sees the bytes, then EOF: our FIN came through the relay.
    assert_eq!(read_to_end(&mut server), b"question");
    // ...and can still answer on its half, which the client reads, then EOF.
    server.write_all(b"answer").unwrap();
    server.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut c), b"answer");
    wait_for("closed", &relay.stats.closed, 1);
    relay.stop().unwrap();
}

#[test]
fn reset_after_n_bytes_down_the_client_reads_exactly_n_then_connection_reset() {
    let (upstream, up_addr) = tcp_listener();
    let mut config = TcpConfig::new(up_addr);
    config.toxics.reset_after = Some(1000);
    config.direction = Direction::Down;
    let relay = Relay::tcp(localhost(), config).unwrap();
    let mut c = connect(relay.addr);
    let mut server = accept(&upstream);
    let data = bytes(5000, 9);
    // The server may see the reset while writing; that is fine.
    let _ = server.write_all(&data);
    let (got, end) = read_until_error(&mut c);
    assert_eq!(got.len(), 1000, "the client should read exactly 1000 bytes");
    assert_eq!(&got[..], &data[..1000]);
    let e = end.expect_err("the connection should end with a reset, not EOF");
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    // The upstream gets a reset too (not a FIN): a read fails.
    let (_, up_end) = read_until_error(&mut server);
    assert_eq!(up_end.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(relay.stats.resets.load(Relaxed), 1);
    // The bytes the relay had read but not delivered are gone with the
    // connection, and so is their share of the gauge (before the RST left).
    assert_eq!(relay.stats.buffered.load(Relaxed), 0);
    relay.stop().unwrap();
}

#[test]
fn reset_after_n_bytes_up_the_server_reads_exactly_n() {
    let (upstream, up_addr) = tcp_listener();
    let mut config = TcpConfig::new(up_addr);
    config.toxics.reset_after = Some(1234);
    config.direction = Direction::Up;
    let relay = Relay::tcp(localhost(), config).unwrap();
    let mut c = connect(relay.addr);
    let mut server = accept(&upstream);
    let data = bytes(100_000, 10);
    let _ = c.write_all(&data);
    let (got, end) = read_until_error(&mut server);
    assert_eq!(got.len(), 1234);
    assert_eq!(&got[..], &data[..1234]);
    assert_eq!(end.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
    relay.stop().unwrap();
}

#[test]
fn memory_stays_bounded_when_the_upstream_stops_reading() {
    let (upstream, up_addr) = tcp_listener();
    let mut config = TcpConfig::new(up_addr);
    config.buffer = 16 * 1024;
    let relay = Relay::tcp(localhost(), config).unwrap();
    let mut c = connect(relay.addr);
    // The server accepts and then never reads.
    let _server = accept(&upstream);
    // Write until a write makes no progress for 2 s: the kernel buffers on
    // the way (ours, the relay's, the server's) are full and the relay has
    // stopped reading. A relay that buffered without bound would take all
    // 256 MiB instead.
    c.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let block = vec![7u8; 64 * 1024];
    let mut written = 0usize;
    let limit = 256 << 20;
    let stuck = loop {
        match c.write(&block) {
            Ok(n) => written += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break true;
            }
            Err(e) => panic!("write: {e}"),
        }
        if written >= limit {
            break false;
        }
    };
    let s = &relay.stats;
    let most = s.max_buffered.load(Relaxed);
    assert!(stuck, "wrote {written} bytes and the relay took them all");
    assert!(most > 0, "the relay never buffered anything");
    assert!(
        most <= 16 * 1024,
        "the relay held {most} bytes, over its 16 KiB bound"
    );
    assert!(s.up.bytes_in.load(Relaxed) < written as u64);
    relay.stop().unwrap();
}

#[test]
fn an_upstream_nobody_listens_on_resets_the_client() {
    // A bound socket that never listens: connecting to it is refused, and
    // while it lives nobody else (the relay itself!) can get its port.
    let hole = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    hole.bind(&localhost().into()).unwrap();
    let dead = hole.local_addr().unwrap().as_socket().unwrap();
    let relay = Relay::tcp(localhost(), TcpConfig::new(dead)).unwrap();
    let mut c = connect(relay.addr);
    let (got, end) = read_until_error(&mut c);
    assert!(got.is_empty());
    assert_eq!(end.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(relay.stats.refused.load(Relaxed), 1);
    relay.stop().unwrap();
}

#[test]
fn a_connection_that_ends_mid_stall_gives_its_buffered_bytes_back() {
    let (upstream, up_addr) = tcp_listener();
    let mut config = TcpConfig::new(up_addr);
    config.toxics.stall_after = Some(1000);
    config.toxics.stall = Duration::from_secs(60);
    config.direction = Direction::Down;
    let relay = Relay::tcp(localhost(), config).unwrap();
    let mut c = connect(relay.addr);
    let mut server = accept(&upstream);
    server.write_all(&bytes(5000, 11)).unwrap();
    let s = &relay.stats;
    // The relay has read all 5000 bytes, delivered 1000 and is stalled
    // with 4000 queued in the down pump.
    wait_for("bytes read from the server", &s.down.bytes_in, 5000);
    wait_for("stalls", &s.down.stalls, 1);
    let mut first = vec![0u8; 1000];
    c.read_exact(&mut first).unwrap();
    assert_eq!(s.buffered.load(Relaxed), 4000);
    // The client resets: the *up* pump fails, which drops the stalled down
    // pump in the middle of its sleep. Its 4000 bytes must leave the gauge.
    socket2::SockRef::from(&c)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(c);
    wait_for("resets", &s.resets, 1);
    assert_eq!(s.buffered.load(Relaxed), 0);
    relay.stop().unwrap();
}

#[test]
fn relays_over_ipv6_loopback() {
    let Ok(l) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("no ::1 in this sandbox; skipping the IPv6 test");
        return;
    };
    let up_addr = l.local_addr().unwrap();
    let relay = Relay::tcp("[::1]:0".parse().unwrap(), TcpConfig::new(up_addr)).unwrap();
    assert!(relay.addr.is_ipv6());
    let mut c = connect(relay.addr);
    let mut server = accept(&l);
    c.write_all(b"over v6").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut server), b"over v6");
    relay.stop().unwrap();
}
