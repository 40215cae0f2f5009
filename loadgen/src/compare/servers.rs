//! The server table of `loadgen compare`: every server of the workspace
//! (and the Python baseline, the `epoll-ref` reference and its `poll-ref`
//! and `select-ref` siblings), how to start
//! it, what it speaks, what it needs from this machine and where its design
//! stops. The only place that knows the servers; add yours here.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use common::Framing;

use crate::child::{ServerProcess, find_binary};

/// How to start a server.
#[derive(Debug, Clone, Copy)]
pub enum Program {
    /// A workspace binary, found next to `loadgen`; `server` is prepended
    /// and the common flags appended.
    Bin(&'static str),
    /// A binary that takes `--addr` and nothing else (no `server`
    /// subcommand, no common flags): `epoll-ref`, `poll-ref`, `select-ref`.
    Plain(&'static str),
    /// `python3 <script>`, the script looked up under `scripts/`.
    Python(&'static str),
    /// A row added with `--extra NAME=COMMAND` (say, a "before" build of a
    /// server beside the "after" one): the command's words, run as given.
    /// With `plain`, the command held an `{addr}` placeholder (now
    /// `127.0.0.1:0`) and gets nothing else, like `epoll-ref`; without,
    /// it is treated like a workspace binary: `--addr` and the common
    /// flags are appended.
    Extra {
        argv: &'static [&'static str],
        plain: bool,
    },
}

/// The placeholder of `--extra NAME=COMMAND` for the listening address.
pub const ADDR: &str = "{addr}";

impl Program {
    /// Does it take the common flags (framing, limits, `--work`)?
    pub(crate) fn takes_common_flags(self) -> bool {
        matches!(self, Program::Bin(_) | Program::Extra { plain: false, .. })
    }

    /// Does its command already name the address (`{addr}`)?
    pub(crate) fn names_its_addr(self) -> bool {
        matches!(self, Program::Extra { plain: true, .. })
    }
}

/// Parse `--extra NAME=COMMAND` into a row. The row's strings are leaked:
/// a comparison runs once per process and its rows live to the end of
/// it, and this keeps [`ServerSpec`] a `Copy` entry like the built-in
/// table's.
pub fn extra_spec(arg: &str) -> Result<ServerSpec, String> {
    let (name, command) = arg
        .split_once('=')
        .ok_or_else(|| format!("--extra `{arg}`: expected NAME=COMMAND"))?;
    let name = name.trim();
    let valid = |c: char| c.is_ascii_alphanumeric() || "-_.+".contains(c);
    if name.is_empty() || !name.chars().all(valid) {
        return Err(format!(
            "--extra `{arg}`: the name must be letters, digits, `-`, `_`, `.` or `+`"
        ));
    }
    if SERVERS.iter().any(|s| s.name == name) {
        return Err(format!(
            "--extra `{arg}`: `{name}` is a built-in row; pick another name"
        ));
    }
    let words: Vec<&'static str> = command
        .split_whitespace()
        .map(|w| &*Box::leak(w.to_string().into_boxed_str()))
        .collect();
    if words.is_empty() {
        return Err(format!("--extra `{arg}`: the command is empty"));
    }
    let plain = words.iter().any(|w| w.contains(ADDR));
    Ok(ServerSpec {
        name: Box::leak(name.to_string().into_boxed_str()),
        program: Program::Extra {
            argv: Box::leak(words.into_boxed_slice()),
            plain,
        },
        args: &[],
        framings: if plain { &[Framing::Raw] } else { ALL_FRAMINGS },
        max_conns: 100_000,
        limit_reason: "",
        work: !plain,
        tls: false,
        threads: if plain {
            "extra row (`--extra`, its own flags only)"
        } else {
            "extra row (`--extra`, with the common flags)"
        },
        needs: Needs::Nothing,
        unix: false,
        reference: false,
    })
}

/// What a row needs beyond its binary; checked once per comparison, and
/// the row is shown as skipped, with the reason, where it is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Nothing,
    /// These flags in `<bin> server --help` (a design still being built).
    Flags(&'static [&'static str]),
    /// A kernel that lets this process use io_uring: the server is started
    /// once, and if it exits naming io_uring, its one line is the reason.
    Uring,
}

/// Replaced, in a row's `args`, by the number of online CPUs (not the
/// CPUs the server is pinned to: "all threads" means one per core).
pub const NPROC: &str = "{nproc}";

/// The CPUs online (sysconf), whatever this process is pinned to.
pub fn online_cpus() -> usize {
    // SAFETY: sysconf takes an integer and returns one.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 { n as usize } else { 1 }
}

/// One server of the comparison. This table is the only place that knows
/// the servers; everything else is generic.
#[derive(Debug, Clone, Copy)]
pub struct ServerSpec {
    pub name: &'static str,
    pub program: Program,
    /// Design-specific flags (`--model`, `--offload`).
    pub args: &'static [&'static str],
    pub framings: &'static [Framing],
    /// Most connections the design can serve at once (cells above are
    /// shown as skipped, with `limit_reason`).
    pub max_conns: usize,
    pub limit_reason: &'static str,
    /// Does it take `--work N`?
    pub work: bool,
    /// Does it speak TLS (and write its CA with `--ca-out PATH`)?
    pub tls: bool,
    /// Its threads, in words, for the table of servers.
    pub threads: &'static str,
    /// What it needs beyond its binary (flags, io_uring).
    pub needs: Needs,
    /// Does it accept `--addr unix:PATH` (`compare --unix`)?
    pub unix: bool,
    /// The reference row: every other row's server CPU per request is
    /// divided by its own in the same run (`x ref`).
    pub reference: bool,
}

/// The name of the reference row.
pub const REFERENCE: &str = "epoll-ref";

pub(crate) const ALL_FRAMINGS: &[Framing] = &Framing::ALL;

/// Every server of the workspace.
pub const SERVERS: &[ServerSpec] = &[
    ServerSpec {
        name: REFERENCE,
        program: Program::Plain("epoll-ref"),
        args: &[],
        framings: &[Framing::Raw],
        max_conns: 100_000,
        limit_reason: "",
        work: false,
        tls: false,
        threads: "1 (level-triggered epoll, raw echo, no limits: 3 syscalls per echo)",
        needs: Needs::Nothing,
        unix: false,
        reference: true,
    },
    ServerSpec {
        name: "poll-ref",
        program: Program::Plain("poll-ref"),
        args: &[],
        framings: &[Framing::Raw],
        max_conns: 100_000,
        limit_reason: "",
        work: false,
        tls: false,
        threads: "1 (level-triggered poll(2), raw echo, no limits: the whole pollfd array passed on every call)",
        needs: Needs::Nothing,
        unix: false,
        reference: false,
    },
    ServerSpec {
        name: "select-ref",
        program: Program::Plain("select-ref"),
        args: &[],
        framings: &[Framing::Raw],
        // Descriptors 0-2, the listener and the signalfd come first; a
        // little room for the accept backlog's churn.
        max_conns: 1_000,
        limit_reason: "cannot run: FD_SETSIZE=1024 limits descriptor numbers, and select(2) cannot watch a socket numbered 1024 or above (select-ref refuses those connections; raising ulimit -n does not help)",
        work: false,
        tls: false,
        threads: "1 (level-triggered select(2), raw echo, no limits: two fd_set bitmaps rebuilt on every call)",
        needs: Needs::Nothing,
        unix: false,
        reference: false,
    },
    ServerSpec {
        name: "tcp-echo",
        program: Program::Bin("tcp-echo"),
        args: &[],
        framings: ALL_FRAMINGS,
        max_conns: 1,
        limit_reason: "iterative: serves one client at a time, the others wait in the accept backlog until it leaves",
        work: true,
        tls: false,
        threads: "1 (iterative: accept, serve to EOF, accept the next)",
        needs: Needs::Nothing,
        unix: false,
        reference: false,
    },
    ServerSpec {
        name: "threaded-per-client",
        program: Program::Bin("threaded-server"),
        args: &["--model", "per-client"],
        framings: ALL_FRAMINGS,
        max_conns: 10_000,
        limit_reason: "",
        work: true,
        tls: false,
        threads: "1 acceptor + 1 per client",
        needs: Needs::Nothing,
        unix: false,
        reference: false,
    },
    ServerSpec {
        name: "threaded-pool",
        program: Program::Bin("threaded-server"),
        args: &["--model", "pool"],
        framings: ALL_FRAMINGS,
        // Measured, then skipped by default: with 10,000 clients and 16
        // workers the acceptor waits on the full queue, the kernel backlog
        // overflows, SYNs are dropped and most `connect()`s time out (8,641
        // of 10,000 got no echo) while each such cell takes ~3 minutes of
        // SYN retries. `--over-limit` still runs it.
        max_conns: 1_000,
        limit_reason: "fixed pool: at 10,000 clients the queue and the kernel backlog overflow and most connect()s time out (measured: 8,641 of 10,000 got no echo, ~3 min per cell)",
        work: true,
        tls: false,
        threads: "1 acceptor + a fixed pool (see threaded-server's README)",
        needs: Needs::Nothing,
        unix: false,
        reference: false,
    },
    ServerSpec {
        name: "async-tokio",
        program: Program::Bin("async-server"),
        args: &["--model", "tokio", "--offload", "none", "--threads", NPROC],
        framings: ALL_FRAMINGS,
        max_conns: 10_000,
        limit_reason: "",
        work: true,
        tls: false,
        threads: "tokio multi-thread runtime, 1 worker per core (`--threads` = online CPUs)",
        needs: Needs::Nothing,
        unix: true,
        reference: false,
    },
    ServerSpec {
        name: "async-tokio-1t",
        program: Program::Bin("async-server"),
        args: &["--model", "tokio", "--offload", "none", "--threads", "1"],
        framings: ALL_FRAMINGS,
        max_conns: 10_000,
        limit_reason: "",
        work: true,
        tls: false,
        threads: "tokio current-thread runtime (`--threads 1`)",
        needs: Needs::Nothing,
        unix: true,
        reference: false,
    },
    ServerSpec {
        name: "async-tokio-rayon",
        program: Program::Bin("async-server"),
        args: &["--model", "tokio", "--offload", "rayon", "--threads", NPROC],
        framings: ALL_FRAMINGS,
        max_conns: 10_000,
        limit_reason: "",
        work: true,
        tls: false,
        threads: "tokio workers + rayon pool for --work",
        needs: Needs::Nothing,
        unix: false,
        reference: false,
    },
    ServerSpec {
        name: "event-loop",
        program: Program::Bin("async-server"),
        args: &["--model", "event-loop"],
        framings: ALL_FRAMINGS,
        max_conns: 10_000,
        limit_reason: "",
        work: true,
        tls: false,
        threads: "1 (mio readiness loop)",
        needs: Needs::Nothing,
        unix: true,
        reference: false,
    },
    ServerSpec {
        name: "event-loop-2-reuseport",
        program: Program::Bin("async-server"),
        args: &[
            "--model",
            "event-loop",
            "--loops",
            "2",
            "--balance",
            "reuseport",
        ],
        framings: ALL_FRAMINGS,
        max_conns: 10_000,
        limit_reason: "",
        work: true,
        tls: false,
        threads: "2 mio loops, a SO_REUSEPORT listener each (the kernel hashes connections)",
        needs: Needs::Flags(&["--loops", "--balance"]),
        unix: false,
        reference: false,
    },
    ServerSpec {
        name: "event-loop-2-acceptor",
        program: Program::Bin("async-server"),
        args: &[
            "--model",
            "event-loop",
            "--loops",
            "2",
            "--balance",
            "acceptor",
        ],
        framings: ALL_FRAMINGS,
        max_conns: 10_000,
        limit_reason: "",
        work: true,
        tls: false,
        threads: "2 mio loops, loop 0 accepts and deals round-robin",
        needs: Needs::Flags(&["--loops", "--balance"]),
        unix: false,
        reference: false,
    },
    ServerSpec {
        name: "async-uring",
        program: Program::Bin("async-server"),
        args: &["--model", "uring"],
        framings: ALL_FRAMINGS,
        max_conns: 10_000,
        limit_reason: "",
        work: true,
        tls: false,
        threads: "1 (io_uring completion loop, no SQPOLL)",
        needs: Needs::Uring,
        unix: false,
        reference: false,
    },
    ServerSpec {
        name: "tls-echo",
        program: Program::Bin("tls-echo"),
        args: &[],
        framings: ALL_FRAMINGS,
        max_conns: 10_000,
        limit_reason: "",
        work: true,
        tls: true,
        threads: "see tls-echo's README",
        needs: Needs::Nothing,
        unix: false,
        reference: false,
    },
    ServerSpec {
        name: "python-asyncio",
        program: Program::Python("asyncio_echo.py"),
        args: &[],
        framings: &[Framing::Raw],
        max_conns: 10_000,
        limit_reason: "",
        work: false,
        tls: false,
        threads: "1 (asyncio event loop, CPython)",
        needs: Needs::Nothing,
        unix: false,
        reference: false,
    },
];

/// Where the Python baseline lives: `scripts/` in the current directory,
/// else next to this crate's sources (for `cargo test` and `cargo run`).
fn find_script(name: &str) -> Option<PathBuf> {
    let here = Path::new("scripts").join(name);
    if here.is_file() {
        return Some(here);
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scripts")
        .join(name);
    src.is_file().then_some(src)
}

impl ServerSpec {
    /// The command that starts it, or why it cannot start here.
    pub(crate) fn command(&self) -> Result<(Command, String), String> {
        match self.program {
            Program::Bin(bin) | Program::Plain(bin) => {
                let path = find_binary(bin).map_err(|_| {
                    format!("`{bin}` not built (cargo build --release --workspace)")
                })?;
                let nproc = online_cpus().to_string();
                let args: Vec<&str> = self
                    .args
                    .iter()
                    .map(|a| if *a == NPROC { nproc.as_str() } else { a })
                    .collect();
                let mut cmd = Command::new(&path);
                let sub = matches!(self.program, Program::Bin(_));
                if sub {
                    cmd.arg("server");
                }
                cmd.args(&args);
                let shown = format!(
                    "{bin}{} {}",
                    if sub { " server" } else { "" },
                    args.join(" ")
                );
                Ok((cmd, shown.trim_end().to_string()))
            }
            Program::Extra { argv, .. } => {
                let program = argv.first().copied().unwrap_or_default();
                if program.contains('/') && !Path::new(program).is_file() {
                    return Err(format!("`{program}` not found"));
                }
                let args: Vec<String> = argv
                    .iter()
                    .skip(1)
                    .map(|a| a.replace(ADDR, "127.0.0.1:0"))
                    .collect();
                let mut cmd = Command::new(program);
                cmd.args(&args);
                Ok((cmd, argv.join(" ")))
            }
            Program::Python(script) => {
                let path =
                    find_script(script).ok_or_else(|| format!("scripts/{script} not found"))?;
                if Command::new("python3").arg("--version").output().is_err() {
                    return Err("python3 not found".into());
                }
                let mut cmd = Command::new("python3");
                cmd.arg(&path);
                Ok((cmd, format!("python3 scripts/{script}")))
            }
        }
    }
}

/// Why a row cannot run here.
#[derive(Debug, Clone)]
pub struct Unavailable {
    pub why: String,
    /// True when the server tried and broke (shown as `failed`), false
    /// when this machine or build simply lacks it (`skipped`).
    pub failed: bool,
}

impl Unavailable {
    fn skip(why: impl Into<String>) -> Self {
        Unavailable {
            why: why.into(),
            failed: false,
        }
    }
}

impl ServerSpec {
    /// The name shown in tables and charts: the reference says what it is.
    pub fn label(&self) -> String {
        if self.reference {
            format!("practical limit ({})", self.name)
        } else {
            self.name.to_string()
        }
    }

    /// Can this row run here (over a Unix socket with `unix`)? Checks the
    /// binary, the flags it needs and io_uring; the command if so.
    pub(crate) fn availability(&self, unix: bool) -> Result<(Command, String), Unavailable> {
        let found = self.command().map_err(Unavailable::skip)?;
        let bin = match self.program {
            Program::Bin(b) | Program::Plain(b) => b,
            Program::Python(_) => "python3",
            Program::Extra { argv, .. } => argv.first().copied().unwrap_or_default(),
        };
        let help = || {
            let path = PathBuf::from(found.0.get_program());
            help_text(&path)
        };
        if unix {
            if !self.unix {
                return Err(Unavailable::skip(format!(
                    "{} has no unix: listener",
                    self.name
                )));
            }
            if !help().contains("unix:") {
                return Err(Unavailable::skip(format!(
                    "{bin} does not accept --addr unix:PATH yet (not in `{bin} server --help`)"
                )));
            }
        }
        match self.needs {
            Needs::Nothing => {}
            Needs::Flags(flags) => {
                let missing = missing_flags(&help(), flags);
                if !missing.is_empty() {
                    return Err(Unavailable::skip(format!(
                        "{bin} has no {} yet (not in `{bin} server --help`)",
                        missing.join("/")
                    )));
                }
            }
            Needs::Uring => probe_uring(self)?,
        }
        Ok(found)
    }
}

/// The server's own line about io_uring, from the error of a start that
/// failed (`... its last log lines: a | b`), if it named io_uring.
fn uring_refusal(start_error: &str) -> Option<String> {
    let (_, logs) = start_error.split_once("its last log lines: ")?;
    logs.split(" | ")
        .find(|l| l.contains("io_uring"))
        .map(|l| l.trim().to_string())
}

/// The flags of `flags` that `help` does not mention.
fn missing_flags<'a>(help: &str, flags: &[&'a str]) -> Vec<&'a str> {
    flags
        .iter()
        .copied()
        .filter(|f| {
            // A whole flag: `--loops` must not be found inside `--loopsy`.
            !help.match_indices(f).any(|(i, _)| {
                !help[i + f.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_alphanumeric() || c == '-')
            })
        })
        .collect()
}

/// `<bin> server --help`, read on a helper thread with a deadline (a
/// binary that hangs cannot hang the comparison); cached per binary.
fn help_text(path: &Path) -> String {
    static CACHE: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());
    if let Ok(cache) = CACHE.lock()
        && let Some((_, t)) = cache.iter().find(|(p, _)| p == path)
    {
        return t.clone();
    }
    let child = Command::new(path)
        .args(["server", "--help"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return String::new();
    };
    let Some(mut out) = child.stdout.take() else {
        return String::new();
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let text = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    if let Ok(mut cache) = CACHE.lock() {
        cache.push((path.to_path_buf(), text.clone()));
    }
    text
}

/// Start the io_uring server once on port 0. If it announces, io_uring
/// works here; if it exits naming io_uring (seccomp's EPERM,
/// `kernel.io_uring_disabled`, an old kernel), its own one-line reason is
/// the skip reason; any other failure is a failure.
fn probe_uring(spec: &ServerSpec) -> Result<(), Unavailable> {
    let (mut cmd, _) = spec.command().map_err(Unavailable::skip)?;
    cmd.args(["--addr", "127.0.0.1:0", "--framing", "raw"]);
    match ServerProcess::start_command(cmd, true, Duration::from_secs(10)) {
        Ok(server) => {
            let _ = server.stop(Duration::from_secs(10));
            Ok(())
        }
        Err(e) => {
            let msg = format!("{e:#}");
            match uring_refusal(&msg) {
                Some(line) => Err(Unavailable::skip(line)),
                None => Err(Unavailable {
                    why: format!("did not start: {msg}"),
                    failed: true,
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_uring_refusals_are_skips_other_failures_are_not() {
        let refused = "async-server exited (exit status: 1) before printing `listening on ADDR`; its last log lines: [WARN x] starting | async-server: error: io_uring is refused here: io_uring_setup: Operation not permitted (EPERM: a seccomp profile or kernel.io_uring_disabled; check: cat /proc/sys/kernel/io_uring_disabled)";
        let why = uring_refusal(refused).unwrap();
        assert!(
            why.starts_with("async-server: error: io_uring is refused"),
            "{why}"
        );
        assert!(!why.contains(" | "), "{why}");
        let crash = "async-server exited (signal: 11) before printing `listening on ADDR`; its last log lines: thread 'main' panicked at src/uring/mod.rs";
        assert_eq!(uring_refusal(crash), None);
        assert_eq!(
            uring_refusal("did not print `listening on ADDR` within 10s"),
            None
        );
    }

    #[test]
    fn flags_are_found_whole_in_help() {
        let help = "      --loops <N>\n          Event loops\n      --balance <BALANCE>\n";
        assert!(missing_flags(help, &["--loops", "--balance"]).is_empty());
        assert_eq!(
            missing_flags("      --loopsy <N>", &["--loops"]),
            ["--loops"]
        );
        assert_eq!(
            missing_flags("", &["--loops", "--balance"]),
            ["--loops", "--balance"]
        );
    }

    #[test]
    fn the_table_has_one_reference_and_unique_names() {
        let refs: Vec<&str> = SERVERS
            .iter()
            .filter(|s| s.reference)
            .map(|s| s.name)
            .collect();
        assert_eq!(refs, [REFERENCE]);
        for (i, a) in SERVERS.iter().enumerate() {
            assert!(
                SERVERS[i + 1..].iter().all(|b| b.name != a.name),
                "{}",
                a.name
            );
        }
        let tokio_all = SERVERS.iter().find(|s| s.name == "async-tokio").unwrap();
        assert!(tokio_all.args.contains(&NPROC));
        assert!(online_cpus() >= 1);
    }
}
