//! `loadgen chat`: M members in one room, each saying a line R times a
//! second for a bounded time; every receipt is timed against its send.
//!
//! ```text
//! cargo run --release -p chat -- server --model tokio --addr 127.0.0.1:7007 &
//! cargo run --release -p loadgen -- chat --addr 127.0.0.1:7007 --members 100 --rate 10 \
//!     --duration 5s --server-pid $(pgrep -n chat) [--stalled 1]
//! ```
//!
//! One line said reaches M-1 others, so the room's work grows with M²: 100
//! members at 10 lines/s are 99,000 deliveries a second. Each line carries
//! its sequence number and the time it was sent (nanoseconds since the
//! run's start, one clock, one process), so each receipt gives one sample
//! of *fan-out latency*: from `write()` by the sender to `read()` by one
//! receiver. The report has deliveries per second, the latency histogram,
//! and, with `--server-pid`, the server's CPU time per delivered message
//! and its RSS (from /proc). `--stalled K` adds K members that join and
//! never read: a good room shows the same p99 with and without them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};

use crate::child::ProcStats;

#[derive(clap::Args, Debug, Clone)]
pub struct ChatLoadArgs {
    /// The chat server.
    #[arg(long, value_name = "HOST:PORT", value_parser = common::cli::parse_host_port)]
    pub addr: common::cli::HostPort,
    /// Members that talk and read (at most 20,000).
    #[arg(long, value_name = "M", default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=20_000))]
    pub members: u32,
    /// Lines each member says per second, a fraction allowed (`0.1`: one
    /// line every 10 s), from 0.001 to 1,000. Deliveries per second are
    /// M·(M-1)·R: at 1,000 members, 0.05 is already ~50,000 a second.
    #[arg(long, value_name = "R", default_value_t = 10.0, value_parser = parse_rate)]
    pub rate: f64,
    /// How long members talk (at most 10 minutes).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = common::cli::parse_duration)]
    pub duration: Duration,
    /// Members that join and never read.
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub stalled: u32,
    /// Padding added to each line, bytes (at most 60 KiB).
    #[arg(long, value_name = "BYTES", default_value_t = 32, value_parser = clap::value_parser!(u32).range(0..=61_440))]
    pub size: u32,
    /// The server's process id: CPU per delivery and RSS from /proc.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
}

/// The lowest and highest `--rate`, lines per member per second.
pub const RATE_RANGE: (f64, f64) = (0.001, 1000.0);

/// `--rate`: a positive number of lines per second, fractions allowed.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of lines per second"))?;
    check_rate(r)
}

/// A rate within [`RATE_RANGE`] (NaN and infinities refused).
pub fn check_rate(r: f64) -> Result<f64, String> {
    let (lo, hi) = RATE_RANGE;
    if !(lo..=hi).contains(&r) {
        return Err(format!(
            "rate {r}: from {lo} to {hi} lines per member per second"
        ));
    }
    Ok(r)
}

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChatReport {
    pub members: u32,
    pub stalled: u32,
    /// Lines each member said per second (asked for).
    pub rate: f64,
    pub said: u64,
    pub expected: u64,
    pub delivered: u64,
    pub deliveries_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// The server's CPU time (user + system) over the run, seconds.
    pub server_cpu_secs: Option<f64>,
    pub server_cpu_us_per_delivery: Option<f64>,
    pub server_rss_bytes: Option<u64>,
    /// The server's peak RSS (VmHWM) at the end of the run, bytes.
    pub server_peak_rss_bytes: Option<u64>,
}

impl ChatReport {
    pub const HEADER: &str = "members stalled   rate   said  delivered/expected  deliv/s   p50 µs   p99 µs p99.9 µs   max µs  cpu µs/deliv  rss MiB";

    pub fn row(&self) -> String {
        format!(
            "{:>7} {:>7} {:>6} {:>6} {:>10}/{:<8} {:>8.0} {:>8} {:>8} {:>8} {:>8} {:>13} {:>8}",
            self.members,
            self.stalled,
            rate_text(self.rate),
            self.said,
            self.delivered,
            self.expected,
            self.deliveries_per_sec,
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            self.server_cpu_us_per_delivery
                .map_or("-".into(), |c| format!("{c:.2}")),
            self.server_rss_bytes
                .map_or("-".into(), |r| format!("{:.1}", r as f64 / 1048576.0)),
        )
    }
}

/// A rate as a short figure: `10`, `0.05`, `5.05`.
pub fn rate_text(r: f64) -> String {
    if r >= 100.0 || r.fract() == 0.0 {
        format!("{r:.0}")
    } else if r >= 1.0 {
        format!("{r:.2}")
    } else {
        // Three significant figures below one line a second, trailing
        // zeros dropped: 0.0505, 0.05.
        let digits = (-r.log10()).ceil().max(0.0) as usize + 2;
        let t = format!("{r:.digits$}");
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

pub fn execute(args: ChatLoadArgs) -> Result<bool> {
    let report = run(&args)?;
    println!("{}", ChatReport::HEADER);
    println!("{}", report.row());
    Ok(true)
}

/// Run the load and return the report (a tokio runtime of its own).
pub fn run(args: &ChatLoadArgs) -> Result<ChatReport> {
    if args.duration > Duration::from_secs(600) {
        bail!("--duration is at most 10m");
    }
    // The library entry (`compare --chat`) skips clap's checks.
    check_rate(args.rate).map_err(anyhow::Error::msg)?;
    if !(2..=20_000).contains(&args.members) {
        bail!("--members is from 2 to 20,000");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(drive(args))
}

/// Read the welcome, send the name, read the presence line.
async fn join(
    addr: std::net::SocketAddr,
    name: &str,
) -> Result<(
    BufReader<tokio::net::tcp::OwnedReadHalf>,
    tokio::net::tcp::OwnedWriteHalf,
)> {
    let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
        .await
        .context("connect timed out")??;
    stream.set_nodelay(true)?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    for step in ["welcome", "presence"] {
        if step == "presence" {
            w.write_all(format!("{name}\n").as_bytes()).await?;
        }
        line.clear();
        let n = tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line))
            .await
            .with_context(|| format!("{name}: no {step} line"))??;
        if n == 0 {
            bail!("{name}: the server closed before the {step} line");
        }
    }
    Ok((r, w))
}

async fn drive(args: &ChatLoadArgs) -> Result<ChatReport> {
    let addr = args.addr.resolve()?;
    let tag = std::process::id() % 10_000;
    let base = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let mut stalled = Vec::new();
    for k in 0..args.stalled {
        stalled.push(join(addr, &format!("s{tag}x{k}")).await?);
    }
    let mut members = Vec::new();
    for i in 0..args.members {
        members.push(
            join(addr, &format!("m{tag}x{i}"))
                .await
                .with_context(|| format!("member {i} of {}", args.members))?,
        );
    }
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    // Readers stop on this signal and hand back their histograms (aborting
    // them would throw their samples away).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for (mut r, w) in members {
        let delivered = delivered.clone();
        let mut stop_rx = stop_rx.clone();
        readers.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok();
            let mut line = Vec::new();
            loop {
                line.clear();
                tokio::select! {
                    n = r.read_until(b'\n', &mut line) => match n {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    },
                    _ = stop_rx.changed() => break,
                }
                // `[NAME] SEQ SENT_NS padding`
                if line.first() != Some(&b'[') {
                    continue;
                }
                let text = String::from_utf8_lossy(&line);
                let sent = text.split(' ').nth(2).and_then(|t| t.parse::<u64>().ok());
                if let Some(sent) = sent {
                    let now = base.elapsed().as_nanos() as u64;
                    if let Some(h) = hist.as_mut() {
                        let _ = h.record((now.saturating_sub(sent) / 1000).max(1));
                    }
                    delivered.fetch_add(1, Relaxed);
                }
            }
            hist
        }));
        writers.push(w);
    }
    let cpu_before = args.server_pid.and_then(|p| ProcStats::read(p).ok());
    let said = Arc::new(AtomicU64::new(0));
    let pad = "p".repeat(args.size as usize);
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let count = args.members;
    let start = Instant::now();
    let stop = start + args.duration;
    let mut senders = Vec::new();
    for (i, mut w) in writers.into_iter().enumerate() {
        let (said, pad) = (said.clone(), pad.clone());
        senders.push(tokio::spawn(async move {
            // Spread the members evenly over one period so they do not all
            // speak at once: the room as a whole says M·R lines a second
            // from the start, even when one member's period (1/R) is
            // longer than the run.
            let offset = period.mul_f64(i as f64 / f64::from(count));
            let mut tick = tokio::time::interval_at(start + offset, period);
            tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
            let mut seq = 0u64;
            loop {
                // A member whose next turn is after the end stops at the
                // end, not at its turn (at 0.05 lines/s that is 20 s away).
                if tokio::time::timeout_at(stop, tick.tick()).await.is_err()
                    || Instant::now() >= stop
                {
                    break;
                }
                let line = format!("{seq} {} {pad}\n", base.elapsed().as_nanos());
                if w.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
                seq += 1;
                said.fetch_add(1, Relaxed);
            }
            w
        }));
    }
    let mut writers = Vec::new();
    for s in senders {
        writers.push(s.await?);
    }
    let said = said.load(Relaxed);
    let expected = said * u64::from(args.members - 1);
    // Let the last lines arrive (bounded), then close everyone.
    let drain_until = Instant::now() + Duration::from_secs(5);
    while delivered.load(Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed().min(args.duration + Duration::from_secs(5));
    let cpu_after = args.server_pid.and_then(|p| ProcStats::read(p).ok());
    drop(writers);
    drop(stalled);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let _ = stop_tx.send(true);
    for r in readers {
        if let Ok(Some(h)) = r.await {
            hist.add(&h).ok();
        }
    }
    let delivered = delivered.load(Relaxed);
    Ok(ChatReport {
        members: args.members,
        stalled: args.stalled,
        rate: args.rate,
        said,
        expected,
        delivered,
        deliveries_per_sec: delivered as f64 / elapsed.as_secs_f64(),
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        p999_us: hist.value_at_quantile(0.999),
        max_us: hist.max(),
        server_cpu_secs: match (cpu_before, cpu_after) {
            (Some(b), Some(a)) => Some((a.cpu_secs() - b.cpu_secs()).max(0.0)),
            _ => None,
        },
        server_cpu_us_per_delivery: match (cpu_before, cpu_after) {
            (Some(b), Some(a)) if delivered > 0 => {
                Some((a.cpu_secs() - b.cpu_secs()) * 1e6 / delivered as f64)
            }
            _ => None,
        },
        server_rss_bytes: cpu_after.map(|a| a.rss_bytes),
        server_peak_rss_bytes: cpu_after.map(|a| a.peak_rss_bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_below_one_line_a_second_are_accepted_and_shown_short() {
        assert_eq!(parse_rate("0.1"), Ok(0.1));
        assert_eq!(parse_rate("10"), Ok(10.0));
        assert_eq!(parse_rate("1000"), Ok(1000.0));
        for bad in ["0", "-1", "1001", "NaN", "inf", "0.0001", "fast"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert_eq!(rate_text(10.0), "10");
        assert_eq!(rate_text(555.555), "556");
        assert_eq!(rate_text(5.0505), "5.05");
        assert_eq!(rate_text(0.05), "0.05");
        assert_eq!(rate_text(50_000.0 / 999_000.0), "0.0501");
        assert_eq!(rate_text(0.0505), "0.0505");
        assert_eq!(rate_text(0.001), "0.001");
    }
}
