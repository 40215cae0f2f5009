//! `lab`: graded exercises for the course, rustlings-style.
//!
//! ```text
//! cargo run -p lab                  progress, and the next exercise
//! cargo run -p lab -- list          every exercise, done or not
//! cargo run -p lab -- check [N]     grade exercise N (default: the next one)
//! cargo run -p lab -- watch         grade the next exercise on every save
//! cargo run -p lab -- hint N        a hint
//! cargo run -p lab -- solution N    the reference solution, once N passes
//! cargo run -p lab -- reset N       put the starter back
//! cargo run -p lab -- self-check    prove every grader: starter fails, each
//!                                   wrong solution is rejected by name, the
//!                                   reference passes
//! ```
//!
//! Each exercise is a small cargo package under `lab/exercises/`, outside the
//! course workspace, built into `target/lab`. Its grader (in `src/graders/`)
//! runs the student's program over real sockets on 127.0.0.1:0 and explains a
//! failure step by step; see `lab/README.md`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod catalog;
/// The grader drivers' report encoder, compiled into the tests so both
/// halves of the driver protocol are tested together.
#[cfg(test)]
#[path = "../exercises/grader_support.rs"]
mod driver_support;
mod graders;
mod harness;
mod loadgen;
mod selfcheck;

use catalog::{EXERCISES, Exercise};
use harness::{Paths, Run, fail};

#[derive(Parser, Debug)]
#[command(
    name = "lab",
    about = "Graded exercises: edit the starter, run `check`, read what the grader saw"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Every exercise, in course order, with its status.
    List,
    /// Grade one exercise (by number or name; default: the next unsolved).
    Check { exercise: Option<String> },
    /// Grade the next unsolved exercise again every time you save a file.
    Watch,
    /// Show the hint of an exercise.
    Hint { exercise: String },
    /// Show the reference solution (only once your own passes).
    Solution { exercise: String },
    /// Put the starter file back (your version is kept in target/lab/reset-backups/).
    Reset { exercise: String },
    /// For every exercise (or the ones named): the starter must fail, each
    /// typical wrong solution must be rejected with a message naming its
    /// mistake, and the reference must pass.
    SelfCheck { exercises: Vec<String> },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<bool> {
    let paths = Paths::new();
    match cli.cmd {
        None => {
            status(&paths);
            Ok(true)
        }
        Some(Cmd::List) => {
            list(&paths);
            Ok(true)
        }
        Some(Cmd::Check { exercise }) => {
            let ex = match exercise {
                Some(k) => lookup(&k)?,
                None => match next(&paths) {
                    Some(e) => e,
                    None => {
                        println!("Every exercise passes. Well done.");
                        return Ok(true);
                    }
                },
            };
            Ok(check(&paths, ex))
        }
        Some(Cmd::Watch) => watch(&paths),
        Some(Cmd::Hint { exercise }) => {
            let ex = lookup(&exercise)?;
            println!("Hint for {} ({}):\n\n{}", ex.dir, ex.title, ex.hint);
            Ok(true)
        }
        Some(Cmd::Solution { exercise }) => {
            let ex = lookup(&exercise)?;
            if !done(&paths).contains(ex.dir) {
                bail!(
                    "exercise {} does not pass yet: the solution is shown after it does \
                     (`cargo run -p lab -- check {}`; stuck? `cargo run -p lab -- hint {}`)",
                    ex.num,
                    ex.num,
                    ex.num
                );
            }
            let path = paths.solutions.join(ex.dir).join("reference.rs");
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            println!("// Reference solution for {}: {}\n{text}", ex.dir, ex.file);
            Ok(true)
        }
        Some(Cmd::Reset { exercise }) => {
            let ex = lookup(&exercise)?;
            let file = paths.exercises.join(ex.dir).join(ex.file);
            let starter = paths.solutions.join(ex.dir).join("starter.rs");
            // Your version is kept outside the source tree (git never sees it).
            let backup = paths
                .target
                .join("reset-backups")
                .join(format!("{}.rs", ex.dir));
            if file.exists() {
                if let Some(dir) = backup.parent() {
                    std::fs::create_dir_all(dir).context("making target/lab/reset-backups")?;
                }
                std::fs::copy(&file, &backup).context("saving your version")?;
            }
            std::fs::copy(&starter, &file)
                .with_context(|| format!("writing {}", file.display()))?;
            let mut d = done(&paths);
            d.remove(ex.dir);
            save(&paths, &d)?;
            println!(
                "{} is the starter again (your version: {}).",
                rel(&paths, &file),
                rel(&paths, &backup)
            );
            Ok(true)
        }
        Some(Cmd::SelfCheck { exercises }) => {
            let picked: Vec<&Exercise> = if exercises.is_empty() {
                EXERCISES.iter().collect()
            } else {
                exercises.iter().map(|k| lookup(k)).collect::<Result<_>>()?
            };
            selfcheck::run(&paths, &picked)
        }
    }
}

fn lookup(key: &str) -> Result<&'static Exercise> {
    match catalog::find(key) {
        Some(e) => Ok(e),
        None => bail!("no exercise {key:?} (`cargo run -p lab -- list` names them)"),
    }
}

fn rel(paths: &Paths, p: &Path) -> String {
    p.strip_prefix(&paths.root)
        .unwrap_or(p)
        .display()
        .to_string()
}

// ---------------------------------------------------------------- progress

/// The exercises that passed, one directory name a line in `lab/.progress`
/// (git-ignored: it is yours, not the course's).
fn done(paths: &Paths) -> BTreeSet<String> {
    std::fs::read_to_string(&paths.progress)
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn save(paths: &Paths, d: &BTreeSet<String>) -> Result<()> {
    let mut s = String::new();
    for e in EXERCISES.iter().filter(|e| d.contains(e.dir)) {
        s.push_str(e.dir);
        s.push('\n');
    }
    std::fs::write(&paths.progress, s).context("writing lab/.progress")
}

fn next(paths: &Paths) -> Option<&'static Exercise> {
    let d = done(paths);
    EXERCISES.iter().find(|e| !d.contains(e.dir))
}

fn status(paths: &Paths) {
    let d = done(paths);
    let n = EXERCISES.iter().filter(|e| d.contains(e.dir)).count();
    println!("lab: {n} of {} exercises pass.\n", EXERCISES.len());
    let bar: String = EXERCISES
        .iter()
        .map(|e| if d.contains(e.dir) { '#' } else { '.' })
        .collect();
    println!("  [{bar}]\n");
    match next(paths) {
        None => println!("Every exercise passes. `cargo run -p lab -- list` shows them all."),
        Some(e) => {
            let file = paths.exercises.join(e.dir).join(e.file);
            println!("Next: exercise {}, {}", e.num, e.title);
            println!("  1. open   {}", rel(paths, &file));
            println!(
                "  2. grade  cargo run -p lab -- check {}   (or `watch`: re-checks on every save)",
                e.num
            );
            println!("  3. stuck? cargo run -p lab -- hint {}", e.num);
        }
    }
}

fn list(paths: &Paths) {
    let d = done(paths);
    let next = next(paths).map(|e| e.num);
    for e in EXERCISES {
        let mark = if d.contains(e.dir) {
            "done"
        } else if Some(e.num) == next {
            "next"
        } else {
            ""
        };
        println!(
            "{:>2}  {:<4}  {:<22} {:<16} {}",
            e.num, mark, e.dir, e.chapter, e.title
        );
    }
}

// ---------------------------------------------------------------- checking

/// Build and grade one exercise in `workspace`; prints as it goes when
/// `live`. Returns whether it passed and everything it printed.
pub fn grade(
    paths: &Paths,
    ex: &Exercise,
    workspace: &Path,
    target: &Path,
    live: bool,
    whole: bool,
) -> (bool, String) {
    let bin = target.join("debug").join(ex.bin_name());
    let mut run = Run::new(bin, paths.root.clone(), live);
    run.emit(&format!("Checking exercise {}: {}\n", ex.num, ex.title));
    run.step(format!("build {}", ex.package));
    let result = match harness::build(workspace, target, ex.package, whole) {
        Err(first) => Err(fail(
            "your code to compile",
            first,
            format!(
                "fix the first error; the whole message: cargo build --manifest-path lab/exercises/Cargo.toml -p {}",
                ex.package
            ),
        )),
        Ok(()) => (ex.grade)(&mut run),
    };
    let ok = run.finish(&result, &format!("cargo run -p lab -- hint {}", ex.num));
    (ok, run.output().to_string())
}

fn check(paths: &Paths, ex: &Exercise) -> bool {
    let (ok, _) = grade(paths, ex, &paths.exercises, &paths.target, true, false);
    let mut d = done(paths);
    if ok {
        println!("Exercise {} passes.", ex.num);
        d.insert(ex.dir.to_string());
        if let Err(e) = save(paths, &d) {
            eprintln!("lab: {e:#}");
        }
        println!(
            "  Compare with the reference: cargo run -p lab -- solution {}",
            ex.num
        );
        match next(paths) {
            Some(n) => println!(
                "  Next: exercise {}, {} (cargo run -p lab -- check {})",
                n.num, n.title, n.num
            ),
            None => println!("  That was the last one: every exercise passes."),
        }
    } else if d.remove(ex.dir) {
        let _ = save(paths, &d);
    }
    ok
}

/// The newest modification time of anything under `dir` (src/ of an exercise).
fn newest(dir: &Path) -> Option<SystemTime> {
    let mut best = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                best = best.max(Some(m));
            }
        }
    }
    best
}

fn watch(paths: &Paths) -> Result<bool> {
    println!("lab watch: grading the next exercise now and on every save (Ctrl-C to stop).\n");
    loop {
        let Some(ex) = next(paths) else {
            println!("Every exercise passes. Well done.");
            return Ok(true);
        };
        let src = paths.exercises.join(ex.dir).join("src");
        let seen = newest(&src);
        let passed = check(paths, ex);
        if passed {
            println!();
            continue;
        }
        println!(
            "\nWaiting for you to save {} ...",
            rel(paths, &paths.exercises.join(ex.dir).join(ex.file))
        );
        // Poll the modification times twice a second: no file-watching
        // dependency, and an editor's save-by-rename is seen as well.
        let since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = newest(&src);
            if now != seen {
                // Let an editor finish writing before we build.
                std::thread::sleep(Duration::from_millis(200));
                println!("\n--- changed after {} s ---", since.elapsed().as_secs());
                break;
            }
        }
    }
}
