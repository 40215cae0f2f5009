//! The checker's side of a connection: connect (plain TCP or TLS), send a
//! planned list of writes while reading the echo concurrently, and say
//! precisely how the echo differs from what was owed.
//!
//! Why read and write at the same time: an echo server answers while we are
//! still sending. If we wrote 1 MiB before reading anything, the server's
//! echoes would fill our receive buffer, the server would block in `write()`
//! and stop reading, and our own `write()` would then block forever. Every
//! exchange here therefore splits the stream into a reader and a writer.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::BytesMut;
use common::Framing;
use common::rng::SplitMix64;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

/// Connect (and TLS handshake) deadline.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the next byte (or for a write to make progress) before
/// an exchange is declared stalled.
pub const STALL: Duration = Duration::from_secs(5);
/// How long to keep reading once an echo has gone wrong.
pub const GRACE: Duration = Duration::from_millis(300);

/// A byte stream, plain or TLS: the cases do not care which.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type Conn = Box<dyn Io>;

/// Where and how to connect.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("addr", &self.addr)
            .field("tls", &self.tls.as_ref().map(|(_, n)| n))
            .finish()
    }
}

/// Socket options for one connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Opts {
    /// `SO_LINGER` with a zero timeout: `close()` then sends RST at once
    /// instead of FIN (and never blocks, unlike a non-zero linger).
    pub reset_on_close: bool,
    /// A small `SO_RCVBUF`, so a client that never reads stops the server
    /// sooner (the kernel would otherwise grow the buffer up to tcp_rmem).
    pub rcvbuf: Option<u32>,
}

impl Target {
    pub async fn connect(&self) -> io::Result<Conn> {
        self.connect_with(Opts::default()).await
    }

    pub async fn connect_with(&self, opts: Opts) -> io::Result<Conn> {
        let tcp = timeout(CONNECT_TIMEOUT, self.connect_tcp(opts))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some((connector, name)) => {
                let tls = timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| {
                        io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                    })??;
                Ok(Box::new(tls))
            }
        }
    }

    /// Like [`Target::connect_with`], and also return the TCP socket's file
    /// descriptor (it stays valid as long as the returned [`Conn`] lives),
    /// so a case can ask the kernel about the socket under a TLS session:
    /// [`unacked_bytes`] and [`tcp_state`].
    pub async fn connect_fd(&self, opts: Opts) -> io::Result<(Conn, RawFd)> {
        let tcp = timeout(CONNECT_TIMEOUT, self.connect_tcp(opts))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        let fd = tcp.as_raw_fd();
        match &self.tls {
            None => Ok((Box::new(tcp), fd)),
            Some((connector, name)) => {
                let tls = timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| {
                        io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                    })??;
                Ok((Box::new(tls), fd))
            }
        }
    }

    /// Plain TCP, even when the target speaks TLS (for idle connections).
    pub async fn connect_tcp(&self, opts: Opts) -> io::Result<TcpStream> {
        let socket = if self.addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(size) = opts.rcvbuf {
            // Must be set before connect(): the window scale is agreed in
            // the handshake.
            socket.set_recv_buffer_size(size)?;
        }
        let stream = socket.connect(self.addr).await?;
        // Small writes go out at once: "one byte per write" really is one
        // segment per byte, and no case waits 40 ms for delayed ACKs.
        stream.set_nodelay(true)?;
        if opts.reset_on_close {
            socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
        }
        Ok(stream)
    }
}

/// How an exchange ended on the reading side.
#[derive(Debug)]
pub enum End {
    /// Every owed byte arrived (and, if EOF was awaited, then EOF).
    Complete,
    /// The server closed (read returned 0).
    Eof,
    /// The server reset the connection or another error happened.
    Error(io::Error),
    /// Nothing arrived for [`STALL`].
    Stalled,
}

/// What came back from one exchange.
#[derive(Debug)]
pub struct Echo {
    pub got: Vec<u8>,
    pub end: End,
    pub write_error: Option<io::Error>,
    pub elapsed: Duration,
}

/// Write `chunks` (one `write_all` + `flush` each), optionally half-close,
/// and meanwhile read until the `owed` bytes arrived (`None`: until the
/// server closes); with `await_eof`, then keep reading until it closes.
///
/// The echo is compared as it arrives: once it diverges from `owed`, we
/// only wait [`GRACE`] for the rest (enough to name the bad frame), instead
/// of the full [`STALL`] for bytes that will never come.
pub async fn exchange(
    conn: Conn,
    chunks: Vec<Vec<u8>>,
    owed: Option<&[u8]>,
    half_close: bool,
    await_eof: bool,
) -> Echo {
    let start = Instant::now();
    let owed_len = owed.map_or(usize::MAX, <[u8]>::len);
    let (mut rd, mut wr) = tokio::io::split(conn);
    let writer = async move {
        for chunk in &chunks {
            // A write that makes no progress for STALL means the server has
            // stopped reading; give up rather than hang.
            match timeout(STALL, async {
                wr.write_all(chunk).await?;
                wr.flush().await
            })
            .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return (Some(e), wr),
                Err(_) => {
                    return (
                        Some(io::Error::new(io::ErrorKind::TimedOut, "write stalled")),
                        wr,
                    );
                }
            }
        }
        if half_close {
            // shutdown(SHUT_WR): sends FIN (for TLS, close_notify first).
            // We can still read; the server sees read() return 0.
            if let Err(e) = wr.shutdown().await {
                return (Some(e), wr);
            }
        }
        (None, wr)
    };
    let reader = async move {
        let mut got = Vec::with_capacity(owed_len.min(4 << 20));
        let mut buf = vec![0u8; 64 * 1024];
        let mut diverged = false;
        let end = loop {
            if got.len() >= owed_len && !await_eof {
                break End::Complete;
            }
            let wait = if diverged { GRACE } else { STALL };
            match timeout(wait, rd.read(&mut buf)).await {
                Err(_) => break End::Stalled,
                Ok(Ok(0)) => {
                    break if got.len() == owed_len && await_eof {
                        End::Complete
                    } else {
                        End::Eof
                    };
                }
                Ok(Ok(n)) => {
                    let from = got.len();
                    got.extend_from_slice(&buf[..n]);
                    if let Some(owed) = owed {
                        let upto = got.len().min(owed.len());
                        diverged = diverged
                            || got.get(from..upto) != owed.get(from..upto)
                            || got.len() > owed.len();
                    }
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => break End::Error(e),
            }
        };
        (got, end, rd)
    };
    let ((write_error, wr), (got, end, rd)) = tokio::join!(writer, reader);
    // Dropping both halves closes the connection.
    drop(rd.unsplit(wr));
    Echo {
        got,
        end,
        write_error,
        elapsed: start.elapsed(),
    }
}

/// Random payload bytes; in `line` framing never a `\n` (it would split the
/// frame in two).
pub fn payload(rng: &mut SplitMix64, len: usize, framing: Framing) -> Vec<u8> {
    let mut p = vec![0u8; len];
    rng.fill(&mut p);
    if framing == Framing::Line {
        for b in &mut p {
            if *b == b'\n' {
                *b = b'.';
            }
        }
    }
    p
}

/// The bytes owed back for `payloads`: each encoded in `framing`.
pub fn encode_all(framing: Framing, payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for p in payloads {
        // Payloads come from `payload()`, which never puts `\n` in a line
        // frame, and are far below 4 GiB: encode cannot fail here.
        if common::encode(framing, p, &mut out).is_err() {
            out.extend_from_slice(p);
        }
    }
    out.to_vec()
}

/// Cut `data` into writes of random sizes in `1..=max_chunk`, spread
/// log-uniformly so that 1-byte, 1.5 KiB and 60 KiB writes all occur.
pub fn random_chunks(rng: &mut SplitMix64, data: &[u8], max_chunk: usize) -> Vec<Vec<u8>> {
    let mut chunks = Vec::new();
    let mut rest = data;
    let bits = usize::BITS - max_chunk.max(1).leading_zeros();
    while !rest.is_empty() {
        let ceiling = (1usize << rng.below(u64::from(bits))).min(max_chunk.max(1));
        let n = (rng.below(ceiling as u64) as usize + 1).min(rest.len());
        chunks.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    chunks
}

/// Judge an echo against the frames sent. `Ok(summary)` when byte-exact,
/// `Err(what differs)` otherwise, naming the frame and the numbers.
pub fn verify(framing: Framing, payloads: &[Vec<u8>], echo: &Echo) -> Result<String, String> {
    let owed = encode_all(framing, payloads);
    let took = super::fmt_duration(echo.elapsed);
    if echo.got == owed && matches!(echo.end, End::Complete) {
        return Ok(format!(
            "all {} back in {took}",
            super::fmt_bytes(owed.len() as u64)
        ));
    }
    let mut what = describe_mismatch(framing, payloads, &owed, &echo.got);
    match &echo.end {
        End::Complete => {}
        End::Eof => what.push_str(", then the server closed the connection"),
        End::Error(e) => what.push_str(&format!(", then {}", io_err(e))),
        End::Stalled => what.push_str(", then nothing more"),
    }
    if let Some(e) = &echo.write_error {
        what.push_str(&format!(" (our write failed: {})", io_err(e)));
    }
    Err(what)
}

fn describe_mismatch(framing: Framing, payloads: &[Vec<u8>], owed: &[u8], got: &[u8]) -> String {
    if got == owed {
        return format!("all {} bytes", owed.len());
    }
    if framing != Framing::Raw {
        // Cut what came back into frames and compare frame by frame: "frame
        // #11: expected 1048576 B, got 65536 B" says more than an offset.
        let mut dec = common::Decoder::new(framing, u32::MAX as usize);
        let mut buf = BytesMut::from(got);
        for (i, want) in payloads.iter().enumerate() {
            match dec.decode(&mut buf) {
                Ok(Some(frame)) if frame[..] == want[..] => continue,
                Ok(Some(frame)) => {
                    let at = frame.iter().zip(want.iter()).position(|(a, b)| a != b);
                    let at =
                        at.map_or_else(String::new, |k| format!(", first difference at byte {k}"));
                    return format!(
                        "frame #{} of {}: expected {} B, got {} B{at}",
                        i + 1,
                        payloads.len(),
                        want.len(),
                        frame.len()
                    );
                }
                Ok(None) | Err(_) => {
                    return format!(
                        "{i} of {} frames intact, frame #{} ({} B) missing or cut short ({} stray bytes)",
                        payloads.len(),
                        i + 1,
                        want.len(),
                        buf.len()
                    );
                }
            }
        }
        return format!(
            "all {} frames, then {} unexpected extra bytes",
            payloads.len(),
            buf.len()
        );
    }
    match got.iter().zip(owed.iter()).position(|(a, b)| a != b) {
        Some(k) => format!(
            "byte {k} of {} differs (expected 0x{:02x}, got 0x{:02x})",
            owed.len(),
            owed[k],
            got[k]
        ),
        None if got.len() < owed.len() => format!("only {} of {} bytes", got.len(), owed.len()),
        None => format!(
            "{} bytes, {} more than sent",
            got.len(),
            got.len() - owed.len()
        ),
    }
}

/// An io::Error as a short phrase: `connection reset (ECONNRESET)`.
pub fn io_err(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionReset => "connection reset (RST)".into(),
        io::ErrorKind::BrokenPipe => "broken pipe (EPIPE)".into(),
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::UnexpectedEof => "EOF without TLS close_notify".into(),
        _ => e.to_string(),
    }
}

/// Samples the server's resident set size (VmRSS) from /proc every 10 ms on
/// a thread of its own, for cases that must show memory stays bounded.
#[derive(Debug)]
pub struct RssProbe {
    baseline: u64,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

/// Baseline and peak RSS seen while a probe ran.
#[derive(Debug, Clone, Copy)]
pub struct RssGrowth {
    pub baseline: u64,
    pub peak: u64,
}

impl RssGrowth {
    pub fn growth(&self) -> u64 {
        self.peak.saturating_sub(self.baseline)
    }

    pub fn describe(&self) -> String {
        format!(
            "server RSS {} -> peak {} (+{})",
            super::fmt_bytes(self.baseline),
            super::fmt_bytes(self.peak),
            super::fmt_bytes(self.growth())
        )
    }
}

impl RssProbe {
    /// `None` without a pid or when /proc cannot be read.
    pub fn start(pid: Option<u32>) -> Option<RssProbe> {
        let pid = pid?;
        let baseline = crate::child::ProcStats::read(pid).ok()?.rss_bytes;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = baseline;
            while !flag.load(Ordering::Relaxed) {
                if let Ok(s) = crate::child::ProcStats::read(pid) {
                    peak = peak.max(s.rss_bytes);
                }
                // Sampling period, not synchronisation: a 10 ms grid is fine
                // for memory that grows over hundreds of milliseconds.
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        });
        Some(RssProbe {
            baseline,
            stop,
            thread,
        })
    }

    pub fn finish(self) -> RssGrowth {
        self.stop.store(true, Ordering::Relaxed);
        let peak = self.thread.join().unwrap_or(self.baseline);
        RssGrowth {
            baseline: self.baseline,
            peak,
        }
    }
}

/// Is the process still there? Read from /proc/PID/stat; a zombie (dead,
/// not yet reaped by its parent) counts as gone.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next()),
            Some("Z" | "X")
        ),
        Err(_) => false,
    }
}

/// Bytes we wrote on this socket that the peer's kernel has not yet
/// acknowledged (`ioctl(SIOCOUTQ)`, Linux). Everything written minus this
/// has reached the server's receive queue (or beyond): the server has
/// *received* it, whether or not it has read it yet.
pub fn unacked_bytes(fd: RawFd) -> Option<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (== SIOCOUTQ) writes one int through the pointer,
    // which points at a live local; a stale fd makes it fail with EBADF.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
    (rc == 0).then(|| usize::try_from(n).unwrap_or(0))
}

/// The kernel's TCP state of a socket (`getsockopt(TCP_INFO)`, Linux):
/// `ESTABLISHED` while both sides are open; `CLOSE_WAIT` once the peer's
/// FIN arrived; `CLOSE` after a RST. Lets a case see the server close a
/// connection without reading from it (reading would relieve the very
/// back-pressure the case sets up).
pub fn tcp_state(fd: RawFd) -> Option<TcpState> {
    // SAFETY: tcp_info is plain integers, so all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info`, a live
    // local of that size; a stale fd makes the call fail with EBADF.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    Some(match i32::from(info.tcpi_state) {
        1 => TcpState::Established,
        8 => TcpState::CloseWait,
        7 => TcpState::Closed,
        other => TcpState::Other(other),
    })
}

/// The TCP states [`tcp_state`] tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    Established,
    /// The server sent FIN.
    CloseWait,
    /// The server sent RST (or the connection is otherwise gone).
    Closed,
    Other(i32),
}
