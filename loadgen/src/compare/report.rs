//! What a comparison writes: `compare.json`, `compare.md` (the tables and
//! the fairness rules) and the SVG charts.

use std::fmt::Write as _;

use anyhow::Result;
use serde::Serialize;

use super::cell::{Cell, RunFigures, ratio};
use super::plan::Plan;
use crate::chart::{Series, line_chart};
use crate::run::us;
use crate::sys::Environment;

/// Everything `compare.json` holds.
#[derive(Debug, Serialize)]
pub struct Comparison {
    pub environment: Environment,
    pub framing: String,
    pub duration_secs: f64,
    pub warmup_secs: f64,
    pub repeat: usize,
    /// Interleaved rounds (`--rounds`; 1 without).
    pub rounds: usize,
    /// The seed of the rounds' shuffled order (None with one round).
    pub seed: Option<u64>,
    pub pipeline: usize,
    pub servers: Vec<ServerRow>,
    pub cells: Vec<Cell>,
}

#[derive(Debug, Serialize)]
pub struct ServerRow {
    pub name: String,
    pub label: String,
    pub command: String,
    pub threads: String,
    pub available: bool,
    pub note: String,
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
pub(crate) fn write_outputs(plan: &Plan, c: &Comparison) -> Result<()> {
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
                    .filter_map(|row| {
                        let name = row.name();
                        let points: Vec<(f64, f64)> = cells
                            .iter()
                            .filter(|x| x.server == name)
                            .filter_map(|x| x.median.as_ref().map(|m| (x.conns as f64, f(m))))
                            .collect();
                        (!points.is_empty()).then(|| Series {
                            name: row.label(),
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

/// The environment table both comparisons (echo and chat) open with:
/// where the figures come from. `unit` names the load generator's runtime
/// threads ("thread", "worker"); no trailing blank line.
pub(super) fn environment_rows(e: &crate::sys::Environment, unit: &str) -> String {
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
    format!(
        "| environment | |\n|---|---|\n| CPUs (nproc) | {} × {} |\n| kernel | {} |\n| fd limit (soft, after raising) | {} |\n| server pinned to | {} |\n| loadgen pinned to | {} ({} runtime {unit}{}) |\n",
        e.nproc,
        e.cpu_model,
        e.kernel,
        e.fd_limit,
        pin(&e.server_cpus),
        pin(&e.loadgen_cpus),
        e.loadgen_threads,
        if e.loadgen_threads == 1 { "" } else { "s" },
    )
}

fn markdown(c: &Comparison, charts: &[(String, String)]) -> String {
    let e = &c.environment;
    let mut md = String::new();
    let _ = writeln!(md, "# Echo servers compared\n");
    let _ = writeln!(md, "Run on {} with `{}`.\n", e.date_utc, e.command);
    let _ = writeln!(
        md,
        "{}| python | {} |\n",
        environment_rows(e, "thread"),
        e.python
    );
    let runs = if c.rounds > 1 {
        format!(
            "{} interleaved rounds: every row ran once per round, the rows of each load in a fresh shuffled order (seed {}: `--rounds {} --seed {}` repeats the order), the reference in every round; figures are medians over the rounds{}",
            c.rounds,
            c.seed.unwrap_or_default(),
            c.rounds,
            c.seed.unwrap_or_default(),
            if c.repeat > 1 {
                format!(" ({} runs per cell per round)", c.repeat)
            } else {
                String::new()
            }
        )
    } else {
        format!(
            "{} run{} per cell (fresh server each run; figures are medians)",
            c.repeat,
            if c.repeat == 1 { "" } else { "s" },
        )
    };
    let _ = writeln!(
        md,
        "Load: `{}` framing, closed loop, {} frame{} in flight per connection, {:.1} s measured after {:.2} s of warm-up, {runs}. `work` is `--work` rounds per frame; `heavy` ≈ 128,000 hash steps per request (rounds = 128000 / (64 + size)).\n",
        c.framing,
        c.pipeline,
        if c.pipeline == 1 { "" } else { "s" },
        c.duration_secs,
        c.warmup_secs,
    );
    let _ = writeln!(
        md,
        "**Server CPU µs/req** (user + system time of the server process from /proc, over the whole cell, divided by verified echoes) is the headline: on a shared 2-core machine requests/s mostly measures the client. **x ref** divides it by the *practical limit* row's figure for the same load in this same run: `epoll-ref`, the smallest correct epoll echo (level-triggered, raw, no limits; `epoll_wait` + `read` + `write` per echo). ×1.20 means the design spends 20 % more CPU per echo than the bare syscalls do; the reference has no `--work`, so rows with work have no ratio.{}\n",
        if c.rounds > 1 {
            " With rounds, each round's ratio is taken against that round's reference, and **x ref** is the median of those ratios, followed by their interquartile range (the middle half of the rounds) and their whole range: a difference between two rows smaller than their ranges is noise."
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "| server | conns | size | work | req/s | p50 | p99 | server CPU µs/req | x ref | loadgen CPU µs/req | peak RSS | threads | errors | exit | notes |\n|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
    );
    for cell in &c.cells {
        let head = format!(
            "| {} | {} | {} | {} ",
            cell.label,
            cell.conns,
            size_label(cell.size),
            cell.work
        );
        let note = cell.note.replace('|', "\\|");
        match &cell.median {
            Some(m) => {
                let rps = match cell.rps_spread {
                    Some((lo, hi)) if c.repeat > 1 || c.rounds > 1 => {
                        format!("{:.0} ({:.0}–{:.0})", m.requests_per_sec, lo, hi)
                    }
                    _ => format!("{:.0}", m.requests_per_sec),
                };
                let cpu = match cell.cpu_spread {
                    Some((lo, hi)) if c.rounds > 1 || c.repeat > 1 => {
                        format!("**{:.1}** ({lo:.1}–{hi:.1})", m.server_cpu_us_per_request)
                    }
                    _ => format!("**{:.1}**", m.server_cpu_us_per_request),
                };
                let x_ref = match (cell.x_ref_iqr, cell.x_ref_spread) {
                    (Some((q1, q3)), Some((lo, hi))) if c.rounds > 1 => format!(
                        "{} (IQR {q1:.2}–{q3:.2}, range {lo:.2}–{hi:.2})",
                        ratio(cell.x_ref)
                    ),
                    _ => ratio(cell.x_ref),
                };
                let _ = writeln!(
                    md,
                    "{head}| {rps} | {} | {} | {cpu} | {x_ref} | {:.1} | {} | {} | {} | {} | {} |",
                    us(m.p50_us),
                    us(m.p99_us),
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
                    "{head}| {} | – | – | – | – | – | – | – | – | – | {note} |",
                    cell.status
                );
            }
        }
    }
    unix_table(&mut md, c);
    let _ = writeln!(
        md,
        "\n## Servers\n\n| name | command (plus `--addr 127.0.0.1:0`, or `unix:PATH`, and the common flags) | threads | available |\n|---|---|---|---|"
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

/// `compare --unix`: each server's TCP cell beside its Unix-socket cell.
fn unix_table(md: &mut String, c: &Comparison) {
    let pairs: Vec<(&Cell, &Cell)> = c
        .cells
        .iter()
        .filter(|u| u.transport == "unix")
        .filter_map(|u| {
            let tcp_name = u.server.strip_suffix("+unix")?;
            let t = c.cells.iter().find(|t| {
                t.server == tcp_name && t.conns == u.conns && t.size == u.size && t.work == u.work
            })?;
            Some((t, u))
        })
        .collect();
    if pairs.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n## Loopback TCP versus a Unix socket\n\nThe same server, the same load, over `127.0.0.1` and over `unix:PATH`: what is left after the Unix socket is the socket layer and the server itself; the difference is TCP/IP (segments, checksums, ACKs, the loopback device).\n\n| server | conns | size | work | TCP server CPU µs/req | unix server CPU µs/req | unix ÷ TCP | TCP p50 | unix p50 | notes |\n|---|---:|---:|---|---:|---:|---:|---:|---:|---|"
    );
    for (t, u) in pairs {
        let cpu = |x: &Cell| x.median.as_ref().map(|m| m.server_cpu_us_per_request);
        let p50 = |x: &Cell| x.median.as_ref().map_or("–".into(), |m| us(m.p50_us));
        let fig = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.1}"));
        let share = match (cpu(t), cpu(u)) {
            (Some(a), Some(b)) if a > 0.0 => format!("{:.2}", b / a),
            _ => "–".into(),
        };
        let note = [&t.note, &u.note]
            .iter()
            .filter(|n| !n.is_empty())
            .map(|n| n.replace('|', "\\|"))
            .collect::<Vec<_>>()
            .join("; ");
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {share} | {} | {} | {note} |",
            t.label,
            t.conns,
            size_label(t.size),
            t.work,
            fig(cpu(t)),
            fig(cpu(u)),
            p50(t),
            p50(u),
        );
    }
}

/// The rules every comparison keeps; printed with every result.
pub const FAIRNESS: &[&str] = &[
    "Every server runs the same framing, the same limits and the same `--work`, started the same way (a child process on 127.0.0.1:0), fresh for every cell. The reference (`epoll-ref`) takes only `--addr`: it has no limits or framing to set, which is the point of it.",
    "The reference row runs in every comparison (first, with one round; in every round, at a shuffled place, with `--rounds`) and `x ref` is always computed against the reference of the same run (of the same round, with `--rounds`), never against a published figure.",
    "Every server writes with write_all semantics (short writes are retried, never dropped); every echo is verified byte for byte by the load generator, and a cell with any wrong or missing echo is marked as such.",
    "The same client for everyone: one event-driven load generator (tokio, one task per connection), TCP_NODELAY on, the same payloads, the same warm-up.",
    "Thread counts are stated (table of servers and the `threads` column); a design that cannot serve a cell is shown as skipped with the reason, never dropped.",
    "The environment (CPUs, kernel, fd limit, pinning) is recorded with every result; figures from different machines are not compared.",
    "Server CPU per request (user + system, from /proc) is the headline, next to the load generator's own CPU per request.",
];
