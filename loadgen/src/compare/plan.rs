//! The flags of `loadgen compare` and the plan they make: which servers,
//! which matrix (connections x sizes x work), how long, pinned where, and
//! where the results go.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::Framing;
use common::cli::{parse_duration, parse_size};
use serde::Serialize;

use super::servers::{SERVERS, ServerSpec, extra_spec};

/// One row of the comparison: a server, over TCP or (`--unix`) over a
/// Unix domain socket.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) spec: ServerSpec,
    pub(crate) unix: bool,
}

impl Row {
    /// The row's key in cells and JSON: `event-loop`, `event-loop+unix`.
    pub(crate) fn name(&self) -> String {
        if self.unix {
            format!("{}+unix", self.spec.name)
        } else {
            self.spec.name.to_string()
        }
    }

    /// What tables and charts show.
    pub(crate) fn label(&self) -> String {
        if self.unix {
            format!("{} (unix socket)", self.spec.label())
        } else {
            self.spec.label()
        }
    }
}
use crate::sys::parse_cpus;

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

    pub fn label(self) -> String {
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
    /// work, 0.75 s per cell (about a minute).
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

    /// Measured time per cell [default: 2s; quick: 750ms].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// Warm-up per cell, not measured [default: 500ms; quick: 200ms].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub warmup: Option<Duration>,

    /// Run every cell this many times (a fresh server each time) and
    /// report the median and the spread.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub repeat: usize,

    /// Interleaved rounds: every row runs once per round, the rows of
    /// each load in a fresh shuffled order, the reference in every round;
    /// each row's `x ref` is the median over rounds of its ratio to that
    /// round's reference, shown with its spread (min–max, interquartile
    /// range). Drift of the machine over time then hits every row alike
    /// [default: 1; with --publish: 5, the least it accepts].
    #[arg(long, value_name = "N")]
    pub rounds: Option<usize>,

    /// The seed of the rounds' shuffled order (printed at the start of
    /// every run with --rounds; give it back to repeat an order).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// Add a row started by COMMAND (words split at spaces, no shell),
    /// say a "before" build beside the current one:
    /// `--extra 'before=/tmp/old/async-server server --model event-loop'`.
    /// Without `{addr}` in COMMAND it is treated like a workspace server:
    /// `--addr 127.0.0.1:0` and the common flags (framing, limits,
    /// `--work`) are appended. With `{addr}` (`--extra
    /// 'old-ref=/tmp/epoll-ref --addr {addr}'`) it gets nothing else, like
    /// the reference rows, and runs raw framing without work. Either way
    /// it must print `listening on ADDR` on stdout. Repeatable.
    #[arg(long, value_name = "NAME=COMMAND")]
    pub extra: Vec<String>,

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

    /// Directory for compare.md, compare.json and the SVG charts
    /// [default: target/compare, untracked; with --publish: results/].
    #[arg(long, value_name = "DIR", conflicts_with = "publish")]
    pub out: Option<PathBuf>,

    /// Refresh the published results (the repository's `results/`, which
    /// the README links). Always the whole published matrix (every row;
    /// 1, 100, 1,000 and 10,000 connections; 64 B and 16 KiB; work 0 and
    /// heavy; 1 s per run) over at least 5 interleaved rounds: refused
    /// with --quick, --servers, --conns, --sizes, --work or --extra, so a
    /// class demo can never overwrite the full table with a part of it.
    #[arg(long)]
    pub publish: bool,

    /// Show the servers' logs (stderr) instead of discarding them.
    #[arg(long)]
    pub verbose: bool,

    /// Print the table of servers and exit.
    #[arg(long)]
    pub list: bool,

    /// Leave out the reference row (`epoll-ref`, the practical limit),
    /// which is otherwise always run first, so that every row has an
    /// `x ref` ratio measured in the same run.
    #[arg(long)]
    pub no_reference: bool,

    /// Loopback TCP versus a Unix domain socket: every server that can
    /// listen on `unix:PATH` (the event loop, tokio) gets a second row over
    /// a Unix socket, and compare.md a table of the two side by side.
    #[arg(long)]
    pub unix: bool,

    /// The chat matrix instead of the echo matrix: rows are the chat
    /// room's designs (`chat server --model threads|tokio|event-loop`;
    /// `--servers` picks among them), cells are --members x --stalled,
    /// each run is `loadgen chat` against a fresh server. Output goes to
    /// target/compare/chat/ unless --out; --duration defaults to 5s
    /// (quick: 1s, with 10 and 100 members). Not with --publish.
    #[arg(
        long,
        conflicts_with_all = [
            "conns", "sizes", "work", "framing", "warmup", "pipeline",
            "timeout", "threads", "over_limit", "no_reference", "unix",
        ]
    )]
    pub chat: bool,

    /// With --chat: room sizes [default: 10,100,1000; quick: 10,100].
    #[arg(long, value_delimiter = ',', value_name = "LIST", requires = "chat")]
    pub members: Vec<u32>,

    /// With --chat: members that join and never read, per cell
    /// [default: 0,1].
    #[arg(long, value_delimiter = ',', value_name = "LIST", requires = "chat")]
    pub stalled: Vec<u32>,

    /// With --chat: every member says R lines a second (fractions
    /// allowed: 0.1), whatever the room size. Without it the rate follows
    /// --chat-deliveries.
    #[arg(long, value_name = "R", requires = "chat", value_parser = crate::chat::load::parse_rate)]
    pub chat_rate: Option<f64>,

    /// With --chat and no --chat-rate: each cell's rate is
    /// N / (M·(M-1)) lines per member per second, so every room size is
    /// asked for about N deliveries a second (1,000 members: 0.05 lines a
    /// second each) [default: 50000].
    #[arg(
        long,
        value_name = "N",
        requires = "chat",
        conflicts_with = "chat_rate"
    )]
    pub chat_deliveries: Option<f64>,
}

/// The settings of one comparison, after defaults.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The reference first (unless --no-reference), then the servers
    /// asked for, each followed by its Unix-socket row with --unix.
    pub(crate) servers: Vec<Row>,
    pub(crate) conns: Vec<usize>,
    pub(crate) sizes: Vec<usize>,
    pub(crate) work: Vec<Work>,
    pub(crate) framing: Framing,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) repeat: usize,
    /// Interleaved rounds (1: every row's matrix in turn, as listed).
    pub(crate) rounds: usize,
    /// The seed of the rounds' shuffle.
    pub(crate) seed: u64,
    pub(crate) pipeline: usize,
    pub(crate) timeout: Duration,
    pub(crate) server_cpus: Option<Vec<usize>>,
    pub(crate) loadgen_cpus: Option<Vec<usize>>,
    pub(crate) threads: usize,
    pub(crate) verbose: bool,
    pub(crate) over_limit: bool,
    pub(crate) out: PathBuf,
}

impl CompareArgs {
    /// (server CPUs, load generator CPUs): `--server-cpus` and
    /// `--loadgen-cpus` as given, else `--pin`'s CPU 0 and CPU 1 on a
    /// machine with two or more, else not pinned.
    pub(crate) fn pinning(&self) -> (Option<Vec<usize>>, Option<Vec<usize>>) {
        let two = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
        match (self.pin && two, &self.server_cpus, &self.loadgen_cpus) {
            (_, Some(s), l) => (Some(s.clone()), l.clone()),
            (_, None, Some(l)) => (None, Some(l.clone())),
            (true, None, None) => (Some(vec![0]), Some(vec![1])),
            (false, None, None) => (None, None),
        }
    }

    pub(crate) fn plan(&self) -> Result<Plan> {
        if self.publish {
            let subsets: Vec<&str> = [
                (self.quick, "--quick"),
                (!self.servers.is_empty(), "--servers"),
                (!self.conns.is_empty(), "--conns"),
                (!self.sizes.is_empty(), "--sizes"),
                (!self.work.is_empty(), "--work"),
                (self.no_reference, "--no-reference"),
                (self.unix, "--unix"),
                (!self.extra.is_empty(), "--extra"),
            ]
            .into_iter()
            .filter_map(|(given, flag)| given.then_some(flag))
            .collect();
            if !subsets.is_empty() {
                bail!(
                    "--publish writes the whole matrix results/ describes; drop {} (or leave out --publish: the run then goes to {})",
                    subsets.join(", "),
                    scratch_dir().display()
                );
            }
            if let Some(n) = self.rounds.filter(|&n| n < MIN_PUBLISHED_ROUNDS) {
                bail!(
                    "--publish writes medians over at least {MIN_PUBLISHED_ROUNDS} rounds (a single pass moves a ratio by 10-15 %); --rounds {n} is too few"
                );
            }
        }
        let specs: Vec<ServerSpec> = if self.servers.is_empty() {
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
        // The reference goes first, always (its figures are the divisor
        // of every other row's `x ref`), unless --no-reference.
        let mut ordered: Vec<ServerSpec> = Vec::new();
        if !self.no_reference
            && let Some(r) = SERVERS.iter().find(|s| s.reference)
        {
            ordered.push(*r);
        }
        for s in specs {
            let listed = ordered.iter().any(|o| o.name == s.name);
            let left_out = self.no_reference && s.reference;
            if !listed && !left_out {
                ordered.push(s);
            }
        }
        for e in &self.extra {
            let spec = extra_spec(e).map_err(anyhow::Error::msg)?;
            if ordered.iter().any(|o| o.name == spec.name) {
                bail!("--extra: the name `{}` is given twice", spec.name);
            }
            ordered.push(spec);
        }
        let mut servers = Vec::new();
        for spec in ordered {
            servers.push(Row { spec, unix: false });
            if self.unix && spec.unix {
                servers.push(Row { spec, unix: true });
            }
        }
        let or = |v: &Vec<usize>, quick: &[usize], full: &[usize]| {
            if !v.is_empty() {
                v.clone()
            } else if self.quick {
                quick.to_vec()
            } else {
                full.to_vec()
            }
        };
        let (server_cpus, loadgen_cpus) = self.pinning();
        Ok(Plan {
            servers,
            conns: if self.publish {
                PUBLISHED_CONNS.to_vec()
            } else {
                or(&self.conns, &[1, 100, 1000], &[1, 10, 100, 1000, 10_000])
            },
            sizes: or(&self.sizes, &[64], &[64, 16 * 1024]),
            work: if !self.work.is_empty() {
                self.work.clone()
            } else if self.quick {
                vec![Work::Rounds(0)]
            } else {
                vec![Work::Rounds(0), Work::Heavy]
            },
            framing: self.framing,
            // Quick: 0.75 s + 0.2 s per cell keeps ~35 cells under a minute.
            // Published: 1 s per run, since each cell runs once per round.
            duration: self.duration.unwrap_or(if self.quick {
                Duration::from_millis(750)
            } else if self.publish {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(2)
            }),
            warmup: self.warmup.unwrap_or(if self.quick {
                Duration::from_millis(200)
            } else if self.publish {
                Duration::from_millis(300)
            } else {
                Duration::from_millis(500)
            }),
            repeat: self.repeat.max(1),
            rounds: self
                .rounds
                .unwrap_or(if self.publish {
                    MIN_PUBLISHED_ROUNDS
                } else {
                    1
                })
                .max(1),
            seed: self.seed.unwrap_or_else(time_seed),
            over_limit: self.over_limit,
            pipeline: self.pipeline.max(1),
            timeout: self.timeout,
            server_cpus,
            loadgen_cpus,
            threads: self.threads.max(1),
            verbose: self.verbose,
            out: match (&self.out, self.publish) {
                (Some(dir), _) => dir.clone(),
                (None, true) => results_dir(),
                (None, false) => scratch_dir(),
            },
        })
    }
}

/// The published results are medians over at least this many rounds.
pub(crate) const MIN_PUBLISHED_ROUNDS: usize = 5;

/// The connection counts of the published matrix: the full matrix's
/// without 10 (between 1 and 100 it says little), so that five rounds of
/// it fit in about half an hour on 2 cores.
pub(crate) const PUBLISHED_CONNS: [usize; 4] = [1, 100, 1000, 10_000];

/// A seed for the rounds' shuffle when none is given: the clock's
/// nanoseconds (printed, so any order can be repeated with --seed).
pub(crate) fn time_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// Where an unpublished comparison goes: `compare/` in the target
/// directory `loadgen` was built into (`target/release/loadgen` ->
/// `target/compare`), else `target/compare` here. Untracked by git.
pub(crate) fn scratch_dir() -> PathBuf {
    let target = std::env::current_exe().ok().and_then(|exe| {
        let profile = exe.parent()?;
        let target = profile.parent()?;
        (target.file_name()? == "target").then(|| target.to_path_buf())
    });
    target
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("compare")
}

/// The published results: `results/` of the workspace (here, if this is
/// the workspace root; else next to this crate's sources).
pub(crate) fn results_dir() -> PathBuf {
    let here = PathBuf::from("results");
    if here.is_dir() {
        return here;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../results")
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
    fn unpublished_runs_go_under_target_and_publish_is_the_whole_matrix() {
        let quick = args(&["--quick"]).plan().unwrap();
        assert!(quick.out.ends_with("target/compare"), "{:?}", quick.out);
        let full = args(&["--publish"]).plan().unwrap();
        assert!(full.out.ends_with("results"), "{:?}", full.out);
        assert_eq!(full.servers.len(), SERVERS.len());
        assert!(full.servers[0].spec.reference, "the reference runs first");
        // Asked for two servers: the reference comes first anyway...
        let two = args(&["--servers", "event-loop,async-tokio", "--unix"])
            .plan()
            .unwrap();
        let names: Vec<String> = two.servers.iter().map(Row::name).collect();
        assert_eq!(
            names,
            [
                "epoll-ref",
                "event-loop",
                "event-loop+unix",
                "async-tokio",
                "async-tokio+unix"
            ]
        );
        assert_eq!(two.servers[2].label(), "event-loop (unix socket)");
        assert_eq!(two.servers[0].label(), "practical limit (epoll-ref)");
        // ...unless left out; naming it is the same as not naming it.
        let none = args(&["--servers", "event-loop,epoll-ref", "--no-reference"])
            .plan()
            .unwrap();
        let names: Vec<String> = none.servers.iter().map(Row::name).collect();
        assert_eq!(names, ["event-loop"]);
        let named = args(&["--servers", "event-loop,epoll-ref"]).plan().unwrap();
        let names: Vec<String> = named.servers.iter().map(Row::name).collect();
        assert_eq!(names, ["epoll-ref", "event-loop"]);
        assert_eq!(full.conns, PUBLISHED_CONNS);
        assert_eq!(full.rounds, MIN_PUBLISHED_ROUNDS);
        let default = args(&[]).plan().unwrap();
        assert_eq!(default.conns, [1, 10, 100, 1000, 10_000]);
        assert_eq!(
            (default.rounds, default.duration),
            (1, Duration::from_secs(2))
        );
        let err = args(&["--publish", "--rounds", "3"])
            .plan()
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 5 rounds"), "{err}");
        for subset in [
            &["--publish", "--quick"][..],
            &["--publish", "--servers", "tcp-echo"],
            &["--publish", "--conns", "1"],
            &["--publish", "--extra", "x=/bin/true"],
        ] {
            let err = args(subset).plan().unwrap_err().to_string();
            assert!(err.contains("--publish writes the whole matrix"), "{err}");
            assert!(err.contains(subset[1]), "{err}");
        }
        // Extra rows come after the asked-for ones, with their own names.
        let extra = args(&[
            "--servers",
            "event-loop",
            "--extra",
            "before=/tmp/old/async-server server --model event-loop",
            "--extra",
            "old-ref=/tmp/old/epoll-ref --addr {addr}",
        ])
        .plan()
        .unwrap();
        let names: Vec<String> = extra.servers.iter().map(Row::name).collect();
        assert_eq!(names, ["epoll-ref", "event-loop", "before", "old-ref"]);
        assert!(extra.servers[2].spec.program.takes_common_flags());
        assert!(extra.servers[3].spec.program.names_its_addr());
        assert!(!extra.servers[3].spec.work);
        for bad in ["noequals", "=cmd", "epoll-ref=/bin/x", "a b=/bin/x", "x="] {
            let err = args(&["--extra", bad]).plan().unwrap_err().to_string();
            assert!(err.contains("--extra"), "{bad}: {err}");
        }
        let twice = args(&["--extra", "a=/bin/x", "--extra", "a=/bin/y"]).plan();
        assert!(twice.unwrap_err().to_string().contains("given twice"));
        let mine = args(&["--quick", "--out", "/tmp/x"]).plan().unwrap();
        assert_eq!(mine.out, PathBuf::from("/tmp/x"));
    }
}
