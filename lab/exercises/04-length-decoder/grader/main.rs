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
        match call("decode_frame", || decode_frame(buf, max)) {
            Ok(Some(f)) => out.push(f),
            Ok(None) => return out,
            Err(e) => fail(
                "no error: these frames are small",
                &format!("{e:?} with {} in the buffer", show(buf)),
                "read the length as big-endian: u32::from_be_bytes",
            ),
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
            "the first 4 bytes are the length, big-endian (u32::from_be_bytes); the payload follows",
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

    step("with max 16: a 16-byte frame is fine, a header announcing 17 is refused at once");
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
