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

use crate::i18n::tr;

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
///
/// Two records of the same run: `out`, always in English (the self-check
/// matches a wrong solution's `must_say` words in it), and what is shown,
/// in the language the user picked (`crate::i18n`).
#[derive(Debug)]
pub struct Run {
    /// The program (or, for library exercises, the grader driver) under test.
    pub bin: PathBuf,
    /// The course workspace's root directory.
    pub root: PathBuf,
    steps: Vec<String>,
    open: bool,
    /// Progress lines (a build's) were printed under the open step, so its
    /// verdict goes on a line of its own.
    broken: bool,
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
            broken: false,
            live,
            out: String::new(),
        }
    }

    /// Everything printed so far, in English (the self-check reads it).
    pub fn output(&self) -> &str {
        &self.out
    }

    /// Record `en` and show `shown`.
    fn emit2(&mut self, en: &str, shown: &str) {
        self.out.push_str(en);
        if self.live {
            let mut o = io::stdout().lock();
            let _ = o.write_all(shown.as_bytes());
            let _ = o.flush();
        }
    }

    /// A line of the runner's own: `s` is English, shown translated.
    pub fn emit(&mut self, s: &str) {
        let shown = tr(s);
        self.emit2(s, &shown);
    }

    /// Start a numbered step; the previous one, if still open, passed.
    pub fn step(&mut self, title: impl Into<String>) {
        self.close_step("ok");
        let title = title.into();
        self.steps.push(title.clone());
        let n = self.steps.len();
        let shown = tr(&title);
        self.emit2(
            &format!("  {n:>2}. {title} ... "),
            &format!("  {n:>2}. {shown} ... "),
        );
        self.open = true;
    }

    /// A remark under the current step (what was seen, why a step was skipped).
    pub fn note(&mut self, s: &str) {
        self.close_step("ok");
        let shown = tr(s);
        self.emit2(&format!("      {s}\n"), &format!("      {shown}\n"));
    }

    /// A line of a tool's progress under the open step (cargo's `Compiling
    /// ...`), shown as the tool wrote it and only to a live user: it tells
    /// them something is happening, it is not part of the verdict.
    pub fn progress(&mut self, line: &str) {
        if !self.live {
            return;
        }
        let mut o = io::stdout().lock();
        if self.open && !self.broken {
            let _ = o.write_all(b"\n");
            self.broken = true;
        }
        let _ = writeln!(o, "      {line}");
        let _ = o.flush();
    }

    /// A line that must be seen even when the run is not live (the
    /// self-check's runs): that a long build started, and when it ended.
    pub fn announce(&mut self, line: &str) {
        if self.live {
            self.progress(line);
        } else {
            println!("      {line}");
        }
    }

    /// Close the open step as passed, with `verdict` (e.g. "ok (52 s)").
    pub fn pass_step(&mut self, verdict: &str) {
        self.close_step(verdict);
    }

    fn close_step(&mut self, verdict: &str) {
        if self.open {
            self.open = false;
            if std::mem::take(&mut self.broken) && self.live {
                let mut o = io::stdout().lock();
                let _ = o.write_all(b"      ");
            }
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
                    let shown = tr("grading");
                    self.emit2(
                        &format!("  {n:>2}. grading ... "),
                        &format!("  {n:>2}. {shown} ... "),
                    );
                    self.open = true;
                }
                self.close_step("FAILED");
                let lines = |e: &str, g: &str, w: &str, stuck: &str| {
                    let mut s = String::new();
                    let _ = writeln!(s, "      {} {}", label("expected:"), indent(e));
                    let _ = writeln!(s, "      {} {}", label("got:     "), indent(g));
                    if !w.is_empty() {
                        let _ = writeln!(s, "      {} {}", label("why:     "), indent(w));
                    }
                    let _ = writeln!(s, "  {stuck}");
                    s
                };
                let en = {
                    let mut s = String::new();
                    let _ = writeln!(s, "      expected: {}", indent(&f.expected));
                    let _ = writeln!(s, "      got:      {}", indent(&f.got));
                    if !f.why.is_empty() {
                        let _ = writeln!(s, "      why:      {}", indent(&f.why));
                    }
                    let _ = writeln!(s, "  Stuck? {hint_cmd}");
                    s
                };
                let shown = lines(
                    &tr(&f.expected),
                    &tr(&f.got),
                    &if f.why.is_empty() {
                        String::new()
                    } else {
                        tr(&f.why)
                    },
                    &tr(&format!("Stuck? {hint_cmd}")),
                );
                self.emit2(&en, &shown);
                false
            }
        }
    }
}

/// "expected:", "got:     ", "why:     " in the user's language, padded to
/// one width so the values line up (a Chinese character takes two columns).
fn label(en: &str) -> String {
    match crate::i18n::lang() {
        crate::i18n::Lang::En => en.to_string(),
        crate::i18n::Lang::ZhCn => match en.trim() {
            "expected:" => "应当：   ".to_string(),
            "got:" => "实际：   ".to_string(),
            _ => "原因：   ".to_string(),
        },
    }
}

fn indent(s: &str) -> String {
    s.replace('\n', "\n                ")
}

/// Undo the driver protocol's escaping of one field (`encode_field` in
/// lab/exercises/grader_support.rs): `\\` `\t` `\n` `\r` become a backslash,
/// a tab, a line break, a carriage return; any other escape is kept as it is.
pub fn decode_field(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('\\') => out.push('\\'),
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
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
    /// `lab/exercises/target`: cargo's default for the exercises workspace,
    /// so the command the exercises suggest (`cargo run --manifest-path
    /// lab/exercises/Cargo.toml -p ...`, from any directory) and the lab's
    /// own build are one build: same directory, same flags, every dependency
    /// compiled once. (A `.cargo/config.toml` in lab/exercises would only
    /// apply to cargo started inside that directory; there is none.)
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
            target: lab.join("exercises").join("target"),
            progress: lab.join(".progress"),
            root,
        }
    }
}

/// What `cargo run` sets for the program it runs (the lab), and must not
/// reach the builds the lab starts: ring's build script declares
/// `rerun-if-env-changed=CARGO_MANIFEST_DIR`, so a build started with the
/// lab's value and one started from a shell mark each other stale, and
/// every switch recompiled ring, rustls and all that depends on them (the
/// silent minute of the first `loadgen check` step, every time).
fn set_by_cargo_run(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_RUSTC_CURRENT_DIR"
                | "OUT_DIR"
        )
}

/// `cargo`, with the environment a user's shell would give it: the outer
/// build's target directory and what `cargo run` set for the lab removed,
/// so that the lab's builds and the ones the user types are the same builds.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.env_remove("CARGO_TARGET_DIR");
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(set_by_cargo_run) {
            c.env_remove(k);
        }
    }
    c
}

/// The build the lab runs for one exercise, as its arguments after `cargo`.
/// The exercises suggest the same command to students (`cargo build
/// --manifest-path lab/exercises/Cargo.toml -p exNN-...`): without
/// `--target-dir`, cargo builds that workspace into its own `target/`,
/// which is where the lab passes it explicitly, so the two are one build.
/// The other flags change what is printed, not what is built.
pub fn build_args(workspace: &Path, target: &Path, package: &str, whole: bool) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "build".into(),
        "--offline".into(),
        "--manifest-path".into(),
        workspace.join("Cargo.toml").display().to_string(),
    ];
    if whole {
        a.push("--workspace".into());
    } else {
        a.extend(["-p".into(), package.into()]);
    }
    a.extend(
        ["--bins", "--message-format", "short", "--color", "never"]
            .iter()
            .map(|s| s.to_string()),
    );
    a.extend(["--target-dir".into(), target.display().to_string()]);
    a
}

/// Run `cargo <args>`, passing each progress line cargo prints (`Compiling
/// x`, `Blocking waiting for file lock`) to `progress` as it comes, so a
/// first build that takes a minute is never a silent minute. Returns
/// whether it succeeded and all it wrote on stderr.
pub fn cargo_streaming(
    args: &[String],
    dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> io::Result<(bool, String)> {
    let mut child = cargo()
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut all = String::new();
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            let t = line.trim_start();
            if t.starts_with("Compiling ") || t.starts_with("Blocking ") {
                progress(t);
            }
            all.push_str(&line);
            all.push('\n');
        }
    }
    Ok((child.wait()?.success(), all))
}

/// Build the binaries of one exercise package in `workspace` (the exercises
/// workspace or a temporary copy of it), from the course's root directory.
/// On failure, returns the compiler's first error in a line or two, not the
/// whole log.
///
/// `whole`: build every package of the workspace, as the self-check does, so
/// that features are unified the same way for every build and each
/// dependency is compiled once, not once per exercise's feature set.
pub fn build(
    root: &Path,
    workspace: &Path,
    target: &Path,
    package: &str,
    whole: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<(), String> {
    let args = build_args(workspace, target, package, whole);
    let (ok, stderr) =
        cargo_streaming(&args, root, progress).map_err(|e| format!("could not run cargo: {e}"))?;
    if ok {
        return Ok(());
    }
    Err(first_error(&stderr))
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

    use crate::driver_support as support;

    /// Whatever a driver reports comes back as it was written: a shown
    /// escape stays an escape, a real line break stays one, and a field
    /// never spills into the next one or the next line.
    #[test]
    fn driver_fields_round_trip() {
        let values = [
            "Ok(Some(\"hello\\n\"))",
            "two\nlines",
            "a\r\nb",
            "\"la\\rst\\x00\" | \"\\n\"",
            "back\\slash at the end\\",
            "\\\\n is not a line break",
            "tab\there",
            "\"quoted\" and 'single'",
            "",
        ];
        for v in values {
            let line = support::encode_field(v);
            assert!(!line.contains(['\n', '\r', '\t']), "{line:?}");
            assert_eq!(decode_field(&line), v, "through {line:?}");
        }
        // Three fields on one FAIL line split where the lab splits them.
        let line = format!(
            "{}\t{}\t{}",
            support::encode_field("Ok(Some(\"hello\"))"),
            support::encode_field("Ok(Some(\"hel\\n\"))\tx"),
            support::encode_field("find the first \\n")
        );
        let parts: Vec<String> = line.splitn(3, '\t').map(decode_field).collect();
        assert_eq!(
            parts,
            [
                "Ok(Some(\"hello\"))",
                "Ok(Some(\"hel\\n\"))\tx",
                "find the first \\n"
            ]
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

    /// The build the exercises suggest (`cargo build --manifest-path
    /// lab/exercises/Cargo.toml -p ...`, from the course root or from inside
    /// lab/exercises) and the lab's own build use one target directory, so
    /// nothing is compiled twice and `check` grades what the student ran. A
    /// `.cargo/config.toml` that moves the target directory only for cargo
    /// started in some directory breaks this, and this test.
    #[test]
    fn the_suggested_command_and_the_labs_build_are_one_build() {
        let p = Paths::new();
        for dir in [&p.root, &p.exercises] {
            let out = cargo()
                .args([
                    "metadata",
                    "--offline",
                    "--no-deps",
                    "--format-version",
                    "1",
                ])
                .arg("--manifest-path")
                .arg(p.exercises.join("Cargo.toml"))
                .current_dir(dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(
                Path::new(v["target_directory"].as_str().unwrap()),
                p.target,
                "cargo started in {} builds elsewhere",
                dir.display()
            );
        }
        let args = build_args(&p.exercises, &p.target, "ex01-tcp-echo", false);
        let at = args.iter().position(|a| a == "--target-dir").unwrap();
        assert_eq!(Path::new(&args[at + 1]), p.target);
        // Every command an exercise suggests names the exercises' manifest.
        for ex in crate::catalog::EXERCISES {
            let text = std::fs::read_to_string(p.exercises.join(ex.dir).join(ex.file)).unwrap();
            for l in text
                .lines()
                .filter(|l| l.contains("cargo run") && l.contains("-p ex"))
            {
                assert!(
                    l.contains("cargo run --manifest-path lab/exercises/Cargo.toml -p "),
                    "{}: {l}",
                    ex.dir
                );
            }
        }
    }

    /// No silent minute: a build the lab starts hands each of cargo's
    /// `Compiling ...` lines to the caller as it comes (who shows it under
    /// the step), and they stay out of the run's record.
    #[test]
    fn a_build_shows_its_progress() {
        let dir = std::env::temp_dir().join(format!("lab-progress-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(
            dir.join("Cargo.toml"),
            "[package]\nname = \"labprogress\"\nversion = \"0.1.0\"\nedition = \"2024\"\n[workspace]\n",
        )
        .unwrap();
        std::fs::write(dir.join("src/main.rs"), "fn main() {}\n").unwrap();
        let mut seen = Vec::new();
        let args = build_args(&dir, &dir.join("target"), "labprogress", false);
        let (ok, _) = cargo_streaming(&args, &dir, &mut |l| seen.push(l.to_string())).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(ok);
        assert!(
            seen.iter().any(|l| l.starts_with("Compiling labprogress")),
            "{seen:?}"
        );
        let mut run = Run::new(PathBuf::new(), PathBuf::new(), false);
        run.step("build");
        run.progress("Compiling x");
        run.pass_step("ok (3 s)");
        assert_eq!(run.output(), "   1. build ... ok (3 s)\n");
    }

    /// The builds the lab starts do not inherit what `cargo run` (or `cargo
    /// test`, here) set for the lab: with CARGO_MANIFEST_DIR passed on,
    /// ring's build script would rerun, and ring and everything above it be
    /// recompiled, each time the user's build and the lab's alternate.
    #[test]
    fn builds_do_not_inherit_cargo_runs_environment() {
        assert!(
            std::env::var_os("CARGO_MANIFEST_DIR").is_some(),
            "cargo test sets it"
        );
        let c = cargo();
        let removed: Vec<String> = c
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        for must in ["CARGO_MANIFEST_DIR", "CARGO_PKG_NAME", "CARGO_TARGET_DIR"] {
            assert!(removed.iter().any(|k| k == must), "{must} reaches cargo");
        }
        assert!(!set_by_cargo_run("CARGO_HOME"));
        assert!(!set_by_cargo_run("CARGO_BUILD_JOBS"));
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
