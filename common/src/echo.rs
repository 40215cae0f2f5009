//! One connection's echo as a state machine with no I/O in it: bytes in,
//! echoes out, and the contract's rules (backpressure at `--max-pending`,
//! the idle and stall clocks, the shutdown drain). The event loop (readiness),
//! the io_uring loop (completion) and the blocking servers all drive this
//! one [`Echo`]; what differs between them is only how they wait for the
//! socket, which is the lesson.
//!
//! Nothing here reads a clock or a socket: every method is told `now` and
//! the bytes, so the unit tests below run the rules with an invented clock.
//! Try it: `cargo test -p common echo::`.
//!
//! A connection's life, in [`Phase`]s:
//!
//! ```text
//! Open ──peer's FIN──────────────────────► PeerEof ──echoes out──► FIN, close
//!  │
//!  └─shutdown─► Draining ──owed bytes in──► InputDone ──echoes out──► FIN ─► FinSent
//!                                                        (discard until the peer's FIN, close)
//! ```

use std::fmt;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

use crate::ServerConfig;
use crate::conn::End;
use crate::framing::{ConnError, Decoder, FrameError, encode};
use crate::stats::Stats;

/// Where a connection is in its life (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Reading and echoing.
    Open,
    /// Shutdown began: echo what the kernel had already received, no more.
    /// `owed`: the bytes still to come, where the loop could count them
    /// (`FIONREAD`); `None` where it reads until the socket says `WouldBlock`
    /// instead ([`Echo::input_exhausted`]).
    Draining { owed: Option<usize> },
    /// Shutdown: everything owed was received; FIN once the echoes are out.
    InputDone,
    /// The peer's FIN arrived; FIN and close once the echoes are out.
    PeerEof,
    /// Shutdown: our FIN is sent; what arrives is discarded until the
    /// peer's FIN (closing on unread bytes would send a reset that can
    /// destroy echoes still on their way).
    FinSent { unfinished: usize },
    /// Shutdown: the peer's FIN came after ours; close.
    Done { unfinished: usize },
}

/// What the loop must do after [`Echo::finish`].
#[derive(Debug)]
pub enum Finish {
    /// Nothing yet: echoes are still owed, or input still comes.
    No,
    /// `shutdown(SHUT_WR)`, then keep receiving (to discard) until the
    /// peer's FIN.
    Fin,
    /// `shutdown(SHUT_WR)`, then close with this end.
    FinAndClose(End),
    /// Close with this end (our FIN went out earlier).
    Close(End),
}

/// Buffers one loop lends to whichever of its connections is busy, so that
/// a busy connection allocates nothing per echo and an idle one holds no
/// buffer at all. One per thread that drives connections.
#[derive(Debug, Default)]
pub struct Spare {
    /// Received bytes are decoded here when the connection has no
    /// unfinished frame. Grows to the largest receive plus, in `length`
    /// framing, a frame the decoder reserved room for: at most
    /// `--max-frame` and a read, once per loop.
    decode: BytesMut,
    /// Emptied echo buffers, handed to the next connection that echoes.
    out: Vec<BytesMut>,
}

/// At most this many spare echo buffers of at most `SPARE_CAPACITY` bytes
/// each are kept: 4 MiB at worst per loop.
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
        // The writes `advance`d the buffer's start past what they took. With
        // nothing left in it, asking for more room than it shows moves the
        // start back (no allocation, no copy): all of it is usable again.
        let _ = buf.try_reclaim(buf.capacity() + 1);
        let keep = (1..=SPARE_CAPACITY).contains(&buf.capacity());
        if keep && self.out.len() < SPARE_BUFFERS {
            self.out.push(buf);
        }
    }

    /// Spare echo buffers held now (tests).
    pub fn kept(&self) -> usize {
        self.out.len()
    }
}

/// What every call that may echo needs besides the bytes.
#[allow(missing_debug_implementations)] // `peer` is only `Display`
pub struct Ctx<'a> {
    pub now: Instant,
    pub config: &'a ServerConfig,
    pub stats: &'a Stats,
    pub spare: &'a mut Spare,
    /// Names the client in the per-frame `debug` line.
    pub peer: &'a dyn fmt::Display,
}

/// One connection's echo state. See the module docs.
#[derive(Debug)]
pub struct Echo {
    decoder: Decoder,
    /// Received bytes not yet a whole frame; empty (unallocated) between
    /// frames.
    partial: BytesMut,
    /// The bytes of the write in progress. A completion loop lends them to
    /// the kernel: nothing here touches them between [`Echo::to_send`] and
    /// [`Echo::sent`].
    sending: BytesMut,
    /// Echoes queued behind `sending`; they become `sending` by a swap.
    queued: BytesMut,
    phase: Phase,
    /// A truncated last frame at the peer's FIN, reported at close.
    error: Option<FrameError>,
    /// When a byte last arrived (`--idle-timeout`).
    last_rx: Instant,
    /// While echoes are pending: when the peer last took some, or when
    /// they started waiting (`--stall-timeout`). A blocked write is not
    /// progress.
    stall_since: Option<Instant>,
    frames: u64,
    bytes: u64,
}

impl Echo {
    pub fn new(config: &ServerConfig, now: Instant) -> Echo {
        Echo {
            decoder: Decoder::new(config.framing, config.max_frame),
            partial: BytesMut::new(),
            sending: BytesMut::new(),
            queued: BytesMut::new(),
            phase: Phase::Open,
            error: None,
            last_rx: now,
            stall_since: None,
            frames: 0,
            bytes: 0,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Echo bytes not yet taken by the kernel.
    pub fn pending(&self) -> usize {
        self.sending.len() + self.queued.len()
    }

    /// Bytes of the write in progress ([`Echo::to_send`]'s last answer,
    /// less what [`Echo::sent`] took).
    pub fn sending(&self) -> usize {
        self.sending.len()
    }

    /// Frames and payload bytes echoed so far (queued counts).
    pub fn tally(&self) -> (u64, u64) {
        (self.frames, self.bytes)
    }

    /// Bytes of an unfinished frame held now.
    pub fn unfinished(&self) -> usize {
        self.partial.len()
    }

    /// Should the loop take more input now? While open or draining, below
    /// `--max-pending` (backpressure: a peer that does not read stops being
    /// read); after our FIN, always (to discard); otherwise never.
    pub fn wants_input(&self, max_pending: usize) -> bool {
        match self.phase {
            Phase::Open | Phase::Draining { .. } => self.pending() < max_pending,
            Phase::FinSent { .. } => true,
            Phase::InputDone | Phase::PeerEof | Phase::Done { .. } => false,
        }
    }

    /// Bytes a loop copied out of its own buffer (a readiness loop's read
    /// buffer, a completion's provided buffer): decode and echo every whole
    /// frame. The common case (no unfinished frame) decodes in the loop's
    /// one scratch buffer; only an unfinished frame's tail is copied into
    /// the connection's own.
    pub fn received(&mut self, data: &[u8], cx: &mut Ctx<'_>) -> Result<(), ConnError> {
        self.last_rx = cx.now;
        if let Phase::FinSent { .. } = self.phase {
            log::trace!("{}: discarded {} bytes after our FIN", cx.peer, data.len());
            return Ok(());
        }
        let in_scratch = self.partial.is_empty();
        let mut buf = if in_scratch {
            std::mem::take(&mut cx.spare.decode)
        } else {
            std::mem::take(&mut self.partial)
        };
        buf.extend_from_slice(data);
        let result = self.echo_frames(&mut buf, cx);
        if result.is_err() {
            buf.clear(); // closing: nothing to keep
        }
        if in_scratch {
            if !buf.is_empty() {
                self.partial = BytesMut::from(&buf[..]);
                buf.clear();
            }
            cx.spare.decode = buf;
        } else if !buf.is_empty() {
            self.partial = buf;
        } // else dropped: an idle connection holds no buffer
        self.drained(data.len());
        result
    }

    /// The connection's own input buffer, for a loop that reads straight
    /// into it (the blocking servers: one thread per connection, so no
    /// shared scratch to save). Follow with [`Echo::decode_input`].
    pub fn input_buf(&mut self) -> &mut BytesMut {
        &mut self.partial
    }

    /// `n` bytes were read into [`Echo::input_buf`]: echo its whole frames.
    pub fn decode_input(&mut self, n: usize, cx: &mut Ctx<'_>) -> Result<(), ConnError> {
        self.last_rx = cx.now;
        let mut buf = std::mem::take(&mut self.partial);
        if let Phase::FinSent { .. } = self.phase {
            buf.clear();
        }
        let result = self.echo_frames(&mut buf, cx);
        self.partial = buf;
        self.drained(n);
        result
    }

    /// Shutdown accounting: `n` of the bytes owed have come in.
    fn drained(&mut self, n: usize) {
        if let Phase::Draining { owed: Some(owed) } = self.phase {
            let owed = owed.saturating_sub(n);
            self.phase = if owed == 0 {
                Phase::InputDone
            } else {
                Phase::Draining { owed: Some(owed) }
            };
        }
    }

    fn echo_frames(&mut self, buf: &mut BytesMut, cx: &mut Ctx<'_>) -> Result<(), ConnError> {
        while let Some(frame) = self.decoder.decode(buf)? {
            self.echo(&frame, cx)?;
        }
        Ok(())
    }

    /// The peer's FIN (a read of 0 bytes): the last frame, or an unfinished
    /// one to report once the echoes owed before it are out.
    pub fn received_eof(&mut self, cx: &mut Ctx<'_>) -> Result<(), ConnError> {
        if let Phase::FinSent { unfinished } | Phase::Done { unfinished } = self.phase {
            // The unfinished frame was counted when our FIN went.
            self.phase = Phase::Done { unfinished };
            return Ok(());
        }
        self.phase = Phase::PeerEof;
        let mut buf = std::mem::take(&mut self.partial);
        loop {
            match self.decoder.decode_eof(&mut buf) {
                Ok(Some(frame)) => {
                    if let Err(e) = self.echo(&frame, cx) {
                        break Err(e);
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => {
                    self.error = Some(e);
                    break Ok(());
                }
            }
        }
    }

    /// `--work`, then queue the frame's echo.
    fn echo(&mut self, frame: &[u8], cx: &mut Ctx<'_>) -> Result<(), ConnError> {
        log::debug!("{}: frame of {} bytes", cx.peer, frame.len());
        if cx.config.work > 0 {
            // Inline: on a loop, every client of the loop waits for this.
            std::hint::black_box(crate::work::work(frame, cx.config.work));
        }
        if self.pending() == 0 {
            self.stall_since = Some(cx.now); // the stall clock starts
        }
        if self.queued.capacity() == 0 {
            self.queued = cx.spare.take();
        }
        encode(cx.config.framing, frame, &mut self.queued)?;
        cx.stats.add_frame(frame.len());
        self.frames += 1;
        self.bytes += frame.len() as u64;
        Ok(())
    }

    /// The bytes to write next (empty: nothing to write). The queued echoes
    /// become `sending` by a swap (no copy). A completion loop must not
    /// call this again before the write's [`Echo::sent`].
    pub fn to_send(&mut self) -> &[u8] {
        if self.sending.is_empty() && !self.queued.is_empty() {
            std::mem::swap(&mut self.sending, &mut self.queued);
        }
        &self.sending
    }

    /// The kernel took `n` bytes of [`Echo::to_send`]'s (a short write
    /// takes fewer: the rest is sent next, however many writes it takes).
    /// Any byte taken restarts the stall clock.
    pub fn sent(&mut self, n: usize, now: Instant, spare: &mut Spare) {
        let n = n.min(self.sending.len());
        if n == 0 {
            return;
        }
        self.sending.advance(n);
        if self.sending.is_empty() {
            spare.give(std::mem::take(&mut self.sending));
        }
        self.stall_since = (self.pending() > 0).then_some(now);
    }

    /// Shutdown begins. `owed`: the bytes the kernel holds for us now, where
    /// the loop can count them; `None` to read until `WouldBlock`.
    pub fn begin_drain(&mut self, owed: Option<usize>) {
        if self.phase == Phase::Open {
            self.phase = match owed {
                Some(0) => Phase::InputDone,
                owed => Phase::Draining { owed },
            };
        }
    }

    /// Draining, a non-blocking read said `WouldBlock`: the kernel's
    /// receive queue is empty, so everything sent before now was received.
    pub fn input_exhausted(&mut self) {
        if let Phase::Draining { .. } = self.phase {
            self.phase = Phase::InputDone;
        }
    }

    /// Is it time for our FIN, or to close? Call after every change; it
    /// moves the phase on when it says `Fin`.
    pub fn finish(&mut self) -> Finish {
        let flushed = self.pending() == 0;
        match self.phase {
            Phase::PeerEof if flushed => {
                let end = match self.error.take() {
                    Some(e) => End::from(e),
                    None => End::PeerClosed,
                };
                Finish::FinAndClose(end)
            }
            Phase::InputDone if flushed => {
                let unfinished = std::mem::take(&mut self.partial).len();
                self.phase = Phase::FinSent { unfinished };
                Finish::Fin
            }
            Phase::Done { unfinished } => Finish::Close(End::Shutdown { unfinished }),
            _ => Finish::No,
        }
    }

    /// The one rule for both clocks, checked by each loop's sweep:
    /// **stall** when echoes have waited `--stall-timeout` without the
    /// peer taking a byte; **idle** when, owing nothing and still reading,
    /// nothing arrived for `idle` (`--idle-timeout`; the loops pass `None`
    /// during the shutdown drain, which `--grace` bounds instead).
    pub fn timed_out(&self, now: Instant, idle: Option<Duration>, stall: Duration) -> Option<End> {
        if let Some(since) = self.stall_since
            && now.saturating_duration_since(since) >= stall
        {
            return Some(End::Stalled(stall));
        }
        let idle = idle?;
        let waiting = self.phase == Phase::Open && self.pending() == 0;
        (waiting && now.saturating_duration_since(self.last_rx) >= idle).then_some(End::Idle(idle))
    }

    /// When the stall clock fires, for a blocking loop's write timeout:
    /// `None` while nothing is pending.
    pub fn stall_deadline(&self, stall: Duration) -> Option<Instant> {
        self.stall_since.map(|since| since + stall)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::Framing;

    struct Rig {
        config: ServerConfig,
        stats: Stats,
        spare: Spare,
        now: Instant,
    }

    impl Rig {
        fn new(framing: Framing) -> Rig {
            Rig {
                config: ServerConfig {
                    framing,
                    max_frame: 16,
                    max_pending: 32,
                    idle_timeout: Some(Duration::from_secs(30)),
                    stall_timeout: Duration::from_secs(10),
                    ..ServerConfig::default()
                },
                stats: Stats::new(),
                spare: Spare::default(),
                now: Instant::now(),
            }
        }

        fn cx(&mut self) -> Ctx<'_> {
            Ctx {
                now: self.now,
                config: &self.config,
                stats: &self.stats,
                spare: &mut self.spare,
                peer: &"test",
            }
        }

        /// Send everything `to_send` offers, at most `max` bytes a write.
        fn drain_out(&mut self, e: &mut Echo, max: usize) -> Vec<u8> {
            let mut out = Vec::new();
            loop {
                let chunk = e.to_send();
                if chunk.is_empty() {
                    return out;
                }
                let n = chunk.len().min(max);
                out.extend_from_slice(&chunk[..n]);
                e.sent(n, self.now, &mut self.spare);
            }
        }
    }

    #[test]
    fn partial_frames_wait_for_their_rest_in_both_entry_points() {
        let mut rig = Rig::new(Framing::Line);
        let mut e = Echo::new(&rig.config, rig.now);
        e.received(b"he", &mut rig.cx()).unwrap();
        assert_eq!(e.pending(), 0);
        assert_eq!(e.unfinished(), 2);
        e.received(b"llo\nwor", &mut rig.cx()).unwrap();
        assert_eq!(e.unfinished(), 3);
        // The other entry point: bytes read straight into the input buffer.
        e.input_buf().extend_from_slice(b"ld\n");
        e.decode_input(3, &mut rig.cx()).unwrap();
        assert_eq!(e.unfinished(), 0);
        assert_eq!(rig.drain_out(&mut e, usize::MAX), b"hello\nworld\n");
        assert_eq!(e.tally(), (2, 10));
    }

    #[test]
    fn an_oversize_frame_is_an_error_and_allocates_nothing_for_it() {
        let mut rig = Rig::new(Framing::Length);
        let mut e = Echo::new(&rig.config, rig.now);
        // A 4 GiB claim: refused before any room is made for it.
        let err = e.received(&[0xff, 0xff, 0xff, 0xff, 1], &mut rig.cx());
        assert!(
            matches!(err, Err(ConnError::Frame(FrameError::TooLarge { .. }))),
            "{err:?}"
        );
        assert!(rig.spare.decode.capacity() < 1024);
        let mut rig = Rig::new(Framing::Line);
        let mut e = Echo::new(&rig.config, rig.now);
        let err = e.received(&[b'x'; 40], &mut rig.cx());
        assert!(
            matches!(err, Err(ConnError::Frame(FrameError::LineTooLong { .. }))),
            "{err:?}"
        );
    }

    #[test]
    fn short_writes_lose_nothing_and_backpressure_stops_input() {
        let mut rig = Rig::new(Framing::Raw);
        let mut e = Echo::new(&rig.config, rig.now);
        e.received(&[b'a'; 20], &mut rig.cx()).unwrap();
        assert!(e.wants_input(rig.config.max_pending));
        e.received(&[b'b'; 20], &mut rig.cx()).unwrap();
        assert_eq!(e.pending(), 40);
        assert!(!e.wants_input(rig.config.max_pending), "at --max-pending");
        let got = rig.drain_out(&mut e, 3); // every write short
        assert_eq!(got, [[b'a'; 20], [b'b'; 20]].concat());
        assert!(e.wants_input(rig.config.max_pending));
        assert!(rig.spare.kept() >= 1, "the emptied buffer went back");
    }

    #[test]
    fn idle_counts_silence_and_stall_counts_only_progress() {
        let mut rig = Rig::new(Framing::Line);
        let (idle, stall) = (Some(Duration::from_secs(30)), Duration::from_secs(10));
        let t0 = rig.now;
        let s = Duration::from_secs;
        let mut e = Echo::new(&rig.config, t0);
        assert!(e.timed_out(t0 + s(29), idle, stall).is_none());
        assert!(matches!(
            e.timed_out(t0 + s(30), idle, stall),
            Some(End::Idle(_))
        ));
        assert!(e.timed_out(t0 + s(300), None, stall).is_none(), "idle off");
        // Bytes of an unfinished frame are activity: the idle clock restarts.
        rig.now = t0 + s(20);
        e.received(b"slow", &mut rig.cx()).unwrap();
        assert!(e.timed_out(t0 + s(49), idle, stall).is_none());
        // An echo waits: the stall clock runs, and idle does not apply.
        rig.now = t0 + s(40);
        e.received(b"\n", &mut rig.cx()).unwrap();
        assert!(e.timed_out(t0 + s(49), idle, stall).is_none());
        assert!(e.timed_out(t0 + s(200), None, stall).is_some());
        // A write that takes a byte restarts it; one that takes none does not.
        let _ = e.to_send();
        e.sent(1, t0 + s(45), &mut rig.spare);
        e.sent(0, t0 + s(54), &mut rig.spare);
        assert!(e.timed_out(t0 + s(54), idle, stall).is_none());
        assert!(matches!(
            e.timed_out(t0 + s(55), idle, stall),
            Some(End::Stalled(_))
        ));
        // All taken: no stall clock, and the idle clock counts from the
        // last byte received.
        let _ = e.to_send();
        e.sent(10, t0 + s(56), &mut rig.spare);
        assert!(e.stall_deadline(stall).is_none());
        assert!(matches!(
            e.timed_out(t0 + s(70), idle, stall),
            Some(End::Idle(_))
        ));
    }

    #[test]
    fn the_drain_owes_what_was_waiting_then_fin_then_discards() {
        let mut rig = Rig::new(Framing::Line);
        let mut e = Echo::new(&rig.config, rig.now);
        e.received(b"one\nt", &mut rig.cx()).unwrap();
        e.begin_drain(Some(7)); // "wo\nthr" + 1 later byte
        assert!(matches!(e.finish(), Finish::No));
        e.received(b"wo\nthr", &mut rig.cx()).unwrap();
        assert_eq!(e.phase(), Phase::Draining { owed: Some(1) });
        e.received(b"e", &mut rig.cx()).unwrap();
        assert_eq!(e.phase(), Phase::InputDone);
        assert!(!e.wants_input(usize::MAX));
        assert!(matches!(e.finish(), Finish::No), "echoes still owed");
        assert_eq!(rig.drain_out(&mut e, usize::MAX), b"one\ntwo\n");
        assert!(matches!(e.finish(), Finish::Fin));
        assert_eq!(e.phase(), Phase::FinSent { unfinished: 4 });
        // After our FIN: read to discard, echo nothing.
        assert!(e.wants_input(0));
        e.received(b"late\n", &mut rig.cx()).unwrap();
        assert_eq!(e.pending(), 0);
        e.received_eof(&mut rig.cx()).unwrap();
        assert!(matches!(
            e.finish(),
            Finish::Close(End::Shutdown { unfinished: 4 })
        ));
        // Nothing owed at all: input is done at once; read-until-WouldBlock
        // loops say so themselves.
        let mut e = Echo::new(&rig.config, rig.now);
        e.begin_drain(Some(0));
        assert_eq!(e.phase(), Phase::InputDone);
        let mut e = Echo::new(&rig.config, rig.now);
        e.begin_drain(None);
        e.input_exhausted();
        assert!(matches!(e.finish(), Finish::Fin));
    }

    #[test]
    fn a_truncated_last_frame_is_reported_after_the_echoes_before_it() {
        let mut rig = Rig::new(Framing::Line);
        let mut e = Echo::new(&rig.config, rig.now);
        e.received(b"ok\nhal", &mut rig.cx()).unwrap();
        e.received_eof(&mut rig.cx()).unwrap();
        assert!(matches!(e.finish(), Finish::No), "the echo of ok is owed");
        assert_eq!(rig.drain_out(&mut e, usize::MAX), b"ok\n");
        let end = e.finish();
        assert!(
            matches!(
                end,
                Finish::FinAndClose(End::Error(ConnError::Frame(FrameError::Truncated {
                    pending: 3
                })))
            ),
            "{end:?}"
        );
    }
}
