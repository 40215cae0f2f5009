//! The relay's counters: what the periodic report and the summary on exit
//! print, and what the tests read. Plain atomics (`Relaxed`: each counter is
//! independent, nobody orders other memory through them), shared by every
//! task through an `Arc`.
//!
//! `buffered` is a gauge, not a counter: the bytes sitting in the relay's own
//! queues right now. `max_buffered` is its high-water mark; the TCP test that
//! stops the upstream from reading checks that it never passes `--buffer`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::fate::Dir;

/// Counters for one direction.
#[derive(Debug, Default)]
pub struct DirStats {
    /// Datagrams (UDP) or reads (TCP) that came in.
    pub received: AtomicU64,
    pub bytes_in: AtomicU64,
    /// Datagrams (duplicates included) or writes (split pieces) sent on.
    pub sent: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Thrown away by `--loss`.
    pub lost: AtomicU64,
    /// Thrown away because the queue was full (`--queue`, tail drop).
    pub tail_dropped: AtomicU64,
    pub duplicated: AtomicU64,
    /// Held back and overtaken by a later datagram.
    pub reordered: AtomicU64,
    /// Left later than they arrived because of `--delay`, `--jitter`,
    /// `--rate` or `--coalesce`.
    pub delayed: AtomicU64,
    /// TCP: writes that merged more than one read (`--coalesce`).
    pub coalesced: AtomicU64,
    /// TCP: times `--stall-after` stopped this direction.
    pub stalls: AtomicU64,
    /// Send errors (UDP: ICMP port unreachable from an earlier datagram...).
    pub send_errors: AtomicU64,
}

/// Every counter of one relay.
#[derive(Debug, Default)]
pub struct Stats {
    pub up: DirStats,
    pub down: DirStats,
    /// UDP flows (client addresses) or TCP connections opened.
    pub opened: AtomicU64,
    /// ...and closed (UDP: idle timeout; TCP: both directions finished).
    pub closed: AtomicU64,
    /// Refused at `--max-flows` / `--max-conns`, or upstream unreachable.
    pub refused: AtomicU64,
    /// TCP connections ended with RST by `--reset-after` or by an error.
    pub resets: AtomicU64,
    /// Bytes in the relay's queues now, and the most there ever were.
    pub buffered: AtomicU64,
    pub max_buffered: AtomicU64,
}

impl Stats {
    pub fn dir(&self, dir: Dir) -> &DirStats {
        match dir {
            Dir::Up => &self.up,
            Dir::Down => &self.down,
        }
    }

    pub fn add_buffered(&self, n: usize) {
        let now = self.buffered.fetch_add(n as u64, Relaxed) + n as u64;
        self.max_buffered.fetch_max(now, Relaxed);
    }

    pub fn sub_buffered(&self, n: usize) {
        self.buffered.fetch_sub(n as u64, Relaxed);
    }

    /// The summary line of a UDP relay.
    pub fn udp(&self) -> impl fmt::Display + '_ {
        Summary {
            stats: self,
            udp: true,
        }
    }

    /// The summary line of a TCP relay.
    pub fn tcp(&self) -> impl fmt::Display + '_ {
        Summary {
            stats: self,
            udp: false,
        }
    }
}

struct Summary<'a> {
    stats: &'a Stats,
    udp: bool,
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Relaxed)
}

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.stats;
        if self.udp {
            write!(
                f,
                "{} flows ({} expired, {} refused)",
                get(&s.opened),
                get(&s.closed),
                get(&s.refused)
            )?;
            for dir in Dir::BOTH {
                let d = s.dir(dir);
                write!(
                    f,
                    "; {dir}: {} datagrams ({} bytes) in, {} out ({} bytes), {} lost, {} tail-dropped, {} duplicated, {} reordered, {} delayed",
                    get(&d.received),
                    get(&d.bytes_in),
                    get(&d.sent),
                    get(&d.bytes_out),
                    get(&d.lost),
                    get(&d.tail_dropped),
                    get(&d.duplicated),
                    get(&d.reordered),
                    get(&d.delayed)
                )?;
                if get(&d.send_errors) > 0 {
                    write!(f, ", {} send errors", get(&d.send_errors))?;
                }
            }
        } else {
            write!(
                f,
                "{} connections ({} closed, {} refused, {} reset)",
                get(&s.opened),
                get(&s.closed),
                get(&s.refused),
                get(&s.resets)
            )?;
            for dir in Dir::BOTH {
                let d = s.dir(dir);
                write!(
                    f,
                    "; {dir}: {} bytes in {} reads, {} bytes out in {} writes, {} delayed, {} coalesced, {} stalls",
                    get(&d.bytes_in),
                    get(&d.received),
                    get(&d.bytes_out),
                    get(&d.sent),
                    get(&d.delayed),
                    get(&d.coalesced),
                    get(&d.stalls)
                )?;
            }
            write!(
                f,
                "; buffered now {} bytes (most {})",
                get(&s.buffered),
                get(&s.max_buffered)
            )?;
        }
        Ok(())
    }
}
