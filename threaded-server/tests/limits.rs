//! Idle timeout, panic containment and the pool's queue-full behaviour.

// Helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use common::Framing;
use support::*;
use threaded_server::{Config, Model, WhenFull};

const IDLE: Duration = Duration::from_millis(300);

/// With one worker, a silent client holds it until the idle timeout closes
/// it; then the worker serves the client queued behind it. (Per-client:
/// the silent client is closed just the same, and never blocked anyone.)
#[test]
fn idle_client_is_closed_and_the_next_client_is_served() {
    for model in Model::ALL {
        for framing in Framing::ALL {
            let server = start(Config {
                model,
                framing,
                workers: 1,
                idle_timeout: Some(IDLE),
                ..Config::default()
            });
            let connected = Instant::now();
            let mut silent = connect(server.addr);
            wait_until("the silent client is accepted", || server.accepted() == 1);
            let mut next = connect(server.addr);
            let sent = Instant::now();
            echo(&mut next, framing, b"after the silent one");
            let echoed = sent.elapsed();
            // Leave before our own idle timeout: only `silent` idles out.
            drop(next);
            assert_closed(&mut silent);
            let closed = connected.elapsed();
            assert!(closed >= IDLE, "{model} {framing}: closed after {closed:?}");
            match model {
                // The only worker was busy with the silent client until it
                // was closed for idleness.
                Model::Pool => assert!(
                    echoed >= IDLE - Duration::from_millis(50),
                    "{framing}: served after {echoed:?}, before the idle timeout"
                ),
                // Its own thread: served at once (well before the timeout).
                Model::PerClient => assert!(echoed < IDLE, "{framing}: {echoed:?}"),
            }
            // The idle close counts as closed-on-error; `next` left cleanly.
            let stats = server.stats.clone();
            server.stop();
            assert_eq!(common::Stats::get(&stats.errors), 1, "{model} {framing}");
            assert_eq!(common::Stats::get(&stats.accepted), 2, "{model} {framing}");
        }
    }
}

/// "Idle" means no bytes at all: a slow client trickling a line byte by
/// byte, each byte well within the timeout, is not cut off, even though the
/// whole line takes longer than the timeout.
#[test]
fn a_slow_client_is_not_idle() {
    for model in Model::ALL {
        let server = start(Config {
            model,
            workers: 1,
            idle_timeout: Some(IDLE),
            ..Config::default()
        });
        let mut s = connect(server.addr);
        let started = Instant::now();
        for &b in b"slow\n" {
            s.write_all(&[b]).unwrap();
            thread::sleep(IDLE / 3); // pacing the client, not synchronising
        }
        assert!(started.elapsed() > IDLE);
        assert_eq!(read_n(&mut s, 5), b"slow\n");
        assert_eq!(server.errors(), 0);
        server.stop();
    }
}

#[test]
fn idle_timeout_zero_means_never() {
    let server = start(Config {
        model: Model::Pool,
        workers: 1,
        idle_timeout: None,
        ..Config::default()
    });
    let mut s = connect(server.addr);
    assert_silent(&mut s, IDLE * 2);
    echo(&mut s, Framing::Line, b"still here");
    server.stop();
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
            inject_panic_on: Some(b"PANIC".to_vec()),
            ..Config::default()
        });
        let mut victim = connect(server.addr);
        echo(&mut victim, Framing::Line, b"before");
        victim.write_all(b"PANIC\n").unwrap();
        assert_closed(&mut victim);

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
        // Per-client counts it when it joins the thread; the pool at once.
        assert_eq!(common::Stats::get(&stats.errors), 1, "{model}");
        assert_eq!(common::Stats::get(&stats.frames), 5, "{model}");
        if model == Model::Pool {
            assert_eq!(report.workers.len(), 2, "pool kept its size");
            let panics: u64 = report.workers.iter().map(|w| w.panics).sum();
            let served: u64 = report.workers.iter().map(|w| w.connections).sum();
            assert_eq!((panics, served), (1, 3));
        }
    }
}

/// The default `--when-full wait`: with the worker busy and the queue full,
/// the acceptor waits; later clients are not refused, only delayed, and are
/// all served once the worker is free.
#[test]
fn queue_full_wait_delays_but_serves_everyone() {
    let server = start(Config {
        model: Model::Pool,
        workers: 1,
        queue: 1,
        when_full: WhenFull::Wait,
        ..Config::default()
    });
    let mut busy = connect(server.addr);
    echo(&mut busy, Framing::Line, b"I have the worker");
    let mut queued = connect(server.addr);
    queued.write_all(b"queued\n").unwrap();
    wait_until("the second client is queued", || server.accepted() == 2);
    // The acceptor takes this one from the backlog, finds the queue full and
    // waits; the one after it stays in the kernel's backlog.
    let mut held = connect(server.addr);
    held.write_all(b"held\n").unwrap();
    let mut backlog = connect(server.addr);
    backlog.write_all(b"backlog\n").unwrap();
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
    let server = start(Config {
        model: Model::Pool,
        workers: 1,
        queue: 1,
        when_full: WhenFull::Refuse,
        ..Config::default()
    });
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
/// it serves the connection it holds itself, the worker serves the queued
/// one, so every accepted client gets its echo; the one never accepted
/// (still in the kernel's backlog) is closed by the kernel, unanswered.
#[test]
fn shutdown_while_the_acceptor_waits_serves_every_accepted_client() {
    let server = start(Config {
        model: Model::Pool,
        workers: 1,
        queue: 1,
        when_full: WhenFull::Wait,
        ..Config::default()
    });
    let mut busy = connect(server.addr);
    echo(&mut busy, Framing::Line, b"I have the worker");
    let mut queued = connect(server.addr);
    queued.write_all(b"queued\n").unwrap();
    wait_until("the second client is queued", || server.accepted() == 2);
    let mut held = connect(server.addr);
    held.write_all(b"held\n").unwrap();
    // Generous time for the acceptor to take `held` from the backlog and
    // block on the full queue (it needs microseconds); nothing may arrive.
    assert_silent(&mut held, Duration::from_millis(300));
    let mut backlog = connect(server.addr);
    backlog.write_all(b"backlog\n").unwrap();

    let stats = server.stats.clone();
    server.stop();
    assert_closed(&mut busy);
    assert_eq!(read_n(&mut queued, 7), b"queued\n");
    assert_closed(&mut queued);
    assert_eq!(read_n(&mut held, 5), b"held\n");
    assert_closed(&mut held);
    assert_closed(&mut backlog);
    assert_eq!(common::Stats::get(&stats.accepted), 3);
    assert_eq!(common::Stats::get(&stats.frames), 3);
}
