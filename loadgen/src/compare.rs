//! `loadgen compare`: every server of the workspace, the same load, one
//! table and a few charts.
//!
//! Run with:
//!
//! ```text
//! cargo build --release --workspace
//! target/release/loadgen compare --quick          # < 1 minute, for a class
//! target/release/loadgen compare --pin            # the full matrix, < 15 minutes
//! target/release/loadgen compare --servers async-tokio,python-asyncio --conns 1,100
//! ```
//!
//! For every cell (server × connections × message size × work) it starts
//! the server as a child process on port 0 with identical flags, waits for
//! its `listening on` line, runs [`crate::run`] in-process against it while
//! a sampler thread watches the server's threads and memory in /proc, reads
//! the server's CPU time (user + system) before and after, stops it with
//! SIGTERM and checks that it exits with status 0. Results go to
//! `results/compare.md`, `results/compare.json` and SVG charts.
//!
//! What to watch: *server CPU µs per request* is the headline. On a 2-core
//! machine the load generator and the server share the CPUs, so requests/s
//! mostly tells how fast the client could go; CPU per request tells what
//! each design costs. The server table is data ([`SERVERS`]): add your own
//! server there.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result};
use common::Framing;
use common::cli::{parse_duration, parse_size};
use serde::Serialize;

use crate::chart::{Series, line_chart};
use crate::child::{ProcStats, ServerProcess, find_binary};
use crate::run::{Report, RunConfig, Stop, us};
use crate::sys::{Environment, parse_cpus, pin_command, pin_current_thread};
use crate::tls::TlsClient;

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

/// `--work` levels: a number of rounds, or `heavy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Work {
    Rounds(u32),
    /// About 128,000 hash steps per request whatever its size (≈100 µs of
    /// CPU on a 2020s core): `rounds = 128000 / (64 + size)`.
    Heavy,
}

impl Work {
    pub fn rounds(self, size: usize) -> u32 {
        match self {
            Work::Rounds(n) => n,
            Work::Heavy => (128_000 / (64 + size as u64)).max(1) as u32,
        }
    }

    fn label(self) -> String {
        match self {
            Work::Rounds(n) => n.to_string(),
            Work::Heavy => "heavy".into(),
        }
    }
}

fn parse_work(s: &str) -> Result<Work, String> {
    match s.trim() {
        "heavy" => Ok(Work::Heavy),
        n => n
            .parse()
            .map(Work::Rounds)
            .map_err(|_| format!("`{n}` is not a work level (a number of rounds, or `heavy`)")),
    }
}

/// Arguments of `loadgen compare`.
#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// The class-demo matrix: 1, 100 and 1,000 connections, 64 bytes, no
    /// work, 1 s per cell (under a minute).
    #[arg(long)]
    pub quick: bool,

    /// Servers to run, comma-separated (see --list). Default: all.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub servers: Vec<String>,

    /// Connection counts [default: 1,10,100,1000,10000; quick: 1,100,1000].
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub conns: Vec<usize>,

    /// Message sizes [default: 64,16KiB; quick: 64].
    #[arg(long, value_delimiter = ',', value_name = "LIST", value_parser = parse_size)]
    pub sizes: Vec<usize>,

    /// Work levels: rounds or `heavy` [default: 0,heavy; quick: 0].
    #[arg(long, value_delimiter = ',', value_name = "LIST", value_parser = parse_work)]
    pub work: Vec<Work>,

    /// The framing every server is run with. `raw` (the default) is the
    /// only one the Python baseline speaks, so it keeps every server in
    /// the same table.
    #[arg(long, value_enum, default_value_t = Framing::Raw)]
    pub framing: Framing,

    /// Measured time per cell [default: 2s; quick: 1s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// Warm-up per cell, not measured [default: 500ms; quick: 250ms].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub warmup: Option<Duration>,

    /// Run every cell this many times (a fresh server each time) and
    /// report the median and the spread.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub repeat: usize,

    /// Frames in flight per connection.
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub pipeline: usize,

    /// Give up on an owed echo after this long.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,

    /// Pin the server to CPU 0 and the load generator to CPU 1.
    #[arg(long)]
    pub pin: bool,

    /// Also run cells above a design's declared limit (shown as skipped
    /// otherwise): slow, but shows how the design fails.
    #[arg(long)]
    pub over_limit: bool,

    /// Pin the server to these CPUs (`0`, `0-1`), overrides --pin.
    #[arg(long, value_parser = parse_cpus, value_name = "CPUS")]
    pub server_cpus: Option<Vec<usize>>,

    /// Pin the load generator to these CPUs, overrides --pin.
    #[arg(long, value_parser = parse_cpus, value_name = "CPUS")]
    pub loadgen_cpus: Option<Vec<usize>>,

    /// Threads of the load generator's runtime.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub threads: usize,

    /// Directory for compare.md, compare.json and the SVG charts.
    #[arg(long, default_value = "results", value_name = "DIR")]
    pub out: PathBuf,

    /// Show the servers' logs (stderr) instead of discarding them.
    #[arg(long)]
    pub verbose: bool,

    /// Print the table of servers and exit.
    #[arg(long)]
    pub list: bool,
}

/// The figures of one run of one cell.
#[derive(Debug, Clone, Serialize)]
pub struct RunFigures {
    pub requests_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub verified: u64,
    /// Connections that got no echo after the warm-up (served last, or never).
    pub starved_conns: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    pub server_cpu_secs: f64,
    pub server_cpu_us_per_request: f64,
    pub loadgen_cpu_us_per_request: f64,
    pub peak_rss_bytes: u64,
    pub peak_threads: u64,
    pub clean_exit: bool,
    pub exit: String,
}

/// One cell: a server under one load.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub server: String,
    pub conns: usize,
    pub size: usize,
    pub work: String,
    pub work_rounds: u32,
    /// `ok`, `errors` (some echo wrong or missing, or an unclean exit),
    /// `failed` (the server did not start), or `skipped`.
    pub status: String,
    pub note: String,
    pub runs: Vec<RunFigures>,
    /// Medians over `runs` (None when skipped or failed).
    pub median: Option<RunFigures>,
    /// Smallest and largest requests/s over the runs.
    pub rps_spread: Option<(f64, f64)>,
}

/// Everything `compare.json` holds.
#[derive(Debug, Serialize)]
pub struct Comparison {
    pub environment: Environment,
    pub framing: String,
    pub duration_secs: f64,
    pub warmup_secs: f64,
    pub repeat: usize,
    pub pipeline: usize,
    pub servers: Vec<ServerRow>,
    pub cells: Vec<Cell>,
}

#[derive(Debug, Serialize)]
pub struct ServerRow {
    pub name: String,
    pub command: String,
    pub threads: String,
    pub available: bool,
    pub note: String,
}

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
    fn command(&self) -> Result<(Command, String), String> {
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

/// The settings of one comparison, after defaults.
#[derive(Debug, Clone)]
struct Plan {
    servers: Vec<ServerSpec>,
    conns: Vec<usize>,
    sizes: Vec<usize>,
    work: Vec<Work>,
    framing: Framing,
    duration: Duration,
    warmup: Duration,
    repeat: usize,
    pipeline: usize,
    timeout: Duration,
    server_cpus: Option<Vec<usize>>,
    loadgen_cpus: Option<Vec<usize>>,
    threads: usize,
    verbose: bool,
    over_limit: bool,
    out: PathBuf,
}

impl CompareArgs {
    fn plan(&self) -> Result<Plan> {
        let servers = if self.servers.is_empty() {
            SERVERS.to_vec()
        } else {
            self.servers
                .iter()
                .map(|n| {
                    SERVERS
                        .iter()
                        .find(|s| s.name == n.trim())
                        .copied()
                        .with_context(|| {
                            format!(
                                "unknown server `{n}`; known: {}",
                                SERVERS
                                    .iter()
                                    .map(|s| s.name)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        })
                })
                .collect::<Result<_>>()?
        };
        let or = |v: &Vec<usize>, quick: &[usize], full: &[usize]| {
            if !v.is_empty() {
                v.clone()
            } else if self.quick {
                quick.to_vec()
            } else {
                full.to_vec()
            }
        };
        let two = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
        let (server_cpus, loadgen_cpus) =
            match (self.pin && two, &self.server_cpus, &self.loadgen_cpus) {
                (_, Some(s), l) => (Some(s.clone()), l.clone()),
                (_, None, Some(l)) => (None, Some(l.clone())),
                (true, None, None) => (Some(vec![0]), Some(vec![1])),
                (false, None, None) => (None, None),
            };
        Ok(Plan {
            servers,
            conns: or(&self.conns, &[1, 100, 1000], &[1, 10, 100, 1000, 10_000]),
            sizes: or(&self.sizes, &[64], &[64, 16 * 1024]),
            work: if !self.work.is_empty() {
                self.work.clone()
            } else if self.quick {
                vec![Work::Rounds(0)]
            } else {
                vec![Work::Rounds(0), Work::Heavy]
            },
            framing: self.framing,
            duration: self.duration.unwrap_or(if self.quick {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(2)
            }),
            warmup: self.warmup.unwrap_or(if self.quick {
                Duration::from_millis(250)
            } else {
                Duration::from_millis(500)
            }),
            repeat: self.repeat.max(1),
            over_limit: self.over_limit,
            pipeline: self.pipeline.max(1),
            timeout: self.timeout,
            server_cpus,
            loadgen_cpus,
            threads: self.threads.max(1),
            verbose: self.verbose,
            out: self.out.clone(),
        })
    }
}

/// `loadgen compare`. Ok(false) when a cell had errors or a server failed.
pub fn execute(args: CompareArgs) -> Result<bool> {
    if args.list {
        for s in SERVERS {
            let cmd = s
                .command()
                .map(|c| c.1)
                .unwrap_or_else(|why| format!("(unavailable: {why})"));
            println!("{:<20} {cmd}", s.name);
        }
        return Ok(true);
    }
    let plan = args.plan()?;
    let comparison = compare(&plan)?;
    let ok = comparison
        .cells
        .iter()
        .all(|c| c.status == "ok" || c.status == "skipped");
    write_outputs(&plan, &comparison)?;
    eprintln!(
        "wrote {}/compare.md, compare.json and charts",
        plan.out.display()
    );
    Ok(ok)
}

fn compare(plan: &Plan) -> Result<Comparison> {
    // Both ends need a file descriptor per connection; the servers inherit
    // the raised limit from us.
    let _ = common::net::raise_fd_limit();
    if let Some(cpus) = &plan.loadgen_cpus {
        pin_current_thread(cpus).context("pinning the load generator")?;
    }
    std::fs::create_dir_all(&plan.out)
        .with_context(|| format!("creating {}", plan.out.display()))?;
    let environment = Environment::collect(
        plan.server_cpus.clone(),
        plan.loadgen_cpus.clone(),
        plan.threads,
    );
    let mut servers = Vec::new();
    let mut cells = Vec::new();
    let total: usize = plan.servers.len() * plan.conns.len() * plan.sizes.len() * plan.work.len();
    let mut n = 0;
    for spec in &plan.servers {
        let available = spec.command();
        servers.push(ServerRow {
            name: spec.name.into(),
            command: available.as_ref().map(|c| c.1.clone()).unwrap_or_default(),
            threads: spec.threads.into(),
            available: available.is_ok(),
            note: available.as_ref().err().cloned().unwrap_or_default(),
        });
        let mut failed_to_start: Option<String> = None;
        for &work in &plan.work {
            for &size in &plan.sizes {
                for &conns in &plan.conns {
                    n += 1;
                    let mut cell = Cell {
                        server: spec.name.into(),
                        conns,
                        size,
                        work: work.label(),
                        work_rounds: work.rounds(size),
                        status: "skipped".into(),
                        note: String::new(),
                        runs: Vec::new(),
                        median: None,
                        rps_spread: None,
                    };
                    let skip = if let Err(why) = &available {
                        Some(why.clone())
                    } else if !spec.framings.contains(&plan.framing) {
                        Some(format!("speaks {} framing only", names(spec.framings)))
                    } else if conns > spec.max_conns && !plan.over_limit {
                        Some(format!("{} (max {})", spec.limit_reason, spec.max_conns))
                    } else if cell.work_rounds > 0 && !spec.work {
                        Some("has no --work".into())
                    } else {
                        failed_to_start
                            .as_ref()
                            .map(|e| format!("did not start: {e}"))
                    };
                    if let Some(why) = skip {
                        cell.note = why;
                        if failed_to_start.is_some() {
                            cell.status = "failed".into();
                        }
                        cells.push(cell);
                        continue;
                    }
                    for _ in 0..plan.repeat {
                        match run_cell(plan, spec, conns, size, cell.work_rounds) {
                            Ok(fig) => cell.runs.push(fig),
                            Err(e) => {
                                failed_to_start = Some(format!("{e:#}"));
                                cell.note = format!("did not start: {e:#}");
                                break;
                            }
                        }
                    }
                    summarize(&mut cell);
                    eprintln!("[{n}/{total}] {}", progress_line(&cell));
                    cells.push(cell);
                }
            }
        }
    }
    Ok(Comparison {
        environment,
        framing: plan.framing.to_string(),
        duration_secs: plan.duration.as_secs_f64(),
        warmup_secs: plan.warmup.as_secs_f64(),
        repeat: plan.repeat,
        pipeline: plan.pipeline,
        servers,
        cells,
    })
}

fn names(f: &[Framing]) -> String {
    f.iter().map(|f| f.name()).collect::<Vec<_>>().join("/")
}

/// Start the server, load it, stop it.
fn run_cell(
    plan: &Plan,
    spec: &ServerSpec,
    conns: usize,
    size: usize,
    rounds: u32,
) -> Result<RunFigures> {
    let (mut cmd, _) = spec.command().map_err(anyhow::Error::msg)?;
    cmd.args(["--addr", "127.0.0.1:0"]);
    let ca_path = plan
        .out
        .join(format!(".ca-{}-{}.pem", spec.name, std::process::id()));
    if let Program::Bin(_) = spec.program {
        // Identical flags for every server: framing, limits, work.
        cmd.args(["--framing", plan.framing.name()]);
        cmd.args(["--max-conns", &(conns + 64).max(1024).to_string()]);
        cmd.args(["--idle-timeout", "60s", "--max-frame", "1MiB"]);
        cmd.args(["--work", &rounds.to_string()]);
        if spec.tls {
            cmd.arg("--ca-out").arg(&ca_path);
        }
    }
    if let Some(cpus) = &plan.server_cpus {
        pin_command(&mut cmd, cpus);
    }
    let server = ServerProcess::start_command(cmd, !plan.verbose, Duration::from_secs(20))?;
    let pid = server.pid();

    let mut config = RunConfig::new(server.addr());
    config.framing = plan.framing;
    config.conns = conns;
    config.size = size;
    config.stop = Stop::Duration(plan.duration);
    config.warmup = plan.warmup;
    config.pipeline = plan.pipeline;
    config.timeout = plan.timeout;
    config.threads = plan.threads;
    if spec.tls {
        config.tls = Some(TlsClient::new(&ca_path, "localhost")?);
    }

    // Threads and memory move during the run; a sampler catches the peak.
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let sampler = std::thread::spawn(move || {
        let mut peak = ProcStats::default();
        loop {
            if let Ok(s) = ProcStats::read(pid) {
                peak.threads = peak.threads.max(s.threads);
                peak.peak_rss_bytes = peak.peak_rss_bytes.max(s.peak_rss_bytes);
            }
            if stop_rx.recv_timeout(Duration::from_millis(50))
                != Err(mpsc::RecvTimeoutError::Timeout)
            {
                return peak;
            }
        }
    });
    let before = ProcStats::read(pid).unwrap_or_default();
    let report = crate::run::run(&config);
    let after = ProcStats::read(pid).unwrap_or_default();
    let _ = stop_tx.send(());
    let peak = sampler.join().unwrap_or_default();
    let (status, killed) = server.stop(Duration::from_secs(10))?;
    let _ = std::fs::remove_file(&ca_path);
    let report: Report = report?;
    let cpu = (after.cpu_secs() - before.cpu_secs()).max(0.0);
    let clean_exit = status.success() && !killed;
    Ok(RunFigures {
        requests_per_sec: report.requests_per_sec,
        p50_us: report.latency.p50_us,
        p99_us: report.latency.p99_us,
        p999_us: report.latency.p999_us,
        max_us: report.latency.max_us,
        verified: report.verified,
        starved_conns: report.starved_conns,
        errors: report.errors.total() + report.errors.early_close,
        error_samples: report.error_samples.clone(),
        server_cpu_secs: cpu,
        server_cpu_us_per_request: if report.verified > 0 {
            cpu * 1e6 / report.verified as f64
        } else {
            0.0
        },
        loadgen_cpu_us_per_request: report.loadgen_cpu_us_per_request,
        peak_rss_bytes: peak.peak_rss_bytes.max(after.peak_rss_bytes),
        peak_threads: peak.threads.max(after.threads),
        clean_exit,
        exit: if killed {
            format!("killed after 10 s ({status})")
        } else {
            status.to_string()
        },
    })
}

/// Medians over the runs, status and note.
fn summarize(cell: &mut Cell) {
    if cell.runs.is_empty() {
        cell.status = "failed".into();
        return;
    }
    let med = |f: &dyn Fn(&RunFigures) -> f64| {
        let mut v: Vec<f64> = cell.runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let first = &cell.runs[0];
    let errors: u64 = cell.runs.iter().map(|r| r.errors).sum();
    let clean = cell.runs.iter().all(|r| r.clean_exit);
    let m = RunFigures {
        requests_per_sec: med(&|r| r.requests_per_sec),
        p50_us: med(&|r| r.p50_us),
        p99_us: med(&|r| r.p99_us),
        p999_us: med(&|r| r.p999_us),
        max_us: med(&|r| r.max_us),
        verified: med(&|r| r.verified as f64) as u64,
        starved_conns: cell.runs.iter().map(|r| r.starved_conns).max().unwrap_or(0),
        errors,
        error_samples: cell
            .runs
            .iter()
            .flat_map(|r| r.error_samples.clone())
            .take(3)
            .collect(),
        server_cpu_secs: med(&|r| r.server_cpu_secs),
        server_cpu_us_per_request: med(&|r| r.server_cpu_us_per_request),
        loadgen_cpu_us_per_request: med(&|r| r.loadgen_cpu_us_per_request),
        peak_rss_bytes: cell
            .runs
            .iter()
            .map(|r| r.peak_rss_bytes)
            .max()
            .unwrap_or(0),
        peak_threads: cell.runs.iter().map(|r| r.peak_threads).max().unwrap_or(0),
        clean_exit: clean,
        exit: first.exit.clone(),
    };
    let lo = cell
        .runs
        .iter()
        .map(|r| r.requests_per_sec)
        .fold(f64::MAX, f64::min);
    let hi = cell
        .runs
        .iter()
        .map(|r| r.requests_per_sec)
        .fold(0.0, f64::max);
    cell.rps_spread = Some((lo, hi));
    cell.status = if errors == 0 && clean { "ok" } else { "errors" }.into();
    let mut notes = Vec::new();
    if !cell.note.is_empty() {
        notes.push(cell.note.clone());
    }
    if !clean {
        notes.push(format!("unclean exit: {}", m.exit));
    }
    if m.starved_conns > 0 {
        notes.push(format!(
            "{} of {} connections got no echo after the warm-up",
            m.starved_conns, cell.conns
        ));
    }
    if let Some(s) = m.error_samples.first() {
        notes.push(s.clone());
    }
    cell.note = notes.join("; ");
    cell.median = Some(m);
}

fn progress_line(c: &Cell) -> String {
    let head = format!(
        "{} conns={} size={} work={}",
        c.server, c.conns, c.size, c.work
    );
    match &c.median {
        Some(m) => format!(
            "{head}: {:.0} req/s, p99 {}, server {:.1} µs/req, loadgen {:.1} µs/req, {} errors",
            m.requests_per_sec,
            us(m.p99_us),
            m.server_cpu_us_per_request,
            m.loadgen_cpu_us_per_request,
            m.errors
        ),
        None => format!("{head}: {} ({})", c.status, c.note),
    }
}

fn size_label(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// compare.md, compare.json and the charts.
fn write_outputs(plan: &Plan, c: &Comparison) -> Result<()> {
    let json = serde_json::to_string_pretty(c)?;
    std::fs::write(plan.out.join("compare.json"), json + "\n")?;

    let mut charts = Vec::new();
    for &work in &plan.work {
        for &size in &plan.sizes {
            let cells: Vec<&Cell> = c
                .cells
                .iter()
                .filter(|x| x.size == size && x.work == work.label() && x.median.is_some())
                .collect();
            if cells.is_empty() {
                continue;
            }
            let tag = format!("{}-w{}", size_label(size).replace(' ', ""), work.label());
            let load = format!("{}, work {}", size_label(size), work.label());
            let series = |f: &dyn Fn(&RunFigures) -> f64| -> Vec<Series> {
                plan.servers
                    .iter()
                    .filter_map(|s| {
                        let points: Vec<(f64, f64)> = cells
                            .iter()
                            .filter(|x| x.server == s.name)
                            .filter_map(|x| x.median.as_ref().map(|m| (x.conns as f64, f(m))))
                            .collect();
                        (!points.is_empty()).then(|| Series {
                            name: s.name.into(),
                            points,
                        })
                    })
                    .collect()
            };
            for (kind, title, y, log_y, f) in [
                (
                    "throughput",
                    "Throughput",
                    "requests/s",
                    false,
                    &(|m: &RunFigures| m.requests_per_sec) as &dyn Fn(&RunFigures) -> f64,
                ),
                (
                    "p99",
                    "p99 latency",
                    "p99 latency (µs, log)",
                    true,
                    &|m: &RunFigures| m.p99_us,
                ),
                (
                    "cpu",
                    "Server CPU per request",
                    "server CPU µs / request",
                    false,
                    &|m: &RunFigures| m.server_cpu_us_per_request,
                ),
            ] {
                let file = format!("{kind}-{tag}.svg");
                let title = format!("{title} vs connections ({load})");
                match line_chart(&plan.out.join(&file), &title, y, &series(f), log_y) {
                    Ok(()) => charts.push((title, file)),
                    Err(e) => log::warn!("chart {file}: {e:#}"),
                }
            }
        }
    }
    std::fs::write(plan.out.join("compare.md"), markdown(c, &charts))?;
    Ok(())
}

fn markdown(c: &Comparison, charts: &[(String, String)]) -> String {
    let e = &c.environment;
    let mut md = String::new();
    let pin = |p: &Option<Vec<usize>>| {
        p.as_ref().map_or("not pinned".to_string(), |v| {
            format!(
                "CPU {}",
                v.iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )
        })
    };
    let _ = writeln!(md, "# Echo servers compared\n");
    let _ = writeln!(md, "Run on {} with `{}`.\n", e.date_utc, e.command);
    let _ = writeln!(
        md,
        "| environment | |\n|---|---|\n| CPUs (nproc) | {} × {} |\n| kernel | {} |\n| fd limit (soft, after raising) | {} |\n| server pinned to | {} |\n| loadgen pinned to | {} ({} runtime thread{}) |\n| python | {} |\n",
        e.nproc,
        e.cpu_model,
        e.kernel,
        e.fd_limit,
        pin(&e.server_cpus),
        pin(&e.loadgen_cpus),
        e.loadgen_threads,
        if e.loadgen_threads == 1 { "" } else { "s" },
        e.python
    );
    let _ = writeln!(
        md,
        "Load: `{}` framing, closed loop, {} frame{} in flight per connection, {:.1} s measured after {:.2} s of warm-up, {} run{} per cell (fresh server each run; figures are medians). `work` is `--work` rounds per frame; `heavy` ≈ 128,000 hash steps per request (rounds = 128000 / (64 + size)).\n",
        c.framing,
        c.pipeline,
        if c.pipeline == 1 { "" } else { "s" },
        c.duration_secs,
        c.warmup_secs,
        c.repeat,
        if c.repeat == 1 { "" } else { "s" },
    );
    let _ = writeln!(
        md,
        "**Server CPU µs/req** (user + system time of the server process from /proc, over the whole cell, divided by verified echoes) is the headline: on a shared 2-core machine requests/s mostly measures the client.\n"
    );
    let _ = writeln!(
        md,
        "| server | conns | size | work | req/s | p50 | p99 | server CPU µs/req | loadgen CPU µs/req | peak RSS | threads | errors | exit | notes |\n|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
    );
    for cell in &c.cells {
        let head = format!(
            "| {} | {} | {} | {} ",
            cell.server,
            cell.conns,
            size_label(cell.size),
            cell.work
        );
        let note = cell.note.replace('|', "\\|");
        match &cell.median {
            Some(m) => {
                let rps = match cell.rps_spread {
                    Some((lo, hi)) if c.repeat > 1 => {
                        format!("{:.0} ({:.0}–{:.0})", m.requests_per_sec, lo, hi)
                    }
                    _ => format!("{:.0}", m.requests_per_sec),
                };
                let _ = writeln!(
                    md,
                    "{head}| {rps} | {} | {} | **{:.1}** | {:.1} | {} | {} | {} | {} | {} |",
                    us(m.p50_us),
                    us(m.p99_us),
                    m.server_cpu_us_per_request,
                    m.loadgen_cpu_us_per_request,
                    mib(m.peak_rss_bytes),
                    m.peak_threads,
                    m.errors,
                    if m.clean_exit { "clean" } else { "UNCLEAN" },
                    note
                );
            }
            None => {
                let _ = writeln!(
                    md,
                    "{head}| {} | – | – | – | – | – | – | – | – | {note} |",
                    cell.status
                );
            }
        }
    }
    let _ = writeln!(
        md,
        "\n## Servers\n\n| name | command (plus `--addr 127.0.0.1:0` and the common flags) | threads | available |\n|---|---|---|---|"
    );
    for s in &c.servers {
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {} |",
            s.name,
            s.command,
            s.threads,
            if s.available {
                "yes".to_string()
            } else {
                format!("no: {}", s.note)
            }
        );
    }
    let _ = writeln!(
        md,
        "\nCommon flags of the Rust servers: `--framing {} --max-conns max(conns + 64, 1024) --idle-timeout 60s --max-frame 1MiB --work N`.\n",
        c.framing
    );
    if !charts.is_empty() {
        let _ = writeln!(md, "## Charts\n");
        for (title, file) in charts {
            let _ = writeln!(md, "![{title}]({file})\n");
        }
    }
    let _ = writeln!(md, "## Fairness rules\n");
    for rule in FAIRNESS {
        let _ = writeln!(md, "- {rule}");
    }
    md
}

/// The rules every comparison keeps; printed with every result.
pub const FAIRNESS: &[&str] = &[
    "Every server runs the same framing, the same limits and the same `--work`, started the same way (a child process on 127.0.0.1:0), fresh for every cell.",
    "Every server writes with write_all semantics (short writes are retried, never dropped); every echo is verified byte for byte by the load generator, and a cell with any wrong or missing echo is marked as such.",
    "The same client for everyone: one event-driven load generator (tokio, one task per connection), TCP_NODELAY on, the same payloads, the same warm-up.",
    "Thread counts are stated (table of servers and the `threads` column); a design that cannot serve a cell is shown as skipped with the reason, never dropped.",
    "The environment (CPUs, kernel, fd limit, pinning) is recorded with every result; figures from different machines are not compared.",
    "Server CPU per request (user + system, from /proc) is the headline, next to the load generator's own CPU per request.",
];
