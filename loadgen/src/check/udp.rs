//! The UDP cases. A datagram arrives whole or not at all, so there is no
//! framing to get wrong; what can go wrong is size (the 0-byte datagram is
//! legal, 65,507 bytes is the IPv4 maximum), loss (reported, never hidden)
//! and reflection: a UDP echo server that answers anyone can be aimed at a
//! third party by forging the source address, or made to play ping-pong
//! with another echo/chargen service. Servers therefore keep a guard list
//! of source ports they never answer; `guard-port` checks it.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::Framing;
use common::rng::SplitMix64;
use tokio::net::UdpSocket;
use tokio::time::timeout;

use super::conn::{io_err, payload};
use super::{Ctx, Outcome, fmt_duration};

/// Largest UDP payload over IPv4: 65,535 - 20 (IP header) - 8 (UDP header).
const MAX_DATAGRAM: usize = 65_507;

/// A socket on the loopback (or unspecified) address of the server's
/// family, on `port` (0 = any), connected to the server so that `recv`
/// only returns the server's datagrams.
fn socket(server: SocketAddr, port: u16, rcvbuf: Option<usize>) -> io::Result<UdpSocket> {
    let ip = match (server.ip().is_loopback(), server.is_ipv4()) {
        (true, true) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (true, false) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        (false, true) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (false, false) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let local = SocketAddr::new(ip, port);
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(local),
        socket2::Type::DGRAM,
        None,
    )?;
    if let Some(size) = rcvbuf {
        // Replies to a burst arrive faster than we may read them; a larger
        // receive queue keeps *our* drops out of the loss figure. The kernel
        // caps it at net.core.rmem_max.
        sock.set_recv_buffer_size(size)?;
    }
    sock.bind(&local.into())?;
    // connect() on UDP sends nothing: it fixes the peer, so send() needs no
    // address and the kernel drops datagrams from anyone else.
    sock.connect(&server.into())?;
    sock.set_nonblocking(true)?;
    UdpSocket::from_std(sock.into())
}

fn socket_failed(expected: impl Into<String>, e: &io::Error) -> Outcome {
    Outcome::Fail {
        expected: expected.into(),
        got: format!("cannot open a UDP socket: {}", io_err(e)),
    }
}

/// Send `data`, wait up to `wait` for the identical datagram; `attempts`
/// tries (UDP may lose either direction). `Ok(rtt)`, or what went wrong.
async fn round_trip(
    sock: &UdpSocket,
    data: &[u8],
    attempts: u32,
    wait: Duration,
) -> Result<Duration, String> {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut wrong = None;
    for _ in 0..attempts {
        let start = Instant::now();
        sock.send(data)
            .await
            .map_err(|e| format!("send failed: {}", io_err(&e)))?;
        let deadline = start + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, sock.recv(&mut buf)).await {
                Err(_) => break,
                // ECONNREFUSED on a connected UDP socket: an ICMP "port
                // unreachable" came back, nobody listens there.
                Ok(Err(e)) => return Err(format!("recv failed: {}", io_err(&e))),
                Ok(Ok(n)) if buf[..n] == *data => return Ok(start.elapsed()),
                // A late reply to an earlier try, or a wrong one: remember.
                Ok(Ok(n)) => wrong = Some(n),
            }
        }
    }
    Err(match wrong {
        Some(n) => format!(
            "no exact echo in {attempts} tries (a {n}-byte datagram that did not match came back)"
        ),
        None => format!("no reply in {attempts} tries of {}", fmt_duration(wait)),
    })
}

pub async fn datagram_sizes(ctx: &Ctx) -> Outcome {
    let expected = "datagrams of 0, 1, 1472 and 65507 B each echoed byte for byte (3 tries each)";
    let sock = match socket(ctx.target.addr, 0, Some(1 << 20)) {
        Ok(s) => s,
        Err(e) => return socket_failed(expected, &e),
    };
    let mut rng = SplitMix64::new(ctx.seed.wrapping_add(20));
    let mut parts = Vec::new();
    let mut ok = true;
    // 1472 = 1500 (Ethernet MTU) - 20 - 8: the largest datagram that is
    // not fragmented on a typical LAN.
    for size in [0, 1, 1472, MAX_DATAGRAM] {
        let data = payload(&mut rng, size, Framing::Raw);
        match round_trip(&sock, &data, 3, Duration::from_secs(1)).await {
            Ok(t) => parts.push(format!("{size} B in {}", fmt_duration(t))),
            Err(e) => {
                ok = false;
                parts.push(format!("{size} B: {e}"));
            }
        }
    }
    Outcome::new(ok, expected, parts.join(", "))
}

pub async fn datagram_burst(ctx: &Ctx) -> Outcome {
    const N: usize = 1000;
    const SIZE: usize = 64;
    let expected = format!(
        "{N} datagrams of {SIZE} B sent back to back: every reply exact, none duplicated; loss reported"
    );
    let sock = match socket(ctx.target.addr, 0, Some(4 << 20)) {
        Ok(s) => s,
        Err(e) => return socket_failed(expected, &e),
    };
    let mut rng = SplitMix64::new(ctx.seed.wrapping_add(21));
    // Each datagram starts with its sequence number, so a reply names the
    // datagram it answers.
    let sent: Vec<Vec<u8>> = (0..N as u32)
        .map(|i| {
            let mut d = i.to_be_bytes().to_vec();
            d.extend_from_slice(&payload(&mut rng, SIZE - 4, Framing::Raw));
            d
        })
        .collect();
    let start = Instant::now();
    let sender = async {
        for d in &sent {
            // When the socket's send queue is full, send() waits for room
            // (it does not drop), so every datagram leaves this process.
            sock.send(d).await?;
        }
        Ok::<(), io::Error>(())
    };
    let receiver = async {
        let mut seen: HashMap<u32, usize> = HashMap::new();
        let mut corrupt = 0usize;
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        // Stop when all came back, or after half a second of silence.
        while seen.len() < N {
            match timeout(Duration::from_millis(500), sock.recv(&mut buf)).await {
                Ok(Ok(n)) => {
                    let seq =
                        (n >= 4).then(|| u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
                    match seq.and_then(|s| sent.get(s as usize).map(|d| (s, d))) {
                        Some((s, d)) if buf[..n] == d[..] => *seen.entry(s).or_default() += 1,
                        _ => corrupt += 1,
                    }
                }
                Ok(Err(_)) | Err(_) => break,
            }
        }
        (seen, corrupt)
    };
    let (sent_result, (seen, corrupt)) = tokio::join!(sender, receiver);
    let elapsed = start.elapsed();
    if let Err(e) = sent_result {
        return Outcome::new(false, expected, format!("send failed: {}", io_err(&e)));
    }
    let dups: usize = seen.values().map(|c| c - 1).sum();
    let lost = N - seen.len();
    let got = format!(
        "{}/{N} replies verified in {}, loss {lost} ({:.1}%), {corrupt} corrupt, {dups} duplicated",
        seen.len(),
        fmt_duration(elapsed),
        lost as f64 * 100.0 / N as f64
    );
    Outcome::new(!seen.is_empty() && corrupt == 0 && dups == 0, expected, got)
}

pub async fn guard_port(ctx: &Ctx) -> Outcome {
    let addr = ctx.target.addr;
    let mut errors = Vec::new();
    let mut guarded = None;
    for &port in &ctx.guard_ports {
        match socket(addr, port, None) {
            Ok(s) => {
                guarded = Some((port, s));
                break;
            }
            Err(e) => errors.push(format!("{port}: {}", io_err(&e))),
        }
    }
    let Some((port, guarded)) = guarded else {
        return Outcome::Skip(format!(
            "cannot bind any guard port ({}); ports below 1024 need root",
            errors.join(", ")
        ));
    };
    let expected = format!(
        "no reply to a datagram from guarded port {port}; a datagram from an ordinary port is echoed"
    );
    let control = match socket(addr, 0, None) {
        Ok(s) => s,
        Err(e) => return socket_failed(expected, &e),
    };
    if let Err(e) = guarded.send(b"guard-port probe").await {
        return Outcome::new(
            false,
            expected,
            format!("send from port {port} failed: {}", io_err(&e)),
        );
    }
    // The control datagram goes second. A server handles datagrams in
    // order, so once the control's echo is back, a reply to the probe
    // (if the server were going to send one) would already be queued.
    let control_rtt = round_trip(&control, b"guard-port control", 3, Duration::from_secs(1)).await;
    let mut buf = [0u8; 64];
    let reflected = match timeout(Duration::from_millis(200), guarded.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(n),
        _ => None,
    };
    match (reflected, control_rtt) {
        (Some(n), _) => Outcome::new(
            false,
            expected,
            format!("the server answered port {port} ({n} B): it can be used for reflection"),
        ),
        (None, Err(e)) => Outcome::new(
            false,
            expected,
            format!("no reply to port {port}, but the control got none either: {e}"),
        ),
        (None, Ok(t)) => Outcome::new(
            true,
            expected,
            format!("port {port} ignored; control echoed in {}", fmt_duration(t)),
        ),
    }
}
