//! The provided-buffer ring: `count` buffers the kernel picks from when a
//! recv's data arrives (`IOSQE_BUFFER_SELECT`), so an idle connection holds
//! no buffer. The README's "Buffers the kernel owns" says why a completion
//! loop needs them. Part of the io_uring model; the loop is in `mod.rs`.

use std::alloc::{Layout, alloc, alloc_zeroed, dealloc};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{IoUring, types};

/// The provided-buffer group id: we register one group.
pub(super) const BGID: u16 = 0;

/// The kernel's `struct io_uring_buf`: where a buffer is, how long, its id.
/// Entry 0's last two bytes (`resv`) double as the ring's tail.
#[repr(C)]
struct RawBuf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}
const _: () = assert!(std::mem::size_of::<RawBuf>() == 16);
const _: () = assert!(std::mem::size_of::<types::BufRingEntry>() == 16);

/// `count` buffers of `size` bytes the kernel picks from for every recv, and
/// the ring of 16-byte entries through which we hand them (back) to it. We
/// own the tail; the kernel keeps the head to itself.
pub(super) struct BufRing {
    entries: NonNull<RawBuf>,
    entries_layout: Layout,
    mem: NonNull<u8>,
    mem_layout: Layout,
    pub(super) count: u16,
    pub(super) size: u32,
    tail: u16,
    /// Set when the loop had to stop with operations still in flight: the
    /// kernel may yet write into `mem`, so it is never freed.
    pub(super) leak: bool,
}

impl BufRing {
    pub(super) fn new(count: u16, size: u32) -> io::Result<BufRing> {
        if !count.is_power_of_two() || count > 32768 || size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("provided buffers: {count} (a power of two up to 32768) of {size} bytes"),
            ));
        }
        let bad = |_| io::Error::from(io::ErrorKind::InvalidInput);
        // The kernel wants the entry ring page-aligned.
        let entries_layout = Layout::from_size_align(usize::from(count) * 16, 4096).map_err(bad)?;
        let mem_layout =
            Layout::from_size_align(usize::from(count) * size as usize, 4096).map_err(bad)?;
        // SAFETY: both layouts have a non-zero size (count >= 1, size >= 1).
        let entries = NonNull::new(unsafe { alloc_zeroed(entries_layout) }.cast::<RawBuf>());
        // SAFETY: as above. Not zeroed: the kernel writes before we read.
        let mem = NonNull::new(unsafe { alloc(mem_layout) });
        let (Some(entries), Some(mem)) = (entries, mem) else {
            return Err(io::ErrorKind::OutOfMemory.into());
        };
        let mut ring = BufRing {
            entries,
            entries_layout,
            mem,
            mem_layout,
            count,
            size,
            tail: 0,
            leak: false,
        };
        for bid in 0..count {
            ring.recycle(bid);
        }
        Ok(ring)
    }

    pub(super) fn register(&self, ring: &IoUring) -> io::Result<()> {
        // SAFETY: the entry ring stays allocated, at this address, until
        // `self` is dropped, which `Uring` does only after dropping `ring`
        // (field order), i.e. after the kernel stopped using it.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                self.entries.as_ptr() as u64,
                self.count,
                BGID,
                0,
            )
        }
    }

    /// The `len` bytes the kernel wrote into buffer `bid`.
    pub(super) fn data(&self, bid: u16, len: usize) -> &[u8] {
        let bid = bid % self.count; // a kernel bug must not become ours
        let len = len.min(self.size as usize);
        // SAFETY: buffer `bid` lies inside `mem`; its CQE says the kernel
        // finished writing it, and it will not touch it again until
        // `recycle(bid)`, which needs `&mut self` and so cannot overlap this
        // borrow.
        unsafe {
            std::slice::from_raw_parts(
                self.mem.as_ptr().add(usize::from(bid) * self.size as usize),
                len,
            )
        }
    }

    /// Give buffer `bid` back to the kernel.
    pub(super) fn recycle(&mut self, bid: u16) {
        let bid = bid % self.count;
        let slot = usize::from(self.tail & (self.count - 1));
        // SAFETY: `slot` < count, inside the entry allocation. The kernel
        // only reads entries between its head and our tail; this one is
        // past the tail, so it is ours to write. Fields are written through
        // raw pointers, never a `&mut RawBuf`, because entry 0's `resv` is
        // the tail the kernel reads concurrently.
        unsafe {
            let e = self.entries.as_ptr().add(slot);
            let addr = self.mem.as_ptr().add(usize::from(bid) * self.size as usize);
            std::ptr::addr_of_mut!((*e).addr).write(addr as u64);
            std::ptr::addr_of_mut!((*e).len).write(self.size);
            std::ptr::addr_of_mut!((*e).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is entry 0's `resv`, a u16 at a 2-aligned address
        // inside the allocation; the kernel reads it, we are its only
        // writer. Release: the entry above is visible before the new tail.
        unsafe {
            let tail = std::ptr::addr_of_mut!((*self.entries.as_ptr()).resv);
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.leak {
            return;
        }
        // SAFETY: allocated in `new` with these layouts; no operation that
        // could use them is in flight (`leak` is false) and the ring that
        // knew their address is already closed.
        unsafe {
            dealloc(self.entries.as_ptr().cast(), self.entries_layout);
            dealloc(self.mem.as_ptr(), self.mem_layout);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn buffer_ring_hands_out_every_buffer_and_takes_them_back() {
        let mut ring = BufRing::new(4, 64).unwrap();
        // SAFETY: reading entries we wrote, with no kernel attached.
        let entry = |ring: &BufRing, i: usize| unsafe {
            let e = ring.entries.as_ptr().add(i);
            ((*e).addr, (*e).len, (*e).bid)
        };
        let base = ring.mem.as_ptr() as u64;
        for i in 0..4 {
            assert_eq!(entry(&ring, i), (base + 64 * i as u64, 64, i as u16));
        }
        assert_eq!(ring.tail, 4);
        ring.recycle(2); // lands in slot 4 & 3 = 0, the tail moves on
        assert_eq!(entry(&ring, 0), (base + 128, 64, 2));
        assert_eq!(ring.tail, 5);
        assert!(BufRing::new(3, 64).is_err(), "not a power of two");
    }
}
