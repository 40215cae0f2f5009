//! `loadgen compare --chat` with tiny settings (3 members, 300 ms, 2
//! rounds, all three designs): every row x cell is in compare.json, every
//! line said reached every reading member, in each round; compare.md has
//! one row per cell; `--chat --publish` is refused.
//!
//! Run with: `cargo test -p loadgen --test compare_chat`.

// Helpers outside #[test] functions may unwrap too: a test failing loudly is the point.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

mod run_support;
use run_support::output_within;

#[test]
fn chat_compare_has_every_design_and_cell_with_every_delivery() {
    // Rebuilt first if older than its sources: `compare` (the child
    // below) then finds the fresh one next to itself.
    loadgen::child::fresh_binary("chat").unwrap();
    let out = std::env::temp_dir().join(format!("loadgen-compare-chat-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["compare", "--chat", "--members", "3", "--stalled", "0,1"])
        // 20 lines a second each: 6 lines a member in 300 ms, far below
        // what any design (or a stalled member's 64 KiB outbox) notices.
        .args(["--chat-rate", "20", "--duration", "300ms"])
        .args(["--rounds", "2", "--seed", "7"])
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // 12 runs of ~0.3 s plus start-ups and stops; generous for a loaded machine.
    let result = output_within(child, Duration::from_secs(180));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{stderr}");
    assert!(stderr.contains("seed 7"), "{stderr}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    assert_eq!(json["kind"], "chat");
    assert_eq!(json["rounds"], 2);
    assert!(
        json["server_flags"]
            .as_str()
            .unwrap()
            .contains("--max-pending 64KiB --slow skip")
    );
    let cells = json["cells"].as_array().unwrap();
    let keys: Vec<(String, u64)> = cells
        .iter()
        .map(|c| {
            (
                c["server"].as_str().unwrap().to_string(),
                c["stalled"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64)> = ["threads", "tokio", "event-loop"]
        .iter()
        .flat_map(|s| [(s.to_string(), 0), (s.to_string(), 1)])
        .collect();
    assert_eq!(keys, want, "{stderr}");
    for c in cells {
        assert_eq!(c["status"], "ok", "{c}");
        assert_eq!(c["members"], 3, "{c}");
        assert_eq!(c["rate"].as_f64(), Some(20.0), "{c}");
        // 3 members x 2 others x 20 lines a second.
        assert_eq!(c["expected_deliveries_per_sec"].as_f64(), Some(120.0));
        let runs = c["runs"].as_array().unwrap();
        let rounds: Vec<u64> = runs.iter().map(|r| r["round"].as_u64().unwrap()).collect();
        assert_eq!(rounds, [1, 2], "{c}");
        for r in runs {
            let (said, delivered, expected) = (
                r["said"].as_u64().unwrap(),
                r["delivered"].as_u64().unwrap(),
                r["expected"].as_u64().unwrap(),
            );
            assert!(said > 0, "{r}");
            // Every line said reached both other members, none twice.
            assert_eq!(expected, said * 2, "{r}");
            assert_eq!(delivered, expected, "{r}");
            assert!(r["deliveries_per_sec"].as_f64().unwrap() > 0.0, "{r}");
            assert!(r["p99_us"].as_f64().unwrap() >= 1.0, "{r}");
            assert!(r["peak_rss_bytes"].as_u64().unwrap() > 0, "{r}");
            assert_eq!(r["clean_exit"], true, "{r}");
        }
        // The threads design is the divisor of `x threads`; /proc counts
        // CPU in 10 ms ticks, so at this tiny load a run may show none,
        // and then there is no ratio (never a division by zero).
        let x = c["x_threads"].as_f64();
        let base = cells
            .iter()
            .find(|b| b["server"] == "threads" && b["stalled"] == c["stalled"])
            .unwrap();
        let base_cpu: Vec<f64> = base["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["server_cpu_us_per_delivery"].as_f64().unwrap())
            .collect();
        if base_cpu.iter().all(|&b| b > 0.0) {
            if c["server"] == "threads" {
                assert_eq!(x, Some(1.0), "{c}");
            } else {
                assert!(x.is_some_and(|x| x >= 0.0), "{c}");
            }
        } else if base_cpu.iter().all(|&b| b == 0.0) {
            assert_eq!(x, None, "{c}");
        }
    }

    // Markdown: a header, a separator, one row per cell, all as wide.
    let md = std::fs::read_to_string(out.join("compare.md")).unwrap();
    let header = "| design | members | stalled | rate (lines/s each) |";
    assert!(md.contains(header), "{md}");
    let table: Vec<&str> = md
        .lines()
        .skip_while(|l| !l.starts_with(header))
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert_eq!(table.len(), 2 + 6, "{md}");
    let columns = table[0].matches('|').count();
    for l in &table {
        assert_eq!(
            l.matches('|').count() - l.matches("\\|").count(),
            columns,
            "{l}"
        );
    }
    assert!(md.contains("| tokio | 3 | 1 | 20 | 120 |"), "{md}");
    assert!(md.contains("| threads | 3 | 0 | 20 | 120 |"), "{md}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn chat_compare_refuses_publish_and_echo_only_flags() {
    for (flags, says) in [
        (&["--chat", "--publish"][..], "chat rows are not published"),
        (&["--chat", "--conns", "10"], "--conns"),
        (&["--members", "10"], "--chat"),
    ] {
        let child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .arg("compare")
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = output_within(child, Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?}: {stderr}");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
    }
}
