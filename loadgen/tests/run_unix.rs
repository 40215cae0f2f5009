//! `loadgen run --addr unix:PATH` over a real Unix domain socket (a tiny
//! in-test echo server): every byte sent is received and echoed exactly,
//! a corrupted echo is caught, and the child-process parser reads a
//! `listening on unix:PATH` announcement.

// Helpers outside #[test] functions may unwrap too: a test failing loudly is the point.
#![allow(clippy::unwrap_used)]

mod run_support;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use common::Framing;
use loadgen::child::{Endpoint, ServerProcess};
use loadgen::run::{RunConfig, Stop, run};
use run_support::output_within;

fn sock_path(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("loadgen-unix-{tag}-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// A thread-per-client Unix echo server; counts the bytes it received.
/// With `flip_at = Some(n)` it corrupts the n-th byte of the stream of
/// every connection (to prove the client checks).
fn unix_echo(path: &PathBuf, flip_at: Option<u64>) -> Arc<AtomicU64> {
    let listener = UnixListener::bind(path).unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let total = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let total = total.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = [0u8; 4096];
                let mut offset = 0u64;
                loop {
                    let n = match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    total.fetch_add(n as u64, Relaxed);
                    if let Some(at) = flip_at
                        && (offset..offset + n as u64).contains(&at)
                    {
                        buf[(at - offset) as usize] ^= 0x20;
                    }
                    offset += n as u64;
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    received
}

#[test]
fn counts_exactly_over_a_unix_socket_in_every_framing() {
    for framing in Framing::ALL {
        let path = sock_path(framing.name());
        let received = unix_echo(&path, None);
        let mut c = RunConfig::new_unix(&path);
        c.framing = framing;
        c.conns = 5;
        c.pipeline = 3;
        c.size = 100;
        c.stop = Stop::Requests(500);
        let r = run(&c).unwrap();
        assert!(r.ok(), "{framing}: {r}");
        assert_eq!((r.sent, r.verified, r.connects), (500, 500, 5), "{r}");
        assert_eq!(r.addr, format!("unix:{}", path.display()));
        let per_frame = match framing {
            Framing::Line => 101,
            Framing::Length => 104,
            Framing::Raw => 100,
        };
        // Exact: the server counts each read before echoing it, and every
        // echo was verified before run() returned.
        assert_eq!(received.load(Relaxed), 500 * per_frame, "{framing}");
        let _ = std::fs::remove_file(&path);
    }
}

#[test]
fn a_corrupted_unix_echo_is_caught() {
    let path = sock_path("flip");
    unix_echo(&path, Some(70));
    let mut c = RunConfig::new_unix(&path);
    c.framing = Framing::Raw;
    c.conns = 1;
    c.stop = Stop::Requests(10);
    let r = run(&c).unwrap();
    assert!(!r.ok());
    assert_eq!(r.errors.wrong, 1, "{r}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn cli_run_against_unix_path_and_bad_targets() {
    let path = sock_path("cli");
    unix_echo(&path, None);
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "run",
            "--framing",
            "raw",
            "--conns",
            "2",
            "--requests",
            "40",
        ])
        .arg("--addr")
        .arg(format!("unix:{}", path.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = output_within(out, Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("target     unix:{} unix stream", path.display())),
        "{stdout}"
    );
    assert!(stdout.contains("40 sent, 40 verified"), "{stdout}");
    let _ = std::fs::remove_file(&path);

    // Nobody there: one clear line, exit 1. An empty path: clap's error, exit 2.
    let gone = sock_path("gone");
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["run", "--requests", "1", "--timeout", "2s", "--addr"])
        .arg(format!("unix:{}", gone.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = output_within(out, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&gone.display().to_string()), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["run", "--addr", "unix:"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = output_within(out, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a path"));
}

#[test]
fn child_announcing_a_unix_path_is_understood() {
    let path = sock_path("child");
    // A stand-in server: announces, then waits to be stopped (SIGTERM).
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("echo \"listening on unix:$0\"; exec sleep 60")
        .arg(&path);
    let server = ServerProcess::start_command(cmd, true, Duration::from_secs(10)).unwrap();
    assert_eq!(server.endpoint(), &Endpoint::Unix(path.clone()));
    assert_eq!(server.addr().port(), 0, "a unix server has no TCP address");
    let (_, killed) = server.stop(Duration::from_secs(10)).unwrap();
    assert!(!killed);
}

#[test]
fn hold_over_a_unix_socket_echoes_each_connection_once() {
    let path = sock_path("hold");
    let received = unix_echo(&path, None);
    // The in-test server lives in this process: its RSS is ours.
    let args = loadgen::hold::HoldArgs {
        addr: loadgen::run::Target::Unix(path.clone()),
        conns: 25,
        pid: std::process::id(),
        framing: Framing::Line,
        hold: Duration::ZERO,
        timeout: Duration::from_secs(5),
        json: false,
    };
    let r = loadgen::hold::hold(&args).unwrap();
    assert_eq!(r.conns, 25);
    assert!(r.rss_after_bytes > 0);
    // Exactly one `h\n` per connection reached the server.
    assert_eq!(received.load(Relaxed), 25 * 2);
    let _ = std::fs::remove_file(&path);
}
