//! Completion I/O: one thread, one io_uring, and every socket operation
//! handed to the kernel as a request that comes back finished. Read it beside
//! `event_loop.rs`, which serves the same protocol with the same flags on
//! readiness (epoll through mio).
//!
//! Run with (two terminals):
//!
//! ```text
//! RUST_LOG=trace cargo run -p async-server -- server --model uring
//! nc 127.0.0.1 7004          # type lines; the trace shows each completion
//! ```
//!
//! # Readiness against completion
//!
//! | step            | readiness (`event_loop.rs`)                  | completion (this file)                              |
//! |-----------------|----------------------------------------------|-----------------------------------------------------|
//! | ask             | "tell me when socket 7 is readable"          | "receive from socket 7 into a buffer, tell me when done" |
//! | how often       | once: the interest stays registered          | once per connection too: a *multishot* recv stays armed and completes again at every arrival |
//! | wait            | `epoll_wait` returns *tokens*                | `io_uring_enter` returns *results*: bytes read, bytes sent, a new fd, an errno |
//! | then            | call `read()` / `write()` yourself, until `WouldBlock` | nothing to call: the data is already in the buffer |
//! | buffers         | yours, passed at the `read()` you make       | lent to the kernel *before* the data exists: it must stay put until the completion |
//! | syscalls        | one `epoll_wait` plus one per `read`/`write` | one `io_uring_enter` per loop turn submits every request queued and collects every completion |
//!
//! An io_uring is two rings of memory shared with the kernel. We write
//! submission queue entries (SQEs: "recv on fd 7", "send these 40 bytes on
//! fd 9") into one; the kernel writes completion queue entries (CQEs:
//! `result` plus the 64-bit `user_data` we gave the request) into the other.
//! `io_uring_enter` tells the kernel how many SQEs are new and sleeps until at
//! least one CQE is there (or a timeout), so one syscall per loop turn does
//! the work that costs epoll a `read` and a `write` per echo.
//!
//! The price is **ownership**: from the moment an SQE is submitted until its
//! CQE arrives, the kernel may read or write the memory it names, and close()
//! on its fd does not stop it (the request holds its own reference to the
//! file). So this file never frees, moves or touches a buffer an operation
//! owns, never closes a socket with an operation in flight, and cancels
//! (`IORING_OP_ASYNC_CANCEL`) before it closes. Every `unsafe` block says why
//! its memory outlives the operation.
//!
//! # The operations
//!
//! - **accept**: one *multishot* accept (Linux 5.19) on the listener posts a
//!   CQE per new connection until it is cancelled or fails; on an older
//!   kernel (`EINVAL`) the loop falls back to one accept at a time.
//!   EMFILE (out of fds) ends it: [`accept_policy`] says back off, and we
//!   re-arm it after the delay (the connections wait in the backlog). One
//!   surprise: io_uring reads `RLIMIT_NOFILE` when the accept is
//!   *submitted*, so a multishot accept armed before the limit was lowered
//!   keeps the old limit.
//! - **recv**: one *multishot* recv per connection (`IORING_RECV_MULTISHOT`,
//!   Linux 6.0). A one-shot recv completes once and must be submitted again
//!   for the next bytes: per echo an SQE, its preparation, and a fresh poll
//!   registration inside the kernel. A multishot recv is submitted once and
//!   stays armed, posting a CQE every time data arrives; `IORING_CQE_F_MORE`
//!   in the CQE's flags says it is still armed. A CQE *without* F_MORE ends
//!   it: the peer's FIN (result 0), an error, an empty buffer ring
//!   (`ENOBUFS`: re-armed at once), or our cancel. The result: about one
//!   recv SQE per connection instead of one per echo (`RingCounters::recvs`).
//!   It needs the **provided-buffer ring** (`IOSQE_BUFFER_SELECT`, 5.19):
//!   the recv names no buffer; when data arrives the kernel takes one from a
//!   ring of [`RingOptions::buffers`] buffers we registered, fills it and
//!   says which in the CQE. An idle connection therefore holds no buffer at
//!   all (a readiness loop gets the same by reading into one shared scratch
//!   buffer; a completion loop cannot: the buffer must exist before the data).
//!   We copy the bytes out (into the loop's one scratch buffer, or after
//!   the connection's unfinished frame), decode, and give the buffer back
//!   at once. Empty
//!   ring (more data arrived in one turn than there are buffers): the recv
//!   ends with `ENOBUFS` and is simply re-armed; the kernel sees it at the
//!   next submit, after this turn's buffers are back. Size the ring to the
//!   connections that are active at once, not to all of them.
//!   Backpressure (`--max-pending`): with one-shot recvs, not re-arming is
//!   the pause. A multishot recv would go on receiving, so each one is
//!   armed with a **byte budget** (`sqe->optlen`): what `--max-pending`
//!   leaves; the kernel ends it once it has received that much, and `step`
//!   arms the next when the echoes have drained below the limit. Where the
//!   kernel has no budgets (`EINVAL`) the multishot recv is **cancelled**
//!   when the echoes waiting reach the limit instead; its completions
//!   posted before the cancel lands are still echoed, so the limit is
//!   overshot by what those held (see `step`). Where the kernel refuses
//!   multishot too (`EINVAL`, before 6.0) the loop falls back to one-shot
//!   recvs, as the accept does ([`RecvMode`]).
//! - **send**: one per connection at a time, from `sending`, a buffer nobody
//!   touches while the kernel owns it (new echoes go to `queued`, which
//!   becomes `sending` by a swap; emptied buffers go back to a small spare
//!   list, so echoing allocates nothing and an idle connection holds no
//!   buffer). A send can
//!   complete *short* (the peer's window is full); we resubmit the rest,
//!   as often as it takes. Published echo examples often give up after a
//!   second short send, silently losing the tail of a big echo: the test
//!   `short_sends_to_a_slow_reader_lose_nothing` would catch that here.
//! - **cancel** (`ASYNC_CANCEL` by `user_data`) before closing, at the
//!   stall/idle timeouts, at `--max-pending` (a multishot recv without a
//!   budget), at shutdown (to stop accepting, and a recv that would wait for
//!   new bytes) and at the grace deadline.
//! - **poll** on an eventfd: the shutdown wake-up. `Shutdown::on_trigger`
//!   writes to the eventfd from the signal thread; the ring's `POLL_ADD`
//!   completes and the loop begins its shutdown. (The mio loop's `Waker` is
//!   the same eventfd, watched by epoll.)
//!
//! **Shutdown** (the contract in the root README): the eventfd completes;
//! the accept is cancelled and the listener closed once its last CQE is in
//! (the kernel resets connections still in its backlog: they were never
//! accepted). Each connection counts the bytes its kernel receive queue
//! holds (`ioctl(FIONREAD)`): a completion can say how many bytes a recv
//! took, never "that was all", and a recv asked not to wait
//! (`MSG_DONTWAIT`) still waits inside io_uring on this kernel. Those bytes
//! are received and echoed (still paced by `--max-pending`); then FIN
//! (`shutdown(SHUT_WR)`, a plain syscall that never blocks), then recvs that
//! discard until the peer's FIN. At `--grace` after the signal whatever is
//! still open is cancelled and closed (`cut`).
//!
//! Timeouts are not ring operations: each turn waits in `io_uring_enter`
//! with a timeout (`IORING_ENTER_EXT_ARG`) up to the next sweep, accept
//! resumption or shutdown deadline, then sweeps the table for idle and
//! stalled connections, like the event loop.
//!
//! `user_data` is the key back to our state: slot index (32 bits), the slot's
//! generation (24 bits) and the operation kind (8 bits). A slot is reused only
//! after every operation of its previous connection completed, and its
//! generation is bumped then, so a stray completion for a reused slot is
//! recognised and ignored, and a cancel aimed at the old connection's
//! operation (it names its target by `user_data`) can never hit the new
//! one's.
//!
//! **Submission queue full**: [`RingOptions::sq_entries`] SQEs fit in the
//! ring. When a push finds it full we `io_uring_enter` at once to hand the
//! queued SQEs to the kernel (which frees the ring), and if it is still full
//! (the kernel refused, say `EBUSY` while completions overflow, or with
//! SQPOLL, whose kernel thread empties the ring in its own time) the SQE
//! waits in `backlog`, in order, and is pushed at the top of the next turn.
//! A connection's operations are cancelled out of the backlog, too, before
//! it is closed.
//!
//! The ring is set up `SINGLE_ISSUER | DEFER_TASKRUN` where the kernel has
//! them (6.1): completion work then runs when this thread asks for
//! completions, not whenever a packet arrives, which saves interrupts and
//! context switches. An older kernel gets a plain ring.
//!
//! No SQPOLL by default: a kernel thread polling the submission ring saves
//! the `io_uring_enter` syscall but burns a CPU the measurements would not
//! charge to the server. [`RingOptions::sqpoll_idle`] turns it on, to be
//! measured separately.
//!
//! What to watch: `RUST_LOG=trace` shows every completion with its result;
//! `RUST_LOG=debug` ends with how many `io_uring_enter` calls served how many
//! echoes, and how many recv SQEs they took (about one per connection).

use std::alloc::{Layout, alloc, alloc_zeroed, dealloc};
use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use common::conn::{End, log_close};
use common::net::{AcceptAction, Backoff, accept_policy};
use common::{ConnError, Decoder, ServerConfig, Shutdown, Stats, encode};
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use log::{debug, error, info, trace, warn};

/// Sizes of the ring and of the provided buffers. [`run`] uses the defaults;
/// tests shrink them to force the full-queue and empty-buffer-ring paths.
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
    /// Multishot recv (one per connection, Linux 6.0); `false`: one-shot
    /// recvs, re-armed after every completion, as the loop falls back to on
    /// an older kernel. On by default; the tests compare the modes.
    pub multishot_recv: bool,
    /// Give each multishot recv a byte budget, what `--max-pending` leaves,
    /// after which the kernel ends it (where the kernel honours budgets; it
    /// falls back to plain multishot where it refuses them). On by default.
    pub recv_budget: bool,
}

/// How connections receive, best first: what [`RingOptions`] asks for,
/// less what the kernel refused ([`RingCounters::recv_mode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecvMode {
    /// A multishot recv that the kernel ends by itself once it has received
    /// its byte budget (`sqe->optlen`): the budget is what `--max-pending`
    /// leaves, so backpressure needs no cancel, and overshoots the limit by
    /// less than a buffer (the last receive may fill a whole one). A recent
    /// kernel (this 6.18 has it); an older one refuses it with `EINVAL`.
    #[default]
    MultishotBudget,
    /// A multishot recv (Linux 6.0): armed until cancelled, so reaching
    /// `--max-pending` cancels it.
    Multishot,
    /// One recv per completion, re-armed each time.
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

    fn asked(options: &RingOptions) -> RecvMode {
        match (options.multishot_recv, options.recv_budget) {
            (true, true) => RecvMode::MultishotBudget,
            (true, false) => RecvMode::Multishot,
            (false, _) => RecvMode::OneShot,
        }
    }

    /// What to try after the kernel refused this one.
    fn fallback(self) -> RecvMode {
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
            multishot_recv: true,
            recv_budget: true,
        }
    }
}

/// Serve `listener` on the calling thread until `shutdown` and its
/// `--grace` are over; returns the counters behind the summary line (which
/// the caller logs, as for the other models). Fails at once, with [`probe`]'s one-line
/// reason, where the kernel refuses io_uring.
pub fn run(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: Shutdown,
) -> io::Result<Arc<Stats>> {
    run_with(listener, config, shutdown, RingOptions::default()).map(|report| report.stats)
}

/// What [`run_with`] returns: the summary counters and the ring's own.
#[derive(Debug)]
pub struct Report {
    pub stats: Arc<Stats>,
    pub ring: RingCounters,
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

/// [`run`] with explicit ring sizes, returning the ring's counters too.
pub fn run_with(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: Shutdown,
    options: RingOptions,
) -> io::Result<Report> {
    let (ring, bufs) = setup(&options)?;
    let wake = Arc::new(eventfd()?);
    shutdown.on_trigger({
        let wake = wake.clone();
        move || {
            let one: u64 = 1;
            // SAFETY: write(2) reads 8 bytes from a local u64 that lives
            // across the call; the Arc keeps the eventfd open.
            let n = unsafe {
                libc::write(
                    wake.as_raw_fd(),
                    (&one as *const u64).cast::<libc::c_void>(),
                    8,
                )
            };
            if n != 8 {
                error!(
                    "could not wake the io_uring loop: {}",
                    io::Error::last_os_error()
                );
            }
        }
    });
    let stats = Arc::new(Stats::new());
    let quickest = [config.idle_timeout, Some(config.stall_timeout)]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(config.stall_timeout);
    let now = Instant::now();
    let mut server = Uring {
        ring,
        bufs,
        wake,
        listener: Some(listener),
        accept: AcceptState {
            armed: false,
            multishot: true,
            seen_ok: false,
            paused_until: None,
        },
        recv: RecvState {
            mode: RecvMode::asked(&options),
            seen_ok: false,
        },
        backoff: Backoff::new(),
        slots: Vec::new(),
        free: Vec::new(),
        open: 0,
        backlog: VecDeque::new(),
        cqes: Vec::new(),
        spare: Spare::default(),
        now,
        sweep_every: (quickest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)),
        next_sweep: now,
        deadline: None,
        cut_done: false,
        config,
        stats: stats.clone(),
        shutdown,
        counters: RingCounters::default(),
    };
    info!(
        "uring model: one thread, io_uring with {} SQEs, {} provided buffers of {} bytes, {} asked for{}",
        server.ring.params().sq_entries(),
        server.bufs.count,
        server.bufs.size,
        server.recv.mode.describe(),
        match options.sqpoll_idle {
            Some(idle) =>
                format!(", SQPOLL (the kernel's polling thread sleeps after {idle:?} idle)"),
            None => String::new(),
        }
    );
    server.arm_wake();
    server.arm_accept();
    let result = server.serve();
    if let Err(e) = &result {
        error!("uring: {e}; stopping");
    }
    server.teardown();
    let c = &server.counters;
    debug!(
        "uring: {} io_uring_enter calls for {} echoes, {} SQEs ({} recvs, {}: {} ended at their budget, {} cancelled at --max-pending, at most {} echo bytes waiting), {} SQ-full flushes, {} SQEs backlogged, {} short sends resubmitted, {} recvs without a buffer (ENOBUFS), {} stale completions",
        c.enters,
        Stats::get(&stats.frames),
        c.sqes,
        c.recvs,
        server.recv.mode.describe(),
        c.recv_budget_ends,
        c.recv_pauses,
        c.most_pending,
        c.sq_full,
        c.backlogged,
        c.short_sends,
        c.enobufs,
        c.stale
    );
    server.counters.recv_mode = server.recv.mode;
    let ring = server.counters.clone();
    result.map(|()| Report { stats, ring })
}

/// Whether this kernel lets us run the uring model: `Ok(())`, or one line
/// saying which refusal (seccomp, the `kernel.io_uring_disabled` sysctl, an
/// old kernel) and how to check.
///
/// The trial ring is set up and torn down on a short-lived thread of its
/// own: tearing a ring down queues kernel work for the thread that made it,
/// and that work interrupts the thread's next blocking call. A `recv` on a
/// socket with `SO_RCVTIMEO` is not restarted after such an interruption
/// (signal(7)), so a caller's next read would fail with `EINTR`. (The new
/// thread inherits the caller's seccomp filter, so a refusal is still seen.)
pub fn probe() -> Result<(), String> {
    std::thread::Builder::new()
        .name("uring-probe".into())
        .spawn(probe_here)
        .map_err(|e| format!("io_uring probe: cannot start a thread: {e}"))?
        .join()
        .unwrap_or_else(|_| Err("io_uring probe: the probe thread panicked".into()))
}

fn probe_here() -> Result<(), String> {
    let options = RingOptions {
        sq_entries: 4,
        buffers: 1,
        buffer_size: 64,
        sqpoll_idle: None,
        multishot_recv: true,
        recv_budget: true,
    };
    setup(&options).map(drop).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------
// Setting up, and saying why not

/// The provided-buffer group id: we register one group.
const BGID: u16 = 0;

fn setup(options: &RingOptions) -> io::Result<(IoUring, BufRing)> {
    let ring = build_ring(options).map_err(|e| refused("io_uring_setup", &e))?;
    let p = ring.params();
    if !p.is_feature_ext_arg() || !p.is_feature_nodrop() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "io_uring is unavailable: kernel {} lacks IORING_FEAT_EXT_ARG/NODROP (needs Linux 5.19 or later; check: uname -r)",
                kernel_release()
            ),
        ));
    }
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| refused("IORING_REGISTER_PROBE", &e))?;
    for (code, name) in [
        (opcode::Recv::CODE, "RECV"),
        (opcode::Send::CODE, "SEND"),
        (opcode::Accept::CODE, "ACCEPT"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
        (opcode::PollAdd::CODE, "POLL_ADD"),
    ] {
        if !probe.is_supported(code) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "io_uring is unavailable: kernel {} has no IORING_OP_{name} (needs Linux 5.19 or later; check: uname -r)",
                    kernel_release()
                ),
            ));
        }
    }
    let bufs = BufRing::new(options.buffers, options.buffer_size)?;
    bufs.register(&ring)
        .map_err(|e| refused("IORING_REGISTER_PBUF_RING", &e))?;
    Ok((ring, bufs))
}

fn build_ring(options: &RingOptions) -> io::Result<IoUring> {
    let cq = options.sq_entries.saturating_mul(16);
    let mut builder = IoUring::builder();
    builder.setup_cqsize(cq).setup_clamp();
    if let Some(idle) = options.sqpoll_idle {
        builder.setup_sqpoll(u32::try_from(idle.as_millis()).unwrap_or(u32::MAX));
    } else {
        // One thread submits (SINGLE_ISSUER, 6.0) and the kernel runs
        // completion work only when we ask for completions (DEFER_TASKRUN,
        // 6.1), instead of interrupting us: fewer context switches. Older
        // kernels say EINVAL; then a plain ring.
        let mut fast = IoUring::builder();
        fast.setup_cqsize(cq)
            .setup_clamp()
            .setup_single_issuer()
            .setup_defer_taskrun();
        if let Ok(ring) = fast.build(options.sq_entries) {
            return Ok(ring);
        }
    }
    builder.build(options.sq_entries)
}

/// One line: why the kernel refused `what`, and how to check.
fn refused(what: &str, e: &io::Error) -> io::Error {
    // Linux 6.6+: 0 allows io_uring, 1 only to root and one group, 2 to nobody.
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .map(|s| s.trim().to_string());
    let line = explain(what, e, disabled.as_deref(), &kernel_release());
    io::Error::new(io::ErrorKind::Unsupported, line)
}

fn explain(what: &str, e: &io::Error, disabled: Option<&str>, release: &str) -> String {
    match (e.raw_os_error(), disabled) {
        (Some(libc::EPERM), Some("2")) => "io_uring is unavailable: sysctl kernel.io_uring_disabled = 2 disables it for every process (check: cat /proc/sys/kernel/io_uring_disabled; 0 allows it)".to_string(),
        (Some(libc::EPERM), Some("1")) => "io_uring is unavailable: sysctl kernel.io_uring_disabled = 1 allows it only to root and the group in kernel.io_uring_group (check: cat /proc/sys/kernel/io_uring_disabled /proc/sys/kernel/io_uring_group; id -G)".to_string(),
        (Some(libc::EPERM), _) => format!(
            "io_uring is unavailable: {what} returned EPERM, most likely a seccomp profile (container runtimes' default profiles block io_uring; check: grep Seccomp /proc/self/status shows 2 when a filter is on)"
        ),
        (Some(libc::ENOSYS), _) => format!(
            "io_uring is unavailable: {what} returned ENOSYS: kernel {release} was built without io_uring or is older than 5.1, or a seccomp profile answers ENOSYS (this server needs Linux 5.19 or later; check: uname -r; grep Seccomp /proc/self/status)"
        ),
        (Some(libc::EINVAL), _) | (None, _) if e.kind() == io::ErrorKind::InvalidInput => format!(
            "io_uring is unavailable: kernel {release} refused {what} with EINVAL: too old for provided-buffer rings (needs Linux 5.19 or later; check: uname -r)"
        ),
        _ => format!("io_uring is unavailable: {what}: {e} (kernel {release})"),
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "(unknown)".into())
}

/// A multishot recv's total byte budget: the kernel ends it (a CQE without
/// F_MORE) once it has received `total` bytes; 0 means no limit. The field
/// is `sqe->optlen`, which the io-uring crate has no setter for on a recv.
fn with_total_len(mut entry: squeue::Entry, total: u32) -> squeue::Entry {
    // SAFETY: `squeue::Entry` is `#[repr(C)]` around the kernel's 64-byte
    // `struct io_uring_sqe` (size asserted below), whose u32 at byte 44 is
    // the union of `splice_fd_in`, `file_index` and `optlen` (the uapi
    // header; the unit test checks the offset through `file_index`). The
    // write stays inside `entry`, needs no alignment (write_unaligned), and
    // the field names no memory.
    unsafe {
        (&raw mut entry)
            .cast::<u8>()
            .add(SQE_OPTLEN)
            .cast::<u32>()
            .write_unaligned(total);
    }
    entry
}

const SQE_OPTLEN: usize = 44;
const _: () = assert!(std::mem::size_of::<squeue::Entry>() == 64);

/// `ioctl(FIONREAD)`: bytes in the socket's receive queue now.
fn bytes_waiting(stream: &TcpStream) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int, into `n`, which outlives the call.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc < 0 {
        // Nothing sensible to drain (a reset socket, say): input is done.
        0
    } else {
        usize::try_from(n).unwrap_or(0)
    }
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd(2) takes no pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

// ---------------------------------------------------------------------------
// The provided-buffer ring

/// The kernel's `struct io_uring_buf`: where a buffer is, how long, its id.
/// Entry 0's last two bytes (`resv`) double as the ring's tail.
#[repr(C)]
struct RawBuf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}
const _: () = assert!(std::mem::size_of::<RawBuf>() == 16);
const _: () = assert!(std::mem::size_of::<types::BufRingEntry>() == 16);

/// `count` buffers of `size` bytes the kernel picks from for every recv, and
/// the ring of 16-byte entries through which we hand them (back) to it. We
/// own the tail; the kernel keeps the head to itself.
struct BufRing {
    entries: NonNull<RawBuf>,
    entries_layout: Layout,
    mem: NonNull<u8>,
    mem_layout: Layout,
    count: u16,
    size: u32,
    tail: u16,
    /// Set when the loop had to stop with operations still in flight: the
    /// kernel may yet write into `mem`, so it is never freed.
    leak: bool,
}

impl BufRing {
    fn new(count: u16, size: u32) -> io::Result<BufRing> {
        if !count.is_power_of_two() || count > 32768 || size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("provided buffers: {count} (a power of two up to 32768) of {size} bytes"),
            ));
        }
        let bad = |_| io::Error::from(io::ErrorKind::InvalidInput);
        // The kernel wants the entry ring page-aligned.
        let entries_layout = Layout::from_size_align(usize::from(count) * 16, 4096).map_err(bad)?;
        let mem_layout =
            Layout::from_size_align(usize::from(count) * size as usize, 4096).map_err(bad)?;
        // SAFETY: both layouts have a non-zero size (count >= 1, size >= 1).
        let entries = NonNull::new(unsafe { alloc_zeroed(entries_layout) }.cast::<RawBuf>());
        // SAFETY: as above. Not zeroed: the kernel writes before we read.
        let mem = NonNull::new(unsafe { alloc(mem_layout) });
        let (Some(entries), Some(mem)) = (entries, mem) else {
            return Err(io::ErrorKind::OutOfMemory.into());
        };
        let mut ring = BufRing {
            entries,
            entries_layout,
            mem,
            mem_layout,
            count,
            size,
            tail: 0,
            leak: false,
        };
        for bid in 0..count {
            ring.recycle(bid);
        }
        Ok(ring)
    }

    fn register(&self, ring: &IoUring) -> io::Result<()> {
        // SAFETY: the entry ring stays allocated, at this address, until
        // `self` is dropped, which `Uring` does only after dropping `ring`
        // (field order), i.e. after the kernel stopped using it.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                self.entries.as_ptr() as u64,
                self.count,
                BGID,
                0,
            )
        }
    }

    /// The `len` bytes the kernel wrote into buffer `bid`.
    fn data(&self, bid: u16, len: usize) -> &[u8] {
        let bid = bid % self.count; // a kernel bug must not become ours
        let len = len.min(self.size as usize);
        // SAFETY: buffer `bid` lies inside `mem`; its CQE says the kernel
        // finished writing it, and it will not touch it again until
        // `recycle(bid)`, which needs `&mut self` and so cannot overlap this
        // borrow.
        unsafe {
            std::slice::from_raw_parts(
                self.mem.as_ptr().add(usize::from(bid) * self.size as usize),
                len,
            )
        }
    }

    /// Give buffer `bid` back to the kernel.
    fn recycle(&mut self, bid: u16) {
        let bid = bid % self.count;
        let slot = usize::from(self.tail & (self.count - 1));
        // SAFETY: `slot` < count, inside the entry allocation. The kernel
        // only reads entries between its head and our tail; this one is
        // past the tail, so it is ours to write. Fields are written through
        // raw pointers, never a `&mut RawBuf`, because entry 0's `resv` is
        // the tail the kernel reads concurrently.
        unsafe {
            let e = self.entries.as_ptr().add(slot);
            let addr = self.mem.as_ptr().add(usize::from(bid) * self.size as usize);
            std::ptr::addr_of_mut!((*e).addr).write(addr as u64);
            std::ptr::addr_of_mut!((*e).len).write(self.size);
            std::ptr::addr_of_mut!((*e).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is entry 0's `resv`, a u16 at a 2-aligned address
        // inside the allocation; the kernel reads it, we are its only
        // writer. Release: the entry above is visible before the new tail.
        unsafe {
            let tail = std::ptr::addr_of_mut!((*self.entries.as_ptr()).resv);
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.leak {
            return;
        }
        // SAFETY: allocated in `new` with these layouts; no operation that
        // could use them is in flight (`leak` is false) and the ring that
        // knew their address is already closed.
        unsafe {
            dealloc(self.entries.as_ptr().cast(), self.entries_layout);
            dealloc(self.mem.as_ptr(), self.mem_layout);
        }
    }
}

// ---------------------------------------------------------------------------
// user_data: which state a completion belongs to

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Accept = 1,
    Wake = 2,
    Cancel = 3,
    Recv = 4,
    Send = 5,
}

/// The slot number of operations that belong to no connection.
const NO_SLOT: u32 = u32::MAX;
const GEN_MASK: u32 = 0x00FF_FFFF;

fn user_data(slot: u32, generation: u32, kind: Kind) -> u64 {
    (u64::from(slot) << 32) | (u64::from(generation & GEN_MASK) << 8) | kind as u64
}

fn parse_user_data(u: u64) -> (u32, u32, Option<Kind>) {
    let kind = match u & 0xFF {
        1 => Some(Kind::Accept),
        2 => Some(Kind::Wake),
        3 => Some(Kind::Cancel),
        4 => Some(Kind::Recv),
        5 => Some(Kind::Send),
        _ => None,
    };
    ((u >> 32) as u32, ((u >> 8) as u32) & GEN_MASK, kind)
}

// ---------------------------------------------------------------------------
// The loop

/// How long, past the grace deadline, the loop waits for the cancellations of
/// the connections it cut (normally microseconds).
const CUT_WAIT: Duration = Duration::from_millis(500);

struct AcceptState {
    /// An accept operation is in the kernel (the listener must stay open).
    armed: bool,
    /// Multishot accept; false after an old kernel refused it.
    multishot: bool,
    seen_ok: bool,
    /// Backing off after EMFILE & co: re-arm at this instant.
    paused_until: Option<Instant>,
}

struct RecvState {
    /// The recv to arm; one step down after an old kernel refused it.
    mode: RecvMode,
    /// A recv of `mode` has completed without EINVAL: the kernel has them.
    seen_ok: bool,
}

/// The loop's own buffers, lent to whichever connection is busy, so that a
/// busy connection allocates nothing per echo and an idle one holds nothing
/// (an idle connection's `rbuf`, `queued` and `sending` are all empty and
/// unallocated).
#[derive(Default)]
struct Spare {
    /// Received bytes are decoded here when the connection has no
    /// unfinished frame (see `Conn::received`). Grows to the largest
    /// receive plus, in `length` framing, a frame the decoder reserved room
    /// for: at most `--max-frame` and a buffer, once for the whole loop.
    decode: BytesMut,
    /// Emptied echo buffers (`Conn::sending` once all sent), handed to the
    /// next connection that queues an echo.
    out: Vec<BytesMut>,
}

/// At most this many spare echo buffers, of at most `SPARE_CAPACITY` bytes
/// each, are kept: 4 MiB at worst, for the whole loop.
const SPARE_BUFFERS: usize = 256;
const SPARE_CAPACITY: usize = 16 * 1024;

impl Spare {
    /// An empty echo buffer: a spare one, or a new (unallocated) one.
    fn take(&mut self) -> BytesMut {
        self.out.pop().unwrap_or_default()
    }

    /// An emptied echo buffer back from a connection: kept unless it grew
    /// large or enough are kept already (then it is freed).
    fn give(&mut self, mut buf: BytesMut) {
        buf.clear();
        // The sends `advance`d the buffer's start past the bytes they took.
        // With nothing left in it, asking for more room than it shows moves
        // the start back (no allocation, no copy): all of it is usable again.
        let _ = buf.try_reclaim(buf.capacity() + 1);
        let keep = (1..=SPARE_CAPACITY).contains(&buf.capacity());
        if keep && self.out.len() < SPARE_BUFFERS {
            self.out.push(buf);
        }
    }
}

struct Uring {
    // Field order is drop order: the ring (and with it the kernel's use of
    // every buffer) goes first, the buffers after.
    ring: IoUring,
    bufs: BufRing,
    wake: Arc<OwnedFd>,
    listener: Option<TcpListener>,
    accept: AcceptState,
    recv: RecvState,
    backoff: Backoff,
    /// The connection table; slot `i` is in every `user_data` of its ops.
    slots: Vec<Slot>,
    free: Vec<u32>,
    open: usize,
    /// SQEs that found the submission ring full, in order.
    backlog: VecDeque<squeue::Entry>,
    cqes: Vec<(u64, i32, u32)>,
    /// Buffers lent to whichever connection is busy.
    spare: Spare,
    /// Read once per turn, after `io_uring_enter` returns.
    now: Instant,
    sweep_every: Duration,
    next_sweep: Instant,
    deadline: Option<Instant>,
    cut_done: bool,
    config: ServerConfig,
    stats: Arc<Stats>,
    shutdown: Shutdown,
    counters: RingCounters,
}

#[derive(Default)]
struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    decoder: Decoder,
    /// Received bytes not yet a whole frame. Empty (no allocation) between
    /// frames.
    rbuf: BytesMut,
    /// Owned by the kernel while `send_inflight`: not read, grown, or freed.
    /// Back to `Spare` once all sent.
    sending: BytesMut,
    /// Echoes waiting for the send in flight to finish, in a buffer from
    /// `Spare`; swapped into `sending` when that is empty.
    queued: BytesMut,
    /// A recv is in the kernel: armed (a multishot one until a completion
    /// without `IORING_CQE_F_MORE`), or done and not reaped.
    recv_inflight: bool,
    /// The mode of the recv in flight.
    recv_mode: RecvMode,
    /// A cancel of the recv in flight is on its way (backpressure, or the
    /// shutdown drain is over); until its last CQE the recv stays in flight.
    recv_stopping: bool,
    send_inflight: bool,
    /// The peer's FIN arrived (recv returned 0).
    eof: bool,
    /// Shutdown: the receive queue is empty, nothing more will be echoed.
    input_done: bool,
    draining: bool,
    /// Shutdown: bytes the kernel held for us when it began (`FIONREAD`),
    /// not yet received. Their frames are owed an echo; later bytes are not.
    owed: usize,
    fin_sent: bool,
    /// An unfinished frame at the peer's FIN, reported at close.
    error: Option<common::FrameError>,
    unfinished: usize,
    /// When it last sent us something (idle timeout).
    last_rx: Instant,
    /// When the kernel last took echo bytes, or when echoes started waiting
    /// (stall timeout).
    last_tx: Instant,
    closing: Option<End>,
    frames: u64,
    bytes: u64,
}

impl Conn {
    fn pending(&self) -> usize {
        self.sending.len() + self.queued.len()
    }

    fn inflight(&self) -> usize {
        usize::from(self.recv_inflight) + usize::from(self.send_inflight)
    }

    /// Bytes from a recv: decode every whole frame and queue its echo.
    fn received(
        &mut self,
        data: &[u8],
        now: Instant,
        spare: &mut Spare,
        config: &ServerConfig,
        stats: &Stats,
    ) -> Result<(), ConnError> {
        self.last_rx = now;
        if self.fin_sent {
            // Shutting down, our FIN is sent: bytes after it are dropped.
            trace!(
                "{}: discarded {} bytes after shutdown",
                self.peer,
                data.len()
            );
            return Ok(());
        }
        // The common case: no unfinished frame is waiting, so decode in the
        // loop's one scratch buffer (whose allocation is reused turn after
        // turn) instead of allocating for this connection. Otherwise the
        // new bytes join the unfinished frame in the connection's `rbuf`.
        let in_scratch = self.rbuf.is_empty();
        let mut buf = if in_scratch {
            std::mem::take(&mut spare.decode)
        } else {
            std::mem::take(&mut self.rbuf)
        };
        buf.extend_from_slice(data);
        let result = self.echo_frames(&mut buf, now, spare, config, stats);
        if result.is_err() {
            buf.clear(); // the connection is closing: nothing to keep
        }
        if in_scratch {
            // Only an unfinished frame's tail (usually a few bytes) is
            // copied into a buffer of the connection's own.
            if !buf.is_empty() {
                self.rbuf = BytesMut::from(&buf[..]);
                buf.clear();
            }
            spare.decode = buf;
        } else if !buf.is_empty() {
            self.rbuf = buf;
        } // else `buf` is dropped: an idle connection holds no buffer
        result
    }

    /// Cut every whole frame off the front of `buf` and queue its echo.
    fn echo_frames(
        &mut self,
        buf: &mut BytesMut,
        now: Instant,
        spare: &mut Spare,
        config: &ServerConfig,
        stats: &Stats,
    ) -> Result<(), ConnError> {
        while let Some(frame) = self.decoder.decode(buf)? {
            self.echo(&frame, now, spare, config, stats)?;
        }
        Ok(())
    }

    /// The peer's FIN: the last frame, or an unfinished one to report.
    fn received_eof(
        &mut self,
        now: Instant,
        spare: &mut Spare,
        config: &ServerConfig,
        stats: &Stats,
    ) -> Result<(), ConnError> {
        self.eof = true;
        loop {
            match self.decoder.decode_eof(&mut self.rbuf) {
                Ok(Some(frame)) => self.echo(&frame, now, spare, config, stats)?,
                Ok(None) => return Ok(()),
                Err(e) => {
                    // Still send the echoes we owe; report at close.
                    self.error = Some(e);
                    return Ok(());
                }
            }
        }
    }

    fn echo(
        &mut self,
        frame: &[u8],
        now: Instant,
        spare: &mut Spare,
        config: &ServerConfig,
        stats: &Stats,
    ) -> Result<(), ConnError> {
        debug!("{}: frame of {} bytes", self.peer, frame.len());
        if config.work > 0 {
            // Inline: the whole loop, every client, waits for this.
            std::hint::black_box(common::work::work(frame, config.work));
        }
        if self.pending() == 0 {
            self.last_tx = now; // the stall clock starts now
        }
        if self.queued.capacity() == 0 {
            self.queued = spare.take();
        }
        encode(config.framing, frame, &mut self.queued)?;
        stats.add_frame(frame.len());
        self.frames += 1;
        self.bytes += frame.len() as u64;
        Ok(())
    }
}

impl Uring {
    fn serve(&mut self) -> io::Result<()> {
        loop {
            if self.deadline.is_none() && self.shutdown.is_triggered() {
                self.begin_shutdown();
            }
            if let Some(deadline) = self.deadline {
                if self.open == 0 && !self.accept.armed {
                    return Ok(());
                }
                let now = self.now;
                if now >= deadline && !self.cut_done {
                    self.cut_done = true;
                    warn!(
                        "{} connection(s) still open after {:?} (--grace): cutting them",
                        self.open, self.config.grace
                    );
                    for i in 0..self.slots.len() as u32 {
                        self.close(i, End::Cut);
                    }
                }
                if now >= deadline + CUT_WAIT {
                    return Ok(()); // `teardown` deals with what is left
                }
            }
            self.flush_backlog();
            let timeout = self.wait_timeout(self.now);
            self.enter(timeout)?;
            // The turn's one clock read (a vDSO call, but one per echo adds
            // up): every completion of this batch, the timers, and the next
            // turn's timeout use it.
            self.now = Instant::now();
            self.reap()?;
            self.timers(self.now);
        }
    }

    /// The one place the thread sleeps: submit every queued SQE and wait for
    /// at least one CQE, or `timeout`.
    fn enter(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.counters.enters += 1;
        let result = match timeout {
            Some(t) => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submit_and_wait(1),
        };
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                // ETIME: the timeout passed with no completion. EINTR: a
                // signal. EBUSY/EAGAIN: completions overflowed, reap first.
                Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN) => Ok(()),
                _ => Err(e),
            },
        }
    }

    /// Submit without waiting, to make room in a full submission ring.
    fn submit_now(&mut self) {
        self.counters.enters += 1;
        if let Err(e) = self.ring.submit() {
            debug!("io_uring_enter (submit only): {e}");
        }
    }

    /// Queue one SQE: into the ring, or, if it is full even after a submit,
    /// into `backlog` (keeping the order of this connection's operations).
    ///
    /// # Safety
    /// Every pointer in `entry` stays valid until the operation's CQE.
    unsafe fn push(&mut self, entry: squeue::Entry) {
        self.counters.sqes += 1;
        if self.backlog.is_empty() {
            // SAFETY: forwarded from the caller.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            self.counters.sq_full += 1;
            trace!("submission queue full: submitting to make room");
            self.submit_now();
            // SAFETY: as above.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
        }
        self.counters.backlogged += 1;
        self.backlog.push_back(entry);
    }

    fn flush_backlog(&mut self) {
        let mut submitted = false;
        while let Some(entry) = self.backlog.front() {
            // SAFETY: every backlogged entry was pushed with `push`'s
            // guarantee, which lasts until its CQE; it has none yet.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                self.backlog.pop_front();
                submitted = false;
                continue;
            }
            if submitted {
                return; // still full after a submit: the next turn tries again
            }
            self.submit_now();
            submitted = true;
        }
    }

    /// Cancel the operation named `target`. True if it was still in our
    /// backlog (then it is simply dropped and no CQE will come for it).
    fn cancel(&mut self, target: u64) -> bool {
        let before = self.backlog.len();
        self.backlog.retain(|e| e.get_user_data() != target);
        if self.backlog.len() != before {
            return true;
        }
        let entry = opcode::AsyncCancel::new(target)
            .build()
            .user_data(user_data(NO_SLOT, 0, Kind::Cancel));
        // SAFETY: a cancel names its target by user_data and no memory.
        unsafe { self.push(entry) };
        false
    }

    fn wait_timeout(&self, now: Instant) -> Option<Duration> {
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

    fn reap(&mut self) -> io::Result<()> {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        let mut result = Ok(());
        for &(u, res, flags) in &cqes {
            if let Err(e) = self.complete(u, res, flags) {
                result = Err(e);
            }
        }
        cqes.clear();
        self.cqes = cqes;
        result
    }

    fn complete(&mut self, u: u64, res: i32, flags: u32) -> io::Result<()> {
        let (slot, generation, kind) = parse_user_data(u);
        trace!("completion {kind:?} slot {slot} gen {generation}: result {res}, flags {flags:#x}");
        match kind {
            Some(Kind::Accept) => return self.accepted(res, flags),
            // `serve` begins the shutdown at the top of its next turn, once
            // every completion of this batch is processed: bytes a recv
            // already took count as received, whatever their place after
            // this CQE, before FIONREAD counts what is still in the kernel.
            Some(Kind::Wake) => {}
            Some(Kind::Cancel) => {}
            Some(kind @ (Kind::Recv | Kind::Send)) => {
                let live = self
                    .slots
                    .get(slot as usize)
                    .is_some_and(|s| s.conn.is_some() && s.generation & GEN_MASK == generation);
                if !live {
                    // A completion for a connection that is gone: its buffer
                    // (if it took one) still goes back to the ring.
                    self.counters.stale += 1;
                    debug!("stale completion {kind:?} for slot {slot} gen {generation}: ignored");
                    if let Some(bid) = cqueue::buffer_select(flags) {
                        self.bufs.recycle(bid);
                    }
                    return Ok(());
                }
                if kind == Kind::Recv {
                    self.received(slot, res, flags);
                } else {
                    self.sent(slot, res);
                }
                self.step(slot);
            }
            None => warn!("completion with unknown user_data {u:#x}: ignored"),
        }
        Ok(())
    }

    // --- accept -----------------------------------------------------------

    fn arm_accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        if self.accept.armed || self.deadline.is_some() {
            return;
        }
        let fd = types::Fd(listener.as_raw_fd());
        let entry = if self.accept.multishot {
            opcode::AcceptMulti::new(fd)
                .flags(libc::SOCK_CLOEXEC)
                .build()
        } else {
            opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
                .flags(libc::SOCK_CLOEXEC)
                .build()
        };
        let entry = entry.user_data(user_data(NO_SLOT, 0, Kind::Accept));
        // SAFETY: with a null address the accept writes no memory of ours;
        // the listener is dropped only once `armed` is false, after the
        // operation's last CQE.
        unsafe { self.push(entry) };
        self.accept.armed = true;
    }

    fn accepted(&mut self, res: i32, flags: u32) -> io::Result<()> {
        // Multishot: MORE set means the accept stays armed for the next one.
        if !cqueue::more(flags) {
            self.accept.armed = false;
        }
        if res >= 0 {
            // SAFETY: a successful accept's result is a new fd nobody owns.
            let stream = unsafe { TcpStream::from_raw_fd(res as RawFd) };
            self.accept.seen_ok = true;
            self.backoff.reset();
            self.add_conn(stream);
        } else {
            let e = io::Error::from_raw_os_error(-res);
            if -res == libc::ECANCELED {
                debug!("accept cancelled");
            } else if -res == libc::EINVAL && self.accept.multishot && !self.accept.seen_ok {
                info!("multishot accept refused (needs Linux 5.19): one accept at a time");
                self.accept.multishot = false;
            } else {
                match accept_policy(&e, &mut self.backoff) {
                    AcceptAction::Retry => {}
                    AcceptAction::Wait(delay) => {
                        self.counters.accept_backoffs += 1;
                        // The pending connections stay in the backlog; accepting
                        // again now would fail again at once. Stop the accept
                        // (cancel it if it is still armed) and re-arm it later.
                        self.accept.paused_until = Some(self.now + delay);
                        if self.accept.armed {
                            let target = user_data(NO_SLOT, 0, Kind::Accept);
                            if self.cancel(target) {
                                self.accept.armed = false;
                            }
                        }
                    }
                    AcceptAction::Fatal => return Err(e),
                }
            }
        }
        if !self.accept.armed {
            if self.deadline.is_some() {
                // Shutting down: no operation uses the listener any more.
                // Closing it makes the kernel reset the connections still in
                // its backlog: they were never accepted.
                self.listener = None;
            } else if self.accept.paused_until.is_none() {
                self.arm_accept();
            }
        }
        Ok(())
    }

    fn add_conn(&mut self, stream: TcpStream) {
        let peer = stream
            .peer_addr()
            .unwrap_or(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)));
        if self.deadline.is_some() {
            // Accepted in the race with the cancel at shutdown.
            Stats::inc(&self.stats.refused);
            info!("{peer}: refused: shutting down");
            return;
        }
        if self.open >= self.config.max_conns {
            Stats::inc(&self.stats.refused);
            warn!(
                "{peer}: refused: {} connections already open (--max-conns)",
                self.config.max_conns
            );
            return; // dropping `stream` closes it
        }
        if let Err(e) = stream.set_nodelay(true) {
            debug!("{peer}: TCP_NODELAY: {e}");
        }
        let now = self.now;
        let conn = Conn {
            stream,
            peer,
            decoder: Decoder::new(self.config.framing, self.config.max_frame),
            rbuf: BytesMut::new(),
            sending: BytesMut::new(),
            queued: BytesMut::new(),
            recv_inflight: false,
            recv_mode: RecvMode::OneShot,
            recv_stopping: false,
            send_inflight: false,
            eof: false,
            input_done: false,
            draining: false,
            owed: 0,
            fin_sent: false,
            error: None,
            unfinished: 0,
            last_rx: now,
            last_tx: now,
            closing: None,
            frames: 0,
            bytes: 0,
        };
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        self.slots[i as usize].conn = Some(conn);
        self.open += 1;
        Stats::inc(&self.stats.accepted);
        info!("{peer}: connected ({} open)", self.open);
        self.step(i);
    }

    // --- one connection -----------------------------------------------------

    fn conn(&mut self, i: u32) -> Option<(&mut Conn, u32)> {
        let slot = self.slots.get_mut(i as usize)?;
        let generation = slot.generation;
        slot.conn.as_mut().map(|c| (c, generation))
    }

    fn received(&mut self, i: u32, res: i32, flags: u32) {
        let Uring {
            slots,
            bufs,
            recv,
            spare,
            now,
            config,
            stats,
            counters,
            ..
        } = self;
        let now = *now;
        let Some(conn) = slots.get_mut(i as usize).and_then(|s| s.conn.as_mut()) else {
            return;
        };
        // F_MORE: a multishot recv stays armed and will post again. Without
        // it the recv is over, whatever the result (a one-shot recv, or a
        // multishot one ended by FIN, an error, ENOBUFS or our cancel).
        if !cqueue::more(flags) {
            conn.recv_inflight = false;
            conn.recv_stopping = false;
            if res > 0 && conn.recv_mode == RecvMode::MultishotBudget {
                counters.recv_budget_ends += 1; // `step` arms the next budget
            }
        }
        if conn.recv_mode == recv.mode && res >= 0 {
            recv.seen_ok = true;
        }
        let bid = cqueue::buffer_select(flags);
        let outcome = match (res, bid) {
            (n, Some(bid)) if n > 0 => {
                let n = n as usize;
                let result = conn.received(bufs.data(bid, n), now, spare, config, stats);
                bufs.recycle(bid); // the bytes are copied: back to the kernel
                counters.most_pending = counters.most_pending.max(conn.pending());
                trace!("{}: received {n} bytes", conn.peer);
                // Shutting down: once the bytes that were waiting when it
                // began have come in, input is done; what arrives later was
                // not "already received" and is owed no echo.
                if conn.draining {
                    conn.owed = conn.owed.saturating_sub(n);
                    if conn.owed == 0 {
                        conn.input_done = true;
                    }
                }
                result
            }
            (0, bid) => {
                if let Some(bid) = bid {
                    bufs.recycle(bid);
                }
                trace!("{}: received FIN", conn.peer);
                if conn.fin_sent {
                    conn.eof = true; // what was left unfinished is counted already
                    Ok(())
                } else {
                    conn.received_eof(now, spare, config, stats)
                }
            }
            (n, bid) => {
                if let Some(bid) = bid {
                    bufs.recycle(bid);
                }
                match -n {
                    libc::ENOBUFS => {
                        // Every provided buffer was taken when the data came
                        // (this ends a multishot recv too). `step` re-arms
                        // the recv; by the time the kernel sees it (the next
                        // submit) the buffers of this turn's completions are
                        // back: each is returned right after its bytes are
                        // copied, none is held across turns.
                        counters.enobufs += 1;
                        Ok(())
                    }
                    libc::EINVAL
                        if conn.recv_mode != RecvMode::OneShot
                            && (conn.recv_mode != recv.mode || !recv.seen_ok) =>
                    {
                        // An older kernel refuses the SQE: before 6.0 it
                        // knows no IORING_RECV_MULTISHOT, before the budget
                        // (6.18 has it) it rejects `optlen`. `step` re-arms
                        // the next mode down. (Other connections' recvs of
                        // the refused mode fail the same way: re-armed too.)
                        if conn.recv_mode == recv.mode {
                            recv.mode = recv.mode.fallback();
                            info!(
                                "{:?} recv refused by this kernel: {:?} from now on",
                                conn.recv_mode, recv.mode
                            );
                        }
                        Ok(())
                    }
                    libc::ECANCELED | libc::EINTR | libc::EAGAIN => Ok(()),
                    errno if n < 0 => Err(ConnError::Io(io::Error::from_raw_os_error(errno))),
                    _ => Err(ConnError::Io(io::Error::other(
                        "recv completed without a provided buffer",
                    ))),
                }
            }
        };
        if let Err(e) = outcome {
            self.close(i, End::Error(e));
        }
    }

    fn sent(&mut self, i: u32, res: i32) {
        let short_sends = &mut self.counters.short_sends;
        let spare = &mut self.spare;
        let Some(conn) = self.slots.get_mut(i as usize).and_then(|s| s.conn.as_mut()) else {
            return;
        };
        conn.send_inflight = false;
        let error = match res {
            n if n > 0 => {
                let n = (n as usize).min(conn.sending.len());
                if n < conn.sending.len() {
                    // A short send: the peer's window or our send buffer
                    // filled. The rest is sent by the next send, however
                    // many it takes.
                    *short_sends += 1;
                    trace!(
                        "{}: short send, {n} of {} bytes",
                        conn.peer,
                        conn.sending.len()
                    );
                }
                conn.sending.advance(n);
                conn.last_tx = self.now;
                if conn.sending.is_empty() {
                    // All sent: the buffer goes back to the loop's spares,
                    // for whichever connection echoes next.
                    spare.give(std::mem::take(&mut conn.sending));
                }
                None
            }
            0 => Some(io::Error::from(io::ErrorKind::WriteZero)),
            n if -n == libc::ECANCELED || -n == libc::EINTR || -n == libc::EAGAIN => None,
            n => Some(io::Error::from_raw_os_error(-n)),
        };
        if let Some(e) = error {
            self.close(i, End::Error(ConnError::Io(e)));
        }
    }

    /// Decide what connection `i` needs next and submit it. Called after
    /// every completion of its operations and every change of its state.
    fn step(&mut self, i: u32) {
        let max_pending = self.config.max_pending;
        let mode = self.recv.mode;
        let Some((conn, generation)) = self.conn(i) else {
            return;
        };
        if conn.closing.is_some() {
            if conn.inflight() == 0 {
                self.finalize(i);
            }
            return;
        }
        let fd = types::Fd(conn.stream.as_raw_fd());
        // 1. Output: one send at a time, from `sending` only.
        let mut send = None;
        if !conn.send_inflight {
            if conn.sending.is_empty() && !conn.queued.is_empty() {
                // `queued` becomes `sending`, buffer and all (no split, no
                // copy); `queued` takes the empty, unallocated one.
                std::mem::swap(&mut conn.sending, &mut conn.queued);
            }
            if !conn.sending.is_empty() {
                let len = u32::try_from(conn.sending.len()).unwrap_or(u32::MAX);
                send = Some(
                    opcode::Send::new(fd, conn.sending.as_ptr(), len)
                        .flags(libc::MSG_NOSIGNAL)
                        .build()
                        .user_data(user_data(i, generation, Kind::Send)),
                );
                conn.send_inflight = true;
            }
        }
        let pending = conn.pending();
        // 2. Finish: every echo sent after the peer's FIN, or at shutdown
        // after the receive queue was emptied: send our FIN.
        let mut close = None;
        if conn.fin_sent {
            if conn.eof {
                // The peer's FIN after ours, at shutdown: a clean close.
                close = Some(End::Shutdown {
                    unfinished: conn.unfinished,
                });
            }
        } else if (conn.eof || conn.input_done) && pending == 0 && !conn.send_inflight {
            conn.fin_sent = true;
            conn.unfinished = conn.rbuf.len();
            if conn.unfinished > 0 && !conn.eof {
                debug!(
                    "{}: {} bytes of an unfinished frame dropped",
                    conn.peer, conn.unfinished
                );
            }
            // shutdown(SHUT_WR) sends FIN after the bytes already queued in
            // the kernel. A direct syscall: it never blocks.
            if let Err(e) = conn.stream.shutdown(std::net::Shutdown::Write) {
                debug!("{}: shutdown(Write): {e}", conn.peer);
            }
            if conn.eof {
                close = Some(match conn.error.take() {
                    Some(e) => End::Error(ConnError::Frame(e)),
                    None => End::PeerClosed,
                });
            }
        }
        // 3. Input. After our FIN we receive only to discard, until the
        // peer's FIN (so that our close() never finds unread bytes and turns
        // into a reset that could destroy echoes still on their way).
        // Before it, while the shutdown drain is not over and fewer than
        // `--max-pending` echo bytes wait (backpressure).
        let want_input =
            !conn.eof && (conn.fin_sent || (!conn.input_done && pending < max_pending));
        let mut recv = false;
        let mut stop = None;
        if !conn.recv_inflight {
            recv = want_input;
        } else if !want_input && !conn.recv_stopping {
            // A multishot recv stays armed, so not re-arming is no pause:
            // cancel it. (A budgeted one normally ends by itself at the
            // limit first; it gets here when a receive completed an
            // unfinished frame whose earlier bytes were not in its budget.)
            // Completions it posted before the cancel reaches the kernel
            // (with DEFER_TASKRUN: our next io_uring_enter, which submits
            // before it runs completion work) are still processed and
            // echoed: their bytes left the socket and sit in provided
            // buffers. So `pending` overshoots `--max-pending` by at most
            // `buffer_size` bytes per completion already posted, and each of
            // those holds one provided buffer until we recycle it: at most
            // `buffers` x `buffer_size` (8 MiB, for every connection
            // together). In practice it is what the socket's receive queue
            // held when the recv last ran, since the kernel keeps receiving
            // while data and buffers last: without budgets, a client
            // flooding without reading overshot 256 KiB by about 750 KiB in
            // our tests, where a one-shot recv or a budget overshoots by
            // less than one buffer (8 KiB). Once the cancel's ECANCELED (a
            // completion without F_MORE) is in, the recv is re-armed when
            // the echoes drain. (A one-shot recv is never in flight here for
            // backpressure: it is armed only below the limit and completes
            // before its bytes are counted; at the end of the shutdown drain
            // it is cancelled all the same, as it would wait for new bytes.)
            stop = Some(conn.peer);
            conn.recv_stopping = true;
        }
        // A budgeted recv may take what `--max-pending` leaves (at least a
        // byte: it is armed only below the limit); after our FIN it
        // discards, unbounded (0).
        let budget = if conn.fin_sent {
            0
        } else {
            u32::try_from(max_pending.saturating_sub(pending)).unwrap_or(u32::MAX)
        };
        if recv {
            conn.recv_inflight = true;
            conn.recv_mode = mode;
        }
        if let Some(entry) = send {
            // SAFETY: the send reads `conn.sending`, which is neither read,
            // grown, split nor dropped while `send_inflight` is set (only
            // `sent` clears it, on the CQE). Its heap storage does not move
            // when the `Conn` moves within `slots`, and the `Conn` (with the
            // fd) is freed only when no operation is in flight (`finalize`),
            // or leaked (`teardown`).
            unsafe { self.push(entry) };
        }
        if recv {
            // The kernel picks a provided buffer (group BGID) when data is
            // there, and uses its whole size. Multishot: the same SQE keeps
            // doing so for every arrival, each posting a CQE with F_MORE.
            let entry = match mode {
                RecvMode::MultishotBudget => {
                    with_total_len(opcode::RecvMulti::new(fd, BGID).build(), budget)
                }
                RecvMode::Multishot => opcode::RecvMulti::new(fd, BGID).build(),
                // Length 0 and BUFFER_SELECT: one buffer, one completion.
                RecvMode::OneShot => opcode::Recv::new(fd, std::ptr::null_mut(), 0)
                    .buf_group(BGID)
                    .build()
                    .flags(squeue::Flags::BUFFER_SELECT),
            };
            let entry = entry.user_data(user_data(i, generation, Kind::Recv));
            // SAFETY: the recv names no memory of ours but the provided
            // buffers, which live as long as the ring (`Uring::bufs`, dropped
            // after `Uring::ring`, or leaked). The fd stays open until the
            // last CQE (for a multishot recv, the one without F_MORE):
            // `finalize` closes it only with nothing in flight.
            unsafe { self.push(entry) };
            self.counters.recvs += 1;
        }
        if let Some(peer) = stop {
            if pending >= max_pending {
                self.counters.recv_pauses += 1;
                trace!("{peer}: {pending} echo bytes wait: pausing the recv");
            }
            self.stop_recv(i, generation);
        }
        if let Some(end) = close {
            self.close(i, end);
        }
    }

    /// Cancel connection `i`'s recv. Its last CQE (ECANCELED, or whatever
    /// ended it first) clears `recv_inflight`, unless the SQE was still in
    /// our backlog: then it is simply dropped and no CQE will come.
    fn stop_recv(&mut self, i: u32, generation: u32) {
        if self.cancel(user_data(i, generation, Kind::Recv))
            && let Some((conn, _)) = self.conn(i)
        {
            conn.recv_inflight = false;
            conn.recv_stopping = false;
        }
    }

    /// Begin closing connection `i`: cancel what it has in flight, and free
    /// it once the last of those operations has completed.
    fn close(&mut self, i: u32, end: End) {
        let Some((conn, generation)) = self.conn(i) else {
            return;
        };
        if conn.closing.is_some() {
            return;
        }
        conn.closing = Some(end);
        let (recv, send) = (
            conn.recv_inflight && !conn.recv_stopping,
            conn.send_inflight,
        );
        if recv {
            self.stop_recv(i, generation);
        }
        if send
            && self.cancel(user_data(i, generation, Kind::Send))
            && let Some((conn, _)) = self.conn(i)
        {
            conn.send_inflight = false;
        }
        if self.conn(i).is_some_and(|(c, _)| c.inflight() == 0) {
            self.finalize(i);
        }
    }

    /// Nothing of connection `i` is in flight: close its socket, log its one
    /// closing line, free its slot under a new generation.
    fn finalize(&mut self, i: u32) {
        let Some(slot) = self.slots.get_mut(i as usize) else {
            return;
        };
        let Some(conn) = slot.conn.take() else {
            return;
        };
        slot.generation = slot.generation.wrapping_add(1) & GEN_MASK;
        self.free.push(i);
        self.open -= 1;
        let end = conn.closing.unwrap_or(End::PeerClosed);
        // close(2). After our FIN and the peer's, a clean close; at a
        // timeout or the deadline, unread bytes make it a reset.
        drop(conn.stream);
        log_close(&conn.peer, conn.frames, conn.bytes, &end, &self.stats);
    }

    // --- timers and shutdown ------------------------------------------------

    fn timers(&mut self, now: Instant) {
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
            if conn.closing.is_some() {
                continue;
            }
            if conn.pending() > 0 {
                if now.duration_since(conn.last_tx) >= stall {
                    expired.push((i as u32, End::Stalled(stall)));
                }
            } else if let Some(idle) = idle
                && now.duration_since(conn.last_rx) >= idle
            {
                expired.push((i as u32, End::Idle(idle)));
            }
        }
        for (i, end) in expired {
            self.close(i, end);
        }
    }

    fn arm_wake(&mut self) {
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
    fn begin_shutdown(&mut self) {
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
            conn.draining = true;
            if !conn.eof && !conn.fin_sent {
                // What is already here: the kernel's receive queue, counted
                // now. A completion may say how many bytes a recv took; it
                // cannot say "this was all there was" (a recv asked not to
                // wait, MSG_DONTWAIT, still waits in io_uring), so ask.
                conn.owed = bytes_waiting(&conn.stream);
                // Nothing waits: input is done. `step` sends our FIN once the
                // echoes are out (the recv then stays, to discard until the
                // peer's FIN), or meanwhile cancels the recv, which would
                // wait for *new* bytes. (If it takes bytes before the cancel
                // lands, they are echoed all the same.)
                conn.input_done = conn.owed == 0;
            }
            self.step(i);
        }
    }

    /// After the loop: cancel anything still in flight and wait (briefly)
    /// for it, so that every buffer can be freed. What cannot be confirmed
    /// is leaked rather than freed under the kernel.
    fn teardown(&mut self) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips_and_generations_wrap() {
        for (slot, generation, kind) in [
            (0, 0, Kind::Recv),
            (7, GEN_MASK, Kind::Send),
            (NO_SLOT, 0, Kind::Accept),
            (123_456, 99, Kind::Cancel),
        ] {
            let u = user_data(slot, generation, kind);
            assert_eq!(parse_user_data(u), (slot, generation, Some(kind)));
        }
        // A generation past 24 bits wraps, as the slot's counter does.
        assert_eq!(parse_user_data(user_data(1, GEN_MASK + 1, Kind::Recv)).1, 0);
        assert_eq!(parse_user_data(0x42).2, None);
    }

    #[test]
    fn each_refusal_is_one_line_naming_its_cause() {
        let err = |n| io::Error::from_raw_os_error(n);
        let cases = [
            (err(libc::EPERM), Some("2"), "io_uring_disabled = 2"),
            (err(libc::EPERM), Some("1"), "io_uring_group"),
            (err(libc::EPERM), Some("0"), "seccomp"),
            (err(libc::EPERM), None, "seccomp"),
            (err(libc::ENOSYS), None, "ENOSYS"),
            (err(libc::EINVAL), None, "5.19"),
            (err(libc::ENOMEM), Some("0"), "Cannot allocate memory"),
        ];
        for (e, disabled, needle) in cases {
            let line = explain("io_uring_setup", &e, disabled, "4.19.0");
            assert!(line.starts_with("io_uring is unavailable: "), "{line}");
            assert!(line.contains(needle), "{needle}: {line}");
            assert!(!line.contains('\n'), "{line}");
        }
    }

    /// The u32 at byte `SQE_OPTLEN` of an entry, read as `with_total_len`
    /// writes it.
    fn sqe_u32_at_optlen(entry: &squeue::Entry) -> u32 {
        // SAFETY: reads 4 bytes inside the 64-byte entry (size asserted).
        unsafe {
            (entry as *const squeue::Entry)
                .cast::<u8>()
                .add(SQE_OPTLEN)
                .cast::<u32>()
                .read_unaligned()
        }
    }

    #[test]
    fn the_budget_lands_in_the_sqe_field_the_kernel_reads() {
        // The crate writes `file_index` (the same union as `optlen`) for an
        // accept into a fixed slot: slot 41 is 42 to the kernel. If the
        // offset were wrong, this would read something else.
        let slot = types::DestinationSlot::try_from_slot_target(41).unwrap();
        let accept = opcode::Accept::new(types::Fd(3), std::ptr::null_mut(), std::ptr::null_mut())
            .file_index(Some(slot))
            .build();
        assert_eq!(sqe_u32_at_optlen(&accept), 42);
        let recv = opcode::RecvMulti::new(types::Fd(3), BGID).build();
        assert_eq!(sqe_u32_at_optlen(&recv), 0, "no budget: no limit");
        let budgeted = with_total_len(recv, 262_144).user_data(7);
        assert_eq!(sqe_u32_at_optlen(&budgeted), 262_144);
        assert_eq!(budgeted.get_user_data(), 7, "nothing else moved");
    }

    #[test]
    fn spare_echo_buffers_come_back_whole_and_stay_bounded() {
        let mut spare = Spare::default();
        let mut buf = spare.take();
        assert_eq!(
            buf.capacity(),
            0,
            "nothing spare yet: a new, unallocated buffer"
        );
        buf.extend_from_slice(&[7; 100]);
        let (at, room) = (buf.as_ptr(), buf.capacity());
        buf.advance(60); // two sends, the first one short
        buf.advance(40);
        spare.give(buf);
        let again = spare.take();
        assert_eq!(again.as_ptr(), at, "the same allocation, from its start");
        assert_eq!(again.capacity(), room);
        assert!(again.is_empty());
        // Large buffers are freed, not kept; so are those past the count.
        spare.give(BytesMut::with_capacity(SPARE_CAPACITY + 1));
        assert!(spare.out.is_empty());
        for _ in 0..SPARE_BUFFERS + 5 {
            spare.give(BytesMut::with_capacity(64));
        }
        assert_eq!(spare.out.len(), SPARE_BUFFERS);
    }

    #[test]
    fn buffer_ring_hands_out_every_buffer_and_takes_them_back() {
        let mut ring = BufRing::new(4, 64).unwrap();
        // SAFETY: reading entries we wrote, with no kernel attached.
        let entry = |ring: &BufRing, i: usize| unsafe {
            let e = ring.entries.as_ptr().add(i);
            ((*e).addr, (*e).len, (*e).bid)
        };
        let base = ring.mem.as_ptr() as u64;
        for i in 0..4 {
            assert_eq!(entry(&ring, i), (base + 64 * i as u64, 64, i as u16));
        }
        assert_eq!(ring.tail, 4);
        ring.recycle(2); // lands in slot 4 & 3 = 0, the tail moves on
        assert_eq!(entry(&ring, 0), (base + 128, 64, 2));
        assert_eq!(ring.tail, 5);
        assert!(BufRing::new(3, 64).is_err(), "not a power of two");
    }
}
