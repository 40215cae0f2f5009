//! Replays the committed fuzz corpus (fuzz/corpus/decode/) through the very
//! harness the fuzz target runs (fuzz/src/lib.rs, included below), so every
//! `cargo test` catches a decoder regression without nightly or libFuzzer.
//!
//! It lives next to the decoder it tests (common), and needs only std and
//! common's own dependencies.
//!
//! Run with: `cargo test -p common --test fuzz_corpus`
//! To add a case: drop a file into fuzz/corpus/decode/ (byte 0 picks the
//! framing and limit, byte 1 the read sizes; see fuzz/README.md), or copy
//! a crash from fuzz/artifacts/decode/ there once it is fixed.

// A test fails by panicking; helpers outside #[test] fns may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::Framing;

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod harness;

use harness::End;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/decode")
}

#[test]
fn committed_corpus_replays_clean_and_covers_every_framing_and_ending() {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("fuzz/corpus/decode exists")
        .map(|e| e.expect("readable entry").path())
        .collect();
    entries.sort();
    assert!(
        entries.len() >= 20,
        "corpus has only {} files",
        entries.len()
    );
    let mut seen = BTreeSet::new();
    for path in &entries {
        let data = std::fs::read(path).expect("readable corpus file");
        // run() panics, naming the property, if the decoder misbehaves.
        let Some(summary) = harness::run(&data) else {
            continue;
        };
        let end = match summary.end {
            End::Clean => "clean",
            End::Truncated(_) => "truncated",
            End::TooLarge(_) => "too-large",
            End::LineTooLong => "line-too-long",
        };
        seen.insert(format!("{}/{end}", summary.framing));
        if summary.frames >= 2 {
            seen.insert(format!("{}/multi-frame", summary.framing));
        }
    }
    // The corpus must keep exercising each path, or replaying it proves little.
    for want in [
        "line/clean",
        "line/truncated",
        "line/line-too-long",
        "line/multi-frame",
        "length/clean",
        "length/truncated",
        "length/too-large",
        "length/multi-frame",
        "raw/clean",
    ] {
        assert!(
            seen.contains(want),
            "no corpus file reaches {want}; seen {seen:?}"
        );
    }
}

#[test]
fn reference_agrees_on_hand_written_streams() {
    let (frames, end) = harness::reference(Framing::Line, 3, b"ab\n\nabc\nabcd\n");
    assert_eq!(frames, vec![b"ab".to_vec(), b"".to_vec(), b"abc".to_vec()]);
    assert_eq!(end, End::LineTooLong);
    let (frames, end) = harness::reference(Framing::Length, 4, b"\0\0\0\x02hi\0\0\0\x09");
    assert_eq!(frames, vec![b"hi".to_vec()]);
    assert_eq!(end, End::TooLarge(9));
    let (_, end) = harness::reference(Framing::Length, 4, b"\0\0\0\x04hi");
    assert_eq!(end, End::Truncated(6));
}

/// The harness must be able to fail: a decoder that lost a frame, or one
/// that ended differently from the reference, is reported.
#[test]
#[should_panic(expected = "frame count differs from the reference")]
fn harness_catches_a_lost_frame() {
    harness::check_against_reference(Framing::Line, 10, b"a\nb\n", &[b"a".to_vec()], &End::Clean);
}

#[test]
#[should_panic(expected = "ending differs from the reference")]
fn harness_catches_a_wrong_ending() {
    harness::check_against_reference(Framing::Length, 10, b"\0\0\0\x01", &[], &End::Clean);
}

#[test]
#[should_panic(expected = "raw: bytes lost or reordered")]
fn harness_catches_lost_raw_bytes() {
    harness::check_against_reference(Framing::Raw, 10, b"abc", &[b"ab".to_vec()], &End::Clean);
}

/// A bounded random-input sweep on top of the corpus (cheap enough for
/// every test run; the fuzzer does the millions).
#[test]
fn random_inputs_hold_the_same_properties() {
    let mut rng = common::rng::SplitMix64::new(2024);
    for _ in 0..20_000 {
        let len = rng.below(64) as usize;
        let mut data = vec![0u8; len];
        rng.fill(&mut data);
        // Make newlines and small length prefixes common enough to matter.
        for b in data.iter_mut().skip(2) {
            match rng.below(8) {
                0 => *b = b'\n',
                1 => *b = 0,
                _ => {}
            }
        }
        let _ = harness::run(&data);
    }
}
