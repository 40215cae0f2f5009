//! `peek` over real packets: each test runs the `peek` binary around a tiny
//! TCP exchange and checks what crossed the wire, from the pcap file peek
//! wrote (parsed with peek's own library) and from the ladder it printed.
//!
//! The exchange is this test binary itself, re-run under `peek` with
//! `PEEK_ROLE` set and its ignored `peer` test selected, so no second
//! program has to be found or built.
//!
//! Where the kernel refuses namespaces, `peek` exits with status 4 and one
//! line saying why; these tests then print `skipped: <that line>` and pass.
//!
//! Run with: `cargo test -p peek --test wire`

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use peek::parse::{Proto, parse};

const TIMEOUT: Duration = Duration::from_secs(20);

/// The exchange peek watches, when run as
/// `PEEK_ROLE=<role> <this test binary> peer --exact --ignored`.
/// Not a check of its own, hence ignored in a normal run.
#[test]
#[ignore = "a helper: the other tests run it under peek"]
fn peer() {
    let Ok(role) = std::env::var("PEEK_ROLE") else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        let mut buf = [0u8; 64];
        if role == "reset" {
            // Wait until the bytes are in our receive queue, then close
            // without reading them: the kernel answers with RST, not FIN.
            s.peek(&mut buf).expect("peek");
            return;
        }
        let n = s.read(&mut buf).expect("read");
        s.write_all(&buf[..n]).expect("echo");
        // Read to EOF (the client's FIN), then close: our FIN.
        assert_eq!(s.read(&mut buf).expect("read EOF"), 0);
    });
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    c.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    match std::env::var("PEEK_ROLE").as_deref() {
        Ok("reset") => {
            let r = c.read(&mut buf);
            assert!(
                matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
                "expected a reset, got {r:?}"
            );
        }
        _ => {
            c.read_exact(&mut buf).expect("echo");
            assert_eq!(&buf, b"ping");
            c.shutdown(Shutdown::Write).expect("shutdown");
            assert_eq!(c.read(&mut buf).expect("read EOF"), 0);
        }
    }
    server.join().expect("server thread");
}

struct Run {
    out: Output,
    stdout: String,
}

/// `peek [args] -- <this binary> peer` with `PEEK_ROLE=role`, or None
/// (after printing why) where the kernel refuses the namespace.
fn peek(role: &str, args: &[&str], wrapper: &[&str]) -> Option<Run> {
    let me = std::env::current_exe().expect("current_exe");
    let mut argv: Vec<String> = wrapper.iter().map(|s| s.to_string()).collect();
    argv.push(env!("CARGO_BIN_EXE_peek").into());
    argv.extend(args.iter().map(|s| s.to_string()));
    argv.push("--".into());
    argv.push(me.to_string_lossy().into());
    argv.extend(
        [
            "peer",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ]
        .map(String::from),
    );
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .env("PEEK_ROLE", role)
        .output()
        .expect("run peek");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(4) && stderr.starts_with("peek: no namespace:") {
        eprintln!("skipped: {}", stderr.trim());
        return None;
    }
    if stderr.starts_with("setpriv:") {
        // setpriv could not switch users (no such uid mapped, e.g. when the
        // tests themselves run inside a user namespace).
        eprintln!("skipped: {}", stderr.trim());
        return None;
    }
    assert!(
        out.status.success(),
        "peek failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    Some(Run { out, stdout })
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("peek-test-{}-{name}.pcap", std::process::id()))
}

/// The TCP packets of a capture as "C SYN", "S PSH ACK ping", ...: C for
/// the side that sent the first SYN, S for the other.
fn tcp_steps(pcap: &Path) -> Vec<String> {
    let loaded = peek::pcap::read(pcap, 1 << 24, 10_000).expect("read pcap");
    // Each packet once: loopback delivers every frame to a packet socket
    // twice, byte for byte (leaving and arriving). Even a retransmission
    // differs from its original (IP identification, TCP timestamp).
    let mut frames = std::collections::HashSet::new();
    for (i, f) in loaded.frames.iter().enumerate() {
        assert!(
            frames.insert(&f.data),
            "packet {} is a copy of an earlier one",
            i + 1
        );
    }
    let packets: Vec<_> = loaded
        .frames
        .iter()
        .enumerate()
        .map(|(i, f)| parse(i + 1, f.ts, f.wire_len, &f.data))
        .collect();
    assert_causal(&packets);
    let client = packets.iter().find_map(|p| match &p.proto {
        Proto::Tcp(t) if t.flags.syn && !t.flags.ack => Some(t.sport),
        _ => None,
    });
    // A retransmission (same side, sequence number, flags and bytes: a
    // loaded machine can delay an ACK past the tail-loss probe) is the same
    // step of the exchange, listed once.
    let mut seen = std::collections::HashSet::new();
    packets
        .iter()
        .filter_map(|p| match &p.proto {
            Proto::Tcp(t) => {
                let side = if Some(t.sport) == client { "C" } else { "S" };
                let data = String::from_utf8_lossy(&t.preview);
                let step = format!("{side} {} {data}", t.flags.names())
                    .trim()
                    .to_string();
                let carries = t.len > 0 || t.flags.syn || t.flags.fin;
                (!carries || seen.insert((step.clone(), t.seq))).then_some(step)
            }
            _ => None,
        })
        .collect()
}

/// Packets must come out in the order they were sent: no ACK may
/// acknowledge a byte (or SYN/FIN) its sender has not yet been shown
/// receiving. Catches timestamps taken at inconsistent points.
fn assert_causal(packets: &[peek::parse::Packet]) {
    // Highest sequence end sent so far, per source port.
    let mut sent: std::collections::HashMap<u16, u32> = Default::default();
    for p in packets {
        let Proto::Tcp(t) = &p.proto else { continue };
        if t.flags.ack && !t.flags.rst {
            let peer = sent.get(&t.dport).copied();
            assert!(
                peer.is_some_and(|end| (t.ack.wrapping_sub(end) as i32) <= 0),
                "packet {} acknowledges {} before the peer sent it (peer's end {peer:?})",
                p.number,
                t.ack
            );
        }
        let end = t
            .seq
            .wrapping_add(t.len as u32 + u32::from(t.flags.syn) + u32::from(t.flags.fin));
        let e = sent.entry(t.sport).or_insert(end);
        if (end.wrapping_sub(*e) as i32) > 0 {
            *e = end;
        }
    }
}

/// Keep the handshake whole, then drop pure ACKs except the very last
/// packet: whether the kernel sends a separate ACK before a reply or folds
/// it into the reply depends on timing; the rest does not.
fn significant(steps: &[String]) -> Vec<String> {
    let last = steps.len().saturating_sub(1);
    steps
        .iter()
        .enumerate()
        .filter(|(i, s)| *i < 3 || *i == last || !s.ends_with(" ACK") || s.contains("FIN"))
        .map(|(_, s)| s.clone())
        .collect()
}

#[test]
fn handshake_data_and_fin_exchange() {
    let pcap = temp("echo");
    let Some(run) = peek("echo", &["--pcap", pcap.to_str().expect("utf-8 path")], &[]) else {
        return;
    };
    let steps = tcp_steps(&pcap);
    let _ = std::fs::remove_file(&pcap);
    assert_eq!(
        significant(&steps),
        [
            "C SYN",
            "S SYN ACK",
            "C ACK",
            "C PSH ACK ping",
            "S PSH ACK ping",
            "C FIN ACK",
            "S FIN ACK",
            "C ACK",
        ],
        "all TCP packets: {steps:?}\n{}",
        run.stdout
    );
    assert!(run.stdout.contains("(the opener) (#"), "{}", run.stdout);
    assert!(
        run.stdout.contains("closed: first FIN from"),
        "{}",
        run.stdout
    );
}

#[test]
fn close_with_unread_data_sends_rst() {
    let pcap = temp("reset");
    let Some(run) = peek(
        "reset",
        &["--pcap", pcap.to_str().expect("utf-8 path")],
        &[],
    ) else {
        return;
    };
    let steps = tcp_steps(&pcap);
    let _ = std::fs::remove_file(&pcap);
    assert_eq!(
        significant(&steps),
        ["C SYN", "S SYN ACK", "C ACK", "C PSH ACK ping", "S RST ACK"],
        "all TCP packets: {steps:?}\n{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("reset: RST from 127.0.0.1:"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("FIN"), "{}", run.stdout);
}

#[test]
fn pcap_has_the_standard_header_and_every_packet() {
    let pcap = temp("header");
    let Some(run) = peek("echo", &["--pcap", pcap.to_str().expect("utf-8 path")], &[]) else {
        return;
    };
    let bytes = std::fs::read(&pcap).expect("read pcap");
    let _ = std::fs::remove_file(&pcap);
    let u32_at = |i: usize| u32::from_ne_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
    let u16_at = |i: usize| u16::from_ne_bytes(bytes[i..i + 2].try_into().expect("2 bytes"));
    assert_eq!(
        u32_at(0),
        0xa1b2_c3d4,
        "magic (microsecond timestamps, native order)"
    );
    assert_eq!((u16_at(4), u16_at(6)), (2, 4), "version 2.4");
    assert_eq!(u32_at(16), 262_144, "snap length");
    assert_eq!(u32_at(20), 1, "LINKTYPE_ETHERNET");
    // Walk the records: each a 16-byte header whose third field is the
    // captured length; they must end exactly at the end of the file.
    let (mut at, mut count) = (24, 0);
    while at < bytes.len() {
        let incl = u32_at(at + 8) as usize;
        assert!(incl <= u32_at(at + 12) as usize, "captured <= on the wire");
        at += 16 + incl;
        count += 1;
    }
    assert_eq!(at, bytes.len(), "records end at the end of the file");
    let said = format!("{count} packets captured on lo");
    assert!(
        run.stdout.contains(&said),
        "{said:?} not in\n{}",
        run.stdout
    );
    // A handshake, two data segments, two FINs, and their ACKs: at least 8.
    assert!(count >= 8, "{count} packets");
}

/// The point of peek: no root needed. When the tests run as root (as in
/// CI), run peek once more as `nobody` through setpriv.
#[test]
fn works_as_an_unprivileged_user() {
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: not root, so every other test here already ran peek unprivileged");
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: setpriv (util-linux) is not installed, cannot drop to nobody");
        return;
    }
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let Some(run) = peek("echo", &[], &nobody) else {
        return;
    };
    for want in [
        "|-- SYN seq=0",
        "|<- SYN ACK seq=0 ack=1",
        "closed: first FIN from",
    ] {
        assert!(run.stdout.contains(want), "{want:?} not in\n{}", run.stdout);
    }
    assert!(run.out.status.success());
}
