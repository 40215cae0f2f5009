//! `loadgen check` against every server of the workspace, in every framing
//! it supports, each started as a child process on an ephemeral port
//! (`<bin> server --addr 127.0.0.1:0 ...`, address read from its
//! `listening on` line), checked with `--server-pid` so memory is measured,
//! then stopped with SIGTERM, which must end it cleanly.
//!
//! A case a design fails by its nature is declared in
//! `loadgen::check::EXPECTED` and passed here via `--expect <server>`, so it
//! shows as XFAIL rather than being skipped silently.
//!
//! The contract cases (`stall-timeout`, `shutdown-in-flight`,
//! `shutdown-never-reader`) run in the `contract_*` tests, each on a fresh
//! server started with `--grace 2s --stall-timeout 1s` (the shutdown cases
//! end it), for every TCP server in every framing.
//!
//! Each chapter binary is rebuilt first if it is missing or older than its
//! sources (`loadgen::child::fresh_binary`), so `cargo test -p loadgen`
//! never tests a stale one; a crate that does not build fails the test with
//! cargo's message. Run with:
//! `cargo test -p loadgen --test check_servers -- --nocapture`

// A test fails by panicking; helpers outside #[test] fns may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use loadgen::check::{self, CheckArgs, Status};
use loadgen::child::ServerProcess;

/// Smaller than the defaults (K=200, N=1000) so the whole matrix stays
/// well under a minute on 2 cores; `defaults_against_async_tokio` runs the
/// real defaults once.
const QUICK: [&str; 4] = ["--idle-clients", "50", "--clients", "200"];

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Start `bin server --addr 127.0.0.1:0 <server_flags>`, run the checker
/// with `check_flags`, print its lines, stop the server. Returns the failing
/// lines (empty when all is well) so one test can try several framings and
/// report them all.
fn check_server(
    bin: &str,
    expect: &str,
    server_flags: &[&str],
    check_flags: &[&str],
) -> Vec<String> {
    let mut args = strings(&["server", "--addr", "127.0.0.1:0"]);
    args.extend(strings(server_flags));
    let server = ServerProcess::start_bin(bin, &args, true)
        .unwrap_or_else(|e| panic!("cannot start `{bin} {}`: {e:#}", args.join(" ")));
    let addr = server.addr().to_string();
    let pid = server.pid().to_string();
    let mut flags = strings(&["--addr", &addr, "--server-pid", &pid, "--expect", expect]);
    // The contract cases run in `contract_*` below, each on a server
    // started with short --grace and --stall-timeout.
    if !check_flags.contains(&"--cases") {
        flags.extend(strings(&["--cases", &battery()]));
    }
    flags.extend(strings(check_flags));
    let cli = format!("loadgen check {}", flags.join(" "));
    let parsed = CheckArgs::from_flags(&flags).unwrap();
    println!("== {bin} {} | {cli}", server_flags.join(" "));
    let report = check::run(&parsed, |r| println!("{}", r.line())).unwrap();
    println!("{}", report.closing_line());
    let mut failures: Vec<String> = report
        .cases
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| format!("{bin} {}: {}", server_flags.join(" "), c.line()))
        .collect();
    // Something must actually have been checked.
    if report.passed == 0 {
        failures.push(format!("{bin} {}: no case passed", server_flags.join(" ")));
    }
    match server.stop(Duration::from_secs(10)) {
        Ok((status, false)) if status.success() => {}
        Ok((status, killed)) => failures.push(format!(
            "{bin} {}: after SIGTERM exit status {status}{}",
            server_flags.join(" "),
            if killed { " (had to be killed)" } else { "" }
        )),
        Err(e) => failures.push(format!("{bin}: stopping failed: {e:#}")),
    }
    failures
}

/// Every case but the contract ones, as a `--cases` list.
fn battery() -> String {
    check::CASES
        .iter()
        .filter(|c| !c.needs_pid)
        .map(|c| c.name)
        .collect::<Vec<_>>()
        .join(",")
}

/// The server's --grace and --stall-timeout in the contract tests, told to
/// the checker as --server-grace and --server-stall.
const CONTRACT_SERVER: [&str; 4] = ["--grace", "2s", "--stall-timeout", "1s"];
const CONTRACT_CHECK: [&str; 4] = ["--server-grace", "2s", "--server-stall", "1s"];

/// The three contract cases against one server in every framing, each on
/// a fresh server (the shutdown cases end it). After a shutdown case the
/// server must already have exited, with status 0; after `stall-timeout`
/// it must still be up and stop cleanly on SIGTERM.
fn contract(bin: &str, model: &[&str], tls: bool) {
    let mut failures = Vec::new();
    for framing in ["line", "length", "raw"] {
        for case in [
            "stall-timeout",
            "shutdown-in-flight",
            "shutdown-never-reader",
        ] {
            let ca = std::env::temp_dir().join(format!(
                "loadgen-contract-{}-{framing}-{case}.pem",
                std::process::id()
            ));
            let ca = ca.to_string_lossy().into_owned();
            let mut server_flags = model.to_vec();
            server_flags.extend(["--framing", framing]);
            server_flags.extend(CONTRACT_SERVER);
            let mut check_flags = vec!["--framing", framing, "--cases", case];
            check_flags.extend(CONTRACT_CHECK);
            if tls {
                server_flags.extend(["--ca-out", &ca]);
                check_flags.extend(["--tls", "--ca", &ca]);
            }
            failures.extend(contract_case(bin, &server_flags, &check_flags, case));
            let _ = std::fs::remove_file(&ca);
        }
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn contract_case(
    bin: &str,
    server_flags: &[&str],
    check_flags: &[&str],
    case: &str,
) -> Vec<String> {
    let mut args = strings(&["server", "--addr", "127.0.0.1:0"]);
    args.extend(strings(server_flags));
    let what = format!("{bin} {}", server_flags.join(" "));
    // Until a server has --grace/--stall-timeout this fails: report it as
    // a failure of this case and go on with the others.
    let server = match ServerProcess::start_bin(bin, &args, true) {
        Ok(s) => s,
        Err(e) => return vec![format!("{what}: {case}: cannot start the server: {e:#}")],
    };
    let addr = server.addr().to_string();
    let pid = server.pid().to_string();
    let mut flags = strings(&["--addr", &addr, "--server-pid", &pid]);
    flags.extend(strings(check_flags));
    let parsed = CheckArgs::from_flags(&flags).unwrap();
    println!("== {what} | loadgen check {}", flags.join(" "));
    let report = check::run(&parsed, |r| println!("{}", r.line())).unwrap();
    let mut failures: Vec<String> = report
        .cases
        .iter()
        .filter(|c| c.status != Status::Pass)
        .map(|c| format!("{what}: {}", c.line()))
        .collect();
    let ends = check::CASES.iter().any(|c| c.name == case && c.ends_server);
    // A server that exited already gives its status at once; one still
    // running gets SIGTERM (after a shutdown case: a second one, which
    // exits 130).
    match server.stop(Duration::from_secs(5)) {
        Ok((status, false)) if status.success() => {}
        Ok((status, killed)) => failures.push(format!(
            "{what}: {case}: exit status {status}{}{}",
            if ends {
                " (after the case's SIGTERM)"
            } else {
                " after SIGTERM"
            },
            if killed { ", had to be killed" } else { "" }
        )),
        Err(e) => failures.push(format!("{what}: stopping failed: {e:#}")),
    }
    failures
}

/// Every framing of one TCP server; fails listing every failing case.
fn every_framing(bin: &str, expect: &str, model: &[&str]) {
    let mut failures = Vec::new();
    for framing in ["line", "length", "raw"] {
        let mut server_flags = model.to_vec();
        server_flags.extend(["--framing", framing]);
        let mut check_flags = vec!["--framing", framing];
        check_flags.extend(QUICK);
        failures.extend(check_server(bin, expect, &server_flags, &check_flags));
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn tcp_echo_iterative() {
    every_framing("tcp-echo", "tcp-echo", &[]);
}

#[test]
fn threaded_server_per_client() {
    every_framing(
        "threaded-server",
        "threaded-server/per-client",
        &["--model", "per-client"],
    );
}

#[test]
fn threaded_server_pool() {
    every_framing(
        "threaded-server",
        "threaded-server/pool",
        &["--model", "pool"],
    );
}

#[test]
fn async_server_tokio() {
    every_framing("async-server", "async-server/tokio", &["--model", "tokio"]);
}

#[test]
fn async_server_event_loop() {
    every_framing(
        "async-server",
        "async-server/event-loop",
        &["--model", "event-loop"],
    );
}

#[test]
fn async_server_event_loop_two_loops() {
    for balance in ["reuseport", "acceptor"] {
        every_framing(
            "async-server",
            "async-server/event-loop",
            &[
                "--model",
                "event-loop",
                "--loops",
                "2",
                "--balance",
                balance,
            ],
        );
    }
}

/// Where the kernel refuses io_uring (a container's seccomp profile,
/// `kernel.io_uring_disabled`, an old kernel) the server exits at once with
/// one line saying why; the uring tests are then skipped with that line
/// printed. On a kernel that allows it they run.
fn uring_refused() -> Option<String> {
    let args = strings(&["server", "--model", "uring", "--addr", "127.0.0.1:0"]);
    let Err(e) = ServerProcess::start_bin("async-server", &args, true)
        .map(|server| server.stop(Duration::from_secs(10)))
    else {
        return None;
    };
    // It did not start: run it once more to read its whole stderr (the
    // refusal is immediate; anything still running after 10 s is killed).
    let bin = loadgen::child::fresh_binary("async-server").unwrap();
    let mut child = std::process::Command::new(bin)
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20)); // polling a child, not synchronising
    }
    let mut why = String::new();
    if let Some(mut err) = child.stderr.take() {
        use std::io::Read;
        let _ = err.read_to_string(&mut why);
    }
    let _ = child.wait();
    assert!(
        why.contains("io_uring is unavailable"),
        "the uring server did not start, and not because io_uring is refused: {e:#}; {why}"
    );
    println!("skipped: {}", why.trim());
    Some(why)
}

#[test]
fn async_server_uring() {
    if uring_refused().is_some() {
        return;
    }
    every_framing("async-server", "async-server/uring", &["--model", "uring"]);
}

#[test]
fn tls_echo() {
    let mut failures = Vec::new();
    for framing in ["line", "length", "raw"] {
        let ca = std::env::temp_dir().join(format!(
            "loadgen-check-tls-{}-{framing}.pem",
            std::process::id()
        ));
        let ca = ca.to_string_lossy().into_owned();
        let mut check_flags = vec!["--framing", framing, "--tls", "--ca", &ca];
        check_flags.extend(QUICK);
        failures.extend(check_server(
            "tls-echo",
            "tls-echo",
            &["--framing", framing, "--ca-out", &ca],
            &check_flags,
        ));
        let _ = std::fs::remove_file(&ca);
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn udp_echo() {
    // An unprivileged port put on the server's guard list, so the checker
    // can bind it without root.
    let guard = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let failures = check_server(
        "udp-echo",
        "udp-echo",
        &["--guard-ports", &guard],
        &["--proto", "udp", "--guard-ports", &guard],
    );
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The checker's real defaults (200 idle clients, 1,000 concurrent ones)
/// once, against the server built for many connections: the cases those
/// numbers drive (the rest ran above with the same server and framing).
#[test]
fn defaults_against_async_tokio() {
    let failures = check_server(
        "async-server",
        "async-server/tokio",
        &["--model", "tokio", "--framing", "line"],
        &[
            "--framing",
            "line",
            "--cases",
            "idle-clients,concurrent-clients,send-never-read",
        ],
    );
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn contract_tcp_echo() {
    contract("tcp-echo", &[], false);
}

#[test]
fn contract_threaded_server_per_client() {
    contract("threaded-server", &["--model", "per-client"], false);
}

#[test]
fn contract_threaded_server_pool() {
    contract("threaded-server", &["--model", "pool"], false);
}

#[test]
fn contract_async_server_tokio() {
    contract("async-server", &["--model", "tokio"], false);
}

#[test]
fn contract_async_server_event_loop() {
    contract("async-server", &["--model", "event-loop"], false);
}

#[test]
fn contract_async_server_event_loop_two_loops() {
    for balance in ["reuseport", "acceptor"] {
        contract(
            "async-server",
            &[
                "--model",
                "event-loop",
                "--loops",
                "2",
                "--balance",
                balance,
            ],
            false,
        );
    }
}

#[test]
fn contract_async_server_uring() {
    if uring_refused().is_some() {
        return;
    }
    contract("async-server", &["--model", "uring"], false);
}

#[test]
fn contract_tls_echo() {
    contract("tls-echo", &[], true);
}

/// The reference rows of `loadgen compare` (`epoll-ref`, `select-ref`,
/// `poll-ref`): no `server` subcommand, raw framing only, no limits and
/// no timeouts, so they run the battery's cases that need none of those
/// (the limit cases `oversized-*` apply to line/length framing and skip).
#[test]
fn reference_servers_pass_the_raw_battery() {
    let mut failures = Vec::new();
    for bin in ["epoll-ref", "select-ref", "poll-ref"] {
        let args = strings(&["--addr", "127.0.0.1:0"]);
        let server = ServerProcess::start(
            &loadgen::child::fresh_binary(bin).unwrap(),
            &args,
            true,
            Duration::from_secs(20),
        )
        .unwrap_or_else(|e| panic!("cannot start `{bin}`: {e:#}"));
        let addr = server.addr().to_string();
        let pid = server.pid().to_string();
        let mut flags = strings(&["--addr", &addr, "--server-pid", &pid, "--framing", "raw"]);
        flags.extend(strings(&["--cases", &battery()]));
        flags.extend(strings(&QUICK));
        let parsed = CheckArgs::from_flags(&flags).unwrap();
        println!("== {bin} | loadgen check {}", flags.join(" "));
        let report = check::run(&parsed, |r| println!("{}", r.line())).unwrap();
        println!("{}", report.closing_line());
        failures.extend(
            report
                .cases
                .iter()
                .filter(|c| c.status == Status::Fail)
                .map(|c| format!("{bin}: {}", c.line())),
        );
        if report.passed < 9 {
            failures.push(format!("{bin}: only {} cases passed", report.passed));
        }
        match server.stop(Duration::from_secs(10)) {
            Ok((status, false)) if status.success() => {}
            other => failures.push(format!("{bin}: after SIGTERM: {other:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
