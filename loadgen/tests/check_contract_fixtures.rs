//! The contract cases of `loadgen check` (`stall-timeout`,
//! `shutdown-in-flight`, `shutdown-never-reader`) against small fixture
//! servers: a correct one passes all three, and each broken one is caught
//! by the case named for its flaw. This is how we know those cases can fail.
//!
//! The shutdown cases send SIGTERM, so a fixture cannot live inside this
//! test process: each one is this very test binary started again as a
//! child, running the ignored test `fixture_server` with the flaw in
//! `LOADGEN_FIXTURE`. It prints `listening on ADDR` like every server of
//! the workspace, so `ServerProcess` starts it like one.
//!
//! Run with: `cargo test -p loadgen --test check_contract_fixtures -- --nocapture`

// A test fails by panicking; helpers outside #[test] fns may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use loadgen::check::{self, CheckArgs, Report, Status};
use loadgen::child::ServerProcess;

/// The fixture's `--grace` and `--stall-timeout`, passed to the checker as
/// `--server-grace` / `--server-stall`.
const GRACE: Duration = Duration::from_secs(2);
const STALL: Duration = Duration::from_secs(1);

/// How each fixture misbehaves.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Flaw {
    /// Keeps the contract: stall timeout, drain, FIN, bounded grace.
    None,
    /// SIGTERM is ignored (it exits by itself after 30 s).
    IgnoresTerm,
    /// Exits at once on SIGTERM: whatever it had not echoed is lost, and
    /// the kernel resets every socket with unread bytes.
    ExitsAtOnce,
    /// No write timeout, and shutdown waits for every connection to end:
    /// a client that stops reading holds it forever.
    Unbounded,
}

impl Flaw {
    fn parse(s: &str) -> Flaw {
        match s {
            "none" => Flaw::None,
            "ignores-term" => Flaw::IgnoresTerm,
            "exits-at-once" => Flaw::ExitsAtOnce,
            "unbounded" => Flaw::Unbounded,
            other => panic!("unknown fixture flaw {other}"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Flaw::None => "none",
            Flaw::IgnoresTerm => "ignores-term",
            Flaw::ExitsAtOnce => "exits-at-once",
            Flaw::Unbounded => "unbounded",
        }
    }
}

static TERM: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    TERM.store(true, Ordering::SeqCst);
}

extern "C" fn exit_now(_: libc::c_int) {
    // _exit(2) is async-signal-safe: the process ends inside the handler,
    // whatever its threads were doing.
    // SAFETY: no memory is touched; the process ends here.
    unsafe { libc::_exit(0) }
}

/// One connection of the fixture: raw framing (bytes echoed as they come),
/// blocking socket. Reads time out every 50 ms so the thread notices
/// shutdown; writes time out after STALL without progress (SO_SNDTIMEO),
/// which is the stall timeout.
fn serve(mut s: TcpStream, flaw: Flaw) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    if flaw != Flaw::Unbounded {
        let _ = s.set_write_timeout(Some(STALL));
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if TERM.load(Ordering::SeqCst) {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => {
                let _ = s.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                // A write that times out is a stalled client: return, and
                // dropping the socket closes it.
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
    // Shutdown: echo what the kernel already holds, without waiting for
    // more; then FIN; then discard until the client's FIN or the deadline.
    // This thread's own deadline: it may see TERM before the main thread
    // does, and the main thread cuts everyone at its deadline anyway.
    let deadline = Instant::now() + GRACE;
    let _ = s.set_read_timeout(Some(Duration::from_millis(1)));
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = s.shutdown(Shutdown::Write);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn fixture_main(flaw: Flaw) -> ! {
    // SAFETY: installing a handler that only stores to an atomic or calls
    // _exit, or SIG_IGN; nothing else in this process handles SIGTERM.
    unsafe {
        if flaw == Flaw::IgnoresTerm {
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
        } else if flaw == Flaw::ExitsAtOnce {
            libc::signal(
                libc::SIGTERM,
                exit_now as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        } else {
            libc::signal(
                libc::SIGTERM,
                on_term as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
    let started = Instant::now();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    // libtest has printed `test fixture_server ... ` without a newline:
    // end that line so `listening on ADDR` starts one of its own.
    println!();
    common::net::announce(listener.local_addr().unwrap());
    let mut threads = Vec::new();
    while !TERM.load(Ordering::SeqCst) {
        if started.elapsed() > Duration::from_secs(30) {
            std::process::exit(3);
        }
        match listener.accept() {
            Ok((s, _)) => {
                let _ = s.set_nonblocking(false);
                threads.push(thread::spawn(move || serve(s, flaw)));
            }
            // The fixture polls: a 10 ms nap between accept attempts.
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
    let deadline = Instant::now() + GRACE;
    drop(listener);
    if flaw == Flaw::Unbounded {
        for t in threads {
            let _ = t.join();
        }
    } else {
        while Instant::now() < deadline && !threads.iter().all(|t| t.is_finished()) {
            thread::sleep(Duration::from_millis(10));
        }
    }
    // Exiting closes every socket still open: those are cut.
    let _ = io::stdout().flush();
    std::process::exit(0);
}

/// Not a test: the fixture server, when started by `start_fixture`.
#[test]
#[ignore = "a fixture server the other tests start as a child process"]
fn fixture_server() {
    if let Ok(flaw) = std::env::var("LOADGEN_FIXTURE") {
        fixture_main(Flaw::parse(&flaw));
    }
}

fn start_fixture(flaw: Flaw) -> ServerProcess {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "fixture_server",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env("LOADGEN_FIXTURE", flaw.name());
    ServerProcess::start_command(cmd, true, Duration::from_secs(20)).unwrap()
}

fn check(server: &ServerProcess, case: &str) -> Report {
    let addr = server.addr().to_string();
    let pid = server.pid().to_string();
    let flags = [
        "--addr",
        &addr,
        "--server-pid",
        &pid,
        "--framing",
        "raw",
        "--server-grace",
        "2s",
        // The fixture's stall clock is SO_SNDTIMEO, which restarts on
        // every byte the kernel takes (a window that opens a little when
        // our unread receive queue is collapsed), so it closes a staller
        // up to a second later than a server that keeps its own clock.
        "--server-stall",
        "2s",
        "--cases",
        case,
    ];
    let args = CheckArgs::from_flags(flags).unwrap();
    let report = check::run(&args, |r| println!("{}", r.line())).unwrap();
    println!("{}", report.closing_line());
    report
}

/// Run one case against a fresh fixture; return its status and detail, and
/// the fixture's exit status once stopped (SIGTERM again if it still runs).
fn run_case(flaw: Flaw, case: &str) -> (Status, String, Option<i32>) {
    let server = start_fixture(flaw);
    let report = check(&server, case);
    let r = report.get(case).unwrap();
    let (status, got) = (r.status, r.got.clone());
    let exit = server
        .stop(Duration::from_secs(1))
        .ok()
        .and_then(|(s, killed)| (!killed).then_some(s.code()).flatten());
    (status, got, exit)
}

#[test]
fn correct_fixture_passes_every_contract_case() {
    for case in [
        "stall-timeout",
        "shutdown-in-flight",
        "shutdown-never-reader",
    ] {
        let (status, got, exit) = run_case(Flaw::None, case);
        assert_eq!(status, Status::Pass, "{case}: {got}");
        assert_eq!(exit, Some(0), "{case}: fixture exit status");
    }
}

#[test]
fn fixture_ignoring_sigterm_fails_both_shutdown_cases() {
    for case in ["shutdown-in-flight", "shutdown-never-reader"] {
        let (status, got, _) = run_case(Flaw::IgnoresTerm, case);
        assert_eq!(status, Status::Fail, "{case}: {got}");
        assert!(got.contains("process still running"), "{case}: {got}");
    }
}

#[test]
fn fixture_exiting_at_once_loses_echoes_in_flight() {
    let (status, got, _) = run_case(Flaw::ExitsAtOnce, "shutdown-in-flight");
    assert_eq!(status, Status::Fail, "{got}");
    // It did exit: what fails is the echo owed.
    assert!(got.contains("process gone"), "{got}");
    // Bytes it had read and not echoed are lost; bytes still in its
    // receive queue make the kernel answer with RST: either is caught.
    assert!(
        got.contains("owed came back") || got.contains("connection reset (RST)"),
        "{got}"
    );
}

#[test]
fn fixture_without_stall_timeout_fails_stall_and_never_reader() {
    let (status, got, _) = run_case(Flaw::Unbounded, "stall-timeout");
    assert_eq!(status, Status::Fail, "{got}");
    assert!(got.contains("staller still open"), "{got}");
    let (status, got, _) = run_case(Flaw::Unbounded, "shutdown-never-reader");
    assert_eq!(status, Status::Fail, "{got}");
    assert!(got.contains("process still running"), "{got}");
}

#[test]
fn contract_cases_skip_without_pid_and_shutdown_runs_only_when_named() {
    let server = start_fixture(Flaw::None);
    let addr = server.addr().to_string();
    // No --server-pid: the three contract cases SKIP and say why.
    let args = CheckArgs::from_flags([
        "--addr",
        &addr,
        "--framing",
        "raw",
        "--cases",
        "stall-timeout,shutdown-*",
    ])
    .unwrap();
    let report = check::run(&args, |_| {}).unwrap();
    assert_eq!(report.skipped, 3, "{}", report.closing_line());
    for c in &report.cases {
        assert!(c.expected.contains("needs --server-pid"), "{}", c.line());
    }
    // A bare `*` never selects a case that ends the server; naming does.
    let all: Vec<&str> = check::select("*").unwrap().iter().map(|c| c.name).collect();
    assert!(all.contains(&"stall-timeout"), "{all:?}");
    assert!(!all.iter().any(|n| n.starts_with("shutdown-")), "{all:?}");
    let named: Vec<&str> = check::select("*,shutdown-*")
        .unwrap()
        .iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(
        &named[named.len() - 2..],
        ["shutdown-in-flight", "shutdown-never-reader"]
    );
    // And the fixture is still up.
    let (status, killed) = server.stop(Duration::from_secs(5)).unwrap();
    assert!(status.success() && !killed, "{status}");
}
