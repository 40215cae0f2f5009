//! Design 3: one thread, one mio readiness loop, every member's outbox in
//! the loop's connection table. No lock anywhere: the room is a plain value
//! only this thread touches.
//!
//! Run with:
//!
//! ```text
//! RUST_LOG=info cargo run -p chat -- server --model event-loop
//! nc 127.0.0.1 7007      # in three terminals
//! ```
//!
//! A line said is pushed, as a shared pointer, into every other member's
//! [`Outbox`]; the loop then tries to write each touched outbox at once.
//! Whatever the kernel does not take stays queued, and only *then* does the
//! connection ask for `WRITABLE` readiness; once its outbox is empty it
//! drops that interest again. (Keeping `WRITABLE` registered all the time
//! would wake the loop for every idle socket with room in its send buffer:
//! a busy loop.) A member who stops reading just keeps a full outbox; the
//! loop never waits on it, and `--slow` decides what a full one means.
//!
//! mio is edge-triggered: a readiness event is reported once, so each read
//! and write goes on until `WouldBlock`, or the next event never comes.
//! Timeouts are a sweep over the table every [`TICK`].

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown as Both, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::conn::{End, log_close};
use common::framing::{Decoder, Framing};
use common::net::{AcceptAction, Backoff, accept_policy};
use common::{Shutdown, Stats};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::outbox::Outbox;
use crate::protocol;
use crate::room::{Evicted, Id, Room};
use crate::{ChatConfig, ChatStats};

/// How often the loop sweeps for idle and stalled members.
pub const TICK: Duration = Duration::from_millis(100);

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    decoder: Decoder,
    inbuf: BytesMut,
    out: Outbox,
    joined: bool,
    said: u64,
    written: u64,
    last_rx: Instant,
    /// Since when output has waited without the kernel taking a byte.
    stalled_since: Option<Instant>,
    /// `WRITABLE` is registered.
    writable: bool,
    /// Flush, then close with this (a refusal).
    then: Option<End>,
    /// Shutdown: flush, FIN, wait for the peer's FIN.
    finishing: bool,
    fin_sent: bool,
}

struct Loop {
    poll: Poll,
    conns: HashMap<Id, Conn>,
    room: Room<()>,
    config: ChatConfig,
    stats: Arc<ChatStats>,
    /// Connections whose outbox got something since the last flush.
    dirty: Vec<Id>,
    /// Connections to close, and why.
    closing: Vec<(Id, End)>,
    stopping: bool,
}

/// Serve until `shutdown`; see the module docs.
pub fn run(
    listener: std::net::TcpListener,
    config: &ChatConfig,
    shutdown: &Shutdown,
    stats: &Arc<ChatStats>,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    shutdown.on_trigger(move || {
        let _ = waker.wake();
    });
    log::info!(
        "chat (event-loop) on {}: one thread, per-connection outboxes, at most {} members, \
         {} bytes per outbox, --slow {}",
        listener.local_addr()?,
        config.server.max_conns,
        config.server.max_pending,
        config.slow
    );
    let mut lp = Loop {
        poll,
        conns: HashMap::new(),
        room: Room::new(),
        config: config.clone(),
        stats: stats.clone(),
        dirty: Vec::new(),
        closing: Vec::new(),
        stopping: false,
    };
    let mut events = Events::with_capacity(1024);
    let mut backoff = Backoff::new();
    let mut accepts_paused_until: Option<Instant> = None;
    // Tokens 0 and 1 are the listener and the waker.
    let mut next_id: Id = 2;
    let mut last_sweep = Instant::now();
    let mut deadline = None;
    loop {
        if shutdown.is_triggered() && !lp.stopping {
            let _ = lp.poll.registry().deregister(&mut listener);
            lp.stop();
            deadline = Some(
                shutdown
                    .deadline(config.server.grace)
                    .unwrap_or_else(|| Instant::now() + config.server.grace),
            );
        }
        if lp.stopping && lp.conns.is_empty() {
            break;
        }
        if let Some(d) = deadline
            && Instant::now() >= d
        {
            let ids: Vec<Id> = lp.conns.keys().copied().collect();
            lp.closing.extend(ids.into_iter().map(|id| (id, End::Cut)));
            lp.close_all();
            break;
        }
        let wait = deadline.map_or(TICK, |d| {
            d.saturating_duration_since(Instant::now()).min(TICK)
        });
        if let Err(e) = lp.poll.poll(&mut events, Some(wait)) {
            if interrupted(&e) {
                continue;
            }
            return Err(e);
        }
        for event in &events {
            match event.token() {
                WAKER => {}
                LISTENER => {
                    if accepts_paused_until.is_some_and(|t| Instant::now() < t) || lp.stopping {
                        continue;
                    }
                    loop {
                        match listener.accept() {
                            Ok((stream, peer)) => {
                                backoff.reset();
                                lp.accept(next_id, stream, peer);
                                next_id += 1;
                            }
                            Err(e) if would_block(&e) => break,
                            Err(e) => match accept_policy(&e, &mut backoff) {
                                AcceptAction::Retry => {}
                                AcceptAction::Wait(d) => {
                                    accepts_paused_until = Some(Instant::now() + d);
                                    break;
                                }
                                AcceptAction::Fatal => return Err(e),
                            },
                        }
                    }
                }
                Token(t) => {
                    let id = t as Id;
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        lp.read(id);
                    }
                    if event.is_writable() {
                        lp.dirty.push(id);
                    }
                }
            }
        }
        // The listener is edge-triggered too: after a pause, accept what
        // queued meanwhile without waiting for a new event.
        if let Some(t) = accepts_paused_until
            && Instant::now() >= t
        {
            accepts_paused_until = None;
            while !lp.stopping {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        lp.accept(next_id, stream, peer);
                        next_id += 1;
                    }
                    Err(_) => break,
                }
            }
        }
        if last_sweep.elapsed() >= TICK {
            last_sweep = Instant::now();
            lp.sweep();
        }
        lp.flush_dirty();
        lp.close_all();
    }
    Ok(())
}

impl Loop {
    fn accept(&mut self, id: Id, mut stream: TcpStream, peer: SocketAddr) {
        let c = &self.config.server;
        if self.conns.len() >= c.max_conns {
            Stats::inc(&self.stats.base.refused);
            log::warn!("{peer}: over --max-conns ({}), refused", c.max_conns);
            let _ = stream.write(protocol::ROOM_FULL);
            return;
        }
        // Small lines, sent as they come (no Nagle delay behind an unacked one).
        let _ = stream.set_nodelay(true);
        let token = Token(id as usize);
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE)
        {
            log::warn!("{peer}: cannot register ({e}), closed");
            return;
        }
        Stats::inc(&self.stats.base.accepted);
        let mut out = Outbox::new(c.max_pending, self.config.slow);
        out.push_own(Bytes::from_static(protocol::WELCOME));
        self.conns.insert(
            id,
            Conn {
                stream,
                peer,
                decoder: Decoder::new(Framing::Line, c.max_frame),
                inbuf: BytesMut::with_capacity(4096),
                out,
                joined: false,
                said: 0,
                written: 0,
                last_rx: Instant::now(),
                stalled_since: None,
                writable: false,
                then: None,
                finishing: false,
                fin_sent: false,
            },
        );
        self.dirty.push(id);
    }

    /// Readable: read until `WouldBlock`, then act on each complete line.
    fn read(&mut self, id: Id) {
        let max_frame = self.config.server.max_frame;
        let mut lines = Vec::new();
        let mut end = None;
        {
            let Some(c) = self.conns.get_mut(&id) else {
                return;
            };
            let mut chunk = [0u8; 16 * 1024];
            loop {
                match c.stream.read(&mut chunk) {
                    Ok(0) => {
                        end = Some(if c.finishing {
                            End::Shutdown { unfinished: 0 }
                        } else {
                            End::PeerClosed
                        });
                        break;
                    }
                    Ok(n) => {
                        c.last_rx = Instant::now();
                        if c.finishing || c.then.is_some() {
                            continue; // shutting down or refused: discard
                        }
                        c.inbuf.extend_from_slice(&chunk[..n]);
                        loop {
                            match c.decoder.decode(&mut c.inbuf) {
                                Ok(Some(line)) => lines.push(line),
                                Ok(None) => break,
                                Err(e) => {
                                    c.out.push_own(protocol::too_long(max_frame));
                                    c.then = Some(End::from(e));
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) if would_block(&e) => break,
                    Err(e) if interrupted(&e) => {}
                    Err(e) => {
                        end = Some(End::from(e));
                        break;
                    }
                }
            }
            if c.then.is_some() {
                self.dirty.push(id);
            }
        }
        for line in lines {
            self.line(id, protocol::strip_cr(&line));
        }
        if let Some(end) = end {
            self.closing.push((id, end));
        }
    }

    fn line(&mut self, id: Id, line: &[u8]) {
        let joined = match self.conns.get_mut(&id) {
            Some(c) if c.then.is_none() => {
                if c.joined {
                    c.said += 1;
                }
                c.joined
            }
            _ => return,
        };
        // ANCHOR: deliver
        let (conns, dirty, stats) = (&mut self.conns, &mut self.dirty, &self.stats);
        let mut deliver = |to: Id, _: &mut (), msg: &Bytes| match conns.get_mut(&to) {
            Some(c) => {
                dirty.push(to);
                crate::count(c.out.push(msg), stats)
            }
            None => true,
        };
        // ANCHOR_END: deliver
        if joined {
            ChatStats::bump(&stats.said);
            let evicted = self.room.say(id, line, &mut deliver);
            self.evict(evicted);
            return;
        }
        let refused = match protocol::check_name(line) {
            Ok(name) => match self.room.join(id, name, (), &mut deliver) {
                Ok(evicted) => {
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.joined = true;
                        log::info!("{}: joined as {name}", c.peer);
                    }
                    ChatStats::bump(&self.stats.joined);
                    self.evict(evicted);
                    return;
                }
                Err((e, ())) => e,
            },
            Err(e) => e,
        };
        if let Some(c) = self.conns.get_mut(&id) {
            c.out.push_own(refused.line());
            c.then = Some(End::from(io::Error::other(format!(
                "name refused: {refused:?}"
            ))));
            self.dirty.push(id);
        }
    }

    fn evict(&mut self, evicted: Vec<Evicted<()>>) {
        let limit = self.config.server.max_pending;
        for e in evicted {
            log::warn!("{} (member {}): {}", e.name, e.id, crate::slow_error(limit));
            if let Some(c) = self.conns.get_mut(&e.id) {
                c.joined = false; // already out of the room; no second leave
            }
            self.closing
                .push((e.id, End::from(crate::slow_error(limit))));
        }
    }

    /// Write every touched outbox until empty or `WouldBlock`; keep
    /// `WRITABLE` registered exactly while output waits.
    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for id in dirty {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            // ANCHOR: flush
            let mut failed = None;
            while let Some(chunk) = c.out.chunk() {
                match c.stream.write(&chunk) {
                    Ok(n) => {
                        c.out.advance(n);
                        c.written += n as u64;
                        c.stalled_since = Some(Instant::now());
                    }
                    Err(e) if would_block(&e) => break,
                    Err(e) if interrupted(&e) => {}
                    Err(e) => {
                        failed = Some(End::from(e));
                        break;
                    }
                }
            }
            // ANCHOR_END: flush
            if let Some(end) = failed {
                self.closing.push((id, end));
                continue;
            }
            if c.out.is_empty() {
                c.stalled_since = None;
                if let Some(end) = c.then.take() {
                    self.closing.push((id, end));
                    continue;
                }
                if c.finishing && !c.fin_sent {
                    let _ = c.stream.shutdown(Both::Write);
                    c.fin_sent = true;
                }
            } else if c.stalled_since.is_none() {
                c.stalled_since = Some(Instant::now());
            }
            // ANCHOR: writable
            let want = !c.out.is_empty();
            if want != c.writable {
                let interest = if want {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                match self
                    .poll
                    .registry()
                    .reregister(&mut c.stream, Token(id as usize), interest)
                {
                    Ok(()) => c.writable = want,
                    Err(e) => self.closing.push((id, End::from(e))),
                }
            }
            // ANCHOR_END: writable
        }
    }

    /// Idle and stalled members.
    fn sweep(&mut self) {
        let c = &self.config.server;
        for (&id, conn) in &self.conns {
            if conn
                .stalled_since
                .is_some_and(|t| t.elapsed() >= c.stall_timeout)
            {
                self.closing.push((id, End::Stalled(c.stall_timeout)));
            } else if let Some(idle) = c.idle_timeout
                && !self.stopping
                && conn.last_rx.elapsed() >= idle
            {
                self.closing.push((id, End::Idle(idle)));
            }
        }
    }

    /// Shutdown: every member is told, in order after what it was owed.
    fn stop(&mut self) {
        self.stopping = true;
        for (&id, c) in self.conns.iter_mut() {
            if c.joined {
                self.room.leave(id, |_, _, _| true);
                c.joined = false;
            }
            if c.then.is_none() {
                c.out.push_own(Bytes::from_static(protocol::SHUTTING_DOWN));
                c.finishing = true;
            }
            self.dirty.push(id);
        }
    }

    /// Close what was marked; a joined member's leave is told to the
    /// others (which may mark more, as slow).
    fn close_all(&mut self) {
        while let Some((id, end)) = self.closing.pop() {
            let Some(mut c) = self.conns.remove(&id) else {
                continue;
            };
            let _ = self.poll.registry().deregister(&mut c.stream);
            if c.joined && !self.stopping {
                let (conns, dirty, stats) = (&mut self.conns, &mut self.dirty, &self.stats);
                let left = self.room.leave(id, |to: Id, _: &mut (), msg: &Bytes| {
                    match conns.get_mut(&to) {
                        Some(c) => {
                            dirty.push(to);
                            crate::count(c.out.push(msg), stats)
                        }
                        None => true,
                    }
                });
                if let Some((_, evicted)) = left {
                    self.evict(evicted);
                }
            }
            log_close(&c.peer, c.said, c.written, &end, &self.stats.base);
        }
        if !self.dirty.is_empty() {
            self.flush_dirty();
            if !self.closing.is_empty() {
                self.close_all();
            }
        }
    }
}
