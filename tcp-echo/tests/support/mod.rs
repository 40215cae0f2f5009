//! The `tcp-echo` binary as a child process, through the workspace's shared
//! `test-support` crate (its announced address, its stderr lines as they
//! come, its exit within a bound).
#![allow(dead_code)]

use std::process::Command;

#[allow(unused_imports)] // each test binary uses its own subset
pub use test_support::{LIMIT as T, ServerProcess as Running};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tcp-echo"))
}

/// `tcp-echo server --addr 127.0.0.1:0 ARGS`, with `RUST_LOG=info`.
pub fn spawn_server(args: &[&str]) -> Running {
    let mut cmd = bin();
    cmd.args(["server", "--addr", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info");
    Running::spawn(&mut cmd)
}
