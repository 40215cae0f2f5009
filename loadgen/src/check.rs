//! `loadgen check`: a conformance and robustness checker for any echo server.
//!
//! Like h2spec for HTTP/2 or the Autobahn suite for WebSocket, one checker
//! is pointed at an implementation and says, case by case, what holds:
//!
//! ```text
//! # terminal 1: any server of the workspace, or your own
//! cargo run -p async-server -- server --model tokio --addr 127.0.0.1:7004
//! # terminal 2
//! cargo run -p loadgen -- check --addr 127.0.0.1:7004 --framing line \
//!     --server-pid $(pgrep -n async-server)
//! PASS echo-sizes: expected 14 frames of 0 B..1.0 MiB in 413 writes of 1 B..64 KiB,
//!      echoed byte for byte; got all 1.3 MiB back in 16.6 ms (54.0 ms)
//! ...
//! PASS idle-clients: expected with 200 idle connections open (...), a fresh client is
//!      echoed within 3 s; got 200 idle open; fresh client connected in 655 µs, echoed in 20.2 ms
//! PASS concurrent-clients: expected 1000 clients connected at once, ...; got 1000/1000
//!      verified in 181.0 ms; echo latency p50 31.4 ms, p99 80.4 ms, max 81.1 ms
//! SKIP datagram-sizes: udp case, server checked over tcp
//! ...
//! PASS stall-timeout: expected a client that sends and stops reading is closed within
//!      the server's --stall-timeout 10.00 s + 2.00 s of its writes blocking, ...; got 8.6 MiB accepted
//!      before the writes blocked; staller closed ...
//! 11 passed, 0 failed, 4 skipped
//! ```
//!
//! Every case has its own timeout, so the checker never hangs; a case that
//! does not apply (an over-long *line* in `length` framing, a UDP case
//! against TCP) says `SKIP` and why. `--json` prints one JSON document
//! instead; `--cases 'echo-*,half-close'` picks cases; `--list` names them.
//!
//! What to watch: the `detail` of each line says what was expected, what
//! came back and how long it took. Run it against `tcp-echo` (the iterative
//! server) and see `idle-clients` fail: one idle client holds the only slot.
//! That is a property of the design, not a bug, so it is declared once, in
//! [`EXPECTED`], and `--expect tcp-echo` turns it into an `XFAIL` line.
//!
//! The contract cases (`stall-timeout`, `shutdown-in-flight`,
//! `shutdown-never-reader`) check what every server of the workspace
//! promises about stalled clients and shutdown. They need `--server-pid`
//! (`--list` says so; without it they SKIP), and the server's `--grace` and
//! `--stall-timeout` told as `--server-grace` / `--server-stall` (defaults
//! 5s and 10s, the servers' own). The two `shutdown-*` cases send SIGTERM,
//! so they run last and only when named (`--cases 'shutdown-in-flight'`;
//! a bare `*` never picks them), one per server process.
//!
//! Layout: this file holds the arguments, the case list, the expected
//! failures and the runner; `check/conn.rs` the connections (plain or TLS)
//! and the echo exchange; `check/tcp.rs` and `check/udp.rs` the cases;
//! `check/contract.rs` the contract cases.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::Framing;

mod conn;
mod contract;
mod tcp;
mod udp;

/// Transport the server speaks: the one `Proto` of the crate.
pub use crate::drive::Proto;

/// Arguments of `loadgen check`.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// Server to check: `IPV4:PORT`, `[IPV6]:PORT` or `HOSTNAME:PORT` (a
    /// malformed one is refused by `common::cli::parse_host_port`, never
    /// looked up).
    #[arg(long, value_name = "HOST:PORT", required_unless_present = "list", value_parser = common::cli::parse_host_port)]
    pub addr: Option<common::cli::HostPort>,

    /// Transport: `tcp` (stream cases) or `udp` (datagram cases).
    #[arg(long, value_enum, default_value_t = Proto::Tcp)]
    pub proto: Proto,

    /// Framing the server was started with (TCP only).
    #[arg(long, value_enum, default_value_t = Framing::Line)]
    pub framing: Framing,

    /// The server's `--max-frame`: the largest echo case sends exactly this
    /// much, the oversized cases one byte more.
    #[arg(long, value_name = "BYTES", default_value = "1MiB", value_parser = common::cli::parse_size)]
    pub max_frame: usize,

    /// TLS: `--tls --ca FILE [--server-name NAME]`.
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,

    /// The server's process id: memory cases then sample its RSS from
    /// /proc/PID/status and report (and bound) the growth; the contract
    /// cases need it (they send SIGTERM, or watch the server stay up) and
    /// SKIP without it.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// The server's `--grace`: the shutdown cases allow this plus 2 s for
    /// the process to exit after SIGTERM.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = common::cli::parse_duration)]
    pub server_grace: Duration,

    /// The server's `--stall-timeout`: `stall-timeout` allows this plus 2 s
    /// for a client that stopped reading to be closed.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = common::cli::parse_duration)]
    pub server_stall: Duration,

    /// Idle connections held open while a fresh client must be served.
    #[arg(long, value_name = "K", default_value_t = 200)]
    pub idle_clients: usize,

    /// Clients connected at once in `concurrent-clients`, each verified.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub clients: usize,

    /// Source ports the UDP server must never answer (its reflection guard
    /// list). The checker binds the first one it can.
    #[arg(long, value_name = "PORT,...", value_delimiter = ',', default_values_t = [7u16, 19, 53, 123])]
    pub guard_ports: Vec<u16>,

    /// Only run cases matching these comma-separated globs (`*`, `?`).
    /// Cases that end the server (`shutdown-*`) run only when a pattern
    /// other than a bare `*` names them.
    #[arg(long, value_name = "GLOB,...", default_value = "*")]
    pub cases: String,

    /// Name of the server under test (`tcp-echo`, `threaded-server/pool`,
    /// ...): its entries in the EXPECTED list become XFAIL instead of FAIL.
    #[arg(long, value_name = "SERVER")]
    pub expect: Option<String>,

    /// Seed for payloads and chunk sizes (runs are reproducible).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// One JSON document on stdout instead of lines.
    #[arg(long)]
    pub json: bool,

    /// List the cases and exit.
    #[arg(long)]
    pub list: bool,
}

impl CheckArgs {
    /// Parse `check` flags from strings (what tests use), e.g.
    /// `CheckArgs::from_flags(["--addr", "127.0.0.1:7001", "--framing", "length"])`.
    pub fn from_flags<I, S>(flags: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: CheckArgs,
        }
        let argv = std::iter::once(std::ffi::OsString::from("check"))
            .chain(flags.into_iter().map(Into::into));
        Ok(<Wrapper as clap::Parser>::try_parse_from(argv)?.args)
    }
}

/// One case of the battery.
#[derive(Debug, Clone, Copy)]
pub struct CaseSpec {
    pub name: &'static str,
    pub proto: Proto,
    /// The case's own deadline; past it the case fails as "timed out".
    pub timeout: Duration,
    pub about: &'static str,
    /// A contract case: needs `--server-pid` (SKIP without it).
    pub needs_pid: bool,
    /// Sends SIGTERM: runs last, only when named, once per server.
    pub ends_server: bool,
    /// Added to `timeout`: the server's grace or stall time.
    pub plus: Plus,
}

/// What a case's timeout grows with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plus {
    Nothing,
    /// `--server-grace`.
    Grace,
    /// `--server-stall`.
    Stall,
}

const fn case(name: &'static str, proto: Proto, secs: u64, about: &'static str) -> CaseSpec {
    CaseSpec {
        name,
        proto,
        timeout: Duration::from_secs(secs),
        about,
        needs_pid: false,
        ends_server: false,
        plus: Plus::Nothing,
    }
}

/// A case of the server contract (needs `--server-pid`).
const fn contract(
    name: &'static str,
    secs: u64,
    plus: Plus,
    ends_server: bool,
    about: &'static str,
) -> CaseSpec {
    CaseSpec {
        name,
        proto: Proto::Tcp,
        timeout: Duration::from_secs(secs),
        about,
        needs_pid: true,
        ends_server,
        plus,
    }
}

impl CaseSpec {
    /// The case's deadline for a server with these grace and stall times.
    pub fn deadline(&self, grace: Duration, stall: Duration) -> Duration {
        self.timeout
            + match self.plus {
                Plus::Nothing => Duration::ZERO,
                Plus::Grace => grace,
                Plus::Stall => stall,
            }
    }

    /// The `--list` line.
    pub fn list_line(&self) -> String {
        let mut s = format!(
            "{:<21} {:<4} {}",
            self.name,
            proto_name(self.proto).to_lowercase(),
            self.about
        );
        if self.needs_pid {
            s.push_str(" [needs --server-pid]");
        }
        if self.ends_server {
            s.push_str(" [ends the server: runs only when named]");
        }
        s
    }
}

/// Every case, in the order they run. Cheap, polite cases first; the ones
/// that flood, hold many connections or open a thousand run last.
pub const CASES: &[CaseSpec] = &[
    case(
        "echo-sizes",
        Proto::Tcp,
        20,
        "frames of 0 B to --max-frame sent in random-size chunks come back byte for byte",
    ),
    case(
        "one-byte-at-a-time",
        Proto::Tcp,
        10,
        "frames written one byte per write() (TCP_NODELAY) are reassembled and echoed",
    ),
    case(
        "pipelined",
        Proto::Tcp,
        10,
        "1,000 frames in a single write() are all echoed, in order",
    ),
    case(
        "half-close",
        Proto::Tcp,
        10,
        "after shutdown(SHUT_WR) every frame is still echoed, then the server closes (EOF)",
    ),
    case(
        "reset-mid-frame",
        Proto::Tcp,
        10,
        "a client resets (RST) halfway through a frame; the server survives and serves a new client",
    ),
    case(
        "garbage",
        Proto::Tcp,
        10,
        "line/raw: non-UTF-8 and control bytes simply echo; length: a bogus huge prefix closes that connection only",
    ),
    case(
        "oversized-length",
        Proto::Tcp,
        10,
        "length framing: a prefix of max-frame+1 closes that connection; another client is unaffected; memory bounded",
    ),
    case(
        "oversized-line",
        Proto::Tcp,
        10,
        "line framing: max-frame+64 KiB without a newline closes that connection; another client is unaffected; memory bounded",
    ),
    case(
        "send-never-read",
        Proto::Tcp,
        15,
        "a client that floods and never reads meets back-pressure; the server neither dies nor grows without bound",
    ),
    case(
        "idle-clients",
        Proto::Tcp,
        20,
        "with K idle connections open, a fresh client still gets its echo within 3 s",
    ),
    case(
        "concurrent-clients",
        Proto::Tcp,
        40,
        "N clients connected at once each get their own frames back",
    ),
    case(
        "datagram-sizes",
        Proto::Udp,
        10,
        "datagrams of 0, 1, 1472 and 65507 bytes come back byte for byte",
    ),
    case(
        "datagram-burst",
        Proto::Udp,
        10,
        "1,000 datagrams sent back to back: replies verified, loss reported",
    ),
    case(
        "guard-port",
        Proto::Udp,
        10,
        "a datagram from a port on the reflection guard list gets no reply (one from an ordinary port does)",
    ),
    contract(
        "stall-timeout",
        15,
        Plus::Stall,
        false,
        "a client that sends and stops reading is closed within --server-stall + 2 s; another is served meanwhile",
    ),
    contract(
        "shutdown-in-flight",
        15,
        Plus::Grace,
        true,
        "SIGTERM with frames in flight on several connections: every received frame echoed, then EOF; exit within --server-grace + 2 s",
    ),
    contract(
        "shutdown-never-reader",
        15,
        Plus::Grace,
        true,
        "SIGTERM while a client floods and never reads: polite clients get echo + EOF; exit within --server-grace + 2 s",
    ),
];

/// Cases a design fails by its nature, with the reason. `--expect SERVER`
/// turns these into `XFAIL` lines; the list is the one place to look for
/// them (the workspace's tests pass `--expect` for each server they check).
pub const EXPECTED: &[(&str, &str, &str)] = &[
    (
        "tcp-echo",
        "idle-clients",
        "the iterative server serves one client at a time: the first idle connection holds the only slot until --idle-timeout ends it, so the fresh client waits",
    ),
    (
        "threaded-server/pool",
        "idle-clients",
        "each of the --workers threads serves one connection at a time: K idle connections occupy every worker and fill the queue, so the fresh client waits until --idle-timeout frees a worker",
    ),
];

/// The verdict on one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Fail,
    Skip,
    /// Failed, and declared in [`EXPECTED`] for the server named by `--expect`.
    Xfail,
    /// Passed although declared in [`EXPECTED`]: time to update the list.
    Xpass,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
            Status::Xfail => "XFAIL",
            Status::Xpass => "XPASS",
        }
    }
}

/// What one case found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseResult {
    pub name: &'static str,
    pub status: Status,
    /// What a correct server does (for SKIP: why the case does not apply).
    pub expected: String,
    /// What this server did.
    pub got: String,
    pub duration_ms: f64,
    /// For XFAIL/XPASS: the reason from [`EXPECTED`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

impl CaseResult {
    /// The line printed for this case.
    pub fn line(&self) -> String {
        let mut s = format!("{} {}", self.status.label(), self.name);
        if self.status == Status::Skip {
            let _ = write!(s, ": {}", self.expected);
        } else {
            let _ = write!(
                s,
                ": expected {}; got {} ({})",
                self.expected,
                self.got,
                fmt_duration(Duration::from_secs_f64(self.duration_ms / 1e3))
            );
        }
        if let Some(r) = self.reason {
            let _ = write!(s, " [expected failure: {r}]");
        }
        s
    }
}

/// Everything a run found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub addr: String,
    pub proto: Proto,
    pub framing: Option<&'static str>,
    pub tls: bool,
    pub seed: u64,
    pub cases: Vec<CaseResult>,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub xfailed: usize,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.failed == 0
    }

    pub fn get(&self, name: &str) -> Option<&CaseResult> {
        self.cases.iter().find(|c| c.name == name)
    }

    /// `N passed, N failed` (plus `, N skipped` when some were).
    pub fn closing_line(&self) -> String {
        let mut s = format!("{} passed, {} failed", self.passed, self.failed);
        if self.skipped > 0 {
            let _ = write!(s, ", {} skipped", self.skipped);
        }
        s
    }
}

/// `loadgen check`: print one line per case and the closing line (or the
/// JSON document). Returns Ok(true) when nothing failed.
///
/// Output goes through a locked stdout with `writeln!`, and a failed write
/// is an error like any other: `loadgen check --list | head -1` closes the
/// pipe, the next write fails with EPIPE (Rust ignores SIGPIPE), and `main`
/// ends quietly with status 0 instead of panicking as `println!` would.
pub fn execute(args: CheckArgs) -> Result<bool> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if args.list {
        for c in CASES {
            writeln!(out, "{}", c.list_line())?;
        }
        return Ok(true);
    }
    let json = args.json;
    // The first failed write; once stdout is gone the cases still finish
    // (a case cannot be interrupted safely), but nothing more is printed.
    let mut write_error: Option<std::io::Error> = None;
    let report = run(&args, |r| {
        if !json && write_error.is_none() {
            write_error = writeln!(out, "{}", r.line()).err();
        }
    })?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        if report.xfailed > 0 {
            writeln!(
                out,
                "{} expected failure(s) not counted (see EXPECTED in loadgen/src/check.rs)",
                report.xfailed
            )?;
        }
        writeln!(out, "{}", report.closing_line())?;
    }
    out.flush()?;
    Ok(report.ok())
}

/// Run the selected cases against `args.addr`, calling `on_result` as each
/// case finishes. Errors only for bad arguments (unreadable CA file, an
/// address that does not resolve); anything the server does is a result.
pub fn run(args: &CheckArgs, mut on_result: impl FnMut(&CaseResult)) -> Result<Report> {
    let given = args.addr.as_ref().context("--addr HOST:PORT is required")?;
    let addr: SocketAddr = given
        .resolve()
        .with_context(|| format!("--addr {given}: cannot resolve"))?;
    if args.tls.tls && args.proto == Proto::Udp {
        bail!("--tls applies to TCP only");
    }
    let selected = select(&args.cases)?;
    // Hundreds of idle clients plus a thousand concurrent ones are more file
    // descriptors than the usual soft limit of 1024.
    let fd_limit = common::net::raise_fd_limit()
        .map(|(_, new)| new)
        .unwrap_or(1024);
    let tls = args.tls.client()?.map(|c| (c.connector, c.server_name));
    let ctx = Ctx {
        target: conn::Target { addr, tls },
        framing: args.framing,
        max_frame: args.max_frame,
        pid: args.server_pid,
        server_grace: args.server_grace,
        server_stall: args.server_stall,
        idle_clients: args.idle_clients,
        clients: args.clients,
        guard_ports: args.guard_ports.clone(),
        seed: args.seed,
        fd_limit,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;

    let mut report = Report {
        addr: addr.to_string(),
        proto: args.proto,
        framing: (args.proto == Proto::Tcp).then(|| args.framing.name()),
        tls: args.tls.tls,
        seed: args.seed,
        cases: Vec::new(),
        passed: 0,
        failed: 0,
        skipped: 0,
        xfailed: 0,
    };
    // The first case that sent SIGTERM; the server is gone after it.
    let mut ended_by: Option<&str> = None;
    for spec in selected {
        let start = Instant::now();
        let timeout = spec.deadline(args.server_grace, args.server_stall);
        let outcome = if spec.proto != args.proto {
            Outcome::Skip(
                format!(
                    "{} case, server checked over {:?}",
                    proto_name(spec.proto),
                    args.proto
                )
                .to_lowercase(),
            )
        } else if spec.needs_pid && args.server_pid.is_none() {
            Outcome::Skip(
                "needs --server-pid PID (it signals the server, or watches it stay up)".into(),
            )
        } else if let Some(earlier) = ended_by {
            Outcome::Skip(format!(
                "the server was stopped by {earlier}; check each shutdown case against a fresh server"
            ))
        } else {
            if spec.ends_server {
                ended_by = Some(spec.name);
            }
            runtime.block_on(async {
                match tokio::time::timeout(timeout, run_case(spec.name, &ctx)).await {
                    Ok(outcome) => outcome,
                    Err(_) => Outcome::Fail {
                        expected: spec.about.to_string(),
                        got: format!(
                            "no verdict within the case's {} timeout",
                            fmt_duration(timeout)
                        ),
                    },
                }
            })
        };
        let duration_ms = start.elapsed().as_secs_f64() * 1e3;
        let declared = args.expect.as_deref().and_then(|server| {
            EXPECTED
                .iter()
                .find(|(s, c, _)| *s == server && *c == spec.name)
                .map(|(_, _, reason)| *reason)
        });
        let (status, expected, got) = match outcome {
            Outcome::Pass { expected, got } => (Status::Pass, expected, got),
            Outcome::Fail { expected, got } => (Status::Fail, expected, got),
            Outcome::Skip(why) => (Status::Skip, why, String::new()),
        };
        let status = match (status, declared) {
            (Status::Fail, Some(_)) => Status::Xfail,
            (Status::Pass, Some(_)) => Status::Xpass,
            (s, _) => s,
        };
        match status {
            Status::Pass | Status::Xpass => report.passed += 1,
            Status::Fail => report.failed += 1,
            Status::Skip => report.skipped += 1,
            Status::Xfail => report.xfailed += 1,
        }
        let result = CaseResult {
            name: spec.name,
            status,
            expected,
            got,
            duration_ms,
            reason: declared.filter(|_| status != Status::Skip),
        };
        on_result(&result);
        report.cases.push(result);
    }
    // Do not wait for stragglers (a writer still blocked on a dead server):
    // every case has already given its verdict.
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(report)
}

fn proto_name(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "TCP",
        Proto::Udp => "UDP",
    }
}

/// Shared by every case.
#[derive(Debug)]
struct Ctx {
    target: conn::Target,
    framing: Framing,
    max_frame: usize,
    pid: Option<u32>,
    server_grace: Duration,
    server_stall: Duration,
    idle_clients: usize,
    clients: usize,
    guard_ports: Vec<u16>,
    seed: u64,
    fd_limit: u64,
}

/// A case's verdict before the EXPECTED list is consulted.
#[derive(Debug)]
enum Outcome {
    Pass { expected: String, got: String },
    Fail { expected: String, got: String },
    Skip(String),
}

impl Outcome {
    fn new(ok: bool, expected: impl Into<String>, got: impl Into<String>) -> Self {
        let (expected, got) = (expected.into(), got.into());
        if ok {
            Outcome::Pass { expected, got }
        } else {
            Outcome::Fail { expected, got }
        }
    }
}

async fn run_case(name: &str, ctx: &Ctx) -> Outcome {
    match name {
        "echo-sizes" => tcp::echo_sizes(ctx).await,
        "one-byte-at-a-time" => tcp::one_byte_at_a_time(ctx).await,
        "pipelined" => tcp::pipelined(ctx).await,
        "half-close" => tcp::half_close(ctx).await,
        "reset-mid-frame" => tcp::reset_mid_frame(ctx).await,
        "garbage" => tcp::garbage(ctx).await,
        "oversized-length" => tcp::oversized_length(ctx).await,
        "oversized-line" => tcp::oversized_line(ctx).await,
        "send-never-read" => tcp::send_never_read(ctx).await,
        "idle-clients" => tcp::idle_clients(ctx).await,
        "concurrent-clients" => tcp::concurrent_clients(ctx).await,
        "datagram-sizes" => udp::datagram_sizes(ctx).await,
        "datagram-burst" => udp::datagram_burst(ctx).await,
        "guard-port" => udp::guard_port(ctx).await,
        "stall-timeout" => contract::stall_timeout(ctx).await,
        "shutdown-in-flight" => contract::shutdown_in_flight(ctx).await,
        "shutdown-never-reader" => contract::shutdown_never_reader(ctx).await,
        other => Outcome::Skip(format!("no implementation for case {other}")),
    }
}

/// The cases `--cases` picks, in run order. A case that ends the server
/// (SIGTERM) is picked only by a pattern other than a bare `*`, so the
/// default run leaves the server up.
pub fn select(cases: &str) -> Result<Vec<&'static CaseSpec>> {
    let patterns: Vec<&str> = cases.split(',').map(str::trim).collect();
    let selected: Vec<&CaseSpec> = CASES
        .iter()
        .filter(|c| {
            patterns
                .iter()
                .any(|p| glob_match(p, c.name) && !(c.ends_server && *p == "*"))
        })
        .collect();
    if selected.is_empty() {
        bail!("--cases {cases} matches no case (try --list)");
    }
    Ok(selected)
}

/// `*` matches any run of characters, `?` one character.
fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// `850 µs`, `12.3 ms`, `1.52 s`.
fn fmt_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1e3 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// `512 B`, `64.0 KiB`, `1.0 MiB`.
fn fmt_bytes(n: u64) -> String {
    if n < 1024 {
        format!("{n} B")
    } else if n < 1 << 20 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", "echo-sizes"));
        assert!(glob_match("echo-*", "echo-sizes"));
        assert!(glob_match("*-line", "oversized-line"));
        assert!(glob_match("half-clos?", "half-close"));
        assert!(!glob_match("echo", "echo-sizes"));
        assert!(!glob_match("*-length", "oversized-line"));
    }

    #[test]
    fn every_case_has_an_implementation_and_expected_names_exist() {
        let ctx_names: Vec<&str> = CASES.iter().map(|c| c.name).collect();
        for (_, case, reason) in EXPECTED {
            assert!(
                ctx_names.contains(case),
                "EXPECTED names unknown case {case}"
            );
            assert!(!reason.is_empty());
        }
        let mut sorted = ctx_names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), CASES.len(), "case names are unique");
    }

    #[test]
    fn closing_line_format() {
        let mut r = Report {
            addr: String::new(),
            proto: Proto::Tcp,
            framing: None,
            tls: false,
            seed: 1,
            cases: vec![],
            passed: 3,
            failed: 1,
            skipped: 0,
            xfailed: 0,
        };
        assert_eq!(r.closing_line(), "3 passed, 1 failed");
        r.skipped = 2;
        assert_eq!(r.closing_line(), "3 passed, 1 failed, 2 skipped");
    }

    #[test]
    fn flags_parse_and_reject() {
        let a = CheckArgs::from_flags([
            "--addr",
            "127.0.0.1:1",
            "--framing",
            "length",
            "--guard-ports",
            "7,9",
        ])
        .unwrap();
        assert_eq!(a.framing, Framing::Length);
        assert_eq!(a.guard_ports, vec![7, 9]);
        assert_eq!((a.idle_clients, a.clients), (200, 1000));
        assert!(
            CheckArgs::from_flags(["--addr", "x:1", "--tls"]).is_err(),
            "--tls needs --ca"
        );
        assert_eq!(fmt_bytes(1 << 20), "1.0 MiB");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.50 s");
    }
}
