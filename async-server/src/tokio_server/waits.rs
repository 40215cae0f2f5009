//! The cheap waits of the tokio model's connection loop (see
//! `tokio_server.rs`, "What an echo costs"): each is polled once per echo
//! beside every read or write, so each is written to cost an atomic load or
//! two when nothing has happened, instead of a lock, a timer-wheel update
//! or a precise clock read.
//!
//! - [`StopSignal`]: the shutdown signal, the flag first;
//! - [`IdleTimer`]: `--idle-timeout`, moved lazily, by the coarse clock;
//! - [`poll_once`]: try a write before arming the stall timer for it;
//! - [`coarse_now`], [`coarse_tick`]: `CLOCK_MONOTONIC_COARSE` from the vDSO.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use common::Shutdown;
use common::conn::End;
use tokio::time::{Instant, Sleep, sleep_until};

use super::Flow;

/// Poll `fut` once: `Ready(output)` if it finished, `Pending` if it would
/// wait. After `Pending` the task's waker is registered, as after any poll,
/// so awaiting the same future next is correct.
pub(super) async fn poll_once<F: Future + Unpin>(mut fut: F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut fut).poll(cx))).await
}

/// The shutdown signal as a connection awaits it: beside every read, so
/// polled once per echo. Polling tokio's `Notified` again locks the one
/// `Notify` that every connection waits on (on the multi-thread runtime,
/// every worker contends for it), only to learn what the flag already
/// says. So: the flag first (one atomic load), and the future polled only
/// to register this task's waker with the `Notify`, the first time or
/// if the waker changed. `Shutdown::trigger` sets the flag before it wakes
/// the registered wakers, so a woken task always sees it set.
pub(super) struct StopSignal<'a> {
    shutdown: &'a Shutdown,
    triggered: Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
    /// The waker the `Notify` holds, once it holds one.
    registered: Option<Waker>,
}

impl<'a> StopSignal<'a> {
    pub(super) fn new(shutdown: &'a Shutdown) -> Self {
        StopSignal {
            shutdown,
            triggered: Box::pin(shutdown.triggered()),
            registered: None,
        }
    }
}

impl Future for StopSignal<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shutdown.is_triggered() {
            return Poll::Ready(());
        }
        let this = &mut *self;
        if let Some(waker) = &this.registered
            && waker.will_wake(cx.waker())
        {
            return Poll::Pending;
        }
        let polled = this.triggered.as_mut().poll(cx);
        if polled.is_pending() {
            this.registered = Some(cx.waker().clone());
        }
        polled
    }
}

/// `--idle-timeout`: one timer per connection, moved lazily. A read only
/// notes the time (`heard`); the timer is looked at when it fires, so a busy
/// connection does not touch the runtime's timer wheel on every echo.
///
/// The time noted is the coarse clock's ([`coarse_now`]), read once per
/// echo: a fifth of the cost of `Instant::now()`. Each coarse reading may
/// be up to one tick behind, so the timer waits one tick longer than
/// `--idle-timeout`: a client is never closed early, and at most two ticks
/// (8 ms at the usual 250 Hz) late.
pub(super) struct IdleTimer {
    idle: Option<Duration>,
    sleep: Pin<Box<Sleep>>,
    /// The waker the timer entry holds (see `poll_fired`), once it holds one.
    registered: Option<Waker>,
    /// When the client last sent something (any byte, a whole frame or
    /// not), by [`coarse_now`].
    last_heard: Duration,
    /// The coarse clock's resolution ([`coarse_tick`]).
    tick: Duration,
}

impl IdleTimer {
    pub(super) fn new(idle: Option<Duration>) -> Self {
        let tick = coarse_tick();
        // A disabled timer is never polled (`on`); a year keeps `Instant`
        // arithmetic from overflowing.
        let wait = idle.map_or(Duration::from_secs(365 * 24 * 3600), |idle| idle + tick);
        IdleTimer {
            idle,
            sleep: Box::pin(sleep_until(Instant::now() + wait)),
            registered: None,
            last_heard: coarse_now(),
            tick,
        }
    }

    pub(super) fn on(&self) -> bool {
        self.idle.is_some()
    }

    /// Resolves when the timer fires. It waits beside every read, so this
    /// is polled once per echo; polling a waiting `Sleep` swaps the waker
    /// stored in its timer entry (atomic operations) only to hand it the
    /// same waker again. So it polls the `Sleep` only when that can say
    /// something new: it has fired (`is_elapsed`, one load), or it holds no
    /// waker or another one (the first poll; after it fired, since firing
    /// hands the waker over, and `fired` moves it).
    pub(super) fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.sleep.is_elapsed()
            && let Some(waker) = &self.registered
            && waker.will_wake(cx.waker())
        {
            return Poll::Pending;
        }
        let polled = self.sleep.as_mut().poll(cx);
        self.registered = polled.is_pending().then(|| cx.waker().clone());
        polled
    }

    pub(super) fn heard(&mut self) {
        self.last_heard = coarse_now();
    }

    /// The timer fired: idle for real, or move it to the new due time.
    pub(super) fn fired(&mut self) -> Flow<()> {
        let Some(idle) = self.idle else {
            return Ok(());
        };
        // Both readings may lag the real time by up to a tick: silent for
        // `idle + tick` by the coarse clock is silent for `idle` for sure.
        let wait = idle + self.tick;
        let silent = coarse_now().saturating_sub(self.last_heard);
        if silent >= wait {
            return Err(End::Idle(idle));
        }
        self.sleep.as_mut().reset(Instant::now() + (wait - silent));
        Ok(())
    }
}

/// `CLOCK_MONOTONIC_COARSE`: the monotonic clock as of the kernel's last
/// tick, read from the vDSO page without reading the CPU's time-stamp
/// counter. About 5 ns against 24 ns for `Instant::now()` (precise
/// `CLOCK_MONOTONIC`) on the machine this was measured on; noting when a
/// client last talked, once per echo, needs no better than a tick.
pub(super) fn coarse_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which we own. It cannot
    // fail for this clock (Linux has it since 2.6.32); if it did, `ts`
    // would stay 0, every reading would be equal, and the idle timer would
    // close nobody: it fails open.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// The coarse clock's resolution, one kernel tick (`clock_getres`: 4 ms at
/// 250 Hz); 10 ms, the longest tick Linux has (100 Hz), if it cannot say.
pub(super) fn coarse_tick() -> Duration {
    static TICK: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *TICK.get_or_init(|| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_getres writes one timespec, which we own.
        let r = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        let tick = Duration::new(
            u64::try_from(ts.tv_sec).unwrap_or(0),
            u32::try_from(ts.tv_nsec).unwrap_or(0),
        );
        if r == 0 && !tick.is_zero() {
            tick
        } else {
            Duration::from_millis(10)
        }
    })
}
