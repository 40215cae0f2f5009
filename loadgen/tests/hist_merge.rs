//! `loadgen run --hist-log` and `loadgen merge`: two real runs (different
//! message sizes, so different latency distributions) against `epoll-ref`
//! on 127.0.0.1:0 write two interval logs; `loadgen merge` of both must
//! give exactly the counts and percentiles of one histogram holding both
//! runs' samples, built here from the runs' own in-memory histograms
//! (never from the files). A third run through the CLI checks the file
//! format HdrHistogram's tools expect and the CLI's counts.
//!
//! Run with: `cargo test -p loadgen --test hist_merge`

// Helpers outside #[test] functions may unwrap too: a test failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Framing;
use hdrhistogram::Histogram;
use loadgen::child::ServerProcess;
use loadgen::run::{RunConfig, Stop, run};

mod run_support;
use run_support::output_within;

fn start() -> ServerProcess {
    ServerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_epoll-ref")),
        &["--addr".into(), "127.0.0.1:0".into()],
        true,
        Duration::from_secs(20),
    )
    .unwrap()
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("loadgen-hist-{}-{name}", std::process::id()))
}

fn loadgen(args: &[&str]) -> std::process::Output {
    let child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = output_within(child, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "loadgen {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn merge_json(files: &[&Path]) -> serde_json::Value {
    let mut args = vec!["merge", "--json"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    serde_json::from_slice(&loadgen(&args).stdout).unwrap()
}

/// A run of `requests` echoes of `size` bytes, logged to `log`; its own
/// latency histogram.
fn logged_run(addr: std::net::SocketAddr, size: usize, log: &Path) -> Histogram<u64> {
    let mut c = RunConfig::new(addr);
    c.framing = Framing::Raw;
    c.conns = 8;
    c.size = size;
    c.stop = Stop::Requests(6000);
    c.hist_log = Some(log.to_path_buf());
    // Short intervals: the log has several, so the test sees them add up.
    c.hist_interval = Duration::from_millis(20);
    let r = run(&c).unwrap();
    assert!(r.ok(), "{r}");
    let h = r.latency_histogram.unwrap();
    assert_eq!(h.len(), 6000);
    h
}

/// What merge must print for `h`: count and percentiles in µs, computed
/// here from the histogram directly.
fn check_latency(got: &serde_json::Value, h: &Histogram<u64>, what: &str) {
    let us = |ns: u64| ns as f64 / 1000.0;
    let want = [
        ("count", h.len() as f64),
        ("p50_us", us(h.value_at_quantile(0.50))),
        ("p90_us", us(h.value_at_quantile(0.90))),
        ("p99_us", us(h.value_at_quantile(0.99))),
        ("p999_us", us(h.value_at_quantile(0.999))),
        ("max_us", us(h.max())),
        ("min_us", us(h.min())),
    ];
    for (key, want) in want {
        assert_eq!(got[key].as_f64(), Some(want), "{what}: {key} in {got}");
    }
}

#[test]
fn merge_of_two_runs_equals_one_histogram_of_both() {
    let server = start();
    let (a, b) = (tmp("a.hlog"), tmp("b.hlog"));
    let ha = logged_run(server.addr(), 64, &a);
    let hb = logged_run(server.addr(), 16 * 1024, &b);
    let mut both = ha.clone();
    both.add(&hb).unwrap();

    // Each log alone is its run's histogram, split into intervals.
    for (file, h) in [(&a, &ha), (&b, &hb)] {
        let one = merge_json(&[file]);
        check_latency(&one["latency"], h, &file.display().to_string());
        assert!(
            one["logs"][0]["intervals"].as_u64().unwrap() >= 2,
            "want several intervals: {one}"
        );
    }
    // Both: the exact percentiles of all 12,000 samples.
    let merged = merge_json(&[&a, &b]);
    check_latency(&merged["latency"], &both, "merged");
    assert_eq!(merged["logs"][0]["count"], 6000);
    assert_eq!(merged["logs"][1]["count"], 6000);
    // The two distributions differ, so a merge that kept only one log, or
    // averaged their percentiles, would be caught above.
    assert_ne!(ha.value_at_quantile(0.5), hb.value_at_quantile(0.5));

    // The text output says the same in words.
    let text =
        String::from_utf8(loadgen(&["merge", a.to_str().unwrap(), b.to_str().unwrap()]).stdout)
            .unwrap();
    assert!(text.contains("merged 2 logs: 12000 echoes"), "{text}");

    let (status, killed) = server.stop(Duration::from_secs(10)).unwrap();
    assert!(status.success() && !killed);
    for f in [a, b] {
        std::fs::remove_file(f).unwrap();
    }
}

#[test]
fn the_cli_writes_the_standard_interval_log_format() {
    let server = start();
    let log = tmp("cli.hlog");
    let addr = server.addr().to_string();
    let out = loadgen(&[
        "run",
        "--addr",
        &addr,
        "--framing",
        "raw",
        "--conns",
        "2",
        "--requests",
        "3000",
        "--json",
        "--hist-interval",
        "20ms",
        "--hist-log",
        log.to_str().unwrap(),
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Header: comments, StartTime and BaseTime, the legend line.
    assert!(
        lines.iter().any(|l| l.starts_with("#[StartTime: ")),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("#[BaseTime: ")),
        "{text}"
    );
    let legend = lines
        .iter()
        .position(|l| *l == loadgen::histlog::LEGEND)
        .unwrap_or_else(|| panic!("no legend line:\n{text}"));
    // Then `start,length,max,HISTF...` (V2 + deflate, base64) per interval.
    let intervals = &lines[legend + 1..];
    assert!(!intervals.is_empty());
    for l in intervals {
        let f: Vec<&str> = l.split(',').collect();
        assert_eq!(f.len(), 4, "{l}");
        for n in &f[..3] {
            assert!(n.parse::<f64>().is_ok(), "{l}");
        }
        assert!(f[3].starts_with("HISTF"), "{l}");
    }
    let merged = merge_json(&[&log]);
    assert_eq!(merged["latency"]["count"], report["latency"]["count"]);
    assert_eq!(merged["latency"]["count"], 3000);
    assert_eq!(merged["latency"]["p99_us"], report["latency"]["p99_us"]);
    assert_eq!(merged["latency"]["max_us"], report["latency"]["max_us"]);
    // A file that is not a log is a clear error, not an empty result.
    std::fs::write(&log, "hello\n").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["merge", log.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let bad = output_within(child, Duration::from_secs(20));
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("cli.hlog"), "{err}");
    std::fs::remove_file(&log).unwrap();
    let (status, killed) = server.stop(Duration::from_secs(10)).unwrap();
    assert!(status.success() && !killed);
}
