//! Design 1: threads. A thread reads each member; another thread writes to
//! it; the room is one `Mutex<Room>` they all share.
//!
//! Run with (four terminals):
//!
//! ```text
//! RUST_LOG=info cargo run -p chat -- server --model threads
//! nc 127.0.0.1 7007      # type a name, then lines
//! nc 127.0.0.1 7007
//! nc 127.0.0.1 7007
//! ```
//!
//! **The rule that makes it work: no socket write while the room's lock is
//! held.** Saying a line takes the room lock, then each other member's
//! outbox lock just long enough to push a pointer to the shared message,
//! then wakes that member's writer thread (a `Condvar`). The writer takes
//! its outbox lock only to look at the next chunk and to record what the
//! kernel took; the blocking `write()` itself runs with no lock held. A
//! member who stops reading blocks *its own* writer thread in `write()` and
//! nobody else. Write to sockets under the room lock instead (the obvious
//! first version) and the room runs at the speed of its slowest member.
//!
//! Locks are always taken in one order, room then outbox, so two threads
//! can never wait on each other. A blocked `read()` does not notice
//! shutdown, so readers wake every [`TICK`] (`SO_RCVTIMEO`) to look; a
//! blocked `write()` gives up after `--stall-timeout` (`SO_SNDTIMEO`: no
//! byte taken for that long means the member stopped reading).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown as Both, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::conn::{End, log_close};
use common::framing::{Decoder, Framing, is_timeout};
use common::net::{AcceptAction, Backoff, accept_policy};
use common::{Shutdown, Stats};

use crate::outbox::Outbox;
use crate::protocol;
use crate::room::{Evicted, Id, Room};
use crate::{ChatConfig, ChatStats};

/// How often a blocked reader wakes up to check shutdown, idleness and
/// whether its member was closed by someone else.
pub const TICK: Duration = Duration::from_millis(100);

/// Lock a mutex even if a thread panicked while holding it: the data is
/// counters and queues that stay consistent between statements.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why the server closes a member on its own.
#[derive(Debug, Clone, Copy)]
enum Kick {
    Slow,
    Stalled,
    /// A write failed: the peer reset or vanished.
    Failed(io::ErrorKind),
}

/// One member's outbox, shared by its reader (and everyone who speaks to
/// it) and its writer thread.
#[derive(Debug)]
struct Mailbox {
    state: Mutex<BoxState>,
    ready: Condvar,
}

#[derive(Debug)]
struct BoxState {
    out: Outbox,
    /// Write what is queued, then FIN, then stop.
    finish: bool,
    kicked: Option<Kick>,
    written: u64,
}

impl Mailbox {
    fn new(config: &ChatConfig) -> Arc<Self> {
        Arc::new(Mailbox {
            state: Mutex::new(BoxState {
                out: Outbox::new(config.server.max_pending, config.slow),
                finish: false,
                kicked: None,
                written: 0,
            }),
            ready: Condvar::new(),
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut BoxState) -> R) -> R {
        let r = f(&mut lock(&self.state));
        // Both the writer and the reader (waiting for the drain) may sleep here.
        self.ready.notify_all();
        r
    }
}

struct Shared {
    room: Mutex<Room<Arc<Mailbox>>>,
    config: ChatConfig,
    stats: Arc<ChatStats>,
    shutdown: Shutdown,
    /// A clone of every open socket, to cut them at the grace deadline.
    open: Mutex<HashMap<Id, TcpStream>>,
    live: Mutex<usize>,
    gone: Condvar,
    cutting: AtomicBool,
}

impl Shared {
    // ANCHOR: deliver
    /// The room's delivery: a pointer into the member's outbox, and a
    /// wake-up for its writer. Runs under the room lock; never touches a
    /// socket.
    fn deliver(&self) -> impl FnMut(Id, &mut Arc<Mailbox>, &Bytes) -> bool + '_ {
        move |_, mailbox, msg| mailbox.with(|st| crate::count(st.out.push(msg), &self.stats))
    }
    // ANCHOR_END: deliver

    fn kick(&self, evicted: Vec<Evicted<Arc<Mailbox>>>) {
        for e in evicted {
            log::warn!(
                "{} (member {}): {}",
                e.name,
                e.id,
                crate::slow_error(self.config.server.max_pending)
            );
            e.out.with(|st| st.kicked = Some(Kick::Slow));
        }
    }
}

/// Serve until `shutdown`; see the module docs.
pub fn run(
    listener: TcpListener,
    config: &ChatConfig,
    shutdown: &Shutdown,
    stats: &Arc<ChatStats>,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    // A blocked accept() does not see the shutdown flag: connect to
    // ourselves to wake it.
    let wake = SocketAddr::new(
        match local.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
            IpAddr::V6(ip) if ip.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
            ip => ip,
        },
        local.port(),
    );
    shutdown.on_trigger(move || {
        let _ = TcpStream::connect_timeout(&wake, TICK);
    });
    let shared = Arc::new(Shared {
        room: Mutex::new(Room::new()),
        config: config.clone(),
        stats: stats.clone(),
        shutdown: shutdown.clone(),
        open: Mutex::new(HashMap::new()),
        live: Mutex::new(0),
        gone: Condvar::new(),
        cutting: AtomicBool::new(false),
    });
    log::info!(
        "chat (threads) on {local}: a reader and a writer thread per member, room behind a Mutex, \
         at most {} members, {} bytes per outbox, --slow {}",
        config.server.max_conns,
        config.server.max_pending,
        config.slow
    );
    let mut backoff = Backoff::new();
    let mut next_id: Id = 0;
    let mut fatal = None;
    while !shutdown.is_triggered() {
        let (stream, peer) = match listener.accept() {
            Ok(s) => s,
            Err(e) => match accept_policy(&e, &mut backoff) {
                AcceptAction::Retry => continue,
                AcceptAction::Wait(d) => {
                    shutdown.wait_timeout(d);
                    continue;
                }
                AcceptAction::Fatal => {
                    fatal = Some(e);
                    break;
                }
            },
        };
        backoff.reset();
        if shutdown.is_triggered() {
            break;
        }
        {
            let mut live = lock(&shared.live);
            if *live >= config.server.max_conns {
                Stats::inc(&stats.base.refused);
                log::warn!(
                    "{peer}: over --max-conns ({}), refused",
                    config.server.max_conns
                );
                let _ = stream.set_write_timeout(Some(TICK));
                let _ = (&stream).write_all(protocol::ROOM_FULL);
                continue;
            }
            *live += 1;
        }
        next_id += 1;
        let id = next_id;
        Stats::inc(&stats.base.accepted);
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("member-{id}"))
            .spawn(move || {
                member(&s, id, stream, peer);
                *lock(&s.live) -= 1;
                s.gone.notify_all();
            });
        if let Err(e) = spawned {
            log::warn!("{peer}: cannot start a thread ({e}), closed");
            *lock(&shared.live) -= 1;
        }
    }
    drop(listener);
    // Let every member finish (notice delivered, FIN exchanged) until the
    // deadline, then cut whoever is left.
    let deadline = shutdown
        .deadline(config.server.grace)
        .unwrap_or_else(|| Instant::now() + config.server.grace);
    let mut live = lock(&shared.live);
    while *live > 0 {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        live = shared
            .gone
            .wait_timeout(live, deadline - now)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    if *live > 0 {
        shared.cutting.store(true, Ordering::SeqCst);
        for s in lock(&shared.open).values() {
            let _ = s.shutdown(Both::Both);
        }
        // shutdown(2) makes every blocked read and write return at once.
        let until = Instant::now() + Duration::from_secs(2);
        while *live > 0 && Instant::now() < until {
            live = shared
                .gone
                .wait_timeout(live, TICK)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
    drop(live);
    match fatal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// One member, on its reader thread, with its writer thread beside it.
fn member(shared: &Arc<Shared>, id: Id, stream: TcpStream, peer: SocketAddr) {
    let config = &shared.config.server;
    let mailbox = Mailbox::new(&shared.config);
    mailbox.with(|st| st.out.push_own(Bytes::from_static(protocol::WELCOME)));
    // Small lines, sent as they come: Nagle's algorithm would hold each one
    // back until the previous one is acknowledged (40 ms with delayed ACKs).
    let prepared = stream
        .set_nodelay(true)
        .and_then(|()| stream.set_read_timeout(Some(TICK)))
        .and_then(|()| stream.set_write_timeout(Some(config.stall_timeout)))
        .and_then(|()| stream.try_clone())
        .and_then(|w| Ok((w, stream.try_clone()?)));
    let (writer_stream, registry_copy) = match prepared {
        Ok(p) => p,
        Err(e) => {
            log_close(&peer, 0, 0, &End::from(e), &shared.stats.base);
            return;
        }
    };
    lock(&shared.open).insert(id, registry_copy);
    let writer = {
        let (s, m) = (shared.clone(), mailbox.clone());
        std::thread::Builder::new()
            .name(format!("member-{id}-w"))
            .spawn(move || write_loop(&s, id, &m, writer_stream))
    };
    let mut reader = Reader {
        shared,
        id,
        peer,
        mailbox: &mailbox,
        stream,
        joined: false,
        said: 0,
    };
    let (end, writing) = match writer {
        Ok(_) => (reader.read_loop(), true),
        Err(e) => (End::from(e), false),
    };
    let Reader {
        mut stream,
        joined,
        said,
        ..
    } = reader;
    if joined {
        let mut room = lock(&shared.room);
        if shared.shutdown.is_triggered() {
            // Everyone is being told the server stops; no leave notices.
            room.leave(id, |_, _, _| true);
        } else if let Some((_, evicted)) = room.leave(id, shared.deliver()) {
            drop(room);
            shared.kick(evicted);
        }
    }
    let graceful = matches!(end, End::Shutdown { .. });
    mailbox.with(|st| {
        if graceful {
            st.out.push_own(Bytes::from_static(protocol::SHUTTING_DOWN));
        }
        st.finish = true;
    });
    // Wait for the writer to deliver what was queued (bounded: its writes
    // give up after --stall-timeout, and the deadline cuts the socket).
    if writing {
        let mut st = lock(&mailbox.state);
        while !(st.out.is_empty() || st.kicked.is_some()) {
            st = mailbox
                .ready
                .wait_timeout(st, TICK)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
    if graceful {
        // The writer sent FIN; read and discard until the peer's FIN so
        // close() does not turn into a reset that destroys the notice.
        let mut sink = [0u8; 4096];
        let deadline = shared.shutdown.deadline(config.grace);
        while deadline.is_none_or(|d| Instant::now() < d) {
            match stream.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(_) => break,
            }
        }
    }
    let end = if shared.cutting.load(Ordering::SeqCst) {
        End::Cut
    } else {
        end
    };
    lock(&shared.open).remove(&id);
    let written = lock(&mailbox.state).written;
    log_close(&peer, said, written, &end, &shared.stats.base);
}

struct Reader<'a> {
    shared: &'a Shared,
    id: Id,
    peer: SocketAddr,
    mailbox: &'a Arc<Mailbox>,
    stream: TcpStream,
    joined: bool,
    said: u64,
}

impl Reader<'_> {
    fn read_loop(&mut self) -> End {
        let config = &self.shared.config.server;
        let mut decoder = Decoder::new(Framing::Line, config.max_frame);
        let mut buf = BytesMut::new();
        let mut chunk = vec![0u8; 16 * 1024];
        let mut last_rx = Instant::now();
        loop {
            if self.shared.shutdown.is_triggered() {
                return End::Shutdown { unfinished: 0 };
            }
            if let Some(end) = self.kicked() {
                return end;
            }
            match self.stream.read(&mut chunk) {
                // Our own writer may have shut the socket down (stalled,
                // closed as slow): that, not the peer, is why it ended.
                Ok(0) => return self.kicked().unwrap_or(End::PeerClosed),
                Ok(n) => {
                    last_rx = Instant::now();
                    buf.extend_from_slice(&chunk[..n]);
                    loop {
                        match decoder.decode(&mut buf) {
                            Ok(Some(line)) => {
                                if let Some(end) = self.line(protocol::strip_cr(&line)) {
                                    return end;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                self.mailbox.with(|st| {
                                    st.out.push_own(protocol::too_long(config.max_frame))
                                });
                                return End::from(e);
                            }
                        }
                    }
                }
                Err(e) if is_timeout(&e) => {
                    if let Some(idle) = config.idle_timeout
                        && last_rx.elapsed() >= idle
                    {
                        return End::Idle(idle);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.kicked().unwrap_or(End::from(e)),
            }
        }
    }

    /// Closed by the server itself (its writer, or the room), and why.
    fn kicked(&self) -> Option<End> {
        let max_pending = self.shared.config.server.max_pending;
        let stall = self.shared.config.server.stall_timeout;
        lock(&self.mailbox.state).kicked.map(|kick| match kick {
            Kick::Slow => End::from(crate::slow_error(max_pending)),
            Kick::Stalled => End::Stalled(stall),
            Kick::Failed(kind) => End::from(io::Error::from(kind)),
        })
    }

    /// One line from the client: its name, or something it says.
    fn line(&mut self, line: &[u8]) -> Option<End> {
        let shared = self.shared;
        if self.joined {
            self.said += 1;
            ChatStats::bump(&shared.stats.said);
            let evicted = lock(&shared.room).say(self.id, line, shared.deliver());
            shared.kick(evicted);
            return None;
        }
        let refused = match protocol::check_name(line) {
            Ok(name) => {
                match lock(&shared.room).join(self.id, name, self.mailbox.clone(), shared.deliver())
                {
                    Ok(evicted) => {
                        self.joined = true;
                        ChatStats::bump(&shared.stats.joined);
                        log::info!("{}: joined as {name}", self.peer);
                        shared.kick(evicted);
                        return None;
                    }
                    Err((e, _)) => e,
                }
            }
            Err(e) => e,
        };
        self.mailbox.with(|st| st.out.push_own(refused.line()));
        Some(End::from(io::Error::other(format!(
            "name refused: {refused:?}"
        ))))
    }
}

// ANCHOR: write
/// The writer thread: sleep until the outbox has bytes, write them with no
/// lock held, record what the kernel took.
fn write_loop(shared: &Shared, id: Id, mailbox: &Mailbox, mut stream: TcpStream) {
    loop {
        let chunk = {
            let mut st = lock(&mailbox.state);
            loop {
                if st.kicked.is_some() {
                    let _ = stream.shutdown(Both::Both);
                    return;
                }
                if let Some(c) = st.out.chunk() {
                    break c;
                }
                if st.finish {
                    drop(st);
                    let _ = stream.shutdown(Both::Write);
                    mailbox.ready.notify_all();
                    return;
                }
                st = mailbox.ready.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        };
        match stream.write(&chunk) {
            Ok(n) => {
                let mut st = lock(&mailbox.state);
                st.out.advance(n);
                st.written += n as u64;
                drop(st);
                mailbox.ready.notify_all();
            }
            // ANCHOR_END: write
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // SO_SNDTIMEO expired with no byte taken: stalled. Anything
                // else: the connection is gone. Either way the member ends;
                // the reader (woken by shutdown(2)) announces the leave.
                let kick = if is_timeout(&e) {
                    Kick::Stalled
                } else {
                    log::debug!("member {id}: write failed: {e}");
                    Kick::Failed(e.kind())
                };
                let mut st = lock(&mailbox.state);
                st.kicked.get_or_insert(kick);
                // Nothing more will be written: let the queued messages go.
                st.out = Outbox::new(shared.config.server.max_pending, shared.config.slow);
                drop(st);
                mailbox.ready.notify_all();
                let _ = stream.shutdown(Both::Both);
                return;
            }
        }
    }
}
