//! Graceful shutdown: Ctrl-C (SIGINT) and SIGTERM become one signal that any
//! server can poll, block on, `select!` on, or `.await`.
//!
//! Why this is a module and not one line: a server blocked in `accept()` or
//! `recv()` does not notice a flag being set. Each I/O model needs its own
//! way to be woken:
//!
//! | model              | how it notices                                        |
//! |--------------------|-------------------------------------------------------|
//! | blocking, polling  | [`Shutdown::is_triggered`] between short timeouts     |
//! | blocking, sleeping | [`Shutdown::on_trigger`] runs a hook (connect to self)|
//! | crossbeam threads  | `select!` on [`Shutdown::receiver`] (disconnects)     |
//! | mio event loop     | [`Shutdown::on_trigger`] calls `mio::Waker::wake`     |
//! | tokio              | `shutdown.triggered().await` in `select!`             |
//!
//! The signal handler itself does almost nothing (signal-hook forwards the
//! signal to an ordinary thread, where it is safe to lock and log). A second
//! Ctrl-C exits at once, for when a graceful shutdown is stuck.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

type Hook = Box<dyn FnOnce() + Send>;

/// A cloneable "stop now" signal. All clones see the same trigger.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

struct Inner {
    flag: AtomicBool,
    /// When the first trigger happened: the start of every grace period.
    at: OnceLock<Instant>,
    state: Mutex<State>,
    cond: Condvar,
    #[cfg(feature = "tokio")]
    notify: tokio::sync::Notify,
}

struct State {
    hooks: Vec<Hook>,
    /// Dropped on trigger, which disconnects every `receiver()`.
    sender: Option<Sender<()>>,
    receiver: Receiver<()>,
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .finish()
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        // Zero capacity and nothing is ever sent: the channel exists only to
        // be disconnected, which wakes every `recv` and `select!` at once.
        let (sender, receiver) = crossbeam_channel::bounded(0);
        Shutdown {
            inner: Arc::new(Inner {
                flag: AtomicBool::new(false),
                at: OnceLock::new(),
                state: Mutex::new(State {
                    hooks: Vec::new(),
                    sender: Some(sender),
                    receiver,
                }),
                cond: Condvar::new(),
                #[cfg(feature = "tokio")]
                notify: tokio::sync::Notify::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A hook that panicked poisons nothing we rely on: the state is a
        // list and an Option, always consistent. So ignore poisoning.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Ask everything to stop. Idempotent: only the first call runs hooks.
    pub fn trigger(&self) {
        let _ = self.inner.at.set(Instant::now());
        if self.inner.flag.swap(true, Ordering::SeqCst) {
            return;
        }
        let hooks = {
            let mut st = self.state();
            st.sender = None;
            std::mem::take(&mut st.hooks)
        };
        self.inner.cond.notify_all();
        #[cfg(feature = "tokio")]
        self.inner.notify.notify_waiters();
        for hook in hooks {
            hook();
        }
    }

    /// Has shutdown been asked for? Cheap: one atomic load.
    pub fn is_triggered(&self) -> bool {
        self.inner.flag.load(Ordering::SeqCst)
    }

    /// The end of the grace period: `grace` after the first trigger, or
    /// `None` while nobody has asked to stop. Every server measures its
    /// `--grace` from the signal, not from when each connection noticed it.
    pub fn deadline(&self, grace: Duration) -> Option<Instant> {
        self.inner.at.get().map(|&at| at + grace)
    }

    /// Run `hook` once when shutdown is triggered (at once if it already was).
    /// Hooks run on the thread that triggers; keep them short and non-blocking.
    pub fn on_trigger(&self, hook: impl FnOnce() + Send + 'static) {
        {
            let mut st = self.state();
            if !self.is_triggered() {
                st.hooks.push(Box::new(hook));
                return;
            }
        }
        hook();
    }

    /// A channel that never delivers a message and disconnects on shutdown:
    /// `select! { recv(jobs) -> job => .., recv(shutdown.receiver()) -> _ => break }`.
    pub fn receiver(&self) -> Receiver<()> {
        self.state().receiver.clone()
    }

    /// Block the calling thread until shutdown is triggered.
    pub fn wait(&self) {
        let mut st = self.state();
        while !self.is_triggered() {
            st = self
                .inner
                .cond
                .wait(st)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Block until shutdown or `timeout`; returns true if shutdown happened.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.state();
        while !self.is_triggered() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .inner
                .cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
        true
    }

    /// Resolves once shutdown is triggered. Cancel-safe.
    #[cfg(feature = "tokio")]
    pub async fn triggered(&self) {
        loop {
            // Register interest *before* checking the flag, so a trigger
            // between the check and the await cannot be missed.
            let notified = self.inner.notify.notified();
            if self.is_triggered() {
                return;
            }
            notified.await;
        }
    }

    // ANCHOR: signals
    /// Turn SIGINT (Ctrl-C) and SIGTERM into `trigger()`. A second signal
    /// while shutting down exits the process at once with status 130.
    pub fn install_signal_handler(&self) -> std::io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        use signal_hook::iterator::Signals;

        // signal-hook's handler only writes to a pipe (async-signal-safe);
        // this ordinary thread reads it and may lock, log and allocate.
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        let shutdown = self.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    let name = if signal == SIGINT {
                        "SIGINT"
                    } else {
                        "SIGTERM"
                    };
                    if shutdown.is_triggered() {
                        log::warn!("second {name}: exiting without finishing");
                        std::process::exit(130);
                    }
                    log::info!("{name}: shutting down (again to force)");
                    shutdown.trigger();
                }
            })?;
        Ok(())
    }
    // ANCHOR_END: signals
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn trigger_wakes_every_kind_of_waiter() {
        let s = Shutdown::new();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        s.on_trigger(move || {
            h.fetch_add(1, Ordering::SeqCst);
        });
        let rx = s.receiver();
        let waiter = {
            let s = s.clone();
            std::thread::spawn(move || s.wait())
        };
        assert!(!s.wait_timeout(Duration::from_millis(1)));
        assert_eq!(s.deadline(Duration::from_secs(5)), None);
        assert!(rx.try_recv().is_err() && !s.is_triggered());
        s.trigger();
        s.trigger();
        waiter.join().unwrap();
        assert!(s.is_triggered());
        let d = s.deadline(Duration::from_secs(5)).unwrap();
        assert!(d > Instant::now() && d <= Instant::now() + Duration::from_secs(5));
        assert_eq!(hits.load(Ordering::SeqCst), 1, "hook ran exactly once");
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected)
        );
        // A hook registered late runs at once.
        let h = hits.clone();
        s.on_trigger(move || {
            h.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        assert!(s.wait_timeout(Duration::from_secs(5)));
    }
}
