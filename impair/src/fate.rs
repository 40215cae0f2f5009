//! The decisions, with no socket in sight: which datagram is lost,
//! duplicated or held back, how late each one leaves, how a TCP write is cut
//! into pieces, and when a rate-limited link is free again.
//!
//! Everything random comes from [`common::rng::SplitMix64`] and is a pure
//! function of `(seed, direction, number)`: datagram `n` of a flow meets the
//! same fate in every run with the same `--seed`, however the datagrams of
//! other flows interleave with it and whatever the timer did. That is what
//! lets a class see "seed 7 loses datagrams 3 and 19" twice, and what lets
//! the tests compute the exact sequence numbers that must come out.

use std::time::Duration;

use common::rng::SplitMix64;

/// Which way a byte or datagram travels through the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Client to upstream server (the request).
    Up,
    /// Upstream server to client (the reply, the echo).
    Down,
}

impl Dir {
    pub const BOTH: [Dir; 2] = [Dir::Up, Dir::Down];

    fn salt(self) -> u64 {
        match self {
            Dir::Up => 0x75_70,         // "up"
            Dir::Down => 0x64_6f_77_6e, // "down"
        }
    }
}

/// Which directions the toxics apply to (the other one is relayed untouched).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Direction {
    /// Client to upstream only (requests).
    Up,
    /// Upstream to client only (replies).
    Down,
    /// Both.
    Both,
}

impl Direction {
    pub fn includes(self, dir: Dir) -> bool {
        matches!(
            (self, dir),
            (Direction::Both, _) | (Direction::Up, Dir::Up) | (Direction::Down, Dir::Down)
        )
    }
}

impl std::fmt::Display for Dir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dir::Up => "up",
            Dir::Down => "down",
        })
    }
}

/// A generator for item `n` going `dir`, independent of every other item.
/// Mixing the inputs through one SplitMix64 step keeps neighbouring `n`s
/// from starting with correlated states.
pub fn stream(seed: u64, dir: Dir, n: u64) -> SplitMix64 {
    let mut mix =
        SplitMix64::new(seed ^ dir.salt().rotate_left(32) ^ n.wrapping_mul(0xd134_2543_de82_ef95));
    SplitMix64::new(mix.next_u64())
}

/// What the UDP relay does to each datagram in one direction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UdpToxics {
    /// Percent of datagrams thrown away (0-100).
    pub loss: f64,
    /// Percent of datagrams sent twice.
    pub dup: f64,
    /// Percent of datagrams held back until the next one has gone out.
    pub reorder: f64,
    /// Added to every datagram's departure.
    pub delay: Duration,
    /// Each datagram's delay is `delay` plus a uniform amount in `-jitter..=+jitter`.
    pub jitter: Duration,
}

/// The fate of one datagram, decided when it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fate {
    pub lost: bool,
    pub duplicated: bool,
    pub reordered: bool,
    /// How long after its arrival it may leave (delay + jitter, never < 0).
    pub delay: Duration,
}

/// The fate of datagram number `n` (0, 1, 2... counted per flow and
/// direction, lost ones included) under `toxics` and `seed`.
///
/// The four draws are always made, in this order, whichever toxics are on:
/// so turning `--dup` on does not change which datagrams `--loss` drops.
pub fn fate(toxics: &UdpToxics, seed: u64, dir: Dir, n: u64) -> Fate {
    let mut r = stream(seed, dir, n);
    let lost = r.chance(toxics.loss);
    let duplicated = r.chance(toxics.dup);
    let reordered = r.chance(toxics.reorder);
    let delay = jittered(&mut r, toxics.delay, toxics.jitter);
    Fate {
        lost,
        duplicated: duplicated && !lost,
        reordered: reordered && !lost,
        delay,
    }
}

/// `delay` plus a uniform draw in `-jitter..=+jitter`, clamped at zero.
pub fn jittered(r: &mut SplitMix64, delay: Duration, jitter: Duration) -> Duration {
    let j = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX / 2);
    // Always draw, so the stream's later values do not depend on --jitter.
    let draw = r.below(j.saturating_mul(2).saturating_add(1));
    let base = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX / 2);
    // draw - j, added to base, clamped at 0 (a datagram cannot leave early).
    let total = base.saturating_add(draw).saturating_sub(j);
    Duration::from_nanos(total)
}

/// A link of `bits_per_sec`: how long `bytes` take to go onto the wire.
/// This is the serialisation delay that makes a bandwidth-delay product.
pub fn transmit_time(bytes: usize, bits_per_sec: u64) -> Duration {
    if bits_per_sec == 0 {
        return Duration::ZERO;
    }
    let bits = (bytes as u128) * 8;
    let nanos = bits * 1_000_000_000 / u128::from(bits_per_sec);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Sizes of the pieces a TCP chunk of `len` bytes is cut into by `--split`:
/// each 1..=`max` bytes, drawn from `r`. They always add up to `len`.
pub fn split_sizes(r: &mut SplitMix64, len: usize, max: usize) -> Vec<usize> {
    let max = max.max(1);
    let mut out = Vec::new();
    let mut left = len;
    while left > 0 {
        let piece = (1 + r.below(max as u64) as usize).min(left);
        out.push(piece);
        left -= piece;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_fate_and_draw_order_is_stable() {
        let t = UdpToxics {
            loss: 20.0,
            ..UdpToxics::default()
        };
        let a: Vec<_> = (0..200).map(|n| fate(&t, 7, Dir::Up, n)).collect();
        let b: Vec<_> = (0..200).map(|n| fate(&t, 7, Dir::Up, n)).collect();
        assert_eq!(a, b);
        let lost = a.iter().filter(|f| f.lost).count();
        assert!((20..70).contains(&lost), "{lost}");
        // Turning --dup on does not move the losses.
        let t2 = UdpToxics {
            dup: 50.0,
            ..t.clone()
        };
        let c: Vec<_> = (0..200).map(|n| fate(&t2, 7, Dir::Up, n).lost).collect();
        assert_eq!(c, a.iter().map(|f| f.lost).collect::<Vec<_>>());
        // The other direction and another seed differ.
        let d: Vec<_> = (0..200).map(|n| fate(&t, 7, Dir::Down, n).lost).collect();
        assert_ne!(c, d);
        let e: Vec<_> = (0..200).map(|n| fate(&t, 8, Dir::Up, n).lost).collect();
        assert_ne!(c, e);
    }

    #[test]
    fn jitter_stays_in_range_and_never_goes_negative() {
        let mut r = SplitMix64::new(1);
        for _ in 0..1000 {
            let d = jittered(&mut r, Duration::from_millis(50), Duration::from_millis(10));
            assert!(d >= Duration::from_millis(40) && d <= Duration::from_millis(60));
            let d = jittered(&mut r, Duration::from_millis(1), Duration::from_millis(10));
            assert!(d <= Duration::from_millis(11));
        }
        assert_eq!(
            jittered(&mut r, Duration::from_millis(5), Duration::ZERO),
            Duration::from_millis(5)
        );
    }

    #[test]
    fn split_adds_up_and_transmit_time() {
        let mut r = SplitMix64::new(3);
        for len in [0, 1, 7, 1000] {
            let s = split_sizes(&mut r, len, 8);
            assert_eq!(s.iter().sum::<usize>(), len);
            assert!(s.iter().all(|&p| (1..=8).contains(&p)));
        }
        // 1,250 bytes at 1 Mbit/s = 10,000 bits / 1e6 = 10 ms.
        assert_eq!(transmit_time(1250, 1_000_000), Duration::from_millis(10));
        assert_eq!(transmit_time(1250, 0), Duration::ZERO);
    }
}
