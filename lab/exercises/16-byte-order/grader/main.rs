//! The lab's grader driver for exercise 16: calls your `parse_udp_header`
//! and `internet_checksum` and reports each step to
//! `cargo run -p lab -- check 16`. Not yours to edit.

#[path = "../../grader_support.rs"]
mod support;

use ex16_byte_order::{UdpHeader, internet_checksum, parse_udp_header};
use support::{call, fail, pass, show, step};

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn header(h: &Option<UdpHeader>) -> String {
    match h {
        None => "None".into(),
        Some(h) => format!(
            "ports {} -> {}, length {}, checksum 0x{:04x}",
            h.src_port, h.dst_port, h.length, h.checksum
        ),
    }
}

/// One checksum step: `data` must give `want`; the `why` names the mistake
/// a given wrong answer betrays.
fn expect_checksum(data: &[u8], want: u16, why: &dyn Fn(u16) -> String) {
    let got = call("internet_checksum", || internet_checksum(data));
    if got != want {
        fail(
            &format!("0x{want:04x} for the bytes {}", hex(data)),
            &format!("0x{got:04x}"),
            &why(got),
        );
    }
}

const WHY_HOST_ORDER: &str = "you read the bytes in host byte order (little-endian here): \
     the wire is big-endian, network byte order, so use u16::from_be_bytes";

fn main() {
    // A DNS query's header as it leaves port 8080: 1f 90 is 8080 big-endian.
    let wire = [
        0x1f, 0x90, 0x00, 0x35, 0x00, 0x0c, 0xab, 0xcd, b'a', b'b', b'c', b'd',
    ];
    step(&format!(
        "parse the UDP header of a datagram from port 8080 to port 53: {}",
        hex(&wire)
    ));
    let want = UdpHeader {
        src_port: 8080,
        dst_port: 53,
        length: 12,
        checksum: 0xabcd,
    };
    let got = call("parse_udp_header", || parse_udp_header(&wire));
    if got != Some(want) {
        let why = match got {
            Some(h) if h.src_port == 8080u16.swap_bytes() => WHY_HOST_ORDER,
            Some(_) => {
                "four 16-bit fields in this order: source port, destination port, length, checksum"
            }
            None => "8 bytes or more are a header: return Some",
        };
        fail(&header(&Some(want)), &header(&got), why);
    }

    step("a header cut short: 7 bytes give None, not a panic");
    let got = call("parse_udp_header", || parse_udp_header(&wire[..7]));
    if got.is_some() {
        fail(
            "None",
            &header(&got),
            "fewer than 8 bytes are not a UDP header: check the length before reading the fields",
        );
    }
    let got = call("parse_udp_header", || parse_udp_header(&[]));
    if got.is_some() {
        fail(
            "None for no bytes at all",
            &header(&got),
            "check the length first",
        );
    }

    let rfc = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
    step(&format!(
        "the checksum of RFC 1071's example bytes {} is 0x220d",
        hex(&rfc)
    ));
    expect_checksum(&rfc, 0x220d, &|got| {
        if got == 0x220d_u16.swap_bytes() {
            WHY_HOST_ORDER.into()
        } else if got == 0xddf2 {
            "that is the sum: the checksum is its one's complement, !sum".into()
        } else if got == 0x220f {
            "a carry was lost: add in a u32 and fold what is above 16 bits back into the low 16"
                .into()
        } else {
            "add the bytes as 16-bit big-endian words, fold the carries, return !sum".into()
        }
    });

    step("words that carry past 16 bits: ff ff 00 02 gives 0xfffd");
    expect_checksum(&[0xff, 0xff, 0x00, 0x02], 0xfffd, &|got| {
        if got == 0xfffe {
            "the carry out of 16 bits was dropped (a wrapping u16 add): sum in a u32, then \
             fold: sum = (sum & 0xffff) + (sum >> 16) until sum <= 0xffff"
                .into()
        } else {
            "sum in a u32, then fold the carries back in until sum <= 0xffff, and return !sum"
                .into()
        }
    });

    let odd = [0x00, 0x01, 0xf2];
    step(&format!(
        "an odd number of bytes: {} gives 0x0dfe",
        hex(&odd)
    ));
    expect_checksum(&odd, 0x0dfe, &|got| {
        if got == 0xfffe {
            "the last byte was never added: with an odd number of bytes, the last one is \
             the high byte of a word whose low byte is 0 (chunks_exact leaves it in remainder())"
                .into()
        } else if got == 0xff0c {
            "the odd last byte is the HIGH byte of its word: [last, 0], not [0, last]".into()
        } else {
            "an odd last byte counts as the word [last, 0]".into()
        }
    });

    step("a datagram checked with its checksum in place sums to 0");
    let mut dgram = b"\x1f\x90\x00\x35\x00\x0d\x00\x00hello".to_vec();
    let c = call("internet_checksum", || internet_checksum(&dgram));
    dgram[6..8].copy_from_slice(&c.to_be_bytes());
    let again = call("internet_checksum", || internet_checksum(&dgram));
    if again != 0 {
        fail(
            &format!("0x0000 for {}", show(&dgram)),
            &format!("0x{again:04x}"),
            "write the checksum back big-endian (to_be_bytes); a receiver's sum over the whole datagram is then 0",
        );
    }
    pass();
}
