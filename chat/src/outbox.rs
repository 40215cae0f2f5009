//! A member's bounded outbox and what happens when it is full: the piece of
//! a chat server that the popular examples leave out.
//!
//! A member who stops reading does not stop the others from talking. Its
//! kernel send buffer fills, then whatever the server keeps for it grows,
//! one copy per message, forever (tokio's `chat.rs` gives each peer an
//! unbounded channel). Here each member has at most `--max-pending` bytes
//! waiting, and a full outbox is a policy, chosen with `--slow`:
//!
//! - [`SlowPolicy::Skip`]: the message is dropped *for that member only*
//!   and counted; when its outbox has drained again it is told once,
//!   `* you missed N messages`.
//! - [`SlowPolicy::Disconnect`]: the member is closed (and the others told
//!   it left); the room never waits for it.
//!
//! [`Budget`] is the admission rule alone (bytes in flight, the limit, the
//! policy, the missed count), for designs whose queue is a channel (tokio);
//! [`Outbox`] is a budget plus the queue itself, for designs that own their
//! buffers (threads, the mio loop). Neither does I/O.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::protocol;

/// What to do with a member whose outbox is full (`--slow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SlowPolicy {
    /// Drop what does not fit; tell the member how many it missed.
    Skip,
    /// Close the member; the others are told it left.
    Disconnect,
}

impl std::fmt::Display for SlowPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SlowPolicy::Skip => "skip",
            SlowPolicy::Disconnect => "disconnect",
        })
    }
}

/// The verdict on one message for one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// It fits: queue it.
    Queue,
    /// Full, `--slow skip`: dropped for this member and counted.
    Skipped,
    /// Full, `--slow disconnect`: close this member.
    Overflow,
}

/// Bytes waiting for one member, against its limit.
#[derive(Debug, Clone)]
pub struct Budget {
    queued: usize,
    limit: usize,
    policy: SlowPolicy,
    missed: u64,
}

impl Budget {
    pub fn new(limit: usize, policy: SlowPolicy) -> Self {
        Budget {
            queued: 0,
            limit,
            policy,
            missed: 0,
        }
    }

    // ANCHOR: admit
    /// May a message of `len` bytes join this member's queue? An empty
    /// queue always takes one message, so a message longer than the limit
    /// still reaches a member who keeps up: the bound is `limit` plus one
    /// message.
    pub fn admit(&mut self, len: usize) -> Admit {
        if self.queued == 0 || self.queued + len <= self.limit {
            self.queued += len;
            return Admit::Queue;
        }
        match self.policy {
            SlowPolicy::Skip => {
                self.missed += 1;
                Admit::Skipped
            }
            SlowPolicy::Disconnect => Admit::Overflow,
        }
    }
    // ANCHOR_END: admit

    /// Undo [`Budget::admit`] for a message its queue would not take after
    /// all (a channel full by its message count): the policy decides.
    pub fn refuse(&mut self, len: usize) -> Admit {
        self.sent(len);
        match self.policy {
            SlowPolicy::Skip => {
                self.missed += 1;
                Admit::Skipped
            }
            SlowPolicy::Disconnect => Admit::Overflow,
        }
    }

    /// `len` bytes of queued messages were written to the socket.
    pub fn sent(&mut self, len: usize) {
        self.queued = self.queued.saturating_sub(len);
    }

    /// Bytes admitted and not yet written.
    pub fn queued(&self) -> usize {
        self.queued
    }

    // ANCHOR: take-missed
    /// Once the queue is empty again: how many messages were skipped since
    /// the last notice (and reset the count). `None` while still queued, or
    /// if nothing was missed.
    pub fn take_missed(&mut self) -> Option<u64> {
        if self.queued == 0 && self.missed > 0 {
            Some(std::mem::take(&mut self.missed))
        } else {
            None
        }
    }
    // ANCHOR_END: take-missed
}

/// A budget and the queue it guards: shared messages and how much of the
/// first one the kernel has already taken (a short write is normal).
#[derive(Debug)]
pub struct Outbox {
    budget: Budget,
    queue: VecDeque<Bytes>,
    /// Bytes of `queue[0]` already written.
    offset: usize,
}

impl Outbox {
    pub fn new(limit: usize, policy: SlowPolicy) -> Self {
        Outbox {
            budget: Budget::new(limit, policy),
            queue: VecDeque::new(),
            offset: 0,
        }
    }

    // ANCHOR: push
    /// Offer a room message (a pointer clone, never a copy of the bytes).
    pub fn push(&mut self, msg: &Bytes) -> Admit {
        let verdict = self.budget.admit(msg.len());
        if verdict == Admit::Queue {
            self.queue.push_back(msg.clone());
        }
        verdict
    }
    // ANCHOR_END: push

    /// Queue a line of the server's own (the welcome, a refusal, the
    /// shutdown notice): a few bytes, always accepted, still counted.
    pub fn push_own(&mut self, msg: Bytes) {
        self.budget.queued += msg.len();
        self.queue.push_back(msg);
    }

    /// The bytes to hand to `write()` next, if any.
    pub fn chunk(&self) -> Option<Bytes> {
        self.queue.front().map(|m| m.slice(self.offset..))
    }

    /// The kernel took `n` bytes of [`Outbox::chunk`]. When the queue
    /// empties and messages were skipped, the notice is queued.
    pub fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.queue.front() else {
                break;
            };
            let left = front.len() - self.offset;
            let step = n.min(left);
            self.offset += step;
            self.budget.sent(step);
            n -= step;
            if self.offset == front.len() {
                self.queue.pop_front();
                self.offset = 0;
            }
        }
        if let Some(missed) = self.budget.take_missed() {
            self.push_own(protocol::missed(missed));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Bytes waiting, the server's own lines included.
    pub fn queued(&self) -> usize {
        self.budget.queued()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[test]
    fn skip_counts_and_tells_once_drained() {
        let mut o = Outbox::new(10, SlowPolicy::Skip);
        let m = msg(6);
        assert_eq!(o.push(&m), Admit::Queue);
        assert_eq!(o.push(&m), Admit::Skipped);
        assert_eq!(o.push(&msg(4)), Admit::Queue);
        assert_eq!(o.push(&msg(1)), Admit::Skipped);
        assert_eq!(o.queued(), 10);
        // A short write: part of the first message.
        o.advance(4);
        assert_eq!(o.chunk().as_deref(), Some(&b"xx"[..]));
        o.advance(2);
        assert_eq!(o.queued(), 4);
        o.advance(4);
        // Drained: the notice is what comes next, once.
        assert_eq!(
            o.chunk().as_deref(),
            Some(&b"* you missed 2 messages\n"[..])
        );
        o.advance(o.queued());
        assert!(o.is_empty() && o.chunk().is_none());
    }

    #[test]
    fn shared_bytes_are_not_copied() {
        let mut a = Outbox::new(100, SlowPolicy::Skip);
        let mut b = Outbox::new(100, SlowPolicy::Skip);
        let m = msg(8);
        a.push(&m);
        b.push(&m);
        let (ca, cb) = (a.chunk().unwrap_or_default(), b.chunk().unwrap_or_default());
        assert_eq!(ca.as_ptr(), m.as_ptr());
        assert_eq!(cb.as_ptr(), m.as_ptr());
    }

    #[test]
    fn disconnect_overflows_and_an_empty_box_takes_a_big_message() {
        let mut o = Outbox::new(4, SlowPolicy::Disconnect);
        assert_eq!(o.push(&msg(9)), Admit::Queue);
        assert_eq!(o.push(&msg(1)), Admit::Overflow);
        let mut b = Budget::new(4, SlowPolicy::Skip);
        assert_eq!(b.admit(3), Admit::Queue);
        assert_eq!(b.admit(3), Admit::Skipped);
        assert_eq!(b.take_missed(), None, "not drained yet");
        b.sent(3);
        assert_eq!(b.take_missed(), Some(1));
        assert_eq!(b.take_missed(), None, "told once");
    }
}
