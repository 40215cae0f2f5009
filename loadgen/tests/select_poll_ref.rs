//! The reference servers `select-ref` and `poll-ref` over real sockets, as
//! `epoll_ref.rs` tests `epoll-ref`: exact bytes echoed then EOF after a
//! half-close, a slow reader served in full without blocking others,
//! SIGTERM exits 0, `loadgen run` verifies every echo. And the limit of
//! `select`: a connection numbered FD_SETSIZE or above is refused with
//! a clear reason while the others are still served.
//!
//! Run with: `cargo test -p loadgen --test select_poll_ref`

// Helpers outside #[test] functions may unwrap too: a test failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::Framing;
use loadgen::child::ServerProcess;
use loadgen::run::{RunConfig, Stop, run};

const REFS: [(&str, &str); 2] = [
    ("select-ref", env!("CARGO_BIN_EXE_select-ref")),
    ("poll-ref", env!("CARGO_BIN_EXE_poll-ref")),
];

fn start(bin: &str) -> ServerProcess {
    let args = ["--addr".to_string(), "127.0.0.1:0".to_string()];
    ServerProcess::start(Path::new(bin), &args, true, Duration::from_secs(20)).unwrap()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

fn echo(s: &mut TcpStream, b: &[u8]) {
    s.write_all(b).unwrap();
    let mut back = vec![0u8; b.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, b);
}

fn stop_clean(server: ServerProcess, name: &str) {
    let (status, killed) = server.stop(Duration::from_secs(10)).unwrap();
    assert!(!killed, "{name} did not exit within 10 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "{name}: {status}");
}

#[test]
fn echo_exact_bytes_then_eof_after_half_close() {
    for (name, bin) in REFS {
        let server = start(bin);
        let mut s = connect(server.addr());
        let mut sent: Vec<u8> = (0..=255u8).collect();
        sent.extend_from_slice(b"hello\n\0world");
        sent.extend(pattern(100_000, 7));
        for piece in sent.chunks(777) {
            s.write_all(piece).unwrap();
        }
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), sent.len(), "{name}");
        assert!(got == sent, "{name}: echo differs from what was sent");
        stop_clean(server, name);
    }
}

#[test]
fn a_slow_reader_gets_every_byte_and_does_not_block_others() {
    for (name, bin) in REFS {
        let server = start(bin);
        let addr = server.addr();
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        sock.connect(&addr.into()).unwrap();
        let slow: TcpStream = sock.into();
        slow.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        slow.set_write_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        // 24 MiB against a reader taking 1000 bytes per read: the server's
        // writes come back short and its pending-output path does the work.
        let sent = pattern(24 * 1024 * 1024, 3);
        let mut writer = slow.try_clone().unwrap();
        let to_send = sent.clone();
        let w = std::thread::spawn(move || {
            writer.write_all(&to_send).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let mut slow_r = slow;
        let mut first = [0u8; 1];
        slow_r.read_exact(&mut first).unwrap();
        let mut other = connect(addr);
        echo(&mut other, b"still served");
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
        assert_eq!(got.len(), sent.len(), "{name}: bytes lost or added");
        let first_diff = got.iter().zip(&sent).position(|(a, b)| a != b);
        assert_eq!(first_diff, None, "{name}: echo differs from this offset on");
        stop_clean(server, name);
    }
}

#[test]
fn sigterm_with_clients_connected_exits_zero_and_closes_them() {
    for (name, bin) in REFS {
        let server = start(bin);
        let mut a = connect(server.addr());
        echo(&mut a, b"x");
        let _idle = connect(server.addr());
        stop_clean(server, name);
        let mut rest = Vec::new();
        match a.read_to_end(&mut rest) {
            Ok(n) => assert_eq!(n, 0, "{name}: unexpected bytes after shutdown"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
}

#[test]
fn loadgen_run_verifies_every_echo() {
    for (name, bin) in REFS {
        let server = start(bin);
        let mut c = RunConfig::new(server.addr());
        c.framing = Framing::Raw;
        c.conns = 50;
        c.pipeline = 4;
        c.size = 300;
        c.stop = Stop::Requests(4000);
        let r = run(&c).unwrap();
        assert!(r.ok(), "{name}: {r}");
        assert_eq!((r.sent, r.verified), (4000, 4000), "{name}");
        stop_clean(server, name);
    }
}

/// `select-ref --fill-fds-below 1022`: its first two connections get
/// descriptors 1022 and 1023 (the last numbers an fd_set has), the third
/// gets 1024. The third must be refused (closed, with the reason on
/// stderr) and the first two still echoed; once one of them leaves, its
/// number is free again and a new client is served.
#[test]
fn select_refuses_descriptor_numbers_past_fd_setsize_and_serves_the_rest() {
    // Its stderr goes to a file we read (the shell execs the server, so
    // the pid we signal is the server's own).
    let log = std::env::temp_dir().join(format!("select-ref-{}.log", std::process::id()));
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("exec \"$0\" --addr 127.0.0.1:0 --fill-fds-below 1022 2>\"$1\"")
        .arg(REFS[0].1)
        .arg(&log);
    let server = ServerProcess::start_command(cmd, true, Duration::from_secs(20)).unwrap();
    let addr = server.addr();
    let mut a = connect(addr);
    echo(&mut a, b"a");
    let mut b = connect(addr);
    echo(&mut b, b"b");
    // fd 1024: connect() succeeds (the kernel completed the handshake),
    // then the server closes it at once: EOF (or a reset), never an echo.
    let mut refused = connect(addr);
    let _ = refused.write_all(b"c");
    let mut got = Vec::new();
    match refused.read_to_end(&mut got) {
        Ok(_) => assert!(got.is_empty(), "refused connection echoed {got:?}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    // The server's reason, on its stderr: written (unbuffered) before the
    // close(2) whose EOF we just saw, so it is in the file now.
    let reason = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        reason.contains("descriptor number 1024 is FD_SETSIZE (1024) or above"),
        "no clear refusal in the server's log:\n{reason}"
    );
    // The others are still served.
    echo(&mut a, b"a again");
    echo(&mut b, b"b again");
    // A number below 1024 frees up: the next client fits and is served.
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut c = loop {
        let mut c = connect(addr);
        c.write_all(b"c").unwrap();
        let mut one = [0u8; 1];
        match c.read(&mut one) {
            Ok(1) => {
                assert_eq!(&one, b"c");
                break c;
            }
            // Still refused: `a`'s close has not been seen yet.
            _ if Instant::now() < deadline => continue,
            r => panic!("no client served after one left: {r:?}"),
        }
    };
    echo(&mut c, b"served");
    echo(&mut b, b"b still");
    stop_clean(server, "select-ref");
    let summary = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(
        summary.contains("refused (descriptor number >= FD_SETSIZE)"),
        "{summary}"
    );
}
