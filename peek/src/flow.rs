//! Packets grouped into conversations (one TCP connection or one UDP flow
//! each), and what a conversation's packets say about it: who opened it, the
//! handshake time, how it ended, retransmissions and duplicate ACKs.
//!
//! This is the bookkeeping Wireshark's "Conversations" and "Expert Info"
//! do, kept small enough to read: relative sequence numbers (each side's
//! first sequence number becomes 0, so the SYN is `seq=0` and the first
//! data byte is 1), comparisons modulo 2^32 (sequence numbers wrap), and an
//! ICMP error filed under the flow whose packet it quotes.
//!
//! Try: `target/debug/peek -- python3 peek/lessons/wire.py close --unread` (the summary names who sent the RST)

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::parse::{Packet, Proto};

/// Which way a packet went, from the side that opened the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// From the opener (the client) to the other side.
    Out,
    Back,
}

impl Dir {
    fn index(self) -> usize {
        match self {
            Dir::Out => 0,
            Dir::Back => 1,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Conversation {
    pub tcp: bool,
    /// The opener: the sender of the first SYN, or of the first packet seen.
    pub a: SocketAddr,
    pub b: SocketAddr,
    /// Indexes into the capture's packets, in capture order, with directions.
    pub packets: Vec<(usize, Dir)>,
    /// Each side's initial sequence number (TCP), to print relative numbers.
    pub isn: [Option<u32>; 2],
    /// Each side's window scale from its SYN; used only if both sent one.
    pub wscale: [Option<u8>; 2],
}

impl Conversation {
    /// Relative sequence and acknowledgement numbers of a TCP packet.
    pub fn relative(&self, dir: Dir, seq: u32, ack: u32) -> (u32, u32) {
        let mine = self.isn[dir.index()].unwrap_or(0);
        let theirs = self.isn[1 - dir.index()].unwrap_or(0);
        (seq.wrapping_sub(mine), ack.wrapping_sub(theirs))
    }

    /// The window in bytes: the field shifted by the sender's scale, as
    /// agreed in the handshake (never in a SYN itself, RFC 7323).
    pub fn window(&self, dir: Dir, raw: u16, syn: bool) -> u32 {
        match (syn, self.wscale) {
            (false, [Some(a), Some(b)]) => {
                let shift = if dir == Dir::Out { a } else { b };
                u32::from(raw) << shift.min(14)
            }
            _ => u32::from(raw),
        }
    }
}

/// The endpoints of a TCP/UDP packet, or of the packet an ICMP error quotes
/// (with `true`: the ICMP travels against the quoted packet's direction).
fn endpoints(p: &Packet) -> Option<(bool, SocketAddr, SocketAddr, bool)> {
    match &p.proto {
        Proto::Tcp(t) => Some((
            true,
            SocketAddr::new(p.src, t.sport),
            SocketAddr::new(p.dst, t.dport),
            false,
        )),
        Proto::Udp { sport, dport, .. } => Some((
            false,
            SocketAddr::new(p.src, *sport),
            SocketAddr::new(p.dst, *dport),
            false,
        )),
        Proto::Icmp(i) => {
            let q = i.quoted?;
            let tcp = match q.proto {
                6 => true,
                17 => false,
                _ => return None,
            };
            Some((
                tcp,
                SocketAddr::new(q.src, q.sport),
                SocketAddr::new(q.dst, q.dport),
                true,
            ))
        }
        Proto::Other(_) => None,
    }
}

/// Group packets into conversations, in order of first appearance; packets
/// that belong to none (ARP, ICMP echo, unparsable) are returned apart.
/// `port`: keep only conversations with that port on either side.
pub fn conversations(packets: &[Packet], port: Option<u16>) -> (Vec<Conversation>, Vec<usize>) {
    let mut convs: Vec<Conversation> = Vec::new();
    let mut by_key: HashMap<(bool, SocketAddr, SocketAddr), usize> = HashMap::new();
    let mut loose = Vec::new();
    for (i, p) in packets.iter().enumerate() {
        let Some((tcp, src, dst, reply)) = endpoints(p) else {
            if port.is_none() {
                loose.push(i);
            }
            continue;
        };
        if port.is_some_and(|q| src.port() != q && dst.port() != q) {
            continue;
        }
        let key = if src <= dst {
            (tcp, src, dst)
        } else {
            (tcp, dst, src)
        };
        let c = *by_key.entry(key).or_insert_with(|| {
            // Who opened it: a SYN-ACK seen first means the capture missed
            // the SYN, and its receiver is the opener.
            let syn_ack = matches!(&p.proto, Proto::Tcp(t) if t.flags.syn && t.flags.ack);
            let (a, b) = if reply || syn_ack {
                (dst, src)
            } else {
                (src, dst)
            };
            convs.push(Conversation {
                tcp,
                a,
                b,
                packets: Vec::new(),
                isn: [None, None],
                wscale: [None, None],
            });
            convs.len() - 1
        });
        let conv = &mut convs[c];
        // For an ICMP error `src` is the quoted packet's sender: it goes back.
        let dir = match (src == conv.a, reply) {
            (true, false) | (false, true) => Dir::Out,
            _ => Dir::Back,
        };
        if let Proto::Tcp(t) = &p.proto {
            let slot = &mut conv.isn[dir.index()];
            if t.flags.syn || slot.is_none() {
                *slot = Some(t.seq);
            }
            if t.flags.syn {
                conv.wscale[dir.index()] = t.wscale;
            }
        }
        conv.packets.push((i, dir));
    }
    (convs, loose)
}

/// "a < b" for sequence numbers, modulo 2^32 (RFC 9293, 3.4).
fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// SYN to the ACK that completes the handshake.
    pub handshake: Option<Duration>,
    /// Packets and payload bytes, [out, back].
    pub segments: [usize; 2],
    pub bytes: [usize; 2],
    /// The first FIN, and the first RST: which way, and the packet number.
    pub first_fin: Option<(Dir, usize)>,
    pub first_rst: Option<(Dir, usize)>,
    pub retransmissions: usize,
    pub dup_acks: usize,
    /// The largest IP packet (header + payload) and its packet number.
    pub largest: Option<(usize, usize)>,
    pub icmp: usize,
}

pub fn summarize(conv: &Conversation, packets: &[Packet]) -> Summary {
    let mut s = Summary::default();
    // Per direction: the highest sequence end sent, and the last pure ACK.
    let mut high: [Option<u32>; 2] = [None, None];
    let mut last_ack: [Option<(u32, u16)>; 2] = [None, None];
    let mut syn_at = None;
    let mut syn_ack_seen = false;
    for &(i, dir) in &conv.packets {
        let Some(p) = packets.get(i) else { continue };
        let d = dir.index();
        if !matches!(p.proto, Proto::Icmp(_)) {
            s.segments[d] += 1;
        }
        if s.largest.is_none_or(|(len, _)| p.ip_len > len) {
            s.largest = Some((p.ip_len, p.number));
        }
        match &p.proto {
            Proto::Tcp(t) => {
                s.bytes[d] += t.len;
                let f = t.flags;
                if f.syn && !f.ack && dir == Dir::Out {
                    syn_at.get_or_insert(p.ts);
                } else if f.syn && f.ack && dir == Dir::Back {
                    syn_ack_seen = true;
                } else if f.ack
                    && !f.syn
                    && dir == Dir::Out
                    && syn_ack_seen
                    && let (Some(t0), None) = (syn_at, s.handshake)
                {
                    s.handshake = Some(p.ts.saturating_sub(t0));
                }
                if f.fin && s.first_fin.is_none() {
                    s.first_fin = Some((dir, p.number));
                }
                if f.rst && s.first_rst.is_none() {
                    s.first_rst = Some((dir, p.number));
                }
                // SYN and FIN each take one sequence number.
                let used = t.len as u32 + u32::from(f.syn) + u32::from(f.fin);
                if used > 0 && !f.rst {
                    let end = t.seq.wrapping_add(used);
                    match high[d] {
                        Some(h) if !seq_lt(h, end) => s.retransmissions += 1,
                        _ => high[d] = Some(end),
                    }
                    last_ack[d] = None;
                } else if f.ack && !f.rst {
                    // A duplicate ACK (RFC 5681): no data, same ACK and
                    // window as the last one, while the other side has
                    // data in flight beyond it.
                    let in_flight = high[1 - d].is_some_and(|h| seq_lt(t.ack, h));
                    if last_ack[d] == Some((t.ack, t.window)) && in_flight {
                        s.dup_acks += 1;
                    }
                    last_ack[d] = Some((t.ack, t.window));
                }
            }
            Proto::Udp { len, .. } => s.bytes[d] += len,
            Proto::Icmp(_) => s.icmp += 1,
            Proto::Other(_) => {}
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{Flags, Tcp};
    use std::net::{IpAddr, Ipv4Addr};

    fn seg(n: usize, out: bool, seq: u32, ack: u32, flags: &str, len: usize) -> Packet {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (sport, dport) = if out { (40000, 7001) } else { (7001, 40000) };
        Packet {
            number: n,
            ts: Duration::from_millis(n as u64),
            wire_len: 54 + len,
            ip_len: 40 + len,
            src: lo,
            dst: lo,
            proto: Proto::Tcp(Tcp {
                sport,
                dport,
                seq,
                ack,
                flags: Flags {
                    syn: flags.contains('S'),
                    ack: flags.contains('A'),
                    psh: flags.contains('P'),
                    fin: flags.contains('F'),
                    rst: flags.contains('R'),
                },
                window: 100,
                mss: None,
                wscale: None,
                len,
                preview: Vec::new(),
                tls: None,
            }),
        }
    }

    #[test]
    fn handshake_data_fin_and_a_retransmission() {
        let pk = vec![
            seg(1, true, 100, 0, "S", 0),
            seg(2, false, 900, 101, "SA", 0),
            seg(3, true, 101, 901, "A", 0),
            seg(4, true, 101, 901, "PA", 5),
            seg(5, true, 101, 901, "PA", 5), // the same bytes again
            seg(6, false, 901, 106, "FA", 0),
        ];
        let (c, loose) = conversations(&pk, None);
        assert_eq!((c.len(), loose.len()), (1, 0));
        assert_eq!(c[0].a.port(), 40000);
        assert_eq!(c[0].relative(Dir::Back, 901, 106), (1, 6));
        let s = summarize(&c[0], &pk);
        assert_eq!(s.handshake, Some(Duration::from_millis(2)));
        assert_eq!((s.segments, s.bytes), ([4, 2], [10, 0]));
        assert_eq!(s.retransmissions, 1);
        assert_eq!(s.first_fin, Some((Dir::Back, 6)));
        assert!(conversations(&pk, Some(1)).0.is_empty());
    }

    #[test]
    fn duplicate_acks_need_data_in_flight() {
        let pk = vec![
            seg(1, true, 1, 1, "PA", 100),
            seg(2, false, 1, 1, "A", 0),
            seg(3, false, 1, 1, "A", 0),
            seg(4, false, 1, 1, "A", 0),
        ];
        let (c, _) = conversations(&pk, None);
        assert_eq!(summarize(&c[0], &pk).dup_acks, 2);
    }
}
