//! Graceful shutdown: every echo already owed is delivered, in-process and
//! for the real binary on SIGINT/SIGTERM; and the accept back-off on EMFILE.

// Helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::thread;
use std::time::Duration;

use common::{Framing, ServerConfig};
use crossbeam_channel::Receiver;
use support::*;
use threaded_server::{Config, Model};

const FRAMES: usize = 20;

/// Clients mid-conversation when shutdown is triggered: some are being
/// served (they already read one echo), and, in the pool, some are still
/// queued (accepted, their frames sent, nothing echoed yet). Every client
/// gets every complete frame it sent echoed, then a clean EOF; the
/// unfinished frame at the end of each one's stream is dropped.
#[test]
fn shutdown_mid_conversation_returns_every_owed_echo() {
    for model in Model::ALL {
        for framing in Framing::ALL {
            let server = start(Config {
                common: ServerConfig {
                    framing,
                    ..ServerConfig::default()
                },
                model,
                workers: 2,
                queue: 8,
                ..Config::default()
            });
            let mut clients = Vec::new();
            let mut expected = Vec::new();
            for c in 0..5 {
                let mut s = connect(server.addr);
                // Accept them one by one so the pool's first two workers
                // take clients 0 and 1 and the rest queue up behind them.
                wait_until("client accepted", || server.accepted() == c + 1);
                let frames: Vec<u8> = (0..FRAMES)
                    .flat_map(|i| wire(framing, &payload(c * 100 + i as u64, 1 + i * 37, framing)))
                    .collect();
                let mut bytes = frames.clone();
                if framing != Framing::Raw {
                    // Half a frame: not owed, must not be echoed.
                    bytes.extend_from_slice(&wire(framing, b"unfinished")[..5]);
                }
                s.write_all(&bytes).unwrap();
                clients.push(s);
                expected.push(frames);
            }
            // The clients being served are mid-conversation: read a bit.
            let served_now = if model == Model::Pool { 2 } else { 5 };
            let mut got: Vec<Vec<u8>> = vec![Vec::new(); 5];
            for c in 0..served_now {
                got[c] = read_n(&mut clients[c], 10);
            }
            let stats = server.stats.clone();
            server.shutdown.trigger();
            for (c, s) in clients.iter_mut().enumerate() {
                let rest = expected[c].len() - got[c].len();
                got[c].extend(read_n(s, rest));
                assert_eq!(got[c], expected[c], "{model} {framing} client {c}");
                let mut end = [0u8; 16];
                assert_eq!(
                    s.read(&mut end).unwrap(),
                    0,
                    "{model} {framing} client {c}: EOF"
                );
            }
            drop(clients); // our FINs answer the server's: clean ends
            let report = server.wait_stopped();
            if framing != Framing::Raw {
                assert_eq!(common::Stats::get(&stats.frames), (5 * FRAMES) as u64);
            }
            assert_eq!(common::Stats::get(&stats.errors), 0);
            assert_eq!(common::Stats::get(&stats.cut), 0);
            if model == Model::Pool {
                // Two served by the workers; the three still queued at the
                // signal each drained on a thread of its own.
                let served: u64 = report.workers.iter().map(|w| w.connections).sum();
                assert_eq!((served, report.drained), (2, 3));
            }
        }
    }
}

/// Shutdown while nobody is connected: the acceptor is blocked in
/// `accept()` and must still notice at once.
#[test]
fn shutdown_with_no_clients_returns() {
    for model in Model::ALL {
        let server = start(Config {
            model,
            ..Config::default()
        });
        let addr = server.addr;
        // One client served and gone: the accept loop is running and is
        // back in (blocking) accept().
        let mut s = connect(addr);
        echo(&mut s, Framing::Line, b"hi");
        drop(s);
        wait_until("the client's connection is done", || server.frames() == 1);
        let report = server.stop();
        assert_eq!(report.model, model);
        // The listener is closed: new clients are refused by the kernel.
        let e = std::net::TcpStream::connect(addr).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}

/// The real binary as a child process: lines from its stderr, its address,
/// and (at exit) whatever else it wrote on stdout. Every read has a timeout.
struct Child_ {
    child: Child,
    addr: SocketAddr,
    stderr: Receiver<String>,
    stdout_rest: Receiver<String>,
}

fn spawn_server(shell_prefix: Option<&str>, args: &[&str]) -> Child_ {
    let bin = env!("CARGO_BIN_EXE_threaded-server");
    let mut cmd = match shell_prefix {
        // `exec` keeps the pid, so signals reach the server itself.
        Some(prefix) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("{prefix}; exec \"$0\" \"$@\""))
                .arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let mut child = cmd
        .arg("server")
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (first_tx, first) = crossbeam_channel::bounded(1);
    let (rest_tx, stdout_rest) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let _ = first_tx.send(line);
        // Nothing else may ever appear on stdout; checked at exit.
        let mut rest = String::new();
        let _ = stdout.read_to_string(&mut rest);
        let _ = rest_tx.send(rest);
    });
    let (tx, stderr) = crossbeam_channel::unbounded();
    let err = child.stderr.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = first.recv_timeout(TIMEOUT).expect("no `listening on` line");
    let addr =
        common::net::parse_announce(&line).unwrap_or_else(|| panic!("first stdout line: {line:?}"));
    Child_ {
        child,
        addr,
        stderr,
        stdout_rest,
    }
}

impl Child_ {
    /// Wait for a stderr line containing `needle`; return it.
    fn expect_log(&self, needle: &str) -> String {
        loop {
            match self.stderr.recv_timeout(TIMEOUT) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no log line containing {needle:?}: {e}"),
            }
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// The exit code, within `limit`; and nothing after the announce line
    /// on stdout.
    fn wait_exit_within(mut self, limit: Duration) -> i32 {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let pid = self.child.id();
        thread::spawn(move || {
            let _ = tx.send(self.child.wait());
        });
        let Ok(status) = rx.recv_timeout(limit) else {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("server still running {limit:?} later");
        };
        let rest = self
            .stdout_rest
            .recv_timeout(TIMEOUT)
            .expect("stdout never closed");
        assert_eq!(rest, "", "stdout after the announce line");
        status.unwrap().code().expect("exited by a signal")
    }

    fn wait_exit_code(self) -> i32 {
        self.wait_exit_within(TIMEOUT)
    }
}

#[test]
fn binary_sigterm_delivers_owed_echoes_and_logs_the_summary() {
    for (model, sig) in [("pool", "-TERM"), ("per-client", "-INT")] {
        let server = spawn_server(None, &["--model", model, "--workers", "2"]);
        let mut a = connect(server.addr);
        echo(&mut a, Framing::Line, b"hello");
        // Three frames pipelined, one read: two echoes still owed.
        a.write_all(b"one\ntwo\nthree\n").unwrap();
        assert_eq!(read_n(&mut a, 4), b"one\n");
        server.signal(sig);
        assert_eq!(read_n(&mut a, 10), b"two\nthree\n");
        let mut end = [0u8; 8];
        assert_eq!(a.read(&mut end).unwrap(), 0);
        drop(a); // our FIN answers the server's
        let summary = server.expect_log("threaded-server stopped: ");
        assert!(
            summary.ends_with(
                "threaded-server stopped: 1 connections served, 0 refused, 0 closed on error, \
                 0 timed out, 0 cut at the deadline, 4 frames, 16 payload bytes echoed"
            ),
            "{model}: {summary}"
        );
        assert_eq!(server.wait_exit_code(), 0, "{model}");
    }
}

#[test]
fn binary_pool_logs_per_worker_fairness() {
    let server = spawn_server(None, &["--model", "pool", "--workers", "3"]);
    for i in 0..6 {
        let mut s = connect(server.addr);
        echo(&mut s, Framing::Line, format!("client {i}").as_bytes());
    }
    server.signal("-TERM");
    for w in 0..3 {
        server.expect_log(&format!("pool: worker-{w}: "));
    }
    server.expect_log("frames per worker: min");
    server.expect_log("threaded-server stopped: 6 connections served");
    assert_eq!(server.wait_exit_code(), 0);
}

/// Out of file descriptors: `accept()` fails with EMFILE while connections
/// wait in the backlog. The server backs off (logging the delay) instead of
/// spinning, keeps serving the clients it has, and recovers once fds free up.
#[test]
fn emfile_backs_off_and_recovers() {
    common::net::raise_fd_limit().unwrap();
    let server = spawn_server(Some("ulimit -n 24"), &["--model", "per-client"]);
    let mut first = connect(server.addr);
    echo(&mut first, Framing::Line, b"first");
    let crowd: Vec<_> = (0..40).map(|_| connect(server.addr)).collect();
    let line = server.expect_log("(out of file descriptors: see ulimit -n); pausing accepts");
    assert!(line.contains("Too many open files"), "{line}");
    // The server still serves the clients it holds.
    echo(&mut first, Framing::Line, b"still served");
    drop(crowd);
    drop(first);
    // The backlog drains; a new client is eventually accepted and served.
    let mut later = connect(server.addr);
    echo(&mut later, Framing::Line, b"after the crowd left");
    drop(later);
    server.signal("-TERM");
    server.expect_log("threaded-server stopped: ");
    assert_eq!(server.wait_exit_code(), 0);
}

/// The finding behind the contract: 20 well-behaved clients, each with a
/// frame in flight, and one client that wrote megabytes and never reads.
/// SIGTERM must stop the server within --grace plus a small margin (well
/// under the 10 s stall timeout that would otherwise close the hog), every
/// well-behaved client gets its echo and a clean EOF, and the hog is cut.
#[test]
fn a_client_that_never_reads_cannot_hold_shutdown_past_grace() {
    const GOOD: usize = 20;
    for model in ["per-client", "pool"] {
        // Pool: 8 workers, so the hog and 7 clients are being served and the
        // other 13 wait in the queue when the signal comes.
        let server = spawn_server(None, &["--model", model, "--workers", "8", "--grace", "1s"]);
        let hog = connect(server.addr);
        let written = Arc::new(AtomicUsize::new(0));
        let writer = {
            let (mut w, written) = (hog.try_clone().unwrap(), Arc::clone(&written));
            thread::spawn(move || {
                let line: Vec<u8> = [b'h'; 1023].iter().chain(b"\n").copied().collect();
                while written.load(Relaxed) < 64 << 20 && w.write_all(&line).is_ok() {
                    written.fetch_add(line.len(), Relaxed);
                }
            })
        };
        wait_until("the hog has written a megabyte", || {
            written.load(Relaxed) > 1 << 20
        });
        let mut good: Vec<_> = (0..GOOD).map(|_| connect(server.addr)).collect();
        wait_until("every client is accepted", || {
            listen_backlog(server.addr) == 0
        });
        for (i, s) in good.iter_mut().enumerate() {
            s.write_all(format!("in flight {i}\n").as_bytes()).unwrap();
        }
        server.signal("-TERM");
        for (i, s) in good.iter_mut().enumerate() {
            let want = format!("in flight {i}\n");
            assert_eq!(read_n(s, want.len()), want.as_bytes(), "{model} client {i}");
            let mut end = [0u8; 8];
            assert_eq!(s.read(&mut end).unwrap(), 0, "{model} client {i}: EOF");
        }
        drop(good);
        let summary = server.expect_log("threaded-server stopped: ");
        assert!(
            summary.contains(&format!(
                "{} connections served, 0 refused, 0 closed on error, 0 timed out, 1 cut at the deadline",
                GOOD + 1
            )),
            "{model}: {summary}"
        );
        assert_eq!(
            server.wait_exit_within(Duration::from_secs(5)),
            0,
            "{model}"
        );
        writer.join().unwrap();
        drop(hog);
    }
}
