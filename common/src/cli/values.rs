//! The value parsers behind the shared flags, and the text forms of their
//! values: sizes (`64KiB`), durations (`500ms`), counts, each with its
//! accepted range, so a useless value is refused while parsing with a
//! message that names the range. `--help` shows every default through
//! [`size_text`] and [`duration_text`], which [`parse_size`] and
//! [`parse_duration`] read back.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::limits;

/// A size in an error message: [`size_text`], with "bytes" spelled out
/// when it has no unit.
fn size_name(n: usize) -> String {
    match size_text(n) {
        _ if n == 1 => "1 byte".to_owned(),
        t if t.bytes().all(|b| b.is_ascii_digit()) => format!("{n} bytes"),
        t => t,
    }
}

fn size_in(s: &str, (lo, hi): (usize, usize)) -> Result<usize, String> {
    let v = parse_size(s)?;
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "must be between {} and {}",
            size_name(lo),
            size_name(hi)
        ))
    }
}

fn duration_in(s: &str, (lo, hi): (Duration, Duration)) -> Result<Duration, String> {
    let v = parse_duration(s)?;
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else if lo.is_zero() {
        Err(format!("must be 0 (off) or at most {hi:?}"))
    } else {
        Err(format!("must be between {lo:?} and {hi:?}"))
    }
}

/// `--max-frame`: a size in [`limits::MAX_FRAME`]. 0 would refuse every frame.
pub fn parse_max_frame(s: &str) -> Result<usize, String> {
    size_in(s, limits::MAX_FRAME)
}

/// `--max-pending`: a size in [`limits::MAX_PENDING`].
pub fn parse_max_pending(s: &str) -> Result<usize, String> {
    size_in(s, limits::MAX_PENDING)
}

/// A whole number in `lo..=hi`, with clap's kind of message: the value
/// parser behind every count flag (`--max-conns`, `--work`, a chapter's
/// `--workers` or `--loops`).
pub fn count_in<T>(s: &str, lo: T, hi: T) -> Result<T, String>
where
    T: FromStr + PartialOrd + fmt::Display,
{
    match s.trim().parse::<T>() {
        Ok(n) if lo <= n && n <= hi => Ok(n),
        Ok(_) => Err(format!("must be between {lo} and {hi}")),
        Err(_) => Err(format!("`{s}` is not a whole number")),
    }
}

/// `--max-conns`: a count in [`limits::MAX_CONNS`]. 0 would refuse every client.
pub fn parse_max_conns(s: &str) -> Result<usize, String> {
    count_in(s, limits::MAX_CONNS.0, limits::MAX_CONNS.1)
}

/// `--work`: rounds in [`limits::WORK`].
pub fn parse_work(s: &str) -> Result<u32, String> {
    count_in(s, limits::WORK.0, limits::WORK.1)
}

/// A client's `--timeout`: 1 ms to an hour. Zero would mean "no timeout"
/// to a socket option, and `connect_timeout` refuses it.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    duration_in(s, (Duration::from_millis(1), Duration::from_secs(3600)))
}

/// `--idle-timeout`: 0 (off) up to a day.
pub fn parse_idle(s: &str) -> Result<Duration, String> {
    duration_in(s, limits::IDLE)
}

/// `--stall-timeout`: 1 ms to an hour.
pub fn parse_stall(s: &str) -> Result<Duration, String> {
    duration_in(s, limits::STALL)
}

/// `--grace`: 1 ms to ten minutes. Zero would cut every owed echo.
pub fn parse_grace(s: &str) -> Result<Duration, String> {
    duration_in(s, limits::GRACE)
}
/// Split `1.5ms` into `(1.5, "ms")`: the leading decimal number and the
/// unit after it (trimmed). `None` when there is no number in front.
pub fn number_and_unit(s: &str) -> Option<(f64, &str)> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    Some((num.parse().ok()?, unit.trim()))
}

/// Parse `30s`, `500ms`, `2m`, `1.5s`, `100us`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.starts_with('-') {
        return Err(format!("`{s}`: a duration cannot be negative"));
    }
    let (value, unit) = number_and_unit(s)
        .ok_or_else(|| format!("`{s}` is not a duration (try 30s, 500ms, 2m)"))?;
    let secs = match unit {
        "" | "s" | "sec" | "secs" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{s}` (use ms, s, m or h)"
            ));
        }
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A size as a person would type it, and as [`parse_size`] reads it back:
/// `1GiB`, `1MiB`, `256KiB`, or plain bytes.
pub fn size_text(n: usize) -> String {
    match n {
        0 => "0".into(),
        n if n % (1 << 30) == 0 => format!("{}GiB", n >> 30),
        n if n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
        n => n.to_string(),
    }
}

/// A duration as a person would type it, and as [`parse_duration`] reads
/// it back: `30s`, `500ms`, `0`.
pub fn duration_text(d: Duration) -> String {
    match d.as_millis() {
        0 if d.is_zero() => "0".into(),
        ms if ms % 1000 == 0 && d.subsec_nanos() == 0 => format!("{}s", d.as_secs()),
        ms if Duration::from_millis(ms as u64) == d => format!("{ms}ms"),
        _ => format!("{}us", d.as_micros()),
    }
}

/// Parse a byte count: `1024`, `64K`, `16KiB`, `1M`, `1MiB` (K and M are
/// binary here: 1K = 1024 bytes, as socket buffer sizes usually are).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: usize = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (try 65536, 64KiB, 1MiB)"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{s}` (use K, KiB, M, MiB)"
            ));
        }
    };
    value
        .checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}
