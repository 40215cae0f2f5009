//! The TCP cases. Each one is a small story about what a stream socket can
//! do to a server: split a frame anywhere, glue many frames together, close
//! only one direction, vanish with a RST, send and never read, sit idle, or
//! arrive a thousand at once. Each returns an [`Outcome`] saying what was
//! expected and what came back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Framing;
use common::rng::SplitMix64;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Barrier, Semaphore};
use tokio::time::timeout;

use super::conn::{
    self, Conn, End, Opts, RssProbe, STALL, encode_all, exchange, io_err, payload, random_chunks,
    verify,
};
use super::{Ctx, Outcome, fmt_bytes, fmt_duration};

/// Most RSS growth allowed while one client misbehaves. A correct server
/// holds at most one frame (--max-frame) plus read buffers for it; the
/// kernel's socket buffers are not in the process's RSS.
const MEM_BOUND: u64 = 32 << 20;

/// How fast a fresh client must be served while K clients sit idle.
const FRESH_BOUND: Duration = Duration::from_secs(3);

/// How much a never-reading client tries to push. Loopback socket buffers
/// (ours 64 KiB, the server's up to tcp_rmem/tcp_wmem, a few MiB) fill long
/// before this; a server that takes it all is buffering without bound.
const FLOOD_MAX: usize = 128 << 20;

fn connect_failed(expected: impl Into<String>, e: &std::io::Error) -> Outcome {
    Outcome::Fail {
        expected: expected.into(),
        got: format!("connect failed: {}", io_err(e)),
    }
}

/// Send `payloads` as one stream cut into `chunks` and judge the echo.
async fn echo_case(
    ctx: &Ctx,
    expected: String,
    payloads: &[Vec<u8>],
    chunks: Vec<Vec<u8>>,
) -> Outcome {
    let owed = encode_all(ctx.framing, payloads);
    let conn = match ctx.target.connect().await {
        Ok(c) => c,
        Err(e) => return connect_failed(expected, &e),
    };
    let echo = exchange(conn, chunks, Some(&owed), false, false).await;
    match verify(ctx.framing, payloads, &echo) {
        Ok(got) => Outcome::new(true, expected, got),
        Err(got) => Outcome::new(false, expected, got),
    }
}

pub async fn echo_sizes(ctx: &Ctx) -> Outcome {
    let mut rng = SplitMix64::new(ctx.seed);
    let max = ctx.max_frame;
    let mut sizes: Vec<usize> = [
        0, 1, 2, 3, 100, 1000, 4095, 4096, 4097, 65535, 65536, 65537, 100_000, max,
    ]
    .into_iter()
    .filter(|&s| s <= max)
    .collect();
    sizes.dedup();
    let payloads: Vec<Vec<u8>> = sizes
        .iter()
        .map(|&n| payload(&mut rng, n, ctx.framing))
        .collect();
    let stream = encode_all(ctx.framing, &payloads);
    let chunks = random_chunks(&mut rng, &stream, 64 * 1024);
    let expected = format!(
        "{} frames of 0 B..{} in {} writes of 1 B..64 KiB, echoed byte for byte",
        payloads.len(),
        fmt_bytes(max as u64),
        chunks.len()
    );
    echo_case(ctx, expected, &payloads, chunks).await
}

pub async fn one_byte_at_a_time(ctx: &Ctx) -> Outcome {
    let mut rng = SplitMix64::new(ctx.seed.wrapping_add(1));
    let payloads = vec![
        payload(&mut rng, 40, ctx.framing),
        payload(&mut rng, 1, ctx.framing),
    ];
    let stream = encode_all(ctx.framing, &payloads);
    let chunks: Vec<Vec<u8>> = stream.iter().map(|&b| vec![b]).collect();
    let expected = format!(
        "2 frames written one byte per write() ({} writes), echoed",
        chunks.len()
    );
    echo_case(ctx, expected, &payloads, chunks).await
}

pub async fn pipelined(ctx: &Ctx) -> Outcome {
    let mut rng = SplitMix64::new(ctx.seed.wrapping_add(2));
    let payloads: Vec<Vec<u8>> = (0..1000)
        .map(|_| {
            let n = rng.below(200) as usize;
            payload(&mut rng, n, ctx.framing)
        })
        .collect();
    let stream = encode_all(ctx.framing, &payloads);
    let expected = format!(
        "1000 frames ({}) in one write(), all echoed in order",
        fmt_bytes(stream.len() as u64)
    );
    echo_case(ctx, expected, &payloads, vec![stream]).await
}

pub async fn half_close(ctx: &Ctx) -> Outcome {
    let mut rng = SplitMix64::new(ctx.seed.wrapping_add(3));
    let payloads: Vec<Vec<u8>> = [10, 1000, 1, 20_000, 5]
        .iter()
        .map(|&n| payload(&mut rng, n, ctx.framing))
        .collect();
    let stream = encode_all(ctx.framing, &payloads);
    let expected = "5 frames, shutdown(SHUT_WR): every frame echoed, then EOF";
    let conn = match ctx.target.connect().await {
        Ok(c) => c,
        Err(e) => return connect_failed(expected, &e),
    };
    let owed = stream.len();
    let mut echo = exchange(conn, vec![stream.clone()], Some(&stream), true, true).await;
    // Over TLS, a server that closes its TCP socket without sending
    // close_notify makes rustls report UnexpectedEof. The echo is complete
    // and the server did close, so it counts, with a note.
    let mut note = "";
    if matches!(&echo.end, End::Error(e) if e.kind() == std::io::ErrorKind::UnexpectedEof)
        && echo.got.len() == owed
    {
        echo.end = End::Complete;
        note = " (TCP closed without TLS close_notify)";
    }
    match verify(ctx.framing, &payloads, &echo) {
        Ok(got) => Outcome::new(true, expected, format!("{got}, then EOF{note}")),
        Err(got) => Outcome::new(false, expected, got),
    }
}

/// Read until `n` bytes arrived (or [`STALL`]); returns how many did.
async fn read_at_least(conn: &mut Conn, n: usize) -> usize {
    let mut got = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while got < n {
        match timeout(STALL, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(k)) => got += k,
        }
    }
    got
}

/// One small frame on a new connection; `Ok(latency)` if echoed exactly.
async fn fresh_client(ctx: &Ctx, seed: u64) -> Result<Duration, String> {
    let start = Instant::now();
    let mut rng = SplitMix64::new(seed);
    let payloads = vec![payload(&mut rng, 32, ctx.framing)];
    let stream = encode_all(ctx.framing, &payloads);
    let conn = ctx
        .target
        .connect()
        .await
        .map_err(|e| format!("connect failed: {}", io_err(&e)))?;
    let echo = exchange(conn, vec![stream.clone()], Some(&stream), false, false).await;
    verify(ctx.framing, &payloads, &echo)?;
    Ok(start.elapsed())
}

pub async fn reset_mid_frame(ctx: &Ctx) -> Outcome {
    let expected =
        "a client sends a frame and half of the next, then resets (RST); a new client is served";
    let mut rng = SplitMix64::new(ctx.seed.wrapping_add(4));
    let ping = vec![payload(&mut rng, 16, ctx.framing)];
    let mut first = encode_all(ctx.framing, &ping);
    let ping_len = first.len();
    // Half a frame: a length prefix promising 1000 bytes and 100 of them,
    // or 100 bytes of a line that never ends.
    if ctx.framing == Framing::Length {
        first.extend_from_slice(&1000u32.to_be_bytes());
    }
    first.extend_from_slice(&payload(&mut rng, 100, Framing::Line));
    let mut a = match ctx
        .target
        .connect_with(Opts {
            reset_on_close: true,
            rcvbuf: None,
        })
        .await
    {
        Ok(c) => c,
        Err(e) => return connect_failed(expected, &e),
    };
    if let Err(e) = async {
        a.write_all(&first).await?;
        a.flush().await
    }
    .await
    {
        return Outcome::new(
            false,
            expected,
            format!("first client's write failed: {}", io_err(&e)),
        );
    }
    // Wait for the complete frame's echo: then the server has read (at
    // least) up to the half frame, and the RST really lands mid-frame.
    let echoed = read_at_least(&mut a, ping_len).await;
    // SO_LINGER 0, so this close() sends RST, not FIN.
    drop(a);
    if echoed < ping_len {
        return Outcome::new(
            false,
            expected,
            format!("the first frame was not echoed ({echoed} of {ping_len} bytes)"),
        );
    }
    let fresh = fresh_client(ctx, ctx.seed.wrapping_add(40)).await;
    let alive = ctx.pid.map(conn::process_alive);
    match (fresh, alive) {
        (_, Some(false)) => Outcome::new(false, expected, "the server process died"),
        (Ok(t), _) => Outcome::new(
            true,
            expected,
            format!(
                "RST sent mid-frame; new client echoed in {}",
                fmt_duration(t)
            ),
        ),
        (Err(e), _) => Outcome::new(
            false,
            expected,
            format!("RST sent mid-frame; new client: {e}"),
        ),
    }
}

/// Client A sends `offense`; it must be closed (EOF or RST) while client B,
/// connected before the offense, is served afterwards; memory bounded.
async fn offender_closed(ctx: &Ctx, expected: String, offense: Vec<u8>) -> Outcome {
    let probe = RssProbe::start(ctx.pid);
    // A connects first, so even an iterative server accepts it first; B is
    // then open (accepted or waiting in the backlog) during the offense.
    let a = match ctx.target.connect().await {
        Ok(c) => c,
        Err(e) => return connect_failed(expected, &e),
    };
    let b = match ctx.target.connect().await {
        Ok(c) => c,
        Err(e) => return connect_failed(expected, &e),
    };
    let mut rng = SplitMix64::new(ctx.seed.wrapping_add(5));
    let chunks = random_chunks(&mut rng, &offense, 64 * 1024);
    // Nothing is owed: read until the server closes.
    let start = Instant::now();
    let echo_a = exchange(a, chunks, None, false, true).await;
    let closed = match &echo_a.end {
        End::Eof => Some("EOF".to_string()),
        End::Error(e) => Some(io_err(e)),
        End::Complete | End::Stalled => None,
    };
    let closed_after = start.elapsed();
    let payloads = vec![payload(&mut rng, 64, ctx.framing)];
    let stream = encode_all(ctx.framing, &payloads);
    let echo_b = exchange(b, vec![stream.clone()], Some(&stream), false, false).await;
    let b_result = verify(ctx.framing, &payloads, &echo_b);
    let rss = probe.map(RssProbe::finish);
    let mem_ok = rss.is_none_or(|r| r.growth() <= MEM_BOUND);
    let mut got = match &closed {
        Some(how) => format!(
            "offender closed ({how}) after {}",
            fmt_duration(closed_after)
        ),
        None => format!(
            "offender still open {} s after its last byte",
            STALL.as_secs()
        ),
    };
    if !echo_a.got.is_empty() {
        got.push_str(&format!(" having received {} bytes", echo_a.got.len()));
    }
    match &b_result {
        Ok(_) => got.push_str(&format!(
            "; other client echoed in {}",
            fmt_duration(echo_b.elapsed)
        )),
        Err(e) => got.push_str(&format!("; other client: {e}")),
    }
    match rss {
        Some(r) => got.push_str(&format!("; {}", r.describe())),
        None => got.push_str("; RSS not measured (no --server-pid)"),
    }
    if !mem_ok {
        got.push_str(&format!(" over the {} bound", fmt_bytes(MEM_BOUND)));
    }
    Outcome::new(
        closed.is_some() && b_result.is_ok() && mem_ok,
        expected,
        got,
    )
}

pub async fn garbage(ctx: &Ctx) -> Outcome {
    let mut rng = SplitMix64::new(ctx.seed.wrapping_add(6));
    match ctx.framing {
        Framing::Line | Framing::Raw => {
            // Every byte value (but `\n` in line framing), then sequences no
            // UTF-8 decoder accepts: overlong NUL, a lone surrogate, a
            // 5-byte form, bare continuation bytes, FF FE; plus CR and NUL.
            let all: Vec<u8> = (0..=255u8)
                .filter(|&b| ctx.framing == Framing::Raw || b != b'\n')
                .collect();
            let invalid =
                b"\xc0\x80 \xed\xa0\x80 \xf8\x88\x80\x80\x80 \xff\xfe \x80\x80\x80 \r\0".to_vec();
            let payloads = vec![all, invalid, vec![0x80; 1000]];
            let stream = encode_all(ctx.framing, &payloads);
            let chunks = random_chunks(&mut rng, &stream, 64);
            let expected =
                "non-UTF-8 and control bytes echoed unchanged (the protocol is bytes, not text)"
                    .to_string();
            echo_case(ctx, expected, &payloads, chunks).await
        }
        Framing::Length => {
            // Noise whose first four bytes read as a 3.7 GB length prefix.
            let mut offense = b"\xde\xad\xbe\xef".to_vec();
            offense.extend_from_slice(&payload(&mut rng, 64 * 1024, Framing::Raw));
            let expected = "garbage (prefix DE AD BE EF = 3735928559 B, then 64 KiB of noise) closes that connection; another client is echoed".to_string();
            offender_closed(ctx, expected, offense).await
        }
    }
}

pub async fn oversized_length(ctx: &Ctx) -> Outcome {
    if ctx.framing != Framing::Length {
        return Outcome::Skip(format!(
            "length framing only (server checked with --framing {})",
            ctx.framing
        ));
    }
    let claim = ctx.max_frame + 1;
    let Ok(claim32) = u32::try_from(claim) else {
        return Outcome::Skip(format!(
            "--max-frame {} leaves no larger 32-bit length",
            ctx.max_frame
        ));
    };
    let mut offense = claim32.to_be_bytes().to_vec();
    let mut rng = SplitMix64::new(ctx.seed.wrapping_add(7));
    offense.extend_from_slice(&payload(&mut rng, 64 * 1024, Framing::Raw));
    let expected = format!(
        "a prefix of {claim} B (max-frame + 1) closes that connection; another client is echoed; RSS bounded"
    );
    offender_closed(ctx, expected, offense).await
}

pub async fn oversized_line(ctx: &Ctx) -> Outcome {
    if ctx.framing != Framing::Line {
        return Outcome::Skip(format!(
            "line framing only (server checked with --framing {})",
            ctx.framing
        ));
    }
    let mut rng = SplitMix64::new(ctx.seed.wrapping_add(8));
    let offense = payload(&mut rng, ctx.max_frame + 64 * 1024, Framing::Line);
    let expected = format!(
        "{} without a newline closes that connection; another client is echoed; RSS bounded",
        fmt_bytes(offense.len() as u64)
    );
    offender_closed(ctx, expected, offense).await
}

pub async fn send_never_read(ctx: &Ctx) -> Outcome {
    let expected = format!(
        "a client that writes and never reads is stopped by back-pressure (or closed) before {}; the server survives; RSS growth under {}",
        fmt_bytes(FLOOD_MAX as u64),
        fmt_bytes(MEM_BOUND)
    );
    let probe = RssProbe::start(ctx.pid);
    let opts = Opts {
        reset_on_close: true,
        rcvbuf: Some(64 * 1024),
    };
    let mut a = match ctx.target.connect_with(opts).await {
        Ok(c) => c,
        Err(e) => return connect_failed(expected, &e),
    };
    let mut rng = SplitMix64::new(ctx.seed.wrapping_add(9));
    let frame = encode_all(
        ctx.framing,
        &[payload(&mut rng, 16 * 1024 - 1, ctx.framing)],
    );
    let start = Instant::now();
    let mut sent = 0usize;
    // Why the flood stopped.
    let how = loop {
        if sent >= FLOOD_MAX {
            break "never pushed back".to_string();
        }
        if start.elapsed() > Duration::from_secs(6) {
            break "still accepting slowly after 6 s".to_string();
        }
        // Half a second without progress: the server's receive buffer is
        // full because it stopped reading us. That is back-pressure.
        match timeout(Duration::from_millis(500), async {
            a.write_all(&frame).await?;
            a.flush().await
        })
        .await
        {
            Ok(Ok(())) => sent += frame.len(),
            Ok(Err(e)) => break format!("server closed us ({})", io_err(&e)),
            Err(_) => break "writes blocked: back-pressure".to_string(),
        }
    };
    let flood_time = start.elapsed();
    // Unread echoes are in our receive buffer, and SO_LINGER is 0: RST.
    drop(a);
    let fresh = fresh_client(ctx, ctx.seed.wrapping_add(90)).await;
    let rss = probe.map(RssProbe::finish);
    let alive = ctx.pid.map(conn::process_alive) != Some(false);
    let mem_ok = rss.is_none_or(|r| r.growth() <= MEM_BOUND);
    let bounded = sent < FLOOD_MAX;
    let mut got = format!(
        "{} accepted in {}, then {how}",
        fmt_bytes(sent as u64),
        fmt_duration(flood_time)
    );
    match &fresh {
        Ok(t) => got.push_str(&format!("; fresh client echoed in {}", fmt_duration(*t))),
        Err(e) => got.push_str(&format!("; fresh client: {e}")),
    }
    if !alive {
        got.push_str("; the server process died");
    }
    match rss {
        Some(r) => got.push_str(&format!("; {}", r.describe())),
        None => got.push_str("; RSS not measured (no --server-pid)"),
    }
    Outcome::new(bounded && fresh.is_ok() && alive && mem_ok, expected, got)
}

pub async fn idle_clients(ctx: &Ctx) -> Outcome {
    let k = ctx.idle_clients;
    let expected = format!(
        "with {k} idle connections open (TCP only: no TLS handshake, no bytes), a fresh client is echoed within {} s",
        FRESH_BOUND.as_secs()
    );
    let sem = Arc::new(Semaphore::new(64));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..k {
        let target = ctx.target.clone();
        let sem = sem.clone();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            timeout(conn::CONNECT_TIMEOUT, target.connect_tcp(Opts::default())).await
        });
    }
    let mut idle = Vec::with_capacity(k);
    let mut first_err = None;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(Ok(s))) => idle.push(s),
            Ok(Ok(Err(e))) => first_err = first_err.or(Some(io_err(&e))),
            Ok(Err(_)) => first_err = first_err.or(Some("connect timed out".into())),
            Err(e) => first_err = first_err.or(Some(e.to_string())),
        }
    }
    if idle.len() < k {
        return Outcome::new(
            false,
            expected,
            format!(
                "only {} of {k} idle connections opened (first error: {}; fd limit {})",
                idle.len(),
                first_err.unwrap_or_default(),
                ctx.fd_limit
            ),
        );
    }
    // Connect (and handshake) and echo are timed apart, so a failure says
    // which one the idle clients blocked.
    let start = Instant::now();
    let connected_after = std::cell::Cell::new(None);
    let fresh = async {
        let conn = ctx
            .target
            .connect()
            .await
            .map_err(|e| format!("connect failed: {}", io_err(&e)))?;
        let connected = start.elapsed();
        connected_after.set(Some(connected));
        let mut rng = SplitMix64::new(ctx.seed.wrapping_add(10));
        let payloads = vec![payload(&mut rng, 32, ctx.framing)];
        let stream = encode_all(ctx.framing, &payloads);
        let echo = exchange(conn, vec![stream.clone()], Some(&stream), false, false).await;
        verify(ctx.framing, &payloads, &echo)
            .map_err(|e| format!("connected in {}, then {e}", fmt_duration(connected)))?;
        Ok::<Duration, String>(connected)
    };
    let result = timeout(FRESH_BOUND, fresh).await;
    drop(idle);
    let bound = FRESH_BOUND.as_secs();
    match result {
        Ok(Ok(connected)) => Outcome::new(
            true,
            expected,
            format!(
                "{k} idle open; fresh client connected in {}, echoed in {}",
                fmt_duration(connected),
                fmt_duration(start.elapsed())
            ),
        ),
        Ok(Err(e)) => Outcome::new(false, expected, format!("{k} idle open; fresh client {e}")),
        Err(_) => {
            let stage = match connected_after.get() {
                Some(t) => format!("connected in {} but not echoed", fmt_duration(t)),
                None => "not even connected (TCP + TLS handshake)".to_string(),
            };
            Outcome::new(
                false,
                expected,
                format!("{k} idle open; fresh client {stage} within {bound} s"),
            )
        }
    }
}

pub async fn concurrent_clients(ctx: &Ctx) -> Outcome {
    let n = ctx.clients.max(1);
    let expected =
        format!("{n} clients connected at once, each with 2 frames of 1..512 B echoed exactly");
    // Connect at most 128 at a time (a SYN flood would only measure the
    // backlog), but hold every connection open until all are in: then all
    // N really are connected at once when the first frame is sent.
    let sem = Arc::new(Semaphore::new(128));
    let barrier = Arc::new(Barrier::new(n));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let target = ctx.target.clone();
        let (sem, barrier) = (sem.clone(), barrier.clone());
        let framing = ctx.framing;
        let seed = ctx.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        set.spawn(async move {
            let conn = {
                let _permit = sem.acquire_owned().await;
                target.connect().await
            };
            // Every task reaches the barrier, connected or not, so it
            // cannot wait forever.
            barrier.wait().await;
            let conn = conn.map_err(|e| (true, io_err(&e)))?;
            let mut rng = SplitMix64::new(seed);
            let payloads: Vec<Vec<u8>> = (0..2)
                .map(|_| {
                    let len = rng.below(512) as usize + 1;
                    payload(&mut rng, len, framing)
                })
                .collect();
            let stream = encode_all(framing, &payloads);
            let echo = exchange(conn, vec![stream.clone()], Some(&stream), false, false).await;
            verify(framing, &payloads, &echo).map_err(|e| (false, e))?;
            Ok::<Duration, (bool, String)>(echo.elapsed)
        });
    }
    let mut latencies = Vec::with_capacity(n);
    let (mut connect_errors, mut echo_errors) = (0usize, 0usize);
    let mut examples: Vec<String> = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(t)) => latencies.push(t),
            Ok(Err((is_connect, msg))) => {
                if is_connect {
                    connect_errors += 1;
                } else {
                    echo_errors += 1;
                }
                if examples.len() < 2 {
                    examples.push(msg);
                }
            }
            Err(e) => {
                echo_errors += 1;
                if examples.len() < 2 {
                    examples.push(e.to_string());
                }
            }
        }
    }
    let total = started.elapsed();
    latencies.sort_unstable();
    let pct = |p: f64| -> String {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or_else(|| "-".into(), |d| fmt_duration(*d))
    };
    let mut got = format!(
        "{}/{n} verified in {}; echo latency p50 {}, p99 {}, max {}",
        latencies.len(),
        fmt_duration(total),
        pct(0.5),
        pct(0.99),
        latencies
            .last()
            .map_or_else(|| "-".into(), |d| fmt_duration(*d)),
    );
    if connect_errors + echo_errors > 0 {
        got.push_str(&format!(
            "; {connect_errors} connect failures, {echo_errors} bad echoes (e.g. {})",
            examples.join("; ")
        ));
    }
    Outcome::new(latencies.len() == n, expected, got)
}
