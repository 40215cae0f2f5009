//! `loadgen run`: drive one server, verify every echo, measure throughput
//! and latency.
//!
//! Run with (two terminals):
//!
//! ```text
//! cargo run --release -p async-server -- server                  # terminal 1, port 7004
//! cargo run --release -p loadgen -- run --conns 100 --duration 5s # terminal 2
//! cargo run --release -p loadgen -- run --rate 20000 --conns 50 --json
//! ```
//!
//! What to watch: requests/s and the latency percentiles; then add
//! `--pipeline 8` (more frames in flight per connection: more throughput,
//! more latency), `--rate` (open loop: a server that stalls shows it in p99),
//! `--churn 10` (a new connection every 10 requests: the cost of `accept()`
//! and, with `--tls`, of the handshake).
//!
//! How it works: one tokio task per connection, all on ONE thread by default
//! (`--threads 1`). An event-driven client costs a few microseconds of CPU
//! per request, where a thread per connection would cost a context switch
//! per request and 10,000 stacks; on a 2-core machine every microsecond the
//! client burns is taken from the server it measures. The engine itself is
//! in [`crate::drive`]; this file holds the flags, the configuration and the
//! report.

use std::fmt;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::Framing;
use common::cli::{parse_duration, parse_size};
use serde::Serialize;

// Latency and its formatting live in `latency.rs`, shared with `histlog`
// (which `run` calls: keeping them here made the two modules import each other).
pub use crate::latency::{Latency, us};

use crate::child::ProcStats;
use crate::drive::{self, Shared};
// The engine's configuration lives with the engine; re-exported here
// because `run` is where callers look for it.
pub use crate::drive::{Proto, RunConfig, Stop};

/// Arguments of `loadgen run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Server address: `IPV4:PORT`, `[IPV6]:PORT` or `HOSTNAME:PORT` (parsed by
    /// `common::cli::parse_host_port`: a malformed one is refused, never
    /// looked up), or `unix:PATH` for a Unix domain stream socket.
    #[arg(long, value_name = "HOST:PORT|unix:PATH", default_value = "127.0.0.1:7004", value_parser = parse_target)]
    pub addr: Target,

    /// Transport: `tcp` or `udp` (one datagram per request).
    #[arg(long, value_enum, default_value_t = Proto::Tcp)]
    pub proto: Proto,

    /// Framing the server speaks: `line`, `length` or `raw` (raw: the echo
    /// is verified by reading back exactly as many bytes as were sent).
    #[arg(long, value_enum, default_value_t = Framing::Line)]
    pub framing: Framing,

    /// Concurrent connections (up to 10,000; the fd limit is raised).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub conns: usize,

    /// Payload bytes per request (the frame adds 4 bytes or a `\n`).
    #[arg(long, value_name = "BYTES", default_value = "64", value_parser = parse_size)]
    pub size: usize,

    /// How long to send after the warm-up (`10s`, `500ms`).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration, conflicts_with = "requests")]
    pub duration: Duration,

    /// Send exactly this many requests in all (spread over the connections)
    /// instead of running for `--duration`.
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,

    /// Frames in flight per connection (1 = send, wait for the echo, repeat).
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub pipeline: usize,

    /// Open loop: schedule this many requests per second in all, and measure
    /// latency from each request's *intended* send time.
    #[arg(long, value_name = "REQ_PER_SEC")]
    pub rate: Option<f64>,

    /// Close and reopen each connection every K requests (measures accept
    /// and handshake cost).
    #[arg(long, value_name = "K")]
    pub churn: Option<u64>,

    /// Run this long before measuring; its echoes are verified, not counted.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Give up on an owed echo (or a connect) after this long.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Threads of the client's runtime. 1 (the default) keeps the load
    /// generator on one core, leaving the others to the server.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,

    /// TLS: `--tls --ca FILE [--server-name NAME]`.
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,

    /// Seed of the payload generator (payloads differ per request anyway).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,

    /// Print the report as JSON on stdout instead of the text summary.
    #[arg(long)]
    pub json: bool,

    /// Also write the latency as an HdrHistogram interval log to FILE (the
    /// standard format HdrHistogram's tools read), so the runs of several
    /// load hosts can be merged exactly: `loadgen merge A.hlog B.hlog`.
    #[arg(long, value_name = "FILE")]
    pub hist_log: Option<std::path::PathBuf>,

    /// One interval of --hist-log per this long.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub hist_interval: Duration,
}

/// What `--addr` names: a TCP/UDP host and port, or a Unix socket file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Inet(common::cli::HostPort),
    /// `unix:PATH`: a stream socket in the file system (AF_UNIX). The same
    /// echo, without TCP/IP: no checksums, no segments, no ACKs, no
    /// loopback device; what is left is the cost of the socket layer.
    Unix(std::path::PathBuf),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Inet(h) => write!(f, "{h}"),
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// `unix:PATH` (a non-empty path), else whatever
/// `common::cli::parse_host_port` accepts.
pub fn parse_target(s: &str) -> Result<Target, String> {
    match s.strip_prefix("unix:") {
        Some("") => Err("`unix:` needs a path: unix:/tmp/echo.sock".into()),
        Some(path) => Ok(Target::Unix(path.into())),
        None => common::cli::parse_host_port(s).map(Target::Inet),
    }
}

/// What went wrong, by kind. Any non-zero count fails the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Errors {
    /// Echoes that arrived but differ from what was sent (wrong bytes, wrong
    /// length, another request's payload, extra bytes).
    pub wrong: u64,
    /// Requests sent whose echo never came (connection closed, reset or
    /// timed out first; UDP datagrams lost).
    pub missing: u64,
    /// Connections that failed to open (refused, timed out, TLS failure).
    pub connect_failures: u64,
    /// Connections the server closed while echoes were still owed.
    pub early_close: u64,
    /// Connections that waited `--timeout` for an owed echo.
    pub timeouts: u64,
    /// Connections ended by an I/O error (reset, broken pipe, ...).
    pub io: u64,
    /// Connections ended by a framing error (frame too long, bad prefix).
    pub protocol: u64,
}

impl Errors {
    /// Requests that did not get their exact echo, plus failed connects.
    pub fn total(&self) -> u64 {
        self.wrong + self.missing + self.connect_failures
    }
}

/// The result of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub addr: String,
    pub proto: Proto,
    pub framing: String,
    pub tls: bool,
    pub conns: usize,
    pub size: usize,
    pub pipeline: usize,
    pub rate: Option<f64>,
    pub churn: Option<u64>,
    pub threads: usize,
    pub warmup_secs: f64,
    /// From the end of the warm-up to the last measured echo.
    pub measured_secs: f64,
    /// Wall-clock time of the whole run, connects included.
    pub elapsed_secs: f64,
    /// Requests written.
    pub sent: u64,
    /// Echoes received and verified byte for byte (warm-up included).
    pub verified: u64,
    /// Verified echoes that arrived after the warm-up (their latency counts
    /// from when they were sent, even if that was during the warm-up, so a
    /// request left waiting since the start is not hidden).
    pub measured: u64,
    pub requests_per_sec: f64,
    /// Payload megabytes (10^6) per second, one direction.
    pub mb_per_sec: f64,
    pub latency: Latency,
    /// Time to connect (and handshake, with TLS).
    pub connect: Latency,
    pub connects: u64,
    /// Connections that completed no echo after the warm-up: a server that
    /// serves some clients and lets the others wait shows up here.
    pub starved_conns: u64,
    pub errors: Errors,
    /// The first few errors, in words.
    pub error_samples: Vec<String>,
    /// CPU time (user + system) the load generator's process used.
    pub loadgen_cpu_secs: f64,
    pub loadgen_cpu_us_per_request: f64,
    /// The latency histogram itself (nanoseconds), for callers that merge
    /// or compare runs; not in the JSON (`--hist-log` writes it out).
    #[serde(skip)]
    pub latency_histogram: Option<hdrhistogram::Histogram<u64>>,
}

impl Report {
    /// True when every request got its exact echo and every connect worked.
    pub fn ok(&self) -> bool {
        self.errors.total() == 0 && self.errors.early_close == 0 && self.verified == self.sent
    }

    /// For a run in which not one echo was verified: the likely cause, in
    /// one or two lines, instead of an all-zero report and a list of
    /// identical errors. None for a run that got at least one echo (its
    /// report says what went wrong, case by case).
    pub fn diagnosis(&self) -> Option<String> {
        if self.verified > 0 {
            return None;
        }
        let e = &self.errors;
        let first = self.error_samples.first().map_or("", String::as_str);
        if self.connects == 0 && e.connect_failures > 0 {
            if first.contains("refused") {
                return Some(format!(
                    "nothing listening at {}: every connect was refused (is the server running, on this port?)",
                    self.addr
                ));
            }
            return Some(format!(
                "no connection to {} could be opened ({} failed); first: {first}",
                self.addr, e.connect_failures
            ));
        }
        if self.proto == Proto::Udp {
            return (self.sent > 0).then(|| {
                format!(
                    "no datagram came back from {} ({} sent): is a UDP echo server listening there?",
                    self.addr, self.sent
                )
            });
        }
        if e.early_close + e.timeouts + e.protocol + e.wrong + e.io > 0 {
            let how = if e.early_close > 0 {
                "the server closed the connection before the first echo"
            } else if e.timeouts > 0 {
                "no answer to the first request"
            } else if e.protocol + e.wrong > 0 {
                "what came back is not the echo sent"
            } else {
                "the connection failed before the first echo"
            };
            let tls = if self.tls {
                " (or the server does not speak TLS)"
            } else {
                ""
            };
            return Some(format!(
                "{how} at {}: probably a framing mismatch{tls}: loadgen used --framing {}; start the server with the same --framing, or pass the server's to loadgen\n  first error: {first}",
                self.addr, self.framing
            ));
        }
        None
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.rate {
            Some(r) => format!("open loop at {r:.0} req/s"),
            None => "closed loop".to_string(),
        };
        writeln!(
            f,
            "target     {} {}{} framing={} conns={} size={} B pipeline={} {}{}",
            self.addr,
            match self.proto {
                _ if self.addr.starts_with("unix:") => "unix stream",
                Proto::Tcp => "tcp",
                Proto::Udp => "udp",
            },
            if self.tls { "+tls" } else { "" },
            self.framing,
            self.conns,
            self.size,
            self.pipeline,
            mode,
            self.churn
                .map(|k| format!(" churn every {k}"))
                .unwrap_or_default(),
        )?;
        writeln!(
            f,
            "requests   {} sent, {} verified, {} measured over {:.2}s (after {:.2}s warm-up)",
            self.sent, self.verified, self.measured, self.measured_secs, self.warmup_secs
        )?;
        writeln!(
            f,
            "throughput {:.0} req/s, {:.2} MB/s each way",
            self.requests_per_sec, self.mb_per_sec
        )?;
        let l = &self.latency;
        writeln!(
            f,
            "latency    p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {})",
            us(l.p50_us),
            us(l.p90_us),
            us(l.p99_us),
            us(l.p999_us),
            us(l.max_us),
            us(l.mean_us)
        )?;
        let c = &self.connect;
        writeln!(
            f,
            "connects   {} (p50 {}, p99 {}, max {}); {} of {} connections got no echo after the warm-up",
            self.connects,
            us(c.p50_us),
            us(c.p99_us),
            us(c.max_us),
            self.starved_conns,
            self.conns
        )?;
        writeln!(
            f,
            "loadgen    {:.2}s CPU, {:.1} µs per request ({} thread{})",
            self.loadgen_cpu_secs,
            self.loadgen_cpu_us_per_request,
            self.threads,
            if self.threads == 1 { "" } else { "s" }
        )?;
        let e = &self.errors;
        write!(
            f,
            "errors     {} (wrong {}, missing {}, connect failures {}; connections ended by: early close {}, timeout {}, I/O {}, protocol {})",
            e.total(),
            e.wrong,
            e.missing,
            e.connect_failures,
            e.early_close,
            e.timeouts,
            e.io,
            e.protocol
        )?;
        for s in &self.error_samples {
            write!(f, "\n  - {s}")?;
        }
        Ok(())
    }
}

impl RunArgs {
    pub fn to_config(&self) -> Result<RunConfig> {
        let (addr, unix) = match &self.addr {
            Target::Inet(h) => (
                h.resolve()
                    .with_context(|| format!("--addr {h}: cannot resolve"))?,
                None,
            ),
            Target::Unix(p) => (SocketAddr::from(([0, 0, 0, 0], 0)), Some(p.clone())),
        };
        let tls = self.tls.client()?;
        Ok(RunConfig {
            addr,
            unix,
            proto: self.proto,
            framing: self.framing,
            conns: self.conns,
            size: self.size,
            stop: match self.requests {
                Some(n) => Stop::Requests(n),
                None => Stop::Duration(self.duration),
            },
            pipeline: self.pipeline,
            rate: self.rate,
            churn: self.churn,
            warmup: self.warmup,
            timeout: self.timeout,
            threads: self.threads.max(1),
            tls,
            seed: self.seed,
            connect_concurrency: 256,
            progress: !self.json,
            hist_log: self.hist_log.clone(),
            hist_interval: self.hist_interval,
        })
    }
}

/// `loadgen run`. Returns Ok(false) when any echo was wrong or missing.
pub fn execute(args: RunArgs) -> Result<bool> {
    let config = args.to_config()?;
    // Every connection is a file descriptor; the usual soft limit of 1024
    // would cap us near 1,000 connections.
    match common::net::raise_fd_limit() {
        Ok((_, new)) if (new as usize) < config.conns + 64 => log::warn!(
            "file-descriptor limit is {new}: --conns {} will run out (raise the hard limit: ulimit -Hn)",
            config.conns
        ),
        Ok(_) => {}
        Err(e) => log::warn!("cannot raise the file-descriptor limit: {e}"),
    }
    let report = run(&config)?;
    // writeln! on a locked stdout: `loadgen run | head` closing the pipe is
    // an error `main` turns into a quiet exit 0, not a panic.
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else if let Some(cause) = report.diagnosis() {
        // Not one echo: an all-zero report would hide the one thing to say.
        eprintln!("loadgen run: no echo verified; {cause}");
    } else {
        writeln!(out, "{report}")?;
    }
    out.flush()?;
    Ok(report.ok())
}

/// Run the load described by `config` and return the report. Builds its own
/// tokio runtime, so call it from plain (non-async) code.
pub fn run(config: &RunConfig) -> Result<Report> {
    config.validate()?;
    let runtime = if config.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads)
            .enable_all()
            .build()
    }
    .context("building the tokio runtime")?;

    let cpu_before = ProcStats::read(std::process::id()).unwrap_or_default();
    let shared = Arc::new(Shared::new(config.clone())?);
    let progress = Progress::start(config, shared.clone());
    let hist_log = match &config.hist_log {
        Some(path) => Some(crate::histlog::HistLogger::start(
            path,
            config.hist_interval.max(Duration::from_millis(10)),
            shared.clone(),
            &format!(
                "{} conns={} size={} framing={}",
                config.target(),
                config.conns,
                config.size,
                config.framing
            ),
        )?),
        None => None,
    };
    runtime.block_on(drive::drive(shared.clone()));
    progress.finish();
    // Every sample is recorded once the drive returns: the last interval
    // then holds the rest.
    if let Some(log) = hist_log {
        log.finish()?;
    }
    // Dropping the runtime here (not at the end of the function) makes sure
    // every connection is closed before we read our own CPU time.
    drop(runtime);
    let cpu_after = ProcStats::read(std::process::id()).unwrap_or_default();
    Ok(report(
        config,
        &shared,
        cpu_after.cpu_secs() - cpu_before.cpu_secs(),
    ))
}

fn report(config: &RunConfig, sh: &Shared, cpu: f64) -> Report {
    let c = &sh.counters;
    let measured = c.measured.load(Relaxed);
    let verified = c.verified.load(Relaxed);
    let last = Duration::from_nanos(c.last_measured_ns.load(Relaxed));
    let measured_secs = last.saturating_sub(config.warmup).as_secs_f64();
    let (rps, mbps) = if measured_secs > 0.0 {
        let rps = measured as f64 / measured_secs;
        (rps, rps * config.size as f64 / 1e6)
    } else {
        (0.0, 0.0)
    };
    let histogram = sh.latency.lock().ok().map(|h| h.clone());
    let latency = histogram
        .as_ref()
        .map(Latency::from_hist)
        .unwrap_or_default();
    let connect = sh
        .connect
        .lock()
        .map(|h| Latency::from_hist(&h))
        .unwrap_or_default();
    Report {
        addr: config.target(),
        proto: config.proto,
        framing: if config.proto == Proto::Udp {
            "datagram".into()
        } else {
            config.framing.to_string()
        },
        tls: config.tls.is_some(),
        conns: config.conns,
        size: config.size,
        pipeline: config.pipeline,
        rate: config.rate,
        churn: config.churn,
        threads: config.threads,
        warmup_secs: config.warmup.as_secs_f64(),
        measured_secs,
        elapsed_secs: sh.start.elapsed().as_secs_f64(),
        sent: c.sent.load(Relaxed),
        verified,
        measured,
        requests_per_sec: rps,
        mb_per_sec: mbps,
        latency,
        connect,
        connects: c.connects.load(Relaxed),
        starved_conns: c.starved.load(Relaxed),
        errors: Errors {
            wrong: c.wrong.load(Relaxed),
            missing: c.missing.load(Relaxed),
            connect_failures: c.connect_failures.load(Relaxed),
            early_close: c.early_close.load(Relaxed),
            timeouts: c.timeouts.load(Relaxed),
            io: c.io.load(Relaxed),
            protocol: c.protocol.load(Relaxed),
        },
        error_samples: sh.samples.lock().map(|s| s.clone()).unwrap_or_default(),
        loadgen_cpu_secs: cpu,
        loadgen_cpu_us_per_request: if verified > 0 {
            cpu * 1e6 / verified as f64
        } else {
            0.0
        },
        latency_histogram: histogram,
    }
}

/// The indicatif bar: only on a terminal, and only once a run has lasted
/// two seconds (a short run would just flicker). It reads the shared
/// counters from its own thread, so the connections never wait for it.
struct Progress {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    fn start(config: &RunConfig, sh: Arc<Shared>) -> Self {
        if !config.progress || !std::io::stderr().is_terminal() {
            return Progress {
                stop: None,
                thread: None,
            };
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let stop = config.stop;
        let warmup = config.warmup;
        let thread = std::thread::spawn(move || {
            // recv_timeout doubles as "wait 2 s unless the run ends first".
            use std::sync::mpsc::RecvTimeoutError::Timeout;
            // Anything but a timeout (a message, or the sender dropped) means stop.
            if rx.recv_timeout(Duration::from_secs(2)) != Err(Timeout) {
                return;
            }
            let (len, unit) = match stop {
                Stop::Duration(d) => ((warmup + d).as_millis() as u64, "ms"),
                Stop::Requests(n) => (n, "req"),
            };
            let style = indicatif::ProgressStyle::with_template(
                "{elapsed:>4} [{bar:40}] {percent:>3}% {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
            let bar = indicatif::ProgressBar::new(len).with_style(style);
            let t0 = Instant::now();
            loop {
                let done = sh.counters.verified.load(Relaxed);
                let pos = if unit == "ms" {
                    sh.start.elapsed().as_millis() as u64
                } else {
                    done
                };
                bar.set_position(pos.min(len));
                let secs = t0.elapsed().as_secs_f64() + 2.0;
                bar.set_message(format!(
                    "{done} verified, ~{:.0} req/s, {} errors",
                    done as f64 / secs,
                    sh.counters.wrong.load(Relaxed) + sh.counters.missing.load(Relaxed)
                ));
                if rx.recv_timeout(Duration::from_millis(200)) != Err(Timeout) {
                    break;
                }
            }
            bar.finish_and_clear();
        });
        Progress {
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    fn finish(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
