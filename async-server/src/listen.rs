//! Where a server listens: a TCP port, possibly shared by several event
//! loops (`SO_REUSEPORT`), or a Unix domain socket file (`--addr unix:PATH`).
//!
//! Run with (two terminals):
//!
//! ```text
//! cargo run -p async-server -- server --model event-loop --addr unix:/tmp/echo.sock
//! nc -U /tmp/echo.sock       # type lines; each comes back
//! ```
//!
//! What to watch: `ls -l /tmp/echo.sock` shows an `s` (socket) file while
//! the server runs and nothing after Ctrl-C; kill the server with `kill -9`
//! and the file stays behind, stale: the next start finds that nobody
//! answers on it (`connect()` is refused), removes it and binds again. A
//! file somebody *does* answer on is left alone, with a one-line error.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use socket2::{Domain, Protocol, Socket, Type};

/// What a server serves: a bound TCP listener, or a Unix socket file.
#[derive(Debug)]
pub enum Listener {
    Tcp(std::net::TcpListener),
    Unix(UnixSocketFile),
}

impl From<std::net::TcpListener> for Listener {
    fn from(l: std::net::TcpListener) -> Self {
        Listener::Tcp(l)
    }
}

impl From<UnixSocketFile> for Listener {
    fn from(l: UnixSocketFile) -> Self {
        Listener::Unix(l)
    }
}

impl Listener {
    /// What `listening on ...` says: `127.0.0.1:7004` or `unix:/tmp/echo.sock`.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|e| format!("(unknown address: {e})"), |a| a.to_string()),
            Listener::Unix(u) => format!("unix:{}", u.path().display()),
        }
    }
}

/// Who is on the other end of a connection, for the log lines.
#[derive(Debug, Clone)]
pub enum Peer {
    Tcp(SocketAddr),
    /// A Unix client is usually unnamed (it did not `bind()` a path of its
    /// own), so the server numbers them: `unix peer #3`.
    Unix {
        path: Option<PathBuf>,
        n: u64,
    },
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "{a}"),
            Peer::Unix { path: Some(p), .. } => write!(f, "unix:{}", p.display()),
            Peer::Unix { path: None, n } => write!(f, "unix peer #{n}"),
        }
    }
}

/// [`common::net::listen`] plus `SO_REUSEPORT`, set before `bind()` (the
/// kernel checks it there): several sockets, each with the option, may then
/// listen on the same address, and the kernel spreads new connections
/// among them by a hash of the client's address and port. The first socket
/// of a group may bind port 0; the others bind the port it got.
/// `SO_REUSEADDR` as in `common::net::listen` (TIME_WAIT after a restart).
pub fn listen_reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(common::net::BACKLOG)?;
    Ok(socket.into())
}

/// Whether `SO_REUSEPORT` is set on `listener` (so more sockets may join it).
pub fn has_reuseport(listener: &std::net::TcpListener) -> io::Result<bool> {
    socket2::SockRef::from(listener).reuse_port()
}

/// A listening Unix domain socket and the guard of its file.
#[derive(Debug)]
pub struct UnixSocketFile {
    pub listener: UnixListener,
    pub file: SocketFile,
}

/// Removes the socket file when dropped (when the server stops listening),
/// if it is still the file we created.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    /// Device and inode of the file `bind()` created: another server may
    /// have replaced it since (after removing ours); its file is not ours
    /// to delete.
    id: (u64, u64),
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl UnixSocketFile {
    /// `socket(AF_UNIX)` + `bind(path)` + `listen()`. `bind()` creates the
    /// file and fails with `EADDRINUSE` if *any* file is there, including the
    /// socket file a crashed server left behind (nothing removes it but us).
    /// So if a socket file exists we first try to `connect()` to it:
    /// refused means nobody listens, the file is stale, and it is removed;
    /// accepted means another server is live, and we refuse to start. A
    /// file that is not a socket is never removed.
    pub fn bind(path: &Path) -> io::Result<UnixSocketFile> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!(
                            "{}: another server is listening on this socket (stop it, or choose another path)",
                            path.display()
                        ),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    log::info!(
                        "{}: removing a stale socket file (nothing listens on it)",
                        path.display()
                    );
                    std::fs::remove_file(path)?;
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "{}: exists, and connecting to it failed: {e}",
                            path.display()
                        ),
                    ));
                }
            },
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{}: exists and is not a socket; not removing it",
                        path.display()
                    ),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
        let listener = UnixListener::bind(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: bind: {e}", path.display())))?;
        let meta = std::fs::symlink_metadata(path)?;
        Ok(UnixSocketFile {
            listener,
            file: SocketFile {
                path: path.to_path_buf(),
                id: (meta.dev(), meta.ino()),
            },
        })
    }

    pub fn path(&self) -> &Path {
        &self.file.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        // Closing the socket does not remove its file; without this the next
        // start would find it (stale, see `bind`).
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.id => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    log::warn!(
                        "{}: could not remove the socket file: {e}",
                        self.path.display()
                    );
                }
            }
            _ => {}
        }
    }
}
