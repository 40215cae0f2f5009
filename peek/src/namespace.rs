//! A private network for one command: a new network namespace (and, for an
//! ordinary user, a new user namespace to be allowed to make one) holding
//! nothing but its own loopback interface, brought up here by `ioctl`.
//!
//! This is what `unshare -rn` does, in three syscalls and three file
//! writes, and why `peek` needs no root and cannot see or touch the host's
//! network: the namespace has no other interface and no route out, so the
//! capture socket opened in it sees only the command's own traffic.
//!
//! Order matters: `unshare(CLONE_NEWUSER)` fails with `EINVAL` in a process
//! that has more than one thread, so [`enter`] must run first thing in
//! `main`, before anything could start a thread.
//!
//! Try: `target/debug/peek -- ip addr` (only `lo`, and it is up), as an ordinary user too

use std::ffi::CStr;
use std::fs;
use std::io;

/// Why a namespace could not be made.
#[derive(Debug)]
pub enum Error {
    /// The kernel does not allow it here: a sentence naming what to check.
    Refused(String),
    /// It was made but could not be set up: a bug or a broken system.
    Failed(String),
}

/// Enter a fresh network namespace. As root, only the network namespace is
/// new (root may create one directly); otherwise a user namespace too, in
/// which the caller is mapped to root, the way `unshare -r` does it.
pub fn enter() -> Result<(), Error> {
    // SAFETY: getuid/getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if uid == 0 {
        // SAFETY: unshare takes flags only; the process is single-threaded here.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0 {
            return Ok(());
        }
        // Root without CAP_SYS_ADMIN (some containers): try a user namespace.
    }
    // SAFETY: as above.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) } != 0 {
        let err = io::Error::last_os_error();
        return Err(Error::Refused(format!(
            "the kernel refused a new user namespace ({err}): {}",
            which_setting()
        )));
    }
    // In the new user namespace we hold every capability but are nobody
    // until a uid is mapped. "deny" on setgroups is required before an
    // unprivileged process may write gid_map (since Linux 3.19).
    let write = |path: &str, text: String| {
        fs::write(path, text).map_err(|e| Error::Failed(format!("cannot write {path}: {e}")))
    };
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    write("/proc/self/gid_map", format!("0 {gid} 1"))?;
    Ok(())
}

/// The sysctl that most likely forbids it, as `scripts/netns-lab.sh` checks.
fn which_setting() -> String {
    let read = |p: &str| fs::read_to_string(p).map(|s| s.trim().to_string()).ok();
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return "kernel.unprivileged_userns_clone = 0".into();
    }
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return "user.max_user_namespaces = 0".into();
    }
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return "AppArmor restricts them (kernel.apparmor_restrict_unprivileged_userns = 1)".into();
    }
    "check user.max_user_namespaces, kernel.unprivileged_userns_clone and \
     kernel.apparmor_restrict_unprivileged_userns, or run as root"
        .into()
}

const LO: &CStr = c"lo";

/// An `ifreq` naming `lo`, for the interface ioctls.
fn ifreq_lo() -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all zeros is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(LO.to_bytes_with_nul()) {
        *dst = *src as libc::c_char;
    }
    req
}

/// Any socket will do as the handle for interface ioctls.
fn ioctl_socket() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: socket() returns a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

fn ioctl(
    fd: &std::os::fd::OwnedFd,
    request: libc::c_ulong,
    req: &mut libc::ifreq,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the interface ioctls read and write one ifreq, which we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), request as _, req as *mut libc::ifreq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Bring `lo` up (a new namespace's loopback starts down: even 127.0.0.1
/// is unreachable until then), optionally set its MTU, and return the MTU.
pub fn loopback_up(mtu: Option<u32>) -> io::Result<u32> {
    let fd = ioctl_socket()?;
    let mut req = ifreq_lo();
    ioctl(&fd, libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    ioctl(&fd, libc::SIOCSIFFLAGS, &mut req)?;
    if let Some(m) = mtu {
        let mut req = ifreq_lo();
        req.ifr_ifru.ifru_mtu = libc::c_int::try_from(m)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "MTU too large"))?;
        ioctl(&fd, libc::SIOCSIFMTU, &mut req)?;
    }
    if mtu.is_some() {
        segmentation_offload_off(&fd)?;
    }
    let mut req = ifreq_lo();
    ioctl(&fd, libc::SIOCGIFMTU, &mut req)?;
    // SAFETY: SIOCGIFMTU filled the mtu member of the union.
    Ok(u32::try_from(unsafe { req.ifr_ifru.ifru_mtu }).unwrap_or(0))
}

/// Turn off TCP segmentation offload and generic segmentation offload on
/// `lo` (what `ethtool -K lo tso off gso off` does, through the legacy
/// `SIOCETHTOOL` commands). With them on, TCP hands the device one "super
/// segment" of many MSS, to be cut to size by the network card (TSO) or
/// just before the driver (GSO); loopback never cuts it, so a capture
/// shows 7 KiB "segments" on a 1500-byte MTU. Off, every segment on the
/// wire is at most one MSS, as on a real link.
fn segmentation_offload_off(fd: &std::os::fd::OwnedFd) -> io::Result<()> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_STSO: u32 = 0x1f;
    const ETHTOOL_SGSO: u32 = 0x24;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    for cmd in [ETHTOOL_STSO, ETHTOOL_SGSO] {
        let mut value = EthtoolValue { cmd, data: 0 };
        let mut req = ifreq_lo();
        req.ifr_ifru.ifru_data = (&raw mut value).cast();
        ioctl(fd, SIOCETHTOOL, &mut req)?;
    }
    Ok(())
}
