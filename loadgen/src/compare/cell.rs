//! One cell of the matrix: start the server fresh, load it with
//! [`crate::run`] while a sampler watches it in /proc, stop it with SIGTERM,
//! and boil the runs down to medians.

use std::sync::mpsc;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use super::plan::{Plan, Row};
use crate::child::{Endpoint, ProcStats, ServerProcess};
use crate::run::{Report, RunConfig, Stop, us};
use crate::sys::pin_command;
use crate::tls::TlsClient;

/// The figures of one run of one cell.
#[derive(Debug, Clone, Serialize)]
pub struct RunFigures {
    /// The round it ran in (1 without `--rounds`).
    pub round: usize,
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
    /// The row's key: `event-loop`, `event-loop+unix`, `epoll-ref`.
    pub server: String,
    /// What the tables and charts call it.
    pub label: String,
    /// `tcp` (loopback) or `unix` (a Unix domain socket).
    pub transport: String,
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
    /// Smallest and largest server CPU µs per request over the runs.
    pub cpu_spread: Option<(f64, f64)>,
    /// Median server CPU per request divided by the reference's (same
    /// connections, size and work, same comparison); None where the
    /// reference has no figure for this load (it has no `--work`).
    pub x_ref: Option<f64>,
    /// Smallest and largest ratio: with one round, each run's CPU per
    /// request divided by the reference's median; with `--rounds`, the
    /// per-round ratios (`x_ref_rounds`).
    pub x_ref_spread: Option<(f64, f64)>,
    /// With `--rounds`: the first and third quartiles of the per-round
    /// ratios (the interquartile range holds the middle half of them).
    pub x_ref_iqr: Option<(f64, f64)>,
    /// With `--rounds`: in each round the reference ran this load, this
    /// cell's median CPU per request in that round divided by the
    /// reference's in that round. `x_ref` is their median.
    pub x_ref_rounds: Vec<f64>,
}

impl Cell {
    /// A cell not run yet (`skipped` until it is).
    pub(crate) fn new(row: &Row, conns: usize, size: usize, work: super::Work) -> Self {
        Cell {
            server: row.name(),
            label: row.label(),
            transport: if row.unix { "unix" } else { "tcp" }.into(),
            conns,
            size,
            work: work.label(),
            work_rounds: work.rounds(size),
            status: "skipped".into(),
            note: String::new(),
            runs: Vec::new(),
            median: None,
            rps_spread: None,
            cpu_spread: None,
            x_ref: None,
            x_ref_spread: None,
            x_ref_iqr: None,
            x_ref_rounds: Vec::new(),
        }
    }
}

/// Start the server, load it, stop it.
pub(crate) fn run_cell(
    plan: &Plan,
    row: &Row,
    conns: usize,
    size: usize,
    rounds: u32,
) -> Result<RunFigures> {
    let spec = &row.spec;
    let (mut cmd, _) = spec.command().map_err(anyhow::Error::msg)?;
    // A Unix socket file in the temporary directory (a path must fit in
    // 108 bytes; target/ may be deep). The server removes it at shutdown;
    // we remove a leftover before and after.
    let sock = row.unix.then(|| {
        std::env::temp_dir().join(format!("loadgen-{}-{}.sock", std::process::id(), spec.name))
    });
    match &sock {
        Some(path) => {
            let _ = std::fs::remove_file(path);
            cmd.arg("--addr").arg(format!("unix:{}", path.display()));
        }
        None if spec.program.names_its_addr() => {}
        None => {
            cmd.args(["--addr", "127.0.0.1:0"]);
        }
    }
    let ca_path = plan
        .out
        .join(format!(".ca-{}-{}.pem", spec.name, std::process::id()));
    if spec.program.takes_common_flags() {
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

    let mut config = match server.endpoint() {
        Endpoint::Tcp(addr) => RunConfig::new(*addr),
        Endpoint::Unix(path) => RunConfig::new_unix(path),
    };
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
    if let Some(path) = &sock {
        let _ = std::fs::remove_file(path);
    }
    let report: Report = report?;
    let cpu = (after.cpu_secs() - before.cpu_secs()).max(0.0);
    let clean_exit = status.success() && !killed;
    Ok(RunFigures {
        round: 1,
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
pub(crate) fn summarize(cell: &mut Cell) {
    if cell.runs.is_empty() {
        cell.status = "failed".into();
        return;
    }
    let med = |f: &dyn Fn(&RunFigures) -> f64| quantile(cell.runs.iter().map(f).collect(), 0.5);
    let first = &cell.runs[0];
    let errors: u64 = cell.runs.iter().map(|r| r.errors).sum();
    let clean = cell.runs.iter().all(|r| r.clean_exit);
    let m = RunFigures {
        round: 0,
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
    cell.cpu_spread = Some(spread(
        cell.runs.iter().map(|r| r.server_cpu_us_per_request),
    ));
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

/// (smallest, largest) of some figures.
fn spread(v: impl Iterator<Item = f64>) -> (f64, f64) {
    v.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)))
}

/// Divide the cell's server CPU per request by the reference's, from the
/// reference cell of the same load among `done` (the reference runs
/// first; the reference's own ratio is 1).
pub(crate) fn set_ratio(cell: &mut Cell, done: &[Cell]) {
    let Some(m) = &cell.median else { return };
    let reference = done
        .iter()
        .chain(std::iter::once(&*cell))
        .find(|c| {
            c.server == super::servers::REFERENCE
                && c.conns == cell.conns
                && c.size == cell.size
                && c.work == cell.work
        })
        .and_then(|c| c.median.as_ref())
        .map(|r| r.server_cpu_us_per_request)
        .filter(|&r| r > 0.0);
    if let Some(r) = reference {
        cell.x_ref = Some(m.server_cpu_us_per_request / r);
        cell.x_ref_spread = Some(spread(
            cell.runs
                .iter()
                .map(|run| run.server_cpu_us_per_request / r),
        ));
    }
}

/// `--rounds`: each cell's ratio to the reference round by round. In
/// every round where both ran this load, the cell's median CPU per
/// request in that round over the reference's in that round; `x_ref` is
/// the median of those ratios, with their range and interquartile range.
pub(crate) fn set_round_ratios(cells: &mut [Cell]) {
    let round_cpu = |c: &Cell, round: usize| -> Option<f64> {
        let v: Vec<f64> = c
            .runs
            .iter()
            .filter(|r| r.round == round)
            .map(|r| r.server_cpu_us_per_request)
            .collect();
        (!v.is_empty()).then(|| quantile(v, 0.5))
    };
    let ratios: Vec<Vec<f64>> = cells
        .iter()
        .map(|cell| {
            let Some(reference) = cells.iter().find(|c| {
                c.server == super::servers::REFERENCE
                    && c.conns == cell.conns
                    && c.size == cell.size
                    && c.work == cell.work
            }) else {
                return Vec::new();
            };
            let mut rounds: Vec<usize> = cell.runs.iter().map(|r| r.round).collect();
            rounds.dedup();
            rounds
                .into_iter()
                .filter_map(|round| {
                    let r = round_cpu(reference, round).filter(|&r| r > 0.0)?;
                    Some(round_cpu(cell, round)? / r)
                })
                .collect()
        })
        .collect();
    for (cell, ratios) in cells.iter_mut().zip(ratios) {
        if ratios.is_empty() || cell.median.is_none() {
            continue;
        }
        cell.x_ref = Some(quantile(ratios.clone(), 0.5));
        cell.x_ref_spread = Some(spread(ratios.iter().copied()));
        cell.x_ref_iqr = Some((
            quantile(ratios.clone(), 0.25),
            quantile(ratios.clone(), 0.75),
        ));
        cell.x_ref_rounds = ratios;
    }
}

/// The q-quantile of some figures, interpolating between the two nearest
/// (so the median of an even count is the mean of the middle two).
pub(crate) fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// One run's figures on one line (`--rounds` progress).
pub(crate) fn run_line(c: &Cell, r: &RunFigures) -> String {
    format!(
        "{} conns={} size={} work={}: {:.0} req/s, p99 {}, server {:.1} µs/req, {} errors",
        c.label,
        c.conns,
        c.size,
        c.work,
        r.requests_per_sec,
        us(r.p99_us),
        r.server_cpu_us_per_request,
        r.errors
    )
}

/// `×1.15`, or `–` without a reference figure.
pub fn ratio(x: Option<f64>) -> String {
    x.map_or_else(|| "–".to_string(), |x| format!("×{x:.2}"))
}

pub(crate) fn progress_line(c: &Cell) -> String {
    let head = format!(
        "{} conns={} size={} work={}",
        c.label, c.conns, c.size, c.work
    );
    match &c.median {
        Some(m) => format!(
            "{head}: {:.0} req/s, p99 {}, server {:.1} µs/req ({} ref), loadgen {:.1} µs/req, {} errors",
            m.requests_per_sec,
            us(m.p99_us),
            m.server_cpu_us_per_request,
            ratio(c.x_ref),
            m.loadgen_cpu_us_per_request,
            m.errors
        ),
        None => format!("{head}: {} ({})", c.status, c.note),
    }
}
