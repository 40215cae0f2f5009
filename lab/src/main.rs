//! `lab`: graded exercises for the course, rustlings-style.
//!
//! ```text
//! cargo run -p lab                  progress, and the next exercise
//! cargo run -p lab -- list          every exercise, done or not
//! cargo run -p lab -- task N        what exercise N asks (in your language)
//! cargo run -p lab -- check [N]     grade exercise N (default: the next one)
//! cargo run -p lab -- watch         grade the next exercise on every save
//! cargo run -p lab -- hint N        a hint
//! cargo run -p lab -- solution N    the reference solution, once N passes
//! cargo run -p lab -- reset N       put the starter back (yours kept in lab/backups/)
//! cargo run -p lab -- self-check    prove every grader: starter fails, each
//!                                   wrong solution is rejected by name, the
//!                                   reference passes
//! ```
//!
//! `--lang zh-CN` (or a locale starting with `zh`: `LANG=zh_CN.UTF-8`) shows
//! everything in Simplified Chinese; `--lang en` forces English.
//!
//! Each exercise is a small cargo package under `lab/exercises/`, outside the
//! course workspace, built into `lab/exercises/target` (the same build as
//! `cargo build --manifest-path lab/exercises/Cargo.toml -p exNN-...`). Its
//! grader (in `src/graders/`) runs the student's program over real sockets
//! on 127.0.0.1:0 and explains a failure step by step; see `lab/README.md`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

/// `println!` of an English line, shown in the user's language. Defined
/// before the modules so that they can use it too.
macro_rules! say {
    () => { println!() };
    ($($arg:tt)*) => { println!("{}", $crate::i18n::tr(&format!($($arg)*))) };
}

mod catalog;
/// The grader drivers' report encoder, compiled into the tests so both
/// halves of the driver protocol are tested together.
#[cfg(test)]
#[path = "../exercises/grader_support.rs"]
mod driver_support;
mod graders;
mod harness;
mod i18n;
mod loadgen;
mod selfcheck;
mod starters;

use catalog::{EXERCISES, Exercise};
use harness::{Paths, Run, fail};
use i18n::tr;

#[derive(Parser, Debug)]
#[command(
    name = "lab",
    about = "Graded exercises: edit the starter, run `check`, read what the grader saw"
)]
struct Cli {
    /// Language of everything the lab prints: `en` or `zh-CN` (default: from
    /// LC_ALL, LC_MESSAGES or LANG; Chinese when it starts with `zh`).
    #[arg(long, global = true, value_name = "LANG")]
    lang: Option<String>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Every exercise, in course order, with its status.
    List,
    /// What an exercise asks: the task at the top of its file (in Chinese,
    /// its TASK.zh-CN.md).
    Task { exercise: String },
    /// Grade one exercise (by number or name; default: the next unsolved).
    Check { exercise: Option<String> },
    /// Grade the next unsolved exercise again every time you save a file.
    Watch,
    /// Show the hint of an exercise.
    Hint { exercise: String },
    /// Show the reference solution (only once your own passes).
    Solution { exercise: String },
    /// Put the starter file back. Your version is kept, never overwritten,
    /// in lab/backups/NN-name/ (timestamped; git-ignored).
    Reset { exercise: String },
    /// For every exercise (or the ones named): the starter must fail, each
    /// typical wrong solution must be rejected with a message naming its
    /// mistake, and the reference must pass. With --lang zh-CN, also every
    /// message shown must have a Chinese translation.
    SelfCheck { exercises: Vec<String> },
}

fn main() -> ExitCode {
    // `lab list | head` closes our stdout early: die quietly of SIGPIPE, as
    // command-line tools do, instead of panicking in println!.
    // SAFETY: restoring a signal's default disposition before any thread
    // is started has no memory-safety conditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    i18n::init(cli.lang.as_deref());
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("lab: {}", tr(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<bool> {
    let paths = Paths::new();
    starters::snapshot_missing(&paths);
    match cli.cmd {
        None => {
            status(&paths);
            Ok(true)
        }
        Some(Cmd::List) => {
            list(&paths);
            Ok(true)
        }
        Some(Cmd::Task { exercise }) => {
            let ex = lookup(&exercise)?;
            task(&paths, ex)
        }
        Some(Cmd::Check { exercise }) => {
            let ex = match exercise {
                Some(k) => lookup(&k)?,
                None => match next(&paths) {
                    Some(e) => e,
                    None => {
                        say!("Every exercise passes. Well done.");
                        return Ok(true);
                    }
                },
            };
            Ok(check(&paths, ex))
        }
        Some(Cmd::Watch) => watch(&paths),
        Some(Cmd::Hint { exercise }) => {
            let ex = lookup(&exercise)?;
            say!("Hint for {} ({}):", ex.dir, ex.title);
            println!("\n{}", tr(ex.hint));
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
            println!(
                "// {}\n{text}",
                tr(&format!("Reference solution for {}: {}", ex.dir, ex.file))
            );
            Ok(true)
        }
        Some(Cmd::Reset { exercise }) => {
            let ex = lookup(&exercise)?;
            reset(&paths, ex)
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

fn reset(paths: &Paths, ex: &Exercise) -> Result<bool> {
    let file = paths.exercises.join(ex.dir).join(ex.file);
    let (starter, from) = starters::pristine(paths, ex)?;
    let kept = match std::fs::read(&file) {
        Ok(current) => starters::backup(
            &starters::backup_dir(paths, ex),
            file.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("file.rs"),
            &current,
            &starter,
            SystemTime::now(),
        )?,
        Err(_) => None,
    };
    std::fs::write(&file, &starter).with_context(|| format!("writing {}", file.display()))?;
    let mut d = done(paths);
    d.remove(ex.dir);
    save(paths, &d)?;
    say!("{} is the starter again (from {from}).", rel(paths, &file));
    match kept {
        Some(b) => say!("Your version is kept in {}.", rel(paths, &b)),
        None => say!("It was the starter already: nothing to keep."),
    }
    Ok(true)
}

/// The task of an exercise: the `//!` header of its file in English, its
/// `TASK.zh-CN.md` in Chinese.
fn task(paths: &Paths, ex: &Exercise) -> Result<bool> {
    let dir = paths.exercises.join(ex.dir);
    if i18n::lang() == i18n::Lang::ZhCn {
        let p = dir.join("TASK.zh-CN.md");
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        print!("{text}");
        say!("The file to edit: {}", rel(paths, &dir.join(ex.file)));
        return Ok(true);
    }
    let p = dir.join(ex.file);
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    for l in text.lines().take_while(|l| l.starts_with("//!")) {
        println!(
            "{}",
            l.trim_start_matches("//!").strip_prefix(' ').unwrap_or("")
        );
    }
    say!("The file to edit: {}", rel(paths, &p));
    Ok(true)
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
    say!("lab: {n} of {} exercises pass.", EXERCISES.len());
    println!();
    let bar: String = EXERCISES
        .iter()
        .map(|e| if d.contains(e.dir) { '#' } else { '.' })
        .collect();
    println!("  [{bar}]\n");
    match next(paths) {
        None => say!("Every exercise passes. `cargo run -p lab -- list` shows them all."),
        Some(e) => {
            let file = paths.exercises.join(e.dir).join(e.file);
            say!("Next: exercise {}, {}", e.num, e.title);
            say!("  1. read   cargo run -p lab -- task {}", e.num);
            say!("  2. open   {}", rel(paths, &file));
            say!(
                "  3. grade  cargo run -p lab -- check {}   (or `watch`: re-checks on every save)",
                e.num
            );
            say!("  4. stuck? cargo run -p lab -- hint {}", e.num);
        }
    }
}

/// `s` padded with spaces to `cols` terminal columns (a Chinese character
/// takes two).
fn pad(s: &str, cols: usize) -> String {
    let width: usize = s.chars().map(|c| if c >= '\u{1100}' { 2 } else { 1 }).sum();
    format!("{s}{}", " ".repeat(cols.saturating_sub(width)))
}

fn list(paths: &Paths) {
    let d = done(paths);
    let next = next(paths).map(|e| e.num);
    let cols = if i18n::lang() == i18n::Lang::ZhCn {
        6
    } else {
        4
    };
    for e in EXERCISES {
        let mark = if d.contains(e.dir) {
            tr("done")
        } else if Some(e.num) == next {
            tr("next")
        } else {
            String::new()
        };
        println!(
            "{:>2}  {}  {:<22} {:<16} {}",
            e.num,
            pad(&mark, cols),
            e.dir,
            e.chapter,
            tr(e.title)
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
    let started = Instant::now();
    let built = harness::build(
        &paths.root,
        workspace,
        target,
        ex.package,
        whole,
        &mut |line| run.progress(line),
    );
    let result = match built {
        Err(first) => Err(fail(
            "your code to compile",
            first,
            format!(
                "fix the first error; the whole message: cargo build --manifest-path lab/exercises/Cargo.toml -p {}",
                ex.package
            ),
        )),
        Ok(()) => {
            // A build that took a while says how long: the first one compiles
            // every dependency, and the user should know that is what waited.
            let took = started.elapsed().as_secs_f64();
            if took >= 2.0 {
                run.pass_step(&format!("ok ({took:.0} s)"));
            }
            (ex.grade)(&mut run)
        }
    };
    let ok = run.finish(&result, &format!("cargo run -p lab -- hint {}", ex.num));
    (ok, run.output().to_string())
}

fn check(paths: &Paths, ex: &Exercise) -> bool {
    let (ok, _) = grade(paths, ex, &paths.exercises, &paths.target, true, false);
    let mut d = done(paths);
    if ok {
        say!("Exercise {} passes.", ex.num);
        d.insert(ex.dir.to_string());
        if let Err(e) = save(paths, &d) {
            eprintln!("lab: {e:#}");
        }
        say!(
            "  Compare with the reference: cargo run -p lab -- solution {}",
            ex.num
        );
        match next(paths) {
            Some(n) => say!(
                "  Next: exercise {}, {} (cargo run -p lab -- check {})",
                n.num,
                n.title,
                n.num
            ),
            None => say!("  That was the last one: every exercise passes."),
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
    say!("lab watch: grading the next exercise now and on every save (Ctrl-C to stop).");
    println!();
    loop {
        let Some(ex) = next(paths) else {
            say!("Every exercise passes. Well done.");
            return Ok(true);
        };
        let src = paths.exercises.join(ex.dir).join("src");
        let seen = newest(&src);
        let passed = check(paths, ex);
        if passed {
            println!();
            continue;
        }
        println!();
        say!(
            "Waiting for you to save {} ...",
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
                println!();
                say!("--- changed after {} s ---", since.elapsed().as_secs());
                break;
            }
        }
    }
}
