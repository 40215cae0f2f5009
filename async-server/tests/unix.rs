//! `--addr unix:PATH`: the event-loop and tokio servers over a Unix domain
//! socket, in-process and as the binary. Exact echoes in every framing,
//! owed echoes at shutdown, the socket file removed at shutdown (and after
//! SIGTERM), a stale file from a crashed run replaced, a live one refused
//! with one line, a file that is not a socket left alone.
//!
//! Every read has a timeout; every wait for a child is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use async_server::{Balance, Model, UnixSocketFile};
use common::{Framing, Shutdown, Stats};
use support::{Counts, READ_TIMEOUT, config, counts, payload, wire};

const BIN: &str = env!("CARGO_BIN_EXE_async-server");
const CHILD_TIMEOUT: Duration = Duration::from_secs(20);

/// A fresh directory for this test's socket files (short: sun_path is 108
/// bytes).
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("as-unix-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The Unix variants: both models, and two event loops with the acceptor
/// (SO_REUSEPORT is for TCP).
fn variants() -> Vec<(Model, usize, &'static str)> {
    vec![
        (Model::Tokio, 1, "tokio"),
        (Model::EventLoop, 1, "event-loop"),
        (
            Model::EventLoop,
            2,
            "event-loop --loops 2 --balance acceptor",
        ),
    ]
}

fn connect(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s
}

fn read_to_eof(s: &mut UnixStream) -> Vec<u8> {
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    got
}

struct Server {
    shutdown: Shutdown,
    handle: thread::JoinHandle<io::Result<Arc<Stats>>>,
}

fn start(model: Model, loops: usize, framing: Framing, path: &Path) -> Server {
    common::log::init_for_tests();
    let mut cfg = config(framing);
    cfg.loops = loops;
    cfg.balance = Balance::Acceptor;
    let listener = UnixSocketFile::bind(path).unwrap();
    let shutdown = Shutdown::new();
    let handle = {
        let shutdown = shutdown.clone();
        thread::spawn(move || async_server::run(model, listener, cfg, shutdown))
    };
    Server { shutdown, handle }
}

impl Server {
    fn stop(self) -> Arc<Stats> {
        self.shutdown.trigger();
        self.handle.join().unwrap().unwrap()
    }
}

/// 20 concurrent clients, five echoes each, half-close, EOF: exact bytes in
/// every framing; after shutdown the socket file is gone.
#[test]
fn echo_over_a_unix_socket_in_every_framing_and_the_file_is_removed() {
    let d = dir("echo");
    for (model, loops, what) in variants() {
        for framing in Framing::ALL {
            let what = format!("{what} / {framing}");
            let path = d.join("echo.sock");
            let server = start(model, loops, framing, &path);
            let clients: Vec<_> = (0..20)
                .map(|c| {
                    let path = path.clone();
                    thread::spawn(move || {
                        let mut s = connect(&path);
                        for i in 0..5 {
                            let w = wire(framing, &[&payload(c, i)]);
                            s.write_all(&w).unwrap();
                            let mut got = vec![0; w.len()];
                            s.read_exact(&mut got).unwrap();
                            assert_eq!(got, w, "client {c}, echo {i}");
                        }
                        // Half-close: three more frames, then FIN; all three
                        // come back, then EOF.
                        let rest: Vec<Vec<u8>> = (5..8).map(|i| payload(c, i)).collect();
                        let refs: Vec<&[u8]> = rest.iter().map(Vec::as_slice).collect();
                        let rest = wire(framing, &refs);
                        s.write_all(&rest).unwrap();
                        s.shutdown(std::net::Shutdown::Write).unwrap();
                        assert_eq!(read_to_eof(&mut s), rest, "client {c}");
                    })
                })
                .collect();
            for c in clients {
                c.join().unwrap();
            }
            assert!(path.exists(), "{what}: no socket file while serving");
            let Counts {
                accepted,
                errors,
                frames,
                bytes,
                ..
            } = counts(&server.stop());
            let payload_bytes: usize = (0..20)
                .flat_map(|c| (0..8).map(move |i| payload(c, i).len()))
                .sum();
            assert_eq!(
                (accepted, errors, bytes),
                (20, 0, payload_bytes as u64),
                "{what}"
            );
            // Raw framing has no frames: each read is one, however they came.
            if framing != Framing::Raw {
                assert_eq!(frames, 160, "{what}");
            }
            assert!(!path.exists(), "{what}: socket file left after shutdown");
        }
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// Echoes owed at shutdown (sent, in the server's receive queue, not read
/// back yet) all come back over a Unix socket too, then EOF.
#[test]
fn shutdown_returns_owed_echoes_over_a_unix_socket() {
    let d = dir("owed");
    for (model, loops, what) in variants() {
        for framing in Framing::ALL {
            let what = format!("{what} / {framing}");
            let path = d.join("owed.sock");
            let server = start(model, loops, framing, &path);
            let mut clients = Vec::new();
            for c in 0..4 {
                let mut s = connect(&path);
                let first = wire(framing, &[b"accepted?"]);
                s.write_all(&first).unwrap();
                let mut got = vec![0; first.len()];
                s.read_exact(&mut got).unwrap();
                let owed: Vec<Vec<u8>> = (0..6).map(|i| payload(c, i)).collect();
                let refs: Vec<&[u8]> = owed.iter().map(Vec::as_slice).collect();
                let owed = wire(framing, &refs);
                // A Unix socket has no acknowledgements to wait for: when
                // write returns, the bytes are in the server's queue.
                s.write_all(&owed).unwrap();
                clients.push((s, owed));
            }
            server.shutdown.trigger();
            for (c, (mut s, owed)) in clients.into_iter().enumerate() {
                assert_eq!(read_to_eof(&mut s), owed, "{what}: client {c}");
            }
            let stats = server.handle.join().unwrap().unwrap();
            let Counts { errors, cut, .. } = counts(&stats);
            assert_eq!((errors, cut), (0, 0), "{what}");
            assert!(!path.exists(), "{what}");
        }
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// A stale socket file (its server crashed: the file stays, nobody
/// listens) is replaced; a live one is refused with a clear error and left
/// working; a file that is not a socket is never removed.
#[test]
fn stale_file_is_replaced_live_one_refused_other_file_kept() {
    let d = dir("bind");
    let path = d.join("s.sock");
    // Stale: bind and drop a std listener (closing does not unlink).
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let live = UnixSocketFile::bind(&path).unwrap();
    // Live: a second bind is refused, naming the path.
    let e = UnixSocketFile::bind(&path).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    let msg = e.to_string();
    assert!(msg.contains("another server is listening"), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
    // ... and the live one still accepts.
    let _client = UnixStream::connect(&path).unwrap();
    assert!(live.listener.accept().is_ok());
    drop(live);
    assert!(!path.exists(), "dropping the listener removes its file");
    // Not a socket: refused, untouched.
    let plain = d.join("notes.txt");
    std::fs::write(&plain, b"keep me").unwrap();
    let e = UnixSocketFile::bind(&plain).unwrap_err();
    assert!(e.to_string().contains("not a socket"), "{e}");
    assert_eq!(std::fs::read(&plain).unwrap(), b"keep me");
    let _ = std::fs::remove_dir_all(&d);
}

// ---------------------------------------------------------------------------
// The binary

struct Proc {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    stderr_thread: thread::JoinHandle<()>,
    first_line: String,
}

fn spawn(args: &[&str]) -> Proc {
    let mut child = Command::new(BIN)
        .arg("server")
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let err = BufReader::new(child.stderr.take().unwrap());
    let lines = stderr.clone();
    let stderr_thread = thread::spawn(move || {
        for line in err.lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut out = out;
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        let _ = tx.send(line);
    });
    let first_line = rx.recv_timeout(CHILD_TIMEOUT).unwrap_or_default();
    Proc {
        child,
        stderr,
        stderr_thread,
        first_line: first_line.trim_end().to_owned(),
    }
}

impl Proc {
    fn sigterm(&self) {
        // SAFETY: kill(2) with a pid we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
    }

    /// Wait (bounded) for the exit: its code and the whole stderr.
    fn wait(self) -> (Option<i32>, Vec<String>) {
        let Proc {
            mut child,
            stderr,
            stderr_thread,
            ..
        } = self;
        let pid = child.id() as libc::pid_t;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || tx.send(child.wait()));
        let Ok(status) = rx.recv_timeout(CHILD_TIMEOUT) else {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("server did not exit within {CHILD_TIMEOUT:?}");
        };
        stderr_thread.join().unwrap();
        let lines = stderr.lock().unwrap().clone();
        (status.unwrap().code(), lines)
    }
}

/// `listening on unix:PATH`, an echo, SIGTERM: exit 0, one summary line,
/// and the file is gone. Then a second server on the path of a live one
/// exits 1 with one `error:` line, and the first keeps serving.
#[test]
fn the_binary_announces_serves_refuses_a_second_and_removes_the_file() {
    let d = dir("bin");
    for model in ["event-loop", "tokio"] {
        let path = d.join(format!("{model}.sock"));
        let addr = format!("unix:{}", path.display());
        let first = spawn(&["--model", model, "--addr", &addr]);
        assert_eq!(first.first_line, format!("listening on {addr}"), "{model}");
        let mut s = connect(&path);
        s.write_all(b"over a unix socket\n").unwrap();
        let mut got = [0u8; 19];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"over a unix socket\n");

        let second = spawn(&["--model", model, "--addr", &addr]);
        assert_eq!(second.first_line, "", "{model}: the second one announced");
        let (code, log) = second.wait();
        assert_eq!(code, Some(1), "{model}: {log:#?}");
        let errors: Vec<&String> = log.iter().filter(|l| l.contains("error")).collect();
        assert_eq!(errors.len(), 1, "{model}: {log:#?}");
        assert!(
            errors[0].starts_with("async-server: error: ")
                && errors[0].contains("another server is listening"),
            "{model}: {}",
            errors[0]
        );
        // The first is unharmed: the same connection still echoes.
        s.write_all(b"still here\n").unwrap();
        let mut got = [0u8; 11];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"still here\n");
        drop(s);

        first.sigterm();
        let (code, log) = first.wait();
        assert_eq!(code, Some(0), "{model}: {log:#?}");
        let summary: Vec<&String> = log
            .iter()
            .filter(|l| l.contains("async-server stopped: "))
            .collect();
        assert_eq!(summary.len(), 1, "{model}: {log:#?}");
        // The client closed just before SIGTERM: which the server noticed
        // first is a race, so accept either ending, but it must name the
        // peer and count its two frames.
        assert!(
            log.iter()
                .any(|l| l.contains("unix peer #1: closed ") && l.contains("after 2 frames")),
            "{model}: {log:#?}"
        );
        assert!(!path.exists(), "{model}: socket file left after SIGTERM");
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// A crashed run's file (SIGKILL: no clean-up) does not stop the next start.
#[test]
fn the_binary_replaces_a_file_left_by_a_killed_server() {
    let d = dir("stale");
    let path = d.join("stale.sock");
    let addr = format!("unix:{}", path.display());
    let mut crashed = spawn(&["--model", "event-loop", "--addr", &addr]);
    assert_eq!(crashed.first_line, format!("listening on {addr}"));
    crashed.child.kill().unwrap(); // SIGKILL: no handler runs
    crashed.child.wait().unwrap();
    assert!(path.exists(), "SIGKILL should leave the file behind");
    let next = spawn(&["--model", "tokio", "--addr", &addr]);
    assert_eq!(next.first_line, format!("listening on {addr}"));
    let mut s = connect(&path);
    s.write_all(b"again\n").unwrap();
    let mut got = [0u8; 6];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"again\n");
    drop(s);
    next.sigterm();
    let (code, log) = next.wait();
    assert_eq!(code, Some(0), "{log:#?}");
    assert!(
        log.iter()
            .any(|l| l.contains("removing a stale socket file")),
        "{log:#?}"
    );
    assert!(!path.exists());
    let _ = std::fs::remove_dir_all(&d);
}
