//! The command-line arguments every server shares, so that a flag means the
//! same thing and has the same default in every chapter.
//!
//! A chapter flattens [`ServerArgs`] into its own `server` subcommand:
//!
//! ```ignore
//! #[derive(clap::Parser)]
//! struct Server {
//!     #[command(flatten)]
//!     common: common::cli::ServerArgs,
//!     // chapter-specific flags...
//! }
//! ```
//!
//! Each chapter has its own default port (see the root README) so several
//! servers can run side by side; `--addr` overrides it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::framing::{DEFAULT_MAX_FRAME, Framing};

/// Default ports, one per chapter, so all servers can run at once.
pub mod ports {
    pub const TCP_ECHO: u16 = 7001;
    pub const UDP_ECHO: u16 = 7002;
    pub const THREADED_SERVER: u16 = 7003;
    pub const ASYNC_SERVER: u16 = 7004;
    pub const TLS_ECHO: u16 = 7005;
    pub const PYTHON_ASYNCIO: u16 = 7006;
}

/// Default `--max-conns`.
pub const DEFAULT_MAX_CONNS: usize = 1024;

/// Flags shared by every TCP server.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Address to listen on, HOST:PORT (IPv6 as [::1]:PORT). Port 0 picks a
    /// free port, which the server logs. [default: 127.0.0.1:<chapter port>]
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<String>,

    /// How frames are delimited: `line` (up to \n), `length` (4-byte
    /// big-endian length prefix) or `raw` (no framing, echo as received).
    #[arg(long, value_enum, default_value_t = Framing::Line)]
    pub framing: Framing,

    /// Largest frame accepted, in bytes (suffixes K, M, KiB, MiB). A bigger
    /// frame is logged and its connection closed; nothing is allocated for it.
    #[arg(long, value_name = "BYTES", default_value = "1MiB", value_parser = parse_size)]
    pub max_frame: usize,

    /// Most clients served at once. Over the limit a client is refused (or
    /// waits; each chapter documents which) and that is logged.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNS)]
    pub max_conns: usize,

    /// Close a connection that sends nothing for this long (`30s`, `500ms`,
    /// `2m`; `0` turns it off).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// CPU work per frame: N rounds of a hash over the payload before the
    /// echo (a stand-in for parsing or crypto). 0 = pure I/O.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub work: u32,
}

impl Default for ServerArgs {
    fn default() -> Self {
        ServerArgs {
            addr: None,
            framing: Framing::Line,
            max_frame: DEFAULT_MAX_FRAME,
            max_conns: DEFAULT_MAX_CONNS,
            idle_timeout: Duration::from_secs(30),
            work: 0,
        }
    }
}

impl ServerArgs {
    /// `--addr`, or 127.0.0.1 with the chapter's default port.
    pub fn socket_addr(&self, default_port: u16) -> std::io::Result<SocketAddr> {
        resolve(self.addr.as_deref(), default_port)
    }

    /// The idle timeout, or `None` when turned off with `0`.
    pub fn idle(&self) -> Option<Duration> {
        (!self.idle_timeout.is_zero()).then_some(self.idle_timeout)
    }
}

/// Resolve `HOST:PORT` (or the default on 127.0.0.1) to one address.
pub fn resolve(addr: Option<&str>, default_port: u16) -> std::io::Result<SocketAddr> {
    match addr {
        None => Ok(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            default_port,
        )),
        Some(s) => s.to_socket_addrs()?.next().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{s}: no address found"),
            )
        }),
    }
}

/// Parse `30s`, `500ms`, `2m`, `1.5s`, `100us`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (try 30s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct T {
        #[command(flatten)]
        a: ServerArgs,
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn defaults_match_default_impl() {
        let t = T::try_parse_from(["x"]).unwrap();
        let d = ServerArgs::default();
        assert_eq!(t.a.framing, d.framing);
        assert_eq!(t.a.max_frame, d.max_frame);
        assert_eq!(t.a.max_conns, d.max_conns);
        assert_eq!(t.a.idle_timeout, d.idle_timeout);
        assert_eq!(t.a.work, d.work);
        let t = T::try_parse_from([
            "x",
            "--framing",
            "length",
            "--idle-timeout",
            "0",
            "--addr",
            "[::1]:0",
        ])
        .unwrap();
        assert_eq!(t.a.framing, Framing::Length);
        assert_eq!(t.a.idle(), None);
        assert!(t.a.socket_addr(1).unwrap().is_ipv6());
    }
}
