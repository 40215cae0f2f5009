//! The server table of `loadgen compare`: every server of the workspace
//! (and the Python baseline), how to start it, what it speaks and where its
//! design stops. The only place that knows the servers; add yours here.

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Framing;

use crate::child::find_binary;

/// How to start a server.
#[derive(Debug, Clone, Copy)]
pub enum Program {
    /// A workspace binary, found next to `loadgen`; `server` is prepended.
    Bin(&'static str),
    /// `python3 <script>`, the script looked up under `scripts/`.
    Python(&'static str),
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
}

const ALL_FRAMINGS: &[Framing] = &Framing::ALL;

/// Every server of the workspace.
pub const SERVERS: &[ServerSpec] = &[
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
    },
    ServerSpec {
        name: "async-tokio",
        program: Program::Bin("async-server"),
        args: &["--model", "tokio", "--offload", "none"],
        framings: ALL_FRAMINGS,
        max_conns: 10_000,
        limit_reason: "",
        work: true,
        tls: false,
        threads: "tokio multi-thread runtime, 1 worker per core",
    },
    ServerSpec {
        name: "async-tokio-rayon",
        program: Program::Bin("async-server"),
        args: &["--model", "tokio", "--offload", "rayon"],
        framings: ALL_FRAMINGS,
        max_conns: 10_000,
        limit_reason: "",
        work: true,
        tls: false,
        threads: "tokio workers + rayon pool for --work",
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
            Program::Bin(bin) => {
                let path = find_binary(bin).map_err(|_| {
                    format!("`{bin}` not built (cargo build --release --workspace)")
                })?;
                let mut cmd = Command::new(&path);
                cmd.arg("server").args(self.args);
                let shown = format!("{bin} server {}", self.args.join(" "));
                Ok((cmd, shown.trim_end().to_string()))
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
