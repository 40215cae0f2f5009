//! The io_uring model's knobs and counters: [`RingOptions`] (ring and
//! buffer sizes, `--sqpoll`, `--recv`), [`RecvMode`] and [`RingCounters`]
//! (how the ring was used). Part of the io_uring model; the loop is in
//! `mod.rs`.

use std::time::Duration;

use log::debug;

/// Sizes of the ring and of the provided buffers (`Config::uring`); tests
/// shrink them to force the full-queue and empty-buffer-ring paths.
#[derive(Debug, Clone)]
pub struct RingOptions {
    /// Submission queue entries (the completion queue gets 16 times more,
    /// so many connections' completions fit before the kernel must buffer
    /// them as "overflow").
    pub sq_entries: u32,
    /// Provided buffers shared by every connection; a power of two, at most
    /// 32768.
    pub buffers: u16,
    /// Bytes per provided buffer: the most one recv returns.
    pub buffer_size: u32,
    /// `Some(idle)`: IORING_SETUP_SQPOLL, a kernel thread that polls the
    /// submission ring and sleeps after `idle` without work. Off by default.
    pub sqpoll_idle: Option<Duration>,
    /// The recv to ask for (`--recv`); the loop steps down from it where
    /// the kernel refuses it. The tests compare the modes.
    pub recv: RecvMode,
}

/// How connections receive, best first: what [`RingOptions`] asks for,
/// less what the kernel refused ([`RingCounters::recv_mode`]). Also the
/// `--recv` flag's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RecvMode {
    /// A multishot recv that the kernel ends by itself once it has received
    /// its byte budget (`sqe->optlen`): the budget is what `--max-pending`
    /// leaves, so backpressure needs no cancel, and overshoots the limit by
    /// less than a buffer (the last receive may fill a whole one). A recent
    /// kernel (this 6.18 has it); an older one refuses it with `EINVAL`.
    #[default]
    #[value(name = "multishot")]
    MultishotBudget,
    /// A multishot recv (Linux 6.0): armed until cancelled, so reaching
    /// `--max-pending` cancels it.
    #[value(name = "multishot-cancel")]
    Multishot,
    /// One recv per completion, re-armed each time (as on a kernel older
    /// than 6.0).
    #[value(name = "oneshot")]
    OneShot,
}

impl RecvMode {
    /// How the summary and the start-up line name it.
    pub fn describe(self) -> &'static str {
        match self {
            RecvMode::MultishotBudget => "multishot recv with a byte budget",
            RecvMode::Multishot => "multishot recv, cancelled at --max-pending",
            RecvMode::OneShot => "one-shot recv, re-armed after each completion",
        }
    }

    /// What to try after the kernel refused this one.
    pub(super) fn fallback(self) -> RecvMode {
        match self {
            RecvMode::MultishotBudget => RecvMode::Multishot,
            RecvMode::Multishot | RecvMode::OneShot => RecvMode::OneShot,
        }
    }
}

impl Default for RingOptions {
    fn default() -> Self {
        RingOptions {
            sq_entries: 256,
            // 1024 x 8 KiB = 8 MiB for every connection together, whether
            // there are ten or ten thousand; a buffer is held only between a
            // recv's completion and the copy that follows it. Up to 1024
            // connections can complete a recv in one turn before one finds
            // the ring empty (ENOBUFS, and a re-arm).
            buffers: 1024,
            buffer_size: 8 * 1024,
            sqpoll_idle: None,
            recv: RecvMode::MultishotBudget,
        }
    }
}

/// How the ring was used: what the tests check and `RUST_LOG=debug` prints.
#[derive(Debug, Default, Clone)]
pub struct RingCounters {
    /// `io_uring_enter` calls: the loop's syscalls, bar accept-time
    /// `setsockopt`/`getpeername` and the `shutdown(SHUT_WR)` per connection.
    pub enters: u64,
    /// Submission queue entries queued.
    pub sqes: u64,
    /// Of those, recv SQEs. A multishot recv is armed once per connection,
    /// and again only after `--max-pending` paused it or ENOBUFS ended it;
    /// one-shot recvs cost one per completion.
    pub recvs: u64,
    /// Multishot recvs cancelled because `--max-pending` echo bytes waited.
    pub recv_pauses: u64,
    /// Multishot recvs the kernel ended at their byte budget (a completion
    /// with data and without F_MORE); zero where budgets are not honoured.
    pub recv_budget_ends: u64,
    /// The recv mode in use at the end, after any fallback.
    pub recv_mode: RecvMode,
    /// The most echo bytes one connection had waiting after a receive: how
    /// far completions posted before a pause's cancel overshot
    /// `--max-pending`.
    pub most_pending: usize,
    /// Times a push found the submission ring full and submitted early.
    pub sq_full: u64,
    /// SQEs that waited in the backlog for a later turn.
    pub backlogged: u64,
    /// Sends that completed short and were resubmitted for the rest.
    pub short_sends: u64,
    /// Recvs that found the provided-buffer ring empty (ENOBUFS).
    pub enobufs: u64,
    /// Completions for a slot's previous connection, ignored.
    pub stale: u64,
    /// Accept errors that paused accepting (EMFILE and its kin).
    pub accept_backoffs: u64,
}

impl RingCounters {
    /// The `RUST_LOG=debug` line at the end of a run.
    pub(super) fn log(&self, echoes: u64) {
        let c = self;
        debug!(
            "uring: {} io_uring_enter calls for {} echoes, {} SQEs ({} recvs, {}: {} ended at their budget, {} cancelled at --max-pending, at most {} echo bytes waiting), {} SQ-full flushes, {} SQEs backlogged, {} short sends resubmitted, {} recvs without a buffer (ENOBUFS), {} stale completions",
            c.enters,
            echoes,
            c.sqes,
            c.recvs,
            c.recv_mode.describe(),
            c.recv_budget_ends,
            c.recv_pauses,
            c.most_pending,
            c.sq_full,
            c.backlogged,
            c.short_sends,
            c.enobufs,
            c.stale
        );
    }
}
