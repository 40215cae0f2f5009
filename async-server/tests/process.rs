//! The binary as a user runs it: the `listening on` line, SIGTERM, a real
//! client nobody here wrote (Python's socket module), bad flags, the demo,
//! and running out of file descriptors (EMFILE) without spinning.
// Test code: a panic is a failed test, so unwrap freely (clippy.toml
// allows it only inside #[test] functions, not in their helpers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_async-server");
const MODELS: [&str; 2] = ["tokio", "event-loop"];

struct Proc {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
    stderr_thread: std::thread::JoinHandle<()>,
}

fn start(cmd: &mut Command) -> Proc {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Collect stderr on a thread so the child never blocks on a full pipe.
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let err = BufReader::new(child.stderr.take().unwrap());
    let lines = stderr.clone();
    let stderr_thread = std::thread::spawn(move || {
        for line in err.lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = common::net::parse_announce(&first)
        .unwrap_or_else(|| panic!("first stdout line was {first:?}"));
    Proc {
        child,
        addr,
        stderr,
        stderr_thread,
    }
}

impl Proc {
    /// SIGTERM, then the exit status and the whole log (bounded waits).
    fn terminate(self) -> (std::process::ExitStatus, Vec<String>) {
        let Proc {
            mut child,
            stderr,
            stderr_thread,
            ..
        } = self;
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill(2) with a pid we spawned and still own.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(child.wait()));
        let Ok(status) = rx.recv_timeout(Duration::from_secs(15)) else {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("server did not exit after SIGTERM");
        };
        // The child has exited, so its stderr pipe is at EOF.
        stderr_thread.join().unwrap();
        let lines = stderr.lock().unwrap().clone();
        (status.unwrap(), lines)
    }
}

fn server(model: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["server", "--model", model, "--addr", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "info");
    cmd
}

#[test]
fn python_client_half_close_and_sigterm_exit_zero() {
    for model in MODELS {
        let proc = start(&mut server(model, &[]));
        let script = "import socket,sys\n\
            s=socket.create_connection(('127.0.0.1',int(sys.argv[1])),timeout=10)\n\
            s.sendall(b'one\\ntwo\\n'); s.shutdown(socket.SHUT_WR)\n\
            d=b''\n\
            while True:\n    c=s.recv(4096)\n    if not c: break\n    d+=c\n\
            sys.stdout.buffer.write(d)\n";
        let out = Command::new("python3")
            .args(["-c", script, &proc.addr.port().to_string()])
            .output()
            .expect("python3 is installed (see .ci/run)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, b"one\ntwo\n", "{model}");
        let (status, log) = proc.terminate();
        assert!(status.success(), "{model}: {status}");
        let summary: Vec<_> = log.iter().filter(|l| l.contains("summary:")).collect();
        assert_eq!(summary.len(), 1, "{model}: {log:#?}");
        assert!(
            summary[0].contains("1 connections served"),
            "{}",
            summary[0]
        );
        assert!(log.iter().any(|l| l.contains("RLIMIT_NOFILE")), "{model}");
    }
}

#[test]
fn our_client_against_the_server() {
    let proc = start(&mut server("event-loop", &["--framing", "length"]));
    let out = Command::new(BIN)
        .args([
            "client",
            "--framing",
            "length",
            "--addr",
            &proc.addr.to_string(),
            "hello",
            "world",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"hello\nworld\n");
    let (status, _) = proc.terminate();
    assert!(status.success());
}

#[test]
fn bad_flags_are_one_error_line_and_exit_1() {
    for args in [
        &["server", "--model", "event-loop", "--threads", "2"][..],
        &["server", "--model", "event-loop", "--offload", "rayon"],
        &["server", "--threads", "0"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("error: ") && !err.contains("panicked"),
            "{err}"
        );
        assert!(out.stdout.is_empty());
    }
    // Refused, not a hang: nothing listens on the client's target.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(BIN)
        .args(["client", "--addr", &format!("127.0.0.1:{port}"), "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused"));
}

#[test]
fn demo_runs_both_models() {
    let out = Command::new(BIN).env("RUST_LOG", "warn").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for model in MODELS {
        assert!(text.contains(&format!("== --model {model}:")), "{text}");
    }
    assert_eq!(
        text.matches("server summary: 3 connections served").count(),
        2,
        "{text}"
    );
    assert!(text.contains("client 3 <- \"bye from client 3\""), "{text}");
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the `(comm)`, which may itself contain spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// Out of file descriptors: the server must keep serving the clients it has,
/// not spin on `accept()`, and accept again once descriptors are freed.
#[test]
fn emfile_backs_off_and_recovers() {
    for model in MODELS {
        let mut cmd = server(model, &["--threads", "1", "--grace", "2s"]);
        // SAFETY: only async-signal-safe setrlimit between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 64,
                    rlim_max: 64,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let proc = start(&mut cmd);
        // The kernel completes every handshake (backlog 1024); the server
        // can only accept the first fifty-odd.
        let mut conns: Vec<TcpStream> = (0..80)
            .map(|_| {
                let s = TcpStream::connect(proc.addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                s
            })
            .collect();
        let mut first = conns.remove(0);
        first.write_all(b"first\n").unwrap();
        let mut buf = [0u8; 6];
        first.read_exact(&mut buf).unwrap();
        assert_eq!(
            &buf, b"first\n",
            "{model}: an accepted client is still served"
        );

        let mut last = conns.pop().unwrap();
        last.write_all(b"last\n").unwrap();
        // The last one is stuck in the backlog. While it waits, the server
        // must not burn CPU retrying accept().
        last.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let cpu_before = cpu_seconds(proc.child.id());
        let err = last
            .read_exact(&mut [0u8; 5])
            .expect_err("served while out of fds?");
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{err}"
        );
        let cpu = cpu_seconds(proc.child.id()) - cpu_before;
        assert!(
            cpu < 0.5,
            "{model}: {cpu:.2} s of CPU in a 1 s wait: spinning on accept"
        );

        // Free descriptors: close forty clients.
        conns.drain(..40);
        last.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut got = [0u8; 5];
        last.read_exact(&mut got).unwrap();
        assert_eq!(
            &got, b"last\n",
            "{model}: accepting again after fds were freed"
        );
        drop((first, last, conns));

        let (status, log) = proc.terminate();
        assert!(status.success(), "{model}: {status}");
        let warnings = log
            .iter()
            .filter(|l| l.contains("out of file descriptors"))
            .count();
        // Back-off: a handful of warnings, not one per spin.
        assert!(
            (1..=30).contains(&warnings),
            "{model}: {warnings} EMFILE warnings"
        );
    }
}
