//! The machine a measurement ran on, and CPU pinning.
//!
//! A figure without its environment cannot be compared with anything, so
//! `compare` records the kernel, the CPU count and model, the
//! file-descriptor limit and the pinning next to every result.
//!
//! Pinning (`sched_setaffinity(2)`): on a 2-core machine the server and the
//! load generator fight for the same cores, and the scheduler migrates them
//! back and forth. Pinning the server to CPU 0 and the load generator to
//! CPU 1 makes runs repeatable and makes "server CPU per request" mean one
//! thing; the price is that a multi-threaded server gets only one core.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use serde::Serialize;

/// Parse a CPU list: `0`, `1,3`, `0-3`.
pub fn parse_cpus(s: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("`{s}` is not a CPU list (try 0, 1,3 or 0-3)");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    if cpus.is_empty() || cpus.iter().any(|&c| c >= libc::CPU_SETSIZE as usize) {
        return Err(format!("`{s}` is not a usable CPU list"));
    }
    Ok(cpus)
}

fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: `c` < CPU_SETSIZE, checked by parse_cpus.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    set
}

/// Pin the calling thread, and every thread it creates afterwards, to `cpus`.
/// Call it before starting a runtime so its worker threads inherit the mask.
pub fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
    let set = cpu_set(cpus);
    // SAFETY: pid 0 = the calling thread; we pass a valid set and its size.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Make `cmd`'s child pin itself to `cpus` between fork and exec, so that
/// every thread the server ever starts is already on those CPUs (pinning
/// after spawn would race with the server creating its threads).
pub fn pin_command(cmd: &mut Command, cpus: &[usize]) {
    let set = cpu_set(cpus);
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed; sched_setaffinity is a plain
    // system call and `set` was built before the fork (no allocation here).
    unsafe {
        cmd.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
}

/// The environment recorded with every comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    pub date_utc: String,
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    /// Soft RLIMIT_NOFILE after raising it (inherited by the servers).
    pub fd_limit: u64,
    pub server_cpus: Option<Vec<usize>>,
    pub loadgen_cpus: Option<Vec<usize>>,
    pub loadgen_threads: usize,
    pub python: String,
    pub command: String,
}

impl Environment {
    pub fn collect(
        server_cpus: Option<Vec<usize>>,
        loadgen_cpus: Option<Vec<usize>>,
        loadgen_threads: usize,
    ) -> Self {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into())
        };
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let python = Command::new("python3")
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "not found".into());
        Environment {
            date_utc: utc_now(),
            nproc: online_cpus(),
            cpu_model,
            kernel: format!(
                "{} {}",
                read("/proc/sys/kernel/ostype"),
                read("/proc/sys/kernel/osrelease")
            ),
            fd_limit: fd_limit(),
            server_cpus,
            loadgen_cpus,
            loadgen_threads,
            python,
            command: std::env::args().collect::<Vec<_>>().join(" "),
        }
    }
}

/// The current soft RLIMIT_NOFILE.
pub fn fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        #[allow(clippy::useless_conversion)]
        u64::from(lim.rlim_cur)
    } else {
        0
    }
}

/// `2025-01-31 14:05 UTC`, without a date crate: days since 1970 to a civil
/// date (Howard Hinnant's algorithm).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// CPUs online on the machine. Not `available_parallelism`: that counts the
/// CPUs this process may run on, which is 1 once `--pin` has pinned the load
/// generator, and the report must describe the machine.
fn online_cpus() -> usize {
    // SAFETY: sysconf reads a system value; it touches no memory of ours.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n)
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpus("0"), Ok(vec![0]));
        assert_eq!(parse_cpus("1,3"), Ok(vec![1, 3]));
        assert_eq!(parse_cpus("0-2"), Ok(vec![0, 1, 2]));
        assert!(parse_cpus("x").is_err());
        assert!(parse_cpus("").is_err());
    }

    #[test]
    fn a_pinned_child_runs_only_on_its_cpu() {
        // What --pin does to the server: sched_setaffinity between fork and
        // exec, so the child (and every thread it starts) has the mask.
        let mut cmd = Command::new("grep");
        cmd.args(["Cpus_allowed_list", "/proc/self/status"]);
        pin_command(&mut cmd, &[0]);
        let out = cmd.output().expect("grep runs");
        let line = String::from_utf8_lossy(&out.stdout);
        assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
    }

    #[test]
    fn date_looks_like_a_date() {
        let d = utc_now();
        assert!(d.starts_with("20") && d.ends_with(" UTC"), "{d}");
        assert_eq!(d.len(), "2025-01-31 14:05 UTC".len());
    }
}
