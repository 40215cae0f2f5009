//! The one thing UDP adds on top of IP: a datagram is a message. This file
//! holds the sizes that follow from that, and the small header *our* client
//! puts in front of its payloads. Pure functions over byte slices, no socket.
//!
//! The server does not know about the header: it echoes every datagram back
//! unchanged, byte for byte. That is why `nc -u` or a three-line Python
//! client get a plain echo, while our client, which numbers its datagrams,
//! gets its numbers back and can tell which reply answers which request.
//!
//! ```text
//!  0       4     6                                 datagram length
//!  +-------+-----+----------------------------------+
//!  |  seq  | att |  payload (your message or bytes) |
//!  +-------+-----+----------------------------------+
//!   u32 BE  u16 BE
//! ```
//!
//! - `seq` numbers the *message* (0, 1, 2, ...). A retry resends the same
//!   `seq`, so two replies with one `seq` are a duplicate, and a reply whose
//!   `seq` is below one already seen arrived out of order.
//! - `att` numbers the *attempt* (1 for the first send, 2 for the first
//!   retry...). Without it, a reply that arrives after a retry is ambiguous:
//!   is it the slow answer to the first send or the quick answer to the
//!   retry? TCP has the same problem (Karn's algorithm simply refuses to
//!   measure retransmitted segments); carrying the attempt number avoids it,
//!   so every RTT we print is measured from the send it really answers.

/// Largest UDP payload over IPv4: the IPv4 total-length field is 16 bits
/// (65,535), minus a 20-byte IPv4 header and an 8-byte UDP header. A bigger
/// `send()` fails at once with `EMSGSIZE` ("Message too long"); nothing is
/// sent. (Over a real network anything above the path MTU, 1,472 bytes on
/// Ethernet, is sent as IP fragments; lose one fragment and the whole
/// datagram is lost.)
pub const MAX_IPV4_PAYLOAD: usize = 65_507;

/// Largest UDP payload over IPv6 (without jumbograms): IPv6's 16-bit payload
/// length does not count the 40-byte IPv6 header, only the 8-byte UDP one.
pub const MAX_IPV6_PAYLOAD: usize = 65_527;

/// The largest payload that fits in one Ethernet frame without IPv4
/// fragmentation: 1,500 (MTU) - 20 (IPv4) - 8 (UDP).
pub const ETHERNET_IPV4_PAYLOAD: usize = 1_472;

/// The server's receive buffer. `recv_from` into a buffer smaller than the
/// datagram silently cuts the datagram (the rest is discarded by the kernel,
/// and `recv_from` returns the cut length as if nothing happened), so the
/// buffer is bigger than any datagram IPv4 or IPv6 can carry.
pub const RECV_BUFFER: usize = 65_536;

/// Bytes our client puts in front of each payload.
pub const HEADER_LEN: usize = 6;

/// What our client writes in front of each payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Which message (0, 1, 2, ...); the same for every attempt.
    pub seq: u32,
    /// Which attempt at sending it: 1 for the first send.
    pub attempt: u16,
}

/// Append `header` then `payload` to `out` (cleared first), ready to `send()`.
pub fn encode(header: Header, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&header.seq.to_be_bytes());
    out.extend_from_slice(&header.attempt.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Split a received datagram into our header and the payload after it.
/// `None` if it is too short to carry a header: not one of our replies.
pub fn decode(datagram: &[u8]) -> Option<(Header, &[u8])> {
    let (seq, rest) = datagram.split_first_chunk::<4>()?;
    let (attempt, payload) = rest.split_first_chunk::<2>()?;
    Some((
        Header {
            seq: u32::from_be_bytes(*seq),
            attempt: u16::from_be_bytes(*attempt),
        },
        payload,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_exact_layout() {
        let mut out = vec![0xAA; 3];
        encode(
            Header {
                seq: 0x0102_0304,
                attempt: 2,
            },
            b"hi",
            &mut out,
        );
        assert_eq!(out, [1, 2, 3, 4, 0, 2, b'h', b'i']);
        let (h, p) = decode(&out).unwrap();
        assert_eq!(
            h,
            Header {
                seq: 0x0102_0304,
                attempt: 2
            }
        );
        assert_eq!(p, b"hi");
    }

    #[test]
    fn empty_payload_and_short_datagrams() {
        let mut out = Vec::new();
        encode(Header { seq: 7, attempt: 1 }, b"", &mut out);
        assert_eq!(out.len(), HEADER_LEN);
        assert_eq!(decode(&out).unwrap().1, b"");
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"hello"), None, "5 bytes cannot hold a header");
    }

    #[test]
    fn limits_add_up() {
        assert_eq!(MAX_IPV4_PAYLOAD + 20 + 8, 65_535);
        assert_eq!(MAX_IPV6_PAYLOAD + 8, 65_535);
        const { assert!(RECV_BUFFER > MAX_IPV6_PAYLOAD) };
    }
}
