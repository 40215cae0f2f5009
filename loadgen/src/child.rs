//! Start a server of the workspace as a child process, learn its address,
//! watch its resources, stop it.
//!
//! Every chapter's `server` subcommand prints `listening on ADDR` on stdout
//! once bound (see `common::net::announce`), so we start it with
//! `--addr 127.0.0.1:0` and read that line: the kernel picks a free port, no
//! port is hard-coded, and several runs never collide.
//!
//! Binaries are looked up next to the running executable: `loadgen` lives in
//! `target/<profile>/`, and a test binary in `target/<profile>/deps/`, whose
//! parent holds the chapter binaries. `cargo test --workspace` builds them
//! before any test runs (cargo builds a package's binaries when that package
//! has integration tests).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

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

/// A server running as a child process.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    name: String,
}

impl ServerProcess {
    /// Start `program` with `args` (which should include `--addr
    /// 127.0.0.1:0`) and wait up to `timeout` for its `listening on` line.
    /// stderr (the logs) is inherited unless `quiet`, then discarded.
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
                Stdio::null()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let stdout = child.stdout.take().context("child has no stdout")?;
        // Read the announce line on a helper thread so a server that never
        // prints it cannot hang us: we wait on a channel with a timeout.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut sent = false;
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if let (false, Some(addr)) = (sent, common::net::parse_announce(&line)) {
                    let _ = tx.send(addr);
                    sent = true;
                }
                // Keep draining so the child never blocks on a full pipe.
            }
        });
        let addr = match rx.recv_timeout(timeout) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                bail!(
                    "{name} did not print `listening on ADDR` within {timeout:?} (exit status {status:?})"
                );
            }
        };
        Ok(ServerProcess { child, addr, name })
    }

    /// Start the workspace binary `bin` with `args`.
    pub fn start_bin(bin: &str, args: &[String], quiet: bool) -> Result<Self> {
        Self::start(&find_binary(bin)?, args, quiet, Duration::from_secs(20))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
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
    fn missing_binary_names_the_fix() {
        let err = find_binary("no-such-binary-here").unwrap_err().to_string();
        assert!(err.contains("cargo build"), "{err}");
    }
}
