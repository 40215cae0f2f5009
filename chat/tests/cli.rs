//! The `chat` binary's edges: the demo of each design prints the protocol's
//! transcript; a bad flag is refused before anything is bound.

// A test's panic is its failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn the_demo_of_each_design_prints_the_protocol() {
    for model in ["threads", "tokio", "event-loop"] {
        let out = Command::new(env!("CARGO_BIN_EXE_chat"))
            .args(["demo", "--model", model])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{model}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        for line in [
            " alice <- Welcome to budgetchat! What shall I call you?",
            "   bob <- * The room contains: alice",
            "   bob <- [alice] hi bob",
            " carol <- * The room contains: alice, bob",
            " alice <- [bob] hello both",
            " alice <- * carol has left the room",
            "   bob <- * server shutting down",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{model}: no {line:?} in\n{text}"
            );
        }
        assert!(
            !text.contains("alice <- [alice]"),
            "{model}: an echo to the sender"
        );
    }
}

#[test]
fn a_bad_flag_is_refused_before_binding() {
    let out = Command::new(env!("CARGO_BIN_EXE_chat"))
        .args(["server", "--model", "fibers"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening on"));
    let out = Command::new(env!("CARGO_BIN_EXE_chat"))
        .args(["server", "--addr", "127.0.0.1:0", "--framing", "length"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lines"));
}
