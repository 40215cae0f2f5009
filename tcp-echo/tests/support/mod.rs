//! The `tcp-echo` binary as a child process, every read of its output with
//! a timeout: its `listening on` line, its stderr lines as they come, and
//! its exit within a bound.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Duration;

/// Bound on every wait for the child.
pub const T: Duration = Duration::from_secs(10);

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tcp-echo"))
}

pub struct Running {
    child: Child,
    pub addr: SocketAddr,
    stderr: Receiver<String>,
    /// Everything on stdout after the announce line, once it closes.
    rest: Receiver<String>,
    /// The stderr lines seen so far by `expect_log`.
    pub log: Vec<String>,
}

/// `tcp-echo server --addr 127.0.0.1:0 ARGS`, with `RUST_LOG=info`.
pub fn spawn_server(args: &[&str]) -> Running {
    let mut child = bin()
        .args(["server", "--addr", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (line_tx, line_rx) = mpsc::channel();
    let (rest_tx, rest) = mpsc::channel();
    thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let _ = line_tx.send(line);
        let mut rest = String::new();
        let _ = stdout.read_to_string(&mut rest);
        let _ = rest_tx.send(rest);
    });
    let (tx, stderr) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = line_rx.recv_timeout(T).expect("no `listening on` line");
    let addr =
        common::net::parse_announce(&line).unwrap_or_else(|| panic!("first stdout line: {line:?}"));
    Running {
        child,
        addr,
        stderr,
        rest,
        log: Vec::new(),
    }
}

impl Running {
    /// Wait (bounded) for a stderr line containing `needle`; return it.
    pub fn expect_log(&mut self, needle: &str) -> String {
        loop {
            match self.stderr.recv_timeout(T) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => panic!("no log line containing {needle:?} ({e}): {:#?}", self.log),
            }
        }
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, sig) },
            0
        );
    }

    /// Wait at most `limit` for the exit; also checks that nothing but the
    /// announce line ever went to stdout. Returns every stderr line.
    pub fn wait_exit(mut self, limit: Duration) -> (ExitStatus, Vec<String>) {
        let (tx, rx) = mpsc::channel();
        let mut child = self.child;
        let pid = child.id();
        thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = match rx.recv_timeout(limit) {
            Ok(status) => status.unwrap(),
            Err(_) => {
                // SAFETY: kill(2) on our own child, which did not exit.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                panic!("server still running {limit:?} later: {:#?}", self.log);
            }
        };
        let rest = self.rest.recv_timeout(T).expect("stdout never closed");
        assert_eq!(rest, "", "stdout after the announce line");
        // The stderr thread ends when the child's stderr closes.
        while let Ok(line) = self.stderr.recv_timeout(T) {
            self.log.push(line);
        }
        (status, self.log)
    }
}
