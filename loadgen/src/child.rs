//! Start a server of the workspace as a child process, learn its address,
//! watch its resources, stop it.
//!
//! Every chapter's `server` subcommand prints `listening on ADDR` on stdout
//! once bound (see `common::net::announce`), so we start it with
//! `--addr 127.0.0.1:0` and read that line: the kernel picks a free port, no
//! port is hard-coded, and several runs never collide. A server started
//! with `--addr unix:PATH` announces `listening on unix:PATH`
//! ([`parse_announce`] reads both).
//!
//! Binaries are looked up next to the running executable: `loadgen` lives in
//! `target/<profile>/`, and a test binary in `target/<profile>/deps/`, whose
//! parent holds the chapter binaries. Tests go through [`fresh_binary`],
//! which rebuilds a binary older than its sources before using it.
//!
//! Every read of the child's stdout happens on a helper thread that hands
//! lines over a channel, and the caller waits on that channel with a
//! timeout: a child that never prints, or hangs, cannot hang us.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Where a server announced it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(SocketAddr),
    /// A Unix domain stream socket file.
    Unix(PathBuf),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "{a}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Parse a `listening on ...` line: `listening on 127.0.0.1:40123`
/// (`common::net::parse_announce`) or `listening on unix:/tmp/echo.sock`.
pub fn parse_announce(line: &str) -> Option<Endpoint> {
    if let Some(addr) = common::net::parse_announce(line) {
        return Some(Endpoint::Tcp(addr));
    }
    let path = line
        .trim()
        .strip_prefix(common::net::ANNOUNCE_PREFIX)?
        .strip_prefix("unix:")?;
    (!path.is_empty()).then(|| Endpoint::Unix(PathBuf::from(path)))
}

/// Find a workspace binary (`tcp-echo`, `async-server`, ...) next to the
/// current executable or in its parent directory.
pub fn find_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the running executable")?;
    let mut dir = exe.parent().map(PathBuf::from);
    let mut tried = Vec::new();
    for _ in 0..2 {
        let Some(d) = dir else { break };
        let candidate = d.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        tried.push(candidate.display().to_string());
        dir = d.parent().map(PathBuf::from);
    }
    bail!(
        "binary `{name}` not found (looked at {}); build it first: cargo build --release --workspace",
        tried.join(", ")
    )
}

/// The workspace binary `name` for a test, rebuilt first when it is
/// missing or older than its sources, so `cargo test -p loadgen` never
/// silently tests a stale chapter binary.
///
/// "Older" compares the binary's mtime with the newest file under
/// `<crate>/src`, `<crate>/Cargo.toml` and `common/src` (every chapter
/// binary is named like its crate). A stale one is rebuilt with
/// `cargo build -p <crate>` in the profile the test runs in; if that fails
/// (say, the crate is mid-edit), the error says so and shows cargo's last
/// lines. Each binary is checked once per test process.
pub fn fresh_binary(name: &str) -> Result<PathBuf> {
    static CHECKED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    // Held while building: two tests wanting the same binary build it once.
    let mut checked = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
    let found = find_binary(name);
    if checked.iter().any(|n| n == name) {
        return found;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .context("loadgen's manifest directory has no parent")?;
    let crate_dir = root.join(name);
    if !crate_dir.join("Cargo.toml").is_file() {
        // Not a workspace crate: nothing to compare with.
        return found;
    }
    let sources = [
        crate_dir.join("src"),
        crate_dir.join("Cargo.toml"),
        root.join("common/src"),
        root.join("common/Cargo.toml"),
    ];
    let built = found
        .as_ref()
        .ok()
        .and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    let stale = is_stale(built, &sources);
    if stale {
        let release = std::env::current_exe()
            .map(|e| e.components().any(|c| c.as_os_str() == "release"))
            .unwrap_or(false);
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&root).args(["build", "-p", name]);
        if release {
            cmd.arg("--release");
        }
        let why = if built.is_some() {
            "older than its sources"
        } else {
            "not built"
        };
        // The build can take a minute on a fresh machine: say so before and
        // after, rather than sit silent (its output is kept for an error).
        eprintln!("loadgen: `{name}` is {why}: building it (cargo build -p {name})...");
        let started = std::time::Instant::now();
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("`{name}` is {why}, and cargo could not be started"))?;
        if out.status.success() {
            eprintln!(
                "loadgen: built `{name}` in {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "`{name}` is {why} and `cargo build -p {name}` failed ({}):\n{}",
                out.status,
                tail.join("\n")
            );
        }
    }
    checked.push(name.to_string());
    find_binary(name)
}

/// Is a binary built at `built` (None: not built) older than the newest
/// file among `sources` (files or directories, searched recursively)?
fn is_stale(built: Option<std::time::SystemTime>, sources: &[PathBuf]) -> bool {
    let newest = sources.iter().filter_map(|p| newest_mtime(p)).max();
    match (built, newest) {
        (Some(b), Some(n)) => b < n,
        (None, _) => true,
        (Some(_), None) => false,
    }
}

/// The newest modification time of `path` or of any file below it.
fn newest_mtime(path: &std::path::Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| newest_mtime(&e.path()))
        .max()
}

/// A server running as a child process.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    endpoint: Endpoint,
    name: String,
}

impl ServerProcess {
    /// Start `program` with `args` (which should include `--addr
    /// 127.0.0.1:0`) and wait up to `timeout` for its `listening on` line.
    /// stderr (the logs) is inherited unless `quiet`, then drained and only
    /// its last lines kept, to explain a server that fails to start.
    pub fn start(
        program: &std::path::Path,
        args: &[String],
        quiet: bool,
        timeout: Duration,
    ) -> Result<Self> {
        let mut cmd = Command::new(program);
        cmd.args(args);
        Self::start_command(cmd, quiet, timeout)
    }

    /// Start a prepared command (say, with CPU pinning set up by
    /// [`crate::sys::pin_command`], or `python3 script.py`), and wait up to
    /// `timeout` for its `listening on` line.
    pub fn start_command(mut cmd: Command, quiet: bool, timeout: Duration) -> Result<Self> {
        let program = std::path::PathBuf::from(cmd.get_program());
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if quiet {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let stdout = child.stdout.take().context("child has no stdout")?;
        // Quiet: the logs are drained (a full pipe would block the server)
        // and the last few lines kept, to explain a failed start.
        let last_logs = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stderr) = child.stderr.take() {
            let keep = last_logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    // A panic's backtrace says less than its first line.
                    let t = line.trim_start();
                    let frame = t.starts_with("at ")
                        || t.starts_with("stack backtrace")
                        || t.split_once(": ")
                            .is_some_and(|(n, _)| n.parse::<u32>().is_ok());
                    if frame {
                        continue;
                    }
                    if let Ok(mut q) = keep.lock() {
                        if q.len() == 5 {
                            q.pop_front();
                        }
                        q.push_back(line);
                    }
                }
            });
        }
        // Read the announce line on a helper thread so a server that never
        // prints it cannot hang us: we wait on a channel with a timeout.
        // `None` on the channel: stdout closed first (the child exited).
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut sent = false;
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if let (false, Some(addr)) = (sent, parse_announce(&line)) {
                    let _ = tx.send(Some(addr));
                    sent = true;
                }
                // Keep draining so the child never blocks on a full pipe.
            }
            if !sent {
                let _ = tx.send(None);
            }
        });
        let endpoint = match rx.recv_timeout(timeout) {
            Ok(Some(endpoint)) => endpoint,
            outcome => {
                let _ = child.kill();
                let status = child.wait().ok();
                let logs = last_logs
                    .lock()
                    .map(|q| q.iter().cloned().collect::<Vec<_>>().join(" | "))
                    .unwrap_or_default();
                let logs = if logs.is_empty() {
                    String::new()
                } else {
                    format!("; its last log lines: {logs}")
                };
                let status = status.map_or_else(|| "unknown".to_string(), |s| s.to_string());
                if matches!(outcome, Ok(None)) {
                    bail!("{name} exited ({status}) before printing `listening on ADDR`{logs}");
                }
                bail!(
                    "{name} did not print `listening on ADDR` within {timeout:?} (then killed: {status}){logs}"
                );
            }
        };
        Ok(ServerProcess {
            child,
            endpoint,
            name,
        })
    }

    /// Start the workspace binary `bin` with `args`, rebuilt first if it is
    /// older than its sources ([`fresh_binary`]; for tests).
    pub fn start_bin(bin: &str, args: &[String], quiet: bool) -> Result<Self> {
        Self::start(&fresh_binary(bin)?, args, quiet, Duration::from_secs(20))
    }

    /// The TCP address it announced. A server listening on `unix:PATH`
    /// has none: this is then `0.0.0.0:0` (a connect to it fails at once);
    /// use [`ServerProcess::endpoint`].
    pub fn addr(&self) -> SocketAddr {
        match &self.endpoint {
            Endpoint::Tcp(a) => *a,
            Endpoint::Unix(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }

    /// Where it announced it listens: a TCP address or a Unix socket file.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Send SIGTERM and wait up to `timeout` for a clean exit; SIGKILL after
    /// that. Returns the exit status (and whether it had to be killed).
    pub fn stop(mut self, timeout: Duration) -> Result<(ExitStatus, bool)> {
        signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok((status, false));
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                return Ok((self.child.wait()?, true));
            }
            // Polling a child's exit has no blocking-with-timeout call in
            // std; 10 ms granularity is plenty for a shutdown.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Never leave a server running behind a failed test.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Resource figures of a process from /proc (Linux).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct ProcStats {
    /// Current resident set size, bytes.
    pub rss_bytes: u64,
    /// Peak resident set size so far (VmHWM), bytes.
    pub peak_rss_bytes: u64,
    pub threads: u64,
    /// CPU time in user mode, seconds.
    pub user_secs: f64,
    /// CPU time in the kernel on the process's behalf, seconds.
    pub system_secs: f64,
}

impl ProcStats {
    /// Read /proc/PID/status and /proc/PID/stat.
    pub fn read(pid: u32) -> Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let kib = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        // The command name (field 2) is in parentheses and may contain
        // spaces; fields after the last ')' are space-separated. utime and
        // stime are fields 14 and 15, in clock ticks.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        // `after` starts at field 3, so field N is fields[N - 3].
        let ticks = |n: usize| -> f64 {
            fields
                .get(n - 3)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // SAFETY: sysconf takes an integer and returns one.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Ok(ProcStats {
            rss_bytes: kib("VmRSS:") * 1024,
            peak_rss_bytes: kib("VmHWM:") * 1024,
            threads: kib("Threads:"),
            user_secs: ticks(14) / hz,
            system_secs: ticks(15) / hz,
        })
    }

    pub fn cpu_secs(&self) -> f64 {
        self.user_secs + self.system_secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_proc_stats() {
        let s = ProcStats::read(std::process::id()).expect("own /proc entry");
        assert!(s.rss_bytes > 0 && s.peak_rss_bytes >= s.rss_bytes / 2);
        assert!(s.threads >= 1);
    }

    #[test]
    fn a_binary_older_than_any_source_file_is_stale() {
        use std::time::{Duration, SystemTime};
        let dir = std::env::temp_dir().join(format!("loadgen-stale-{}", std::process::id()));
        let sub = dir.join("src/deep");
        std::fs::create_dir_all(&sub).unwrap();
        let t0 = SystemTime::now() - Duration::from_secs(3600);
        let file = sub.join("lib.rs");
        let f = std::fs::File::create(&file).unwrap();
        f.set_modified(t0).unwrap();
        let sources = [dir.join("src")];
        assert!(!is_stale(Some(t0 + Duration::from_secs(1)), &sources));
        assert!(is_stale(Some(t0 - Duration::from_secs(1)), &sources));
        assert!(is_stale(None, &sources), "a missing binary is stale");
        // A source edited after the build, two directories down.
        f.set_modified(t0 + Duration::from_secs(10)).unwrap();
        assert!(is_stale(Some(t0 + Duration::from_secs(1)), &sources));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn announce_lines_tcp_and_unix() {
        assert_eq!(
            parse_announce("listening on 127.0.0.1:40123\n"),
            Some(Endpoint::Tcp("127.0.0.1:40123".parse().unwrap()))
        );
        assert_eq!(
            parse_announce("listening on [::1]:7"),
            Some(Endpoint::Tcp("[::1]:7".parse().unwrap()))
        );
        assert_eq!(
            parse_announce("listening on unix:/tmp/echo.sock"),
            Some(Endpoint::Unix("/tmp/echo.sock".into()))
        );
        assert_eq!(
            Endpoint::Unix("/tmp/a b.sock".into()).to_string(),
            "unix:/tmp/a b.sock"
        );
        for not in [
            "listening on unix:",
            "listening on nowhere",
            "unix:/tmp/x",
            "Listening on 1.2.3.4:5",
        ] {
            assert_eq!(parse_announce(not), None, "{not}");
        }
    }

    #[test]
    fn missing_binary_names_the_fix() {
        let err = find_binary("no-such-binary-here").unwrap_err().to_string();
        assert!(err.contains("cargo build"), "{err}");
    }
}
