//! The server and the client library over real sockets on 127.0.0.1:0.

mod support;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::rng::SplitMix64;
use udp_echo::client::{self, ClientConfig, ClientError, Event};
use udp_echo::guard::PortSet;
use udp_echo::server::ServerConfig;
use udp_echo::wire::{self, Header, MAX_IPV4_PAYLOAD, MAX_IPV6_PAYLOAD};

use support::{TestServer, bytes, connected, is_timeout, socket_like};

fn messages(list: &[&[u8]]) -> Vec<io::Result<Vec<u8>>> {
    list.iter().map(|m| Ok(m.to_vec())).collect()
}

#[test]
fn echoes_0_1_1472_and_65507_byte_datagrams_byte_for_byte() {
    let server = TestServer::start(ServerConfig::default());
    // No header here: the server echoes whatever it gets, as `nc -u` sees.
    let s = connected(server.addr);
    let mut buf = vec![0u8; 70_000];
    for (i, len) in [0, 1, wire::ETHERNET_IPV4_PAYLOAD, MAX_IPV4_PAYLOAD]
        .into_iter()
        .enumerate()
    {
        let sent = bytes(len, i as u64);
        assert_eq!(s.send(&sent).unwrap(), len, "a datagram is sent whole");
        let n = s.recv(&mut buf).unwrap();
        assert_eq!(n, len);
        assert_eq!(&buf[..n], &sent[..], "{len}-byte echo differs");
    }
    let summary = server.stop();
    assert_eq!(summary.datagrams, 4);
    assert_eq!(summary.echoed, 4);
    assert_eq!(summary.bytes, (1 + 1472 + 65_507) as u64);
    assert_eq!(summary.peers, 1);
}

#[test]
fn keeps_message_boundaries() {
    let server = TestServer::start(ServerConfig::default());
    let s = connected(server.addr);
    // Three sends before any receive: TCP could hand these back as one
    // `read` of 9 bytes; UDP returns three datagrams, each whole.
    for m in [&b"one"[..], b"", b"three"] {
        s.send(m).unwrap();
    }
    let mut buf = [0u8; 64];
    for m in [&b"one"[..], b"", b"three"] {
        let n = s.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], m);
    }
    server.stop();
}

#[test]
fn ipv6_echo_up_to_the_ipv6_maximum() {
    let Ok(server) = TestServer::start_on("[::1]:0".parse().unwrap(), ServerConfig::default())
    else {
        eprintln!("no ::1 in this sandbox; skipping the IPv6 test");
        return;
    };
    let s = connected(server.addr);
    let mut buf = vec![0u8; 70_000];
    // 65,527 does not fit in IPv4 but does in IPv6: the server's buffer is
    // sized for it, so nothing is cut.
    for len in [5, MAX_IPV4_PAYLOAD + 1, MAX_IPV6_PAYLOAD] {
        let sent = bytes(len, 6);
        s.send(&sent).unwrap();
        let n = s.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &sent[..], "{len}");
    }
    let err = s.send(&bytes(MAX_IPV6_PAYLOAD + 1, 0)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EMSGSIZE));
    // And the client library over IPv6.
    let c = client::connect(server.addr).unwrap();
    let report = client::run(&c, messages(&[b"v6"]), &ClientConfig::default(), |_| {}).unwrap();
    assert_eq!((report.sent, report.received), (1, 1));
    assert_eq!(server.stop().echoed, 4);
}

#[test]
fn client_gets_every_echo_with_rtts() {
    let server = TestServer::start(ServerConfig::default());
    let c = client::connect(server.addr).unwrap();
    let mut echoes = Vec::new();
    let config = ClientConfig {
        window: 4,
        ..ClientConfig::default()
    };
    let payloads = messages(&[b"alpha", b"", b"gamma"])
        .into_iter()
        .chain(client::generated(20, 1472));
    let report = client::run(&c, payloads, &config, |e| {
        if let Event::Reply {
            seq, payload, len, ..
        } = e
        {
            echoes.push((*seq, payload.to_vec(), *len));
        }
    })
    .unwrap();
    assert_eq!(report.sent, 23);
    assert_eq!(report.transmissions, 23);
    assert_eq!(report.received, 23);
    assert_eq!((report.lost, report.duplicated, report.invalid), (0, 0, 0));
    assert_eq!(report.rtts.len(), 23);
    assert_eq!(echoes[0], (0, b"alpha".to_vec(), 11));
    assert_eq!(echoes[1], (1, b"".to_vec(), 6));
    assert_eq!(echoes[22].2, 1472);
    let summary = server.stop();
    assert_eq!(summary.datagrams, 23);
    assert_eq!(summary.bytes, 11 + 6 + 11 + 20 * 1472);
}

#[test]
fn a_65508_byte_datagram_fails_cleanly_on_the_client() {
    let server = TestServer::start(ServerConfig::default());
    // Straight from the kernel: EMSGSIZE, and nothing goes out.
    let s = connected(server.addr);
    let err = s.send(&bytes(MAX_IPV4_PAYLOAD + 1, 1)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EMSGSIZE), "{err}");
    // Through the client: a typed error that names the sizes.
    let c = client::connect(server.addr).unwrap();
    let err = client::run(
        &c,
        client::generated(1, MAX_IPV4_PAYLOAD + 1),
        &ClientConfig::default(),
        |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::TooLarge {
                seq: 0,
                len: 65_508,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("65508 bytes") && msg.contains("65507"),
        "{msg}"
    );
    // The largest legal one still goes through on the same socket.
    let report = client::run(
        &c,
        client::generated(1, MAX_IPV4_PAYLOAD),
        &ClientConfig::default(),
        |_| {},
    )
    .unwrap();
    assert_eq!(report.received, 1);
    let summary = server.stop();
    assert_eq!(summary.datagrams, 1, "the oversized datagrams never left");
}

/// Which of the first `n` datagrams a server with this seed drops, replaying
/// the same generator the server uses (one draw per datagram received).
fn expected_drops(percent: f64, seed: u64, n: usize) -> Vec<bool> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| rng.chance(percent)).collect()
}

#[test]
fn drop_with_a_fixed_seed_loses_exactly_the_expected_datagrams() {
    const N: usize = 20;
    let (percent, seed) = (30.0, 7);
    let drops = expected_drops(percent, seed, N);
    let expected_lost: Vec<u32> = (0..N as u32).filter(|&i| drops[i as usize]).collect();
    assert!(
        (3..N - 3).contains(&expected_lost.len()),
        "seed gives a useful mix: {expected_lost:?}"
    );

    let server = TestServer::start(ServerConfig {
        drop_percent: percent,
        seed,
        ..ServerConfig::default()
    });
    let c = client::connect(server.addr).unwrap();
    // No retries, stop-and-wait: datagram i is the server's i-th draw.
    let config = ClientConfig {
        timeout: Duration::from_millis(300),
        retries: 0,
        window: 1,
    };
    let mut lost = Vec::new();
    let report = client::run(&c, client::generated(N as u64, 32), &config, |e| {
        if let Event::Lost { seq, attempts } = e {
            assert_eq!(*attempts, 1);
            lost.push(*seq);
        }
    })
    .unwrap();
    assert_eq!(lost, expected_lost);
    assert_eq!(report.lost, expected_lost.len() as u64);
    assert_eq!(report.received, (N - expected_lost.len()) as u64);
    let summary = server.stop();
    assert_eq!(summary.dropped, expected_lost.len() as u64);
    assert_eq!(summary.echoed, report.received);
}

#[test]
fn retries_recover_every_dropped_datagram() {
    const N: usize = 12;
    let (percent, seed) = (30.0, 7);
    // With stop-and-wait, the server's draws are consumed in order: each
    // datagram takes draws until one says "keep".
    let draws = expected_drops(percent, seed, 10 * N);
    let mut expected_retries = Vec::new(); // (seq, attempt that got through)
    let mut draw = 0;
    for seq in 0..N as u32 {
        let mut attempt = 1;
        while draws[draw] {
            draw += 1;
            attempt += 1;
        }
        draw += 1;
        expected_retries.push((seq, attempt));
    }
    assert!(
        expected_retries.iter().all(|&(_, a)| a <= 4),
        "retries 3 suffice"
    );
    let total_drops: u64 = expected_retries
        .iter()
        .map(|&(_, a)| u64::from(a - 1))
        .sum();
    assert!(total_drops >= 3, "{expected_retries:?}");

    let server = TestServer::start(ServerConfig {
        drop_percent: percent,
        seed,
        ..ServerConfig::default()
    });
    let c = client::connect(server.addr).unwrap();
    let config = ClientConfig {
        timeout: Duration::from_millis(300),
        retries: 3,
        window: 1,
    };
    let mut got = Vec::new();
    let report = client::run(&c, client::generated(N as u64, 100), &config, |e| {
        if let Event::Reply { seq, attempt, .. } = e {
            got.push((*seq, *attempt));
        }
    })
    .unwrap();
    assert_eq!(got, expected_retries);
    assert_eq!(report.received, N as u64);
    assert_eq!(report.lost, 0);
    assert_eq!(report.transmissions, N as u64 + total_drops);
    let summary = server.stop();
    assert_eq!(summary.dropped, total_drops);
    assert_eq!(summary.datagrams, report.transmissions);
}

#[test]
fn guarded_source_port_gets_no_reply_while_others_do() {
    let guarded = socket_like("127.0.0.1:0".parse().unwrap());
    let port = guarded.local_addr().unwrap().port();
    let server = TestServer::start(ServerConfig {
        guard: format!("0-1023,{port}").parse().unwrap(),
        ..ServerConfig::default()
    });
    guarded.send_to(b"loop?", server.addr).unwrap();
    // The server handles datagrams in arrival order, so once the second
    // socket has its echo, the guarded datagram has been dealt with.
    let other = connected(server.addr);
    other.send(b"fine").unwrap();
    let mut buf = [0u8; 64];
    let n = other.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"fine");
    guarded.set_nonblocking(true).unwrap();
    let err = guarded.recv_from(&mut buf).unwrap_err();
    assert_eq!(
        err.kind(),
        io::ErrorKind::WouldBlock,
        "guarded port got a reply"
    );
    let summary = server.stop();
    assert_eq!(
        (summary.datagrams, summary.echoed, summary.guarded),
        (2, 1, 1)
    );
}

#[test]
fn default_guard_refuses_privileged_source_ports() {
    // Binding a port below 1024 needs root (or CAP_NET_BIND_SERVICE).
    let low = (1000..1024).find_map(|p| UdpSocket::bind(("127.0.0.1", p)).ok());
    let Some(low) = low else {
        eprintln!("cannot bind a port below 1024 here; skipping");
        return;
    };
    low.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let server = TestServer::start(ServerConfig::default());
    low.send_to(b"echo me", server.addr).unwrap();
    let mut buf = [0u8; 64];
    let err = low.recv_from(&mut buf).unwrap_err();
    assert!(is_timeout(&err), "{err}");
    assert_eq!(server.stop().guarded, 1);

    // With the guard off, the same port is answered.
    let server = TestServer::start(ServerConfig {
        guard: PortSet::none(),
        ..ServerConfig::default()
    });
    low.set_read_timeout(Some(support::READ_TIMEOUT)).unwrap();
    low.send_to(b"echo me", server.addr).unwrap();
    let (n, from) = low.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"echo me"[..], server.addr));
    server.stop();
}

#[test]
fn client_against_no_server_is_refused_quickly() {
    // Bind a port, then free it: nobody is listening there now.
    let addr = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let c = client::connect(addr).unwrap();
    // A reply timeout of an hour: ending at all (within the bound below)
    // proves the ICMP error ended the run, not a timeout.
    let config = ClientConfig {
        timeout: Duration::from_secs(3600),
        retries: 3,
        window: 1,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(client::run(&c, messages(&[b"anyone?"]), &config, |_| {}));
    });
    let err = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the client waited for its reply timeout: no ICMP error seen")
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Refused { server, seq: 0 } if server == addr),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("no UDP server at {addr}"))
    );
}

#[test]
fn a_burst_of_10000_datagrams_leaves_the_server_alive_and_answering() {
    let server = TestServer::start(ServerConfig::default());
    let flood = connected(server.addr);
    let payload = [0x55u8; 64];
    let start = Instant::now();
    let mut sent = 0u64;
    for _ in 0..10_000 {
        // A blocking UDP send never waits for the receiver: if the server's
        // receive buffer is full the kernel drops the datagram, and `send`
        // still succeeds. ENOBUFS would be loss too; tolerate it.
        match flood.send(&payload) {
            Ok(_) => sent += 1,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
            Err(e) => panic!("send: {e}"),
        }
        assert!(start.elapsed() < Duration::from_secs(20), "burst too slow");
    }
    assert!(sent > 0);
    // Whatever the kernel dropped, a new client is answered. Retries cover
    // the case where the probe lands while the queue is still full.
    let c = client::connect(server.addr).unwrap();
    let config = ClientConfig {
        timeout: Duration::from_millis(250),
        retries: 20,
        window: 1,
    };
    let report = client::run(&c, messages(&[b"still there?"]), &config, |_| {}).unwrap();
    assert_eq!(report.received, 1);
    let summary = server.stop();
    assert!(
        summary.datagrams >= 1 && summary.datagrams <= sent + 21,
        "{summary}"
    );
    assert!(summary.echoed >= 1);
    assert_eq!(summary.send_errors, 0, "{summary}");
}

/// A fake server the test drives by hand, to make the client see what a
/// real network can do: reordering, duplicates, late and foreign replies.
#[test]
fn client_counts_reordered_duplicated_late_and_invalid_replies() {
    let fake = socket_like("127.0.0.1:0".parse().unwrap());
    let addr = fake.local_addr().unwrap();
    let client_thread = std::thread::spawn(move || {
        let c = client::connect(addr).unwrap();
        let config = ClientConfig {
            timeout: Duration::from_millis(1500),
            retries: 0,
            window: 2,
        };
        let mut events = Vec::new();
        let report = client::run(&c, messages(&[b"a", b"b", b"c"]), &config, |e| {
            events.push(e.to_string());
        })
        .unwrap();
        (report, events)
    });
    let mut buf = [0u8; 64];
    let mut recv = || {
        let (n, from) = fake.recv_from(&mut buf).unwrap();
        (wire::decode(&buf[..n]).unwrap().0, buf[..n].to_vec(), from)
    };
    // Window 2: seq 0 and seq 1 arrive.
    let (h0, d0, from) = recv();
    let (h1, d1, _) = recv();
    assert_eq!((h0.seq, h1.seq), (0, 1));
    fake.send_to(b"hey", from).unwrap(); // too short for a header
    fake.send_to(&d1, from).unwrap(); // seq 1 first...
    fake.send_to(&d0, from).unwrap(); // ...then seq 0: reordered
    fake.send_to(&d0, from).unwrap(); // seq 0 again: duplicate
    // seq 2 arrives (the window had room again). Answer it only with an
    // altered payload, which must count as invalid, not as received; with
    // no retries the client then gives seq 2 up as lost after its timeout.
    let (h2, mut d2, _) = recv();
    assert_eq!(h2, Header { seq: 2, attempt: 1 });
    d2.push(b'!');
    fake.send_to(&d2, from).unwrap();
    let (report, events) = client_thread.join().unwrap();
    assert_eq!(report.sent, 3);
    assert_eq!(report.received, 2);
    assert_eq!(report.reordered, 1, "{events:#?}");
    assert_eq!(report.duplicated, 1, "{events:#?}");
    assert_eq!(report.invalid, 2, "{events:#?}");
    assert_eq!(report.lost, 1, "{events:#?}");
    assert!(
        events
            .iter()
            .any(|e| e == "seq=2 lost (no reply to 1 attempts)"),
        "{events:#?}"
    );
}

#[test]
fn a_late_reply_is_counted_as_late_not_received() {
    let fake = socket_like("127.0.0.1:0".parse().unwrap());
    let addr: SocketAddr = fake.local_addr().unwrap();
    let client_thread = std::thread::spawn(move || {
        let c = client::connect(addr).unwrap();
        let config = ClientConfig {
            timeout: Duration::from_millis(200),
            retries: 0,
            window: 1,
        };
        client::run(&c, messages(&[b"x", b"y"]), &config, |_| {}).unwrap()
    });
    let mut buf = [0u8; 64];
    let (n, from) = fake.recv_from(&mut buf).unwrap();
    let d0 = buf[..n].to_vec();
    // Stop-and-wait: seq 1 is only sent once the client gave up on seq 0.
    let (n, _) = fake.recv_from(&mut buf).unwrap();
    assert_eq!(wire::decode(&buf[..n]).unwrap().0.seq, 1);
    fake.send_to(&d0, from).unwrap();
    fake.send_to(&buf[..n], from).unwrap();
    let report = client_thread.join().unwrap();
    assert_eq!((report.received, report.lost, report.late), (1, 1, 1));
}
