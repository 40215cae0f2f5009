//! Library exercises (3 line decoder, 4 length decoder, 9 TLS configs) are
//! graded by a small driver, `exNN-...-grade`, compiled together with the
//! student's code (`lab/exercises/NN-*/grader/main.rs`), because only code in
//! the same crate can call the student's functions. The driver prints one
//! line per event on stdout and this module turns them into steps:
//!
//! ```text
//! STEP <title>
//! NOTE <text>
//! FAIL <expected>\t<got>\t<why>
//! PASS
//! ```
//!
//! The driver installs an allocator that refuses any single allocation over
//! 64 MiB, so a decoder that allocates what a peer merely announced aborts
//! with Rust's "memory allocation of N bytes failed", which is read here.

use std::time::Duration;

use crate::harness::{Check, Run, decode_field, describe_status, fail, run_with_deadline};

pub fn grade(run: &mut Run) -> Check {
    let bin = run.bin.clone();
    let ran = run_with_deadline(&bin, &[], Duration::from_secs(30))
        .map_err(|e| fail("the grader driver to start", e.to_string(), "is it built?"))?;
    for line in ran.stdout.lines() {
        if let Some(t) = line.strip_prefix("STEP ") {
            run.step(decode_field(t));
        } else if let Some(t) = line.strip_prefix("NOTE ") {
            run.note(&decode_field(t));
        } else if let Some(t) = line.strip_prefix("FAIL ") {
            let mut parts = t.splitn(3, '\t');
            let e = decode_field(parts.next().unwrap_or(""));
            let g = decode_field(parts.next().unwrap_or(""));
            let w = decode_field(parts.next().unwrap_or(""));
            return Err(fail(e, g, w));
        } else if line == "PASS" {
            return Ok(());
        }
    }
    if ran.status.is_none() {
        return Err(fail(
            "your function to return",
            "it was still running after 30 s, so it was killed",
            "a loop that never ends? each call must return Ok(None) when it needs more bytes",
        ));
    }
    if let Some(l) = ran
        .stderr
        .lines()
        .find(|l| l.contains("memory allocation of"))
    {
        let n = l
            .split_whitespace()
            .find_map(|w| w.parse::<u64>().ok())
            .unwrap_or(0);
        return Err(fail(
            "the announced length to be refused before anything is allocated",
            format!(
                "your code asked for {n} bytes (the length the peer announced), and the grader refused to give them"
            ),
            "compare the announced length with max before Vec::with_capacity, reserve or resize: \
             a peer can announce 4 GiB in four bytes, and then need never send them",
        ));
    }
    let last = ran
        .stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Err(fail(
        "the grader driver to finish",
        format!("it stopped ({}): {last}", describe_status(ran.status)),
        "",
    ))
}
