//! From captured bytes to a [`Packet`]: what the ladder needs to know about
//! one frame (who sent it to whom, the TCP flags and numbers, the payload).
//!
//! The bytes come straight off the wire, or out of a pcap file someone
//! else wrote, so nothing in them is trusted: `etherparse`'s *lax* slicer
//! reads as many layers as are really there (a frame cut short by the snap
//! length still yields its headers), lengths are taken from the IP header
//! with saturating arithmetic, and anything that cannot be read becomes
//! [`Proto::Other`] with a reason instead of a panic. The property tests at
//! the bottom feed it arbitrary bytes and every truncation of real packets.
//!
//! Try: `cargo test -p peek --lib parse` (the property tests)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use etherparse::err::{Layer, packet::SliceError};
use etherparse::{LaxNetSlice, LaxSlicedPacket, TcpOptionElement, TransportSlice};

/// How many payload bytes a packet keeps for the preview and the ladder.
pub const PREVIEW: usize = 24;

/// One captured frame, reduced to what the diagrams show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Number in the capture, from 1, as `--layers N` and Wireshark count.
    pub number: usize,
    /// Capture time (since the Unix epoch for live captures and files).
    pub ts: Duration,
    /// Length on the wire; the capture may hold fewer bytes (snap length).
    pub wire_len: usize,
    /// IP length (header + payload) as the IP header states it: what the MTU limits.
    pub ip_len: usize,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Proto,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proto {
    Tcp(Tcp),
    Udp {
        sport: u16,
        dport: u16,
        /// Payload length the UDP header claims.
        len: usize,
        preview: Vec<u8>,
    },
    Icmp(Icmp),
    /// Not IP, or not TCP/UDP/ICMP, or cut before the transport header.
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: Flags,
    /// The window field as sent; see `wscale`.
    pub window: u16,
    /// Options a SYN carries: the maximum segment size this side accepts, and
    /// the window scale (later window fields count in units of 2^wscale bytes).
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    /// Payload length from the IP header (not from the captured bytes).
    pub len: usize,
    pub preview: Vec<u8>,
    /// The TLS records this segment starts with, if it looks like TLS.
    pub tls: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    pub syn: bool,
    pub ack: bool,
    pub psh: bool,
    pub fin: bool,
    pub rst: bool,
}

impl Flags {
    /// "SYN", "SYN ACK", "PSH ACK", "FIN ACK", "RST": the order Wireshark uses.
    pub fn names(&self) -> String {
        let all = [
            (self.syn, "SYN"),
            (self.fin, "FIN"),
            (self.rst, "RST"),
            (self.psh, "PSH"),
            (self.ack, "ACK"),
        ];
        let v: Vec<&str> = all.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect();
        if v.is_empty() {
            "(no flags)".into()
        } else {
            v.join(" ")
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Icmp {
    pub v6: bool,
    pub kind: u8,
    pub code: u8,
    /// For errors: the protocol number and ports of the packet they quote.
    pub quoted: Option<Quoted>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted {
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

impl Icmp {
    pub fn describe(&self) -> String {
        let name = match (self.v6, self.kind, self.code) {
            (false, 0, _) | (true, 129, _) => "echo reply",
            (false, 8, _) | (true, 128, _) => "echo request",
            (false, 3, 3) | (true, 1, 4) => "port unreachable",
            (false, 3, 1) | (true, 1, 3) => "host unreachable",
            (false, 3, 4) => "fragmentation needed",
            (true, 2, _) => "packet too big",
            (false, 3, _) | (true, 1, _) => "destination unreachable",
            (false, 11, _) | (true, 3, _) => "time exceeded",
            _ => "",
        };
        let v = if self.v6 { "ICMPv6" } else { "ICMP" };
        let mut s = if name.is_empty() {
            format!("{v} type {} code {}", self.kind, self.code)
        } else {
            format!("{v} {name}")
        };
        if let Some(q) = &self.quoted {
            let p = match q.proto {
                6 => "tcp",
                17 => "udp",
                _ => "ip",
            };
            s += &format!(" (quotes {p} {} -> {})", q.sport, q.dport);
        }
        s
    }
}

/// Parse one Ethernet frame (loopback on Linux has Ethernet headers with
/// zero MAC addresses). Never panics, whatever `frame` holds.
pub fn parse(number: usize, ts: Duration, wire_len: usize, frame: &[u8]) -> Packet {
    let unknown = |why: String| Packet {
        number,
        ts,
        wire_len,
        ip_len: 0,
        src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        proto: Proto::Other(why),
    };
    let sliced = match LaxSlicedPacket::from_ethernet(frame) {
        Ok(s) => s,
        Err(e) => return unknown(format!("not an Ethernet frame: {e}")),
    };
    let (src, dst, ip_len, ip_payload_len) = match &sliced.net {
        Some(LaxNetSlice::Ipv4(ip)) => {
            let h = ip.header();
            let total = usize::from(h.total_len());
            let hl = usize::from(h.ihl()) * 4;
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                total,
                total.saturating_sub(hl),
            )
        }
        Some(LaxNetSlice::Ipv6(ip)) => {
            let h = ip.header();
            let payload = usize::from(h.payload_length());
            let ext = ip.extensions().slice().len();
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                payload + 40,
                payload.saturating_sub(ext),
            )
        }
        Some(LaxNetSlice::Arp(_)) => return unknown("ARP".into()),
        None => {
            let why = match &sliced.stop_err {
                Some((e, layer)) => stopped(e, *layer),
                None => "not IP".into(),
            };
            return unknown(why);
        }
    };
    let proto = match &sliced.transport {
        Some(TransportSlice::Tcp(t)) => {
            let payload = t.payload();
            let (mut mss, mut wscale) = (None, None);
            // The iterator stops (yields an error) at a malformed option.
            for opt in t.options_iterator().map_while(Result::ok) {
                match opt {
                    TcpOptionElement::MaximumSegmentSize(m) => mss = Some(m),
                    TcpOptionElement::WindowScale(w) => wscale = Some(w.min(14)),
                    _ => {}
                }
            }
            Proto::Tcp(Tcp {
                sport: t.source_port(),
                dport: t.destination_port(),
                seq: t.sequence_number(),
                ack: t.acknowledgment_number(),
                flags: Flags {
                    syn: t.syn(),
                    ack: t.ack(),
                    psh: t.psh(),
                    fin: t.fin(),
                    rst: t.rst(),
                },
                window: t.window_size(),
                mss,
                wscale,
                len: ip_payload_len.saturating_sub(t.header_slice().len()),
                preview: payload[..payload.len().min(PREVIEW)].to_vec(),
                tls: tls_records(payload),
            })
        }
        Some(TransportSlice::Udp(u)) => {
            let payload = u.payload();
            Proto::Udp {
                sport: u.source_port(),
                dport: u.destination_port(),
                len: usize::from(u.length()).saturating_sub(8),
                preview: payload[..payload.len().min(PREVIEW)].to_vec(),
            }
        }
        Some(TransportSlice::Icmpv4(i)) => Proto::Icmp(icmp(false, i.slice(), i.payload())),
        Some(TransportSlice::Icmpv6(i)) => Proto::Icmp(icmp(true, i.slice(), i.payload())),
        Some(_) => Proto::Other("IGMP".into()),
        None => Proto::Other(match &sliced.stop_err {
            Some((e, layer)) => stopped(e, *layer),
            None => "IP payload of another protocol".into(),
        }),
    };
    Packet {
        number,
        ts,
        wire_len,
        ip_len,
        src,
        dst,
        proto,
    }
}

/// Why the slicer stopped, in one short line (its own messages are long).
fn stopped(e: &SliceError, layer: Layer) -> String {
    match e {
        SliceError::Len(l) => format!(
            "{layer} cut short: {} of {} bytes (snap length?)",
            l.len, l.required_len
        ),
        SliceError::Tcp(etherparse::err::tcp::HeaderError::DataOffsetTooSmall { data_offset }) => {
            format!("{layer} malformed: data offset {data_offset}")
        }
        _ => format!("{layer} malformed"),
    }
}

fn icmp(v6: bool, whole: &[u8], payload: &[u8]) -> Icmp {
    let kind = whole.first().copied().unwrap_or(0);
    let code = whole.get(1).copied().unwrap_or(0);
    let is_error = if v6 {
        kind < 128
    } else {
        matches!(kind, 3 | 11 | 12)
    };
    Icmp {
        v6,
        kind,
        code,
        quoted: if is_error { quoted(payload) } else { None },
    }
}

/// An ICMP error carries the start of the packet that caused it: its IP
/// header and at least the first 8 bytes after it, which for TCP and UDP
/// are the two ports. Read by hand, bounds-checked, since that quote is
/// truncated by design and `etherparse` would (rightly) call it incomplete.
fn quoted(b: &[u8]) -> Option<Quoted> {
    let version = b.first()? >> 4;
    let (proto, src, dst, hl) = match version {
        4 => {
            let a: [u8; 4] = b.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = b.get(16..20)?.try_into().ok()?;
            let hl = usize::from(b.first()? & 0x0f) * 4;
            (*b.get(9)?, IpAddr::from(a), IpAddr::from(d), hl)
        }
        6 => {
            let a: [u8; 16] = b.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = b.get(24..40)?.try_into().ok()?;
            (
                *b.get(6)?,
                Ipv6Addr::from(a).into(),
                Ipv6Addr::from(d).into(),
                40,
            )
        }
        _ => return None,
    };
    let ports = b.get(hl..hl + 4)?;
    Some(Quoted {
        proto,
        src,
        dst,
        sport: u16::from_be_bytes([ports[0], ports[1]]),
        dport: u16::from_be_bytes([ports[2], ports[3]]),
    })
}

/// Name the TLS records a segment starts with: each record is a 5-byte
/// header (content type, version 3.x, length) and its body. In TLS 1.3
/// everything after the ServerHello, certificates included, travels as
/// encrypted `app-data` records: only the hellos are readable on the wire.
/// A heuristic (a segment may start mid-record): `None` unless the first
/// header is plausible.
pub fn tls_records(payload: &[u8]) -> Option<String> {
    let mut names: Vec<String> = Vec::new();
    let mut at = 0;
    while let Some(h) = payload.get(at..at + 5) {
        let kind = match h[0] {
            20 => "change-cipher-spec",
            21 => "alert",
            22 => "handshake",
            23 => "app-data",
            _ => break,
        };
        if h[1] != 3 || h[2] > 4 {
            break;
        }
        let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        let msg = if h[0] == 22 {
            payload
                .get(at + 5..at + 5 + len)
                .map_or(String::new(), handshake_messages)
        } else {
            String::new()
        };
        names.push(format!("{kind}{msg} {len}"));
        at += 5 + len;
    }
    if names.is_empty() {
        return None;
    }
    if at < payload.len() {
        names.push("..".into());
    }
    Some(format!("TLS[{}]", names.join(", ")))
}

/// The handshake messages in one whole, unencrypted handshake record
/// (" ServerHello+Certificate+..."), or "" when the lengths do not add up
/// to the record exactly, as with an encrypted Finished in TLS 1.2.
fn handshake_messages(body: &[u8]) -> String {
    let mut names = Vec::new();
    let mut at = 0;
    while let Some(h) = body.get(at..at + 4) {
        names.push(match h[0] {
            1 => "ClientHello",
            2 => "ServerHello",
            4 => "NewSessionTicket",
            8 => "EncryptedExtensions",
            11 => "Certificate",
            12 => "ServerKeyExchange",
            13 => "CertificateRequest",
            14 => "ServerHelloDone",
            15 => "CertificateVerify",
            16 => "ClientKeyExchange",
            20 => "Finished",
            _ => return String::new(),
        });
        at += 4 + (usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3]));
    }
    if at == body.len() && !names.is_empty() {
        format!(" {}", names.join("+"))
    } else {
        String::new()
    }
}

/// Printable ASCII as is, everything else as `.`: enough to recognise
/// "hello" and to see that TLS records are not readable.
pub fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A real frame, built with etherparse's writer: IPv4 TCP "hello" with PSH ACK.
    pub(crate) fn tcp_frame(payload: &[u8]) -> Vec<u8> {
        let builder = etherparse::PacketBuilder::ethernet2([0; 6], [0; 6])
            .ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64)
            .tcp(40000, 7001, 1000, 512)
            .psh()
            .ack(2000);
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    fn udp_frame(payload: &[u8]) -> Vec<u8> {
        let builder = etherparse::PacketBuilder::ethernet2([0; 6], [0; 6])
            .ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64)
            .udp(5000, 9);
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn reads_a_tcp_segment() {
        let p = parse(1, Duration::ZERO, 59, &tcp_frame(b"hello"));
        let Proto::Tcp(t) = p.proto else {
            panic!("not TCP: {p:?}")
        };
        assert_eq!((t.sport, t.dport, t.seq, t.ack), (40000, 7001, 1000, 2000));
        assert_eq!(t.flags.names(), "PSH ACK");
        assert_eq!((t.len, t.preview.as_slice()), (5, &b"hello"[..]));
        assert_eq!(p.ip_len, 20 + 20 + 5);
    }

    #[test]
    fn truncated_payload_keeps_the_claimed_length() {
        let f = tcp_frame(&[b'x'; 100]);
        let p = parse(1, Duration::ZERO, f.len(), &f[..f.len() - 90]);
        let Proto::Tcp(t) = p.proto else {
            panic!("not TCP: {p:?}")
        };
        assert_eq!((t.len, t.preview.len()), (100, 10));
    }

    #[test]
    fn port_unreachable_names_the_quoted_ports() {
        // ICMP type 3 code 3 quoting the UDP datagram 5000 -> 9.
        let udp = udp_frame(b"ping");
        let quote = &udp[14..14 + 28];
        let builder = etherparse::PacketBuilder::ethernet2([0; 6], [0; 6])
            .ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::Port,
            ));
        let mut f = Vec::new();
        builder.write(&mut f, quote).unwrap();
        let p = parse(1, Duration::ZERO, f.len(), &f);
        let Proto::Icmp(i) = p.proto else {
            panic!("not ICMP: {p:?}")
        };
        assert_eq!(i.describe(), "ICMP port unreachable (quotes udp 5000 -> 9)");
    }

    #[test]
    fn names_tls_records_and_handshake_messages() {
        // A handshake record holding ServerHello (2 bytes of body) and
        // ServerHelloDone (empty), then an app-data record cut short.
        let mut b = vec![22, 3, 3, 0, 10, 2, 0, 0, 2, 0xaa, 0xbb, 14, 0, 0, 0];
        b.extend_from_slice(&[23, 3, 3, 0, 40, 1, 2]);
        assert_eq!(
            tls_records(&b).as_deref(),
            Some("TLS[handshake ServerHello+ServerHelloDone 10, app-data 40]")
        );
        // Encrypted handshake bytes whose lengths do not add up: no names.
        assert_eq!(
            tls_records(&[22, 3, 3, 0, 4, 0x99, 1, 2, 3]).as_deref(),
            Some("TLS[handshake 4]")
        );
        assert_eq!(tls_records(b"GET / HTTP/1.1"), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(1, Duration::ZERO, bytes.len(), &bytes);
        }

        #[test]
        fn every_truncation_and_corruption_never_panics(
            cut in 0usize..80, at in 0usize..80, byte in any::<u8>(), tcp in any::<bool>()
        ) {
            let mut f = if tcp { tcp_frame(b"hello world") } else { udp_frame(b"hello world") };
            if let Some(b) = f.get_mut(at) { *b = byte; }
            let cut = cut.min(f.len());
            let p = parse(1, Duration::ZERO, f.len(), &f[..cut]);
            // The ladder and the layers view must survive it too.
            let _ = crate::ladder::label(&p, None);
            let _ = crate::layers::dump(&p, &f[..cut]);
        }
    }
}
