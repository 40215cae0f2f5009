//! Completion I/O: one thread, one io_uring, and every socket operation
//! handed to the kernel as a request that comes back finished. **Start
//! here**: this file is the loop (`serve`: submit, wait, reap) and what one
//! connection does next (`step`). Read it beside `../event_loop/mod.rs`,
//! which drives the same [`Echo`] on readiness (epoll through mio): the
//! per-connection rules live once, in `common::echo`; what differs is how
//! the loop waits.
//!
//! Run with (two terminals):
//!
//! ```text
//! RUST_LOG=trace cargo run -p async-server -- server --model uring
//! nc 127.0.0.1 7004          # type lines; the trace shows each completion
//! ```
//!
//! The rest of the model, a file each: `setup.rs` (the ring, and why the
//! kernel refused it), `buffers.rs` (the provided-buffer ring), `submit.rs`
//! (`user_data`, `io_uring_enter`, a full submission ring), `accept.rs`,
//! `timers.rs` (the sweep and the shutdown drain), `options.rs` (sizes,
//! `--recv`, counters). The smallest version of all this is
//! `examples/bare_uring_echo.rs`; the README's "How the io_uring loop
//! works" is the long explanation (readiness against completion, who owns a
//! buffer when, multishot recv and its byte budget, shutdown).
//!
//! The one rule behind every `unsafe` here: from the moment an SQE is
//! submitted until its last CQE arrives, the kernel may use the memory and
//! the fd it names, so neither is freed, moved or closed before then.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::conn::{End, log_close};
use common::echo::{Ctx, Echo, Finish, Phase, Spare};
use common::net::Backoff;
use common::{ConnError, ServerConfig, Shutdown, Stats};
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use log::{debug, error, info, trace, warn};

use crate::{Config, Listener, Offload, Report};
use accept::AcceptState;
use buffers::{BGID, BufRing};
use setup::with_total_len;
use submit::{GEN_MASK, Kind, parse_user_data, user_data};
use timers::CUT_WAIT;

mod accept;
mod buffers;
mod options;
mod setup;
mod submit;
mod timers;

pub use options::{RecvMode, RingCounters, RingOptions};
pub use setup::probe;

/// Serve `listener` on the calling thread until `shutdown` and its
/// `--grace` are over, with the ring `config.uring` describes. Fails at
/// once, with [`probe`]'s one-line reason, where the kernel refuses
/// io_uring. TCP only; `--work` runs inline.
pub fn run(listener: Listener, config: Config, shutdown: Shutdown) -> io::Result<Report> {
    if config.offload == Offload::Rayon && config.common.work > 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the uring model runs --work inline (one thread by design); --offload rayon is for --model tokio",
        ));
    }
    let Listener::Tcp(listener) = listener else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "unix: sockets are served by --model event-loop and tokio, not uring",
        ));
    };
    let mut server = Uring::new(listener, config.common, shutdown, &config.uring)?;
    let stats = server.stats.clone();
    server.arm_wake();
    server.arm_accept();
    let result = server.serve();
    if let Err(e) = &result {
        error!("uring: {e}; stopping");
    }
    server.teardown();
    server.counters.recv_mode = server.recv.mode;
    server.counters.log(Stats::get(&stats.frames));
    let ring = server.counters.clone();
    result.map(|()| Report {
        stats,
        per_loop: Vec::new(),
        ring: Some(ring),
    })
}

struct RecvState {
    /// The recv to arm; one step down after an old kernel refused it.
    mode: RecvMode,
    /// A recv of `mode` has completed without EINVAL: the kernel has them.
    seen_ok: bool,
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
    /// Buffers lent to whichever connection is busy (the decode scratch,
    /// spare echo buffers).
    spare: Spare,
    /// Read once per turn, after `io_uring_enter` returns.
    now: Instant,
    sweep_every: Duration,
    next_sweep: Instant,
    deadline: Option<Instant>,
    cut_done: bool,
    /// A fatal accept error: the loop drains, then ends with it.
    fatal: Option<io::Error>,
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

/// One connection: its socket, its [`Echo`], and which of its operations
/// the kernel holds.
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    echo: Echo,
    recv: Recv,
    send: Send,
    /// Closing: its operations are being cancelled; freed after the last.
    closing: Option<End>,
}

/// The connection's recv, as the kernel holds it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Recv {
    Idle,
    /// In the kernel (a multishot one until a completion without
    /// `IORING_CQE_F_MORE`), or done and not reaped.
    Armed(RecvMode),
    /// A cancel is on its way (backpressure, or the drain is over); until
    /// its last CQE the recv is still in the kernel.
    Cancelling(RecvMode),
}

/// The connection's send: at most one in flight, reading the bytes
/// `Echo::to_send` gave, which nothing touches until `Echo::sent`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Send {
    Idle,
    InFlight,
}

impl Conn {
    fn inflight(&self) -> usize {
        usize::from(self.recv != Recv::Idle) + usize::from(self.send == Send::InFlight)
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
                    return self.fatal.take().map_or(Ok(()), Err);
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
                    // `teardown` deals with what is left.
                    return self.fatal.take().map_or(Ok(()), Err);
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

    // --- one connection -----------------------------------------------------

    fn conn(&mut self, i: u32) -> Option<(&mut Conn, u32)> {
        let slot = self.slots.get_mut(i as usize)?;
        let generation = slot.generation;
        slot.conn.as_mut().map(|c| (c, generation))
    }

    /// A recv's completion: bytes (in a provided buffer), the peer's FIN, or
    /// why the recv ended.
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
        let Some(conn) = slots.get_mut(i as usize).and_then(|s| s.conn.as_mut()) else {
            return;
        };
        let mode = match conn.recv {
            Recv::Armed(mode) | Recv::Cancelling(mode) => mode,
            Recv::Idle => recv.mode,
        };
        // F_MORE: a multishot recv stays armed and will post again. Without
        // it the recv is over, whatever the result (a one-shot recv, or a
        // multishot one ended by FIN, an error, ENOBUFS, its budget or our
        // cancel); `step` decides whether to arm the next.
        if !cqueue::more(flags) {
            conn.recv = Recv::Idle;
            if res > 0 && mode == RecvMode::MultishotBudget {
                counters.recv_budget_ends += 1;
            }
        }
        if mode == recv.mode && res >= 0 {
            recv.seen_ok = true;
        }
        let mut cx = Ctx {
            now: *now,
            config,
            stats,
            spare,
            peer: &conn.peer,
        };
        let bid = cqueue::buffer_select(flags);
        let outcome = match (res, bid) {
            (n, Some(bid)) if n > 0 => {
                let result = conn.echo.received(bufs.data(bid, n as usize), &mut cx);
                bufs.recycle(bid); // the bytes are copied: back to the kernel
                counters.most_pending = counters.most_pending.max(conn.echo.pending());
                trace!("{}: received {n} bytes", conn.peer);
                result
            }
            (0, bid) => {
                if let Some(bid) = bid {
                    bufs.recycle(bid);
                }
                trace!("{}: received FIN", conn.peer);
                conn.echo.received_eof(&mut cx)
            }
            (n, bid) => {
                if let Some(bid) = bid {
                    bufs.recycle(bid);
                }
                match -n {
                    // Every provided buffer was taken when the data came.
                    // `step` re-arms; by the next submit this turn's buffers
                    // are back (each returns right after its copy).
                    libc::ENOBUFS => {
                        counters.enobufs += 1;
                        Ok(())
                    }
                    // An older kernel refuses the SQE: before 6.0 it knows
                    // no multishot recv, before 6.18 no budget (`optlen`).
                    // `step` re-arms the next mode down.
                    libc::EINVAL
                        if mode != RecvMode::OneShot && (mode != recv.mode || !recv.seen_ok) =>
                    {
                        if mode == recv.mode {
                            recv.mode = recv.mode.fallback();
                            info!(
                                "{mode:?} recv refused by this kernel: {:?} from now on",
                                recv.mode
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

    /// A send's completion: the kernel took `res` bytes, perhaps fewer than
    /// asked (a short send: the rest goes in the next send).
    fn sent(&mut self, i: u32, res: i32) {
        let (now, spare) = (self.now, &mut self.spare);
        let short_sends = &mut self.counters.short_sends;
        let Some(conn) = self.slots.get_mut(i as usize).and_then(|s| s.conn.as_mut()) else {
            return;
        };
        conn.send = Send::Idle;
        let error = match res {
            n if n > 0 => {
                let asked = conn.echo.sending();
                if (n as usize) < asked {
                    *short_sends += 1;
                    trace!("{}: short send, {n} of {asked} bytes", conn.peer);
                }
                conn.echo.sent(n as usize, now, spare);
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

    /// Decide what connection `i` needs next and submit it: a send, our
    /// FIN, a recv (or its cancel). Called after every completion of its
    /// operations and every change of its state.
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
        // 1. Output: one send at a time.
        let mut send = None;
        if conn.send == Send::Idle {
            let out = conn.echo.to_send();
            if !out.is_empty() {
                let len = u32::try_from(out.len()).unwrap_or(u32::MAX);
                send = Some(
                    opcode::Send::new(fd, out.as_ptr(), len)
                        .flags(libc::MSG_NOSIGNAL)
                        .build()
                        .user_data(user_data(i, generation, Kind::Send)),
                );
                conn.send = Send::InFlight;
            }
        }
        // 2. Our FIN, once every echo owed is out: `shutdown(SHUT_WR)` is a
        // plain syscall that never blocks, sent after the queued bytes.
        let mut close = None;
        let fin = match conn.echo.finish() {
            Finish::No => false,
            Finish::Fin => true,
            Finish::FinAndClose(end) => {
                close = Some(end);
                true
            }
            Finish::Close(end) => {
                close = Some(end);
                false
            }
        };
        if fin && let Err(e) = conn.stream.shutdown(std::net::Shutdown::Write) {
            debug!("{}: shutdown(Write): {e}", conn.peer);
        }
        // 3. Input, below `--max-pending` (backpressure), and after our FIN
        // only to discard until the peer's FIN (so our close() never finds
        // unread bytes and resets echoes still on their way).
        let want_input = conn.echo.wants_input(max_pending);
        let pending = conn.echo.pending();
        let mut recv = false;
        let mut stop = None;
        match conn.recv {
            Recv::Idle => recv = want_input,
            // A multishot recv stays armed, so not re-arming is no pause:
            // cancel it. What it posts before the cancel lands is still
            // echoed, so `pending` overshoots the limit by up to the buffers
            // already filled (the README, "Backpressure on a multishot recv").
            Recv::Armed(armed) if !want_input => {
                stop = Some(conn.peer);
                conn.recv = Recv::Cancelling(armed);
            }
            Recv::Armed(_) | Recv::Cancelling(_) => {}
        }
        // A budgeted recv may take what `--max-pending` leaves (at least a
        // byte: it is armed only below the limit); after our FIN it
        // discards, unbounded (0).
        let budget = if let Phase::FinSent { .. } = conn.echo.phase() {
            0
        } else {
            u32::try_from(max_pending.saturating_sub(pending)).unwrap_or(u32::MAX)
        };
        if recv {
            conn.recv = Recv::Armed(mode);
        }
        if let Some(entry) = send {
            // SAFETY: the send reads the echo's `sending` bytes, which
            // `Echo` neither reads, grows, nor frees until `sent` (called
            // on this send's CQE); their heap storage does not move when the
            // `Conn` moves within `slots`, and the `Conn` (with the fd) is
            // freed only with nothing in flight (`finalize`), or leaked
            // (`teardown`).
            unsafe { self.push(entry) };
        }
        if recv {
            // The kernel picks a provided buffer (group BGID) when data is
            // there. Multishot: the same SQE does so at every arrival.
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
            // last CQE: `finalize` closes it only with nothing in flight.
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
    /// ended it first) makes it `Idle`, unless the SQE was still in our
    /// backlog: then it is simply dropped and no CQE will come.
    fn stop_recv(&mut self, i: u32, generation: u32) {
        if self.cancel(user_data(i, generation, Kind::Recv))
            && let Some((conn, _)) = self.conn(i)
        {
            conn.recv = Recv::Idle;
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
            matches!(conn.recv, Recv::Armed(_)),
            conn.send == Send::InFlight,
        );
        if recv {
            self.stop_recv(i, generation);
        }
        if send
            && self.cancel(user_data(i, generation, Kind::Send))
            && let Some((conn, _)) = self.conn(i)
        {
            conn.send = Send::Idle;
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
        let (frames, bytes) = conn.echo.tally();
        log_close(&conn.peer, frames, bytes, &end, &self.stats);
    }
}
