//! The engine behind `loadgen run`: one tokio task per connection, each
//! split into a *writer* and a *reader* that run concurrently.
//!
//! ```text
//!            window (K permits)              channel: (seq, intended time)
//!  writer ── acquire ─► encode ─► write_all ────────────────────────────► reader
//!    ▲                                                                     │
//!    └──────────────── add_permits(1) after a verified echo ◄──────────────┘
//! ```
//!
//! Why two halves and not "write K frames, then read K echoes": with big
//! frames the server's echo fills *our* receive buffer while we are still
//! blocked writing, the server stops reading because its writes block, and
//! both ends wait for each other forever. Reading and writing at the same
//! time is the only deadlock-free way to keep K frames in flight.
//!
//! Closed loop (the default): a new request goes out when an echo frees a
//! permit, so a slow server slows the client down and hides part of its
//! slowness: the "coordinated omission" trap. Open loop (`--rate`): requests
//! are *scheduled* at fixed times and latency is measured from the scheduled
//! time, so time spent waiting for a stalled server counts (as in wrk2).
//!
//! All connections first connect, then wait at a start line; the clock of
//! the warm-up and of `--duration` starts when the last one is ready, so
//! 10,000 connects do not eat into the measurement.
//!
//! The engine's configuration ([`RunConfig`], [`Proto`], [`Stop`]) is
//! defined here, with the engine: `run.rs` (the CLI) builds one from its
//! flags and `compare` and the tests build one directly; the engine
//! depends on nothing of theirs.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::{Bytes, BytesMut};
use common::framing::{Decoder, READ_CHUNK};
use common::{FrameError, Framing};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket, UnixStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::timeout;

use crate::payload::Payloads;
use crate::tls::TlsClient;

/// Transport to drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// Byte stream, framed with `--framing`.
    #[default]
    Tcp,
    /// One datagram per request (`--framing` is ignored: a datagram is a frame).
    Udp,
}

/// When a run stops sending.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stop {
    /// Send for this long after the warm-up.
    Duration(Duration),
    /// Send exactly this many requests in all.
    Requests(u64),
}

/// Everything a run needs; `RunArgs` turns into this, and `compare` and the
/// tests build it directly.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The server's TCP (or UDP) address; ignored when `unix` is set.
    pub addr: SocketAddr,
    /// A Unix domain stream socket to connect to instead (`--addr
    /// unix:PATH`): the same byte stream, no TCP/IP underneath.
    pub unix: Option<PathBuf>,
    pub proto: Proto,
    pub framing: Framing,
    pub conns: usize,
    pub size: usize,
    pub stop: Stop,
    pub pipeline: usize,
    pub rate: Option<f64>,
    pub churn: Option<u64>,
    pub warmup: Duration,
    pub timeout: Duration,
    pub threads: usize,
    pub tls: Option<TlsClient>,
    pub seed: u64,
    /// Connects (and TLS handshakes) in progress at once. 10,000 SYNs at
    /// once would overflow the server's accept backlog (1024) and turn into
    /// one-second SYN retransmits: that measures the backlog, not the server.
    pub connect_concurrency: usize,
    /// Show a progress bar (only honoured when stderr is a terminal).
    pub progress: bool,
    /// Write the latency as an HdrHistogram interval log here
    /// (`--hist-log`, read by `loadgen merge`; see [`crate::histlog`]).
    pub hist_log: Option<PathBuf>,
    /// One interval of that log per this long.
    pub hist_interval: Duration,
}

impl RunConfig {
    /// A closed-loop TCP run against `addr` with the defaults of `loadgen run`.
    pub fn new(addr: SocketAddr) -> Self {
        RunConfig {
            addr,
            unix: None,
            proto: Proto::Tcp,
            framing: Framing::Line,
            conns: 10,
            size: 64,
            stop: Stop::Duration(Duration::from_secs(5)),
            pipeline: 1,
            rate: None,
            churn: None,
            warmup: Duration::ZERO,
            timeout: Duration::from_secs(5),
            threads: 1,
            tls: None,
            seed: 1,
            connect_concurrency: 256,
            progress: false,
            hist_log: None,
            hist_interval: Duration::from_secs(1),
        }
    }

    /// The same run against a Unix domain socket at `path`.
    pub fn new_unix(path: impl Into<PathBuf>) -> Self {
        let mut c = RunConfig::new(SocketAddr::from(([0, 0, 0, 0], 0)));
        c.unix = Some(path.into());
        c
    }

    /// Where the run goes, as the report and the errors say it:
    /// `127.0.0.1:7004` or `unix:/tmp/echo.sock`.
    pub fn target(&self) -> String {
        match &self.unix {
            Some(p) => format!("unix:{}", p.display()),
            None => self.addr.to_string(),
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.conns == 0 || self.conns > 100_000 {
            bail!("--conns must be between 1 and 100000");
        }
        if self.pipeline == 0 {
            bail!("--pipeline must be at least 1");
        }
        if self.size > u32::MAX as usize || (self.proto == Proto::Udp && self.size > 65_507) {
            bail!(
                "--size {} is too large (a UDP datagram holds 65507 bytes)",
                self.size
            );
        }
        if self.size == 0 && (self.framing == Framing::Raw || self.proto == Proto::Udp) {
            bail!("--size 0 only makes sense with line or length framing");
        }
        if let Some(r) = self.rate
            && !(r.is_finite() && r > 0.0)
        {
            bail!("--rate must be a positive number of requests per second");
        }
        if self.churn == Some(0) {
            bail!("--churn must be at least 1");
        }
        if self.tls.is_some() && self.proto == Proto::Udp {
            bail!("--tls works over TCP only");
        }
        if self.unix.is_some() && self.proto == Proto::Udp {
            bail!("--addr unix:PATH is a stream socket: drop --proto udp");
        }
        if self.unix.is_some() && self.tls.is_some() {
            bail!("--tls works over TCP only, not over unix:PATH");
        }
        Ok(())
    }
}

/// Most error messages kept for the report.
const MAX_SAMPLES: usize = 10;
/// Largest batch of pipelined frames handed to one `write()`.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Tallies, bumped by every connection with `Relaxed` atomics (they are
/// counts, nothing else is ordered by them).
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub verified: AtomicU64,
    pub measured: AtomicU64,
    pub wrong: AtomicU64,
    pub missing: AtomicU64,
    pub connect_failures: AtomicU64,
    pub early_close: AtomicU64,
    pub timeouts: AtomicU64,
    pub io: AtomicU64,
    pub protocol: AtomicU64,
    pub connects: AtomicU64,
    /// Connections with no echo completed after the warm-up.
    pub starved: AtomicU64,
    /// Nanoseconds from the start line to the last measured echo.
    pub last_measured_ns: AtomicU64,
}

/// The phases of a run, fixed when the last connection is ready.
#[derive(Debug, Clone, Copy)]
struct Timeline {
    start: Instant,
    warmup_end: Instant,
    end: Option<Instant>,
}

/// What all connections share.
#[derive(Debug)]
pub struct Shared {
    pub cfg: RunConfig,
    /// When the run was set up (connects included).
    pub start: Instant,
    pub counters: Counters,
    /// Request latency, nanoseconds.
    pub latency: Mutex<Histogram<u64>>,
    /// Connect (+ handshake) time, nanoseconds.
    pub connect: Mutex<Histogram<u64>>,
    pub samples: Mutex<Vec<String>>,
    connect_slots: Semaphore,
    ready: AtomicUsize,
    active: AtomicUsize,
    go: watch::Sender<Option<Timeline>>,
}

impl Shared {
    pub fn new(cfg: RunConfig) -> Result<Self> {
        let hist = || Histogram::new_with_bounds(1, 3_600_000_000_000, 3).context("histogram");
        Ok(Shared {
            connect_slots: Semaphore::new(cfg.connect_concurrency.max(1)),
            cfg,
            start: Instant::now(),
            counters: Counters::default(),
            latency: Mutex::new(hist()?),
            connect: Mutex::new(hist()?),
            samples: Mutex::new(Vec::new()),
            ready: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            go: watch::channel(None).0,
        })
    }

    fn sample(&self, msg: String) {
        log::debug!("{msg}");
        if let Ok(mut s) = self.samples.lock()
            && s.len() < MAX_SAMPLES
        {
            s.push(msg);
        }
    }

    /// Wait at the start line until every connection has tried to connect.
    async fn arrive(&self) -> Timeline {
        if self.ready.fetch_add(1, Relaxed) + 1 == self.active.load(Relaxed) {
            let start = Instant::now();
            let warmup_end = start + self.cfg.warmup;
            let end = match self.cfg.stop {
                Stop::Duration(d) => Some(warmup_end + d),
                Stop::Requests(_) => None,
            };
            self.go.send_replace(Some(Timeline {
                start,
                warmup_end,
                end,
            }));
        }
        let mut rx = self.go.subscribe();
        // The sender lives in `self`, so `wait_for` cannot see it closed.
        let tl = match rx.wait_for(Option::is_some).await {
            Ok(v) => *v,
            Err(_) => None,
        };
        tl.unwrap_or_else(|| {
            let now = Instant::now();
            Timeline {
                start: now,
                warmup_end: now,
                end: Some(now),
            }
        })
    }
}

/// Drive every connection to the end. Errors are counted in `sh`, never
/// returned: one connection's failure must not stop the others.
pub async fn drive(sh: Arc<Shared>) {
    let cfg = &sh.cfg;
    let budgets: Vec<Option<u64>> = (0..cfg.conns as u64)
        .map(|i| match cfg.stop {
            Stop::Requests(n) => {
                let c = cfg.conns as u64;
                Some(n / c + u64::from(i < n % c))
            }
            Stop::Duration(_) => None,
        })
        .collect();
    let active = budgets.iter().filter(|b| **b != Some(0)).count();
    sh.active.store(active, Relaxed);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, budget) in budgets.into_iter().enumerate() {
        if budget != Some(0) {
            tasks.spawn(connection(sh.clone(), i, budget));
        }
    }
    while let Some(result) = tasks.join_next().await {
        if let Err(e) = result {
            sh.sample(format!("a connection task failed: {e}"));
        }
    }
}

/// An open connection of any kind.
enum Conn {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// A Unix domain stream: the same session code drives it (it is
    /// generic over AsyncRead + AsyncWrite).
    Unix(UnixStream),
    Udp(UdpSocket),
}

/// Open-loop schedule of one connection.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    next: Instant,
    interval: Duration,
}

/// One connection's life: connect, run sessions (one, or one per `--churn`
/// requests), stop at the end of the run or at the first error.
async fn connection(sh: Arc<Shared>, idx: usize, budget: Option<u64>) {
    let cfg = &sh.cfg;
    let payloads = Payloads::new(cfg.size, idx as u64, cfg.seed);
    let mut seq = 0u64;
    let mut remaining = budget;
    let mut first = true;
    let mut timeline = None;
    let mut schedule = None;
    let measured = AtomicU64::new(0);
    // However the connection ends, note whether it was served at all.
    let _starved = Starved {
        sh: &sh,
        measured: &measured,
    };
    loop {
        let conn = connect(&sh).await;
        let tl = match timeline {
            Some(tl) => tl,
            None => {
                let tl = sh.arrive().await;
                // Spread the connections' first sends over one interval.
                schedule = cfg.rate.map(|rate| Schedule {
                    next: tl.start + Duration::from_secs_f64(idx as f64 / rate),
                    interval: Duration::from_secs_f64(cfg.conns as f64 / rate),
                });
                timeline = Some(tl);
                tl
            }
        };
        let conn = match conn {
            Ok(c) => c,
            Err(msg) => {
                sh.counters.connect_failures.fetch_add(1, Relaxed);
                sh.sample(format!("connection {idx}: {msg}"));
                return;
            }
        };
        if !first && tl.end.is_some_and(|e| Instant::now() >= e) {
            return;
        }
        first = false;
        let session_budget = match (cfg.churn, remaining) {
            (Some(k), Some(r)) => Some(k.min(r)),
            (Some(k), None) => Some(k),
            (None, r) => r,
        };
        let mut s = Session {
            sh: &sh,
            idx,
            payloads: &payloads,
            seq: &mut seq,
            budget: session_budget,
            schedule: &mut schedule,
            tl,
            measured: &measured,
        };
        let result = match conn {
            Conn::Tcp(stream) => s.tcp(stream).await,
            Conn::Tls(stream) => s.tcp(stream).await,
            Conn::Unix(stream) => s.tcp(stream).await,
            Conn::Udp(sock) => s.udp(sock).await,
        };
        let Ok(sent) = result else { return };
        if let Some(r) = remaining.as_mut() {
            *r = r.saturating_sub(sent);
            if *r == 0 {
                return;
            }
        }
        if cfg.churn.is_none() || tl.end.is_some_and(|e| Instant::now() >= e) || sent == 0 {
            return;
        }
    }
}

/// Counts a connection that got no echo at all between the end of the
/// warm-up and the end of the run (echoes that only arrive once the load
/// stops do not count): a
/// server that serves some clients and starves others looks fine in the
/// averages, so the starved ones are reported on their own.
struct Starved<'a> {
    sh: &'a Shared,
    measured: &'a AtomicU64,
}

impl Drop for Starved<'_> {
    fn drop(&mut self) {
        if self.measured.load(Relaxed) == 0 {
            self.sh.counters.starved.fetch_add(1, Relaxed);
        }
    }
}

/// Connect (and handshake), waiting for one of the connect slots first.
async fn connect(sh: &Shared) -> Result<Conn, String> {
    let cfg = &sh.cfg;
    let _slot = sh
        .connect_slots
        .acquire()
        .await
        .map_err(|_| "connect slots closed".to_string())?;
    let t0 = Instant::now();
    let attempt = async {
        if let Some(path) = &cfg.unix {
            // connect(2) on an AF_UNIX socket: no handshake on the wire,
            // no Nagle to turn off; the kernel links the two sockets.
            return Ok::<_, std::io::Error>(Conn::Unix(UnixStream::connect(path).await?));
        }
        match cfg.proto {
            Proto::Udp => {
                let local: SocketAddr = if cfg.addr.is_ipv6() {
                    "[::]:0".parse().map_err(|_| std::io::ErrorKind::Other)?
                } else {
                    "0.0.0.0:0".parse().map_err(|_| std::io::ErrorKind::Other)?
                };
                let sock = UdpSocket::bind(local).await?;
                // A connected UDP socket only accepts datagrams from the
                // server, and an ICMP "port unreachable" comes back as
                // ECONNREFUSED on the next recv instead of silence.
                sock.connect(cfg.addr).await?;
                Ok(Conn::Udp(sock))
            }
            Proto::Tcp => {
                let stream = TcpStream::connect(cfg.addr).await?;
                // Small frames must leave at once; Nagle's algorithm would
                // hold them back waiting for the previous echo's ACK.
                stream.set_nodelay(true)?;
                match &cfg.tls {
                    None => Ok(Conn::Tcp(stream)),
                    Some(tls) => {
                        let s = tls
                            .connector
                            .connect(tls.server_name.clone(), stream)
                            .await?;
                        Ok::<_, std::io::Error>(Conn::Tls(Box::new(s)))
                    }
                }
            }
        }
    };
    match timeout(cfg.timeout, attempt).await {
        Err(_) => Err(format!(
            "connect to {} timed out after {:?}",
            cfg.target(),
            cfg.timeout
        )),
        Ok(Err(e)) => Err(format!("connect to {}: {e}", cfg.target())),
        Ok(Ok(conn)) => {
            sh.counters.connects.fetch_add(1, Relaxed);
            if let Ok(mut h) = sh.connect.lock() {
                h.saturating_record(t0.elapsed().as_nanos() as u64);
            }
            Ok(conn)
        }
    }
}

/// Latencies are buffered per connection and merged into the shared
/// histogram 256 at a time, so 10,000 connections do not queue on its lock.
struct LatencyBuf<'a> {
    sh: &'a Shared,
    buf: Vec<u64>,
}

impl LatencyBuf<'_> {
    fn record(&mut self, d: Duration) {
        self.buf.push(d.as_nanos() as u64);
        if self.buf.len() == 256 {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if let Ok(mut h) = self.sh.latency.lock() {
            for v in self.buf.drain(..) {
                h.saturating_record(v);
            }
        }
    }
}

impl Drop for LatencyBuf<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Cuts echoes off the received bytes: the shared sans-I/O decoder for
/// `line` and `length`; for `raw` there are no frame boundaries on the wire,
/// so an echo is simply the next `size` bytes.
struct Cutter {
    decoder: Option<Decoder>,
    size: usize,
}

impl Cutter {
    fn new(framing: Framing, size: usize) -> Self {
        Cutter {
            // The limit is the exact size we sent: a longer frame is wrong
            // anyway, and this way a broken server cannot make us buffer
            // megabytes before we notice.
            decoder: (framing != Framing::Raw).then(|| Decoder::new(framing, size)),
            size,
        }
    }

    fn cut(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        match &mut self.decoder {
            Some(d) => d.decode(buf),
            None if buf.len() >= self.size => Ok(Some(buf.split_to(self.size).freeze())),
            None => Ok(None),
        }
    }
}

/// How a TCP session's reader stopped.
enum End {
    Done,
    Wrong(String),
    Timeout,
    Eof { partial: usize },
    Io(std::io::Error),
    Protocol(FrameError),
    Extra(usize),
    WriteFailed(std::io::Error),
}

/// One connection from connect to close.
struct Session<'a> {
    sh: &'a Shared,
    idx: usize,
    payloads: &'a Payloads,
    seq: &'a mut u64,
    budget: Option<u64>,
    schedule: &'a mut Option<Schedule>,
    tl: Timeline,
    /// Echoes of this connection (all its sessions) completed after the warm-up.
    measured: &'a AtomicU64,
}

impl Session<'_> {
    /// Returns how many requests were sent, or Err after counting an error.
    async fn tcp<S: AsyncRead + AsyncWrite + Unpin>(&mut self, stream: S) -> Result<u64, ()> {
        let sh = self.sh;
        let cfg = &sh.cfg;
        let tl = self.tl;
        let payloads = self.payloads;
        let budget = self.budget;
        let first_seq = *self.seq;
        let (mut rd, mut wr) = tokio::io::split(stream);
        let window = Semaphore::new(cfg.pipeline);
        let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Instant)>();
        let got = AtomicU64::new(0);
        let conn_measured = self.measured;
        let seq = &mut *self.seq;
        let schedule = &mut *self.schedule;

        let writer = async {
            let tx = tx; // moved in: dropping it tells the reader we are done
            let mut out = BytesMut::new();
            let mut pushed = 0u64;
            loop {
                if budget.is_some_and(|b| pushed >= b) {
                    break;
                }
                let mut intended = match schedule.as_mut() {
                    Some(s) => {
                        if tl.end.is_some_and(|e| s.next >= e) {
                            break;
                        }
                        tokio::time::sleep_until(s.next.into()).await;
                        let t = s.next;
                        s.next += s.interval;
                        Some(t)
                    }
                    None if tl.end.is_some_and(|e| Instant::now() >= e) => break,
                    None => None,
                };
                // Closed by nobody: Err cannot happen while we hold `window`.
                let Ok(permit) = window.acquire().await else {
                    break;
                };
                permit.forget();
                let mut batch = 0u64;
                loop {
                    let t = intended.unwrap_or_else(Instant::now);
                    if tx.send((*seq, t)).is_err() {
                        return Ok(());
                    }
                    payloads.encode(cfg.framing, *seq, &mut out);
                    *seq += 1;
                    pushed += 1;
                    batch += 1;
                    // Pipelining: if more requests may go now, batch them
                    // into the same write() (one syscall for K frames).
                    if budget.is_some_and(|b| pushed >= b) || out.len() >= MAX_BATCH_BYTES {
                        break;
                    }
                    if let Some(s) = schedule.as_mut() {
                        let now = Instant::now();
                        if s.next > now || tl.end.is_some_and(|e| s.next >= e) {
                            break;
                        }
                    }
                    match window.try_acquire() {
                        Ok(p) => p.forget(),
                        Err(_) => break,
                    }
                    intended = schedule.as_mut().map(|s| {
                        let t = s.next;
                        s.next += s.interval;
                        t
                    });
                }
                sh.counters.sent.fetch_add(batch, Relaxed);
                wr.write_all(&out).await?;
                out.clear();
            }
            // Half-close: the server reads EOF and, by the convention every
            // server here follows, still owes (and sends) the echoes of what
            // it already read.
            let _ = wr.shutdown().await;
            Ok::<(), std::io::Error>(())
        };

        let reader = async {
            let mut buf = BytesMut::with_capacity(8 * 1024);
            let mut cutter = Cutter::new(cfg.framing, payloads.size());
            let mut lat = LatencyBuf {
                sh,
                buf: Vec::with_capacity(256),
            };
            while let Some((s, t)) = rx.recv().await {
                let frame = loop {
                    match cutter.cut(&mut buf) {
                        Ok(Some(f)) => break f,
                        Ok(None) => {}
                        Err(e) => return End::Protocol(e),
                    }
                    buf.reserve(READ_CHUNK.min(payloads.size() + 64).max(4096));
                    match timeout(cfg.timeout, rd.read_buf(&mut buf)).await {
                        Err(_) => return End::Timeout,
                        Ok(Err(e)) => return End::Io(e),
                        // read() == 0: the server closed its side.
                        Ok(Ok(0)) => return End::Eof { partial: buf.len() },
                        Ok(Ok(_)) => {}
                    }
                };
                if !payloads.matches(s, &frame) {
                    return End::Wrong(payloads.explain(s, &frame));
                }
                let now = Instant::now();
                window.add_permits(1);
                got.fetch_add(1, Relaxed);
                sh.counters.verified.fetch_add(1, Relaxed);
                if now >= tl.warmup_end {
                    lat.record(now.saturating_duration_since(t));
                    // Served *within* the window? A design that starves a
                    // client until others leave serves it only after the
                    // end, when the load stops: that must not count.
                    if tl.end.is_none_or(|e| now < e) {
                        conn_measured.fetch_add(1, Relaxed);
                    }
                    sh.counters.measured.fetch_add(1, Relaxed);
                    sh.counters.last_measured_ns.fetch_max(
                        now.saturating_duration_since(tl.start).as_nanos() as u64,
                        Relaxed,
                    );
                }
            }
            if buf.is_empty() {
                End::Done
            } else {
                End::Extra(buf.len())
            }
        };

        let end = {
            tokio::pin!(writer, reader);
            let mut writer_done = false;
            loop {
                tokio::select! {
                    // Poll the writer first so its error is never lost
                    // behind a reader that finished in the same wake-up.
                    biased;
                    w = &mut writer, if !writer_done => {
                        writer_done = true;
                        if let Err(e) = w {
                            break End::WriteFailed(e);
                        }
                    }
                    r = &mut reader => break r,
                }
            }
        };
        let pushed = *self.seq - first_seq;
        let got = got.load(Relaxed);
        self.finish(end, pushed, got)
    }

    /// Count how a session ended. Ok(sent) only for a clean end.
    fn finish(&self, end: End, pushed: u64, got: u64) -> Result<u64, ()> {
        let c = &self.sh.counters;
        let idx = self.idx;
        let owed = pushed.saturating_sub(got);
        let (msg, missing) = match end {
            End::Done if owed == 0 => return Ok(pushed),
            End::Done => (
                format!("connection {idx}: {owed} echoes never arrived"),
                owed,
            ),
            End::Wrong(why) => {
                c.wrong.fetch_add(1, Relaxed);
                (format!("connection {idx}: {why}"), owed.saturating_sub(1))
            }
            End::Extra(n) => {
                c.wrong.fetch_add(1, Relaxed);
                (
                    format!("connection {idx}: {n} unexpected bytes after the last echo"),
                    owed,
                )
            }
            End::Protocol(e) => {
                c.protocol.fetch_add(1, Relaxed);
                c.wrong.fetch_add(1, Relaxed);
                (
                    format!("connection {idx}: echo is not a valid frame: {e}"),
                    owed.saturating_sub(1),
                )
            }
            End::Timeout => {
                c.timeouts.fetch_add(1, Relaxed);
                (
                    format!(
                        "connection {idx}: no echo for {:?} with {owed} owed",
                        self.sh.cfg.timeout
                    ),
                    owed,
                )
            }
            End::Eof { partial } => {
                c.early_close.fetch_add(1, Relaxed);
                (
                    format!(
                        "connection {idx}: server closed the connection with {owed} echoes owed{}",
                        if partial > 0 {
                            format!(" ({partial} bytes of a partial echo received)")
                        } else {
                            String::new()
                        }
                    ),
                    owed,
                )
            }
            End::Io(e) | End::WriteFailed(e) => {
                c.io.fetch_add(1, Relaxed);
                (
                    format!("connection {idx}: {e} with {owed} echoes owed"),
                    owed,
                )
            }
        };
        c.missing.fetch_add(missing, Relaxed);
        self.sh.sample(msg);
        Err(())
    }

    /// UDP: one datagram per request, no connection to lose, but datagrams
    /// can be lost, duplicated or reordered. An echo is matched to any
    /// request in flight (loopback rarely reorders, a real network may);
    /// a request with no echo after `--timeout` is counted missing and the
    /// session carries on, as a UDP client must.
    async fn udp(&mut self, sock: UdpSocket) -> Result<u64, ()> {
        let sh = self.sh;
        let cfg = &sh.cfg;
        let tl = self.tl;
        let c = &sh.counters;
        let mut pending: VecDeque<(u64, Instant, Instant)> = VecDeque::new();
        let mut out = BytesMut::with_capacity(cfg.size);
        let mut rbuf = vec![0u8; cfg.size + 1];
        let mut lat = LatencyBuf {
            sh,
            buf: Vec::with_capacity(256),
        };
        let mut pushed = 0u64;
        let mut lost = 0u64;
        loop {
            let now = Instant::now();
            let may_send = self.budget.is_none_or(|b| pushed < b)
                && tl.end.is_none_or(|e| now < e)
                && pending.len() < cfg.pipeline;
            let due = match self.schedule.as_ref() {
                Some(s) if may_send => Some(s.next),
                _ => None,
            };
            if may_send && due.is_none_or(|d| d <= now) {
                let intended = match self.schedule.as_mut() {
                    Some(s) => {
                        let t = s.next;
                        s.next += s.interval;
                        t
                    }
                    None => now,
                };
                out.clear();
                self.payloads.encode(Framing::Raw, *self.seq, &mut out);
                c.sent.fetch_add(1, Relaxed);
                if let Err(e) = sock.send(&out).await {
                    c.io.fetch_add(1, Relaxed);
                    c.missing.fetch_add(pending.len() as u64 + 1, Relaxed);
                    sh.sample(format!("connection {}: send: {e}", self.idx));
                    return Err(());
                }
                pending.push_back((*self.seq, intended, Instant::now() + cfg.timeout));
                *self.seq += 1;
                pushed += 1;
                continue;
            }
            let Some(&(_, _, deadline)) = pending.front() else {
                if may_send {
                    // Open loop, nothing in flight: sleep until the next send.
                    if let Some(d) = due {
                        tokio::time::sleep_until(d.into()).await;
                    }
                    continue;
                }
                break;
            };
            let wake = due.map_or(deadline, |d| d.min(deadline));
            tokio::select! {
                r = sock.recv(&mut rbuf) => match r {
                    Ok(n) => {
                        let got = &rbuf[..n];
                        match pending.iter().position(|(s, _, _)| self.payloads.matches(*s, got)) {
                            Some(i) => {
                                let (_, t, _) = pending.remove(i).unwrap_or((0, Instant::now(), Instant::now()));
                                let now = Instant::now();
                                c.verified.fetch_add(1, Relaxed);
                                if now >= tl.warmup_end {
                                    lat.record(now.saturating_duration_since(t));
                                    if tl.end.is_none_or(|e| now < e) {
                                        self.measured.fetch_add(1, Relaxed);
                                    }
                                    c.measured.fetch_add(1, Relaxed);
                                    c.last_measured_ns.fetch_max(now.saturating_duration_since(tl.start).as_nanos() as u64, Relaxed);
                                }
                            }
                            None => {
                                c.wrong.fetch_add(1, Relaxed);
                                let oldest = pending.front().map(|p| p.0).unwrap_or(0);
                                sh.sample(format!("connection {}: datagram matches no request in flight ({})", self.idx, self.payloads.explain(oldest, got)));
                            }
                        }
                    }
                    Err(e) => {
                        c.io.fetch_add(1, Relaxed);
                        c.missing.fetch_add(pending.len() as u64, Relaxed);
                        sh.sample(format!("connection {}: recv: {e} with {} echoes owed", self.idx, pending.len()));
                        return Err(());
                    }
                },
                _ = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    while let Some(&(s, _, d)) = pending.front() {
                        if d > now { break; }
                        pending.pop_front();
                        lost += 1;
                        c.missing.fetch_add(1, Relaxed);
                        if lost <= 3 {
                            sh.sample(format!("connection {}: no echo of datagram {s} within {:?} (lost)", self.idx, cfg.timeout));
                        }
                    }
                }
            }
        }
        Ok(pushed)
    }
}
