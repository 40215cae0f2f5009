//! The Budget Chat rules and the slow-member promise, checked by
//! `loadgen chat-check` against the three designs, each under both `--slow`
//! policies; and every case shown able to fail, against a room with one
//! deliberate mistake each (`support/broken.rs`).

// A test's panic is its failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chat::{ChatConfig, Model, SlowPolicy};
use common::{ServerConfig, Shutdown};
use loadgen::chat::check::{self, ChatCheckArgs, Slow};
use support::broken::{self, Mistake};

const MAX_FRAME: usize = 64 * 1024;

fn args(slow: Option<Slow>, cases: &str) -> ChatCheckArgs {
    ChatCheckArgs {
        addr: None,
        max_frame: MAX_FRAME,
        slow,
        flood: 8 << 20,
        server_pid: None,
        cases: cases.to_owned(),
        list: false,
    }
}

/// Run `model` in this process on port 0 with a small outbox and a long
/// stall timeout (the flood must not end the stalled member as stalled).
fn start(model: Model, slow: SlowPolicy) -> (SocketAddr, Shutdown, std::thread::JoinHandle<()>) {
    let listener = common::net::listen(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let config = ChatConfig {
        server: ServerConfig {
            max_frame: MAX_FRAME,
            max_pending: 64 * 1024,
            stall_timeout: Duration::from_secs(120),
            grace: Duration::from_secs(5),
            ..ServerConfig::default()
        },
        slow,
    };
    let s = shutdown.clone();
    let server = std::thread::spawn(move || {
        chat::run(model, listener, &config, &s).unwrap();
    });
    (addr, shutdown, server)
}

fn conforms(model: Model, slow: SlowPolicy) {
    let (addr, shutdown, server) = start(model, slow);
    let policy = match slow {
        SlowPolicy::Skip => Slow::Skip,
        SlowPolicy::Disconnect => Slow::Disconnect,
    };
    let outcomes = check::run(&args(Some(policy), "*"), addr, |o| {
        eprintln!("{model} --slow {slow}: {}", o.line())
    });
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.passed())
        .map(|o| o.line())
        .collect();
    let skipped = outcomes.iter().filter(|o| o.result.is_none()).count();
    assert!(failed.is_empty(), "{model} --slow {slow}: {failed:#?}");
    assert_eq!(skipped, 1, "exactly the other policy's case is skipped");
    assert_eq!(outcomes.len(), check::CASES.len());
    let t = Instant::now();
    shutdown.trigger();
    server.join().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        t.elapsed()
    );
}

#[test]
fn threads_skip() {
    conforms(Model::Threads, SlowPolicy::Skip);
}

#[test]
fn threads_disconnect() {
    conforms(Model::Threads, SlowPolicy::Disconnect);
}

#[test]
fn tokio_skip() {
    conforms(Model::Tokio, SlowPolicy::Skip);
}

#[test]
fn tokio_disconnect() {
    conforms(Model::Tokio, SlowPolicy::Disconnect);
}

#[test]
fn event_loop_skip() {
    conforms(Model::EventLoop, SlowPolicy::Skip);
}

#[test]
fn event_loop_disconnect() {
    conforms(Model::EventLoop, SlowPolicy::Disconnect);
}

/// Each case, against the mistake that breaks its rule: it must FAIL, and
/// say why (a fragment of its message).
const BROKEN: &[(&str, Mistake, Option<Slow>, &str)] = &[
    ("welcome", Mistake::NoWelcome, None, "no welcome line"),
    (
        "name-16",
        Mistake::ShortNames,
        None,
        "should be in the room",
    ),
    (
        "name-invalid",
        Mistake::AnyName,
        None,
        "should have been closed",
    ),
    (
        "name-duplicate",
        Mistake::Duplicates,
        None,
        "should have been closed",
    ),
    ("presence", Mistake::SelfInPresence, None, "should not name"),
    (
        "join-notice",
        Mistake::NoJoinNotice,
        None,
        "has entered the room",
    ),
    (
        "no-echo",
        Mistake::EchoToSender,
        None,
        "should have received nothing",
    ),
    ("order", Mistake::ReadIsLine, None, "in the order"),
    (
        "no-history",
        Mistake::History,
        None,
        "should have received nothing",
    ),
    ("leave-notice", Mistake::NoLeave, None, "has left the room"),
    ("leave-reset", Mistake::NoLeave, None, "has left the room"),
    (
        "leave-unjoined",
        Mistake::AnnounceUnjoined,
        None,
        "should have received nothing",
    ),
    ("long-line", Mistake::Truncate, None, "1000-character line"),
    (
        "over-limit",
        Mistake::NoLimit,
        None,
        "should have been closed",
    ),
    (
        "slow-skip",
        Mistake::BlockingWrites,
        Some(Slow::Skip),
        "slowest member",
    ),
    (
        "slow-skip",
        Mistake::Unbounded,
        Some(Slow::Skip),
        "not bounded",
    ),
    (
        "slow-disconnect",
        Mistake::BlockingWrites,
        Some(Slow::Disconnect),
        "slowest member",
    ),
    (
        "slow-disconnect",
        Mistake::Unbounded,
        Some(Slow::Disconnect),
        "has left the room",
    ),
];

#[test]
fn every_case_fails_against_its_mistake() {
    let mut covered = Vec::new();
    for &(case, mistake, slow, why) in BROKEN {
        let addr = broken::start(Some(mistake), MAX_FRAME);
        let outcomes = check::run(&args(slow, case), addr, |_| {});
        assert_eq!(outcomes.len(), 1, "{case}");
        match &outcomes[0].result {
            Some(Err(e)) => assert!(
                e.contains(why),
                "{case} against {mistake:?} failed, but not saying {why:?}: {e}"
            ),
            other => panic!("{case} should FAIL against {mistake:?}, but: {other:?}"),
        }
        covered.push(case);
    }
    for (case, _, _) in check::CASES {
        assert!(covered.contains(case), "no mistake proves {case} can fail");
    }
}

/// The broken room without a mistake passes the protocol cases, so each
/// failure above is its mistake's doing, not the toy room's.
#[test]
fn the_broken_room_without_a_mistake_passes_the_protocol_cases() {
    let addr = broken::start(None, MAX_FRAME);
    let outcomes = check::run(&args(None, "*"), addr, |_| {});
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.passed())
        .map(|o| o.line())
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
}
