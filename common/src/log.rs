//! One way to start logging for every binary in the workspace.
//!
//! `RUST_LOG` picks the level as usual (`RUST_LOG=debug cargo run -p tcp-echo
//! -- server`); without it the level is `info`. The levels are the ones
//! ARCHITECTURE.md ("Logging") sets for every binary:
//! `info` per connection opened and closed (with the peer address), `debug`
//! per frame, `trace` per syscall-level event.

/// Start env_logger with millisecond timestamps, default level `info`.
/// Calling it twice (say, from two tests in one process) is harmless.
pub fn init() {
    init_with_default("info");
}

/// Like [`init`], with another default level. Demos use `warn`, so their
/// stdout transcript is not interleaved with the server's `info` lines on
/// stderr; `RUST_LOG=info` brings them back.
pub fn init_with_default(level: &str) {
    let env = env_logger::Env::default().default_filter_or(level);
    let _ = env_logger::Builder::from_env(env)
        .format_timestamp_millis()
        .try_init();
}

/// For tests: capture logs through the test harness, default `warn` so a
/// passing run stays quiet. `RUST_LOG=debug cargo test` shows everything.
pub fn init_for_tests() {
    let env = env_logger::Env::default().default_filter_or("warn");
    let _ = env_logger::Builder::from_env(env)
        .format_timestamp_millis()
        .is_test(true)
        .try_init();
}
