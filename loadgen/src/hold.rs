//! `loadgen hold`: open N connections, have each echo one tiny frame, keep
//! them all open and idle, and report how much the server's resident
//! memory grew per connection.
//!
//! Run with (two terminals):
//!
//! ```text
//! target/release/async-server server --model event-loop --max-conns 10100 --idle-timeout 0 --addr 127.0.0.1:7004
//! target/release/loadgen hold --addr 127.0.0.1:7004 --conns 10000 --pid $(pgrep -n async-server)
//! ```
//!
//! What to watch: `RSS per connection`. The server's user-space state per
//! connection is what a design costs at rest: a 64 KiB read buffer per
//! connection is 640 MiB at 10,000 clients; a buffer borrowed from a shared
//! pool only while bytes are in flight (io_uring's provided buffers, or a
//! readiness loop's one scratch buffer) is nearly nothing. Kernel socket
//! buffers are not in RSS; `ss -tm` shows those.
//!
//! Why one echo per connection first: a connection the kernel has
//! completed but the server has not yet accepted costs the server
//! nothing; after an echo the server has accepted, registered, read from
//! and written to it, so its state is really there. Connections are made
//! one at a time with blocking sockets (every read with a timeout): this
//! measures memory, not speed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::Framing;
use common::cli::parse_duration;
use serde::Serialize;

use crate::child::ProcStats;
use crate::run::{Target, parse_target};

/// Arguments of `loadgen hold`.
#[derive(clap::Args, Debug, Clone)]
pub struct HoldArgs {
    /// Server address: HOST:PORT or unix:PATH.
    #[arg(long, value_name = "HOST:PORT|unix:PATH", value_parser = parse_target)]
    pub addr: Target,

    /// Connections to open and hold.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub conns: usize,

    /// The server's process id, whose RSS (/proc/PID/status) is read
    /// before and after.
    #[arg(long, value_name = "PID")]
    pub pid: u32,

    /// The framing of the one frame each connection echoes.
    #[arg(long, value_enum, default_value_t = Framing::Raw)]
    pub framing: Framing,

    /// Keep the connections open this long after measuring (for `ss`,
    /// `strace`, a look at /proc).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub hold: Duration,

    /// Give up on a connect or an echo after this long.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `hold` measured.
#[derive(Debug, Clone, Serialize)]
pub struct HoldReport {
    pub conns: usize,
    pub rss_before_bytes: u64,
    pub rss_after_bytes: u64,
    pub rss_per_conn_bytes: f64,
    pub server_threads: u64,
    pub connect_secs: f64,
}

/// One held connection: TCP or Unix.
enum Held {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Held {
    fn echo(&mut self, frame: &[u8], timeout: Duration) -> std::io::Result<()> {
        let mut back = vec![0u8; frame.len()];
        match self {
            Held::Tcp(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                s.set_nodelay(true)?;
                s.write_all(frame)?;
                s.read_exact(&mut back)?;
            }
            Held::Unix(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                s.write_all(frame)?;
                s.read_exact(&mut back)?;
            }
        }
        if back != frame {
            return Err(std::io::Error::other(format!(
                "echo {back:?} differs from {frame:?}"
            )));
        }
        Ok(())
    }
}

/// The one frame each connection sends: the byte `h`, framed.
fn frame(framing: Framing) -> Vec<u8> {
    match framing {
        Framing::Line => b"h\n".to_vec(),
        Framing::Length => vec![0, 0, 0, 1, b'h'],
        Framing::Raw => b"h".to_vec(),
    }
}

/// Open, echo and hold `args.conns` connections; measure the server.
pub fn hold(args: &HoldArgs) -> Result<HoldReport> {
    let _ = common::net::raise_fd_limit();
    let before =
        ProcStats::read(args.pid).with_context(|| format!("no process {} to measure", args.pid))?;
    let frame = frame(args.framing);
    let t0 = Instant::now();
    let mut held = Vec::with_capacity(args.conns);
    for i in 0..args.conns {
        let mut c = match &args.addr {
            Target::Inet(h) => {
                let addr = h.resolve().with_context(|| format!("--addr {h}"))?;
                Held::Tcp(
                    TcpStream::connect_timeout(&addr, args.timeout)
                        .with_context(|| format!("connection {i} of {}", args.conns))?,
                )
            }
            Target::Unix(p) => Held::Unix(
                UnixStream::connect(p)
                    .with_context(|| format!("connection {i} to unix:{}", p.display()))?,
            ),
        };
        c.echo(&frame, args.timeout)
            .with_context(|| format!("connection {i}: no echo of its one frame"))?;
        held.push(c);
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    let after = ProcStats::read(args.pid)
        .with_context(|| format!("process {} gone while holding", args.pid))?;
    if held.len() != args.conns {
        bail!("held {} of {} connections", held.len(), args.conns);
    }
    let grown = after.rss_bytes.saturating_sub(before.rss_bytes);
    let report = HoldReport {
        conns: args.conns,
        rss_before_bytes: before.rss_bytes,
        rss_after_bytes: after.rss_bytes,
        rss_per_conn_bytes: grown as f64 / args.conns.max(1) as f64,
        server_threads: after.threads,
        connect_secs,
    };
    if !args.hold.is_zero() {
        // Holding still, on purpose: the connections stay open for a
        // person (or `ss`, `strace`) to look at. Nothing waits on this.
        std::thread::sleep(args.hold);
    }
    drop(held);
    Ok(report)
}

/// `loadgen hold`.
pub fn execute(args: HoldArgs) -> Result<bool> {
    let r = hold(&args)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?;
    } else {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        writeln!(
            out,
            "{} idle connections held (each echoed one frame, in {:.2}s): server RSS {:.1} MiB -> {:.1} MiB, {:.2} KiB per connection ({} threads)",
            r.conns,
            r.connect_secs,
            mib(r.rss_before_bytes),
            mib(r.rss_after_bytes),
            r.rss_per_conn_bytes / 1024.0,
            r.server_threads
        )?;
    }
    out.flush()?;
    Ok(true)
}
