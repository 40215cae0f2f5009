//! Capturing with an `AF_PACKET` socket: what tcpdump does under libpcap,
//! reduced to `socket`, `bind`, `poll` and `recvfrom`.
//!
//! `socket(AF_PACKET, SOCK_RAW, ETH_P_ALL)` receives a copy of every frame
//! on the interfaces it is bound to, link header included; it needs
//! `CAP_NET_RAW`, which the namespace's root has over the namespace's own
//! interfaces only. Bound to `lo`, it sees each packet twice: once leaving
//! (`PACKET_OUTGOING`) and once arriving (`PACKET_HOST`). We keep the
//! leaving copy. Its timestamp is taken at one place, as the packet is
//! handed to the device; the arriving copy's is taken either when it is
//! queued or when it is delivered (TCP's departure-time stamps are swapped
//! for the clock there), so on arriving copies a data segment can appear
//! *after* the ACK that answers it. The frames are then put in timestamp
//! order, which on the leaving copies is the order of transmission.
//!
//! The capture is bounded: at most `max_packets` frames and `max_bytes`
//! bytes are kept (the rest are counted, not stored), each frame cut to the
//! snap length; the kernel's own drops (its socket buffer full) are read
//! back with `PACKET_STATISTICS` and reported.
//!
//! Try: `target/debug/peek --max-packets 5 -- target/debug/tcp-echo` (the limit note at the end)

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub ts: Duration,
    pub wire_len: usize,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_packets: usize,
    pub max_bytes: usize,
    pub snaplen: usize,
}

#[derive(Debug, Default)]
pub struct Capture {
    pub frames: Vec<Frame>,
    /// Bytes kept in `frames`.
    pub bytes: usize,
    /// Frames seen after a limit was reached, counted but not kept.
    pub not_kept: usize,
    /// The limit that was reached, said in words.
    pub limit: Option<String>,
    /// Frames the kernel dropped because we did not read fast enough.
    pub kernel_drops: u32,
}

/// Set by `peek`'s SIGINT handler; the capture loop forwards it once.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How long to keep reading after the command exits: packets still in
/// flight (the last ACK, a FIN sent at exit by the kernel) arrive within
/// microseconds on loopback; the bound keeps `peek` from ever hanging.
const DRAIN_QUIET: Duration = Duration::from_millis(200);
const DRAIN_MAX: Duration = Duration::from_secs(2);

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The packet socket, bound to `lo` of the current network namespace.
pub fn open() -> io::Result<OwnedFd> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: socket() returns a new descriptor or -1.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::c_int::from(proto),
        )
    })?;
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a NUL-terminated literal.
    let index = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sockaddr_ll is plain old data; zero is valid.
    let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = index as libc::c_int;
    // SAFETY: we pass a sockaddr_ll and its exact size.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const sll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })?;
    // Ask for timestamps now, before the command starts: the kernel stamps
    // packets only while some socket wants stamps, and until then
    // SIOCGSTAMPNS answers with the time of the ioctl itself.
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)?;
    // A larger buffer for bursts (a 16 KiB echo at MTU 1500 is a dozen frames,
    // each queued twice); the kernel caps it at net.core.rmem_max.
    let _ = setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 4 << 20);
    Ok(fd)
}

fn setsockopt(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: an int option, passed with its size.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// The kernel's receive time of the last frame read (`SIOCGSTAMPNS`): when
/// the packet crossed the interface, not when we got around to reading it.
fn kernel_timestamp(fd: &OwnedFd) -> Duration {
    const SIOCGSTAMPNS: libc::c_ulong = 0x8907;
    // SAFETY: timespec is plain old data.
    let mut ts: libc::timespec = unsafe { zeroed() };
    // SAFETY: SIOCGSTAMPNS writes one timespec, which we own.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCGSTAMPNS as _, &raw mut ts) };
    if r == 0 && ts.tv_sec >= 0 {
        Duration::new(ts.tv_sec as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
    } else {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    }
}

/// Read every frame that is ready, without blocking.
fn read_ready(
    fd: &OwnedFd,
    buf: &mut [u8],
    limits: &Limits,
    cap: &mut Capture,
) -> io::Result<usize> {
    let mut got = 0;
    loop {
        // SAFETY: zeroed sockaddr_ll is valid; recvfrom fills at most its size.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // MSG_TRUNC: return the frame's real length even when it was cut
        // to fit `buf` (that is how the snap length is applied).
        // SAFETY: buf and sll are ours, with their sizes.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                (&raw mut sll).cast(),
                &mut len,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(got),
                io::ErrorKind::Interrupted => continue,
                _ => Err(e),
            };
        }
        if sll.sll_pkttype != libc::PACKET_OUTGOING {
            continue;
        }
        got += 1;
        let wire_len = n as usize;
        let kept = wire_len.min(buf.len()).min(limits.snaplen);
        if cap.frames.len() >= limits.max_packets {
            cap.limit
                .get_or_insert(format!("--max-packets {}", limits.max_packets));
        } else if cap.bytes + kept > limits.max_bytes {
            cap.limit
                .get_or_insert(format!("--max-bytes {}", limits.max_bytes));
        }
        if cap.limit.is_some() {
            cap.not_kept += 1;
            continue;
        }
        cap.bytes += kept;
        cap.frames.push(Frame {
            ts: kernel_timestamp(fd),
            wire_len,
            data: buf[..kept].to_vec(),
        });
    }
}

/// Capture until `child` exits, then drain what is still in flight.
pub fn run(fd: &OwnedFd, child: &mut Child, limits: Limits) -> io::Result<(Capture, ExitStatus)> {
    let mut cap = Capture::default();
    let mut buf = vec![0u8; limits.snaplen.max(64)];
    let mut exited: Option<(ExitStatus, Instant)> = None;
    let mut last_packet = Instant::now();
    loop {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd we own. EINTR (Ctrl-C reached us too) just loops.
        let r = unsafe { libc::poll(&mut pfd, 1, 50) };
        if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return Err(io::Error::last_os_error());
        }
        if r > 0 && read_ready(fd, &mut buf, &limits, &mut cap)? > 0 {
            last_packet = Instant::now();
        }
        match exited {
            None => {
                if let Some(status) = child.try_wait()? {
                    exited = Some((status, Instant::now()));
                } else if INTERRUPTED.swap(false, Ordering::Relaxed) {
                    let pid = libc::pid_t::try_from(child.id()).unwrap_or(0);
                    if pid > 0 {
                        // SAFETY: a signal to our own child, which has not
                        // been reaped (try_wait just said it still runs).
                        unsafe { libc::kill(pid, libc::SIGINT) };
                    }
                }
            }
            Some((status, at)) => {
                if last_packet.elapsed() >= DRAIN_QUIET || at.elapsed() >= DRAIN_MAX {
                    cap.kernel_drops = drops(fd);
                    // Stable: frames with equal stamps keep their arrival order.
                    cap.frames.sort_by_key(|f| f.ts);
                    return Ok((cap, status));
                }
            }
        }
    }
}

/// Frames the kernel dropped for this socket (`PACKET_STATISTICS`).
fn drops(fd: &OwnedFd) -> u32 {
    // SAFETY: tpacket_stats is plain old data.
    let mut st: libc::tpacket_stats = unsafe { zeroed() };
    let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into st.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&raw mut st).cast(),
            &mut len,
        )
    };
    if r == 0 { st.tp_drops } else { 0 }
}
