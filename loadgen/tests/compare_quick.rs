//! `loadgen compare --quick` restricted to two servers writes well-formed
//! markdown, JSON and SVG. One server is the Python baseline (needs only
//! python3); the other is the first chapter server that is built and
//! starts; if none does yet, a chapter server that is shown as skipped or
//! failed, which the files must show too.

// Helpers outside #[test] functions may unwrap too: a test failing loudly is the point.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use loadgen::child::ServerProcess;

mod run_support;
use run_support::output_within;

/// A chapter server that starts and announces its address, if any.
fn working_chapter_server() -> Option<&'static str> {
    let candidates = [
        ("async-tokio", "async-server", &["--model", "tokio"][..]),
        ("event-loop", "async-server", &["--model", "event-loop"][..]),
        ("threaded-pool", "threaded-server", &["--model", "pool"][..]),
        ("tcp-echo", "tcp-echo", &[][..]),
    ];
    for (name, bin, model) in candidates {
        let mut args: Vec<String> = vec!["server".into()];
        args.extend(model.iter().map(|s| s.to_string()));
        args.extend(["--addr", "127.0.0.1:0", "--framing", "raw"].map(String::from));
        // Rebuilt first if older than its sources: `compare` (the child
        // below) then finds the fresh one next to itself.
        let Ok(path) = loadgen::child::fresh_binary(bin) else {
            continue;
        };
        if let Ok(server) = ServerProcess::start(&path, &args, true, Duration::from_secs(5)) {
            let _ = server.stop(Duration::from_secs(5));
            return Some(name);
        }
    }
    None
}

fn out_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("loadgen-compare-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn quick_compare_of_two_servers_writes_md_json_svg() {
    if !run_support::python3_available() {
        eprintln!("python3 not installed: skipping");
        return;
    }
    let other = working_chapter_server();
    let second = other.unwrap_or("tcp-echo");
    let out = out_dir();
    let result = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["compare", "--quick", "--servers"])
        .arg(format!("python-asyncio,{second}"))
        .args([
            "--conns",
            "1,10",
            "--duration",
            "300ms",
            "--warmup",
            "100ms",
        ])
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // 4 cells of ~0.5 s each plus start-ups; generous for a loaded machine.
    let result = output_within(result, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&result.stderr);

    // JSON: one cell per server x connection count (the reference,
    // epoll-ref, added first), python's all ok.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    let cells = json["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 6, "{stderr}");
    assert_eq!(cells[0]["server"], "epoll-ref");
    assert_eq!(cells[0]["label"], "practical limit (epoll-ref)");
    for c in cells.iter().filter(|c| c["server"] == "epoll-ref") {
        assert_eq!(c["status"], "ok", "{c}");
        assert_eq!(c["x_ref"].as_f64(), Some(1.0), "{c}");
    }
    assert_eq!(
        json["environment"]["nproc"].as_u64().map(|n| n >= 1),
        Some(true)
    );
    assert!(
        json["environment"]["kernel"]
            .as_str()
            .unwrap()
            .contains("Linux")
    );
    for c in cells.iter().filter(|c| c["server"] == "python-asyncio") {
        assert_eq!(c["status"], "ok", "{c}");
        let m = &c["median"];
        assert!(m["requests_per_sec"].as_f64().unwrap() > 0.0);
        assert!(
            m["server_cpu_us_per_request"].as_f64().unwrap() > 0.0,
            "{m}"
        );
        assert_eq!(m["errors"], 0);
        assert_eq!(m["clean_exit"], true);
        // Its ratio to the reference of the same load, in this run.
        let reference = cells
            .iter()
            .find(|r| r["server"] == "epoll-ref" && r["conns"] == c["conns"])
            .unwrap();
        let want = m["server_cpu_us_per_request"].as_f64().unwrap()
            / reference["median"]["server_cpu_us_per_request"]
                .as_f64()
                .unwrap();
        let got = c["x_ref"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    }
    let second_status: Vec<&str> = cells
        .iter()
        .filter(|c| c["server"] == second)
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    if other.is_some() {
        // tcp-echo serves one client at a time: its 10-connection cell is
        // skipped, with the reason, never hidden.
        assert!(second_status[0] == "ok", "{second_status:?} {stderr}");
        assert!(result.status.success(), "{stderr}");
    } else {
        assert!(
            second_status
                .iter()
                .all(|s| *s == "skipped" || *s == "failed"),
            "{second_status:?}"
        );
    }

    // Markdown: a header, a separator, one row per cell, environment, rules.
    let md = std::fs::read_to_string(out.join("compare.md")).unwrap();
    let header = "| server | conns | size | work | req/s |";
    assert!(md.contains(header), "{md}");
    let table: Vec<&str> = md
        .lines()
        .skip_while(|l| !l.starts_with(header))
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert_eq!(table.len(), 2 + 6, "{md}");
    assert!(table[0].contains("| x ref |"), "{}", table[0]);
    assert!(
        md.contains("| practical limit (epoll-ref) | 1 | 64 B | 0 |") && md.contains("| ×1.00 |"),
        "{md}"
    );
    let columns = table[0].matches('|').count();
    assert!(
        table
            .iter()
            .all(|l| l.matches('|').count() - l.matches("\\|").count() == columns)
    );
    assert!(md.contains("| python-asyncio | 10 | 64 B | 0 |"), "{md}");
    assert!(md.contains("fd limit") && md.contains("## Fairness rules"));

    // SVG: three charts for the one (size, work) load, each naming python.
    for kind in ["throughput", "p99", "cpu"] {
        let svg = std::fs::read_to_string(out.join(format!("{kind}-64B-w0.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("python-asyncio") && svg.contains("<text"));
        assert!(svg.contains("practical limit (epoll-ref)"), "{kind}");
        assert!(md.contains(&format!("({kind}-64B-w0.svg)")));
    }
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn unknown_server_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["compare", "--servers", "nginx", "--out"])
        .arg(std::env::temp_dir().join("loadgen-never-written"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = output_within(out, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown server `nginx`") && stderr.contains("python-asyncio"));
}

#[test]
fn unix_mode_puts_tcp_beside_a_unix_socket() {
    // Rebuilt first if stale, so `compare` finds a fresh one next to itself.
    if loadgen::child::fresh_binary("async-server").is_err() {
        eprintln!("async-server does not build right now: skipping");
        return;
    }
    let out = std::env::temp_dir().join(format!("loadgen-compare-unix-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "compare",
            "--unix",
            "--servers",
            "event-loop",
            "--conns",
            "10",
        ])
        .args([
            "--sizes",
            "64",
            "--work",
            "0",
            "--duration",
            "300ms",
            "--warmup",
            "100ms",
        ])
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let result = output_within(child, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&result.stderr);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    let cells = json["cells"].as_array().unwrap();
    let names: Vec<&str> = cells
        .iter()
        .map(|c| c["server"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["epoll-ref", "event-loop", "event-loop+unix"],
        "{stderr}"
    );
    let unix = &cells[2];
    assert_eq!(unix["transport"], "unix");
    let md = std::fs::read_to_string(out.join("compare.md")).unwrap();
    if unix["status"] == "ok" {
        assert!(result.status.success(), "{stderr}");
        assert!(unix["median"]["verified"].as_u64().unwrap() > 0);
        assert!(md.contains("## Loopback TCP versus a Unix socket"), "{md}");
        assert!(md.contains("| event-loop | 10 | 64 B | 0 |"), "{md}");
        assert!(
            md.contains("| event-loop (unix socket) | 10 | 64 B | 0 |"),
            "{md}"
        );
    } else {
        // A server without unix: support: skipped, with the reason.
        assert_eq!(unix["status"], "skipped", "{unix}");
        assert!(unix["note"].as_str().unwrap().contains("unix"), "{unix}");
    }
    // The socket file is gone after the run.
    let sock = std::env::temp_dir().join(format!("loadgen-{pid}-event-loop.sock"));
    assert!(!sock.exists());
    std::fs::remove_dir_all(&out).unwrap();
}

/// `--rounds 3 --seed 7` with two extra rows (a plain one with `{addr}`,
/// and, if async-server builds, one that gets the common flags): every
/// runnable cell ran once per round, and each row's `x ref` is the median
/// of its per-round ratios to that round's reference, recomputed here
/// from the runs in the JSON.
#[test]
fn rounds_and_extra_rows_report_the_median_of_per_round_ratios() {
    let out = std::env::temp_dir().join(format!("loadgen-compare-rounds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadgen"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["compare", "--servers", "poll-ref", "--conns", "1,10"])
        .args([
            "--sizes", "64", "--work", "0", "--rounds", "3", "--seed", "7",
        ])
        .args(["--duration", "200ms", "--warmup", "50ms", "--extra"])
        .arg(format!(
            "old-ref={} --addr {{addr}}",
            env!("CARGO_BIN_EXE_epoll-ref")
        ));
    let with_after = loadgen::child::fresh_binary("async-server").ok();
    if let Some(bin) = &with_after {
        cmd.arg("--extra")
            .arg(format!("after={} server --model event-loop", bin.display()));
    }
    let child = cmd
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let result = output_within(child, Duration::from_secs(180));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{stderr}");
    assert!(
        stderr.contains("seed 7 (--seed 7 repeats this order)"),
        "{stderr}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    assert_eq!(
        (json["rounds"].as_u64(), json["seed"].as_u64()),
        (Some(3), Some(7))
    );
    let cells = json["cells"].as_array().unwrap();
    let rows: Vec<&str> = cells
        .iter()
        .map(|c| c["server"].as_str().unwrap())
        .step_by(2)
        .collect();
    let mut want = vec!["epoll-ref", "poll-ref", "old-ref"];
    if with_after.is_some() {
        want.push("after");
    }
    assert_eq!(rows, want, "{stderr}");
    let cpu_in = |c: &serde_json::Value, round: u64| -> f64 {
        let v: Vec<f64> = c["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["round"] == round)
            .map(|r| r["server_cpu_us_per_request"].as_f64().unwrap())
            .collect();
        assert_eq!(v.len(), 1, "one run per round: {c}");
        v[0]
    };
    for c in cells {
        assert_eq!(c["status"], "ok", "{c}");
        let rounds: Vec<u64> = c["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["round"].as_u64().unwrap())
            .collect();
        assert_eq!(rounds, [1, 2, 3], "{c}");
        let reference = cells
            .iter()
            .find(|r| r["server"] == "epoll-ref" && r["conns"] == c["conns"])
            .unwrap();
        let mut ratios: Vec<f64> = (1..=3)
            .map(|k| cpu_in(c, k) / cpu_in(reference, k))
            .collect();
        let got: Vec<f64> = c["x_ref_rounds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        // Equal but for the last bit JSON's decimal round trip may move.
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs();
        assert!(
            got.len() == 3 && got.iter().zip(&ratios).all(|(a, b)| close(*a, *b)),
            "{got:?} vs {ratios:?}: {c}"
        );
        ratios.sort_by(f64::total_cmp);
        assert!(close(c["x_ref"].as_f64().unwrap(), ratios[1]), "{c}");
        assert!(close(c["x_ref_spread"][0].as_f64().unwrap(), ratios[0]));
        assert!(close(c["x_ref_spread"][1].as_f64().unwrap(), ratios[2]));
    }
    let md = std::fs::read_to_string(out.join("compare.md")).unwrap();
    assert!(
        md.contains("3 interleaved rounds") && md.contains("seed 7"),
        "{md}"
    );
    assert!(
        md.contains("| old-ref | 10 | 64 B | 0 |") && md.contains("(IQR "),
        "{md}"
    );
    assert!(md.contains("--addr {addr}` | extra row"), "{md}");
    std::fs::remove_dir_all(&out).unwrap();
}
