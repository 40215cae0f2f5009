//! Property tests for the codecs: whatever frames we encode, however the
//! byte stream is cut into reads, the decoder gives back exactly those
//! frames; and no input at all can make a decoder panic or grow past its
//! limit.

use bytes::BytesMut;
use common::framing::{Decoder, FrameError, Framing, encode};
use proptest::prelude::*;

fn payload(framing: Framing) -> BoxedStrategy<Vec<u8>> {
    match framing {
        // A line payload cannot contain the delimiter.
        Framing::Line => proptest::collection::vec(
            any::<u8>().prop_filter("no newline", |b| *b != b'\n'),
            0..300,
        )
        .boxed(),
        _ => proptest::collection::vec(any::<u8>(), 0..300).boxed(),
    }
}

/// Feed `wire` to a decoder in pieces of the given sizes (cycled).
fn decode_in_pieces(
    framing: Framing,
    max: usize,
    wire: &[u8],
    cuts: &[usize],
) -> Result<Vec<Vec<u8>>, FrameError> {
    let mut dec = Decoder::new(framing, max);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < wire.len() {
        let n = cuts[i % cuts.len()].clamp(1, wire.len() - pos);
        i += 1;
        buf.extend_from_slice(&wire[pos..pos + n]);
        pos += n;
        while let Some(f) = dec.decode(&mut buf)? {
            out.push(f.to_vec());
        }
        // The buffer never holds more than one unfinished frame plus one read.
        assert!(
            buf.len() <= max + 4 + n,
            "buffer grew to {} (max {max})",
            buf.len()
        );
    }
    if let Some(f) = dec.decode_eof(&mut buf)? {
        out.push(f.to_vec());
    }
    Ok(out)
}

fn framed_round_trip(framing: Framing) -> impl Strategy<Value = (Vec<Vec<u8>>, Vec<usize>)> {
    (
        proptest::collection::vec(payload(framing), 0..20),
        proptest::collection::vec(1usize..64, 1..10),
    )
}

proptest! {
    #[test]
    fn line_frames_survive_any_cutting((frames, cuts) in framed_round_trip(Framing::Line)) {
        let mut wire = BytesMut::new();
        for f in &frames { encode(Framing::Line, f, &mut wire).unwrap(); }
        prop_assert_eq!(decode_in_pieces(Framing::Line, 300, &wire, &cuts)?, frames);
    }

    #[test]
    fn length_frames_survive_any_cutting((frames, cuts) in framed_round_trip(Framing::Length)) {
        let mut wire = BytesMut::new();
        for f in &frames { encode(Framing::Length, f, &mut wire).unwrap(); }
        prop_assert_eq!(decode_in_pieces(Framing::Length, 300, &wire, &cuts)?, frames);
    }

    #[test]
    fn raw_bytes_survive_any_cutting((frames, cuts) in framed_round_trip(Framing::Raw)) {
        // Raw has no boundaries: only the concatenation is preserved.
        let wire: Vec<u8> = frames.concat();
        let got = decode_in_pieces(Framing::Raw, 1, &wire, &cuts)?;
        prop_assert_eq!(got.concat(), wire);
    }

    #[test]
    fn arbitrary_bytes_never_panic_or_overgrow(
        wire in proptest::collection::vec(any::<u8>(), 0..2000),
        cuts in proptest::collection::vec(1usize..300, 1..10),
        max in 0usize..200,
    ) {
        for framing in Framing::ALL {
            // Errors are fine; panics and unbounded buffers are not.
            let _ = decode_in_pieces(framing, max, &wire, &cuts);
        }
    }
}

#[test]
fn frames_over_the_limit_are_named() {
    let mut wire = BytesMut::new();
    encode(Framing::Length, &[7u8; 101], &mut wire).unwrap();
    assert_eq!(
        decode_in_pieces(Framing::Length, 100, &wire, &[7]),
        Err(FrameError::TooLarge { len: 101, max: 100 })
    );
}
