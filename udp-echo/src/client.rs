//! The UDP echo client: numbered datagrams, a timeout, retries, and the
//! bookkeeping that TCP would otherwise do for you.
//!
//! Run with:
//!
//! ```text
//! terminal 1:  cargo run -p udp-echo -- server --drop 30 --seed 7
//! terminal 2:  cargo run -p udp-echo -- client --timeout 300ms --retries 3 one two three
//!              cargo run -p udp-echo -- client --count 1000 --size 1472 --window 16
//!              cargo run -p udp-echo -- client --addr 127.0.0.1:9 hello   (nobody there)
//! ```
//!
//! What to watch: every line is a datagram that came back (with its RTT and
//! the attempt it answers) or a retry or a loss. Nothing here waits for a
//! connection, because there is none; what replaces it is a deadline per
//! datagram. The summary counts what UDP does not hide: lost, duplicated
//! (a retry *and* the late original both came back) and reordered replies.
//!
//! ## Why a *connected* UDP socket
//!
//! `connect()` on a UDP socket sends nothing. It records the server's
//! address in the kernel, which then (1) lets us call `send`/`recv` without
//! an address, (2) drops datagrams from anyone else, and (3) reports ICMP
//! errors about our datagrams to us. So when nobody listens on the port,
//! the ICMP "port unreachable" that comes back makes the next `recv` fail
//! at once with `ECONNREFUSED` (`ErrorKind::ConnectionRefused`), instead of
//! waiting out every timeout and retry in silence. An unconnected socket
//! cannot be told: Linux would not know which of its peers the error is for.
//! (Over the Internet the ICMP message may be filtered; then only the
//! timeouts remain.)

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::wire::{self, HEADER_LEN, Header, RECV_BUFFER};

/// The client's settings (the `client` subcommand's flags).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// How long to wait for a reply before resending (`--timeout`).
    pub timeout: Duration,
    /// Resends per datagram before it counts as lost (`--retries`).
    pub retries: u16,
    /// Datagrams in flight at once (`--window`). 1 is stop-and-wait: send,
    /// wait for the reply (or give up), then send the next.
    pub window: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            timeout: Duration::from_secs(1),
            retries: 3,
            window: 1,
        }
    }
}

/// Why a run stopped early. The binary prints it as one line.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kernel received an ICMP "port unreachable" for our datagram.
    #[error(
        "no UDP server at {server}: the host answered datagram {seq} with ICMP port \
         unreachable (connection refused)"
    )]
    Refused { server: SocketAddr, seq: u32 },
    /// `send` refused the datagram as too large (`EMSGSIZE`).
    #[error(
        "datagram {seq} is {len} bytes ({HEADER_LEN}-byte header + {} payload), over the \
         largest UDP payload ({} bytes over IPv4, {} over IPv6)",
        len - HEADER_LEN, wire::MAX_IPV4_PAYLOAD, wire::MAX_IPV6_PAYLOAD
    )]
    TooLarge {
        seq: u32,
        len: usize,
        source: io::Error,
    },
    /// Reading the messages to send (stdin) failed.
    #[error("reading input")]
    Input(#[source] io::Error),
    /// More datagrams than sequence numbers.
    #[error("more than {} datagrams: sequence numbers exhausted", u32::MAX)]
    TooMany,
    /// Any other socket error.
    #[error("{op} {server}")]
    Io {
        op: &'static str,
        server: SocketAddr,
        source: io::Error,
    },
}

/// What happened, reported as it happens (the binary prints one line each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// The first reply for `seq`, answering attempt `attempt`: a datagram
    /// of `len` bytes (header included) carrying `payload`.
    Reply {
        seq: u32,
        attempt: u16,
        rtt: Duration,
        len: usize,
        payload: &'a [u8],
    },
    /// No reply within the timeout; resending as attempt `attempt`.
    Retry {
        seq: u32,
        attempt: u16,
        waited: Duration,
    },
    /// No reply to any of `attempts` sends: given up.
    Lost { seq: u32, attempts: u16 },
    /// Another reply for a `seq` already answered.
    Duplicate {
        seq: u32,
        attempt: u16,
        rtt: Duration,
    },
    /// A reply for a `seq` already given up as lost.
    Late {
        seq: u32,
        attempt: u16,
        rtt: Duration,
    },
    /// A reply that is not an echo of anything we sent.
    Invalid { len: usize, why: &'static str },
}

impl fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Event::Reply {
                seq,
                attempt,
                rtt,
                len,
                payload,
            } => {
                write!(f, "seq={seq} {len} bytes rtt={}", ms(rtt))?;
                if attempt > 1 {
                    write!(f, " (attempt {attempt})")?;
                }
                // Show short text payloads, so typed messages are visible.
                match std::str::from_utf8(payload) {
                    Ok(text) if text.len() <= 60 => write!(f, " {text:?}"),
                    _ => Ok(()),
                }
            }
            Event::Retry {
                seq,
                attempt,
                waited,
            } => write!(
                f,
                "seq={seq} no reply after {}, resending (attempt {attempt})",
                ms(waited)
            ),
            Event::Lost { seq, attempts } => {
                write!(f, "seq={seq} lost (no reply to {attempts} attempts)")
            }
            Event::Duplicate { seq, attempt, rtt } => write!(
                f,
                "seq={seq} duplicate reply (to attempt {attempt}, after {}), ignored",
                ms(rtt)
            ),
            Event::Late { seq, attempt, rtt } => write!(
                f,
                "seq={seq} late reply (to attempt {attempt}, after {}), already counted lost",
                ms(rtt)
            ),
            Event::Invalid { len, why } => write!(f, "ignored a {len}-byte reply: {why}"),
        }
    }
}

/// `1.234 ms`: RTTs on loopback are tens of microseconds, so three decimals.
fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// Totals of a run, printed as the summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Distinct datagrams (sequence numbers) sent.
    pub sent: u64,
    /// Sends including retries.
    pub transmissions: u64,
    /// Datagrams answered (first reply only).
    pub received: u64,
    /// Datagrams never answered within the retries.
    pub lost: u64,
    /// Extra replies for a datagram already answered.
    pub duplicated: u64,
    /// First replies that arrived after a reply to a later datagram.
    pub reordered: u64,
    /// Replies for datagrams already given up as lost.
    pub late: u64,
    /// Replies that echo nothing we sent (too short, unknown seq, altered).
    pub invalid: u64,
    /// RTT of every first reply, in arrival order.
    pub rtts: Vec<Duration>,
    /// Wall-clock time of the whole run: what waiting for losses cost.
    pub elapsed: Duration,
}

impl Report {
    /// The RTT at percentile `p` (nearest rank), or `None` with no replies.
    pub fn rtt_percentile(&self, p: f64) -> Option<Duration> {
        let mut sorted = self.rtts.clone();
        sorted.sort_unstable();
        let n = sorted.len();
        if n == 0 {
            return None;
        }
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        sorted.get(rank.clamp(1, n) - 1).copied()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} datagrams sent ({} transmissions with retries), {} received, {} lost, \
             {} duplicated, {} reordered",
            self.sent,
            self.transmissions,
            self.received,
            self.lost,
            self.duplicated,
            self.reordered
        )?;
        if self.late > 0 {
            write!(f, ", {} late", self.late)?;
        }
        if self.invalid > 0 {
            write!(f, ", {} invalid", self.invalid)?;
        }
        match (
            self.rtt_percentile(0.0),
            self.rtt_percentile(50.0),
            self.rtt_percentile(99.0),
            self.rtt_percentile(100.0),
        ) {
            (Some(min), Some(med), Some(p99), Some(max)) => write!(
                f,
                "\nrtt min/median/p99/max = {:.3}/{:.3}/{:.3}/{:.3} ms",
                min.as_secs_f64() * 1e3,
                med.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3,
                max.as_secs_f64() * 1e3
            )?,
            _ => write!(f, "\nrtt: no replies")?,
        }
        write!(f, ", total time {}", ms(self.elapsed))
    }
}

// ANCHOR: connect
/// A UDP socket connected to `server`: bound to an ephemeral port of the
/// same family (`0.0.0.0:0` or `[::]:0`), then `connect()`ed, which sends
/// nothing (see the module docs for what it does instead).
pub fn connect(server: SocketAddr) -> io::Result<UdpSocket> {
    let any: IpAddr = match server {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((any, 0))?;
    socket.connect(server)?;
    Ok(socket)
}
// ANCHOR_END: connect

/// Where each datagram stands.
#[derive(Debug)]
enum Slot {
    /// Sent, no reply yet. `sends[i]` is when attempt `i + 1` went out.
    Pending {
        payload: Vec<u8>,
        sends: Vec<Instant>,
    },
    /// Answered; `sends` kept to time duplicates.
    Answered { sends: Vec<Instant> },
    /// Given up.
    Lost { sends: Vec<Instant> },
}

/// Send every payload from `payloads` over the connected `socket`, each as
/// one datagram with a [`Header`], and wait for the echoes, resending after
/// `config.timeout` up to `config.retries` times. `on_event` sees each
/// reply, retry and loss as it happens. Returns the totals, or the error
/// that made going on pointless (no server, datagram too large, input).
pub fn run(
    socket: &UdpSocket,
    payloads: impl IntoIterator<Item = io::Result<Vec<u8>>>,
    config: &ClientConfig,
    mut on_event: impl FnMut(&Event<'_>),
) -> Result<Report, ClientError> {
    let server = socket.peer_addr().map_err(|source| ClientError::Io {
        op: "peer address of",
        server: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        source,
    })?;
    let window = config.window.max(1);
    let max_attempts = config.retries.saturating_add(1);
    let mut payloads = payloads.into_iter();
    let mut input_done = false;
    let mut report = Report::default();
    // Every datagram ever sent, by seq; `pending` holds the unanswered ones.
    let mut slots: Vec<Slot> = Vec::new();
    let mut pending: BTreeSet<u32> = BTreeSet::new();
    let mut highest_answered: Option<u32> = None;
    let mut out = Vec::new();
    let mut buf = vec![0u8; RECV_BUFFER];
    let started = Instant::now();

    let send = |seq: u32, attempt: u16, payload: &[u8], out: &mut Vec<u8>| {
        wire::encode(Header { seq, attempt }, payload, out);
        // One `send()` is one datagram: all of it or nothing, never a
        // short write. What it cannot do is be too big.
        socket
            .send(out)
            .map(drop)
            .map_err(|e| classify(e, server, seq, out.len(), "send to"))
    };

    loop {
        // 1. Keep up to `window` datagrams in flight.
        while pending.len() < window && !input_done {
            match payloads.next() {
                None => input_done = true,
                Some(Err(e)) => return Err(ClientError::Input(e)),
                Some(Ok(payload)) => {
                    let seq = u32::try_from(slots.len()).map_err(|_| ClientError::TooMany)?;
                    // The clock starts *before* `send()`: on loopback the
                    // kernel delivers the datagram inside this very call, and
                    // the server (on another core) may have echoed it before
                    // `send()` returns to us.
                    let sent_at = Instant::now();
                    send(seq, 1, &payload, &mut out)?;
                    report.sent += 1;
                    report.transmissions += 1;
                    slots.push(Slot::Pending {
                        payload,
                        sends: vec![sent_at],
                    });
                    pending.insert(seq);
                }
            }
        }
        if pending.is_empty() {
            break; // input_done, since the window had room.
        }

        // 2. Resend or give up on whatever has waited `timeout` since its
        // last send, and find the nearest remaining deadline.
        let now = Instant::now();
        let mut next_deadline = None::<Instant>;
        let waiting: Vec<u32> = pending.iter().copied().collect();
        for seq in waiting {
            let Some(Slot::Pending { payload, sends }) = slots.get_mut(seq as usize) else {
                continue;
            };
            let last = sends.last().copied().unwrap_or(now);
            let deadline = last + config.timeout;
            if deadline > now {
                next_deadline = Some(next_deadline.map_or(deadline, |d| d.min(deadline)));
                continue;
            }
            let attempts = sends.len() as u16;
            if attempts >= max_attempts {
                report.lost += 1;
                pending.remove(&seq);
                slots[seq as usize] = Slot::Lost {
                    sends: std::mem::take(sends),
                };
                on_event(&Event::Lost { seq, attempts });
                continue;
            }
            let attempt = attempts + 1;
            on_event(&Event::Retry {
                seq,
                attempt,
                waited: now - last,
            });
            let sent_at = Instant::now();
            send(seq, attempt, payload, &mut out)?;
            report.transmissions += 1;
            sends.push(sent_at);
            let deadline = sent_at + config.timeout;
            next_deadline = Some(next_deadline.map_or(deadline, |d| d.min(deadline)));
        }
        let Some(deadline) = next_deadline else {
            continue; // Everything just got resolved; refill the window.
        };

        // 3. Wait for a reply until the nearest deadline. SO_RCVTIMEO with
        // a zero duration would mean "block forever", and std refuses it,
        // so never ask for less than a millisecond.
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        socket
            .set_read_timeout(Some(wait))
            .map_err(|e| classify(e, server, 0, 0, "set timeout for"))?;
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            // The deadline passed (EAGAIN on Linux, ETIMEDOUT elsewhere), or
            // a signal interrupted the wait: back to step 2.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                let seq = pending.first().copied().unwrap_or(0);
                return Err(classify(e, server, seq, 0, "receive from"));
            }
        };
        let received_at = Instant::now();

        // 4. Match the reply to what we sent.
        let datagram = &buf[..n];
        let Some((header, echoed)) = wire::decode(datagram) else {
            report.invalid += 1;
            on_event(&Event::Invalid {
                len: n,
                why: "too short for our header",
            });
            continue;
        };
        let Header { seq, attempt } = header;
        let sent_at = |sends: &[Instant]| {
            sends
                .get(usize::from(attempt).wrapping_sub(1))
                .map(|t| received_at - *t)
        };
        match slots.get_mut(seq as usize) {
            Some(Slot::Pending { payload, sends }) => {
                let Some(rtt) = sent_at(sends) else {
                    report.invalid += 1;
                    on_event(&Event::Invalid {
                        len: n,
                        why: "attempt number never sent",
                    });
                    continue;
                };
                if echoed != payload.as_slice() {
                    report.invalid += 1;
                    on_event(&Event::Invalid {
                        len: n,
                        why: "payload differs from what was sent",
                    });
                    continue;
                }
                report.received += 1;
                report.rtts.push(rtt);
                // Reordered: a later datagram was answered first.
                if highest_answered.is_some_and(|h| h > seq) {
                    report.reordered += 1;
                }
                highest_answered = Some(highest_answered.map_or(seq, |h| h.max(seq)));
                on_event(&Event::Reply {
                    seq,
                    attempt,
                    rtt,
                    len: n,
                    payload: echoed,
                });
                pending.remove(&seq);
                slots[seq as usize] = Slot::Answered {
                    sends: std::mem::take(sends),
                };
            }
            Some(Slot::Answered { sends }) => {
                report.duplicated += 1;
                let rtt = sent_at(sends).unwrap_or_default();
                on_event(&Event::Duplicate { seq, attempt, rtt });
            }
            Some(Slot::Lost { sends }) => {
                report.late += 1;
                let rtt = sent_at(sends).unwrap_or_default();
                on_event(&Event::Late { seq, attempt, rtt });
            }
            None => {
                report.invalid += 1;
                on_event(&Event::Invalid {
                    len: n,
                    why: "sequence number never sent",
                });
            }
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Turn a socket error into the one the user should read.
fn classify(
    e: io::Error,
    server: SocketAddr,
    seq: u32,
    len: usize,
    op: &'static str,
) -> ClientError {
    if e.kind() == io::ErrorKind::ConnectionRefused {
        // The ICMP error may surface on `send` as well as on `recv`: the
        // kernel keeps it as a pending socket error (SO_ERROR) and the next
        // call on the socket, whichever it is, returns it.
        ClientError::Refused { server, seq }
    } else if e.raw_os_error() == Some(libc::EMSGSIZE) {
        ClientError::TooLarge {
            seq,
            len,
            source: e,
        }
    } else {
        ClientError::Io {
            op,
            server,
            source: e,
        }
    }
}

/// `count` generated payloads making `size`-byte datagrams (header
/// included): a readable pattern (`abcd...`) shifted per datagram, so a
/// packet capture shows which is which and a mix-up cannot go unnoticed.
pub fn generated(count: u64, size: usize) -> impl Iterator<Item = io::Result<Vec<u8>>> {
    let len = size.saturating_sub(HEADER_LEN);
    (0..count).map(move |i| {
        Ok((0..len)
            .map(|j| b'a' + ((i as usize + j) % 26) as u8)
            .collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let report = Report {
            rtts: (1..=100).rev().map(Duration::from_millis).collect(),
            ..Report::default()
        };
        assert_eq!(report.rtt_percentile(0.0), Some(Duration::from_millis(1)));
        assert_eq!(report.rtt_percentile(50.0), Some(Duration::from_millis(50)));
        assert_eq!(report.rtt_percentile(99.0), Some(Duration::from_millis(99)));
        assert_eq!(
            report.rtt_percentile(100.0),
            Some(Duration::from_millis(100))
        );
        assert_eq!(Report::default().rtt_percentile(50.0), None);
        assert!(
            Report::default()
                .to_string()
                .ends_with("rtt: no replies, total time 0.000 ms")
        );
    }

    #[test]
    fn generated_payloads_fill_the_requested_datagram_size() {
        let p: Vec<Vec<u8>> = generated(2, 10).map(Result::unwrap).collect();
        assert_eq!(p, [b"abcd".to_vec(), b"bcde".to_vec()]);
        assert_eq!(generated(1, 3).next().unwrap().unwrap(), b"");
    }

    #[test]
    fn events_read_well() {
        let e = Event::Reply {
            seq: 3,
            attempt: 2,
            rtt: Duration::from_micros(81),
            len: 8,
            payload: b"hi",
        };
        assert_eq!(
            e.to_string(),
            "seq=3 8 bytes rtt=0.081 ms (attempt 2) \"hi\""
        );
        let e = Event::Lost {
            seq: 4,
            attempts: 4,
        };
        assert_eq!(e.to_string(), "seq=4 lost (no reply to 4 attempts)");
    }
}
