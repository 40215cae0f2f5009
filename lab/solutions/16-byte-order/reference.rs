//! Exercise 16, reference: network byte order and the Internet checksum.
//! Put in place of lab/exercises/16-byte-order/src/lib.rs to try it.

/// The UDP header (RFC 768), its fields as numbers in host byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpHeader {
    pub src_port: u16,
    pub dst_port: u16,
    /// The length of header and payload, in bytes.
    pub length: u16,
    pub checksum: u16,
}

/// The header at the front of `datagram`, or `None` if there are fewer
/// than 8 bytes. Never panics, whatever the bytes.
pub fn parse_udp_header(datagram: &[u8]) -> Option<UdpHeader> {
    // `get` instead of indexing: a short datagram is None, not a panic.
    let h = datagram.get(..8)?;
    let field = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
    Some(UdpHeader {
        src_port: field(0),
        dst_port: field(2),
        length: field(4),
        checksum: field(6),
    })
}

/// The Internet checksum of `data` (RFC 1071).
pub fn internet_checksum(data: &[u8]) -> u16 {
    // u32 holds the carries: 65536 words of 0xffff before it could overflow,
    // and the fold below runs often enough for any datagram (at most 64 KiB).
    let mut sum: u32 = 0;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        // An odd byte is the HIGH byte of a word padded with zero.
        sum += u32::from(u16::from_be_bytes([*last, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop above leaves sum <= 0xffff, so the cast loses nothing.
    !(sum as u16)
}
