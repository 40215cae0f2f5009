//! The room's membership, written once for the three designs: who is
//! joined, under which name, in which order, and the fan-out of one message
//! to every member but its sender.
//!
//! `Room<T>` does no I/O: `T` is whatever a design keeps per member (a
//! handle on a member's outbox for the threads, a channel sender for tokio,
//! nothing at all for the mio loop, which keeps outboxes in its connection
//! table), and every delivery goes through a closure the design passes in.
//! That closure answers one question: did the member accept the message, or
//! must it be closed as slow (`--slow disconnect`)? A closed member's leave
//! is itself a message to the others, which can close another slow member:
//! [`Room::send`] runs that to the end, and returns who was closed, so the
//! design can close their sockets.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::protocol::{self, NameError};

/// Connection ids are handed out in accept order; a `BTreeMap` keyed by
/// them iterates members in that order (the presence list's order).
pub type Id = u64;

#[derive(Debug)]
pub struct Member<T> {
    pub name: String,
    pub out: T,
}

/// A member closed because it could not keep up.
#[derive(Debug)]
pub struct Evicted<T> {
    pub id: Id,
    pub name: String,
    pub out: T,
}

#[derive(Debug)]
pub struct Room<T> {
    members: BTreeMap<Id, Member<T>>,
}

impl<T> Default for Room<T> {
    fn default() -> Self {
        Room {
            members: BTreeMap::new(),
        }
    }
}

impl<T> Room<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn name(&self, id: Id) -> Option<&str> {
        self.members.get(&id).map(|m| m.name.as_str())
    }

    pub fn contains(&self, id: Id) -> bool {
        self.members.contains_key(&id)
    }

    pub fn members(&self) -> impl Iterator<Item = (Id, &Member<T>)> {
        self.members.iter().map(|(id, m)| (*id, m))
    }

    // ANCHOR: join
    /// Join `id` as `name` (already checked by [`protocol::check_name`]):
    /// refused if the name is taken; otherwise the joiner is given the
    /// presence list first, then everyone else hears it entered. `deliver`
    /// returns `false` for a member to close as slow.
    pub fn join(
        &mut self,
        id: Id,
        name: &str,
        out: T,
        mut deliver: impl FnMut(Id, &mut T, &Bytes) -> bool,
    ) -> Result<Vec<Evicted<T>>, (NameError, T)> {
        if self.members.values().any(|m| m.name == name) {
            return Err((NameError::Taken, out));
        }
        let presence = protocol::presence(self.members.values().map(|m| m.name.as_str()));
        let mut member = Member {
            name: name.to_owned(),
            out,
        };
        // The joiner's own outbox is empty: the presence line always fits.
        deliver(id, &mut member.out, &presence);
        let evicted = self.send(Some(id), protocol::entered(name), &mut deliver);
        self.members.insert(id, member);
        Ok(evicted)
    }
    // ANCHOR_END: join

    /// `id` said `text`: `[NAME] text` to every other member. Nothing if
    /// `id` has not joined (or was closed meanwhile).
    pub fn say(
        &mut self,
        id: Id,
        text: &[u8],
        mut deliver: impl FnMut(Id, &mut T, &Bytes) -> bool,
    ) -> Vec<Evicted<T>> {
        let Some(member) = self.members.get(&id) else {
            return Vec::new();
        };
        let msg = protocol::said(&member.name, text);
        self.send(Some(id), msg, &mut deliver)
    }

    /// `id` left (or was closed): remove it and tell the others. `None` if
    /// it was not a member (never joined, or already gone): no message.
    pub fn leave(
        &mut self,
        id: Id,
        mut deliver: impl FnMut(Id, &mut T, &Bytes) -> bool,
    ) -> Option<(Member<T>, Vec<Evicted<T>>)> {
        let member = self.members.remove(&id)?;
        let evicted = self.send(None, protocol::left(&member.name), &mut deliver);
        Some((member, evicted))
    }

    // ANCHOR: fan-out
    /// Offer `msg` to every member except `from`; members refused by
    /// `deliver` are removed, and their leave is sent in turn.
    pub fn send(
        &mut self,
        from: Option<Id>,
        msg: Bytes,
        deliver: &mut impl FnMut(Id, &mut T, &Bytes) -> bool,
    ) -> Vec<Evicted<T>> {
        let mut evicted = Vec::new();
        let mut pending = VecDeque::from([(from, msg)]);
        while let Some((from, msg)) = pending.pop_front() {
            let mut slow = Vec::new();
            for (&id, m) in self.members.iter_mut() {
                if Some(id) != from && !deliver(id, &mut m.out, &msg) {
                    slow.push(id);
                }
            }
            for id in slow {
                if let Some(m) = self.members.remove(&id) {
                    pending.push_back((None, protocol::left(&m.name)));
                    evicted.push(Evicted {
                        id,
                        name: m.name,
                        out: m.out,
                    });
                }
            }
        }
        evicted
    }
    // ANCHOR_END: fan-out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each member's "outbox" is the list of lines it got; `full` members
    /// refuse everything.
    type Inbox = (Vec<String>, bool);

    fn deliver(_: Id, out: &mut Inbox, msg: &Bytes) -> bool {
        if out.1 {
            return false;
        }
        out.0.push(String::from_utf8_lossy(msg).into_owned());
        true
    }

    fn lines(room: &Room<Inbox>, id: Id) -> Vec<String> {
        room.members()
            .find(|(i, _)| *i == id)
            .map(|(_, m)| m.out.0.clone())
            .unwrap_or_default()
    }

    #[test]
    fn join_say_leave() {
        let mut room = Room::new();
        assert!(room.join(1, "alice", (vec![], false), deliver).is_ok());
        assert!(room.join(2, "bob", (vec![], false), deliver).is_ok());
        assert!(matches!(
            room.join(3, "bob", (vec![], false), deliver),
            Err((NameError::Taken, _))
        ));
        assert!(room.say(2, b"hi", deliver).is_empty());
        assert!(room.say(9, b"not joined", deliver).is_empty());
        assert!(room.leave(9, deliver).is_none());
        assert_eq!(
            lines(&room, 1),
            [
                "* The room contains: \n",
                "* bob has entered the room\n",
                "[bob] hi\n"
            ]
        );
        assert_eq!(lines(&room, 2), ["* The room contains: alice\n"]);
        let Some((gone, evicted)) = room.leave(1, deliver) else {
            panic!("alice was a member");
        };
        assert_eq!(gone.name, "alice");
        assert!(evicted.is_empty());
        assert_eq!(
            lines(&room, 2).last().map(String::as_str),
            Some("* alice has left the room\n")
        );
    }

    #[test]
    fn a_slow_member_is_closed_and_its_leave_announced() {
        let mut room = Room::new();
        assert!(room.join(1, "alice", (vec![], false), deliver).is_ok());
        assert!(room.join(2, "slow", (vec![], false), deliver).is_ok());
        assert!(room.join(3, "carol", (vec![], false), deliver).is_ok());
        if let Some((_, m)) = room.members.iter_mut().find(|(id, _)| **id == 2) {
            m.out.1 = true;
        }
        let evicted = room.say(1, b"x", deliver);
        assert_eq!(evicted.len(), 1);
        assert_eq!(evicted[0].name, "slow");
        assert_eq!(room.len(), 2);
        let carol = lines(&room, 3);
        assert_eq!(
            &carol[carol.len() - 2..],
            ["[alice] x\n", "* slow has left the room\n"]
        );
    }
}
