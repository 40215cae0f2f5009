//! Fuzz target: `common`'s frame decoders, every framing, any chunking.
//!
//! The first input byte picks the framing and `max_frame`, the second how
//! the rest is cut into reads; `common_fuzz::run` (fuzz/src/lib.rs) feeds
//! the chunks to `common::Decoder` and asserts the result matches a simple
//! reference decoder, stays within the size limit and re-encodes exactly.
//!
//! Run with (from fuzz/): `cargo +nightly fuzz run decode`
//! Watch: `exec/s` and `cov`; any assertion failure stops the run and
//! leaves the input in fuzz/artifacts/decode/.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = common_fuzz::run(data);
});
