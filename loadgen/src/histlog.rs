//! Latency that merges across load hosts: `loadgen run --hist-log FILE`
//! writes the run's latency as an HdrHistogram *interval log*, and
//! `loadgen merge FILE...` adds any number of them into one histogram.
//!
//! Run with:
//!
//! ```text
//! loadgen run --addr 10.0.0.5:7004 --rate 20000 --duration 60s --hist-log host-a.hlog   # host A
//! loadgen run --addr 10.0.0.5:7004 --rate 20000 --duration 60s --hist-log host-b.hlog   # host B
//! loadgen merge host-a.hlog host-b.hlog        # the percentiles of all 40,000 req/s
//! ```
//!
//! Why a histogram and not the percentiles: percentiles do not add. The
//! p99 of two hosts is not the mean of their p99s (nor the larger one):
//! it depends on where every sample lies. A histogram keeps a count per
//! value bucket, and buckets do add, so the merged p99 is exact (to the
//! histogram's 3 significant digits, like every figure `loadgen` prints).
//!
//! The format is the one HdrHistogram's own tools read and write (Java's
//! `HistogramLogProcessor`, `hdr-plot`, HdrHistogram.NET, ...): comment
//! lines with `#[StartTime: ...]` and `#[BaseTime: ...]` (seconds since
//! the epoch), the legend line, then one line per interval (1 s by
//! default, `--hist-interval`): start offset from BaseTime, length and
//! max in seconds/ns, and the interval's histogram, compressed (V2 +
//! deflate) and base64-encoded. Values are nanoseconds (as jHiccup
//! records them: give `HistogramLogProcessor -outputValueUnitRatio 1000`
//! for microseconds). Lines carry no `Tag=`: Java's tools read untagged
//! intervals unless asked for a tag.
//!
//! Each interval holds the echoes whose latency was recorded in it (after
//! the warm-up, like the report's percentiles); the intervals of one log
//! add up to exactly the histogram `loadgen run` reports.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use serde::Serialize;

use crate::drive::Shared;
use crate::latency::Latency;

/// The legend line every interval log carries before its intervals.
pub const LEGEND: &str =
    "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"";

/// An open interval log: the file, where the last interval ended, and the
/// running total at that point (each interval is the total's growth).
#[derive(Debug)]
struct LogFile {
    out: BufWriter<File>,
    path: PathBuf,
    base: Instant,
    last_end: Duration,
    written: Histogram<u64>,
}

impl LogFile {
    fn create(path: &Path, what: &str) -> Result<Self> {
        let file = File::create(path).with_context(|| format!("--hist-log {}", path.display()))?;
        let mut out = BufWriter::new(file);
        let now = SystemTime::now();
        IntervalLogWriterBuilder::new()
            .add_comment(&format!("[Logged with loadgen run: {what}]"))
            .add_comment("[Histogram log format version 1.3]")
            .add_comment("[Values are nanoseconds: echo latency of verified requests]")
            .with_start_time(now)
            .with_base_time(now)
            .begin_log_with(&mut out, &mut V2DeflateSerializer::new())
            .with_context(|| format!("writing {}", path.display()))?;
        writeln!(out, "{LEGEND}")?;
        out.flush()?;
        Ok(LogFile {
            out,
            path: path.to_path_buf(),
            base: Instant::now(),
            last_end: Duration::ZERO,
            written: Histogram::new(3).context("histogram")?,
        })
    }

    /// One interval: what `total` gained since the last one.
    fn interval(&mut self, total: &Histogram<u64>) -> Result<()> {
        let end = self.base.elapsed();
        let mut delta = total.clone();
        delta
            .subtract(&self.written)
            .map_err(|e| anyhow!("{e:?}"))
            .context("a latency histogram lost samples")?;
        self.written
            .add(&delta)
            .map_err(|e| anyhow!("{e:?}"))
            .context("adding an interval")?;
        // A writer with no header: it only formats the interval line.
        let mut serializer = V2DeflateSerializer::new();
        IntervalLogWriterBuilder::new()
            .begin_log_with(&mut self.out, &mut serializer)?
            .write_histogram(&delta, self.last_end, end - self.last_end, None)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.out.flush()?;
        self.last_end = end;
        Ok(())
    }
}

/// A thread that writes one interval of the run's latency histogram every
/// `every`, and the rest when stopped.
#[derive(Debug)]
pub(crate) struct HistLogger {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<Result<()>>,
}

impl HistLogger {
    /// Create the file (an unwritable path fails here, before any load).
    pub(crate) fn start(
        path: &Path,
        every: Duration,
        shared: Arc<Shared>,
        what: &str,
    ) -> Result<Self> {
        let mut log = LogFile::create(path, what)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || -> Result<()> {
            let snapshot = || shared.latency.lock().map(|h| h.clone()).ok();
            loop {
                let last = stopped.recv_timeout(every) != Err(mpsc::RecvTimeoutError::Timeout);
                // Cloned under the lock, written without it: the
                // connections keep recording meanwhile.
                if let Some(total) = snapshot() {
                    log.interval(&total)?;
                }
                if last {
                    return Ok(());
                }
            }
        });
        Ok(HistLogger { stop, thread })
    }

    /// Write the last interval (call once every sample is recorded).
    pub(crate) fn finish(self) -> Result<()> {
        let _ = self.stop.send(());
        self.thread
            .join()
            .map_err(|_| anyhow!("the --hist-log writer panicked"))?
    }
}

/// Arguments of `loadgen merge`.
#[derive(clap::Args, Debug, Clone)]
pub struct MergeArgs {
    /// Interval logs written by `loadgen run --hist-log` (or any
    /// HdrHistogram interval log of nanosecond values).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// One log's share of a merge.
#[derive(Debug, Clone, Serialize)]
pub struct LogSummary {
    pub file: String,
    pub intervals: usize,
    pub count: u64,
}

/// What `loadgen merge` prints: every log's counts and the percentiles of
/// all their samples together.
#[derive(Debug, Clone, Serialize)]
pub struct Merged {
    pub logs: Vec<LogSummary>,
    /// Microseconds, like `loadgen run`'s report.
    pub latency: Latency,
    #[serde(skip)]
    pub histogram: Histogram<u64>,
}

/// Read every interval of `path` into `into`; (intervals, samples).
pub fn read_log(path: &Path, into: &mut Histogram<u64>) -> Result<(usize, u64)> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut deserializer = Deserializer::new();
    let (mut intervals, mut count) = (0, 0);
    for (i, entry) in IntervalLogIterator::new(&text).enumerate() {
        let entry = entry.map_err(|e| {
            anyhow!(
                "{}: entry {} is not an interval log line ({e:?})",
                path.display(),
                i + 1
            )
        })?;
        let LogEntry::Interval(interval) = entry else {
            continue; // StartTime, BaseTime
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(interval.encoded_histogram())
            .with_context(|| format!("{}: interval {}: bad base64", path.display(), i + 1))?;
        let h: Histogram<u64> = deserializer
            .deserialize(&mut &bytes[..])
            .map_err(|e| anyhow!("{e:?}"))
            .with_context(|| {
                format!(
                    "{}: interval {}: not an HdrHistogram",
                    path.display(),
                    i + 1
                )
            })?;
        into.add(&h)
            .map_err(|e| anyhow!("{e:?}"))
            .with_context(|| format!("{}: interval {}", path.display(), i + 1))?;
        intervals += 1;
        count += h.len();
    }
    if intervals == 0 {
        bail!(
            "{}: no interval found (is it an HdrHistogram interval log?)",
            path.display()
        );
    }
    Ok((intervals, count))
}

/// Add up every interval of every log.
pub fn merge(files: &[PathBuf]) -> Result<Merged> {
    let mut total = Histogram::<u64>::new(3).context("histogram")?;
    let mut logs = Vec::new();
    for f in files {
        let (intervals, count) = read_log(f, &mut total)?;
        logs.push(LogSummary {
            file: f.display().to_string(),
            intervals,
            count,
        });
    }
    Ok(Merged {
        logs,
        latency: Latency::from_hist(&total),
        histogram: total,
    })
}

/// `loadgen merge`.
pub fn execute(args: MergeArgs) -> Result<bool> {
    let m = merge(&args.files)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&m)?)?;
    } else {
        let us = crate::latency::us;
        for l in &m.logs {
            writeln!(
                out,
                "{}: {} intervals, {} echoes",
                l.file, l.intervals, l.count
            )?;
        }
        let lat = &m.latency;
        writeln!(
            out,
            "merged {} logs: {} echoes; latency p50 {}, p90 {}, p99 {}, p99.9 {}, max {}",
            m.logs.len(),
            lat.count,
            us(lat.p50_us),
            us(lat.p90_us),
            us(lat.p99_us),
            us(lat.p999_us),
            us(lat.max_us)
        )?;
    }
    out.flush()?;
    Ok(true)
}
