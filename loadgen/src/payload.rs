//! The bytes `loadgen` sends, and how it checks the echo byte for byte.
//!
//! A benchmark that sends the same 64 bytes a million times cannot tell a
//! correct echo from a server that answers connection 7 with connection 3's
//! bytes, or that repeats the previous frame after dropping one. So every
//! request is different and carries its own identity:
//!
//! ```text
//! c0000002s0000000000000011 Q3v+Zk...   (size bytes in all)
//! \__conn__/\______seq_____/ \_ a window into this connection's random body
//! ```
//!
//! The first [`HEADER`] bytes name the connection and the sequence number (hex,
//! so a `line` frame never contains `\n`); the rest is a slice of a random
//! printable body that starts at an offset depending on `seq`. Building a
//! payload is two `memcpy`s and checking one is a `memcmp`: the load generator
//! must stay cheap, because every microsecond it spends is taken from the
//! server it measures on a shared machine.

use bytes::{BufMut, BytesMut};
use common::Framing;
use common::rng::SplitMix64;

/// Bytes of the `c{conn:08x}s{seq:016x}` header.
pub const HEADER: usize = 26;
/// How many distinct body offsets there are.
const SPREAD: usize = 251;
/// 64 printable symbols and never `\n`, so any payload is a legal line frame.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Generates and verifies the payloads of one connection.
#[derive(Debug, Clone)]
pub struct Payloads {
    size: usize,
    conn: u64,
    body: Vec<u8>,
}

impl Payloads {
    /// Payloads of exactly `size` bytes for connection number `conn`.
    pub fn new(size: usize, conn: u64, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed ^ conn.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let body = (0..size + SPREAD)
            .map(|_| ALPHABET[(rng.next_u64() & 63) as usize])
            .collect();
        Payloads { size, conn, body }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    fn header(&self, seq: u64) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[0] = b'c';
        hex(self.conn, &mut h[1..9]);
        h[9] = b's';
        hex(seq, &mut h[10..26]);
        h
    }

    /// The two pieces of payload `seq`: a prefix of the header and a body slice.
    fn pieces(&self, seq: u64) -> ([u8; HEADER], usize, &[u8]) {
        let h = HEADER.min(self.size);
        let off = (seq % SPREAD as u64) as usize;
        (self.header(seq), h, &self.body[off..off + self.size - h])
    }

    /// Payload `seq` as one vector (tests, UDP datagrams).
    pub fn payload(&self, seq: u64) -> Vec<u8> {
        let (head, h, body) = self.pieces(seq);
        let mut v = Vec::with_capacity(self.size);
        v.extend_from_slice(&head[..h]);
        v.extend_from_slice(body);
        v
    }

    /// Append payload `seq` to `out` as one frame in `framing`.
    pub fn encode(&self, framing: Framing, seq: u64, out: &mut BytesMut) {
        let (head, h, body) = self.pieces(seq);
        out.reserve(self.size + 5);
        if framing == Framing::Length {
            // The caller keeps `size` within u32 (checked in `RunConfig`).
            out.put_u32(self.size as u32);
        }
        out.extend_from_slice(&head[..h]);
        out.extend_from_slice(body);
        if framing == Framing::Line {
            out.put_u8(b'\n');
        }
    }

    /// Is `got` exactly payload `seq`?
    pub fn matches(&self, seq: u64, got: &[u8]) -> bool {
        let (head, h, body) = self.pieces(seq);
        got.len() == self.size && got[..h] == head[..h] && got[h..] == *body
    }

    /// Why `got` is not payload `seq`, in words a person can act on.
    pub fn explain(&self, seq: u64, got: &[u8]) -> String {
        if got.len() != self.size {
            return format!(
                "echo of request {seq} is {} bytes, sent {}",
                got.len(),
                self.size
            );
        }
        // A misplaced echo (another request's, or another connection's)
        // still carries a valid header: name it.
        if self.size >= HEADER && got[0] == b'c' && got[9] == b's' {
            let conn = unhex(&got[1..9]);
            let other = unhex(&got[10..26]);
            if let (Some(c), Some(s)) = (conn, other)
                && (c != self.conn || s != seq)
            {
                return format!(
                    "echo of request {seq} (connection {}) carries request {s} of connection {c}: a misplaced, dropped or reordered frame",
                    self.conn
                );
            }
        }
        let expected = self.payload(seq);
        match expected.iter().zip(got).position(|(a, b)| a != b) {
            Some(i) => format!(
                "echo of request {seq} differs at byte {i}: got 0x{:02x}, sent 0x{:02x}",
                got[i], expected[i]
            ),
            None => format!("echo of request {seq} is correct"),
        }
    }
}

fn hex(mut v: u64, out: &mut [u8]) {
    for slot in out.iter_mut().rev() {
        *slot = b"0123456789abcdef"[(v & 15) as usize];
        v >>= 4;
    }
}

fn unhex(s: &[u8]) -> Option<u64> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| u64::from_str_radix(s, 16).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_vary_and_verify() {
        let p = Payloads::new(64, 3, 1);
        let a = p.payload(0);
        let b = p.payload(1);
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(p.matches(0, &a) && !p.matches(1, &a));
        assert!(!a.contains(&b'\n'));
        assert!(p.explain(1, &a).contains("request 0 of connection 3"));
        let mut bad = a.clone();
        bad[40] ^= 1;
        assert!(
            p.explain(0, &bad).contains("byte 40"),
            "{}",
            p.explain(0, &bad)
        );
        assert!(p.explain(0, &a[..10]).contains("10 bytes"));
        // Another connection's payload for the same seq differs too.
        assert_ne!(Payloads::new(64, 4, 1).payload(0), a);
    }

    #[test]
    fn tiny_and_framed() {
        let p = Payloads::new(3, 0, 1);
        assert_eq!(p.payload(5).len(), 3);
        let mut out = BytesMut::new();
        p.encode(Framing::Length, 5, &mut out);
        assert_eq!(&out[..4], &[0, 0, 0, 3]);
        assert_eq!(&out[4..], &p.payload(5)[..]);
        out.clear();
        p.encode(Framing::Line, 5, &mut out);
        assert_eq!(out.len(), 4);
        assert_eq!(out[3], b'\n');
    }
}
