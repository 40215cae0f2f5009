//! `--layers N`: one packet as an annotated hex dump, the course's "data is
//! wrapped in the headers of each layer" made visible. Every byte of the
//! frame is shown once, under the layer it belongs to (link, network,
//! transport, payload), with each header field named and decoded.
//!
//! Offsets come from the header-length fields in the packet itself (IPv4's
//! IHL, TCP's data offset), read with bounds checks: a truncated or lying
//! packet ends the dump early with a note, never a panic.
//!
//! Try: `target/debug/peek --layers 1 -- target/debug/tcp-echo` (the SYN and its options)

use std::fmt::Write as _;

use crate::parse::{Packet, Proto, printable};

struct Dump<'a> {
    bytes: &'a [u8],
    out: String,
    at: usize,
    cut: bool,
}

impl Dump<'_> {
    fn layer(&mut self, title: &str) {
        let _ = writeln!(self.out, "{title}");
    }

    /// One field of `len` bytes at the cursor; `meaning` decodes it.
    fn field(&mut self, len: usize, name: &str, meaning: impl FnOnce(&[u8]) -> String) -> bool {
        if self.cut {
            return false;
        }
        let Some(b) = self.bytes.get(self.at..self.at + len) else {
            let have = self.bytes.len().saturating_sub(self.at);
            let _ = writeln!(
                self.out,
                "  {:04x}  (the capture ends here: {name} needs {len} bytes, {have} left)",
                self.at
            );
            self.cut = true;
            return false;
        };
        let hex: Vec<String> = b.iter().take(8).map(|x| format!("{x:02x}")).collect();
        let more = if b.len() > 8 { " .." } else { "" };
        let _ = writeln!(
            self.out,
            "  {:04x}  {:<26} {name}: {}",
            self.at,
            hex.join(" ") + more,
            meaning(b)
        );
        self.at += len;
        true
    }
}

fn be16(b: &[u8]) -> u16 {
    match b {
        [x, y, ..] => u16::from_be_bytes([*x, *y]),
        _ => 0,
    }
}

fn be32(b: &[u8]) -> u32 {
    match b {
        [w, x, y, z, ..] => u32::from_be_bytes([*w, *x, *y, *z]),
        _ => 0,
    }
}

fn mac(b: &[u8]) -> String {
    let v: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    v.join(":")
}

/// The dump of `frame`, whose summary (from `parse`) is `p`.
pub fn dump(p: &Packet, frame: &[u8]) -> String {
    let mut d = Dump {
        bytes: frame,
        out: format!(
            "packet {}: {} bytes on the wire, {} captured\n",
            p.number,
            p.wire_len,
            frame.len()
        ),
        at: 0,
        cut: false,
    };
    d.layer("link layer: Ethernet II, 14 bytes (loopback's MAC addresses are zeros)");
    d.field(6, "destination MAC", mac);
    d.field(6, "source MAC", mac);
    let mut ethertype = 0;
    d.field(2, "EtherType", |b| {
        ethertype = be16(b);
        match ethertype {
            0x0800 => "0x0800, IPv4".into(),
            0x86dd => "0x86dd, IPv6".into(),
            0x0806 => "0x0806, ARP".into(),
            t => format!("{t:#06x}"),
        }
    });
    let proto = match ethertype {
        0x0800 => ipv4(&mut d),
        0x86dd => ipv6(&mut d),
        _ => None,
    };
    match proto {
        Some(6) => tcp(&mut d),
        Some(17) => udp(&mut d),
        Some(1) | Some(58) => {
            d.layer("transport layer: ICMP, 4 bytes of header");
            d.field(1, "type", |b| format!("{}", b[0]));
            d.field(1, "code", |b| format!("{}", b[0]));
            d.field(2, "checksum", |b| format!("{:#06x}", be16(b)));
            if let Proto::Icmp(i) = &p.proto {
                let _ = writeln!(d.out, "  = {}", i.describe());
            }
        }
        _ => {}
    }
    if !d.cut {
        let rest = frame.get(d.at..).unwrap_or(&[]);
        if rest.is_empty() {
            d.layer("payload: none");
        } else {
            let n = rest.len();
            d.layer(&format!("payload: {n} bytes (what the application wrote)"));
            for (k, chunk) in rest.chunks(16).take(8).enumerate() {
                let hex: Vec<String> = chunk.iter().map(|x| format!("{x:02x}")).collect();
                let _ = writeln!(
                    d.out,
                    "  {:04x}  {:<47}  {}",
                    d.at + 16 * k,
                    hex.join(" "),
                    printable(chunk)
                );
            }
            if n > 128 {
                let _ = writeln!(d.out, "  ..    ({} more bytes)", n - 128);
            }
        }
    }
    d.out
}

/// Returns the protocol number of the payload, if the header was complete.
fn ipv4(d: &mut Dump<'_>) -> Option<u8> {
    let start = d.at;
    let mut ihl = 5usize;
    d.layer("network layer: IPv4");
    d.field(1, "version, header length", |b| {
        ihl = usize::from(b[0] & 0x0f);
        format!("version {}, {} x 4 = {} bytes", b[0] >> 4, ihl, ihl * 4)
    });
    d.field(1, "DSCP, ECN", |b| format!("{:#04x}", b[0]));
    d.field(2, "total length", |b| format!("{} bytes", be16(b)));
    d.field(2, "identification", |b| format!("{}", be16(b)));
    d.field(2, "flags, fragment offset", |b| {
        let v = be16(b);
        let df = if v & 0x4000 != 0 {
            "DF (don't fragment)"
        } else {
            ""
        };
        format!("{df} offset {}", (v & 0x1fff) * 8)
    });
    d.field(1, "TTL", |b| format!("{}", b[0]));
    let mut proto = 0;
    d.field(1, "protocol", |b| {
        proto = b[0];
        format!("{} ({})", b[0], proto_name(b[0]))
    });
    d.field(2, "header checksum", |b| format!("{:#06x}", be16(b)));
    d.field(4, "source address", |b| {
        format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3])
    });
    d.field(4, "destination address", |b| {
        format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3])
    });
    let opts = (ihl * 4).saturating_sub(d.at - start);
    if opts > 0 {
        d.field(opts, "options", |b| format!("{} bytes", b.len()));
    }
    (!d.cut).then_some(proto)
}

fn ipv6(d: &mut Dump<'_>) -> Option<u8> {
    d.layer("network layer: IPv6, 40 bytes");
    d.field(4, "version, traffic class, flow label", |b| {
        format!("version {}", b[0] >> 4)
    });
    d.field(2, "payload length", |b| format!("{} bytes", be16(b)));
    let mut next = 0;
    d.field(1, "next header", |b| {
        next = b[0];
        format!("{} ({})", b[0], proto_name(b[0]))
    });
    d.field(1, "hop limit", |b| format!("{}", b[0]));
    let addr = |b: &[u8]| {
        <[u8; 16]>::try_from(b).map_or(String::new(), |a| std::net::Ipv6Addr::from(a).to_string())
    };
    d.field(16, "source address", addr);
    d.field(16, "destination address", addr);
    (!d.cut).then_some(next)
}

fn proto_name(p: u8) -> &'static str {
    match p {
        1 => "ICMP",
        6 => "TCP",
        17 => "UDP",
        58 => "ICMPv6",
        _ => "other",
    }
}

fn tcp(d: &mut Dump<'_>) {
    let start = d.at;
    d.layer("transport layer: TCP");
    d.field(2, "source port", |b| format!("{}", be16(b)));
    d.field(2, "destination port", |b| format!("{}", be16(b)));
    d.field(4, "sequence number", |b| {
        format!("{} (raw; the ladder counts from 0)", be32(b))
    });
    d.field(4, "acknowledgement number", |b| format!("{}", be32(b)));
    let mut hl = 20usize;
    d.field(2, "data offset, flags", |b| {
        hl = usize::from(b[0] >> 4) * 4;
        let f = b[1];
        let names = [
            (0x02, "SYN"),
            (0x01, "FIN"),
            (0x04, "RST"),
            (0x08, "PSH"),
            (0x10, "ACK"),
            (0x20, "URG"),
        ];
        let on: Vec<&str> = names
            .iter()
            .filter(|(m, _)| f & m != 0)
            .map(|(_, n)| *n)
            .collect();
        format!("header {hl} bytes; flags {}", on.join(" "))
    });
    d.field(2, "window", |b| {
        format!(
            "{} (in a SYN as is; later x the scale the SYNs agreed)",
            be16(b)
        )
    });
    d.field(2, "checksum", |b| format!("{:#06x}", be16(b)));
    d.field(2, "urgent pointer", |b| format!("{}", be16(b)));
    let opts = hl.saturating_sub(d.at - start);
    if opts > 0 {
        d.field(opts, "options", tcp_options);
    }
}

/// Name the options a SYN carries (MSS, window scale, SACK, timestamps).
fn tcp_options(b: &[u8]) -> String {
    let mut names = Vec::new();
    let mut i = 0;
    while let Some(&kind) = b.get(i) {
        let len = match kind {
            0 | 1 => 1,
            _ => usize::from(b.get(i + 1).copied().unwrap_or(2)).max(2),
        };
        let val = b.get(i + 2..i + len).unwrap_or(&[]);
        names.push(match kind {
            0 => break,
            1 => String::new(), // NOP: padding
            2 => format!("MSS {}", be16(val)),
            3 => format!(
                "window scale x{}",
                1u32 << val.first().copied().unwrap_or(0).min(14)
            ),
            4 => "SACK permitted".into(),
            5 => "SACK".into(),
            8 => "timestamps".into(),
            k => format!("kind {k}"),
        });
        i += len;
    }
    names.retain(|n| !n.is_empty());
    names.join(", ")
}

fn udp(d: &mut Dump<'_>) {
    d.layer("transport layer: UDP, 8 bytes");
    d.field(2, "source port", |b| format!("{}", be16(b)));
    d.field(2, "destination port", |b| format!("{}", be16(b)));
    d.field(2, "length", |b| {
        format!("{} bytes (header + payload)", be16(b))
    });
    d.field(2, "checksum", |b| format!("{:#06x}", be16(b)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{parse, tests::tcp_frame};
    use std::time::Duration;

    #[test]
    fn names_every_layer_of_a_tcp_segment() {
        let f = tcp_frame(b"hello");
        let text = dump(&parse(4, Duration::ZERO, f.len(), &f), &f);
        for want in [
            "EtherType: 0x0800, IPv4",
            "protocol: 6 (TCP)",
            "destination port: 7001",
            "flags PSH ACK",
            "payload: 5 bytes",
            "hello",
        ] {
            assert!(text.contains(want), "{want:?} missing from\n{text}");
        }
    }

    #[test]
    fn a_cut_header_says_where_it_ends() {
        let f = tcp_frame(b"hello");
        let text = dump(&parse(1, Duration::ZERO, f.len(), &f), &f[..40]);
        assert!(text.contains("the capture ends here"), "{text}");
    }

    #[test]
    fn options_with_nops_and_garbage_lengths() {
        assert_eq!(
            tcp_options(&[2, 4, 0x05, 0xb4, 1, 1, 4, 2]),
            "MSS 1460, SACK permitted"
        );
        let _ = tcp_options(&[3, 0, 2, 255, 8]);
    }
}
