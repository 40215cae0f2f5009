//! Interop: clients nobody here wrote (OpenBSD `nc`, Python's socket module)
//! against both models.

// Helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::thread;

use common::{Framing, ServerConfig};
use support::*;
use threaded_server::{Config, Model};

/// Run a command with `stdin`, bounded by [`TIMEOUT`].
fn run(mut cmd: Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (CI installs netcat-openbsd and python3)"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let id = child.id();
    let (tx, rx) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(TIMEOUT)
        .unwrap_or_else(|_| panic!("{cmd:?} (pid {id}) did not finish in time"))
        .unwrap()
}

#[test]
fn nc_gets_its_lines_back() {
    for model in Model::ALL {
        let server = start(Config {
            model,
            workers: 2,
            ..Config::default()
        });
        let mut nc = Command::new("nc");
        // -N: shutdown(SHUT_WR) after stdin's EOF, so the server sees the
        // end, closes, and nc exits.
        nc.args(["-N", "127.0.0.1", &server.addr.port().to_string()]);
        let out = run(nc, b"hello\nworld\n\n");
        assert_eq!(out.stdout, b"hello\nworld\n\n", "{model}");
        assert!(out.status.success(), "{model}: {out:?}");
        server.stop();
    }
}

const PYTHON_LENGTH_CLIENT: &str = r#"
import socket, struct, sys
port = int(sys.argv[1])
frames = [b"", b"binary \x00\n\xff ok", b"x" * 70000]
s = socket.create_connection(("127.0.0.1", port), timeout=5)
s.sendall(b"".join(struct.pack(">I", len(f)) + f for f in frames))
def exact(n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            sys.exit("server closed early")
        buf += chunk
    return buf
for f in frames:
    (n,) = struct.unpack(">I", exact(4))
    assert exact(n) == f, "echo differs"
s.shutdown(socket.SHUT_WR)
assert s.recv(1) == b"", "expected EOF"
print("ok", len(frames))
"#;

#[test]
fn python_length_framed_binary_frames() {
    for model in Model::ALL {
        let server = start(Config {
            common: ServerConfig {
                framing: Framing::Length,
                ..ServerConfig::default()
            },
            model,
            workers: 2,
            ..Config::default()
        });
        let mut py = Command::new("python3");
        py.args(["-c", PYTHON_LENGTH_CLIENT, &server.addr.port().to_string()]);
        let out = run(py, b"");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "ok 3\n",
            "{model}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        server.stop();
    }
}
