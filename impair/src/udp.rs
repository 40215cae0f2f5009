//! The UDP relay: a bad network between a client and a UDP server.
//!
//! ```text
//!  client ──► [listen socket] ──up link──► [flow's upstream socket] ──► server
//!  client ◄── [listen socket] ◄─down link── [flow's upstream socket] ◄── server
//! ```
//!
//! Run with, in three terminals: `cargo run -p udp-echo -- server`,
//! `cargo run -p impair -- udp --listen 127.0.0.1:7102 --upstream 127.0.0.1:7002 --loss 5% --reorder 5%`
//! and `cargo run -p udp-echo -- client --addr 127.0.0.1:7102 --count 200 --window 8`.
//! Watch the client count lost, duplicated and reordered replies, and the
//! relay's report say which it caused.
//!
//! Why one upstream socket per client address (a "flow", as NAT boxes call
//! it): the server answers to the address a datagram came from. If every
//! client's datagrams left through one socket, the replies would all come back
//! to that socket and we could not tell whose they are. A `connect()`ed
//! socket per flow also filters: the kernel only hands it datagrams from the
//! server. A flow is forgotten (its socket closed, its tasks ended) after
//! `--idle-timeout` without traffic, so the relay's memory follows the number
//! of *active* clients; `--max-flows` bounds even that.
//!
//! Each direction of each flow is a *link*: a bounded FIFO queue (tail drop
//! when full, as a router does) and a task that sends each datagram when
//! its time comes. Loss, duplication and reordering are decided on arrival by
//! [`crate::fate::fate`], from the seed and the datagram's number, so a run
//! can be repeated exactly. Jitter never reorders here (departures are kept
//! in arrival order): all reordering comes from `--reorder`, so the
//! experiment changes one thing at a time.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use common::Shutdown;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::fate::{self, Dir, Direction, Fate, UdpToxics};
use crate::stats::{DirStats, Stats};

/// Bigger than any datagram IPv4 or IPv6 can carry: `recv` into a smaller
/// buffer silently truncates the datagram.
const RECV_BUFFER: usize = 65_536;

/// Ask for a 4 MiB receive buffer (the kernel caps it at
/// `net.core.rmem_max`). A burst of datagrams that arrives faster than the
/// relay reads is dropped by the kernel *before* our seeded decisions see
/// it, when the default ~200 KiB queue overflows; that would be loss nobody
/// asked for and no seed reproduces.
pub fn grow_receive_buffer(s: impl std::os::fd::AsFd) {
    if let Err(e) = socket2::SockRef::from(&s).set_recv_buffer_size(4 << 20) {
        log::debug!("SO_RCVBUF: {e}");
    }
}

/// Everything the UDP relay needs besides its socket.
#[derive(Debug, Clone)]
pub struct UdpConfig {
    pub upstream: SocketAddr,
    pub seed: u64,
    pub direction: Direction,
    pub report: Option<Duration>,
    pub toxics: UdpToxics,
    /// Bits per second of each link; `None` = unlimited.
    pub rate: Option<u64>,
    pub reorder_hold: Duration,
    /// Datagrams queued per link before tail drop.
    pub queue: usize,
    pub idle_timeout: Duration,
    pub max_flows: usize,
}

impl UdpConfig {
    /// A relay to `upstream` that changes nothing (tests add toxics).
    pub fn new(upstream: SocketAddr) -> Self {
        UdpConfig {
            upstream,
            seed: 1,
            direction: Direction::Both,
            report: None,
            toxics: UdpToxics::default(),
            rate: None,
            reorder_hold: Duration::from_millis(100),
            queue: 1000,
            idle_timeout: Duration::from_secs(60),
            max_flows: 1024,
        }
    }

    fn toxics(&self, dir: Dir) -> UdpToxics {
        if self.direction.includes(dir) {
            self.toxics.clone()
        } else {
            UdpToxics::default()
        }
    }

    fn rate(&self, dir: Dir) -> Option<u64> {
        self.rate.filter(|_| self.direction.includes(dir))
    }
}

/// One datagram in a link's queue (or held back by `--reorder`).
struct Packet {
    data: Vec<u8>,
    arrival: Instant,
    fate: Fate,
    /// For the `buffered` gauge: a packet leaves it when it is dropped,
    /// whether sent, or thrown away with its flow's queue.
    stats: Arc<Stats>,
}

impl Drop for Packet {
    fn drop(&mut self) {
        self.stats.sub_buffered(self.data.len());
    }
}

/// One client address and what the relay keeps for it.
struct Flow {
    up: mpsc::Sender<Packet>,
    /// Datagrams seen from the client: the `n` of [`fate::fate`].
    n_up: u64,
    /// Milliseconds since `epoch` of the last datagram either way.
    last_seen: Arc<AtomicU64>,
    tasks: Vec<AbortHandle>,
}

impl Drop for Flow {
    fn drop(&mut self) {
        // Ending the tasks drops the flow's upstream socket (they own it),
        // which closes it: the kernel frees the port.
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Where a link sends: the flow's connected upstream socket, or the shared
/// listening socket back to one client.
enum Out {
    Upstream(Arc<UdpSocket>),
    Client(Arc<UdpSocket>, SocketAddr),
}

impl Out {
    async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Out::Upstream(s) => s.send(buf).await,
            Out::Client(s, to) => s.send_to(buf, to).await,
        }
    }
}

/// Relay datagrams arriving on `socket` to `config.upstream` until
/// `shutdown`; log the summary and return.
pub async fn run(
    socket: UdpSocket,
    config: UdpConfig,
    stats: Arc<Stats>,
    shutdown: Shutdown,
) -> io::Result<()> {
    let socket = Arc::new(socket);
    let config = Arc::new(config);
    let epoch = Instant::now();
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut buf = vec![0u8; RECV_BUFFER];
    // Idle flows are found by a periodic sweep rather than a timer per flow:
    // one timer for any number of flows, and a flow is freed at most a
    // quarter of the timeout late.
    let mut sweep = tokio::time::interval((config.idle_timeout / 4).max(Duration::from_millis(10)));
    let mut report = config
        .report
        .map(|d| tokio::time::interval_at(Instant::now() + d, d));
    log::info!(
        "impair udp: relaying {} -> {}, {:?} on {:?}, seed {}",
        socket.local_addr()?,
        config.upstream,
        config.toxics,
        config.direction,
        config.seed
    );
    loop {
        tokio::select! {
            _ = shutdown.triggered() => break,
            _ = sweep.tick() => {
                let now = epoch.elapsed().as_millis() as u64;
                let idle = config.idle_timeout.as_millis() as u64;
                let before = flows.len();
                flows.retain(|peer, f| {
                    let keep = now.saturating_sub(f.last_seen.load(Relaxed)) < idle;
                    if !keep {
                        log::info!("{peer}: flow idle for {:?}, forgotten", config.idle_timeout);
                    }
                    keep
                });
                stats.closed.fetch_add((before - flows.len()) as u64, Relaxed);
            }
            _ = tick(&mut report) => log::info!("impair udp: {}", stats.udp()),
            // recv_from is cancel-safe: if another branch wins, no datagram
            // is lost, it stays in the kernel's queue for the next call.
            r = socket.recv_from(&mut buf) => {
                let (n, peer) = match r {
                    Ok(x) => x,
                    // An unconnected UDP socket gets almost no errors on
                    // Linux (ICMP errors only reach connected sockets), but
                    // whatever comes is about one datagram: log and go on.
                    Err(e) => {
                        log::debug!("recv_from: {e}");
                        continue;
                    }
                };
                let up = &stats.up;
                up.received.fetch_add(1, Relaxed);
                up.bytes_in.fetch_add(n as u64, Relaxed);
                if !flows.contains_key(&peer) {
                    if flows.len() >= config.max_flows {
                        let n = stats.refused.fetch_add(1, Relaxed) + 1;
                        if quiet_log(n) {
                            log::warn!("{peer}: dropped, already {} flows (--max-flows; {n} refused so far)", flows.len());
                        }
                        continue;
                    }
                    match open_flow(peer, &socket, &config, &stats, epoch).await {
                        Ok(flow) => {
                            stats.opened.fetch_add(1, Relaxed);
                            flows.insert(peer, flow);
                        }
                        Err(e) => {
                            let n = stats.refused.fetch_add(1, Relaxed) + 1;
                            if quiet_log(n) {
                                log::warn!("{peer}: cannot open a socket to {} ({n} refused so far): {e}", config.upstream);
                            }
                            continue;
                        }
                    }
                }
                let Some(flow) = flows.get_mut(&peer) else { continue };
                flow.last_seen.store(epoch.elapsed().as_millis() as u64, Relaxed);
                let n_up = flow.n_up;
                flow.n_up += 1;
                let fate = fate::fate(&config.toxics(Dir::Up), config.seed, Dir::Up, n_up);
                enqueue(&flow.up, &buf[..n], fate, up, &stats);
            }
        }
    }
    drop(flows);
    log::info!("impair udp stopped: {}", stats.udp());
    Ok(())
}

/// Log the 1st, 2nd, 4th, 8th... refusal: a flood of datagrams from new
/// addresses must not become a flood of log lines.
fn quiet_log(n: u64) -> bool {
    n.is_power_of_two()
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Put a datagram in a link's queue, or count why not.
fn enqueue(link: &mpsc::Sender<Packet>, data: &[u8], fate: Fate, d: &DirStats, stats: &Arc<Stats>) {
    if fate.lost {
        d.lost.fetch_add(1, Relaxed);
        log::debug!("{} bytes lost (--loss)", data.len());
        return;
    }
    stats.add_buffered(data.len());
    let packet = Packet {
        data: data.to_vec(),
        arrival: Instant::now(),
        fate,
        stats: stats.clone(),
    };
    // Counted before the attempt, so the gauge never dips below zero; a
    // refused packet leaves it again when it is dropped (Packet::drop).
    // try_send, not send().await: a full queue must drop the newcomer (tail
    // drop, what a router's full buffer does), never stall the receive loop
    // that serves every other flow.
    match link.try_send(packet) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            d.tail_dropped.fetch_add(1, Relaxed);
        }
        // The link task is gone (the flow is being forgotten): drop it.
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

async fn open_flow(
    peer: SocketAddr,
    listen: &Arc<UdpSocket>,
    config: &Arc<UdpConfig>,
    stats: &Arc<Stats>,
    epoch: Instant,
) -> io::Result<Flow> {
    // Port 0 on the unspecified address of the upstream's family; connect()
    // then picks the source address by routing (127.0.0.1 for loopback).
    let any = match config.upstream.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let upstream = UdpSocket::bind(SocketAddr::new(any, 0)).await?;
    upstream.connect(config.upstream).await?;
    grow_receive_buffer(&upstream);
    let upstream = Arc::new(upstream);
    log::info!(
        "{peer}: new flow, relayed from {} to {}",
        upstream.local_addr()?,
        config.upstream
    );
    let last_seen = Arc::new(AtomicU64::new(epoch.elapsed().as_millis() as u64));
    let (up_tx, up_rx) = mpsc::channel(config.queue);
    let (down_tx, down_rx) = mpsc::channel(config.queue);

    let up_link = tokio::spawn(link(
        up_rx,
        Out::Upstream(upstream.clone()),
        config.clone(),
        Dir::Up,
        stats.clone(),
    ));
    let down_link = tokio::spawn(link(
        down_rx,
        Out::Client(listen.clone(), peer),
        config.clone(),
        Dir::Down,
        stats.clone(),
    ));
    let reader = {
        let (config, stats, last_seen) = (config.clone(), stats.clone(), last_seen.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; RECV_BUFFER];
            let toxics = config.toxics(Dir::Down);
            let mut n_down = 0u64;
            loop {
                match upstream.recv(&mut buf).await {
                    Ok(n) => {
                        last_seen.store(epoch.elapsed().as_millis() as u64, Relaxed);
                        let d = &stats.down;
                        d.received.fetch_add(1, Relaxed);
                        d.bytes_in.fetch_add(n as u64, Relaxed);
                        let fate = fate::fate(&toxics, config.seed, Dir::Down, n_down);
                        n_down += 1;
                        enqueue(&down_tx, &buf[..n], fate, d, &stats);
                    }
                    // ECONNREFUSED: an earlier datagram of ours got ICMP
                    // port unreachable (nobody listens upstream). The
                    // connected socket reports it on the next call; the flow
                    // carries on, as the client would.
                    Err(e) => {
                        stats.down.send_errors.fetch_add(1, Relaxed);
                        log::debug!("{peer}: upstream: {e}");
                    }
                }
            }
        })
    };
    Ok(Flow {
        up: up_tx,
        n_up: 0,
        last_seen,
        tasks: vec![
            up_link.abort_handle(),
            down_link.abort_handle(),
            reader.abort_handle(),
        ],
    })
}

/// One direction of one flow: take datagrams in arrival order, wait until
/// each may leave (delay, jitter, the link's rate), hold back the ones marked
/// for reordering until the next has gone, send duplicates twice.
async fn link(
    mut rx: mpsc::Receiver<Packet>,
    out: Out,
    config: Arc<UdpConfig>,
    dir: Dir,
    stats: Arc<Stats>,
) {
    let d = stats.dir(dir);
    let rate = config.rate(dir);
    let mut last_departure = Instant::now();
    let mut link_free = Instant::now();
    let mut held: Option<Packet> = None;
    loop {
        let next = if held.is_some() {
            match tokio::time::timeout(config.reorder_hold, rx.recv()).await {
                Ok(p) => p,
                // Nobody overtook it in time: it goes alone (not counted as
                // reordered, since it was not).
                Err(_elapsed) => {
                    if let Some(h) = held.take() {
                        transmit(&out, &h, d).await;
                    }
                    continue;
                }
            }
        } else {
            rx.recv().await
        };
        let Some(p) = next else {
            // The flow is gone; what is still held goes nowhere.
            break;
        };
        // Departure in arrival order: a datagram with less jitter than the
        // one before it waits for it (jitter alone never reorders here).
        let departure = (p.arrival + p.fate.delay).max(last_departure);
        last_departure = departure;
        // Serialisation on a link of `rate` bits/s: it can start sending
        // when the previous datagram is fully on the wire.
        let send_at = match rate {
            Some(bits) => {
                let start = departure.max(link_free);
                link_free = start + fate::transmit_time(p.data.len(), bits);
                start
            }
            None => departure,
        };
        if send_at > p.arrival + Duration::from_micros(100) {
            d.delayed.fetch_add(1, Relaxed);
        }
        tokio::time::sleep_until(send_at).await;
        if p.fate.reordered && held.is_none() {
            held = Some(p);
            continue;
        }
        transmit(&out, &p, d).await;
        if let Some(h) = held.take() {
            transmit(&out, &h, d).await;
            d.reordered.fetch_add(1, Relaxed);
        }
    }
}

async fn transmit(out: &Out, p: &Packet, d: &DirStats) {
    let copies = if p.fate.duplicated { 2 } else { 1 };
    if p.fate.duplicated {
        d.duplicated.fetch_add(1, Relaxed);
    }
    for _ in 0..copies {
        match out.send(&p.data).await {
            Ok(n) => {
                d.sent.fetch_add(1, Relaxed);
                d.bytes_out.fetch_add(n as u64, Relaxed);
            }
            // ECONNREFUSED from an earlier ICMP port unreachable, ENOBUFS...:
            // UDP promises nothing, so a failed send is one more lost
            // datagram, counted, never the end of the relay.
            Err(e) => {
                d.send_errors.fetch_add(1, Relaxed);
                log::debug!("send: {e}");
            }
        }
    }
}
