//! Running `loadgen check` against a student's server and turning each case
//! into a grading step. loadgen is the workspace's conformance checker; the
//! cases that fit a bare exercise are picked by the grader.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::harness::{Check, Run, cargo_streaming, fail, run_with_deadline};
use crate::i18n::tr;

/// The loadgen binary, built once per run of the lab (in the workspace's own
/// target directory). Built even when it exists: a binary left from before
/// the last `git pull` would grade with an older checker, and cargo's "up to
/// date" costs a fraction of a second. A first build takes a minute or more,
/// so it is announced, cargo's progress shown as it goes, and its time said
/// at the end. `None` when it cannot be built: the caller then skips those
/// steps and says so.
fn binary(run: &mut Run) -> Option<PathBuf> {
    static BUILT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let bin = run.root.join("target").join("debug").join("loadgen");
    let ok = match BUILT.get() {
        Some(ok) => *ok,
        None => {
            let started = Instant::now();
            let root = run.root.clone();
            let args: Vec<String> = ["build", "--offline", "-p", "loadgen"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let mut announced = false;
            let result = cargo_streaming(&args, &root, &mut |line| {
                if !announced {
                    announced = true;
                    run.announce(&tr("building loadgen (cargo build -p loadgen), once"));
                }
                run.progress(line);
            });
            let ok = matches!(result, Ok((true, _)));
            if announced {
                let secs = started.elapsed().as_secs_f64();
                run.announce(&tr(&format!("loadgen built in {secs:.0} s")));
            }
            *BUILT.get_or_init(|| ok)
        }
    };
    (ok && bin.exists()).then_some(bin)
}

/// `loadgen check --addr ADDR <flags> --json`: one step per case. `why`
/// maps a failed case's name to the mistake it usually means.
pub fn check(
    run: &mut Run,
    addr: std::net::SocketAddr,
    flags: &[&str],
    why: &dyn Fn(&str) -> String,
) -> Check {
    run.step(format!("loadgen check {}", flags.join(" ")));
    let Some(bin) = binary(run) else {
        run.note("skipped: loadgen could not be built (cargo build -p loadgen shows why)");
        return Ok(());
    };
    let mut args = vec![
        "check".to_string(),
        "--addr".into(),
        addr.to_string(),
        "--json".into(),
    ];
    args.extend(flags.iter().map(|s| s.to_string()));
    let ran = run_with_deadline(&bin, &args, Duration::from_secs(90))
        .map_err(|e| fail("loadgen to run", e.to_string(), ""))?;
    if ran.status.is_none() {
        return Err(fail(
            "loadgen check to finish within 90 s",
            "it was still running, so it was stopped",
            "your server stopped answering",
        ));
    }
    let doc: serde_json::Value = serde_json::from_str(&ran.stdout).map_err(|_| {
        fail(
            "loadgen's JSON report",
            ran.stderr.lines().last().unwrap_or("nothing").to_string(),
            "",
        )
    })?;
    let cases = doc["cases"].as_array().cloned().unwrap_or_default();
    for c in cases {
        let name = c["name"].as_str().unwrap_or("?").to_string();
        let status = c["status"].as_str().unwrap_or("?");
        if status == "SKIP" {
            continue;
        }
        run.step(format!("  case {name}"));
        if status == "FAIL" {
            return Err(fail(
                c["expected"].as_str().unwrap_or("").to_string(),
                c["got"].as_str().unwrap_or("").to_string(),
                why(&name),
            ));
        }
    }
    Ok(())
}
