//! The command line: clap derive structs and the value parsers behind them.
//! A bad value is rejected by clap with one line naming the flag and the
//! value, and exit status 2, before any socket is opened:
//!
//! ```text
//! $ impair udp --listen 127.0.0.1:0 --upstream 127.0.0.1:7002 --loss 150%
//! error: invalid value '150%' for '--loss <PERCENT>': `150%` is not a percentage from 0% to 100%
//! ```
//!
//! Addresses are numeric (`127.0.0.1:7102`, `[::1]:7102`): the relay never
//! resolves a name, so it cannot end up relaying somewhere a DNS answer chose.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Parser, Subcommand};
use common::cli::{parse_duration, parse_size};

// `Direction` is a flag, but tcp.rs and udp.rs need it too, and this file
// needs their config types: it lives in fate.rs (which imports neither), so
// no two modules import each other.
pub use crate::fate::Direction;
use crate::fate::UdpToxics;
use crate::tcp::{TcpConfig, TcpToxics};
use crate::udp::UdpConfig;

#[derive(Parser, Debug)]
#[command(
    name = "impair",
    version,
    about = "A relay that does to UDP and TCP what a bad network does: loss, duplicates, reordering, delay, a slow link, split and merged writes, stalls and resets",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Relay datagrams: each client address gets its own upstream socket.
    Udp(UdpArgs),
    /// Relay TCP connections: each direction of each connection is its own pump.
    Tcp(TcpArgs),
}

/// Flags shared by `udp` and `tcp`.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// Address to listen on, numeric HOST:PORT (port 0 picks one, printed as
    /// `listening on ADDR`).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_addr)]
    pub listen: SocketAddr,

    /// The real server, numeric HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_addr)]
    pub upstream: SocketAddr,

    /// Added delay per datagram (UDP) or per chunk of the stream (TCP): `50ms`.
    #[arg(long, value_name = "DURATION", default_value = "0ms", value_parser = parse_duration)]
    pub delay: Duration,

    /// Random extra delay in -J..=+J on top of --delay. TCP keeps bytes in
    /// order, so there a late chunk holds back the ones behind it.
    #[arg(long, value_name = "DURATION", default_value = "0ms", value_parser = parse_duration)]
    pub jitter: Duration,

    /// Link speed, bits per second with k/M/G suffixes (`1Mbit`, `500kbit`);
    /// unlimited when absent.
    #[arg(long, value_name = "BITS/S", value_parser = parse_rate)]
    pub rate: Option<u64>,

    /// Which directions the toxics apply to.
    #[arg(long, value_enum, default_value_t = Direction::Both)]
    pub direction: Direction,

    /// Seed of every random decision: the same seed, the same run.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,

    /// Log the counters this often (`0` = only the summary on exit).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub report: Duration,

    /// Allow --listen/--upstream outside 127.0.0.0/8 and ::1. Meant for
    /// addresses inside network namespaces you created yourself (see
    /// scripts/netns-lab.sh), never for a network other people use.
    #[arg(long)]
    pub allow_non_loopback: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct UdpArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Share of datagrams thrown away, 0%-100%.
    #[arg(long, value_name = "PERCENT", default_value = "0%", value_parser = parse_percent)]
    pub loss: f64,

    /// Share of datagrams sent twice.
    #[arg(long, value_name = "PERCENT", default_value = "0%", value_parser = parse_percent)]
    pub dup: f64,

    /// Share of datagrams held back until the next one has gone out.
    #[arg(long, value_name = "PERCENT", default_value = "0%", value_parser = parse_percent)]
    pub reorder: f64,

    /// Longest a held-back datagram waits for one to overtake it.
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = parse_duration)]
    pub reorder_hold: Duration,

    /// Datagrams queued per flow and direction; when full, new ones are
    /// dropped (tail drop) and counted.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub queue: u32,

    /// Forget a client (close its upstream socket) after this long without
    /// a datagram either way.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_positive_duration)]
    pub idle_timeout: Duration,

    /// Most client addresses relayed at once; datagrams from more are dropped.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_flows: u32,
}

#[derive(clap::Args, Debug, Clone)]
pub struct TcpArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Cut every write into random pieces of 1..=MAX bytes (default 16),
    /// each its own write() and segment.
    #[arg(long, value_name = "MAX", num_args = 0..=1, default_missing_value = "16", value_parser = parse_split)]
    pub split: Option<usize>,

    /// Pause between the pieces of --split, so the receiver reads them apart.
    #[arg(long, value_name = "DURATION", default_value = "1ms", value_parser = parse_duration)]
    pub split_gap: Duration,

    /// Hold what arrives within this long and send it as one write.
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub coalesce: Option<Duration>,

    /// After this many bytes in a direction, stop forwarding it for --stall.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub stall_after: Option<usize>,

    /// How long --stall-after stops the stream.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub stall: Duration,

    /// After exactly this many bytes in a direction, reset both connections
    /// (RST, via SO_LINGER 0).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub reset_after: Option<usize>,

    /// Bytes the relay holds per direction of a connection; when full it
    /// stops reading that side (backpressure).
    #[arg(long, value_name = "BYTES", default_value = "64KiB", value_parser = parse_buffer)]
    pub buffer: usize,

    /// Most connections relayed at once; more are accepted and closed.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_conns: u32,
}

impl UdpArgs {
    pub fn config(&self) -> UdpConfig {
        let c = &self.common;
        UdpConfig {
            upstream: c.upstream,
            seed: c.seed,
            direction: c.direction,
            report: (!c.report.is_zero()).then_some(c.report),
            toxics: UdpToxics {
                loss: self.loss,
                dup: self.dup,
                reorder: self.reorder,
                delay: c.delay,
                jitter: c.jitter,
            },
            rate: c.rate,
            reorder_hold: self.reorder_hold,
            queue: self.queue as usize,
            idle_timeout: self.idle_timeout,
            max_flows: self.max_flows as usize,
        }
    }
}

impl TcpArgs {
    pub fn config(&self) -> TcpConfig {
        let c = &self.common;
        TcpConfig {
            upstream: c.upstream,
            seed: c.seed,
            direction: c.direction,
            report: (!c.report.is_zero()).then_some(c.report),
            toxics: TcpToxics {
                delay: c.delay,
                jitter: c.jitter,
                rate: c.rate,
                split: self.split,
                split_gap: self.split_gap,
                coalesce: self.coalesce,
                stall_after: self.stall_after,
                stall: self.stall,
                reset_after: self.reset_after,
            },
            buffer: self.buffer,
            max_conns: self.max_conns as usize,
        }
    }
}

/// The loopback rule: `Err(message)` for an address outside 127.0.0.0/8 and
/// ::1 (an IPv4-mapped `::ffff:127.x.y.z` counts as loopback).
pub fn check_loopback(flag: &str, addr: SocketAddr) -> Result<(), String> {
    let ip = match addr.ip() {
        IpAddr::V6(v6) => v6.to_canonical(),
        v4 => v4,
    };
    if ip.is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "{flag} {addr} is not a loopback address (127.0.0.0/8 or ::1); pass --allow-non-loopback only for addresses in network namespaces you created"
        ))
    }
}

pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        format!("`{s}` is not a numeric HOST:PORT (like 127.0.0.1:7102 or [::1]:7102)")
    })
}

/// `5%`, `5`, `0.5%`: a share from 0 to 100.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches('%').trim().parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("`{s}` is not a percentage from 0% to 100%")),
    }
}

/// Bits per second: `64000`, `500kbit`, `1Mbit`, `1M`, `2.5Gbit`. Decimal
/// prefixes (1k = 1,000) as link speeds are quoted. Bytes are refused, since
/// `1MB` for a link is almost always a mistake for `8Mbit`.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let (value, unit) = common::cli::number_and_unit(s.trim())
        .ok_or_else(|| format!("`{s}` is not a rate (try 1Mbit, 500kbit, 64000)"))?;
    let lower = unit.to_ascii_lowercase();
    let unit = lower
        .strip_suffix("bit/s")
        .or_else(|| lower.strip_suffix("bps"))
        .or_else(|| lower.strip_suffix("bit"))
        .unwrap_or(&lower);
    let mult = match unit {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        _ => {
            return Err(format!(
                "unknown unit in `{s}`: use bits per second with k, M or G (1Mbit, 500kbit)"
            ));
        }
    };
    let bits = value * mult;
    if !bits.is_finite() || !(1.0..=1e12).contains(&bits) {
        return Err(format!("`{s}` is out of range (1 bit/s to 1000Gbit)"));
    }
    Ok(bits as u64)
}

fn parse_split(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=65536).contains(&n) => Ok(n),
        _ => Err(format!("`{s}` is not a piece size from 1 to 65536 bytes")),
    }
}

fn parse_buffer(s: &str) -> Result<usize, String> {
    let n = parse_size(s)?;
    if !(1024..=(1 << 30)).contains(&n) {
        return Err(format!("`{s}` is out of range (1KiB to 1GiB)"));
    }
    Ok(n)
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("`{s}` must be above zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_percentages_addresses() {
        assert_eq!(parse_rate("1Mbit"), Ok(1_000_000));
        assert_eq!(parse_rate("500kbit"), Ok(500_000));
        assert_eq!(parse_rate("2.5Gbit"), Ok(2_500_000_000));
        assert_eq!(parse_rate("64000"), Ok(64_000));
        assert_eq!(parse_rate("1M"), Ok(1_000_000));
        assert!(parse_rate("1MB").is_err());
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        assert_eq!(parse_percent("5%"), Ok(5.0));
        assert_eq!(parse_percent("0.5"), Ok(0.5));
        assert!(parse_percent("101%").is_err());
        assert!(parse_percent("-1").is_err());
        assert!(check_loopback("--listen", "127.0.0.2:1".parse().unwrap()).is_ok());
        assert!(check_loopback("--listen", "[::1]:1".parse().unwrap()).is_ok());
        assert!(check_loopback("--listen", "[::ffff:127.0.0.1]:1".parse().unwrap()).is_ok());
        assert!(check_loopback("--upstream", "192.0.2.1:1".parse().unwrap()).is_err());
        assert!(check_loopback("--upstream", "0.0.0.0:1".parse().unwrap()).is_err());
        assert!(parse_addr("localhost:80").is_err());
    }

    #[test]
    fn split_takes_an_optional_value() {
        let cli = Cli::try_parse_from([
            "impair",
            "tcp",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:1",
            "--split",
        ])
        .unwrap();
        let Command::Tcp(t) = cli.command else {
            panic!()
        };
        assert_eq!(t.split, Some(16));
        let cli = Cli::try_parse_from([
            "impair",
            "tcp",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:1",
            "--split=3",
        ])
        .unwrap();
        let Command::Tcp(t) = cli.command else {
            panic!()
        };
        assert_eq!(t.split, Some(3));
    }
}
