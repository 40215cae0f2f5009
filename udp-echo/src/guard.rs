//! The reflection guard: the set of source ports the server never answers.
//!
//! Why an echo server needs one. UDP has no handshake, so the source address
//! of a datagram is whatever the sender wrote into it. Two classic abuses:
//!
//! - **Loops.** Forge a datagram "from" host B's echo port (7) or chargen
//!   port (19) and send it to our echo server. We answer B's echo service,
//!   which answers us, which answers B... forever, two servers burning
//!   bandwidth with nobody at either end (CERT advisory CA-1996-01).
//! - **Reflection.** Forge the *victim's* address and every reply lands on
//!   the victim. An echo reply is as large as the request, so echo only
//!   reflects; a chargen or DNS reply is larger, and then it amplifies.
//!
//! Well-known services live below port 1024 and real clients send from
//! high, ephemeral ports (Linux: 32768-60999), so by default the server
//! refuses source ports 0-1023, as OpenBSD's inetd does for its built-in
//! UDP services. That covers echo 7, discard 9, daytime 13, qotd 17,
//! chargen 19, time 37 and the impossible port 0. `--guard-ports` sets the
//! list (say `0-1023,5353`, or `none`), which is also how the tests exercise
//! the guard from an unprivileged port.
//!
//! The guard is cheap and stops the loop, but it does not stop reflection at
//! a victim's *high* port: that needs the network to drop forged sources
//! (BCP 38) or the protocol to make replies no larger than requests and to
//! prove the client's address first (QUIC's address validation).

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

/// A set of UDP ports, written `7,9,13-19` or `none`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSet {
    ranges: Vec<RangeInclusive<u16>>,
}

impl PortSet {
    /// The default guard: every privileged port, 0-1023.
    pub fn privileged() -> Self {
        PortSet {
            ranges: vec![0..=1023],
        }
    }

    /// The empty set: the guard is off.
    pub fn none() -> Self {
        PortSet { ranges: Vec::new() }
    }

    pub fn contains(&self, port: u16) -> bool {
        self.ranges.iter().any(|r| r.contains(&port))
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

impl Default for PortSet {
    fn default() -> Self {
        Self::privileged()
    }
}

impl FromStr for PortSet {
    type Err = String;

    /// `none` (or an empty string) for no ports; otherwise a comma-separated
    /// list of ports and inclusive ranges: `0-1023,5353`.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("none") {
            return Ok(Self::none());
        }
        let port = |p: &str| -> Result<u16, String> {
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("`{}` is not a port (0-65535)", p.trim()))
        };
        let mut ranges = Vec::new();
        for item in s.split(',') {
            let range = match item.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (port(lo)?, port(hi)?);
                    if lo > hi {
                        return Err(format!("range `{}` runs backwards", item.trim()));
                    }
                    lo..=hi
                }
                None => {
                    let p = port(item)?;
                    p..=p
                }
            };
            ranges.push(range);
        }
        Ok(PortSet { ranges })
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ranges.is_empty() {
            return f.write_str("none");
        }
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if r.start() == r.end() {
                write!(f, "{}", r.start())?;
            } else {
                write!(f, "{}-{}", r.start(), r.end())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_guards_the_classic_services_and_nothing_above_1023() {
        let g = PortSet::default();
        for port in [0, 7, 9, 13, 17, 19, 37, 53, 123, 1023] {
            assert!(g.contains(port), "{port}");
        }
        for port in [1024, 7002, 32768, 65535] {
            assert!(!g.contains(port), "{port}");
        }
        assert_eq!(g.to_string(), "0-1023");
    }

    #[test]
    fn parses_lists_and_ranges() {
        let g: PortSet = " 7, 13-19 ,40000".parse().unwrap();
        assert!(g.contains(7) && g.contains(13) && g.contains(19) && g.contains(40000));
        assert!(!g.contains(8) && !g.contains(20) && !g.contains(39999));
        assert_eq!(g.to_string(), "7,13-19,40000");
        assert_eq!("none".parse::<PortSet>().unwrap(), PortSet::none());
        assert!(PortSet::none().is_empty() && !PortSet::none().contains(0));
    }

    #[test]
    fn rejects_nonsense() {
        for bad in ["seven", "1-", "-5", "9-7", "65536", "1,,2", "1-2-3"] {
            assert!(bad.parse::<PortSet>().is_err(), "{bad}");
        }
    }
}
