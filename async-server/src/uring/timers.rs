//! Time and the end: the turn's wait (up to the next sweep, accept
//! resumption or deadline), the sweep for idle and stalled connections, and
//! the shutdown drain within `--grace`. Part of the io_uring model; the loop
//! is in `mod.rs`.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::conn::End;
use common::echo::Phase;
use io_uring::{opcode, types};
use log::{debug, error, info};

use super::Uring;
use super::setup::bytes_waiting;
use super::submit::{Kind, NO_SLOT, user_data};

/// How long, past the grace deadline, the loop waits for the cancellations of
/// the connections it cut (normally microseconds).
pub(super) const CUT_WAIT: Duration = Duration::from_millis(500);

impl Uring {
    pub(super) fn wait_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.backlog.is_empty() {
            return Some(Duration::ZERO);
        }
        let sweep = (self.open > 0).then_some(self.next_sweep);
        let deadline = self
            .deadline
            .map(|d| if self.cut_done { d + CUT_WAIT } else { d });
        [sweep, self.accept.paused_until, deadline]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t.saturating_duration_since(now))
    }

    pub(super) fn timers(&mut self, now: Instant) {
        if let Some(until) = self.accept.paused_until
            && now >= until
        {
            self.accept.paused_until = None;
            if !self.accept.armed && self.deadline.is_none() {
                debug!("accept: resuming after the back-off");
                self.arm_accept();
            }
        }
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + self.sweep_every;
        // O(connections) once per sweep, not per completion: cheap even at
        // 10,000 clients. (Per-connection timeout SQEs would be exact, at the
        // cost of two more operations per echo to arm and disarm them.)
        let idle = if self.deadline.is_some() {
            None // the grace deadline bounds everything now
        } else {
            self.config.idle_timeout
        };
        let stall = self.config.stall_timeout;
        let mut expired = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(conn) = &slot.conn else { continue };
            if conn.closing.is_none()
                && let Some(end) = conn.echo.timed_out(now, idle, stall)
            {
                expired.push((i as u32, end));
            }
        }
        for (i, end) in expired {
            self.close(i, end);
        }
    }

    pub(super) fn arm_wake(&mut self) {
        let entry = opcode::PollAdd::new(types::Fd(self.wake.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(user_data(NO_SLOT, 0, Kind::Wake));
        // SAFETY: a poll names no memory; the eventfd stays open as long as
        // `self.wake`, which outlives the ring (field order).
        unsafe { self.push(entry) };
    }

    /// The contract's shutdown: stop accepting; every connection echoes what
    /// the kernel already holds without waiting for more, sends FIN, and
    /// waits for the peer's FIN; all of it bounded by `--grace`.
    pub(super) fn begin_shutdown(&mut self) {
        if self.deadline.is_some() {
            return;
        }
        let grace = self.config.grace;
        let deadline = self.shutdown.deadline(grace).unwrap_or(self.now + grace);
        self.deadline = Some(deadline);
        info!(
            "shutdown: not accepting; draining {} connection(s) within {grace:?}",
            self.open
        );
        if self.accept.armed {
            if self.cancel(user_data(NO_SLOT, 0, Kind::Accept)) {
                self.accept.armed = false;
                self.listener = None;
            }
        } else {
            self.listener = None;
        }
        for i in 0..self.slots.len() as u32 {
            let Some((conn, _)) = self.conn(i) else {
                continue;
            };
            if conn.closing.is_some() {
                continue;
            }
            // What is already here: the kernel's receive queue, counted
            // now. A completion may say how many bytes a recv took; it
            // cannot say "this was all there was" (a recv asked not to wait,
            // MSG_DONTWAIT, still waits in io_uring), so ask. Nothing
            // waiting: input is done, and `step` cancels the recv, which
            // would wait for *new* bytes.
            if conn.echo.phase() == Phase::Open {
                conn.echo.begin_drain(Some(bytes_waiting(&conn.stream)));
            }
            self.step(i);
        }
    }

    /// After the loop: cancel anything still in flight and wait (briefly)
    /// for it, so that every buffer can be freed. What cannot be confirmed
    /// is leaked rather than freed under the kernel.
    pub(super) fn teardown(&mut self) {
        for i in 0..self.slots.len() as u32 {
            self.close(i, End::Cut);
        }
        let until = Instant::now() + CUT_WAIT;
        while self.slots.iter().any(|s| s.conn.is_some()) {
            let now = Instant::now();
            if now >= until {
                break;
            }
            self.flush_backlog();
            if self.enter(Some(until - now)).is_err() {
                break;
            }
            if let Err(e) = self.reap() {
                debug!("teardown: {e}");
            }
        }
        let stuck = self.slots.iter().filter(|s| s.conn.is_some()).count();
        if stuck > 0 {
            error!(
                "uring: {stuck} connection(s) still have operations in flight; leaking their buffers"
            );
            self.bufs.leak = true;
            std::mem::forget(std::mem::take(&mut self.slots));
        }
    }
}
