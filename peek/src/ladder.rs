//! The ladder diagram as text: the two endpoints of a conversation as two
//! columns, one arrow per packet, and a summary under it. This is the
//! picture textbooks draw for the three-way handshake, drawn from packets
//! that really crossed the wire.
//!
//! ```text
//!   #       ms  127.0.0.1:40000                           127.0.0.1:7001
//!   1    0.000  |--- SYN seq=0 win=65495 ----------------------------->|
//!   2    0.011  |<-- SYN ACK seq=0 ack=1 win=65483 --------------------|
//! ```
//!
//! Try: `target/debug/peek -- target/debug/tcp-echo`

use std::fmt::Write as _;
use std::time::Duration;

use crate::flow::{Conversation, Dir, Summary, summarize};
use crate::parse::{Packet, Proto, printable};

/// The text on one arrow. `conv` gives relative TCP numbers; without it
/// (the `--layers` view, property tests) the raw numbers are shown.
pub fn label(p: &Packet, rel: Option<(&Conversation, Dir)>) -> String {
    match &p.proto {
        Proto::Tcp(t) => {
            let (seq, ack) = match rel {
                Some((c, d)) => c.relative(d, t.seq, t.ack),
                None => (t.seq, t.ack),
            };
            let mut s = format!("{} seq={seq}", t.flags.names());
            if t.flags.ack {
                let _ = write!(s, " ack={ack}");
            }
            let win = match rel {
                Some((c, d)) => c.window(d, t.window, t.flags.syn),
                None => u32::from(t.window),
            };
            let _ = write!(s, " win={win}");
            if let Some(m) = t.mss {
                let _ = write!(s, " mss={m}");
            }
            if let Some(w) = t.wscale {
                let _ = write!(s, " wscale={w}");
            }
            if t.len > 0 {
                let _ = write!(s, " len={}", t.len);
                if let Some(tls) = &t.tls {
                    let _ = write!(s, " {tls}");
                } else {
                    let more = if t.len > t.preview.len() { ".." } else { "" };
                    let _ = write!(s, " \"{}{more}\"", printable(&t.preview));
                }
            }
            s
        }
        Proto::Udp { len, preview, .. } => {
            let more = if *len > preview.len() { ".." } else { "" };
            format!("UDP len={len} \"{}{more}\"", printable(preview))
        }
        Proto::Icmp(i) => i.describe(),
        Proto::Other(why) => format!("? {why}"),
    }
}

/// Milliseconds since the first packet of the capture.
pub fn millis(ts: Duration, t0: Duration) -> f64 {
    ts.saturating_sub(t0).as_secs_f64() * 1e3
}

/// One conversation: its title, the two columns, the arrows, the summary.
pub fn render(conv: &Conversation, packets: &[Packet], t0: Duration, mtu: Option<u32>) -> String {
    let labels: Vec<(usize, Dir, String)> = conv
        .packets
        .iter()
        .filter_map(|&(i, d)| Some((i, d, label(packets.get(i)?, Some((conv, d))))))
        .collect();
    let width = labels
        .iter()
        .map(|(_, _, l)| l.chars().count() + 8)
        .max()
        .unwrap_or(0)
        .max(50);
    let (a, b) = (conv.a.to_string(), conv.b.to_string());
    let kind = if conv.tcp { "TCP" } else { "UDP" };
    let mut out = format!("{kind} {a} -> {b}\n");
    // The arrow row is "#, time, two spaces, |arrow|": 15 characters before the first bar.
    let gap = (width + 2).saturating_sub(a.len() + b.len()).max(1);
    let _ = writeln!(out, "{:>4} {:>9}  {a}{}{b}", "#", "ms", " ".repeat(gap));
    for (i, dir, text) in &labels {
        let Some(p) = packets.get(*i) else { continue };
        let body = format!(" {text} ");
        let fill = width.saturating_sub(body.chars().count() + 3);
        let arrow = match dir {
            Dir::Out => format!("|--{body}{}>|", "-".repeat(fill)),
            Dir::Back => format!("|<-{body}{}-|", "-".repeat(fill)),
        };
        let _ = writeln!(out, "{:>4} {:>9.3}  {arrow}", p.number, millis(p.ts, t0));
    }
    out += &summary_text(conv, &summarize(conv, packets), mtu);
    out
}

fn who(conv: &Conversation, d: Dir) -> String {
    match d {
        Dir::Out => format!("{} (the opener)", conv.a),
        Dir::Back => format!("{}", conv.b),
    }
}

pub fn summary_text(conv: &Conversation, s: &Summary, mtu: Option<u32>) -> String {
    let mut out = String::new();
    if let Some(h) = s.handshake {
        let _ = writeln!(
            out,
            "  handshake: {:.3} ms (SYN to the ACK of the SYN ACK)",
            h.as_secs_f64() * 1e3
        );
    }
    let unit = if conv.tcp { "segment" } else { "datagram" };
    for (k, (from, to)) in [(conv.a, conv.b), (conv.b, conv.a)].iter().enumerate() {
        let n = s.segments[k];
        let plural = if n == 1 { "" } else { "s" };
        let _ = writeln!(
            out,
            "  {from} -> {to}: {n} {unit}{plural}, {} bytes of payload",
            s.bytes[k]
        );
    }
    if conv.tcp {
        let end = match (s.first_rst, s.first_fin) {
            (Some((d, n)), _) => format!("reset: RST from {} (#{n})", who(conv, d)),
            (None, Some((d, n))) => format!("closed: first FIN from {} (#{n})", who(conv, d)),
            (None, None) => "still open when the capture ended".into(),
        };
        let _ = writeln!(out, "  {end}");
        if s.retransmissions + s.dup_acks > 0 {
            let _ = writeln!(
                out,
                "  retransmissions: {}, duplicate ACKs: {}",
                s.retransmissions, s.dup_acks
            );
        }
    }
    if s.icmp > 0 {
        let _ = writeln!(out, "  ICMP errors about this flow: {}", s.icmp);
    }
    if let Some((len, n)) = s.largest {
        let mtu = mtu.map_or(String::new(), |m| format!(", loopback MTU {m}"));
        let _ = writeln!(out, "  largest IP packet: {len} bytes (#{n}{mtu})");
    }
    out
}

/// Packets outside any conversation (ICMP echo, ARP, unparsable), one line each.
pub fn loose(list: &[usize], packets: &[Packet], t0: Duration) -> String {
    let mut out = String::new();
    if list.is_empty() {
        return out;
    }
    out += "other packets\n";
    for &i in list {
        let Some(p) = packets.get(i) else { continue };
        let _ = writeln!(
            out,
            "{:>4} {:>9.3}  {} -> {}  {}",
            p.number,
            millis(p.ts, t0),
            p.src,
            p.dst,
            label(p, None)
        );
    }
    out
}
