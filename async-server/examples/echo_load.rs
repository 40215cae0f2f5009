//! A small, bounded load client for measuring a raw-framing echo server's
//! own cost: CPU time per echo, bulk MB/s, memory per idle connection. It
//! reads the server's utime + stime and RSS from `/proc/PID/stat` and
//! `/proc/PID/status` before and after the run.
//!
//! Run with (two terminals; the server on raw framing):
//!
//! ```text
//! cargo run --release -p async-server -- server --framing raw --threads 1   # prints its address
//! cargo run --release -p async-server --example echo_load -- \
//!     --addr 127.0.0.1:7004 --pid $(pgrep -n async-server) --mode pingpong --conns 100 --size 64 --secs 10
//! ```
//!
//! Modes: `pingpong` (each connection sends `size` bytes and waits for them),
//! `bulk` (one connection, 64 KiB writes, a reader in parallel), `idle`
//! (open `conns` connections, one echo each, then hold them and report RSS).
//! Everything is bounded: at most 60 s and 20,000 connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug)]
struct Args {
    addr: SocketAddr,
    pid: Option<u32>,
    mode: String,
    conns: usize,
    size: usize,
    secs: u64,
}

fn parse() -> anyhow::Result<Args> {
    let mut a = Args {
        addr: "127.0.0.1:7004".parse()?,
        pid: None,
        mode: "pingpong".into(),
        conns: 100,
        size: 64,
        secs: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => a.addr = v.parse()?,
            "--pid" => a.pid = Some(v.parse()?),
            "--mode" => a.mode = v,
            "--conns" => a.conns = v.parse()?,
            "--size" => a.size = v.parse()?,
            "--secs" => a.secs = v.parse()?,
            _ => bail!("unknown flag {flag}"),
        }
    }
    a.secs = a.secs.clamp(1, 60);
    a.conns = a.conns.clamp(1, 20_000);
    a.size = a.size.clamp(1, 1 << 20);
    Ok(a)
}

/// (utime + stime in seconds, VmRSS in KiB) of `pid`.
fn usage(pid: u32) -> anyhow::Result<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("bad stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Ok((ticks as f64 / hz, rss))
}

fn main() -> anyhow::Result<()> {
    let args = parse()?;
    common::net::raise_fd_limit()?;
    // One client thread: on a 2-core machine the server gets the other core.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let before = args.pid.map(usage).transpose()?;
    let deadline = Instant::now() + Duration::from_secs(args.secs);
    let started = Instant::now();
    let (what, count) = match args.mode.as_str() {
        "pingpong" => ("echoes", pingpong(&args, deadline).await?),
        "bulk" => ("bytes", bulk(&args, deadline).await?),
        "idle" => {
            let conns = idle(&args).await?;
            if let (Some(pid), Some((_, rss0))) = (args.pid, before) {
                let (_, rss1) = usage(pid)?;
                println!(
                    "idle: {} connections, server RSS {rss0} KiB -> {rss1} KiB, {:.1} KiB per connection",
                    conns.len(),
                    (rss1.saturating_sub(rss0)) as f64 / conns.len() as f64
                );
            }
            return Ok(());
        }
        other => bail!("unknown mode {other}"),
    };
    let secs = started.elapsed().as_secs_f64();
    print!(
        "{}: {count} {what} in {secs:.2} s ({:.0}/s",
        args.mode,
        count as f64 / secs
    );
    if args.mode == "bulk" {
        print!(", {:.1} MB/s", count as f64 / secs / 1e6);
    }
    print!(")");
    if let (Some(pid), Some((cpu0, _))) = (args.pid, before) {
        let (cpu1, rss) = usage(pid)?;
        let cpu = cpu1 - cpu0;
        print!(", server CPU {cpu:.2} s");
        if args.mode == "bulk" {
            print!(" = {:.3} ms per MB", cpu * 1e3 / (count as f64 / 1e6));
        } else {
            print!(" = {:.2} µs per echo", cpu * 1e6 / count as f64);
        }
        print!(", RSS {rss} KiB");
    }
    println!();
    Ok(())
}

async fn pingpong(args: &Args, deadline: Instant) -> anyhow::Result<u64> {
    let echoes = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    for c in 0..args.conns {
        let (addr, size, echoes) = (args.addr, args.size, echoes.clone());
        set.spawn(async move {
            let mut s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            let msg: Vec<u8> = (0..size).map(|k| (c + k) as u8).collect();
            let mut back = vec![0; size];
            while Instant::now() < deadline {
                s.write_all(&msg).await?;
                tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
                    .await
                    .context("echo timed out")??;
                anyhow::ensure!(back == msg, "wrong echo");
                echoes.fetch_add(1, Relaxed);
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = set.join_next().await {
        done??;
    }
    Ok(echoes.load(Relaxed))
}

async fn bulk(args: &Args, deadline: Instant) -> anyhow::Result<u64> {
    let s = TcpStream::connect(args.addr).await?;
    let (mut rd, mut wr) = s.into_split();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let chunk: Vec<u8> = (0..64 * 1024).map(|k| (k % 251) as u8).collect();
            let mut sent = 0u64;
            while Instant::now() < deadline {
                wr.write_all(&chunk).await?;
                sent += chunk.len() as u64;
            }
            stop.store(true, Relaxed);
            wr.shutdown().await?;
            anyhow::Ok(sent)
        })
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), rd.read(&mut buf))
            .await
            .context("bulk read timed out")??;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let sent = writer.await??;
    anyhow::ensure!(got == sent, "sent {sent} bytes, got {got} back");
    Ok(got)
}

async fn idle(args: &Args) -> anyhow::Result<Vec<TcpStream>> {
    let mut conns = Vec::with_capacity(args.conns);
    for _ in 0..args.conns {
        let mut s = TcpStream::connect(args.addr).await?;
        s.write_all(b"x").await?;
        let mut b = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut b))
            .await
            .context("echo timed out")??;
        conns.push(s);
    }
    Ok(conns)
}
