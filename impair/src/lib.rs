//! `impair`: a user-space relay that does to UDP and TCP traffic what a bad
//! network does, reproducibly, without root.
//!
//! | module    | what it holds                                                        |
//! |-----------|----------------------------------------------------------------------|
//! | [`fate`]  | the seeded decisions (loss, dup, reorder, jitter, split sizes, link rate) as pure functions |
//! | [`udp`]   | the UDP relay: a flow per client address, a bounded link per direction |
//! | [`tcp`]   | the TCP relay: two pumps per connection, bounded in bytes (backpressure) |
//! | [`stats`] | the counters of the periodic report and the summary on exit            |
//! | [`cli`]   | flags and their parsers (`5%`, `1Mbit`, `50ms`), the loopback rule      |
//!
//! Toxiproxy (Shopify) is the model for the TCP toxics (latency, bandwidth,
//! slicer, timeout, reset_peer); what it lacks, UDP with loss, duplicates and
//! reordering, is why this exists. Linux's `netem` would do all of it in the
//! kernel, but needs root and a kernel built with it; this one needs neither.
//!
//! [`Relay`] runs a relay on its own thread with a single-threaded tokio
//! runtime; `main` and the tests both use it.

pub mod cli;
pub mod fate;
pub mod stats;
pub mod tcp;
pub mod udp;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use common::Shutdown;

pub use stats::Stats;
pub use tcp::TcpConfig;
pub use udp::UdpConfig;

/// A running relay: its address, its counters, and how to stop it.
#[derive(Debug)]
pub struct Relay {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    pub shutdown: Shutdown,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Relay {
    /// Bind UDP `listen` and relay to `config.upstream` on a new thread.
    pub fn udp(listen: SocketAddr, config: UdpConfig) -> io::Result<Relay> {
        // Bound here, on the caller's thread, so a bind error (address in
        // use) is returned to the caller rather than lost in the thread.
        let socket = std::net::UdpSocket::bind(listen)?;
        udp::grow_receive_buffer(&socket);
        socket.set_nonblocking(true)?;
        let addr = socket.local_addr()?;
        not_itself(addr, config.upstream)?;
        Self::spawn(addr, "impair-udp", move |stats, shutdown| async move {
            let socket = tokio::net::UdpSocket::from_std(socket)?;
            udp::run(socket, config, stats, shutdown).await
        })
    }

    /// Listen on TCP `listen` and relay to `config.upstream` on a new thread.
    pub fn tcp(listen: SocketAddr, config: TcpConfig) -> io::Result<Relay> {
        let listener = common::net::listen(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        not_itself(addr, config.upstream)?;
        Self::spawn(addr, "impair-tcp", move |stats, shutdown| async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            tcp::run(listener, config, stats, shutdown).await
        })
    }

    fn spawn<F, Fut>(addr: SocketAddr, name: &str, f: F) -> io::Result<Relay>
    where
        F: FnOnce(Arc<Stats>, Shutdown) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = io::Result<()>>,
    {
        let stats = Arc::new(Stats::default());
        let shutdown = Shutdown::new();
        let thread = {
            let (stats, shutdown) = (stats.clone(), shutdown.clone());
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    // One thread is plenty for a relay: it waits on timers
                    // and sockets, and its own work per byte is a memcpy.
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    rt.block_on(f(stats, shutdown))
                })?
        };
        Ok(Relay {
            addr,
            stats,
            shutdown,
            thread: Some(thread),
        })
    }

    /// Wait until the relay stops (after `shutdown.trigger()`, e.g. Ctrl-C).
    pub fn wait(mut self) -> io::Result<()> {
        self.join()
    }

    /// Stop the relay and wait for it.
    pub fn stop(mut self) -> io::Result<()> {
        self.shutdown.trigger();
        self.join()
    }

    fn join(&mut self) -> io::Result<()> {
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("relay thread panicked"))),
            None => Ok(()),
        }
    }
}

/// A relay whose upstream is itself would relay to itself until it runs out
/// of connections or flows (with port 0, the kernel can hand out the port
/// the upstream was just given up on).
fn not_itself(listen: SocketAddr, upstream: SocketAddr) -> io::Result<()> {
    if listen == upstream {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--upstream {upstream} is the relay's own address"),
        ));
    }
    Ok(())
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shutdown.trigger();
        let _ = self.join();
    }
}
