//! The sockets of the event loop: a listener and a connection, each TCP or
//! Unix, non-blocking, registered with epoll. Part of the event-loop model;
//! the loop is in `mod.rs`.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use log::debug;
use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::listen::SocketFile;
use crate::{Listener, Peer};

/// A listening socket of one loop.
pub(super) enum Listen {
    Tcp(TcpListener),
    /// The file guard is dropped with the listener: the socket file goes
    /// when the loop stops listening.
    Unix {
        listener: UnixListener,
        _file: SocketFile,
    },
}

impl Listen {
    pub(super) fn new(listener: Listener) -> io::Result<Listen> {
        match listener {
            Listener::Tcp(l) => Listen::tcp(l),
            Listener::Unix(u) => {
                u.listener.set_nonblocking(true)?;
                Ok(Listen::Unix {
                    listener: UnixListener::from_std(u.listener),
                    _file: u.file,
                })
            }
        }
    }

    /// Non-blocking: `accept()` with an empty backlog must say
    /// `WouldBlock`, not put the only thread to sleep.
    pub(super) fn tcp(l: std::net::TcpListener) -> io::Result<Listen> {
        l.set_nonblocking(true)?;
        Ok(Listen::Tcp(TcpListener::from_std(l)))
    }

    pub(super) fn source(&mut self) -> &mut dyn Source {
        match self {
            Listen::Tcp(l) => l,
            Listen::Unix { listener, .. } => listener,
        }
    }

    /// `accept4(..., SOCK_NONBLOCK)`. `unix_peers` numbers the Unix clients,
    /// which usually have no name.
    pub(super) fn accept(&mut self, unix_peers: &AtomicU64) -> io::Result<(Stream, Peer)> {
        match self {
            Listen::Tcp(l) => l.accept().map(|(s, a)| {
                // Echoes are small writes the client waits for: no Nagle.
                if let Err(e) = s.set_nodelay(true) {
                    debug!("{a}: TCP_NODELAY: {e}");
                }
                (Stream::Tcp(s), Peer::Tcp(a))
            }),
            Listen::Unix { listener, .. } => listener.accept().map(|(s, a)| {
                let n = unix_peers.fetch_add(1, Ordering::Relaxed) + 1;
                let peer = a
                    .as_pathname()
                    .map(|p| Peer::Unix {
                        path: Some(p.to_path_buf()),
                        n,
                    })
                    .unwrap_or(Peer::Unix { path: None, n });
                (Stream::Unix(s), peer)
            }),
        }
    }
}

/// A connection's socket: TCP or Unix, the same non-blocking calls.
pub(super) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub(super) fn source(&mut self) -> &mut dyn Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    /// `shutdown(SHUT_WR)`: FIN (for a Unix socket: the peer reads EOF).
    pub(super) fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
