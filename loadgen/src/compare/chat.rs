//! `loadgen compare --chat`: the chat room's three designs under the same
//! fan-out load, one table.
//!
//! ```text
//! cargo build --release -p chat -p loadgen
//! target/release/loadgen compare --chat --quick            # 10 and 100 members, 1 s per cell
//! target/release/loadgen compare --chat --pin --rounds 5   # 10, 100, 1,000 members, medians over 5 rounds
//! target/release/loadgen compare --chat --members 1000 --stalled 0,1,10 --chat-rate 0.02
//! ```
//!
//! Rows are `chat server --model threads|tokio|event-loop`; cells are
//! members × stalled members (members that join and never read). Every
//! run starts a fresh server on 127.0.0.1:0 with the same flags
//! ([`SERVER_FLAGS`]), runs [`crate::chat::load`] in-process against it
//! (joins first, then M members talk for `--duration`; the server's CPU is
//! read from /proc after the joins and after the last delivery), samples
//! its threads, reads its peak RSS, and stops it with SIGTERM.
//!
//! The room's work grows with M²: every line reaches M-1 others. So the
//! rate is chosen per member count to keep the *expected deliveries per
//! second* the same in every cell (`--chat-deliveries`, 50,000 by default:
//! rate = 50,000 / (M·(M-1)); 1,000 members then say 0.05 lines a second
//! each), and the table shows the rate. `--chat-rate R` fixes every
//! member's rate instead. One rate for every member count would compare
//! overload at 1,000 members with idling at 10.
//!
//! There is no kernel-only reference for a chat room as `epoll-ref` is for
//! the echo, so the ratio column is `x threads`: each row's server CPU per
//! delivery divided by the threads design's in the same cell of the same
//! round (its median over rounds with `--rounds`). It says which design
//! spends less per delivery, not how close any comes to a limit.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::cell::quantile;
use super::plan::{CompareArgs, scratch_dir};
use super::report::{ServerRow, environment_rows};
use super::servers::{ALL_FRAMINGS, Needs, Program, ServerSpec, extra_spec};
use super::{SplitMix64, about};
use crate::chat::load::{ChatLoadArgs, RATE_RANGE, check_rate, rate_text};
use crate::child::{ProcStats, ServerProcess};
use crate::run::us;
use crate::sys::{Environment, pin_command, pin_current_thread};

/// The flags every chat row gets (besides `--addr 127.0.0.1:0` and
/// `--max-conns`): a bounded outbox per member, a stalled member's lines
/// skipped (not the member closed, so it stays in the room for the whole
/// cell), a stall timeout longer than any cell, and no idle timeout (at
/// 0.05 lines a second a member that only listens for 30 s is a normal
/// member, not an idle one).
pub const SERVER_FLAGS: &[&str] = &[
    "--max-pending",
    "64KiB",
    "--slow",
    "skip",
    "--stall-timeout",
    "60s",
    "--idle-timeout",
    "0",
];

/// Expected deliveries per second of every cell when no `--chat-rate`.
pub const DEFAULT_DELIVERIES: f64 = 50_000.0;

/// Padding per line, bytes (the load's default).
const LINE_PADDING: u32 = 32;

/// The three designs, threads first (the divisor of `x threads`).
pub const CHAT_SERVERS: [ServerSpec; 3] = [
    chat_row(
        "threads",
        &["--model", "threads"],
        "a reader and a writer thread per member; the room behind a Mutex",
    ),
    chat_row(
        "tokio",
        &["--model", "tokio"],
        "tokio multi-thread runtime; a task per member, bounded channels",
    ),
    chat_row(
        "event-loop",
        &["--model", "event-loop"],
        "1 (mio readiness loop, per-connection outboxes)",
    ),
];

/// The row every other row's CPU per delivery is divided by.
pub const BASELINE: &str = "threads";

const fn chat_row(
    name: &'static str,
    args: &'static [&'static str],
    threads: &'static str,
) -> ServerSpec {
    ServerSpec {
        name,
        program: Program::Bin("chat"),
        args,
        framings: ALL_FRAMINGS,
        max_conns: 20_000,
        limit_reason: "",
        work: false,
        tls: false,
        threads,
        needs: Needs::Nothing,
        unix: false,
        reference: false,
    }
}

/// How each cell's rate is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RateRule {
    /// Every member says this many lines a second, whatever M.
    Fixed(f64),
    /// M·(M-1)·R near this many deliveries a second.
    Deliveries(f64),
}

impl RateRule {
    /// Lines per member per second for `members`, within the load's range.
    pub(crate) fn rate(self, members: u32) -> f64 {
        match self {
            RateRule::Fixed(r) => r,
            RateRule::Deliveries(d) => {
                let m = f64::from(members.max(2));
                (d / (m * (m - 1.0))).clamp(RATE_RANGE.0, RATE_RANGE.1)
            }
        }
    }

    fn describe(self) -> String {
        match self {
            RateRule::Fixed(r) => format!(
                "every member says {} lines a second (`--chat-rate`)",
                rate_text(r)
            ),
            RateRule::Deliveries(d) => format!(
                "each member's rate is {d:.0} / (M·(M-1)) lines a second, so every cell expects about {d:.0} deliveries a second (`--chat-deliveries`; clamped to {}–{} lines a second)",
                rate_text(RATE_RANGE.0),
                rate_text(RATE_RANGE.1)
            ),
        }
    }
}

/// The settings of a chat comparison, after defaults.
#[derive(Debug, Clone)]
pub(crate) struct ChatPlan {
    pub(crate) rows: Vec<ServerSpec>,
    pub(crate) members: Vec<u32>,
    pub(crate) stalled: Vec<u32>,
    pub(crate) rate: RateRule,
    pub(crate) duration: Duration,
    pub(crate) repeat: usize,
    pub(crate) rounds: usize,
    pub(crate) seed: u64,
    pub(crate) server_cpus: Option<Vec<usize>>,
    pub(crate) loadgen_cpus: Option<Vec<usize>>,
    pub(crate) verbose: bool,
    pub(crate) out: PathBuf,
}

impl CompareArgs {
    pub(crate) fn chat_plan(&self) -> Result<ChatPlan> {
        if self.publish {
            bail!(
                "--publish refreshes results/, the echo matrix the README links; the chat rows are not published by a command: drop --publish (the run then goes to {}) or give --out DIR",
                scratch_dir().join("chat").display()
            );
        }
        let mut rows: Vec<ServerSpec> = if self.servers.is_empty() {
            CHAT_SERVERS.to_vec()
        } else {
            self.servers
                .iter()
                .map(|n| {
                    CHAT_SERVERS
                        .iter()
                        .find(|s| s.name == n.trim())
                        .copied()
                        .with_context(|| {
                            format!(
                                "unknown chat design `{n}`; known: {}",
                                CHAT_SERVERS
                                    .iter()
                                    .map(|s| s.name)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        })
                })
                .collect::<Result<_>>()?
        };
        rows.dedup_by_key(|s| s.name);
        for e in &self.extra {
            let spec = extra_spec(e).map_err(anyhow::Error::msg)?;
            if rows
                .iter()
                .chain(&CHAT_SERVERS)
                .any(|o| o.name == spec.name)
            {
                bail!("--extra: the name `{}` is already a row", spec.name);
            }
            rows.push(spec);
        }
        let members = if !self.members.is_empty() {
            self.members.clone()
        } else if self.quick {
            vec![10, 100]
        } else {
            vec![10, 100, 1000]
        };
        if let Some(m) = members.iter().find(|m| !(2..=20_000).contains(*m)) {
            bail!("--members {m}: a room of 2 to 20,000 members");
        }
        let stalled = if self.stalled.is_empty() {
            vec![0, 1]
        } else {
            self.stalled.clone()
        };
        if let Some(s) = stalled.iter().find(|s| **s > 1000) {
            bail!("--stalled {s}: at most 1,000");
        }
        let deliveries = self.chat_deliveries.unwrap_or(DEFAULT_DELIVERIES);
        // A range check also refuses NaN.
        if !(1.0..=1e9).contains(&deliveries) {
            bail!("--chat-deliveries: from 1 to 1,000,000,000 a second");
        }
        let rate = match self.chat_rate {
            Some(r) => RateRule::Fixed(check_rate(r).map_err(anyhow::Error::msg)?),
            None => RateRule::Deliveries(deliveries),
        };
        let duration = self.duration.unwrap_or(if self.quick {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(5)
        });
        if duration > Duration::from_secs(600) {
            bail!("--duration is at most 10m");
        }
        let (server_cpus, loadgen_cpus) = self.pinning();
        Ok(ChatPlan {
            rows,
            members,
            stalled,
            rate,
            duration,
            repeat: self.repeat.max(1),
            rounds: self.rounds.unwrap_or(1).max(1),
            seed: self.seed.unwrap_or_else(super::plan::time_seed),
            server_cpus,
            loadgen_cpus,
            verbose: self.verbose,
            out: self
                .out
                .clone()
                .unwrap_or_else(|| scratch_dir().join("chat")),
        })
    }
}

/// One run of one chat cell.
#[derive(Debug, Clone, Serialize)]
pub struct ChatRun {
    /// The round it ran in (1 without `--rounds`).
    pub round: usize,
    pub said: u64,
    pub delivered: u64,
    pub expected: u64,
    pub deliveries_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// Server CPU (user + system) from after the joins to after the last
    /// delivery, seconds.
    pub server_cpu_secs: f64,
    pub server_cpu_us_per_delivery: f64,
    /// The server's VmHWM at the end of the run (joins included).
    pub peak_rss_bytes: u64,
    pub peak_threads: u64,
    pub clean_exit: bool,
    pub exit: String,
    /// Why the load failed (a member could not join), if it did.
    pub error: Option<String>,
}

/// One design under one load.
#[derive(Debug, Clone, Serialize)]
pub struct ChatCell {
    pub server: String,
    pub label: String,
    pub members: u32,
    pub stalled: u32,
    /// Lines per member per second.
    pub rate: f64,
    /// M·(M-1)·rate.
    pub expected_deliveries_per_sec: f64,
    /// `ok` (every line reached every reading member, clean exit),
    /// `short` (deliveries missing), `errors` (the load failed or the
    /// server exited uncleanly), `failed` (did not start), `skipped`.
    pub status: String,
    pub note: String,
    pub runs: Vec<ChatRun>,
    /// Medians over `runs` (None when failed or skipped).
    pub median: Option<ChatRun>,
    /// Smallest and largest server CPU µs per delivery over the runs.
    pub cpu_spread: Option<(f64, f64)>,
    /// Smallest and largest p99 over the runs.
    pub p99_spread: Option<(f64, f64)>,
    /// Server CPU per delivery over the threads row's, same cell: the
    /// median of the per-round ratios.
    pub x_threads: Option<f64>,
    /// The per-round ratios behind `x_threads`.
    pub x_threads_rounds: Vec<f64>,
}

/// Everything the chat `compare.json` holds.
#[derive(Debug, Serialize)]
pub struct ChatComparison {
    /// `chat`, to tell it from the echo comparison's file.
    pub kind: String,
    pub environment: Environment,
    pub duration_secs: f64,
    pub repeat: usize,
    pub rounds: usize,
    pub seed: Option<u64>,
    /// How the rates were chosen.
    pub rate_rule: String,
    /// The flags every row got besides the address and `--max-conns`.
    pub server_flags: String,
    pub line_padding_bytes: u32,
    pub servers: Vec<ServerRow>,
    pub cells: Vec<ChatCell>,
}

/// `loadgen compare --chat`. Ok(false) when a cell was not `ok`.
pub(crate) fn execute(args: &CompareArgs) -> Result<bool> {
    if args.list {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        for s in &CHAT_SERVERS {
            let cmd = s
                .availability(false)
                .map(|c| c.1)
                .unwrap_or_else(|u| format!("(unavailable: {})", u.why));
            writeln!(out, "{:<12} {cmd} {}", s.name, SERVER_FLAGS.join(" "))?;
        }
        out.flush()?;
        return Ok(true);
    }
    let plan = args.chat_plan()?;
    let comparison = compare(&plan)?;
    let ok = comparison
        .cells
        .iter()
        .all(|c| c.status == "ok" || c.status == "skipped");
    let json = serde_json::to_string_pretty(&comparison)?;
    std::fs::write(plan.out.join("compare.json"), json + "\n")?;
    std::fs::write(plan.out.join("compare.md"), markdown(&comparison))?;
    eprintln!("wrote {}/compare.md and compare.json", plan.out.display());
    Ok(ok)
}

fn compare(plan: &ChatPlan) -> Result<ChatComparison> {
    // Every member is a socket at both ends; the servers inherit the
    // raised limit from us.
    let _ = common::net::raise_fd_limit();
    if let Some(cpus) = &plan.loadgen_cpus {
        pin_current_thread(cpus).context("pinning the load generator")?;
    }
    std::fs::create_dir_all(&plan.out)
        .with_context(|| format!("creating {}", plan.out.display()))?;
    // The load's tokio runtime starts one worker per CPU this thread may
    // run on (after pinning: those CPUs).
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let environment =
        Environment::collect(plan.server_cpus.clone(), plan.loadgen_cpus.clone(), workers);
    let mut servers = Vec::new();
    let mut cells = Vec::new();
    let mut row_of = Vec::new();
    for (r, spec) in plan.rows.iter().enumerate() {
        let available = spec.availability(false);
        servers.push(ServerRow {
            name: spec.name.to_string(),
            label: spec.label(),
            command: available.as_ref().map(|c| c.1.clone()).unwrap_or_default(),
            threads: spec.threads.into(),
            available: available.is_ok(),
            note: available
                .as_ref()
                .err()
                .map(|u| u.why.clone())
                .unwrap_or_default(),
        });
        for &members in &plan.members {
            for &stalled in &plan.stalled {
                let rate = plan.rate.rate(members);
                let m = f64::from(members);
                let mut cell = ChatCell {
                    server: spec.name.to_string(),
                    label: spec.label(),
                    members,
                    stalled,
                    rate,
                    expected_deliveries_per_sec: m * (m - 1.0) * rate,
                    status: "skipped".into(),
                    note: String::new(),
                    runs: Vec::new(),
                    median: None,
                    cpu_spread: None,
                    p99_spread: None,
                    x_threads: None,
                    x_threads_rounds: Vec::new(),
                };
                match &available {
                    Err(u) => {
                        if u.failed {
                            cell.status = "failed".into();
                        }
                        cell.note = u.why.clone();
                    }
                    // To run: no status until it has a figure.
                    Ok(_) => cell.status = String::new(),
                }
                cells.push(cell);
                row_of.push(r);
            }
        }
    }
    let order = schedule(plan, &cells);
    let runs = order.len() * plan.repeat;
    // About a second per run beyond the measured time: start, joins,
    // the last deliveries, stop (more at 1,000 members).
    let per_run = plan.duration + Duration::from_secs(1);
    eprintln!(
        "{} chat cells to run{}, {runs} run{} in all: about {} ({:.1} s talking + ~1 s to start, join, drain and stop, per run); {}",
        order.len() / plan.rounds,
        if plan.rounds > 1 {
            format!(" x {} rounds", plan.rounds)
        } else {
            String::new()
        },
        if runs == 1 { "" } else { "s" },
        about(per_run.as_secs_f64() * runs as f64),
        plan.duration.as_secs_f64(),
        plan.rate.describe(),
    );
    if plan.rounds > 1 {
        eprintln!(
            "{} interleaved rounds, the rows of each load shuffled with seed {} (--seed {} repeats this order)",
            plan.rounds, plan.seed, plan.seed
        );
    }
    let mut failed_to_start: Vec<Option<String>> = vec![None; plan.rows.len()];
    for (k, &(round, i)) in order.iter().enumerate() {
        let r = row_of[i];
        let cell = &mut cells[i];
        if let Some(e) = &failed_to_start[r] {
            cell.note = format!("did not start: {e}");
            continue;
        }
        for _ in 0..plan.repeat {
            match run_cell(plan, &plan.rows[r], cell.members, cell.stalled, cell.rate) {
                Ok(mut run) => {
                    run.round = round;
                    eprintln!(
                        "[{}/{}] round {round}/{}: {}",
                        k + 1,
                        order.len(),
                        plan.rounds,
                        run_line(cell, &run)
                    );
                    cell.runs.push(run);
                }
                Err(e) => {
                    failed_to_start[r] = Some(format!("{e:#}"));
                    cell.note = format!("did not start: {e:#}");
                    break;
                }
            }
        }
    }
    for cell in cells.iter_mut().filter(|c| c.status.is_empty()) {
        summarize(cell);
    }
    set_ratios(&mut cells);
    eprintln!(
        "medians{}:",
        if plan.rounds > 1 {
            format!(" over {} rounds", plan.rounds)
        } else {
            String::new()
        }
    );
    for cell in &cells {
        eprintln!("  {}", summary_line(cell));
    }
    Ok(ChatComparison {
        kind: "chat".into(),
        environment,
        duration_secs: plan.duration.as_secs_f64(),
        repeat: plan.repeat,
        rounds: plan.rounds,
        seed: (plan.rounds > 1).then_some(plan.seed),
        rate_rule: plan.rate.describe(),
        server_flags: SERVER_FLAGS.join(" "),
        line_padding_bytes: LINE_PADDING,
        servers,
        cells,
    })
}

/// (round, cell index): one round in table order; several, round by
/// round and load by load, the rows of each load shuffled from the seed.
fn schedule(plan: &ChatPlan, cells: &[ChatCell]) -> Vec<(usize, usize)> {
    let runnable = |i: &usize| cells[*i].status.is_empty();
    if plan.rounds == 1 {
        return (0..cells.len()).filter(runnable).map(|i| (1, i)).collect();
    }
    let mut rng = SplitMix64(plan.seed);
    let mut order = Vec::new();
    for round in 1..=plan.rounds {
        for &members in &plan.members {
            for &stalled in &plan.stalled {
                let mut these: Vec<usize> = (0..cells.len())
                    .filter(|&i| cells[i].members == members && cells[i].stalled == stalled)
                    .filter(runnable)
                    .collect();
                rng.shuffle(&mut these);
                order.extend(these.into_iter().map(|i| (round, i)));
            }
        }
    }
    order
}

/// Start the server, run the chat load against it, stop it. Err only when
/// the server did not start; a load that failed is a run with `error`.
fn run_cell(
    plan: &ChatPlan,
    spec: &ServerSpec,
    members: u32,
    stalled: u32,
    rate: f64,
) -> Result<ChatRun> {
    let (mut cmd, _) = spec.command().map_err(anyhow::Error::msg)?;
    if !spec.program.names_its_addr() {
        cmd.args(["--addr", "127.0.0.1:0"]);
        // Every member and stalled member is a connection, plus room for
        // the odd extra (a check, a human with nc).
        let conns = (members as usize + stalled as usize + 64).max(1024);
        cmd.args(["--max-conns", &conns.to_string()]);
        cmd.args(SERVER_FLAGS);
    }
    if let Some(cpus) = &plan.server_cpus {
        pin_command(&mut cmd, cpus);
    }
    let server = ServerProcess::start_command(cmd, !plan.verbose, Duration::from_secs(20))?;
    let pid = server.pid();
    // Threads move during the run (two per member in the threads design);
    // a sampler catches the peak.
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        loop {
            if let Ok(s) = ProcStats::read(pid) {
                peak = s.threads.max(peak);
            }
            if stop_rx.recv_timeout(Duration::from_millis(50))
                != Err(mpsc::RecvTimeoutError::Timeout)
            {
                return peak;
            }
        }
    });
    let args = ChatLoadArgs {
        addr: server.addr().into(),
        members,
        rate,
        duration: plan.duration,
        stalled,
        size: LINE_PADDING,
        server_pid: Some(pid),
    };
    let report = crate::chat::load::run(&args);
    let after = ProcStats::read(pid).unwrap_or_default();
    let _ = stop_tx.send(());
    let peak_threads = sampler.join().unwrap_or_default();
    let (status, killed) = server.stop(Duration::from_secs(10))?;
    let clean_exit = status.success() && !killed;
    let exit = if killed {
        format!("killed after 10 s ({status})")
    } else {
        status.to_string()
    };
    let mut run = ChatRun {
        round: 1,
        said: 0,
        delivered: 0,
        expected: 0,
        deliveries_per_sec: 0.0,
        p50_us: 0.0,
        p99_us: 0.0,
        p999_us: 0.0,
        max_us: 0.0,
        server_cpu_secs: 0.0,
        server_cpu_us_per_delivery: 0.0,
        peak_rss_bytes: after.peak_rss_bytes,
        peak_threads: peak_threads.max(after.threads),
        clean_exit,
        exit,
        error: None,
    };
    match report {
        Ok(r) => {
            run.said = r.said;
            run.delivered = r.delivered;
            run.expected = r.expected;
            run.deliveries_per_sec = r.deliveries_per_sec;
            run.p50_us = r.p50_us as f64;
            run.p99_us = r.p99_us as f64;
            run.p999_us = r.p999_us as f64;
            run.max_us = r.max_us as f64;
            run.server_cpu_secs = r.server_cpu_secs.unwrap_or(0.0);
            run.server_cpu_us_per_delivery = r.server_cpu_us_per_delivery.unwrap_or(0.0);
            run.peak_rss_bytes = run.peak_rss_bytes.max(r.server_peak_rss_bytes.unwrap_or(0));
        }
        Err(e) => run.error = Some(format!("{e:#}")),
    }
    Ok(run)
}

/// Medians over the runs, status and note.
fn summarize(cell: &mut ChatCell) {
    if cell.runs.is_empty() {
        cell.status = "failed".into();
        return;
    }
    let med = |f: &dyn Fn(&ChatRun) -> f64| quantile(cell.runs.iter().map(f).collect(), 0.5);
    let sum = |f: &dyn Fn(&ChatRun) -> u64| cell.runs.iter().map(f).sum::<u64>();
    let clean = cell.runs.iter().all(|r| r.clean_exit);
    let error = cell.runs.iter().find_map(|r| r.error.clone());
    let (delivered, expected) = (sum(&|r| r.delivered), sum(&|r| r.expected));
    let m = ChatRun {
        round: 0,
        said: med(&|r| r.said as f64) as u64,
        delivered: med(&|r| r.delivered as f64) as u64,
        expected: med(&|r| r.expected as f64) as u64,
        deliveries_per_sec: med(&|r| r.deliveries_per_sec),
        p50_us: med(&|r| r.p50_us),
        p99_us: med(&|r| r.p99_us),
        p999_us: med(&|r| r.p999_us),
        max_us: med(&|r| r.max_us),
        server_cpu_secs: med(&|r| r.server_cpu_secs),
        server_cpu_us_per_delivery: med(&|r| r.server_cpu_us_per_delivery),
        peak_rss_bytes: cell
            .runs
            .iter()
            .map(|r| r.peak_rss_bytes)
            .max()
            .unwrap_or(0),
        peak_threads: cell.runs.iter().map(|r| r.peak_threads).max().unwrap_or(0),
        clean_exit: clean,
        exit: cell.runs[0].exit.clone(),
        error: error.clone(),
    };
    cell.cpu_spread = Some(spread(
        cell.runs.iter().map(|r| r.server_cpu_us_per_delivery),
    ));
    cell.p99_spread = Some(spread(cell.runs.iter().map(|r| r.p99_us)));
    let mut notes = Vec::new();
    if !cell.note.is_empty() {
        notes.push(cell.note.clone());
    }
    cell.status = if error.is_some() || !clean {
        "errors"
    } else if delivered != expected || delivered == 0 {
        "short"
    } else {
        "ok"
    }
    .into();
    if let Some(e) = &error {
        notes.push(e.clone());
    }
    if !clean {
        notes.push(format!("unclean exit: {}", m.exit));
    }
    if expected == 0 && error.is_none() {
        notes.push(
            "no line was said: members x rate x duration is below one line; raise --duration or the rate".into(),
        );
    } else if delivered != expected {
        notes.push(format!(
            "{delivered} of {expected} deliveries arrived (over all runs): a reading member fell --max-pending behind and was skipped, or the last lines took over 5 s"
        ));
    }
    cell.note = notes.join("; ");
    cell.median = Some(m);
}

/// (smallest, largest) of some figures.
fn spread(v: impl Iterator<Item = f64>) -> (f64, f64) {
    v.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)))
}

/// `x threads`: in every round where both ran the cell's load, its median
/// CPU per delivery in that round over the threads row's; the median of
/// those. Drift of the machine between rounds hits both sides of a ratio.
fn set_ratios(cells: &mut [ChatCell]) {
    let round_cpu = |c: &ChatCell, round: usize| -> Option<f64> {
        let v: Vec<f64> = c
            .runs
            .iter()
            .filter(|r| r.round == round && r.error.is_none())
            .map(|r| r.server_cpu_us_per_delivery)
            .collect();
        (!v.is_empty()).then(|| quantile(v, 0.5))
    };
    let ratios: Vec<Vec<f64>> = cells
        .iter()
        .map(|cell| {
            let Some(base) = cells.iter().find(|c| {
                c.server == BASELINE && c.members == cell.members && c.stalled == cell.stalled
            }) else {
                return Vec::new();
            };
            let mut rounds: Vec<usize> = cell.runs.iter().map(|r| r.round).collect();
            rounds.dedup();
            rounds
                .into_iter()
                .filter_map(|round| {
                    let b = round_cpu(base, round).filter(|&b| b > 0.0)?;
                    Some(round_cpu(cell, round)? / b)
                })
                .collect()
        })
        .collect();
    for (cell, ratios) in cells.iter_mut().zip(ratios) {
        if ratios.is_empty() || cell.median.is_none() {
            continue;
        }
        cell.x_threads = Some(quantile(ratios.clone(), 0.5));
        cell.x_threads_rounds = ratios;
    }
}

fn run_line(c: &ChatCell, r: &ChatRun) -> String {
    match &r.error {
        Some(e) => format!(
            "{} members={} stalled={}: load failed: {e}",
            c.label, c.members, c.stalled
        ),
        None => format!(
            "{} members={} stalled={} rate={}: {}/{} delivered, {:.0} deliveries/s, p99 {}, server {:.2} µs/delivery",
            c.label,
            c.members,
            c.stalled,
            rate_text(c.rate),
            r.delivered,
            r.expected,
            r.deliveries_per_sec,
            us(r.p99_us),
            r.server_cpu_us_per_delivery
        ),
    }
}

fn summary_line(c: &ChatCell) -> String {
    let head = format!("{} members={} stalled={}", c.label, c.members, c.stalled);
    match &c.median {
        Some(m) => format!(
            "{head}: {} ({}/{} delivered), {:.0} deliveries/s, p99 {}, server {:.2} µs/delivery ({} threads)",
            c.status,
            m.delivered,
            m.expected,
            m.deliveries_per_sec,
            us(m.p99_us),
            m.server_cpu_us_per_delivery,
            ratio(c.x_threads)
        ),
        None => format!("{head}: {} ({})", c.status, c.note),
    }
}

/// `×1.15`, or `–`.
fn ratio(x: Option<f64>) -> String {
    x.map_or_else(|| "–".to_string(), |x| format!("×{x:.2}"))
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn markdown(c: &ChatComparison) -> String {
    let e = &c.environment;
    let mut md = String::new();
    let _ = writeln!(md, "# Chat rooms compared\n");
    let _ = writeln!(md, "Run on {} with `{}`.\n", e.date_utc, e.command);
    let _ = writeln!(md, "{}", environment_rows(e, "worker"));
    let runs = if c.rounds > 1 {
        format!(
            "{} interleaved rounds (the rows of each load in a shuffled order, seed {}: `--rounds {} --seed {}` repeats it); figures are medians over the rounds",
            c.rounds,
            c.seed.unwrap_or_default(),
            c.rounds,
            c.seed.unwrap_or_default()
        )
    } else {
        format!(
            "{} run{} per cell (a fresh server each run; figures are medians)",
            c.repeat,
            if c.repeat == 1 { "" } else { "s" }
        )
    };
    let _ = writeln!(
        md,
        "Load: `loadgen chat`, in-process. M members join, then talk for {:.1} s, each line padded with {} bytes; {}; {runs}. A stalled member joins first and never reads. Latency is fan-out latency, from the sender's `write()` to each receiver's `read()`, over every delivery. Server CPU (user + system, /proc) is counted from after the joins to after the last delivery, divided by the deliveries to reading members.\n",
        c.duration_secs, c.line_padding_bytes, c.rate_rule,
    );
    let _ = writeln!(
        md,
        "**x threads** divides a row's server CPU µs per delivery by the threads design's in the same cell{}: there is no kernel-only reference for a chat room, so the ratio ranks the designs, it does not say how close any comes to a limit. **p99 ÷ no stall** divides the cell's p99 by the same row's p99 with no stalled member: near 1 means one member that stops reading does not hold up the room.\n",
        if c.rounds > 1 {
            " of the same round (the median of the per-round ratios)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "| design | members | stalled | rate (lines/s each) | expected deliveries/s | deliveries/s | delivered / expected | p50 | p99 | p99.9 | server CPU µs/delivery | x threads | p99 ÷ no stall | peak RSS | threads | exit | status | notes |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|"
    );
    for cell in &c.cells {
        let head = format!(
            "| {} | {} | {} | {} | {:.0} ",
            cell.label,
            cell.members,
            cell.stalled,
            rate_text(cell.rate),
            cell.expected_deliveries_per_sec
        );
        let note = cell.note.replace('|', "\\|");
        let Some(m) = &cell.median else {
            let _ = writeln!(
                md,
                "{head}| – | – | – | – | – | – | – | – | – | – | – | {} | {note} |",
                cell.status
            );
            continue;
        };
        let cpu = match cell.cpu_spread {
            Some((lo, hi)) if c.rounds > 1 || c.repeat > 1 => {
                format!("**{:.2}** ({lo:.2}–{hi:.2})", m.server_cpu_us_per_delivery)
            }
            _ => format!("**{:.2}**", m.server_cpu_us_per_delivery),
        };
        let calm = c
            .cells
            .iter()
            .find(|x| x.server == cell.server && x.members == cell.members && x.stalled == 0)
            .and_then(|x| x.median.as_ref())
            .map(|x| x.p99_us)
            .filter(|&p| p > 0.0);
        let p99_ratio = match calm {
            Some(p) if cell.stalled > 0 => format!("{:.2}", m.p99_us / p),
            _ => "–".into(),
        };
        let _ = writeln!(
            md,
            "{head}| {:.0} | {} / {} | {} | {} | {} | {cpu} | {} | {p99_ratio} | {} | {} | {} | {} | {note} |",
            m.deliveries_per_sec,
            m.delivered,
            m.expected,
            us(m.p50_us),
            us(m.p99_us),
            us(m.p999_us),
            ratio(cell.x_threads),
            mib(m.peak_rss_bytes),
            m.peak_threads,
            if m.clean_exit { "clean" } else { "UNCLEAN" },
            cell.status,
        );
    }
    let _ = writeln!(
        md,
        "\n## Designs\n\n| name | command (plus `--addr 127.0.0.1:0 --max-conns max(M + stalled + 64, 1024)` and the flags below) | threads | available |\n|---|---|---|---|"
    );
    for s in &c.servers {
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {} |",
            s.label,
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
        "\nFlags of every row: `{}`. A member whose outbox holds 64 KiB misses what does not fit (and is told so when it reads again); a stalled member therefore costs the room a bounded outbox, never a blocked write.\n",
        c.server_flags
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(flags: &[&str]) -> CompareArgs {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: CompareArgs,
        }
        let argv = std::iter::once("compare").chain(flags.iter().copied());
        <Wrapper as clap::Parser>::try_parse_from(argv)
            .map(|w| w.args)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_rate_keeps_deliveries_near_the_target() {
        let rule = RateRule::Deliveries(DEFAULT_DELIVERIES);
        for m in [10u32, 100, 1000] {
            let r = rule.rate(m);
            let per_sec = f64::from(m) * f64::from(m - 1) * r;
            assert!((per_sec - 50_000.0).abs() < 1e-6, "{m}: {per_sec}");
        }
        assert!((rule.rate(1000) - 50_000.0 / 999_000.0).abs() < 1e-12);
        // Three members would need 8,333 lines a second each: clamped.
        assert_eq!(rule.rate(3), RATE_RANGE.1);
        assert_eq!(RateRule::Fixed(0.1).rate(1000), 0.1);
    }

    #[test]
    fn the_chat_plan_has_its_own_defaults_and_refuses_publish() {
        let full = args(&["--chat"]).chat_plan().unwrap();
        let names: Vec<&str> = full.rows.iter().map(|s| s.name).collect();
        assert_eq!(names, ["threads", "tokio", "event-loop"]);
        assert_eq!(full.members, [10, 100, 1000]);
        assert_eq!(full.stalled, [0, 1]);
        assert_eq!(full.rate, RateRule::Deliveries(DEFAULT_DELIVERIES));
        assert!(full.out.ends_with("compare/chat"), "{:?}", full.out);
        let quick = args(&["--chat", "--quick", "--pin", "--rounds", "3"])
            .chat_plan()
            .unwrap();
        assert_eq!(quick.members, [10, 100]);
        assert_eq!(quick.duration, Duration::from_secs(1));
        assert_eq!(quick.rounds, 3);
        let mine = args(&[
            "--chat",
            "--servers",
            "tokio",
            "--members",
            "3",
            "--stalled",
            "1",
            "--chat-rate",
            "0.5",
        ])
        .chat_plan()
        .unwrap();
        assert_eq!(mine.rows.len(), 1);
        assert_eq!((mine.members[0], mine.stalled[0]), (3, 1));
        assert_eq!(mine.rate, RateRule::Fixed(0.5));
        let err = args(&["--chat", "--publish"]).chat_plan().unwrap_err();
        assert!(err.to_string().contains("--publish"), "{err}");
        let err = args(&["--chat", "--servers", "epoll-ref"]).chat_plan();
        assert!(err.unwrap_err().to_string().contains("unknown chat design"));
        let err = args(&["--chat", "--members", "1"]).chat_plan();
        assert!(err.unwrap_err().to_string().contains("2 to 20,000"));
    }

    fn cell(server: &str, runs: Vec<ChatRun>) -> ChatCell {
        ChatCell {
            server: server.into(),
            label: server.into(),
            members: 3,
            stalled: 0,
            rate: 1.0,
            expected_deliveries_per_sec: 6.0,
            status: String::new(),
            note: String::new(),
            runs,
            median: None,
            cpu_spread: None,
            p99_spread: None,
            x_threads: None,
            x_threads_rounds: Vec::new(),
        }
    }

    fn run(round: usize, delivered: u64, cpu: f64) -> ChatRun {
        ChatRun {
            round,
            said: 10,
            delivered,
            expected: 20,
            deliveries_per_sec: 100.0,
            p50_us: 10.0,
            p99_us: 50.0,
            p999_us: 60.0,
            max_us: 70.0,
            server_cpu_secs: 0.001,
            server_cpu_us_per_delivery: cpu,
            peak_rss_bytes: 1,
            peak_threads: 1,
            clean_exit: true,
            exit: "exit status: 0".into(),
            error: None,
        }
    }

    #[test]
    fn a_missing_delivery_a_failed_load_or_an_unclean_exit_is_not_ok() {
        let mut ok = cell("tokio", vec![run(1, 20, 2.0), run(2, 20, 2.0)]);
        summarize(&mut ok);
        assert_eq!(ok.status, "ok", "{}", ok.note);
        let mut short = cell("tokio", vec![run(1, 20, 2.0), run(2, 19, 2.0)]);
        summarize(&mut short);
        assert_eq!(short.status, "short");
        assert!(short.note.contains("39 of 40 deliveries"), "{}", short.note);
        let mut failed = run(1, 0, 0.0);
        failed.error = Some("member 7 of 10: no welcome line".into());
        let mut errors = cell("tokio", vec![failed]);
        summarize(&mut errors);
        assert_eq!(errors.status, "errors");
        assert!(errors.note.contains("member 7"), "{}", errors.note);
        let mut unclean = run(1, 20, 2.0);
        unclean.clean_exit = false;
        let mut errors = cell("tokio", vec![unclean]);
        summarize(&mut errors);
        assert_eq!(errors.status, "errors");
        assert!(errors.note.contains("unclean exit"), "{}", errors.note);
    }

    #[test]
    fn x_threads_divides_by_the_threads_row_of_the_same_round() {
        // The machine drifts: round 2 is twice as slow for everyone.
        let mut cells = vec![
            cell("threads", vec![run(1, 20, 4.0), run(2, 20, 8.0)]),
            cell("tokio", vec![run(1, 20, 2.0), run(2, 20, 4.0)]),
            cell("event-loop", vec![run(1, 20, 1.0), run(2, 20, 3.0)]),
        ];
        for c in cells.iter_mut() {
            summarize(c);
        }
        set_ratios(&mut cells);
        assert_eq!(cells[0].x_threads, Some(1.0));
        assert_eq!(cells[1].x_threads_rounds, [0.5, 0.5]);
        assert_eq!(cells[1].x_threads, Some(0.5));
        assert_eq!(cells[2].x_threads_rounds, [0.25, 0.375]);
        // Without a threads row there is nothing to divide by.
        let mut alone = vec![cell("tokio", vec![run(1, 20, 2.0)])];
        summarize(&mut alone[0]);
        set_ratios(&mut alone);
        assert_eq!(alone[0].x_threads, None);
    }

    #[test]
    fn echo_only_flags_are_refused_with_chat_and_chat_flags_need_it() {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: CompareArgs,
        }
        for bad in [
            &["--chat", "--conns", "10"][..],
            &["--chat", "--sizes", "64"],
            &["--chat", "--unix"],
            &["--members", "10"],
            &["--chat-rate", "1"],
        ] {
            let argv = std::iter::once("compare").chain(bad.iter().copied());
            assert!(
                <Wrapper as clap::Parser>::try_parse_from(argv).is_err(),
                "{bad:?}"
            );
        }
    }
}
