//! `lab self-check`: prove every grader honest. For each exercise, in a
//! temporary copy of the exercises workspace (`target/lab-selfcheck/ws`), put
//! in turn the starter (the file in lab/exercises as it is: the one copy of
//! it), each typical wrong solution and the reference solution in place of
//! the student's file, build, grade:
//!
//! - the starter must build and FAIL (a fresh student starts from red);
//! - each wrong solution must fail with a message containing the words it
//!   declares (`Wrong::must_say`), so the grader names that mistake;
//! - the reference must PASS;
//! - with `--lang zh-CN`: every message the graders showed must have a
//!   Chinese template in lab/i18n/zh-CN.po (the run ends with the list of
//!   those that have none).
//!
//! All its builds share one target directory, target/lab-selfcheck, and
//! every dependency is built once, up front. It is not lab/exercises/target,
//! the students' one: cargo identifies a workspace member by its path inside the
//! workspace, so the copy's `01-tcp-echo` and the real one would share one
//! fingerprint, and a later `lab check 1` could run the self-check's binary.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::catalog::Exercise;
use crate::harness::Paths;

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let name = e.file_name();
        if name == ".cargo" || name == "target" {
            continue;
        }
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(&name))?;
        } else {
            std::fs::copy(&p, to.join(&name))?;
        }
    }
    Ok(())
}

/// The first FAILED step of a grader's output, in one line, for the log.
fn failed_step(out: &str) -> String {
    let mut lines = out.lines();
    while let Some(l) = lines.next() {
        if l.trim_end().ends_with("FAILED") {
            let got = lines
                .find(|l| l.trim_start().starts_with("got:"))
                .map(|g| g.trim().trim_start_matches("got:").trim().to_string())
                .unwrap_or_default();
            let step = l
                .trim()
                .trim_end_matches("FAILED")
                .trim_end_matches(" ...")
                .trim();
            let mut got: String = got.chars().take(90).collect();
            if got.len() == 90 {
                got.push_str("...");
            }
            return format!("{step}: {got}");
        }
    }
    "no failed step".into()
}

pub fn run(paths: &Paths, exercises: &[&Exercise]) -> Result<bool> {
    let start = Instant::now();
    let target = paths.root.join("target").join("lab-selfcheck");
    let ws = target.join("ws");
    let _ = std::fs::remove_dir_all(&ws);
    copy_dir(&paths.exercises, &ws).context("copying lab/exercises")?;

    // The starter is the file in lab/exercises. Say so when it is not the
    // committed one: a teacher editing a starter wants that edit checked; a
    // student who solved it will see "the starter should fail" explained.
    let mut starters = Vec::new();
    for ex in exercises {
        let path = paths.exercises.join(ex.dir).join(ex.file);
        let mine = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        if let Ok((pristine, from)) = crate::starters::pristine(paths, ex)
            && pristine != mine
        {
            say!(
                "note: {} differs from the starter in {from}: checking the file as it is now",
                crate::starters::rel_path(ex)
            );
        }
        starters.push(mine);
    }

    say!("self-check: building every exercise and its dependencies once ...");
    let args = [
        "build",
        "--offline",
        "--manifest-path",
        &ws.join("Cargo.toml").display().to_string(),
        "--workspace",
        "--bins",
        "--target-dir",
        &target.display().to_string(),
    ]
    .map(String::from);
    let (ok, _) =
        crate::harness::cargo_streaming(&args, &paths.root, &mut |l| println!("      {l}"))
            .context("running cargo")?;
    if !ok {
        say!(
            "self-check: the starters do not all build (the first error is shown below per exercise)"
        );
    }
    say!(
        "self-check: dependencies built after {:.0} s",
        start.elapsed().as_secs_f64()
    );

    let (mut passed, mut failed) = (0usize, 0usize);
    for (ex, starter) in exercises.iter().zip(&starters) {
        let sol = paths.solutions.join(ex.dir);
        let target_file = ws.join(ex.dir).join(ex.file);
        let mut variants: Vec<(String, Option<&str>, bool)> =
            vec![("starter.rs".into(), None, false)];
        for w in ex.wrongs {
            variants.push((w.file.into(), Some(w.must_say), false));
        }
        variants.push(("reference.rs".into(), None, true));
        for (file, must_say, should_pass) in variants {
            let t = Instant::now();
            let label = format!("{} {}", ex.dir, file.trim_end_matches(".rs"));
            let put = if file == "starter.rs" {
                std::fs::write(&target_file, starter)
                    .map_err(|e| format!("cannot write the starter: {e}"))
            } else {
                std::fs::copy(sol.join(&file), &target_file)
                    .map(|_| ())
                    .map_err(|e| format!("cannot copy lab/solutions/{}/{file}: {e}", ex.dir))
            };
            // A verdict is (what it means, in English: translated when shown;
            // what the grader printed: the English record, shown as it is).
            let verdict: Result<(String, String), (String, String)> = match put {
                Err(e) => Err((e, String::new())),
                Ok(()) => {
                    let (ok, out) = crate::grade(paths, ex, &ws, &target, false, true);
                    let compiled = !out.contains("your code to compile");
                    let step = || format!(": {}", failed_step(&out));
                    let whole = || format!(":\n{out}");
                    match (should_pass, ok, must_say) {
                        (true, true, _) => Ok(("passes".into(), String::new())),
                        (true, false, _) => Err(("the reference should pass".into(), whole())),
                        (false, true, _) => {
                            Err(("should fail, but the grader passed it".into(), whole()))
                        }
                        (false, false, _) if !compiled => Err(("does not compile".into(), whole())),
                        (false, false, None) => Ok(("fails".into(), step())),
                        (false, false, Some(words)) => {
                            if out.to_lowercase().contains(&words.to_lowercase()) {
                                Ok((format!("rejected, naming it (\"{words}\")"), step()))
                            } else {
                                Err((
                                    format!("rejected, but the message does not say \"{words}\""),
                                    whole(),
                                ))
                            }
                        }
                    }
                }
            };
            let secs = t.elapsed().as_secs_f64();
            let tr = crate::i18n::tr;
            match verdict {
                Ok((what, detail)) => {
                    passed += 1;
                    println!("ok    {label:<44} {secs:>5.1} s  {}{detail}", tr(&what));
                }
                Err((what, detail)) => {
                    failed += 1;
                    println!("FAIL  {label:<44} {secs:>5.1} s  {}{detail}", tr(&what));
                }
            }
        }
        // Leave the copy as a student would find it.
        let _ = std::fs::write(&target_file, starter);
    }
    // In Chinese, a message shown in English is a defect of the catalog.
    let untranslated = if crate::i18n::lang() == crate::i18n::Lang::ZhCn {
        let misses = crate::i18n::misses();
        if !misses.is_empty() {
            println!(
                "FAIL  {}",
                crate::i18n::tr(&format!(
                    "{} messages have no Chinese template in lab/i18n/zh-CN.po:",
                    misses.len()
                ))
            );
            for m in &misses {
                println!("      msgid {m:?}");
            }
        }
        misses.len()
    } else {
        0
    };
    say!(
        "{passed} passed, {failed} failed ({} exercises, {:.0} s)",
        exercises.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(failed == 0 && untranslated == 0)
}
