//! The UDP relay over real sockets on 127.0.0.1: the seed decides exactly
//! which datagrams are lost, duplicated and reordered, in both directions;
//! a full queue drops the tail; an idle flow is forgotten.

// Helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::UdpSocket;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use impair::cli::Direction;
use impair::fate::{Dir, UdpToxics, fate};
use impair::{Relay, UdpConfig};

use support::{localhost, udp_echo, udp_socket, wait_for, wait_until};

#[derive(Debug, Default, PartialEq)]
struct Counts {
    lost: u64,
    duplicated: u64,
    reordered: u64,
}

/// What one link must do to `input` (sequence numbers in arrival order),
/// written from the rule in the README, independently of the relay's code:
/// a lost datagram vanishes; a duplicated one is sent twice; a datagram
/// marked for reordering is held until the next forwarded one has gone out
/// (a datagram marked while another is held is simply sent). Returns the
/// output, the counts, and whether something was still held at the end
/// (it would then leave only when the hold timer fires).
fn simulate(t: &UdpToxics, seed: u64, dir: Dir, input: &[u32]) -> (Vec<u32>, Counts, bool) {
    let mut out = Vec::new();
    let mut c = Counts::default();
    let mut held: Option<(u32, usize)> = None;
    for (n, &seq) in input.iter().enumerate() {
        let f = fate(t, seed, dir, n as u64);
        if f.lost {
            c.lost += 1;
            continue;
        }
        let copies = if f.duplicated { 2 } else { 1 };
        c.duplicated += u64::from(f.duplicated);
        if f.reordered && held.is_none() {
            held = Some((seq, copies));
            continue;
        }
        out.extend(std::iter::repeat_n(seq, copies));
        if let Some((h, hc)) = held.take() {
            out.extend(std::iter::repeat_n(h, hc));
            c.reordered += 1;
        }
    }
    let held_at_end = held.is_some();
    if let Some((h, hc)) = held {
        out.extend(std::iter::repeat_n(h, hc));
    }
    (out, c, held_at_end)
}

fn recv<'a>(s: &UdpSocket, buf: &'a mut [u8]) -> &'a [u8] {
    let n = s.recv(buf).unwrap();
    &buf[..n]
}

fn seq_of(buf: &[u8]) -> u32 {
    u32::from_be_bytes(buf[..4].try_into().unwrap())
}

#[test]
fn the_seed_decides_exactly_which_datagrams_are_lost_duplicated_and_reordered() {
    let toxics = UdpToxics {
        loss: 15.0,
        dup: 10.0,
        reorder: 15.0,
        ..UdpToxics::default()
    };
    let seed = 42;
    // Pick a count where neither link ends with a datagram held back, so the
    // run never waits for the hold timer.
    let (count, up, down) = (60u32..200)
        .find_map(|count| {
            let input: Vec<u32> = (0..count).collect();
            let up = simulate(&toxics, seed, Dir::Up, &input);
            // The echo server answers in the order it receives, so the
            // down link's datagram n is the n-th the up link delivered.
            let down = simulate(&toxics, seed, Dir::Down, &up.0);
            (!up.2 && !down.2).then_some((count, up, down))
        })
        .unwrap();
    assert!(
        up.1.lost > 0 && up.1.duplicated > 0 && up.1.reordered > 0,
        "{:?}",
        up.1
    );
    assert!(
        down.1.lost > 0 && down.1.duplicated > 0 && down.1.reordered > 0,
        "{:?}",
        down.1
    );

    let mut config = UdpConfig::new(udp_echo());
    config.toxics = toxics;
    config.seed = seed;
    // Long enough that the timer never releases a held datagram mid-burst
    // on a busy machine: the release is always "after the next one".
    config.reorder_hold = Duration::from_secs(5);
    let relay = Relay::udp(localhost(), config).unwrap();

    let client = udp_socket();
    client.connect(relay.addr).unwrap();
    let sender = client.try_clone().unwrap();
    std::thread::spawn(move || {
        for seq in 0..count {
            sender.send(&seq.to_be_bytes()).unwrap();
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    for i in 0..down.0.len() {
        let n = client
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("reply {i} of {}: {e}; got {got:?}", down.0.len()));
        assert_eq!(n, 4);
        got.push(seq_of(&buf));
    }
    assert_eq!(
        got, down.0,
        "the echoes, in order, should be exactly what the seed says"
    );

    let s = &relay.stats;
    for (d, want) in [(&s.up, &up.1), (&s.down, &down.1)] {
        wait_for("reordered", &d.reordered, want.reordered);
        let have = Counts {
            lost: d.lost.load(Relaxed),
            duplicated: d.duplicated.load(Relaxed),
            reordered: d.reordered.load(Relaxed),
        };
        assert_eq!(&have, want);
        assert_eq!(d.tail_dropped.load(Relaxed), 0);
    }
    assert_eq!(s.up.received.load(Relaxed), u64::from(count));
    // Counted after each send() returns, so possibly just after our recv.
    wait_for("datagrams sent down", &s.down.sent, down.0.len() as u64);
    assert_eq!(s.down.sent.load(Relaxed), down.0.len() as u64);
    assert_eq!(s.opened.load(Relaxed), 1);
    relay.stop().unwrap();
}

#[test]
fn a_full_queue_drops_the_tail_and_counts_it() {
    // 8 kbit/s: each 100-byte datagram takes 100 ms on the "wire", so a
    // burst of 40 finds the 4-datagram queue full almost at once.
    let upstream = udp_socket();
    let mut config = UdpConfig::new(upstream.local_addr().unwrap());
    config.rate = Some(8_000);
    config.queue = 4;
    config.direction = Direction::Up;
    let relay = Relay::udp(localhost(), config).unwrap();

    let client = udp_socket();
    client.connect(relay.addr).unwrap();
    for seq in 0..40u32 {
        let mut d = vec![0u8; 100];
        d[..4].copy_from_slice(&seq.to_be_bytes());
        client.send(&d).unwrap();
    }
    let s = &relay.stats;
    wait_for("datagrams received", &s.up.received, 40);
    let dropped = s.up.tail_dropped.load(Relaxed);
    // The queue holds 4; at most the one the link task took off it and one
    // that finished its 100 ms on the wire during the burst get through.
    assert!((34..=36).contains(&dropped), "tail-dropped {dropped}");
    // The queue's 4, the one being sent, and a newcomer counted for the
    // instant before the full queue refuses it.
    assert!(
        s.max_buffered.load(Relaxed) <= 6 * 100,
        "buffered {} bytes, over the queue",
        s.max_buffered.load(Relaxed)
    );
    // What got through is the head of the burst, in order.
    let mut buf = [0u8; 200];
    let mut got = Vec::new();
    for _ in 0..(40 - dropped) {
        let (n, _) = upstream.recv_from(&mut buf).unwrap();
        assert_eq!(n, 100);
        got.push(seq_of(&buf));
    }
    let want: Vec<u32> = (0..(40 - dropped) as u32).collect();
    assert_eq!(got, want);
    // Everything sent or dropped: nothing is left counted as buffered.
    wait_until("buffered back to 0", || s.buffered.load(Relaxed) == 0);
    relay.stop().unwrap();
}

#[test]
fn an_idle_flow_is_forgotten_and_a_new_one_opened_later() {
    let mut config = UdpConfig::new(udp_echo());
    config.idle_timeout = Duration::from_millis(100);
    let relay = Relay::udp(localhost(), config).unwrap();
    let client = udp_socket();
    client.connect(relay.addr).unwrap();
    let mut buf = [0u8; 16];
    client.send(b"one").unwrap();
    assert_eq!(recv(&client, &mut buf), b"one");
    wait_for("flows closed", &relay.stats.closed, 1);
    client.send(b"two").unwrap();
    assert_eq!(recv(&client, &mut buf), b"two");
    assert_eq!(relay.stats.opened.load(Relaxed), 2);
    relay.stop().unwrap();
}

#[test]
fn flows_over_max_flows_are_refused_and_the_others_served() {
    let mut config = UdpConfig::new(udp_echo());
    config.max_flows = 1;
    let relay = Relay::udp(localhost(), config).unwrap();
    let (a, b) = (udp_socket(), UdpSocket::bind(localhost()).unwrap());
    a.connect(relay.addr).unwrap();
    b.connect(relay.addr).unwrap();
    let mut buf = [0u8; 16];
    a.send(b"first").unwrap();
    assert_eq!(recv(&a, &mut buf), b"first");
    b.send(b"second").unwrap();
    wait_for("refused", &relay.stats.refused, 1);
    a.send(b"still").unwrap();
    assert_eq!(recv(&a, &mut buf), b"still");
    relay.stop().unwrap();
}
