//! The starters: one copy of each, the file in `lab/exercises/NN-name/`,
//! and `lab reset`, which puts it back and keeps every version it replaces.
//!
//! Where the pristine starter comes from once a student has edited the file:
//! 1. git, when the course is a git checkout: the file as committed at
//!    `HEAD` (`git show HEAD:./lab/exercises/...`). After a `git pull`
//!    that changed a starter, that is the new one.
//! 2. Otherwise (a tarball, no git): `lab/.starters/`, a copy of every
//!    exercise file the lab takes the first time it runs, before a student
//!    has had a reason to edit anything (the README's first command is
//!    `cargo run -p lab`). Git-ignored, never overwritten.
//!
//! An embedded copy (`include_str!`) would not do: cargo rebuilds the lab
//! when an included file changes, so it would embed the student's edits.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::catalog::{EXERCISES, Exercise};
use crate::harness::Paths;

/// `lab/exercises/NN-name/<file>`, relative to the course root.
pub fn rel_path(ex: &Exercise) -> String {
    format!("lab/exercises/{}/{}", ex.dir, ex.file)
}

fn snapshot_path(paths: &Paths, ex: &Exercise) -> PathBuf {
    paths
        .root
        .join("lab")
        .join(".starters")
        .join(ex.dir)
        .join(ex.file)
}

/// The starter as git has it at HEAD, if this is a git checkout that
/// tracks it.
fn from_git(paths: &Paths, ex: &Exercise) -> Option<Vec<u8>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(&paths.root)
        .args(["show", &format!("HEAD:./{}", rel_path(ex))])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status.success().then_some(out.stdout)
}

/// Take the first-run copies that do not exist yet (see the module doc).
/// Errors are ignored: the copy is a fallback for trees without git.
pub fn snapshot_missing(paths: &Paths) {
    for ex in EXERCISES {
        let to = snapshot_path(paths, ex);
        if to.exists() {
            continue;
        }
        let from = paths.exercises.join(ex.dir).join(ex.file);
        if let Some(dir) = to.parent()
            && std::fs::create_dir_all(dir).is_ok()
        {
            let _ = std::fs::copy(&from, &to);
        }
    }
}

/// The pristine starter, and where it came from.
pub fn pristine(paths: &Paths, ex: &Exercise) -> Result<(Vec<u8>, String)> {
    if let Some(b) = from_git(paths, ex) {
        return Ok((b, "git HEAD".into()));
    }
    let snap = snapshot_path(paths, ex);
    if let Ok(b) = std::fs::read(&snap) {
        return Ok((b, "lab/.starters (the lab's first-run copy)".into()));
    }
    bail!(
        "no pristine copy of {}: this is not a git checkout and lab/.starters has none; \
         take the file from the course's archive again",
        rel_path(ex)
    )
}

/// `YYYY-MM-DDTHH-MM-SSZ` (UTC, no colons: a valid file name everywhere).
pub fn stamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}-{:02}-{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Keep `current` (the student's file) in `dir` under a new name that
/// starts with the time, unless it is the starter itself. Never overwrites:
/// two resets in one second get `-2`, `-3`... Returns the backup's path.
pub fn backup(
    dir: &Path,
    file_name: &str,
    current: &[u8],
    starter: &[u8],
    now: SystemTime,
) -> Result<Option<PathBuf>> {
    if current == starter {
        return Ok(None);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
    let stamp = stamp(now);
    for k in 1..10_000 {
        let name = if k == 1 {
            format!("{stamp}-{file_name}")
        } else {
            format!("{stamp}-{k}-{file_name}")
        };
        let path = dir.join(name);
        // create_new: O_EXCL, so an existing backup is never replaced, even
        // by a second `lab reset` running at the same moment.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                use std::io::Write;
                f.write_all(current)
                    .with_context(|| format!("writing {}", path.display()))?;
                return Ok(Some(path));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }
    bail!("too many backups in {} this second", dir.display())
}

/// Where `lab reset N` keeps the versions it replaces: `lab/backups/NN-name/`
/// (outside target/, so `cargo clean` keeps them; git-ignored: they are yours).
pub fn backup_dir(paths: &Paths, ex: &Exercise) -> PathBuf {
    paths.root.join("lab").join("backups").join(ex.dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stamps_are_utc_dates() {
        assert_eq!(stamp(UNIX_EPOCH), "1970-01-01T00-00-00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_796_584_261);
        assert_eq!(stamp(t), "2026-12-06T19-11-01Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(stamp(leap), "2000-02-29T00-00-00Z");
    }

    /// Two resets in the same second keep both versions; a file that is
    /// the starter is not backed up; nothing is ever overwritten.
    #[test]
    fn every_backup_is_kept() {
        let dir = std::env::temp_dir().join(format!("lab-backup-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let now = UNIX_EPOCH + Duration::from_secs(1_796_584_261);
        let a = backup(&dir, "main.rs", b"first try", b"starter", now)
            .unwrap()
            .unwrap();
        let b = backup(&dir, "main.rs", b"second try", b"starter", now)
            .unwrap()
            .unwrap();
        assert_ne!(a, b);
        assert_eq!(std::fs::read(&a).unwrap(), b"first try");
        assert_eq!(std::fs::read(&b).unwrap(), b"second try");
        assert!(
            backup(&dir, "main.rs", b"starter", b"starter", now)
                .unwrap()
                .is_none()
        );
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The course keeps one copy of each starter: the file in lab/exercises.
    /// In a git checkout, reset's pristine copy is the committed file.
    #[test]
    fn one_copy_of_each_starter() {
        let p = Paths::new();
        for ex in EXERCISES {
            let dup = p.solutions.join(ex.dir).join("starter.rs");
            assert!(!dup.exists(), "a second copy: {}", dup.display());
            if let Some(committed) = from_git(&p, ex) {
                assert!(!committed.is_empty(), "{}", rel_path(ex));
            }
        }
    }
}
