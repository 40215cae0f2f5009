//! The decode harness: what the fuzz target `decode` runs on every input,
//! and what `common/tests/fuzz_corpus.rs` replays over the committed corpus
//! (it includes this very file, so the two can never drift apart).
//!
//! An input is read as:
//!
//! | byte   | meaning                                                          |
//! |--------|------------------------------------------------------------------|
//! | 0      | framing (`% 3`: line, length, raw) and `max_frame` (`/ 3 % 8`, from [`MAX_FRAMES`]) |
//! | 1      | how the stream is cut into reads: seed and largest chunk ([`MAX_CHUNKS`]) |
//! | 2..    | the byte stream a peer sent                                      |
//!
//! The stream is fed to [`common::Decoder`] in chunks, the way `read()`
//! hands a server whatever has arrived, and the result is compared with a
//! deliberately simple second decoder ([`reference`]) that sees the whole
//! stream at once. Beyond "does not panic", every run asserts:
//!
//! - chunking never changes the frames or the verdict (same frames, same
//!   error, same unfinished tail at EOF);
//! - no frame is over `max_frame`, no line frame contains `\n`, and between
//!   frames the decoder never holds more than `max_frame` (+3 for a length
//!   prefix) bytes: memory stays bounded whatever the peer sends;
//! - re-encoding the frames with [`common::encode`] gives back exactly the
//!   bytes consumed;
//! - `raw` returns every byte, in order, and never fails.
//!
//! Run with: `cd fuzz && cargo +nightly fuzz run decode` (see fuzz/README.md).

use bytes::BytesMut;
use common::rng::SplitMix64;
use common::{Decoder, FrameError, Framing};

/// `max_frame` values the first byte chooses from: the edges (0, 1, the
/// 4-byte prefix size) and realistic limits.
pub const MAX_FRAMES: [usize; 8] = [0, 1, 3, 4, 16, 100, 4096, 1 << 20];

/// Largest read size the second byte chooses from (`usize::MAX`: one read).
pub const MAX_CHUNKS: [usize; 6] = [1, 2, 7, 64, 4096, usize::MAX];

/// How decoding a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Every byte was part of a complete frame.
    Clean,
    /// EOF with `n` bytes of an unfinished frame (`FrameError::Truncated`).
    Truncated(usize),
    /// A length prefix over the limit (`FrameError::TooLarge`).
    TooLarge(u64),
    /// A line longer than the limit (`FrameError::LineTooLong`).
    LineTooLong,
}

/// What one input did, for the replay test's coverage checks.
#[derive(Debug, Clone)]
pub struct Summary {
    pub framing: Framing,
    pub max_frame: usize,
    pub frames: usize,
    pub end: End,
}

/// Decode one fuzz input, asserting every property above (panics on a
/// violation, which is what libFuzzer reports as a crash). `None` when the
/// input is too short to choose a set-up.
pub fn run(data: &[u8]) -> Option<Summary> {
    let (&setup, rest) = data.split_first()?;
    let (&cut, stream) = rest.split_first()?;
    let framing = Framing::ALL[usize::from(setup) % 3];
    let max_frame = MAX_FRAMES[usize::from(setup) / 3 % MAX_FRAMES.len()];
    let max_chunk = MAX_CHUNKS[usize::from(cut) % MAX_CHUNKS.len()];
    let mut rng = SplitMix64::new(u64::from(cut));

    // Feed the stream in random-size reads, decoding after each one as a
    // server does.
    let mut dec = Decoder::new(framing, max_frame);
    let mut buf = BytesMut::new();
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut failed: Option<FrameError> = None;
    let mut rest = stream;
    'feed: while !rest.is_empty() {
        let n = if max_chunk == usize::MAX {
            rest.len()
        } else {
            (rng.below(max_chunk as u64) as usize + 1).min(rest.len())
        };
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame.to_vec()),
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e);
                    break 'feed;
                }
            }
        }
        // Bounded memory: between frames the decoder holds at most one
        // unfinished frame, which is never over the limit.
        let bound = match framing {
            Framing::Line => max_frame,
            Framing::Length => max_frame + 3,
            Framing::Raw => 0,
        };
        assert!(
            buf.len() <= bound,
            "{framing} max {max_frame}: {} bytes held between frames, bound {bound}",
            buf.len()
        );
    }
    let end = match failed {
        Some(FrameError::TooLarge { len, max }) => {
            assert_eq!(max, max_frame);
            assert!(len > max_frame as u64, "TooLarge for {len} <= {max_frame}");
            End::TooLarge(len)
        }
        Some(FrameError::LineTooLong { seen, max }) => {
            assert_eq!(max, max_frame);
            assert!(seen > max_frame, "LineTooLong after {seen} <= {max_frame}");
            End::LineTooLong
        }
        Some(other) => panic!("decode returned {other:?}, which only EOF or encode may"),
        None => match dec.decode_eof(&mut buf) {
            Ok(None) => End::Clean,
            Ok(Some(frame)) => panic!(
                "decode_eof found a frame ({} B) decode had left",
                frame.len()
            ),
            Err(FrameError::Truncated { pending }) => {
                assert!(buf.is_empty(), "decode_eof must drop the unfinished frame");
                assert_eq!(dec.decode_eof(&mut buf), Ok(None), "a second EOF is clean");
                End::Truncated(pending)
            }
            Err(other) => panic!("decode_eof returned {other:?}"),
        },
    };
    check_against_reference(framing, max_frame, stream, &frames, &end);
    Some(Summary {
        framing,
        max_frame,
        frames: frames.len(),
        end,
    })
}

/// Assert that `frames` and `end` are what [`reference`] makes of the
/// whole `stream`, and that re-encoding the frames gives back the bytes
/// they were cut from.
pub fn check_against_reference(
    framing: Framing,
    max_frame: usize,
    stream: &[u8],
    frames: &[Vec<u8>],
    end: &End,
) {
    if framing == Framing::Raw {
        // Raw frames are whatever each read brought: only their
        // concatenation is defined.
        assert!(frames.iter().all(|f| !f.is_empty()), "raw: empty frame");
        assert_eq!(frames.concat(), stream, "raw: bytes lost or reordered");
        assert_eq!(*end, End::Clean, "raw never fails");
        return;
    }
    let (want_frames, want_end) = reference(framing, max_frame, stream);
    assert_eq!(
        frames.len(),
        want_frames.len(),
        "{framing} max {max_frame}: frame count differs from the reference"
    );
    for (i, (got, want)) in frames.iter().zip(&want_frames).enumerate() {
        assert_eq!(
            got, want,
            "{framing} max {max_frame}: frame #{i} differs from the reference"
        );
        assert!(
            got.len() <= max_frame,
            "frame #{i} of {} B over the limit {max_frame}",
            got.len()
        );
    }
    assert_eq!(
        *end, want_end,
        "{framing} max {max_frame}: ending differs from the reference"
    );
    let mut again = BytesMut::new();
    for f in frames {
        assert!(
            common::encode(framing, f, &mut again).is_ok(),
            "a decoded frame must re-encode"
        );
    }
    assert!(
        stream.starts_with(&again),
        "{framing}: re-encoded frames differ from the bytes consumed"
    );
    if let End::Truncated(n) = want_end {
        assert_eq!(
            again.len() + n,
            stream.len(),
            "consumed + unfinished = everything"
        );
    }
}

/// The obvious decoder, written for clarity rather than speed: it sees the
/// whole stream at once and walks it frame by frame.
pub fn reference(framing: Framing, max_frame: usize, stream: &[u8]) -> (Vec<Vec<u8>>, End) {
    let mut frames = Vec::new();
    let mut pos = 0;
    loop {
        let rest = &stream[pos..];
        if rest.is_empty() {
            return (frames, End::Clean);
        }
        match framing {
            Framing::Raw => {
                frames.push(rest.to_vec());
                return (frames, End::Clean);
            }
            Framing::Length => {
                if rest.len() < 4 {
                    return (frames, End::Truncated(rest.len()));
                }
                let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                if len > max_frame {
                    return (frames, End::TooLarge(len as u64));
                }
                if rest.len() < 4 + len {
                    return (frames, End::Truncated(rest.len()));
                }
                frames.push(rest[4..4 + len].to_vec());
                pos += 4 + len;
            }
            Framing::Line => match rest.iter().position(|&b| b == b'\n') {
                Some(i) if i > max_frame => return (frames, End::LineTooLong),
                Some(i) => {
                    frames.push(rest[..i].to_vec());
                    pos += i + 1;
                }
                None if rest.len() > max_frame => return (frames, End::LineTooLong),
                None => return (frames, End::Truncated(rest.len())),
            },
        }
    }
}
