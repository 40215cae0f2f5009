//! The reference server `epoll-ref` over real sockets: it echoes exact
//! bytes, survives short writes to a slow reader (and keeps serving others
//! meanwhile), and exits 0 on SIGTERM. Also driven by `loadgen run` itself.

// Helpers outside #[test] functions may unwrap too: a test failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use common::Framing;
use loadgen::child::ServerProcess;
use loadgen::run::{RunConfig, Stop, run};

mod run_support;

fn start() -> ServerProcess {
    ServerProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_epoll-ref")),
        &["--addr".into(), "127.0.0.1:0".into()],
        true,
        Duration::from_secs(20),
    )
    .unwrap()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Bytes that differ at every offset (a dropped or repeated chunk shows).
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

#[test]
fn echoes_exact_bytes_then_eof_after_half_close() {
    let server = start();
    let mut s = connect(server.addr());
    // Every byte value, a newline and a NUL: raw echo, no framing.
    let mut sent: Vec<u8> = (0..=255u8).collect();
    sent.extend_from_slice(b"hello\n\0world");
    sent.extend(pattern(100_000, 7));
    for piece in sent.chunks(777) {
        s.write_all(piece).unwrap();
    }
    s.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    // read_to_end ends at the server's FIN: it must come after every echo.
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "echo differs from what was sent");
    let (status, killed) = server.stop(Duration::from_secs(10)).unwrap();
    assert!(status.success() && !killed, "{status}");
}

#[test]
fn a_slow_reader_gets_every_byte_and_does_not_block_others() {
    let server = start();
    let addr = server.addr();
    // A tiny receive window on the client: the server's 64 KiB writes can
    // only be partly accepted, so its pending-output path does the work.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    let slow: TcpStream = sock.into();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // 24 MiB against a reader that takes 1000 bytes per read() through a
    // tiny window: the server's 64 KiB writes outrun it, its send buffer
    // (4 MiB at most) fills, and its writes come back short.
    let sent = pattern(24 * 1024 * 1024, 3);
    let mut writer = slow.try_clone().unwrap();
    let to_send = sent.clone();
    let w = std::thread::spawn(move || {
        writer.write_all(&to_send).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });

    // Meanwhile the server is stuck on nobody: another client is echoed.
    // (We read the slow client's first echoed byte first, so the server
    // is certainly busy with it.)
    let mut slow_r = slow;
    let mut first = [0u8; 1];
    slow_r.read_exact(&mut first).unwrap();
    let mut other = connect(addr);
    other.write_all(b"still served").unwrap();
    let mut back = [0u8; 12];
    other.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"still served");

    // Now read the rest in small, slow pieces.
    let mut got = first.to_vec();
    let mut chunk = [0u8; 1000];
    loop {
        let n = slow_r.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
    }
    w.join().unwrap();
    assert_eq!(got.len(), sent.len(), "bytes lost or added");
    let first_diff = got.iter().zip(&sent).position(|(a, b)| a != b);
    assert_eq!(
        first_diff, None,
        "echo differs from the first differing offset on"
    );
    let (status, killed) = server.stop(Duration::from_secs(10)).unwrap();
    assert!(status.success() && !killed, "{status}");
}

#[test]
fn sigterm_with_clients_connected_exits_zero() {
    let server = start();
    let mut a = connect(server.addr());
    a.write_all(b"x").unwrap();
    let mut one = [0u8; 1];
    a.read_exact(&mut one).unwrap();
    let _idle = connect(server.addr());
    let (status, killed) = server.stop(Duration::from_secs(10)).unwrap();
    assert!(!killed, "did not exit within 10 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "{status}");
    // Its sockets are closed: the client sees EOF (or a reset), not silence.
    let mut rest = Vec::new();
    let r = a.read_to_end(&mut rest);
    match r {
        Ok(n) => assert_eq!(n, 0, "unexpected bytes after shutdown"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

#[test]
fn loadgen_run_verifies_every_echo() {
    let server = start();
    let mut c = RunConfig::new(server.addr());
    c.framing = Framing::Raw;
    c.conns = 20;
    c.pipeline = 4;
    c.size = 300;
    c.stop = Stop::Requests(4000);
    let r = run(&c).unwrap();
    assert!(r.ok(), "{r}");
    assert_eq!((r.sent, r.verified), (4000, 4000));
    let (status, killed) = server.stop(Duration::from_secs(10)).unwrap();
    assert!(status.success() && !killed);
}

#[test]
fn loadgen_hold_measures_rss_per_idle_connection() {
    let server = start();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["hold", "--conns", "300", "--json", "--addr"])
        .arg(server.addr().to_string())
        .arg("--pid")
        .arg(server.pid().to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = run_support::output_within(out, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["conns"], 300);
    assert!(r["rss_after_bytes"].as_u64().unwrap() >= r["rss_before_bytes"].as_u64().unwrap() / 2);
    assert_eq!(r["server_threads"], 1);
    let (status, killed) = server.stop(Duration::from_secs(10)).unwrap();
    assert!(status.success() && !killed);
}

#[test]
fn out_of_descriptors_it_pauses_accepting_then_serves_the_waiting() {
    // RLIMIT_NOFILE 10 (epoll-ref does not raise it): a few connections
    // fill it and the next accept() fails with EMFILE.
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -n 10 && exec \"$0\" --addr 127.0.0.1:0")
        .arg(env!("CARGO_BIN_EXE_epoll-ref"));
    let server = ServerProcess::start_command(cmd, true, Duration::from_secs(20)).unwrap();
    let addr = server.addr();
    // The free descriptor numbers below the limit are the connections it
    // can accept (descriptors inherited above the limit stay usable but
    // new ones must be below it).
    let open_below: usize = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<usize>().ok())
        .filter(|&fd| fd < 10)
        .count();
    let slots = 10 - open_below;
    assert!(
        slots >= 2,
        "{open_below} descriptors below 10 open at start"
    );
    let echo = |s: &mut TcpStream, b: &[u8]| {
        s.write_all(b).unwrap();
        let mut back = vec![0u8; b.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, b);
    };
    // `busy` and `fill` take every slot, each proven accepted by an echo.
    let mut busy = connect(addr);
    echo(&mut busy, b"b");
    let mut fill: Vec<TcpStream> = (1..slots).map(|_| connect(addr)).collect();
    for s in &mut fill {
        echo(s, b"f");
    }
    // These wait in the backlog: accept() fails with EMFILE for them.
    let mut waiting: Vec<TcpStream> = (0..2).map(|_| connect(addr)).collect();
    for s in &mut waiting {
        s.write_all(b"w").unwrap();
    }
    // Keep the loop busy from now on (the pause must end by its deadline,
    // not only when epoll_wait finds nothing to do), then free the slots.
    let stop = Arc::new(AtomicBool::new(false));
    let stop_busy = stop.clone();
    let (pinging, pinging_rx) = std::sync::mpsc::channel();
    let pinger = std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop_busy.load(Relaxed) {
            busy.write_all(b"p").unwrap();
            let mut one = [0u8; 1];
            busy.read_exact(&mut one).unwrap();
            n += 1;
            if n == 1 {
                let _ = pinging.send(());
            }
        }
        n
    });
    pinging_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    drop(fill);
    // Event-based: each read waits for its echo (10 s read timeout).
    for s in &mut waiting {
        let mut one = [0u8; 1];
        s.read_exact(&mut one).unwrap();
        assert_eq!(&one, b"w");
    }
    stop.store(true, Relaxed);
    assert!(pinger.join().unwrap() > 0);
    let (status, killed) = server.stop(Duration::from_secs(10)).unwrap();
    assert!(status.success() && !killed, "{status}");
}
