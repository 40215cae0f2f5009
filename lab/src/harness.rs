//! The grading harness: numbered steps, "expected ..., got ..." failures,
//! building an exercise with its compiler output cut to the first error, and
//! running the student's program under a deadline.
//!
//! A grader is a function `fn(&mut Run) -> Check`. It calls `run.step(..)`
//! before each thing it tries and returns `Err(Fail)` at the first thing that
//! is wrong; the step that was running is the one that failed. Nothing in a
//! grader may panic or block without a deadline: every read has a timeout and
//! every child process is killed when its handle is dropped.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What a failed step found: a correct program would have done `expected`,
/// this one did `got`; `why` names the likely mistake in the student's words.
#[derive(Debug, Clone)]
pub struct Fail {
    pub expected: String,
    pub got: String,
    pub why: String,
}

pub type Check = Result<(), Fail>;

pub fn fail(expected: impl Into<String>, got: impl Into<String>, why: impl Into<String>) -> Fail {
    Fail {
        expected: expected.into(),
        got: got.into(),
        why: why.into(),
    }
}

/// One grading run: the steps so far and where the output goes.
#[derive(Debug)]
pub struct Run {
    /// The program (or, for library exercises, the grader driver) under test.
    pub bin: PathBuf,
    /// The course workspace's root directory.
    pub root: PathBuf,
    steps: Vec<String>,
    open: bool,
    live: bool,
    out: String,
}

impl Run {
    pub fn new(bin: PathBuf, root: PathBuf, live: bool) -> Self {
        Run {
            bin,
            root,
            steps: Vec::new(),
            open: false,
            live,
            out: String::new(),
        }
    }

    /// Everything printed so far (the self-check reads it).
    pub fn output(&self) -> &str {
        &self.out
    }

    pub fn emit(&mut self, s: &str) {
        self.out.push_str(s);
        if self.live {
            let mut o = io::stdout().lock();
            let _ = o.write_all(s.as_bytes());
            let _ = o.flush();
        }
    }

    /// Start a numbered step; the previous one, if still open, passed.
    pub fn step(&mut self, title: impl Into<String>) {
        self.close_step("ok");
        let title = title.into();
        self.steps.push(title.clone());
        let n = self.steps.len();
        self.emit(&format!("  {n:>2}. {title} ... "));
        self.open = true;
    }

    /// A remark under the current step (what was seen, why a step was skipped).
    pub fn note(&mut self, s: &str) {
        self.close_step("ok");
        self.emit(&format!("      {s}\n"));
    }

    fn close_step(&mut self, verdict: &str) {
        if self.open {
            self.open = false;
            self.emit(&format!("{verdict}\n"));
        }
    }

    /// Print the verdict: the failing step with expected/got/why, or "passed".
    pub fn finish(&mut self, result: &Check, hint_cmd: &str) -> bool {
        match result {
            Ok(()) => {
                self.close_step("ok");
                true
            }
            Err(f) => {
                if !self.open {
                    // A failure outside any step: give it one so it is numbered.
                    self.steps.push("grading".into());
                    let n = self.steps.len();
                    self.emit(&format!("  {n:>2}. grading ... "));
                    self.open = true;
                }
                self.close_step("FAILED");
                let mut s = String::new();
                let _ = writeln!(s, "      expected: {}", indent(&f.expected));
                let _ = writeln!(s, "      got:      {}", indent(&f.got));
                if !f.why.is_empty() {
                    let _ = writeln!(s, "      why:      {}", indent(&f.why));
                }
                let _ = writeln!(s, "  Stuck? {hint_cmd}");
                self.emit(&s);
                false
            }
        }
    }
}

fn indent(s: &str) -> String {
    s.replace('\n', "\n                ")
}

/// Show bytes the way a student can read them: quoted, escaped, cut short.
pub fn show(bytes: &[u8]) -> String {
    const MAX: usize = 48;
    let zeros = bytes.iter().rev().take_while(|&&b| b == 0).count();
    let (body, tail_zeros) = if zeros > 8 && zeros < bytes.len() {
        (&bytes[..bytes.len() - zeros], zeros)
    } else {
        (bytes, 0)
    };
    let mut s = String::from("\"");
    for &b in body.iter().take(MAX) {
        s.extend(std::ascii::escape_default(b).map(char::from));
    }
    if body.len() > MAX {
        s.push_str("...");
    }
    s.push('"');
    if tail_zeros > 0 {
        let _ = write!(s, " followed by {tail_zeros} zero bytes");
    }
    s
}

pub fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

// ---------------------------------------------------------------- building

/// Where the exercises live and build.
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
    pub exercises: PathBuf,
    pub solutions: PathBuf,
    pub target: PathBuf,
    pub progress: PathBuf,
}

impl Paths {
    pub fn new() -> Self {
        // lab/ is one level below the workspace root.
        let lab = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let root = lab
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| lab.clone());
        Paths {
            exercises: lab.join("exercises"),
            solutions: lab.join("solutions"),
            target: root.join("target").join("lab"),
            progress: lab.join(".progress"),
            root,
        }
    }
}

pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // When we run under `cargo run`/`cargo test`, do not let the outer
    // build's target directory leak into the exercise builds.
    c.env_remove("CARGO_TARGET_DIR");
    c
}

/// Build the binaries of one exercise package in `workspace` (the exercises
/// workspace or a temporary copy of it). On failure, returns the compiler's
/// first error in a line or two, not the whole log.
///
/// `whole`: build every package of the workspace, as the self-check does, so
/// that features are unified the same way for every build and each
/// dependency is compiled once, not once per exercise's feature set.
pub fn build(workspace: &Path, target: &Path, package: &str, whole: bool) -> Result<(), String> {
    let mut cmd = cargo();
    cmd.arg("build")
        .arg("--offline")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"));
    if whole {
        cmd.arg("--workspace");
    } else {
        cmd.args(["-p", package]);
    }
    let out = cmd
        .args(["--bins", "--message-format", "short", "--color", "never"])
        .arg("--target-dir")
        .arg(target)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run cargo: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(first_error(&String::from_utf8_lossy(&out.stderr)))
}

/// The first `error` line of cargo's short-format output, plus how many
/// there were. Warnings are left out: they are not why the build failed.
pub fn first_error(stderr: &str) -> String {
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(": error") || l.starts_with("error"))
        .filter(|l| !l.starts_with("error: could not compile"))
        .collect();
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("error: could not compile"))
        .unwrap_or("");
    match errors.first() {
        Some(first) => {
            let mut s = (*first).to_string();
            if errors.len() > 1 {
                let _ = write!(s, "\n(and {} more)", errors.len() - 1);
            }
            if !summary.is_empty() {
                let _ = write!(s, "\n{summary}");
            }
            s
        }
        None => stderr.lines().rev().take(3).collect::<Vec<_>>().join("\n"),
    }
}

// ---------------------------------------------------------------- processes

/// The student's server, started with `--addr 127.0.0.1:0` (plus flags) and
/// killed when dropped.
#[derive(Debug)]
pub struct Server {
    child: std::process::Child,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Server {
    /// Start the program and wait (at most 10 s) for `listening on ADDR`.
    pub fn start(run: &mut Run, extra: &[&str]) -> Result<Server, Fail> {
        let mut args = vec!["--addr", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        run.step(format!("start your program with {}", args.join(" ")));
        let mut child = Command::new(&run.bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail("the program to start", format!("{e}"), "is it built?"))?;
        let stderr = collect(child.stderr.take());
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(line) => {
                    if let Some(addr) = common::net::parse_announce(&line) {
                        return Ok(Server {
                            child,
                            addr,
                            stderr,
                        });
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected)
                | Err(mpsc::RecvTimeoutError::Timeout)
                    if matches!(child.try_wait(), Ok(Some(_))) =>
                {
                    let status = child.try_wait().ok().flatten();
                    return Err(fail(
                        "a line `listening on 127.0.0.1:PORT` on stdout",
                        format!(
                            "the program exited ({}) without it{}",
                            describe_status(status),
                            tail_of(&stderr)
                        ),
                        "print the address after bind, as main does in the starter",
                    ));
                }
                Err(_) if left.is_zero() => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(fail(
                        "a line `listening on 127.0.0.1:PORT` on stdout within 10 s",
                        format!("nothing; the program was killed{}", tail_of(&stderr)),
                        "print the address after bind, as main does in the starter",
                    ));
                }
                Err(_) => {}
            }
        }
    }

    /// The last lines the program wrote on stderr, for a failure message.
    pub fn stderr_tail(&self) -> String {
        tail_of(&self.stderr)
    }

    /// Its process id, for what only /proc or prlimit can show or change
    /// (its threads, its descriptors, its epoll registrations).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Has it exited? (`Some` with its status, at once.)
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Wait at most `d` for the program to exit.
    pub fn wait_exit(&mut self, d: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + d;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Send a signal (SIGTERM for the shutdown exercise).
    pub fn signal(&self, sig: i32) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill() only sends a signal to our own child process.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect<R: Read + Send + 'static>(r: Option<R>) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    if let Some(mut r) = r {
        let b = Arc::clone(&buf);
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = r.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                if let Ok(mut v) = b.lock() {
                    // Bounded: a program that floods stderr keeps its last 64 KiB.
                    if v.len() > 64 * 1024 {
                        v.drain(..32 * 1024);
                    }
                    v.extend_from_slice(&chunk[..n]);
                }
            }
        });
    }
    buf
}

fn tail_of(buf: &Arc<Mutex<Vec<u8>>>) -> String {
    let text = match buf.lock() {
        Ok(v) => String::from_utf8_lossy(&v).into_owned(),
        Err(_) => String::new(),
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let start = lines.len().saturating_sub(3);
    format!("; it printed on stderr:\n{}", lines[start..].join("\n"))
}

pub fn describe_status(s: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match s {
        None => "status unknown".into(),
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => "status unknown".into(),
        },
    }
}

/// What a run of a command-line program (a client, a grader driver) did.
#[derive(Debug)]
pub struct Ran {
    /// `None`: still running at the deadline, so it was killed.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

/// Run `bin args`, kill it at `deadline`.
pub fn run_with_deadline(bin: &Path, args: &[String], deadline: Duration) -> io::Result<Ran> {
    let start = Instant::now();
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let out = collect(child.stdout.take());
    let err = collect(child.stderr.take());
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if start.elapsed() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    // The reader threads finish at EOF, which follows the exit at once.
    thread::sleep(Duration::from_millis(30));
    let text = |b: &Arc<Mutex<Vec<u8>>>| match b.lock() {
        Ok(v) => String::from_utf8_lossy(&v).into_owned(),
        Err(_) => String::new(),
    };
    Ok(Ran {
        status,
        stdout: text(&out),
        stderr: text(&err),
    })
}

// ---------------------------------------------------------------- sockets

pub const READ_TIMEOUT: Duration = Duration::from_secs(3);

pub fn connect(addr: SocketAddr) -> Result<TcpStream, Fail> {
    TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| {
        fail(
            format!("to connect to {addr}"),
            format!("{e}"),
            "is your accept loop still running?",
        )
    })
}

pub fn send(s: &mut TcpStream, bytes: &[u8]) -> Check {
    s.write_all(bytes).map_err(|e| {
        fail(
            format!("to send {}", show(bytes)),
            format!("{e}"),
            "the server closed or reset the connection",
        )
    })
}

/// How a read of `want` bytes ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    Enough,
    Eof,
    Timeout,
    Reset(String),
}

/// Read until `want` bytes have arrived, the peer closes, or `d` passes.
pub fn read_upto(s: &mut TcpStream, want: usize, d: Duration) -> (Vec<u8>, End) {
    let deadline = Instant::now() + d;
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while got.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (got, End::Timeout);
        }
        let _ = s.set_read_timeout(Some(left));
        match s.read(&mut chunk) {
            Ok(0) => return (got, End::Eof),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return (got, End::Timeout);
            }
            Err(e) => return (got, End::Reset(e.to_string())),
        }
    }
    (got, End::Enough)
}

/// Send `msg`, expect exactly `msg` back within the read timeout.
pub fn expect_echo(s: &mut TcpStream, msg: &[u8], why_missing: &str) -> Check {
    send(s, msg)?;
    expect_bytes(s, msg, why_missing)
}

/// Expect exactly `want` next on the stream (and, briefly, nothing more).
pub fn expect_bytes(s: &mut TcpStream, want: &[u8], why_missing: &str) -> Check {
    let (got, end) = read_upto(s, want.len(), READ_TIMEOUT);
    let expected = format!("{} back", describe(want));
    if got.len() >= want.len() {
        // Anything beyond what we sent, in the same read, is a bug too.
        let mut extra = got;
        let _ = s.set_nonblocking(true);
        let mut chunk = [0u8; 4096];
        while let Ok(n) = s.read(&mut chunk) {
            if n == 0 {
                break;
            }
            extra.extend_from_slice(&chunk[..n]);
        }
        let _ = s.set_nonblocking(false);
        if extra == want {
            return Ok(());
        }
        let why = if extra.len() > want.len() && extra[want.len()..].iter().all(|&b| b == 0) {
            "you wrote the whole buffer back; write only the n bytes that read returned: &buf[..n]"
        } else {
            "the bytes differ from what was sent"
        };
        return Err(fail(expected, describe(&extra), why));
    }
    let got_text = match &end {
        End::Eof if got.is_empty() => "the connection closed with nothing echoed".to_string(),
        End::Eof => format!("{}, then the connection closed", describe(&got)),
        End::Timeout if got.is_empty() => {
            format!("nothing within {} s", READ_TIMEOUT.as_secs())
        }
        End::Timeout => format!(
            "{}, then nothing for {} s",
            describe(&got),
            READ_TIMEOUT.as_secs()
        ),
        End::Reset(e) => format!("{} and then an error: {e}", describe(&got)),
        End::Enough => describe(&got),
    };
    Err(fail(expected, got_text, why_missing))
}

pub fn describe(b: &[u8]) -> String {
    if b.len() <= 48 {
        format!("{} ({})", show(b), plural(b.len(), "byte"))
    } else {
        format!("{} bytes: {}", b.len(), show(b))
    }
}

/// After our FIN, expect the server's FIN (read returns 0) within `d`.
pub fn expect_eof(s: &mut TcpStream, d: Duration, why: &str) -> Check {
    let _ = s.shutdown(Shutdown::Write);
    let (got, end) = read_upto(s, usize::MAX, d);
    match end {
        End::Eof => Ok(()),
        End::Reset(e) => Err(fail(
            "the server to close the connection (FIN, your read returns 0)",
            format!("a reset: {e}"),
            why,
        )),
        _ => Err(fail(
            "the server to close the connection (FIN, your read returns 0)",
            format!(
                "{}the connection still open after {} s",
                if got.is_empty() {
                    String::new()
                } else {
                    format!("{} more bytes, and ", got.len())
                },
                d.as_secs()
            ),
            why,
        )),
    }
}

/// A payload that is not all one byte, so misplaced bytes show.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| b'a' + ((i as u32 * 7 + u32::from(seed)) % 26) as u8)
        .collect()
}

/// Send `payload` from a second thread while reading it back here, so a
/// payload larger than the socket buffers cannot deadlock the two sides.
/// The connection stays open.
pub fn echo_big_on(s: &mut TcpStream, payload: &[u8], why: &str) -> Check {
    let mut w = s
        .try_clone()
        .map_err(|e| fail("a second handle on the socket", e.to_string(), ""))?;
    let data = payload.to_vec();
    let writer = thread::spawn(move || w.write_all(&data));
    let (got, end) = read_upto(s, payload.len(), Duration::from_secs(10));
    if got == payload {
        let _ = writer.join();
        return Ok(());
    }
    // shutdown() acts on the socket both handles share, so it also wakes a
    // writer blocked on a server that stopped reading.
    let _ = s.shutdown(Shutdown::Both);
    let _ = writer.join();
    let first_diff = got.iter().zip(payload).position(|(a, b)| a != b);
    let got_text = match (first_diff, end) {
        (Some(i), _) => format!("a different byte at offset {i}"),
        (None, End::Eof) => format!("{} bytes, then the connection closed", got.len()),
        (None, End::Timeout) => format!("{} bytes, then nothing for 10 s", got.len()),
        (None, End::Reset(e)) => format!("{} bytes, then an error: {e}", got.len()),
        (None, End::Enough) => format!("{} bytes", got.len()),
    };
    Err(fail(
        format!("all {} bytes back, in order", payload.len()),
        got_text,
        why,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_error_keeps_one_line_and_the_count() {
        let log = "\
warning: unused variable: `x`
01-tcp-echo/src/main.rs:22:9: error[E0425]: cannot find value `m` in this scope
01-tcp-echo/src/main.rs:30:1: error[E0308]: mismatched types
error: could not compile `ex01-tcp-echo` (bin \"ex01-tcp-echo\") due to 2 previous errors
";
        assert_eq!(
            first_error(log),
            "01-tcp-echo/src/main.rs:22:9: error[E0425]: cannot find value `m` in this scope\n(and 1 more)\n\
             error: could not compile `ex01-tcp-echo` (bin \"ex01-tcp-echo\") due to 2 previous errors"
        );
    }

    #[test]
    fn show_escapes_and_summarises_zero_padding() {
        assert_eq!(show(b"hi\n"), "\"hi\\n\"");
        let mut b = b"hello\n".to_vec();
        b.resize(1024, 0);
        assert_eq!(show(&b), "\"hello\\n\" followed by 1018 zero bytes");
    }

    #[test]
    fn a_failed_step_prints_expected_got_why_and_the_hint() {
        let mut run = Run::new(PathBuf::new(), PathBuf::new(), false);
        run.step("first");
        run.step("second");
        let ok = run.finish(
            &Err(fail("this", "that", "because")),
            "cargo run -p lab -- hint 1",
        );
        assert!(!ok);
        assert_eq!(
            run.output(),
            "   1. first ... ok\n   2. second ... FAILED\n      expected: this\n      got:      that\n\
             \x20     why:      because\n  Stuck? cargo run -p lab -- hint 1\n"
        );
    }

    /// The deadline really kills a program that never ends.
    #[test]
    fn run_with_deadline_kills_a_hanging_program() {
        let ran = run_with_deadline(
            Path::new("sleep"),
            &["30".into()],
            Duration::from_millis(200),
        )
        .unwrap();
        assert!(ran.status.is_none());
    }
}
