//! Accepting: one multishot accept (one at a time on an old kernel), the
//! accept-error back-off, `--max-conns`. Part of the io_uring model; the
//! loop is in `mod.rs`.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::Instant;

use common::Stats;
use common::echo::Echo;
use common::net::{AcceptAction, accept_policy};
use io_uring::{cqueue, opcode, types};
use log::{debug, info, warn};

use super::submit::{Kind, NO_SLOT, user_data};
use super::{Conn, Recv, Send, Slot, Uring};

pub(super) struct AcceptState {
    /// An accept operation is in the kernel (the listener must stay open).
    pub(super) armed: bool,
    /// Multishot accept; false after an old kernel refused it.
    pub(super) multishot: bool,
    pub(super) seen_ok: bool,
    /// Backing off after EMFILE & co: re-arm at this instant.
    pub(super) paused_until: Option<Instant>,
}

impl Uring {
    pub(super) fn arm_accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        if self.accept.armed || self.deadline.is_some() {
            return;
        }
        let fd = types::Fd(listener.as_raw_fd());
        let entry = if self.accept.multishot {
            opcode::AcceptMulti::new(fd)
                .flags(libc::SOCK_CLOEXEC)
                .build()
        } else {
            opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
                .flags(libc::SOCK_CLOEXEC)
                .build()
        };
        let entry = entry.user_data(user_data(NO_SLOT, 0, Kind::Accept));
        // SAFETY: with a null address the accept writes no memory of ours;
        // the listener is dropped only once `armed` is false, after the
        // operation's last CQE.
        unsafe { self.push(entry) };
        self.accept.armed = true;
    }

    pub(super) fn accepted(&mut self, res: i32, flags: u32) -> io::Result<()> {
        // Multishot: MORE set means the accept stays armed for the next one.
        if !cqueue::more(flags) {
            self.accept.armed = false;
        }
        if res >= 0 {
            // SAFETY: a successful accept's result is a new fd nobody owns.
            let stream = unsafe { TcpStream::from_raw_fd(res as RawFd) };
            self.accept.seen_ok = true;
            self.backoff.reset();
            self.add_conn(stream);
        } else {
            let e = io::Error::from_raw_os_error(-res);
            if -res == libc::ECANCELED {
                debug!("accept cancelled");
            } else if -res == libc::EINVAL && self.accept.multishot && !self.accept.seen_ok {
                info!("multishot accept refused (needs Linux 5.19): one accept at a time");
                self.accept.multishot = false;
            } else {
                match accept_policy(&e, &mut self.backoff) {
                    AcceptAction::Retry => {}
                    AcceptAction::Wait(delay) => {
                        self.counters.accept_backoffs += 1;
                        // The pending connections stay in the backlog; accepting
                        // again now would fail again at once. Stop the accept
                        // (cancel it if it is still armed) and re-arm it later.
                        self.accept.paused_until = Some(self.now + delay);
                        if self.accept.armed {
                            let target = user_data(NO_SLOT, 0, Kind::Accept);
                            if self.cancel(target) {
                                self.accept.armed = false;
                            }
                        }
                    }
                    // The listener itself is broken: log once, drain what is
                    // open within --grace, then end with the error (exit 1).
                    AcceptAction::Fatal => {
                        self.fatal = Some(common::net::fatal_accept(e, &self.shutdown));
                        self.begin_shutdown();
                    }
                }
            }
        }
        if !self.accept.armed {
            if self.deadline.is_some() {
                // Shutting down: no operation uses the listener any more.
                // Closing it makes the kernel reset the connections still in
                // its backlog: they were never accepted.
                self.listener = None;
            } else if self.accept.paused_until.is_none() {
                self.arm_accept();
            }
        }
        Ok(())
    }

    fn add_conn(&mut self, stream: TcpStream) {
        let peer = stream
            .peer_addr()
            .unwrap_or(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)));
        if self.deadline.is_some() {
            // Accepted in the race with the cancel at shutdown.
            Stats::inc(&self.stats.refused);
            info!("{peer}: refused: shutting down");
            return;
        }
        if self.open >= self.config.max_conns {
            Stats::inc(&self.stats.refused);
            warn!(
                "{peer}: refused: {} connections already open (--max-conns)",
                self.config.max_conns
            );
            return; // dropping `stream` closes it
        }
        if let Err(e) = stream.set_nodelay(true) {
            debug!("{peer}: TCP_NODELAY: {e}");
        }
        let now = self.now;
        let conn = Conn {
            stream,
            peer,
            echo: Echo::new(&self.config, now),
            recv: Recv::Idle,
            send: Send::Idle,
            closing: None,
        };
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        self.slots[i as usize].conn = Some(conn);
        self.open += 1;
        Stats::inc(&self.stats.accepted);
        info!("{peer}: connected ({} open)", self.open);
        self.step(i);
    }

    // --- one connection -----------------------------------------------------
}
