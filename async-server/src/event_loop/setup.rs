//! Setting one loop up: its epoll instance, its listener (if it has one),
//! the waker the shutdown signal and the acceptor use, the timers' sweep.
//! Part of the event-loop model; the loop is in `mod.rs`.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::{Duration, Instant};

use common::echo::Spare;
use common::framing::READ_CHUNK;
use common::net::Backoff;
use common::{ServerConfig, Shutdown, Stats};
use log::error;
use mio::{Interest, Poll, Waker};

use super::sockets::Listen;
use super::{EventLoop, LISTENER, WAKER};

impl EventLoop {
    pub(super) fn new(
        id: usize,
        mut listener: Option<Listen>,
        config: &ServerConfig,
        stats: &Arc<Stats>,
        open_total: &Arc<AtomicUsize>,
        unix_peers: &Arc<AtomicU64>,
        shutdown: &Shutdown,
    ) -> io::Result<EventLoop> {
        let poll = Poll::new()?;
        if let Some(listener) = &mut listener {
            poll.registry()
                .register(listener.source(), LISTENER, Interest::READABLE)?;
        }
        // The waker is an eventfd registered with epoll: writing to it from
        // another thread (the signal thread, via `Shutdown::on_trigger`, or
        // the acceptor handing over a connection) makes `poll()` return with
        // a WAKER event. Without it, a loop sleeping in `epoll_wait` could
        // not notice Ctrl-C.
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        shutdown.on_trigger({
            let waker = waker.clone();
            move || {
                if let Err(e) = waker.wake() {
                    error!("could not wake event loop {id}: {e}");
                }
            }
        });
        // Timers are found by a sweep over the table, often enough to close
        // a connection within a quarter of its timeout of when it is due.
        let shortest = config
            .idle_timeout
            .map_or(config.stall_timeout, |idle| idle.min(config.stall_timeout));
        Ok(EventLoop {
            id,
            poll,
            waker,
            listener,
            accept_paused_until: None,
            backoff: Backoff::new(),
            conns: Vec::new(),
            free: Vec::new(),
            open: 0,
            open_total: open_total.clone(),
            served: 0,
            unix_peers: unix_peers.clone(),
            handoff: Vec::new(),
            next_turn: 0,
            inbox: None,
            ready: VecDeque::new(),
            // One read buffer for every connection: the loop handles one
            // socket at a time, so it only ever needs one. Connections keep
            // only the leftovers (an unfinished frame) in their own `rbuf`.
            scratch: vec![0; READ_CHUNK],
            spare: Spare::default(),
            sweep_every: (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)),
            next_sweep: Instant::now(),
            config: config.clone(),
            stats: stats.clone(),
            shutdown: shutdown.clone(),
            deadline: None,
            many: false,
            fatal: None,
        })
    }
}
