//! `loadgen compare`: every server of the workspace, the same load, one
//! table and a few charts.
//!
//! Run with:
//!
//! ```text
//! cargo build --release --workspace
//! target/release/loadgen compare --quick          # < 1 minute, for a class
//! target/release/loadgen compare --pin            # the full matrix, ~25 minutes (13 rows; estimate)
//! target/release/loadgen compare --pin --publish  # the same, refreshing results/
//! target/release/loadgen compare --servers async-tokio,python-asyncio --conns 1,100
//! ```
//!
//! For every cell (server × connections × message size × work) it starts
//! the server as a child process on port 0 with identical flags, waits for
//! its `listening on` line, runs [`crate::run`] in-process against it while
//! a sampler thread watches the server's threads and memory in /proc, reads
//! the server's CPU time (user + system) before and after, stops it with
//! SIGTERM and checks that it exits with status 0. Results go to
//! `compare.md`, `compare.json` and SVG charts in `target/compare/`
//! (untracked) by default; `--publish` refreshes the repository's
//! `results/`, and only with the whole matrix (never `--quick`).
//!
//! What to watch: *server CPU µs per request* is the headline. On a 2-core
//! machine the load generator and the server share the CPUs, so requests/s
//! mostly tells how fast the client could go; CPU per request tells what
//! each design costs. Every comparison runs the **reference** first
//! (`epoll-ref`, the smallest correct epoll echo: three syscalls per echo,
//! labelled "practical limit"), and every other row's CPU per request is
//! shown divided by the reference's in the same cell of the same run
//! (`x ref`): figures from one machine drift from day to day, the ratio
//! much less. `--unix` adds a Unix-socket row for each server that listens
//! on `unix:PATH`, for "how much of an echo's cost is TCP". The server
//! table is data ([`SERVERS`]): add your own server there.
//!
//! Layout: this file runs the matrix; `compare/servers.rs` is the server
//! table, `compare/plan.rs` the flags and the plan they make,
//! `compare/cell.rs` one cell (start, load, stop, medians),
//! `compare/report.rs` the files written.

use anyhow::{Context, Result};
use common::Framing;

mod cell;
mod plan;
mod report;
mod servers;

pub use cell::{Cell, RunFigures};
pub use plan::{CompareArgs, Work};
pub use report::{Comparison, FAIRNESS, ServerRow};
pub use servers::{Needs, Program, REFERENCE, SERVERS, ServerSpec};

use crate::sys::{Environment, pin_current_thread};
use cell::{progress_line, run_cell, set_ratio, summarize};
use plan::Plan;
use report::write_outputs;

/// `loadgen compare`. Ok(false) when a cell had errors or a server failed.
pub fn execute(args: CompareArgs) -> Result<bool> {
    if args.list {
        // writeln! on a locked stdout: a closed pipe (`| head -1`) is an
        // error `main` turns into a quiet exit 0, not a panic.
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        for s in SERVERS {
            let cmd = s
                .availability(false)
                .map(|c| c.1)
                .unwrap_or_else(|u| format!("(unavailable: {})", u.why));
            writeln!(out, "{:<24} {cmd}", s.name)?;
        }
        out.flush()?;
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
    for row in &plan.servers {
        let spec = &row.spec;
        let available = spec.availability(row.unix);
        servers.push(ServerRow {
            name: row.name(),
            label: row.label(),
            command: available.as_ref().map(|c| c.1.clone()).unwrap_or_default(),
            threads: spec.threads.into(),
            available: available.is_ok(),
            note: available
                .as_ref()
                .err()
                .map(|u| u.why.clone())
                .unwrap_or_default(),
        });
        let mut failed_to_start: Option<String> = None;
        for &work in &plan.work {
            for &size in &plan.sizes {
                for &conns in &plan.conns {
                    n += 1;
                    let mut cell = Cell {
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
                    };
                    let skip = if let Err(u) = &available {
                        if u.failed {
                            cell.status = "failed".into();
                        }
                        Some(u.why.clone())
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
                        if failed_to_start.is_some() && available.is_ok() {
                            cell.status = "failed".into();
                        }
                        cells.push(cell);
                        continue;
                    }
                    for _ in 0..plan.repeat {
                        match run_cell(plan, row, conns, size, cell.work_rounds) {
                            Ok(fig) => cell.runs.push(fig),
                            Err(e) => {
                                failed_to_start = Some(format!("{e:#}"));
                                cell.note = format!("did not start: {e:#}");
                                break;
                            }
                        }
                    }
                    summarize(&mut cell);
                    set_ratio(&mut cell, &cells);
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
