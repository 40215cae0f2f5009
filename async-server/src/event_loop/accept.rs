//! Accepting: until the backlog is empty (edge-triggered), the accept-error
//! back-off, `--max-conns` counted over every loop. Part of the event-loop
//! model; the loop is in `mod.rs`.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Instant;

use common::Stats;
use common::echo::Echo;
use common::net::{AcceptAction, accept_policy};
use log::{info, warn};
use mio::{Interest, Token};

use super::sockets::Stream;
use super::{Conn, EventLoop, FIRST_CONN};
use crate::Peer;

impl EventLoop {
    /// Accept until the backlog is empty (edge-triggered: one event may stand
    /// for many waiting connections).
    pub(super) fn accept_all(&mut self) -> io::Result<()> {
        loop {
            let Some(listener) = &mut self.listener else {
                return Ok(());
            };
            if self.accept_paused_until.is_some() {
                return Ok(());
            }
            match listener.accept(&self.unix_peers) {
                Ok((stream, peer)) => {
                    self.backoff.reset();
                    if !self.admit(&peer) {
                        continue; // dropping `stream` closes it
                    }
                    if self.handoff.is_empty() {
                        self.add_conn(stream, peer);
                    } else {
                        self.deal(stream, peer);
                    }
                }
                // The backlog is empty: back to epoll_wait.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => match accept_policy(&e, &mut self.backoff) {
                    // ECONNABORTED (the client gave up while queued),
                    // EINTR...: about one connection; try the next.
                    AcceptAction::Retry => {}
                    // EMFILE, ENOBUFS, ENOMEM: the connection stays in the
                    // backlog, so the listener stays readable, and accepting
                    // again at once would fail again, forever, at 100% CPU.
                    // Take the listener out of epoll and make the delay the
                    // poll timeout (`poll_timeout`); the waker still ends
                    // the wait on shutdown. (Another classic trick for
                    // EMFILE: keep a spare fd open, close it to accept and
                    // immediately close the newcomer, so it is at least told.)
                    AcceptAction::Wait(delay) => {
                        self.poll.registry().deregister(listener.source())?;
                        self.accept_paused_until = Some(Instant::now() + delay);
                        return Ok(());
                    }
                    // The listener itself is broken (EBADF, EINVAL...): the
                    // one rule of every server: log once, drain what is open
                    // within --grace, then end with the error (exit 1).
                    AcceptAction::Fatal => {
                        self.fatal = Some(common::net::fatal_accept(e, &self.shutdown));
                        self.begin_shutdown();
                        return Ok(());
                    }
                },
            }
        }
    }

    /// `--max-conns`, counted over every loop: take a slot, or refuse.
    fn admit(&self, peer: &Peer) -> bool {
        let max = self.config.max_conns;
        if self.open_total.fetch_add(1, Ordering::SeqCst) >= max {
            self.open_total.fetch_sub(1, Ordering::SeqCst);
            Stats::inc(&self.stats.refused);
            warn!("{peer}: refused: {max} connections already open (--max-conns)");
            return false;
        }
        true
    }

    /// A new connection, already admitted under `--max-conns`.
    pub(super) fn add_conn(&mut self, mut stream: Stream, peer: Peer) {
        let i = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        // epoll_ctl(ADD). If bytes arrived already, epoll reports them at once.
        if let Err(e) = self.poll.registry().register(
            stream.source(),
            Token(FIRST_CONN + i),
            Interest::READABLE,
        ) {
            warn!("{peer}: cannot register with epoll: {e}");
            self.free.push(i);
            self.open_total.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        if self.many {
            info!(
                "{peer}: connected to loop {} ({} open there)",
                self.id,
                self.open + 1
            );
        } else {
            info!("{peer}: connected ({} open)", self.open + 1);
        }
        let mut echo = Echo::new(&self.config, Instant::now());
        if self.deadline.is_some() {
            echo.begin_drain(None);
        }
        self.conns[i] = Some(Conn {
            stream,
            peer,
            echo,
            interest: Interest::READABLE,
        });
        self.open += 1;
        self.served += 1;
        Stats::inc(&self.stats.accepted);
        if self.deadline.is_some() {
            // Handed over just as shutdown began: drain it like the others.
            self.drive(i, false);
        }
    }
}
