//! One way to start logging for every binary in the workspace.
//!
//! `RUST_LOG` picks the level as usual (`RUST_LOG=debug cargo run -p tcp-echo
//! -- server`); without it the level is `info`. The levels follow STYLE.md:
//! `info` per connection opened and closed (with the peer address), `debug`
//! per frame, `trace` per syscall-level event.

/// Start env_logger with millisecond timestamps, default level `info`.
/// Calling it twice (say, from two tests in one process) is harmless.
pub fn init() {
    let env = env_logger::Env::default().default_filter_or("info");
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
