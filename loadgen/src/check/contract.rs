//! The contract cases: what every server of the workspace promises about
//! shutdown and stalled clients (the root README, "What every server
//! promises"). They need the server's process id (`--server-pid`): two of
//! them send it SIGTERM and watch it go, the third watches it stay up.
//!
//! ```text
//! cargo run -p async-server -- server --model tokio --addr 127.0.0.1:7004 --grace 2s --stall-timeout 1s &
//! cargo run -p loadgen -- check --addr 127.0.0.1:7004 --server-pid $! \
//!     --server-grace 2s --server-stall 1s --cases 'stall-timeout,shutdown-in-flight'
//! ```
//!
//! How "frames in flight" is made certain rather than hoped for: each
//! client writes frames without reading until its writes stop making
//! progress (the server stopped reading it: its echo queue reached
//! `--max-pending`, our receive buffer is full). Then, just before SIGTERM,
//! `ioctl(SIOCOUTQ)` says how many of our bytes the server's kernel has not
//! yet acknowledged; everything else the server has *received*, read or
//! not, and the contract says every complete frame of it comes back. So a
//! server that exits at once, or closes after echoing only its own buffer,
//! fails by a number of bytes the detail names.
//!
//! What to watch: a server that `close()`s a socket with unread bytes in
//! its receive queue makes the kernel send RST, and a RST throws away the
//! echoes still in *our* receive queue. That is why the contract says:
//! FIN first, then read and discard until the peer's FIN.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Framing;
use common::rng::SplitMix64;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::{sleep, timeout};

use super::conn::{
    self, Conn, Opts, TcpState, encode_all, io_err, payload, tcp_state, unacked_bytes,
};
use super::{Ctx, Outcome, fmt_bytes, fmt_duration};

/// Added to the server's `--grace` or `--stall-timeout` before a case calls
/// it late: scheduling, a debug build, a TLS close_notify.
pub const MARGIN: Duration = Duration::from_secs(2);

/// How long a client waits for its first echo before it counts as "not
/// served" (an iterative server, or one at `--max-conns`, leaves it in the
/// listen backlog; the contract lets the kernel reset those at shutdown).
const SERVED_WAIT: Duration = Duration::from_secs(1);

/// A write that makes no progress for this long: the server pushes back.
const BLOCKED: Duration = Duration::from_millis(200);

/// Small socket buffers on our side, so back-pressure comes after a few
/// hundred KiB rather than after the kernel autotuned them to megabytes.
const SMALL_BUFFERS: Opts = Opts {
    reset_on_close: false,
    rcvbuf: Some(64 * 1024),
};

/// With TLS, SIOCOUTQ counts ciphertext and rustls holds up to 64 KiB of
/// records of its own: the received-plaintext bound loses this much.
const TLS_SLACK: usize = 128 * 1024;

fn tls_slack(ctx: &Ctx) -> usize {
    if ctx.target.tls.is_some() {
        TLS_SLACK
    } else {
        0
    }
}

/// A stream of frames and where each one ends, so "an echo of whole
/// frames" can be checked against any prefix of it.
struct Planned {
    bytes: Vec<u8>,
    /// End offset of every frame, ascending (raw framing: none; any prefix
    /// is whole).
    ends: Vec<usize>,
    framing: Framing,
}

impl Planned {
    fn new(rng: &mut SplitMix64, framing: Framing, total: usize, max_len: usize) -> Self {
        let mut bytes = Vec::with_capacity(total + max_len + 8);
        let mut ends = Vec::new();
        while bytes.len() < total {
            let len = rng.below(max_len as u64) as usize + 1;
            bytes.extend_from_slice(&encode_all(framing, &[payload(rng, len, framing)]));
            ends.push(bytes.len());
        }
        Planned {
            bytes,
            ends,
            framing,
        }
    }

    /// The largest frame boundary at or below `n`.
    fn whole_below(&self, n: usize) -> usize {
        if self.framing == Framing::Raw {
            return n.min(self.bytes.len());
        }
        match self.ends.partition_point(|&e| e <= n) {
            0 => 0,
            k => self.ends[k - 1],
        }
    }

    /// [`Planned::whole_below`] over the plan repeated without end.
    fn whole_below_cyclic(&self, n: usize) -> usize {
        let len = self.bytes.len();
        (n / len) * len + self.whole_below(n % len)
    }

    /// Does a prefix of `n` bytes of the endless repetition end a frame?
    fn is_boundary_cyclic(&self, n: usize) -> bool {
        let r = n % self.bytes.len();
        r == 0 || self.framing == Framing::Raw || self.ends.binary_search(&r).is_ok()
    }
}

/// Write `data[from..]` until done, or until a write makes no progress for
/// [`BLOCKED`]. Returns the bytes written (plaintext) and the error, if one
/// ended it. `write()` on a tokio socket (and on a tokio-rustls stream) is
/// cancel-safe: a write that times out has written nothing.
async fn write_until_blocked(
    wr: &mut WriteHalf<Conn>,
    data: &[u8],
) -> (usize, Option<std::io::Error>) {
    let mut at = 0;
    while at < data.len() {
        let end = (at + 64 * 1024).min(data.len());
        match timeout(BLOCKED, wr.write(&data[at..end])).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => at += n,
            Ok(Err(e)) => return (at, Some(e)),
            Err(_) => break,
        }
    }
    // TLS: push out what rustls buffered, without waiting for long.
    let _ = timeout(BLOCKED, wr.flush()).await;
    (at, None)
}

/// Read until EOF, an error or `deadline`; everything read is appended.
async fn read_to_end(rd: &mut ReadHalf<Conn>, got: &mut Vec<u8>, deadline: Instant) -> ReadEnd {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, rd.read(&mut buf)).await {
            Err(_) => return ReadEnd::Silent,
            Ok(Ok(0)) => return ReadEnd::Eof,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return ReadEnd::Error(io_err(&e)),
        }
    }
}

/// How a read loop ended.
#[derive(Debug)]
enum ReadEnd {
    /// read() returned 0: FIN (for TLS: close_notify, then FIN).
    Eof,
    /// RST, or TCP closed without TLS close_notify, or another error.
    Error(String),
    /// Nothing more before the deadline.
    Silent,
}

impl ReadEnd {
    fn describe(&self) -> String {
        match self {
            ReadEnd::Eof => "EOF".into(),
            ReadEnd::Error(e) => e.clone(),
            ReadEnd::Silent => "no EOF before the deadline".into(),
        }
    }
}

/// Send SIGTERM to the server.
fn sigterm(pid: u32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

/// Poll /proc until the process is gone (a zombie counts as gone: it has
/// exited, its parent has not reaped it yet) or `limit` has passed since
/// `since`. Sampling every 10 ms: there is no "wait for an unrelated pid".
async fn wait_gone(pid: u32, since: Instant, limit: Duration) -> Option<Duration> {
    loop {
        if !conn::process_alive(pid) {
            return Some(since.elapsed());
        }
        if since.elapsed() > limit {
            return None;
        }
        sleep(Duration::from_millis(10)).await;
    }
}

fn exit_phrase(gone: Option<Duration>, limit: Duration) -> String {
    match gone {
        Some(t) => format!("process gone {} after SIGTERM", fmt_duration(t)),
        None => format!(
            "process still running {} after SIGTERM",
            fmt_duration(limit)
        ),
    }
}

/// What one `shutdown-in-flight` client saw.
#[derive(Debug, Default)]
struct Stream {
    /// Echo bytes read, and whether they matched what was sent.
    got: usize,
    /// Offset of the first byte that differs, if one did.
    differs_at: Option<usize>,
}

/// Most bytes a `shutdown-in-flight` client has written and not yet had
/// echoed. More than the kernel buffers between us hold (the server's send
/// buffer, up to 4 MiB, and our receive buffer), so at SIGTERM some of it
/// waits in the server's receive queue or its own buffers, where only a
/// correct drain gets it back; bounded, so a slow server is not buried.
const WINDOW: usize = 16 << 20;

/// Write `plan` over and over until `stop`, never more than [`WINDOW`]
/// ahead of the echo (`echoed`, advanced by the reader, which wakes us
/// through `progress`); count what was written in `written` after every
/// write() so the case can read it at any moment.
async fn stream_writer(
    mut wr: WriteHalf<Conn>,
    plan: Arc<Planned>,
    written: Arc<AtomicUsize>,
    echoed: Arc<AtomicUsize>,
    progress: Arc<tokio::sync::Notify>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    cap: usize,
) -> (WriteHalf<Conn>, Option<String>) {
    let mut at = 0usize;
    while at < cap {
        if at.saturating_sub(echoed.load(Ordering::SeqCst)) >= WINDOW {
            tokio::select! {
                _ = progress.notified() => continue,
                _ = stop.changed() => break,
            }
        }
        let off = at % plan.bytes.len();
        let end = (off + 64 * 1024).min(plan.bytes.len());
        tokio::select! {
            // tokio's write() is cancel-safe: dropping it wrote nothing.
            r = wr.write(&plan.bytes[off..end]) => match r {
                Ok(0) => break,
                Ok(n) => {
                    at += n;
                    written.store(at, Ordering::SeqCst);
                }
                Err(e) => return (wr, Some(io_err(&e))),
            },
            _ = stop.changed() => break,
        }
    }
    let _ = timeout(BLOCKED, wr.flush()).await;
    (wr, None)
}

/// Where `chunk`, found at offset `at` of the endless repetition of
/// `plan`, first differs from it; compared slice by slice (memcmp), not
/// byte by byte, so a debug build keeps up with a fast server.
fn first_difference(plan: &[u8], at: usize, chunk: &[u8]) -> Option<usize> {
    let mut done = 0;
    while done < chunk.len() {
        let off = (at + done) % plan.len();
        let n = (plan.len() - off).min(chunk.len() - done);
        let (want, got) = (&plan[off..off + n], &chunk[done..done + n]);
        if want != got {
            let k = want.iter().zip(got).position(|(a, b)| a != b).unwrap_or(0);
            return Some(at + done + k);
        }
        done += n;
    }
    None
}

/// Read the echo and compare it as it comes with the endless repetition of
/// `plan`, until EOF, an error, or `deadline` once it is set.
async fn stream_reader(
    mut rd: ReadHalf<Conn>,
    plan: Arc<Planned>,
    first: Arc<AtomicBool>,
    echoed: Arc<AtomicUsize>,
    progress: Arc<tokio::sync::Notify>,
    deadline: tokio::sync::watch::Receiver<Option<Instant>>,
) -> (ReadHalf<Conn>, Stream, ReadEnd) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut s = Stream::default();
    let end = loop {
        let wait = match *deadline.borrow() {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => Duration::from_millis(100),
        };
        match timeout(wait, rd.read(&mut buf)).await {
            // A 100 ms poll that ran out before the deadline was set (or
            // before it passed) is no verdict: read on.
            Err(_) if deadline.borrow().is_some_and(|d| Instant::now() >= d) => {
                break ReadEnd::Silent;
            }
            Err(_) => {}
            Ok(Ok(0)) => break ReadEnd::Eof,
            Ok(Ok(n)) => {
                first.store(true, Ordering::SeqCst);
                if s.differs_at.is_none() {
                    s.differs_at = first_difference(&plan.bytes, s.got, &buf[..n]);
                }
                s.got += n;
                echoed.store(s.got, Ordering::SeqCst);
                progress.notify_one();
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => break ReadEnd::Error(io_err(&e)),
        }
    };
    (rd, s, end)
}

pub async fn shutdown_in_flight(ctx: &Ctx) -> Outcome {
    const CLIENTS: usize = 4;
    /// Most bytes one client streams (it stops at SIGTERM long before).
    const CAP: usize = 256 << 20;
    let limit = ctx.server_grace + MARGIN;
    let expected = format!(
        "{CLIENTS} clients stream frames (writing and reading, up to 16 MiB ahead) when SIGTERM arrives; every frame the server's kernel had received comes back byte for byte, then EOF (no RST); the process exits within the server's --grace {} + {}",
        fmt_duration(ctx.server_grace),
        fmt_duration(MARGIN)
    );
    let Some(pid) = ctx.pid else {
        return Outcome::Skip("needs --server-pid".into());
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (deadline_tx, deadline_rx) = tokio::sync::watch::channel(None);
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let (conn, fd) = match ctx.target.connect_fd(Opts::default()).await {
            Ok(c) => c,
            Err(e) => {
                return Outcome::new(
                    false,
                    expected,
                    format!("client {}: connect failed: {}", i + 1, io_err(&e)),
                );
            }
        };
        let mut rng = SplitMix64::new(ctx.seed.wrapping_add(200 + i as u64));
        let plan = Arc::new(Planned::new(&mut rng, ctx.framing, 1 << 20, 2000));
        let (rd, wr) = tokio::io::split(conn);
        let written = Arc::new(AtomicUsize::new(0));
        let echoed = Arc::new(AtomicUsize::new(0));
        let progress = Arc::new(tokio::sync::Notify::new());
        let first = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(stream_writer(
            wr,
            plan.clone(),
            written.clone(),
            echoed.clone(),
            progress.clone(),
            stop_rx.clone(),
            CAP,
        ));
        let reader = tokio::spawn(stream_reader(
            rd,
            plan.clone(),
            first.clone(),
            echoed,
            progress,
            deadline_rx.clone(),
        ));
        clients.push((fd, plan, written, first, writer, reader));
    }
    // Stream until every client is served (an iterative server takes only
    // the first; the rest wait in the backlog), at most SERVED_WAIT, then
    // 100 ms more so every served connection is in full flow.
    let start = Instant::now();
    while start.elapsed() < SERVED_WAIT && !clients.iter().all(|c| c.3.load(Ordering::SeqCst)) {
        sleep(Duration::from_millis(10)).await;
    }
    sleep(Duration::from_millis(100)).await;
    // What the server's kernel has received from each client: written so
    // far minus what it has not acknowledged. Read `written` first: bytes
    // written after it only make SIOCOUTQ larger, so the bound stays safe.
    let slack = tls_slack(ctx);
    let served: Vec<bool> = clients.iter().map(|c| c.3.load(Ordering::SeqCst)).collect();
    let owed: Vec<usize> = clients
        .iter()
        .map(|(fd, plan, written, ..)| {
            let w = written.load(Ordering::SeqCst);
            let unacked = unacked_bytes(*fd).unwrap_or(w);
            plan.whole_below_cyclic(w.saturating_sub(unacked).saturating_sub(slack))
        })
        .collect();
    let cut_early: Vec<String> = clients
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(tcp_state(c.0), Some(TcpState::CloseWait | TcpState::Closed)))
        .map(|(i, _)| format!("client {}", i + 1))
        .collect();
    let signalled = Instant::now();
    sigterm(pid);
    // Stop sending now: the server owes what it had, not what we would
    // go on pushing.
    let _ = stop_tx.send(true);
    let _ = deadline_tx.send(Some(signalled + limit + Duration::from_secs(1)));
    let gone = wait_gone(pid, signalled, limit);
    let finish = async {
        let mut out = Vec::with_capacity(CLIENTS);
        for (_, plan, written, _, writer, reader) in clients {
            let wr = writer.await.ok();
            let r = reader.await.ok();
            let w = written.load(Ordering::SeqCst);
            if let (Some((wr, _)), Some((rd, s, end))) = (wr, r) {
                // Our FIN, now that theirs came: the server may be waiting
                // for it before it close()s.
                drop(rd.unsplit(wr));
                out.push((plan, w, s, end));
            } else {
                out.push((
                    plan,
                    w,
                    Stream::default(),
                    ReadEnd::Error("task failed".into()),
                ));
            }
        }
        out
    };
    let (results, gone) = tokio::join!(finish, gone);
    let mut problems = cut_early
        .iter()
        .map(|c| format!("{c} was closed by the server before SIGTERM"))
        .collect::<Vec<_>>();
    let (mut written_total, mut back) = (0usize, 0usize);
    for (i, ((plan, w, s, end), owed)) in results.iter().zip(&owed).enumerate() {
        written_total += w;
        back += s.got;
        let name = format!("client {}", i + 1);
        if let Some(at) = s.differs_at {
            problems.push(format!(
                "{name}: echo differs from what was sent at byte {at}"
            ));
        } else if s.got > *w {
            problems.push(format!(
                "{name}: {} echoed, more than the {} sent",
                s.got, w
            ));
        } else if s.got == 0 && !served[i] {
            // Never accepted: the kernel may reset it when the listener
            // closes. Only a partial echo would be wrong.
        } else if s.got < *owed {
            problems.push(format!(
                "{name}: {} of {} owed came back, then {}",
                fmt_bytes(s.got as u64),
                fmt_bytes(*owed as u64),
                end.describe()
            ));
        } else if !plan.is_boundary_cyclic(s.got) {
            problems.push(format!(
                "{name}: the echo stops inside a frame, after {} B, then {}",
                s.got,
                end.describe()
            ));
        } else if !matches!(end, ReadEnd::Eof) {
            problems.push(format!(
                "{name}: all {} owed back, then {} instead of EOF",
                fmt_bytes(*owed as u64),
                end.describe()
            ));
        }
    }
    let served_n = served.iter().filter(|s| **s).count();
    if served_n == 0 {
        problems.push("no client was served before SIGTERM".into());
    }
    let owed_total: usize = owed.iter().sum();
    let mut got = format!(
        "{served_n}/{CLIENTS} served; {} written, {} of it received by the server's kernel at SIGTERM, {} echoed; {}",
        fmt_bytes(written_total as u64),
        fmt_bytes(owed_total as u64),
        fmt_bytes(back as u64),
        exit_phrase(gone, limit)
    );
    if !problems.is_empty() {
        got.push_str("; ");
        got.push_str(&problems.join("; "));
    }
    Outcome::new(problems.is_empty() && gone.is_some(), expected, got)
}

/// A well-behaved client of `shutdown-never-reader`.
struct Polite {
    conn: Conn,
    /// Its second frame, sent and not yet read back (None: not served).
    in_flight: Option<Vec<u8>>,
    /// Both frames, owed in full if the server takes it late.
    both: Vec<u8>,
}

async fn polite(ctx: &Ctx, seed: u64) -> Result<Polite, String> {
    let mut conn = ctx
        .target
        .connect()
        .await
        .map_err(|e| format!("connect failed: {}", io_err(&e)))?;
    let mut rng = SplitMix64::new(seed);
    let one = encode_all(ctx.framing, &[payload(&mut rng, 100, ctx.framing)]);
    let two = encode_all(ctx.framing, &[payload(&mut rng, 100, ctx.framing)]);
    let mut both = one.clone();
    both.extend_from_slice(&two);
    conn.write_all(&one)
        .await
        .map_err(|e| format!("write failed: {}", io_err(&e)))?;
    let _ = conn.flush().await;
    let mut echo = vec![0u8; one.len()];
    match timeout(SERVED_WAIT, conn.read_exact(&mut echo)).await {
        Ok(Ok(_)) if echo == one => {}
        Ok(Ok(_)) => return Err("first echo differs from what was sent".into()),
        Ok(Err(e)) => return Err(format!("first echo: {}", io_err(&e))),
        // Not served yet (backlog): owed nothing or everything.
        Err(_) => {
            return Ok(Polite {
                conn,
                in_flight: None,
                both,
            });
        }
    }
    conn.write_all(&two)
        .await
        .map_err(|e| format!("write failed: {}", io_err(&e)))?;
    let _ = conn.flush().await;
    Ok(Polite {
        conn,
        in_flight: Some(two),
        both,
    })
}

pub async fn shutdown_never_reader(ctx: &Ctx) -> Outcome {
    const POLITE: usize = 3;
    // More than every buffer between us can hold: it keeps sending.
    const FLOOD: usize = 64 << 20;
    let limit = ctx.server_grace + MARGIN;
    let expected = format!(
        "a client writes several MiB and never reads, {POLITE} others have one frame in flight; on SIGTERM the {POLITE} get their echo and EOF, and the process exits within the server's --grace {} + {}",
        fmt_duration(ctx.server_grace),
        fmt_duration(MARGIN)
    );
    let Some(pid) = ctx.pid else {
        return Outcome::Skip("needs --server-pid".into());
    };
    // The never-reader first, so even a one-at-a-time server takes it.
    let (conn, _) = match ctx.target.connect_fd(SMALL_BUFFERS).await {
        Ok(c) => c,
        Err(e) => return Outcome::new(false, expected, format!("connect failed: {}", io_err(&e))),
    };
    let mut rng = SplitMix64::new(ctx.seed.wrapping_add(300));
    let plan = Planned::new(&mut rng, ctx.framing, FLOOD, 16 * 1024);
    let (rd, mut wr) = tokio::io::split(conn);
    let (flooded, _) = write_until_blocked(&mut wr, &plan.bytes[..4 << 20]).await;
    // It goes on sending (slowly: the server pushes back) through the
    // shutdown, which must not wait for it; and it stays open until the
    // case is over (closing it would let the server off the hook).
    let rest = plan.bytes[flooded..].to_vec();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let flood = tokio::spawn(async move {
        let mut sent = 0;
        let err = loop {
            match wr.write(&rest[sent..]).await {
                Ok(0) => break None,
                Ok(n) => sent += n,
                Err(e) => break Some(io_err(&e)),
            }
            if sent >= rest.len() {
                break None;
            }
        };
        let _ = stopped.await;
        drop(rd.unsplit(wr));
        (sent, err)
    });
    let clients = futures_join(
        (0..POLITE)
            .map(|i| polite(ctx, ctx.seed.wrapping_add(310 + i as u64)))
            .collect(),
    )
    .await;
    let mut polite_clients = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        match c {
            Ok(c) => polite_clients.push(c),
            Err(e) => {
                flood.abort();
                return Outcome::new(false, expected, format!("client {}: {e}", i + 1));
            }
        }
    }
    let served = polite_clients
        .iter()
        .filter(|c| c.in_flight.is_some())
        .count();
    let signalled = Instant::now();
    sigterm(pid);
    let deadline = signalled + limit + Duration::from_secs(1);
    let reads = futures_join(
        polite_clients
            .into_iter()
            .map(|mut c| async move {
                let (mut rd, wr) = tokio::io::split(c.conn);
                let mut got = Vec::new();
                let end = read_to_end(&mut rd, &mut got, deadline).await;
                c.conn = rd.unsplit(wr);
                (c, got, end)
            })
            .collect(),
    );
    let (reads, gone) = tokio::join!(reads, wait_gone(pid, signalled, limit));
    let _ = stop.send(());
    let mut flood = flood;
    let waited = timeout(Duration::from_millis(500), &mut flood).await;
    // Still blocked in write(): dropping the task closes the socket.
    flood.abort();
    let flood_end = match waited {
        Ok(Ok((sent, Some(e)))) => format!(
            "never-reader wrote {} then {e}",
            fmt_bytes((flooded + sent) as u64)
        ),
        Ok(Ok((sent, None))) => {
            format!("never-reader wrote {}", fmt_bytes((flooded + sent) as u64))
        }
        _ => format!(
            "never-reader wrote {} and was still blocked",
            fmt_bytes(flooded as u64)
        ),
    };
    let mut problems = Vec::new();
    for (i, (c, got, end)) in reads.iter().enumerate() {
        let name = format!("client {}", i + 1);
        let clean = matches!(end, ReadEnd::Eof);
        match &c.in_flight {
            Some(frame) if got == frame && clean => {}
            Some(frame) if got == frame => {
                problems.push(format!("{name}: echo back, then {}", end.describe()));
            }
            Some(frame) => problems.push(format!(
                "{name}: {} of the {} B frame in flight came back, then {}",
                got.len(),
                frame.len(),
                end.describe()
            )),
            // Not served before SIGTERM: nothing (the backlog is reset) or
            // both frames and EOF.
            None if got.is_empty() || (got == &c.both && clean) => {}
            None => problems.push(format!(
                "{name} (taken late): {} B of {} B, then {}",
                got.len(),
                c.both.len(),
                end.describe()
            )),
        }
    }
    let mut got = format!(
        "{} flooded before SIGTERM; {served}/{POLITE} polite clients served; {}; {flood_end}",
        fmt_bytes(flooded as u64),
        exit_phrase(gone, limit)
    );
    if !problems.is_empty() {
        got.push_str("; ");
        got.push_str(&problems.join("; "));
    }
    Outcome::new(problems.is_empty() && gone.is_some(), expected, got)
}

pub async fn stall_timeout(ctx: &Ctx) -> Outcome {
    const FLOOD: usize = 64 << 20;
    let limit = ctx.server_stall + MARGIN;
    let expected = format!(
        "a client that sends and stops reading is closed within the server's --stall-timeout {} + {} of its writes blocking, while another client is echoed; the server stays up",
        fmt_duration(ctx.server_stall),
        fmt_duration(MARGIN)
    );
    let Some(pid) = ctx.pid else {
        return Outcome::Skip("needs --server-pid".into());
    };
    // The staller first, and served (one echo read back) before the other
    // client connects: a one-at-a-time server is then busy with it.
    let (mut a, fd) = match ctx.target.connect_fd(SMALL_BUFFERS).await {
        Ok(c) => c,
        Err(e) => return Outcome::new(false, expected, format!("connect failed: {}", io_err(&e))),
    };
    let mut rng = SplitMix64::new(ctx.seed.wrapping_add(400));
    let hello = encode_all(ctx.framing, &[payload(&mut rng, 10, ctx.framing)]);
    let mut echo = vec![0u8; hello.len()];
    let greeted = timeout(Duration::from_secs(5), async {
        a.write_all(&hello).await?;
        a.flush().await?;
        a.read_exact(&mut echo).await
    })
    .await;
    if !matches!(greeted, Ok(Ok(_))) || echo != hello {
        return Outcome::new(
            false,
            expected,
            "the stalling client's first frame was not echoed",
        );
    }
    let b = match ctx.target.connect().await {
        Ok(c) => c,
        Err(e) => {
            return Outcome::new(
                false,
                expected,
                format!("second client: connect failed: {}", io_err(&e)),
            );
        }
    };
    let plan = Planned::new(&mut rng, ctx.framing, FLOOD, 16 * 1024);
    let (rd, mut wr) = tokio::io::split(a);
    let (flooded, write_error) = write_until_blocked(&mut wr, &plan.bytes).await;
    if flooded >= plan.bytes.len() {
        return Outcome::new(
            false,
            expected,
            format!(
                "{} accepted without reading: no back-pressure, nothing stalls",
                fmt_bytes(flooded as u64)
            ),
        );
    }
    let blocked = Instant::now();
    // A: keep one write pending (a RST fails it) and look at the socket's
    // TCP state every 20 ms (a FIN moves it to CLOSE_WAIT) without reading.
    let mut at = flooded;
    let watch = async {
        if let Some(e) = write_error {
            return Some((Duration::ZERO, io_err(&e)));
        }
        loop {
            if blocked.elapsed() > limit {
                return None;
            }
            // A fresh write() each round: dropping one that is still
            // pending is harmless (tokio's write is cancel-safe).
            let chunk_end = (at + 64 * 1024).min(plan.bytes.len());
            tokio::select! {
                r = wr.write(&plan.bytes[at..chunk_end]) => match r {
                    Err(e) => return Some((blocked.elapsed(), io_err(&e))),
                    // The server read a little again: keep the pressure on.
                    Ok(n) => {
                        at += n;
                        if n == 0 || at >= plan.bytes.len() {
                            return None;
                        }
                    }
                },
                _ = sleep(Duration::from_millis(20)) => match tcp_state(fd) {
                    Some(TcpState::CloseWait) => return Some((blocked.elapsed(), "FIN".into())),
                    Some(TcpState::Closed) => return Some((blocked.elapsed(), "RST".into())),
                    _ => {}
                },
            }
        }
    };
    let mut rng_b = SplitMix64::new(ctx.seed.wrapping_add(401));
    let frame = encode_all(ctx.framing, &[payload(&mut rng_b, 64, ctx.framing)]);
    let served_b = async {
        let mut b = b;
        let r = timeout(limit + Duration::from_secs(5), async {
            b.write_all(&frame).await?;
            b.flush().await?;
            let mut echo = vec![0u8; frame.len()];
            b.read_exact(&mut echo).await?;
            Ok::<_, std::io::Error>(echo)
        })
        .await;
        match r {
            Ok(Ok(echo)) if echo == frame => Ok(blocked.elapsed()),
            Ok(Ok(_)) => Err("echo differs from what was sent".to_string()),
            Ok(Err(e)) => Err(io_err(&e)),
            Err(_) => Err("no echo".to_string()),
        }
    };
    let (closed, b_result) = tokio::join!(watch, served_b);
    drop(rd);
    let alive = conn::process_alive(pid);
    let mut got = format!(
        "{} accepted before the writes blocked; ",
        fmt_bytes(flooded as u64)
    );
    match &closed {
        Some((t, how)) => got.push_str(&format!(
            "staller closed ({how}) {} after its writes blocked",
            fmt_duration(*t)
        )),
        None => got.push_str(&format!(
            "staller still open {} after its writes blocked",
            fmt_duration(limit)
        )),
    }
    match (&b_result, &closed) {
        // TCP_INFO is sampled every 20 ms: "meanwhile" only beyond that.
        (Ok(t), Some((c, _))) if *t + Duration::from_millis(25) < *c => got.push_str(&format!(
            "; other client echoed meanwhile ({})",
            fmt_duration(*t)
        )),
        (Ok(t), _) => got.push_str(&format!(
            "; other client echoed {} after the block",
            fmt_duration(*t)
        )),
        (Err(e), _) => got.push_str(&format!("; other client: {e}")),
    }
    if !alive {
        got.push_str("; the server process died");
    }
    Outcome::new(closed.is_some() && b_result.is_ok() && alive, expected, got)
}

/// Run futures concurrently on this task and collect their outputs in
/// order (a small `join_all`, to avoid a dependency for one function).
async fn futures_join<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_in_an_endless_repetition_are_found_across_the_wrap() {
        let plan = b"abcdef";
        assert_eq!(first_difference(plan, 0, b"abcdefabc"), None);
        assert_eq!(first_difference(plan, 4, b"efabcdefab"), None);
        assert_eq!(first_difference(plan, 4, b"efaXcd"), Some(7));
        assert_eq!(first_difference(plan, 0, b"Xbc"), Some(0));
    }

    #[test]
    fn frame_boundaries_repeat_with_the_plan() {
        let mut rng = SplitMix64::new(7);
        let p = Planned::new(&mut rng, Framing::Length, 10_000, 100);
        let len = p.bytes.len();
        assert!(
            p.is_boundary_cyclic(0) && p.is_boundary_cyclic(len) && p.is_boundary_cyclic(2 * len)
        );
        let first = p.ends[0];
        assert!(p.is_boundary_cyclic(len + first));
        assert!(!p.is_boundary_cyclic(len + first - 1));
        assert_eq!(p.whole_below_cyclic(len + first - 1), len);
        assert_eq!(p.whole_below_cyclic(len + first), len + first);
    }
}
