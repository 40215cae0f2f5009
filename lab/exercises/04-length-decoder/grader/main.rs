//! The lab's grader driver for exercise 4: calls your `decode_frame` and
//! reports each step to `cargo run -p lab -- check 4`. Not yours to edit.

#[path = "../../grader_support.rs"]
mod support;

use ex04_length_decoder::{LengthError, decode_frame};
use support::{call, fail, pass, res, show, step};

#[global_allocator]
static ALLOC: support::Guarded = support::Guarded;

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

fn drain(buf: &mut Vec<u8>, max: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for _ in 0..100_000 {
        let before = buf.clone();
        match call("decode_frame", || decode_frame(buf, max)) {
            Ok(Some(f)) => out.push(f),
            Ok(None) if *buf != before => fail(
                &format!("Ok(None) with the buffer left as it was, {}", show(&before)),
                &format!("Ok(None), and the buffer became {}", show(buf)),
                "you removed bytes (the 4-byte header?) before the whole frame was there: the next \
                 call then reads payload bytes as a length. Leave buf alone until you return the \
                 frame, then drain header and payload together",
            ),
            Ok(None) => return out,
            Err(e) => {
                // Which four bytes did it read, and how? Little-endian is one
                // mistake; a header already gone is another.
                let le = before
                    .get(..4)
                    .map(|h| u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize);
                let why = match &e {
                    LengthError::TooLong { len, .. } if Some(*len) == le => {
                        "the length came out byte-swapped: the header is big-endian (network order), \
                         u32::from_be_bytes, not from_le_bytes"
                    }
                    _ => {
                        "no frame here announces more than 300 bytes: the length must be the first 4 \
                          bytes of the buffer, big-endian, and nothing else"
                    }
                };
                fail(
                    "no error: these frames are small",
                    &format!("{e:?} with {} in the buffer", show(&before)),
                    why,
                )
            }
        }
    }
    fail(
        "Ok(None) once no complete frame is left",
        "more than 100000 frames from one buffer",
        "remove the header and the payload from buf",
    )
}

fn list(frames: &[Vec<u8>]) -> String {
    if frames.is_empty() {
        return "no frame".into();
    }
    let v: Vec<String> = frames.iter().take(4).map(|f| show(f)).collect();
    format!(
        "{}{}",
        v.join(", "),
        if frames.len() > 4 {
            format!(" and {} more", frames.len() - 4)
        } else {
            String::new()
        }
    )
}

fn main() {
    step("one frame: [0,0,0,5] \"hello\" gives \"hello\" and empties the buffer");
    let mut buf = frame(b"hello");
    let got = call("decode_frame", || decode_frame(&mut buf, 1024));
    if got != Ok(Some(b"hello".to_vec())) {
        fail(
            "Ok(Some(\"hello\"))",
            &res(&got),
            if got
                == Err(LengthError::TooLong {
                    len: 5 << 24,
                    max: 1024,
                })
            {
                "the length came out byte-swapped (5 read as 83886080): the header is big-endian \
                 (network order), u32::from_be_bytes, not from_le_bytes"
            } else {
                "the first 4 bytes are the length, big-endian (u32::from_be_bytes); the payload follows"
            },
        );
    }
    if !buf.is_empty() {
        fail(
            "the buffer empty afterwards",
            &format!("{} left", show(&buf)),
            "remove the 4 header bytes and the payload: buf.drain(..4 + len)",
        );
    }

    let mut input = frame(b"hello");
    input.extend(frame(b""));
    input.extend(frame(&[0, 10, 13, 255]));
    input.extend(frame(&vec![b'z'; 300]));
    let want = vec![
        b"hello".to_vec(),
        vec![],
        vec![0, 10, 13, 255],
        vec![b'z'; 300],
    ];
    step("four frames (one empty, one of 300 bytes) cut into two reads at every possible byte");
    for cut in 0..=input.len() {
        let mut buf = input[..cut].to_vec();
        let mut got = drain(&mut buf, 1024);
        buf.extend_from_slice(&input[cut..]);
        got.extend(drain(&mut buf, 1024));
        if got != want || !buf.is_empty() {
            fail(
                &format!("the frames {} whatever the cut", list(&want)),
                &format!("{} when cut after byte {cut}", list(&got)),
                "wait (Ok(None)) until all 4 header bytes, then all N payload bytes, are in",
            );
        }
    }

    step("1000 frames in one buffer come out in order");
    let mut buf = Vec::new();
    for i in 0..1000u32 {
        buf.extend(frame(format!("frame {i}").as_bytes()));
    }
    let got = drain(&mut buf, 1024);
    if got.len() != 1000
        || got
            .iter()
            .enumerate()
            .any(|(i, f)| *f != format!("frame {i}").into_bytes())
    {
        fail(
            "1000 frames in order",
            &format!("{} frames: {}", got.len(), list(&got)),
            "one frame per call, the rest kept in buf",
        );
    }

    step(
        "with max 16: 15- and 16-byte frames are fine, a header announcing 16 waits for its payload, one announcing 17 is refused at once",
    );
    let mut buf = frame(&[7u8; 15]);
    let got = call("decode_frame", || decode_frame(&mut buf, 16));
    if got != Ok(Some(vec![7u8; 15])) {
        fail(
            "Ok(Some(15 bytes))",
            &res(&got),
            "a frame under max is fine",
        );
    }
    let mut buf = 16u32.to_be_bytes().to_vec();
    buf.extend_from_slice(b"abc");
    let got = call("decode_frame", || decode_frame(&mut buf, 16));
    if got != Ok(None) {
        fail(
            "Ok(None): 16 is allowed, and 13 payload bytes are still to come",
            &res(&got),
            "a length equal to max is allowed: refuse only len > max",
        );
    }
    let mut buf = frame(&[7u8; 16]);
    let got = call("decode_frame", || decode_frame(&mut buf, 16));
    if got != Ok(Some(vec![7u8; 16])) {
        fail(
            "Ok(Some(16 bytes))",
            &res(&got),
            "max is the payload's size; the 4 header bytes do not count",
        );
    }
    let mut buf = 17u32.to_be_bytes().to_vec();
    let got = call("decode_frame", || decode_frame(&mut buf, 16));
    if got != Err(LengthError::TooLong { len: 17, max: 16 }) {
        fail(
            "Err(TooLong { len: 17, max: 16 }) as soon as the 4 header bytes are in",
            &res(&got),
            "check the announced length against max before waiting for the payload: the peer need never send it",
        );
    }

    step("a header announcing 4294967295 bytes (4 GiB), max 1 MiB: refused, nothing allocated");
    let mut buf = u32::MAX.to_be_bytes().to_vec();
    let got = call("decode_frame", || decode_frame(&mut buf, 1 << 20));
    if got
        != Err(LengthError::TooLong {
            len: u32::MAX as usize,
            max: 1 << 20,
        })
    {
        fail(
            "Err(TooLong { len: 4294967295, max: 1048576 })",
            &res(&got),
            "the length is whatever the peer wrote: compare it with max before anything else",
        );
    }
    pass();
}
