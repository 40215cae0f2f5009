//! `loadgen compare`: every server of the workspace, the same load, one
//! table and a few charts.
//!
//! Run with:
//!
//! ```text
//! cargo build --release --workspace
//! target/release/loadgen compare --quick          # < 1 minute, for a class
//! target/release/loadgen compare --pin            # the full matrix, one pass (~15 minutes; estimate)
//! target/release/loadgen compare --pin --rounds 5 # five interleaved rounds: medians and spread
//! target/release/loadgen compare --pin --publish  # the published matrix, 5 rounds, refreshing results/
//! target/release/loadgen compare --servers async-tokio,python-asyncio --conns 1,100
//! target/release/loadgen compare --servers event-loop --extra 'before=/tmp/old/async-server server --model event-loop'
//! target/release/loadgen compare --chat --quick    # the chat room's three designs instead (compare/chat.rs)
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
//! each design costs. Every comparison runs the **reference**
//! (`epoll-ref`, the smallest correct epoll echo: three syscalls per echo,
//! labelled "practical limit"; first, or once per round with `--rounds`),
//! and every other row's CPU per request is
//! shown divided by the reference's in the same cell of the same run
//! (`x ref`): figures from one machine drift from day to day, the ratio
//! much less. Still, one pass moves a ratio by 10-15 %: `--rounds N` runs
//! every row once per round, the rows of each load in a shuffled order
//! (seeded, the seed printed), the reference in every round, and reports
//! the median of each row's per-round ratios with its spread. `--extra
//! NAME=COMMAND` adds a row from any command (a "before" build beside the
//! current one). `select-ref` and `poll-ref` are `epoll-ref`'s echo on
//! select(2) and poll(2). `--unix` adds a Unix-socket row for each server that listens
//! on `unix:PATH`, for "how much of an echo's cost is TCP". The server
//! table is data ([`SERVERS`]): add your own server there.
//!
//! Layout: this file runs the matrix; `compare/servers.rs` is the server
//! table, `compare/plan.rs` the flags and the plan they make,
//! `compare/cell.rs` one cell (start, load, stop, medians),
//! `compare/report.rs` the files written, `compare/chat.rs` the chat
//! matrix (`--chat`: the chat designs x members x stalled members).

use std::time::Duration;

use anyhow::{Context, Result};
use common::Framing;

mod cell;
pub mod chat;
mod plan;
mod report;
mod servers;

pub use cell::{Cell, RunFigures};
pub use plan::{CompareArgs, Work};
pub use report::{Comparison, FAIRNESS, ServerRow};
pub use servers::{Needs, Program, REFERENCE, SERVERS, ServerSpec};

use crate::sys::{Environment, pin_current_thread};
use cell::{progress_line, run_cell, run_line, set_ratio, set_round_ratios, summarize};
use plan::Plan;
use report::write_outputs;

/// `loadgen compare`. Ok(false) when a cell had errors or a server failed.
pub fn execute(args: CompareArgs) -> Result<bool> {
    if args.chat {
        return chat::execute(&args);
    }
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
    // Every cell, in table order (row, work, size, connections), each
    // with the reason it cannot run, if it cannot.
    let mut servers = Vec::new();
    let mut cells = Vec::new();
    let mut row_of = Vec::new();
    for (r, row) in plan.servers.iter().enumerate() {
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
        for &work in &plan.work {
            for &size in &plan.sizes {
                for &conns in &plan.conns {
                    let mut cell = Cell::new(row, conns, size, work);
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
                        None
                    };
                    if let Some(why) = skip {
                        cell.note = why;
                    } else {
                        // To run: "skipped" until it has a figure.
                        cell.status = String::new();
                    }
                    cells.push(cell);
                    row_of.push(r);
                }
            }
        }
    }
    let order = schedule(plan, &cells, &row_of);
    let runs = order.len() * plan.repeat;
    // 0.4 s to start, connect and stop: what a pinned full matrix took
    // on 2 cores beyond its measured and warm-up time, on average.
    let per_run = plan.duration + plan.warmup + Duration::from_millis(400);
    eprintln!(
        "{} cells to run{}, {} run{} in all: about {} ({:.1} s measured + {:.1} s warm-up + ~0.4 s to start and stop a server, per run)",
        order.len() / plan.rounds,
        if plan.rounds > 1 {
            format!(" x {} rounds", plan.rounds)
        } else {
            String::new()
        },
        runs,
        if runs == 1 { "" } else { "s" },
        about(per_run.as_secs_f64() * runs as f64),
        plan.duration.as_secs_f64(),
        plan.warmup.as_secs_f64(),
    );
    if plan.rounds > 1 {
        eprintln!(
            "{} interleaved rounds, the rows of each load shuffled with seed {} (--seed {} repeats this order)",
            plan.rounds, plan.seed, plan.seed
        );
    }
    // Why a row stopped: its server did not start once, so its later
    // cells are not tried (each try can cost the start-up timeout).
    let mut failed_to_start: Vec<Option<String>> = vec![None; plan.servers.len()];
    for (k, &(round, i)) in order.iter().enumerate() {
        let r = row_of[i];
        let row = &plan.servers[r];
        let cell = &mut cells[i];
        if let Some(e) = &failed_to_start[r] {
            if !cell.note.contains("did not start") {
                cell.note = format!("did not start: {e}");
            }
            if plan.rounds == 1 {
                cell.status = "failed".into();
            }
            continue;
        }
        for _ in 0..plan.repeat {
            match run_cell(plan, row, cell.conns, cell.size, cell.work_rounds) {
                Ok(mut fig) => {
                    fig.round = round;
                    if plan.rounds > 1 {
                        eprintln!(
                            "[{}/{}] round {round}/{}: {}",
                            k + 1,
                            order.len(),
                            plan.rounds,
                            run_line(cell, &fig)
                        );
                    }
                    cell.runs.push(fig);
                }
                Err(e) => {
                    failed_to_start[r] = Some(format!("{e:#}"));
                    cell.note = format!("did not start: {e:#}");
                    break;
                }
            }
        }
        if plan.rounds == 1 {
            // As each cell finishes: its medians, and its ratio to the
            // reference's cell of the same load (run first).
            let (done, rest) = cells.split_at_mut(i);
            let cell = &mut rest[0];
            summarize(cell);
            set_ratio(cell, done);
            eprintln!("[{}/{}] {}", k + 1, order.len(), progress_line(cell));
        }
    }
    if plan.rounds > 1 {
        for cell in cells.iter_mut().filter(|c| c.status.is_empty()) {
            summarize(cell);
        }
        set_round_ratios(&mut cells);
        eprintln!("medians over {} rounds:", plan.rounds);
        for cell in cells.iter().filter(|c| c.median.is_some()) {
            eprintln!("  {}", progress_line(cell));
        }
    }
    for cell in cells.iter_mut().filter(|c| c.status.is_empty()) {
        // Never run: its row failed before it came up.
        cell.status = "failed".into();
    }
    Ok(Comparison {
        environment,
        framing: plan.framing.to_string(),
        duration_secs: plan.duration.as_secs_f64(),
        warmup_secs: plan.warmup.as_secs_f64(),
        repeat: plan.repeat,
        rounds: plan.rounds,
        seed: (plan.rounds > 1).then_some(plan.seed),
        pipeline: plan.pipeline,
        servers,
        cells,
    })
}

/// `40 s`, `12 min`.
fn about(secs: f64) -> String {
    if secs < 120.0 {
        format!("{secs:.0} s")
    } else {
        format!("{:.0} min", (secs / 60.0).ceil())
    }
}

/// The order the cells run in, as (round, cell index). One round: the
/// table order, each row's whole matrix in turn (the reference's first).
/// Several: round by round, and within a round load by load, the rows of
/// each load in a fresh order from the seed, so the reference's cell and
/// every other row's cell of the same load run minutes apart at most,
/// none always first or always last.
fn schedule(plan: &Plan, cells: &[Cell], row_of: &[usize]) -> Vec<(usize, usize)> {
    let runnable = |i: &usize| cells[*i].status.is_empty();
    if plan.rounds == 1 {
        return (0..cells.len()).filter(runnable).map(|i| (1, i)).collect();
    }
    let mut rng = SplitMix64(plan.seed);
    let mut order = Vec::new();
    // The loads, in table order: the cells of the first row.
    let loads: Vec<(usize, usize, String)> = cells
        .iter()
        .zip(row_of)
        .filter(|(_, r)| **r == 0)
        .map(|(c, _)| (c.conns, c.size, c.work.clone()))
        .collect();
    for round in 1..=plan.rounds {
        for (conns, size, work) in &loads {
            let mut these: Vec<usize> = (0..cells.len())
                .filter(|&i| {
                    let c = &cells[i];
                    c.conns == *conns && c.size == *size && c.work == *work
                })
                .filter(runnable)
                .collect();
            rng.shuffle(&mut these);
            order.extend(these.into_iter().map(|i| (round, i)));
        }
    }
    order
}

/// A small seeded generator for the shuffle (SplitMix64: one add, two
/// multiply-xorshifts per number): the order only has to be unbiased and
/// repeatable from its seed, not secret.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fisher-Yates: every order equally likely.
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

fn names(f: &[Framing]) -> String {
    f.iter().map(|f| f.name()).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cell::quantile;

    fn plan(flags: &[&str]) -> Plan {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: CompareArgs,
        }
        let argv = std::iter::once("compare").chain(flags.iter().copied());
        <Wrapper as clap::Parser>::try_parse_from(argv)
            .map(|w| w.args)
            .unwrap_or_else(|e| panic!("{e}"))
            .plan()
            .unwrap()
    }

    /// The cells of a plan, all runnable, and their rows.
    fn cells(p: &Plan) -> (Vec<Cell>, Vec<usize>) {
        let mut cells = Vec::new();
        let mut rows = Vec::new();
        for (r, row) in p.servers.iter().enumerate() {
            for &work in &p.work {
                for &size in &p.sizes {
                    for &conns in &p.conns {
                        let mut c = Cell::new(row, conns, size, work);
                        c.status = String::new();
                        cells.push(c);
                        rows.push(r);
                    }
                }
            }
        }
        (cells, rows)
    }

    #[test]
    fn rounds_run_every_cell_once_per_round_in_a_seeded_shuffle() {
        let flags = [
            "--servers",
            "event-loop,async-tokio,poll-ref",
            "--conns",
            "1,100",
            "--sizes",
            "64",
            "--work",
            "0",
        ];
        let one = plan(&flags);
        let (c, rows) = cells(&one);
        // One round: the table order, as without --rounds.
        let order = schedule(&one, &c, &rows);
        assert_eq!(order, (0..c.len()).map(|i| (1, i)).collect::<Vec<_>>());

        let mut with = flags.to_vec();
        with.extend(["--rounds", "6", "--seed", "42"]);
        let p = plan(&with);
        let order = schedule(&p, &c, &rows);
        assert_eq!(order.len(), 6 * c.len());
        let mut first_of_load = std::collections::HashSet::new();
        for round in 1..=6 {
            let this: Vec<usize> = order
                .iter()
                .filter(|(r, _)| *r == round)
                .map(|(_, i)| *i)
                .collect();
            let mut sorted = this.clone();
            sorted.sort();
            assert_eq!(sorted, (0..c.len()).collect::<Vec<_>>(), "round {round}");
            // Load by load: the first load's 4 rows, then the second's.
            assert!(this[..4].iter().all(|&i| c[i].conns == 1), "{this:?}");
            first_of_load.insert(rows[this[0]]);
        }
        // Shuffled: over 6 rounds not always the same row first (the
        // reference among them).
        assert!(first_of_load.len() > 1, "{first_of_load:?}");
        // Repeatable from the seed, different with another.
        assert_eq!(schedule(&p, &c, &rows), order);
        with.pop();
        with.push("43");
        assert_ne!(schedule(&plan(&with), &c, &rows), order);
    }

    #[test]
    fn round_ratios_divide_by_the_same_rounds_reference() {
        let p = plan(&[
            "--servers",
            "event-loop",
            "--conns",
            "1",
            "--sizes",
            "64",
            "--work",
            "0",
        ]);
        let (mut c, _) = cells(&p);
        c.truncate(2); // work 0: the reference's cell and event-loop's
        let fig = |round: usize, cpu: f64| RunFigures {
            round,
            requests_per_sec: 1000.0,
            p50_us: 1.0,
            p99_us: 1.0,
            p999_us: 1.0,
            max_us: 1.0,
            verified: 100,
            starved_conns: 0,
            errors: 0,
            error_samples: Vec::new(),
            server_cpu_secs: 1.0,
            server_cpu_us_per_request: cpu,
            loadgen_cpu_us_per_request: 1.0,
            peak_rss_bytes: 1,
            peak_threads: 1,
            clean_exit: true,
            exit: "exit status: 0".into(),
        };
        // The machine drifts: round 2 is twice as slow for everyone.
        c[0].runs = vec![fig(1, 10.0), fig(2, 20.0), fig(3, 10.0), fig(4, 12.0)];
        c[1].runs = vec![fig(1, 12.0), fig(2, 24.0), fig(3, 13.0), fig(4, 18.0)];
        for cell in c.iter_mut() {
            cell::summarize(cell);
        }
        cell::set_round_ratios(&mut c);
        assert_eq!(c[0].x_ref_rounds, [1.0, 1.0, 1.0, 1.0]);
        assert_eq!(c[1].x_ref_rounds, [1.2, 1.2, 1.3, 1.5]);
        // Median of 1.2, 1.2, 1.3, 1.5: the mean of the middle two.
        assert!((c[1].x_ref.unwrap() - 1.25).abs() < 1e-9);
        assert_eq!(c[1].x_ref_spread, Some((1.2, 1.5)));
        let (q1, q3) = c[1].x_ref_iqr.unwrap();
        assert!(
            (q1 - 1.2).abs() < 1e-9 && (q3 - 1.35).abs() < 1e-9,
            "{q1} {q3}"
        );
        // Against the reference's median over all rounds instead (11.0),
        // round 2's drift would have made event-loop look ×2.18 once.
        assert_eq!(quantile(vec![3.0, 1.0, 2.0], 0.5), 2.0);
        assert_eq!(quantile(vec![1.0, 2.0, 3.0, 4.0], 0.25), 1.75);
    }
}
