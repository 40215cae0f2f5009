//! How a connection ends, said the same way by every server: one closing
//! log line per connection, and the matching counter in [`Stats`].
//!
//! Log levels: a client that closes, goes quiet or vanishes is
//! normal life on a network (`info`); a client that breaks the protocol or
//! stops reading, and a connection cut at the shutdown deadline, are worth a
//! `warn`.

use std::fmt;
use std::time::Duration;

use crate::framing::{ConnError, FrameError, is_timeout};
use crate::net::is_disconnect;
use crate::stats::Stats;

// ANCHOR: end
/// Why a connection ended.
#[derive(Debug)]
pub enum End {
    /// `read()` returned 0 between frames: the client closed (or half-closed
    /// and we echoed everything).
    PeerClosed,
    /// Nothing arrived for `--idle-timeout`.
    Idle(Duration),
    /// Echoes waited `--stall-timeout` without the client taking a byte.
    Stalled(Duration),
    /// Closed by a graceful shutdown after every owed echo was sent;
    /// `unfinished` bytes of an incomplete frame had no echo owed.
    Shutdown { unfinished: usize },
    /// Still open at the `--grace` deadline, closed there.
    Cut,
    /// The socket failed or the client broke the protocol.
    Error(ConnError),
}
// ANCHOR_END: end

impl From<ConnError> for End {
    fn from(e: ConnError) -> Self {
        End::Error(e)
    }
}

impl From<std::io::Error> for End {
    fn from(e: std::io::Error) -> Self {
        End::Error(ConnError::Io(e))
    }
}

impl From<FrameError> for End {
    fn from(e: FrameError) -> Self {
        End::Error(ConnError::Frame(e))
    }
}

impl End {
    /// `Ok(end)` or `Err(error)` of a connection's loop, as one value.
    pub fn of(result: Result<End, ConnError>) -> End {
        result.unwrap_or_else(End::Error)
    }
}

/// Log the one closing line of a connection and count how it ended.
/// `peer` is whatever names the client (a socket address, a Unix socket
/// path); `frames` and `bytes` are what this connection had echoed.
pub fn log_close(peer: &dyn fmt::Display, frames: u64, bytes: u64, end: &End, stats: &Stats) {
    let after = format!("after {frames} frames ({bytes} bytes echoed)");
    match end {
        End::PeerClosed => log::info!("{peer}: closed by peer {after}"),
        End::Idle(idle) => {
            Stats::inc(&stats.timed_out);
            log::info!("{peer}: sent nothing for {idle:?} (--idle-timeout), closing {after}");
        }
        End::Stalled(stall) => {
            Stats::inc(&stats.timed_out);
            log::warn!(
                "{peer}: took none of its echoes for {stall:?} (--stall-timeout: not reading), closing {after}"
            );
        }
        End::Shutdown { unfinished: 0 } => log::info!("{peer}: closed for shutdown {after}"),
        End::Shutdown { unfinished } => log::info!(
            "{peer}: closed for shutdown {after}, dropping {unfinished} bytes of an unfinished frame"
        ),
        End::Cut => {
            Stats::inc(&stats.cut);
            log::warn!("{peer}: still open at the --grace deadline, cut {after}");
        }
        End::Error(ConnError::Io(e)) if is_timeout(e) => {
            // A blocking write whose SO_SNDTIMEO expired: the stall timeout.
            Stats::inc(&stats.timed_out);
            log::warn!(
                "{peer}: write stalled ({e}): client not reading its echoes; closing {after}"
            );
        }
        End::Error(ConnError::Io(e)) if is_disconnect(e) => {
            Stats::inc(&stats.errors);
            log::info!("{peer}: disconnected ({e}) {after}");
        }
        End::Error(e @ ConnError::Frame(FrameError::Truncated { .. })) => {
            Stats::inc(&stats.errors);
            log::warn!("{peer}: {e} {after}");
        }
        End::Error(e) => {
            Stats::inc(&stats.errors);
            log::warn!("{peer}: {e}; closing {after}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn each_end_bumps_its_own_counter() {
        let stats = Stats::new();
        let peer = "127.0.0.1:1";
        for end in [
            End::PeerClosed,
            End::Shutdown { unfinished: 3 },
            End::Idle(Duration::from_secs(1)),
            End::Stalled(Duration::from_secs(1)),
            End::from(io::Error::from(io::ErrorKind::WouldBlock)),
            End::Cut,
            End::from(io::Error::from(io::ErrorKind::ConnectionReset)),
            End::from(FrameError::TooLarge { len: 9, max: 1 }),
        ] {
            log_close(&peer, 0, 0, &end, &stats);
        }
        assert_eq!(stats.timed_out.load(Relaxed), 3);
        assert_eq!(stats.cut.load(Relaxed), 1);
        assert_eq!(stats.errors.load(Relaxed), 2);
    }
}
