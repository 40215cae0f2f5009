//! Setting the ring up, and saying in one line why not: the kernel
//! features the loop needs, the provided-buffer ring registered, the eventfd
//! the shutdown signal writes to. Part of the io_uring model; the loop is in
//! `mod.rs`.

use std::collections::VecDeque;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::echo::Spare;
use common::net::Backoff;
use common::{ServerConfig, Shutdown, Stats};
use io_uring::{IoUring, opcode, squeue};
use log::{error, info};

use super::accept::AcceptState;
use super::buffers::BufRing;
use super::{RecvMode, RecvState, RingCounters, RingOptions, Uring};

impl Uring {
    /// A ring, its buffers and the loop's state, ready to arm.
    pub(super) fn new(
        listener: TcpListener,
        config: ServerConfig,
        shutdown: Shutdown,
        options: &RingOptions,
    ) -> io::Result<Uring> {
        let (ring, bufs) = setup(options)?;
        let wake = Arc::new(eventfd()?);
        shutdown.on_trigger({
            let wake = wake.clone();
            move || {
                let one: u64 = 1;
                // SAFETY: write(2) reads 8 bytes from a local u64 that lives
                // across the call; the Arc keeps the eventfd open.
                let n = unsafe {
                    libc::write(
                        wake.as_raw_fd(),
                        (&one as *const u64).cast::<libc::c_void>(),
                        8,
                    )
                };
                if n != 8 {
                    error!(
                        "could not wake the io_uring loop: {}",
                        io::Error::last_os_error()
                    );
                }
            }
        });
        let stats = Arc::new(Stats::new());
        let quickest = [config.idle_timeout, Some(config.stall_timeout)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(config.stall_timeout);
        let now = Instant::now();
        let server = Uring {
            ring,
            bufs,
            wake,
            listener: Some(listener),
            accept: AcceptState {
                armed: false,
                multishot: true,
                seen_ok: false,
                paused_until: None,
            },
            recv: RecvState {
                mode: options.recv,
                seen_ok: false,
            },
            backoff: Backoff::new(),
            slots: Vec::new(),
            free: Vec::new(),
            open: 0,
            backlog: VecDeque::new(),
            cqes: Vec::new(),
            spare: Spare::default(),
            now,
            sweep_every: (quickest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)),
            next_sweep: now,
            deadline: None,
            fatal: None,
            cut_done: false,
            config,
            stats: stats.clone(),
            shutdown,
            counters: RingCounters::default(),
        };
        info!(
            "uring model: one thread, io_uring with {} SQEs, {} provided buffers of {} bytes, {} asked for{}",
            server.ring.params().sq_entries(),
            server.bufs.count,
            server.bufs.size,
            server.recv.mode.describe(),
            match options.sqpoll_idle {
                Some(idle) =>
                    format!(", SQPOLL (the kernel's polling thread sleeps after {idle:?} idle)"),
                None => String::new(),
            }
        );
        Ok(server)
    }
}

/// Whether this kernel lets us run the uring model: `Ok(())`, or one line
/// saying which refusal (seccomp, the `kernel.io_uring_disabled` sysctl, an
/// old kernel) and how to check.
///
/// The trial ring is set up and torn down on a short-lived thread of its
/// own: tearing a ring down queues kernel work for the thread that made it,
/// and that work interrupts the thread's next blocking call. A `recv` on a
/// socket with `SO_RCVTIMEO` is not restarted after such an interruption
/// (signal(7)), so a caller's next read would fail with `EINTR`. (The new
/// thread inherits the caller's seccomp filter, so a refusal is still seen.)
pub fn probe() -> Result<(), String> {
    std::thread::Builder::new()
        .name("uring-probe".into())
        .spawn(probe_here)
        .map_err(|e| format!("io_uring probe: cannot start a thread: {e}"))?
        .join()
        .unwrap_or_else(|_| Err("io_uring probe: the probe thread panicked".into()))
}

fn probe_here() -> Result<(), String> {
    let options = RingOptions {
        sq_entries: 4,
        buffers: 1,
        buffer_size: 64,
        sqpoll_idle: None,
        recv: RecvMode::MultishotBudget,
    };
    setup(&options).map(drop).map_err(|e| e.to_string())
}

pub(super) fn setup(options: &RingOptions) -> io::Result<(IoUring, BufRing)> {
    let ring = build_ring(options).map_err(|e| refused("io_uring_setup", &e))?;
    let p = ring.params();
    if !p.is_feature_ext_arg() || !p.is_feature_nodrop() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "io_uring is unavailable: kernel {} lacks IORING_FEAT_EXT_ARG/NODROP (needs Linux 5.19 or later; check: uname -r)",
                kernel_release()
            ),
        ));
    }
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| refused("IORING_REGISTER_PROBE", &e))?;
    for (code, name) in [
        (opcode::Recv::CODE, "RECV"),
        (opcode::Send::CODE, "SEND"),
        (opcode::Accept::CODE, "ACCEPT"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
        (opcode::PollAdd::CODE, "POLL_ADD"),
    ] {
        if !probe.is_supported(code) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "io_uring is unavailable: kernel {} has no IORING_OP_{name} (needs Linux 5.19 or later; check: uname -r)",
                    kernel_release()
                ),
            ));
        }
    }
    let bufs = BufRing::new(options.buffers, options.buffer_size)?;
    bufs.register(&ring)
        .map_err(|e| refused("IORING_REGISTER_PBUF_RING", &e))?;
    Ok((ring, bufs))
}

fn build_ring(options: &RingOptions) -> io::Result<IoUring> {
    let cq = options.sq_entries.saturating_mul(16);
    let mut builder = IoUring::builder();
    builder.setup_cqsize(cq).setup_clamp();
    if let Some(idle) = options.sqpoll_idle {
        builder.setup_sqpoll(u32::try_from(idle.as_millis()).unwrap_or(u32::MAX));
    } else {
        // One thread submits (SINGLE_ISSUER, 6.0) and the kernel runs
        // completion work only when we ask for completions (DEFER_TASKRUN,
        // 6.1), instead of interrupting us: fewer context switches. Older
        // kernels say EINVAL; then a plain ring.
        let mut fast = IoUring::builder();
        fast.setup_cqsize(cq)
            .setup_clamp()
            .setup_single_issuer()
            .setup_defer_taskrun();
        if let Ok(ring) = fast.build(options.sq_entries) {
            return Ok(ring);
        }
    }
    builder.build(options.sq_entries)
}

/// One line: why the kernel refused `what`, and how to check.
fn refused(what: &str, e: &io::Error) -> io::Error {
    // Linux 6.6+: 0 allows io_uring, 1 only to root and one group, 2 to nobody.
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .map(|s| s.trim().to_string());
    let line = explain(what, e, disabled.as_deref(), &kernel_release());
    io::Error::new(io::ErrorKind::Unsupported, line)
}

fn explain(what: &str, e: &io::Error, disabled: Option<&str>, release: &str) -> String {
    match (e.raw_os_error(), disabled) {
        (Some(libc::EPERM), Some("2")) => "io_uring is unavailable: sysctl kernel.io_uring_disabled = 2 disables it for every process (check: cat /proc/sys/kernel/io_uring_disabled; 0 allows it)".to_string(),
        (Some(libc::EPERM), Some("1")) => "io_uring is unavailable: sysctl kernel.io_uring_disabled = 1 allows it only to root and the group in kernel.io_uring_group (check: cat /proc/sys/kernel/io_uring_disabled /proc/sys/kernel/io_uring_group; id -G)".to_string(),
        (Some(libc::EPERM), _) => format!(
            "io_uring is unavailable: {what} returned EPERM, most likely a seccomp profile (container runtimes' default profiles block io_uring; check: grep Seccomp /proc/self/status shows 2 when a filter is on)"
        ),
        (Some(libc::ENOSYS), _) => format!(
            "io_uring is unavailable: {what} returned ENOSYS: kernel {release} was built without io_uring or is older than 5.1, or a seccomp profile answers ENOSYS (this server needs Linux 5.19 or later; check: uname -r; grep Seccomp /proc/self/status)"
        ),
        (Some(libc::EINVAL), _) | (None, _) if e.kind() == io::ErrorKind::InvalidInput => format!(
            "io_uring is unavailable: kernel {release} refused {what} with EINVAL: too old for provided-buffer rings (needs Linux 5.19 or later; check: uname -r)"
        ),
        _ => format!("io_uring is unavailable: {what}: {e} (kernel {release})"),
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "(unknown)".into())
}

/// A multishot recv's total byte budget: the kernel ends it (a CQE without
/// F_MORE) once it has received `total` bytes; 0 means no limit. The field
/// is `sqe->optlen`, which the io-uring crate has no setter for on a recv.
pub(super) fn with_total_len(mut entry: squeue::Entry, total: u32) -> squeue::Entry {
    // SAFETY: `squeue::Entry` is `#[repr(C)]` around the kernel's 64-byte
    // `struct io_uring_sqe` (size asserted below), whose u32 at byte 44 is
    // the union of `splice_fd_in`, `file_index` and `optlen` (the uapi
    // header; the unit test checks the offset through `file_index`). The
    // write stays inside `entry`, needs no alignment (write_unaligned), and
    // the field names no memory.
    unsafe {
        (&raw mut entry)
            .cast::<u8>()
            .add(SQE_OPTLEN)
            .cast::<u32>()
            .write_unaligned(total);
    }
    entry
}

const SQE_OPTLEN: usize = 44;
const _: () = assert!(std::mem::size_of::<squeue::Entry>() == 64);

/// `ioctl(FIONREAD)`: bytes in the socket's receive queue now.
pub(super) fn bytes_waiting(stream: &TcpStream) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int, into `n`, which outlives the call.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc < 0 {
        // Nothing sensible to drain (a reset socket, say): input is done.
        0
    } else {
        usize::try_from(n).unwrap_or(0)
    }
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd(2) takes no pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::uring::buffers::BGID;
    use io_uring::types;

    #[test]
    fn each_refusal_is_one_line_naming_its_cause() {
        let err = |n| io::Error::from_raw_os_error(n);
        let cases = [
            (err(libc::EPERM), Some("2"), "io_uring_disabled = 2"),
            (err(libc::EPERM), Some("1"), "io_uring_group"),
            (err(libc::EPERM), Some("0"), "seccomp"),
            (err(libc::EPERM), None, "seccomp"),
            (err(libc::ENOSYS), None, "ENOSYS"),
            (err(libc::EINVAL), None, "5.19"),
            (err(libc::ENOMEM), Some("0"), "Cannot allocate memory"),
        ];
        for (e, disabled, needle) in cases {
            let line = explain("io_uring_setup", &e, disabled, "4.19.0");
            assert!(line.starts_with("io_uring is unavailable: "), "{line}");
            assert!(line.contains(needle), "{needle}: {line}");
            assert!(!line.contains('\n'), "{line}");
        }
    }

    /// The u32 at byte `SQE_OPTLEN` of an entry, read as `with_total_len`
    /// writes it.
    fn sqe_u32_at_optlen(entry: &squeue::Entry) -> u32 {
        // SAFETY: reads 4 bytes inside the 64-byte entry (size asserted).
        unsafe {
            (entry as *const squeue::Entry)
                .cast::<u8>()
                .add(SQE_OPTLEN)
                .cast::<u32>()
                .read_unaligned()
        }
    }

    #[test]
    fn the_budget_lands_in_the_sqe_field_the_kernel_reads() {
        // The crate writes `file_index` (the same union as `optlen`) for an
        // accept into a fixed slot: slot 41 is 42 to the kernel. If the
        // offset were wrong, this would read something else.
        let slot = types::DestinationSlot::try_from_slot_target(41).unwrap();
        let accept = opcode::Accept::new(types::Fd(3), std::ptr::null_mut(), std::ptr::null_mut())
            .file_index(Some(slot))
            .build();
        assert_eq!(sqe_u32_at_optlen(&accept), 42);
        let recv = opcode::RecvMulti::new(types::Fd(3), BGID).build();
        assert_eq!(sqe_u32_at_optlen(&recv), 0, "no budget: no limit");
        let budgeted = with_total_len(recv, 262_144).user_data(7);
        assert_eq!(sqe_u32_at_optlen(&budgeted), 262_144);
        assert_eq!(budgeted.get_user_data(), 7, "nothing else moved");
    }
}
