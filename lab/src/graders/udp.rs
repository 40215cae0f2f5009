//! Graders for the UDP exercises: 5 (a client against a lossy server that
//! also duplicates replies) and 6 (a server with a reflection guard).

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::harness::{Check, Run, Server, fail, run_with_deadline, show};

/// The grader's lossy echo server: it drops the first try of every odd
/// sequence number and the first two tries of seq 4, and sends every reply
/// TWICE, so a stale duplicate is waiting whenever the client asks again.
struct Lossy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    tries: Arc<Mutex<HashMap<u32, u32>>>,
}

impl Lossy {
    fn start() -> io::Result<Lossy> {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = s.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let tries = Arc::new(Mutex::new(HashMap::new()));
        let (st, tr) = (Arc::clone(&stop), Arc::clone(&tries));
        // 127.0.0.2 is loopback too (127.0.0.0/8), so it can have the
        // server's own port: only the address differs.
        let forge_other_addr = UdpSocket::bind(("127.0.0.2", addr.port())).ok();
        let forge_other_port = UdpSocket::bind("127.0.0.1:0").ok();
        thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, src)) = s.recv_from(&mut buf) else {
                    continue;
                };
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let Some(seq) = text.split(' ').next().and_then(|t| t.parse::<u32>().ok()) else {
                    let _ = s.send_to(&buf[..n], src);
                    continue;
                };
                let attempt = {
                    let Ok(mut m) = tr.lock() else { break };
                    let a = m.entry(seq).or_insert(0);
                    *a += 1;
                    *a
                };
                let dropped = (seq % 2 == 1 && attempt == 1)
                    || (seq == 4 && attempt <= 2)
                    || seq == ALWAYS_LOST;
                if !dropped && attempt == 1 {
                    // Before the real answer, the same seq from somewhere
                    // else: another address (seq 0) or another port (seq 2).
                    let forger = match seq {
                        0 => forge_other_addr.as_ref(),
                        2 => forge_other_port.as_ref(),
                        _ => None,
                    };
                    if let Some(f) = forger {
                        let _ = f.send_to(format!("{seq} forged").as_bytes(), src);
                    }
                }
                if !dropped {
                    let _ = s.send_to(&buf[..n], src);
                    let _ = s.send_to(&buf[..n], src);
                }
            }
        });
        Ok(Lossy { addr, stop, tries })
    }

    fn tries(&self, seq: u32) -> u32 {
        self.tries
            .lock()
            .map(|m| m.get(&seq).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for Lossy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The request the grader's server never answers: the client must give up
/// on it after its TRIES tries and go on.
const ALWAYS_LOST: u32 = 6;

pub fn ex05_udp_client(run: &mut Run) -> Check {
    const COUNT: u32 = 7;
    run.step("start the grader's server: drops seq 1, 3, 5 once, seq 4 twice and seq 6 always, sends every reply twice, \
         and before answering seq 0 and 2, a forged \"N forged\" from another address and another port");
    let server =
        Lossy::start().map_err(|e| fail("a UDP socket for the grader", e.to_string(), ""))?;

    run.step(format!(
        "run your client: --addr {} --count {COUNT}",
        server.addr
    ));
    let args = vec![
        "--addr".to_string(),
        server.addr.to_string(),
        "--count".into(),
        COUNT.to_string(),
    ];
    let bin = run.bin.clone();
    let ran = run_with_deadline(&bin, &args, Duration::from_secs(8))
        .map_err(|e| fail("your client to start", e.to_string(), "is it built?"))?;
    if ran.status.is_none() {
        let done = ran.stdout.lines().filter(|l| l.starts_with("seq ")).count();
        let lost_tries = server.tries(ALWAYS_LOST);
        if lost_tries > 5 {
            return Err(fail(
                format!("`seq {ALWAYS_LOST}: lost` after 5 tries (TRIES), then the closing line"),
                format!(
                    "your client was still trying after 8 s: it had sent seq {ALWAYS_LOST} {lost_tries} times, so it was killed"
                ),
                "give up after TRIES tries: a request may be lost for good (the server is down, a \
                 firewall drops it), and the client must say so and go on",
            ));
        }
        return Err(fail(
            "the client to finish within 8 s",
            format!(
                "your client was still waiting after 8 s (it had printed {done} of {COUNT} answers), so it was killed"
            ),
            "the server dropped a datagram and UDP tells nobody: set a read timeout (set_read_timeout), \
             and when it fires, resend",
        ));
    }

    let printed = ran.stdout.lines().filter(|l| l.starts_with("seq ")).count();
    if !ran.status.is_some_and(|s| s.success()) {
        let stderr = ran.stderr.trim();
        let timeout = ["WouldBlock", "os error 11", "TimedOut", "timed out"]
            .iter()
            .any(|w| stderr.contains(w));
        return Err(fail(
            format!("a line for each of the {COUNT} requests, then exit status 0"),
            format!(
                "your client exited ({}) after {printed} of {COUNT} answers; stderr: {}",
                crate::harness::describe_status(ran.status),
                if stderr.is_empty() {
                    "nothing".to_string()
                } else {
                    show(stderr.as_bytes())
                }
            ),
            if timeout {
                "a timeout is not an error to return: after set_read_timeout, recv's WouldBlock (or \
                 TimedOut) means nothing came in time, so send the request again, and after TRIES \
                 tries report it lost"
            } else {
                "a lost or duplicated datagram is normal for UDP, not a reason to stop: handle it in ask"
            },
        ));
    }

    for seq in 0..COUNT {
        let tries = server.tries(seq);
        if seq == ALWAYS_LOST {
            run.step(format!(
                "seq {seq}: never answered, so `seq {seq}: lost` after the tries"
            ));
            let want = format!("seq {seq}: lost");
            if !ran.stdout.lines().any(|l| l == want) {
                return Err(fail(
                    format!("a line `{want}`"),
                    format!("stdout was {}", show(ran.stdout.as_bytes())),
                    "after TRIES tries with no answer, ask returns Ok(None) and main prints `lost`",
                ));
            }
            continue;
        }
        run.step(format!(
            "seq {seq}: {}",
            match seq {
                4 => "first two tries dropped, the third answered".to_string(),
                s if s % 2 == 1 => "first try dropped, the second answered".to_string(),
                _ => "answered (twice)".to_string(),
            }
        ));
        let prefix = format!("seq {seq}: ");
        let line = ran.stdout.lines().find(|l| l.starts_with(&prefix));
        let want = format!("{seq} hello");
        match line.map(|l| &l[prefix.len()..]) {
            Some(r) if r == want => {}
            Some("lost") => {
                return Err(fail(
                    format!(
                        "`seq {seq}: {want}` (the server answers try {})",
                        if seq == 4 { 3 } else { 2 }
                    ),
                    format!(
                        "`seq {seq}: lost`, after your client sent it {}",
                        crate::harness::plural(tries as usize, "time")
                    ),
                    "when the timeout fires, resend the request (up to TRIES times) before giving up",
                ));
            }
            Some(r) if r.ends_with("forged") => {
                return Err(fail(
                    format!("`seq {seq}: {want}`"),
                    format!(
                        "`seq {seq}: {r}`: a datagram from {}, not from the server",
                        if seq == 0 {
                            "127.0.0.2 (the server's port, another address)"
                        } else {
                            "another port of 127.0.0.1"
                        }
                    ),
                    "only a datagram from the server's address AND port is its answer: keep the socket \
                     connected (connect, send, recv: the kernel drops the others), or compare \
                     recv_from's source with the server's address and port, both",
                ));
            }
            Some(r)
                if r.split(' ')
                    .next()
                    .and_then(|t| t.parse::<u32>().ok())
                    .is_some_and(|s| s != seq) =>
            {
                return Err(fail(
                    format!("`seq {seq}: {want}`"),
                    format!(
                        "`seq {seq}: {r}`: the reply to an earlier request (a duplicate the server sent twice)"
                    ),
                    "compare the sequence number in every reply with the one you asked, and drop the others",
                ));
            }
            Some(r) => {
                return Err(fail(
                    format!("`seq {seq}: {want}`"),
                    format!("`seq {seq}: {r}`"),
                    "print the reply's text as it came",
                ));
            }
            None => {
                return Err(fail(
                    format!("a line `seq {seq}: {want}` on stdout"),
                    format!("no such line; stdout was {}", show(ran.stdout.as_bytes())),
                    "print one line per request, as main does",
                ));
            }
        }
    }
    run.step("the closing line");
    let want = format!("{}/{COUNT} answered", COUNT - 1);
    if !ran.stdout.lines().any(|l| l == want) {
        return Err(fail(
            want,
            show(ran.stdout.as_bytes()),
            "count the answered requests",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- exercise 6

/// Where the grader's "low port" datagrams come from: unprivileged, below
/// `GUARD`, above it the ephemeral ports real clients use.
const GUARD: u16 = 20_000;

fn recv_within(s: &UdpSocket, d: Duration) -> Option<Vec<u8>> {
    let _ = s.set_read_timeout(Some(d));
    let mut buf = vec![0u8; 65_536];
    s.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

fn udp_echo(from: &UdpSocket, msg: &[u8], what: &str) -> Check {
    from.send(msg).map_err(|e| {
        fail(
            format!("to send {what}"),
            e.to_string(),
            "is your server still running?",
        )
    })?;
    match recv_within(from, Duration::from_secs(2)) {
        Some(b) if b == msg => Ok(()),
        Some(b) => Err(fail(
            format!("{} bytes back, the same", msg.len()),
            format!("{} bytes: {}", b.len(), show(&b)),
            if b.len() < msg.len() {
                "recv_from cuts a datagram longer than the buffer: use a 65536-byte buffer"
            } else {
                "send back buf[..n], the n bytes recv_from returned"
            },
        )),
        None => Err(fail(
            format!("{what} echoed within 2 s"),
            "nothing",
            "this client's port is above the guard: it must be answered",
        )),
    }
}

/// Bind a UDP socket on 127.0.0.1 to some free port in `range`.
fn bind_in(range: std::ops::Range<u16>) -> Option<UdpSocket> {
    let start = range.start + (std::process::id() % 97) as u16 * 10;
    (start..range.end)
        .chain(range.start..start)
        .find_map(|p| UdpSocket::bind(("127.0.0.1", p)).ok())
}

/// Three consecutive free UDP ports p-1, p, p+1 in `range`, bound: the
/// guard goes at p, so "one under", "exactly at" and "one over" are all
/// senders the grader controls.
fn bind_three(range: std::ops::Range<u16>) -> Option<(u16, [UdpSocket; 3])> {
    let start = range.start + (std::process::id() % 97) as u16 * 10;
    (start..range.end).chain(range.start..start).find_map(|p| {
        let a = UdpSocket::bind(("127.0.0.1", p - 1)).ok()?;
        let b = UdpSocket::bind(("127.0.0.1", p)).ok()?;
        let c = UdpSocket::bind(("127.0.0.1", p + 1)).ok()?;
        Some((p, [a, b, c]))
    })
}

pub fn ex06_udp_guard(run: &mut Run) -> Check {
    let (guard_port, [under, at, over]) = bind_three(GUARD..GUARD + 10_000)
        .ok_or_else(|| fail("three free ports in a row", "none", ""))?;
    let guard = guard_port.to_string();
    let server = Server::start(run, &["--guard-below", &guard])?;
    let io = |e: io::Error| fail("a UDP socket for the grader", e.to_string(), "");

    run.step("a client on a high port sends \"ping\"");
    let trusted = bind_in(40_000..60_000).ok_or_else(|| fail("a free high port", "none", ""))?;
    trusted.connect(server.addr).map_err(io)?;
    udp_echo(&trusted, b"ping", "\"ping\"")?;

    run.step("a 2000-byte datagram comes back whole");
    udp_echo(&trusted, &crate::harness::pattern(2000, 3), "2000 bytes")?;

    let forged = bind_in(10_000..GUARD).ok_or_else(|| fail("a free low port", "none", ""))?;
    for (sock, what) in [(&forged, "far below"), (&under, "one under")] {
        let low = sock.local_addr().map_err(io)?.port();
        run.step(format!(
            "a datagram from port {low}, {what} --guard-below {guard_port} (think: echo, port 7), must go unanswered"
        ));
        sock.connect(server.addr).map_err(io)?;
        sock.send(b"from a low port").map_err(io)?;
        // The server handles datagrams in arrival order: once the high-port
        // client's marker is echoed, any answer to the low port is already queued.
        udp_echo(&trusted, b"marker", "a marker from the high port")?;
        let _ = sock.set_nonblocking(true);
        let mut buf = [0u8; 2048];
        if let Ok(n) = sock.recv(&mut buf) {
            return Err(fail(
                format!("no answer to the datagram from port {low}"),
                format!(
                    "your server answered a datagram from port {low}: {}",
                    show(&buf[..n])
                ),
                if low + 1 == guard_port {
                    format!(
                        "port {low} is below the guard {guard_port}: refuse every port p with p < guard_below"
                    )
                } else {
                    format!(
                        "refuse every source port below the guard ({guard_port} here, 1024 by default), not just \
                         the famous ones: a forged datagram \"from\" any low-port service starts a loop or a reflection"
                    )
                },
            ));
        }
    }

    for (sock, what) in [(&at, "exactly at"), (&over, "one over")] {
        let port = sock.local_addr().map_err(io)?.port();
        run.step(format!(
            "a datagram from port {port}, {what} --guard-below {guard_port}, is answered"
        ));
        sock.connect(server.addr).map_err(io)?;
        if let Err(mut f) = udp_echo(sock, b"at the guard", "\"at the guard\"") {
            if f.got == "nothing" {
                f.why = format!(
                    "port {port} is not below the guard {guard_port}: refuse p < guard_below only (an \
                     off-by-one, <=, refuses the first allowed port)"
                );
            }
            return Err(f);
        }
    }

    run.step("and the server still answers the high-port client");
    udp_echo(&trusted, b"still there?", "\"still there?\"")?;

    crate::loadgen::check(
        run,
        server.addr,
        &["--proto", "udp", "--cases", "datagram-sizes,guard-port"],
        &|case| {
            match case {
            "guard-port" => "refuse every source port below the guard: loadgen sends from a well-known port".into(),
            _ => "echo each datagram whole: recv_from into a 65536-byte buffer, send_to(&buf[..n], src)".into(),
        }
        },
    )?;
    drop(server);
    Ok(())
}
