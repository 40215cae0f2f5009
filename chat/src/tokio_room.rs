//! Design 2: tokio. One task per member; the room (behind a short-held
//! `std::sync::Mutex`) holds, for each member, the sending end of a
//! *bounded* channel; the member's task writes what arrives on it.
//!
//! Run with:
//!
//! ```text
//! RUST_LOG=info cargo run -p chat -- server --model tokio
//! nc 127.0.0.1 7007      # in three terminals
//! ```
//!
//! **The room never awaits a member.** A line said is offered to every
//! other member with `try_send`, which returns at once: queued, or full.
//! Full is the `--slow` policy (skip and count, or close that member),
//! never a wait, so the room runs at the pace of its senders, not of its
//! slowest reader. Two bounds hold each member: the channel's capacity
//! counts messages, and a [`Budget`] counts bytes (`--max-pending`), since a
//! hundred 1 MiB lines are not a hundred 10-byte ones.
//!
//! What the popular examples do instead, and why not here:
//! `mpsc::unbounded_channel` per peer (tokio's `chat.rs`) grows without
//! limit while a member does not read; a `broadcast` channel bounds memory
//! but a receiver that falls behind gets `Lagged`, which copied code often
//! turns into an error that ends the member or, worse, the room's task.
//!
//! The `Mutex` is `std`'s, not tokio's: it is held for a few pointer pushes
//! and never across an `.await`, which is what tokio's documentation
//! advises for short critical sections.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::conn::{End, log_close};
use common::framing::{Decoder, Framing};
use common::net::{AcceptAction, Backoff, accept_policy};
use common::{Shutdown, Stats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until, timeout};

use crate::outbox::{Admit, Budget};
use crate::protocol;
use crate::room::{Evicted, Id, Room};
use crate::{ChatConfig, ChatStats};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the room keeps per member.
#[derive(Debug)]
struct MemberTx {
    tx: mpsc::Sender<Bytes>,
    budget: Arc<Mutex<Budget>>,
    /// Closed as slow: wake its task at once.
    kick: Arc<Notify>,
}

struct Shared {
    room: Mutex<Room<MemberTx>>,
    config: ChatConfig,
    stats: Arc<ChatStats>,
    shutdown: Shutdown,
}

impl Shared {
    // ANCHOR: deliver
    fn deliver(&self) -> impl FnMut(Id, &mut MemberTx, &Bytes) -> bool + '_ {
        move |_, m, msg| {
            let mut budget = lock(&m.budget);
            let mut verdict = budget.admit(msg.len());
            if verdict == Admit::Queue {
                match m.tx.try_send(msg.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => verdict = budget.refuse(msg.len()),
                    // Its task has ended; its own leave is on the way.
                    Err(mpsc::error::TrySendError::Closed(_)) => budget.sent(msg.len()),
                }
            }
            crate::count(verdict, &self.stats)
        }
    }
    // ANCHOR_END: deliver

    fn kick(&self, evicted: Vec<Evicted<MemberTx>>) {
        for e in evicted {
            log::warn!(
                "{} (member {}): {}",
                e.name,
                e.id,
                crate::slow_error(self.config.server.max_pending)
            );
            e.out.kick.notify_one();
        }
    }
}

/// Messages a channel holds: a bound on the count beside the byte budget
/// (the budget decides for lines longer than 16 bytes).
fn capacity(max_pending: usize) -> usize {
    (max_pending / 16).clamp(16, 1 << 16)
}

/// Serve until `shutdown` on a multi-threaded runtime; see the module docs.
pub fn run(
    listener: std::net::TcpListener,
    config: &ChatConfig,
    shutdown: &Shutdown,
    stats: &Arc<ChatStats>,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let shared = Arc::new(Shared {
        room: Mutex::new(Room::new()),
        config: config.clone(),
        stats: stats.clone(),
        shutdown: shutdown.clone(),
    });
    rt.block_on(serve(listener, shared))
}

async fn serve(listener: std::net::TcpListener, shared: Arc<Shared>) -> io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let config = &shared.config.server;
    log::info!(
        "chat (tokio) on {}: a task per member, bounded channels, at most {} members, \
         {} bytes per outbox, --slow {}",
        listener.local_addr()?,
        config.max_conns,
        config.max_pending,
        shared.config.slow
    );
    let mut tasks = JoinSet::new();
    let mut backoff = Backoff::new();
    let mut next_id: Id = 0;
    let mut fatal = None;
    loop {
        while tasks.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = shared.shutdown.triggered() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => match accept_policy(&e, &mut backoff) {
                AcceptAction::Retry => continue,
                AcceptAction::Wait(d) => {
                    tokio::select! {
                        _ = shared.shutdown.triggered() => break,
                        _ = sleep(d) => continue,
                    }
                }
                AcceptAction::Fatal => {
                    fatal = Some(e);
                    break;
                }
            },
        };
        backoff.reset();
        if tasks.len() >= config.max_conns {
            Stats::inc(&shared.stats.base.refused);
            log::warn!("{peer}: over --max-conns ({}), refused", config.max_conns);
            let _ = stream.try_write(protocol::ROOM_FULL);
            continue;
        }
        Stats::inc(&shared.stats.base.accepted);
        next_id += 1;
        let (s, id) = (shared.clone(), next_id);
        tasks.spawn(async move { member(&s, id, stream, peer).await });
    }
    drop(listener);
    let grace = config.grace;
    let deadline = shared
        .shutdown
        .deadline(grace)
        .map_or_else(|| Instant::now() + grace, Instant::from_std);
    let drained = timeout(deadline.saturating_duration_since(Instant::now()), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        // Dropping a task drops its socket: the cut.
        for _ in 0..tasks.len() {
            Stats::inc(&shared.stats.base.cut);
        }
        log::warn!(
            "{} members still open at the --grace deadline, cut",
            tasks.len()
        );
        tasks.shutdown().await;
    }
    match fatal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Write one message, giving up after `--stall-timeout` without progress.
async fn send(
    w: &mut OwnedWriteHalf,
    msg: &[u8],
    stall: Duration,
    written: &AtomicU64,
) -> Result<(), End> {
    let mut at = 0;
    while at < msg.len() {
        match timeout(stall, w.write(&msg[at..])).await {
            Ok(Ok(0)) => return Err(End::from(io::Error::from(io::ErrorKind::WriteZero))),
            Ok(Ok(n)) => {
                at += n;
                written.fetch_add(n as u64, Relaxed);
            }
            Ok(Err(e)) => return Err(End::from(e)),
            Err(_) => return Err(End::Stalled(stall)),
        }
    }
    Ok(())
}

/// One member's task: its reads, its writes, its timeouts.
async fn member(shared: &Shared, id: Id, stream: TcpStream, peer: SocketAddr) {
    let config = &shared.config.server;
    // Small lines, sent as they come (no Nagle delay behind an unacked one).
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(capacity(config.max_pending));
    let mut tx = Some(tx);
    let budget = Arc::new(Mutex::new(Budget::new(
        config.max_pending,
        shared.config.slow,
    )));
    let kick = Arc::new(Notify::new());
    let written = AtomicU64::new(0);
    let mut said = 0u64;
    let mut joined = false;
    let mut decoder = Decoder::new(Framing::Line, config.max_frame);
    let mut buf = BytesMut::with_capacity(4096);
    let mut last_rx = Instant::now();
    let stall = config.stall_timeout;

    let end = 'member: {
        if let Err(end) = send(&mut wr, protocol::WELCOME, stall, &written).await {
            break 'member end;
        }
        loop {
            let idle = async {
                match config.idle_timeout {
                    Some(d) => sleep_until(last_rx + d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = kick.notified() => break 'member End::from(crate::slow_error(config.max_pending)),
                _ = shared.shutdown.triggered() => break 'member End::Shutdown { unfinished: 0 },
                Some(msg) = rx.recv(), if joined => {
                    if let Err(end) = send(&mut wr, &msg, stall, &written).await {
                        break 'member end;
                    }
                    let missed = {
                        let mut b = lock(&budget);
                        b.sent(msg.len());
                        if rx.is_empty() { b.take_missed() } else { None }
                    };
                    if let Some(n) = missed
                        && let Err(end) = send(&mut wr, &protocol::missed(n), stall, &written).await
                    {
                        break 'member end;
                    }
                }
                r = rd.read_buf(&mut buf) => match r {
                    Ok(0) => break 'member End::PeerClosed,
                    Ok(_) => {
                        last_rx = Instant::now();
                        loop {
                            let line = match decoder.decode(&mut buf) {
                                Ok(Some(line)) => line,
                                Ok(None) => break,
                                Err(e) => {
                                    let _ = send(&mut wr, &protocol::too_long(config.max_frame), stall, &written).await;
                                    break 'member End::from(e);
                                }
                            };
                            let line = protocol::strip_cr(&line);
                            if joined {
                                said += 1;
                                ChatStats::bump(&shared.stats.said);
                                let evicted = lock(&shared.room).say(id, line, shared.deliver());
                                shared.kick(evicted);
                                continue;
                            }
                            let refused = match (protocol::check_name(line), tx.take()) {
                                (Ok(name), Some(tx)) => {
                                    let me = MemberTx { tx, budget: budget.clone(), kick: kick.clone() };
                                    let joining = lock(&shared.room).join(id, name, me, shared.deliver());
                                    match joining {
                                        Ok(evicted) => {
                                            joined = true;
                                            ChatStats::bump(&shared.stats.joined);
                                            log::info!("{peer}: joined as {name}");
                                            shared.kick(evicted);
                                            continue;
                                        }
                                        Err((e, _)) => e,
                                    }
                                }
                                (Err(e), _) => e,
                                (Ok(_), None) => protocol::NameError::Taken,
                            };
                            let _ = send(&mut wr, &refused.line(), stall, &written).await;
                            break 'member End::from(io::Error::other(format!("name refused: {refused:?}")));
                        }
                    }
                    Err(e) => break 'member End::from(e),
                },
                _ = idle => break 'member End::Idle(config.idle_timeout.unwrap_or_default()),
            }
        }
    };

    if joined {
        let mut room = lock(&shared.room);
        if shared.shutdown.is_triggered() {
            room.leave(id, |_, _, _| true);
        } else if let Some((_, evicted)) = room.leave(id, shared.deliver()) {
            drop(room);
            shared.kick(evicted);
        }
    }
    if matches!(end, End::Shutdown { .. }) {
        // Deliver what was queued, say goodbye, FIN, and wait for the
        // peer's FIN (the accept loop cuts us at the grace deadline).
        let mut ok = true;
        while let Ok(msg) = rx.try_recv() {
            ok = ok && send(&mut wr, &msg, stall, &written).await.is_ok();
        }
        if ok
            && send(&mut wr, protocol::SHUTTING_DOWN, stall, &written)
                .await
                .is_ok()
        {
            let _ = wr.shutdown().await;
            let mut sink = [0u8; 4096];
            while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
        }
    }
    log_close(&peer, said, written.load(Relaxed), &end, &shared.stats.base);
}
