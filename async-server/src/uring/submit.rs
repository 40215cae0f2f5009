//! Submitting: `user_data` (which connection and operation a completion
//! belongs to), the one `io_uring_enter` per turn, and what happens when the
//! submission ring is full. Part of the io_uring model; the loop is in
//! `mod.rs`.

use std::io;
use std::time::Duration;

use io_uring::{opcode, squeue, types};
use log::{debug, trace};

use super::Uring;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Accept = 1,
    Wake = 2,
    Cancel = 3,
    Recv = 4,
    Send = 5,
}

/// The slot number of operations that belong to no connection.
pub(super) const NO_SLOT: u32 = u32::MAX;
pub(super) const GEN_MASK: u32 = 0x00FF_FFFF;

pub(super) fn user_data(slot: u32, generation: u32, kind: Kind) -> u64 {
    (u64::from(slot) << 32) | (u64::from(generation & GEN_MASK) << 8) | kind as u64
}

pub(super) fn parse_user_data(u: u64) -> (u32, u32, Option<Kind>) {
    let kind = match u & 0xFF {
        1 => Some(Kind::Accept),
        2 => Some(Kind::Wake),
        3 => Some(Kind::Cancel),
        4 => Some(Kind::Recv),
        5 => Some(Kind::Send),
        _ => None,
    };
    ((u >> 32) as u32, ((u >> 8) as u32) & GEN_MASK, kind)
}

impl Uring {
    /// The one place the thread sleeps: submit every queued SQE and wait for
    /// at least one CQE, or `timeout`.
    pub(super) fn enter(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.counters.enters += 1;
        let result = match timeout {
            Some(t) => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submit_and_wait(1),
        };
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                // ETIME: the timeout passed with no completion. EINTR: a
                // signal. EBUSY/EAGAIN: completions overflowed, reap first.
                Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN) => Ok(()),
                _ => Err(e),
            },
        }
    }

    /// Submit without waiting, to make room in a full submission ring.
    fn submit_now(&mut self) {
        self.counters.enters += 1;
        if let Err(e) = self.ring.submit() {
            debug!("io_uring_enter (submit only): {e}");
        }
    }

    /// Queue one SQE: into the ring, or, if it is full even after a submit,
    /// into `backlog` (keeping the order of this connection's operations).
    ///
    /// # Safety
    /// Every pointer in `entry` stays valid until the operation's CQE.
    pub(super) unsafe fn push(&mut self, entry: squeue::Entry) {
        self.counters.sqes += 1;
        if self.backlog.is_empty() {
            // SAFETY: forwarded from the caller.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            self.counters.sq_full += 1;
            trace!("submission queue full: submitting to make room");
            self.submit_now();
            // SAFETY: as above.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
        }
        self.counters.backlogged += 1;
        self.backlog.push_back(entry);
    }

    pub(super) fn flush_backlog(&mut self) {
        let mut submitted = false;
        while let Some(entry) = self.backlog.front() {
            // SAFETY: every backlogged entry was pushed with `push`'s
            // guarantee, which lasts until its CQE; it has none yet.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                self.backlog.pop_front();
                submitted = false;
                continue;
            }
            if submitted {
                return; // still full after a submit: the next turn tries again
            }
            self.submit_now();
            submitted = true;
        }
    }

    /// Cancel the operation named `target`. True if it was still in our
    /// backlog (then it is simply dropped and no CQE will come for it).
    pub(super) fn cancel(&mut self, target: u64) -> bool {
        let before = self.backlog.len();
        self.backlog.retain(|e| e.get_user_data() != target);
        if self.backlog.len() != before {
            return true;
        }
        let entry = opcode::AsyncCancel::new(target)
            .build()
            .user_data(user_data(NO_SLOT, 0, Kind::Cancel));
        // SAFETY: a cancel names its target by user_data and no memory.
        unsafe { self.push(entry) };
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips_and_generations_wrap() {
        for (slot, generation, kind) in [
            (0, 0, Kind::Recv),
            (7, GEN_MASK, Kind::Send),
            (NO_SLOT, 0, Kind::Accept),
            (123_456, 99, Kind::Cancel),
        ] {
            let u = user_data(slot, generation, kind);
            assert_eq!(parse_user_data(u), (slot, generation, Some(kind)));
        }
        // A generation past 24 bits wraps, as the slot's counter does.
        assert_eq!(parse_user_data(user_data(1, GEN_MASK + 1, Kind::Recv)).1, 0);
        assert_eq!(parse_user_data(0x42).2, None);
    }
}
