//! Idle and stall timeouts, panic containment and the pool's queue-full
//! behaviour. Every check waits for an event (a counter, a close, a byte),
//! never for a guessed amount of time; the only time measured is a lower
//! bound ("not closed before the idle timeout"), which a slow machine
//! cannot break.

// Helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use common::{Framing, ServerConfig, Stats};
use support::*;
use threaded_server::conn::PanicAt;
use threaded_server::{Config, Model, WhenFull};

const IDLE: Duration = Duration::from_millis(300);

fn with(common: ServerConfig, model: Model) -> Config {
    Config {
        common,
        model,
        workers: 1,
        ..Config::default()
    }
}

fn idle(framing: Framing, idle: Option<Duration>) -> ServerConfig {
    ServerConfig {
        framing,
        idle_timeout: idle,
        ..ServerConfig::default()
    }
}

/// A client that sends nothing is closed after --idle-timeout (not
/// before), and that counts as timed out, not as an error.
#[test]
fn an_idle_client_is_closed_and_counted_as_timed_out() {
    for model in Model::ALL {
        for framing in Framing::ALL {
            let server = start(with(idle(framing, Some(IDLE)), model));
            let connected = Instant::now();
            let mut silent = connect(server.addr);
            assert_closed(&mut silent);
            let closed = connected.elapsed();
            assert!(closed >= IDLE, "{model} {framing}: closed after {closed:?}");
            wait_until("the idle close is counted", || server.timed_out() == 1);
            let stats = server.stats.clone();
            server.stop();
            assert_eq!(Stats::get(&stats.errors), 0, "{model} {framing}");
        }
    }
}

/// With one worker, a silent client holds it until the idle timeout closes
/// it: the client queued behind it is served only after that close (the
/// counter is already 1 when its echo arrives).
#[test]
fn a_silent_client_holds_the_only_pool_worker_until_its_idle_timeout() {
    for framing in Framing::ALL {
        let server = start(with(idle(framing, Some(IDLE)), Model::Pool));
        let mut silent = connect(server.addr);
        wait_until("the silent client is accepted", || server.accepted() == 1);
        let mut next = connect(server.addr);
        echo(&mut next, framing, b"after the silent one");
        assert_eq!(server.timed_out(), 1, "{framing}: served before the close");
        assert_closed(&mut silent);
        drop(next);
        server.stop();
    }
}

/// Per-client: a silent client (never closed: no idle timeout) has its own
/// thread and blocks nobody; the next client is served while it is held.
#[test]
fn a_silent_client_blocks_nobody_with_a_thread_per_client() {
    let server = start(with(idle(Framing::Line, None), Model::PerClient));
    let silent = connect(server.addr);
    wait_until("the silent client is accepted", || server.accepted() == 1);
    let mut next = connect(server.addr);
    echo(&mut next, Framing::Line, b"served beside the silent one");
    assert_eq!((server.accepted(), server.timed_out()), (2, 0));
    drop((silent, next));
    server.stop();
}

/// "Idle" means no bytes at all: a slow client trickling a line byte by
/// byte, each byte well within the timeout, is not cut off, even though the
/// whole line takes longer than the timeout.
#[test]
fn a_slow_client_is_not_idle() {
    for model in Model::ALL {
        let server = start(with(idle(Framing::Line, Some(IDLE)), model));
        let mut s = connect(server.addr);
        let started = Instant::now();
        for &b in b"slow\n" {
            s.write_all(&[b]).unwrap();
            thread::sleep(IDLE / 3); // pacing the client, not synchronising
        }
        assert!(started.elapsed() > IDLE);
        assert_eq!(read_n(&mut s, 5), b"slow\n");
        assert_eq!((server.errors(), server.timed_out()), (0, 0));
        drop(s);
        server.stop();
    }
}

#[test]
fn idle_timeout_zero_means_never() {
    let server = start(with(idle(Framing::Line, None), Model::Pool));
    let mut s = connect(server.addr);
    assert_silent(&mut s, IDLE * 2);
    echo(&mut s, Framing::Line, b"still here");
    drop(s);
    server.stop();
}

/// A client that stops reading its echoes (and keeps sending) is closed by
/// --stall-timeout, counted as timed out; meanwhile another client is
/// served (per-client: its own thread; pool: the other worker).
#[test]
fn a_client_that_stops_reading_is_closed_by_the_stall_timeout() {
    for model in Model::ALL {
        let server = start(Config {
            common: ServerConfig {
                stall_timeout: Duration::from_millis(300),
                max_pending: 64 << 10,
                ..ServerConfig::default()
            },
            model,
            workers: 2,
            ..Config::default()
        });
        let hog = connect(server.addr);
        let writer = {
            let mut w = hog.try_clone().unwrap();
            thread::spawn(move || {
                let line: Vec<u8> = [b'y'; 4095].iter().chain(b"\n").copied().collect();
                // Ends when the server closes us (reset), or after 64 MiB.
                for _ in 0..(64 << 20) / line.len() {
                    if w.write_all(&line).is_err() {
                        return;
                    }
                }
            })
        };
        let mut other = connect(server.addr);
        echo(&mut other, Framing::Line, b"served while the hog stalls");
        wait_until("the hog is closed by the stall timeout", || {
            server.timed_out() == 1
        });
        echo(&mut other, Framing::Line, b"and after");
        writer.join().unwrap();
        drop((hog, other));
        let stats = server.stats.clone();
        server.stop();
        assert_eq!(
            (Stats::get(&stats.errors), Stats::get(&stats.cut)),
            (0, 0),
            "{model}"
        );
    }
}

/// A panic while serving one connection closes that connection only. In
/// the pool, the worker survives: afterwards both workers serve two clients
/// at the same time, which a pool shrunk to one worker could not do.
#[test]
fn a_panic_is_contained_and_the_pool_keeps_its_size() {
    for model in Model::ALL {
        let server = start(Config {
            model,
            workers: 2,
            // The first connection's thread panics as it starts serving it.
            inject_panic: Some(PanicAt::connection(1)),
            ..Config::default()
        });
        let mut victim = connect(server.addr);
        victim.write_all(b"never echoed\n").unwrap();
        assert_closed(&mut victim);
        wait_until("the panic is counted", || server.errors() == 1);

        // Two clients held open at once, each served while the other waits.
        let mut a = connect(server.addr);
        let mut b = connect(server.addr);
        echo(&mut a, Framing::Line, b"a1");
        echo(&mut b, Framing::Line, b"b1");
        echo(&mut a, Framing::Line, b"a2");
        echo(&mut b, Framing::Line, b"b2");
        drop((a, b));

        let stats = server.stats.clone();
        let report = server.stop();
        assert_eq!(Stats::get(&stats.errors), 1, "{model}");
        assert_eq!(Stats::get(&stats.frames), 4, "{model}");
        if model == Model::Pool {
            assert_eq!(report.workers.len(), 2, "pool kept its size");
            let panics: u64 = report.workers.iter().map(|w| w.panics).sum();
            let served: u64 = report.workers.iter().map(|w| w.connections).sum();
            assert_eq!((panics, served), (1, 3));
        }
    }
}

fn one_worker_one_slot(when_full: WhenFull) -> Running {
    start(Config {
        model: Model::Pool,
        workers: 1,
        queue: 1,
        when_full,
        ..Config::default()
    })
}

/// The default `--when-full wait`: with the worker busy and the queue full,
/// the acceptor waits; later clients are not refused, only delayed, and are
/// all served once the worker is free.
#[test]
fn queue_full_wait_delays_but_serves_everyone() {
    let server = one_worker_one_slot(WhenFull::Wait);
    let mut busy = connect(server.addr);
    echo(&mut busy, Framing::Line, b"I have the worker");
    let mut queued = connect(server.addr);
    queued.write_all(b"queued\n").unwrap();
    wait_until("the second client is queued", || server.accepted() == 2);
    // The acceptor takes this one from the backlog, finds the queue full and
    // waits; the one after it stays in the kernel's backlog.
    let mut held = connect(server.addr);
    held.write_all(b"held\n").unwrap();
    wait_until("the acceptor holds the third", || server.backlog() == 0);
    let mut backlog = connect(server.addr);
    backlog.write_all(b"backlog\n").unwrap();
    wait_until("the fourth waits in the backlog", || server.backlog() == 1);
    for s in [&mut queued, &mut held, &mut backlog] {
        assert_silent(s, Duration::from_millis(200));
    }
    assert_eq!((server.accepted(), server.refused()), (2, 0));

    drop(busy); // The worker is free: everyone moves up.
    assert_eq!(read_n(&mut queued, 7), b"queued\n");
    drop(queued);
    assert_eq!(read_n(&mut held, 5), b"held\n");
    drop(held);
    assert_eq!(read_n(&mut backlog, 8), b"backlog\n");
    drop(backlog);
    wait_until("all four were accepted", || server.accepted() == 4);
    assert_eq!(server.refused(), 0);
    server.stop();
}

/// `--when-full refuse`: with the worker busy and the queue full, the next
/// client is closed at once and counted as refused; the others are served.
#[test]
fn queue_full_refuse_closes_the_newcomer() {
    let server = one_worker_one_slot(WhenFull::Refuse);
    let mut busy = connect(server.addr);
    echo(&mut busy, Framing::Line, b"I have the worker");
    let mut queued = connect(server.addr);
    wait_until("the second client is queued", || server.accepted() == 2);
    let mut refused = connect(server.addr);
    assert_closed(&mut refused);
    assert_eq!(server.refused(), 1);

    queued.write_all(b"queued\n").unwrap();
    assert_silent(&mut queued, Duration::from_millis(200));
    drop(busy);
    assert_eq!(read_n(&mut queued, 7), b"queued\n");
    drop(queued);
    let report = server.stop();
    assert_eq!(report.workers[0].connections, 2);
}

/// Shutdown while the acceptor is waiting for room (`--when-full wait`):
/// the worker drains its client, and the queued connection and the one the
/// acceptor holds are drained side by side (each on a drain thread), so
/// every accepted client gets its echo, then EOF; the one never accepted
/// (still in the kernel's backlog) is closed by the kernel, unanswered.
#[test]
fn shutdown_while_the_acceptor_waits_serves_every_accepted_client() {
    let server = one_worker_one_slot(WhenFull::Wait);
    let mut busy = connect(server.addr);
    echo(&mut busy, Framing::Line, b"I have the worker");
    let mut queued = connect(server.addr);
    queued.write_all(b"queued\n").unwrap();
    wait_until("the second client is queued", || server.accepted() == 2);
    let mut held = connect(server.addr);
    held.write_all(b"held\n").unwrap();
    wait_until("the acceptor holds the third", || server.backlog() == 0);
    let mut backlog = connect(server.addr);
    backlog.write_all(b"backlog\n").unwrap();
    wait_until("the fourth waits in the backlog", || server.backlog() == 1);

    let stats = server.stats.clone();
    server.shutdown.trigger();
    assert_closed(&mut busy);
    assert_eq!(read_n(&mut queued, 7), b"queued\n");
    assert_closed(&mut queued);
    assert_eq!(read_n(&mut held, 5), b"held\n");
    assert_closed(&mut held);
    assert_closed(&mut backlog);
    drop((busy, queued, held, backlog)); // our FINs end the drains
    let report = server.wait_stopped();
    assert_eq!(Stats::get(&stats.accepted), 3);
    assert_eq!(Stats::get(&stats.frames), 3);
    assert_eq!(report.drained, 2);
    assert_eq!((Stats::get(&stats.cut), report.abandoned), (0, 0));
}
