//! Time and the end: how long `epoll_wait` may sleep, the sweep for idle
//! and stalled connections, the accept back-off's end, and the shutdown
//! drain within `--grace`. Part of the event-loop model; the loop is in
//! `mod.rs`.

use std::io;
use std::time::{Duration, Instant};

use log::{debug, info};
use mio::Interest;

use super::{EventLoop, LISTENER};

impl EventLoop {
    /// How long `poll()` may sleep: until the next timer, or not at all if
    /// some connection still has work queued.
    pub(super) fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        let sweep = (self.open > 0).then_some(self.next_sweep);
        [sweep, self.accept_paused_until, self.deadline]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t.saturating_duration_since(now))
    }

    pub(super) fn timers(&mut self, now: Instant) -> io::Result<()> {
        if let Some(until) = self.accept_paused_until
            && now >= until
        {
            self.accept_paused_until = None;
            if let Some(listener) = &mut self.listener {
                debug!("accept: resuming after the back-off");
                self.poll
                    .registry()
                    .register(listener.source(), LISTENER, Interest::READABLE)?;
                // Connections may be waiting in the backlog already.
                self.accept_all()?;
            }
        }
        if now >= self.next_sweep {
            self.next_sweep = now + self.sweep_every;
            // O(connections) once per `sweep_every`, not per event: cheap
            // even at 10,000 clients. A timer wheel would be exact; this is
            // simple.
            // The grace deadline bounds the drain: no idle clock then.
            let idle = self.config.idle_timeout.filter(|_| self.deadline.is_none());
            let stall = self.config.stall_timeout;
            for i in 0..self.conns.len() {
                if let Some(end) = self.conns[i]
                    .as_ref()
                    .and_then(|conn| conn.echo.timed_out(now, idle, stall))
                {
                    self.close(i, end);
                }
            }
        }
        Ok(())
    }

    /// The waker fired: stop accepting, and let every connection echo what
    /// the kernel has already received, then say goodbye.
    pub(super) fn begin_shutdown(&mut self) {
        if self.deadline.is_some() {
            return;
        }
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(listener.source());
            // Dropped: the port is closed, new clients are refused. (A Unix
            // socket's file is removed with it: nobody can connect().)
        }
        // Closing the listening socket: the kernel refuses new clients, and
        // resets the ones still in the backlog (never accepted, never served).
        self.accept_paused_until = None;
        self.stop_dealing();
        let grace = self.config.grace;
        self.deadline = Some(
            self.shutdown
                .deadline(grace)
                .unwrap_or_else(|| Instant::now() + grace),
        );
        if self.many {
            info!(
                "loop {}: shutting down: up to {grace:?} for {} connection(s) to finish their echoes",
                self.id, self.open
            );
        } else {
            info!(
                "shutting down: up to {grace:?} for {} connection(s) to finish their echoes",
                self.open
            );
        }
        for i in 0..self.conns.len() {
            if let Some(Some(conn)) = self.conns.get_mut(i) {
                // Echo what the kernel already holds: read until WouldBlock.
                conn.echo.begin_drain(None);
            }
            self.drive(i, false);
        }
    }
}
