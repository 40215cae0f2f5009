//! One rule for a fatal accept error, in every model: when the listening
//! socket itself breaks, the server logs it once, drains the connections it
//! has within `--grace` (what they sent is still echoed, then a FIN), and only
//! then returns the error, so `main` exits 1 after its summary line.
//!
//! How to break a listener from outside: `shutdown(2)` on a *listening*
//! socket (through a duplicate of its descriptor) takes it out of the
//! LISTEN state; the kernel wakes every waiter, and the next `accept`
//! fails with `EINVAL`, which `common::net::accept_policy` calls fatal.
//!
//! Run: cargo test -p async-server --test fatal_accept

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{Framing, Shutdown};
use support::{READ_TIMEOUT, config, models, wire};

#[test]
fn a_broken_listener_drains_the_open_connection_then_ends_with_the_error() {
    common::log::init_for_tests();
    for model in models() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // The same socket, a second descriptor: ours to shut down.
        let handle = listener.try_clone().unwrap();
        let mut cfg = config(Framing::Line);
        cfg.common.grace = Duration::from_secs(5);
        let (tx, done) = mpsc::channel();
        let shutdown = Shutdown::new();
        thread::spawn(move || {
            let _ = tx.send(async_server::run(model, listener, cfg, shutdown));
        });

        // A client the server has accepted and echoed once.
        let mut a = TcpStream::connect(addr).unwrap();
        a.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let first = wire(Framing::Line, &[b"before"]);
        a.write_all(&first).unwrap();
        let mut got = vec![0; first.len()];
        a.read_exact(&mut got).unwrap();
        assert_eq!(got, first, "{model:?}: the echo before the break");

        // A frame in flight when the listener breaks: whether the server
        // has read it yet or not, it must be echoed before the FIN.
        let second = wire(Framing::Line, &[b"in flight"]);
        a.write_all(&second).unwrap();

        // Break the listener. SAFETY: `handle` owns a valid descriptor for
        // the duration of the call.
        let rc = unsafe { libc::shutdown(handle.as_raw_fd(), libc::SHUT_RDWR) };
        assert_eq!(rc, 0, "shutdown(2) on the listening socket");

        // The open client is drained, not dropped: its echo, then the
        // server's FIN (a reset would make read_to_end fail).
        let mut rest = Vec::new();
        a.read_to_end(&mut rest)
            .unwrap_or_else(|e| panic!("{model:?}: reading until the server's FIN: {e}"));
        assert_eq!(rest, second, "{model:?}: the frame in flight, then FIN");
        // Draining means waiting for our FIN (up to --grace, 5 s here): a
        // server that just returned the error would be gone already, its
        // sockets closed by the drop. Half a second of silence tells them
        // apart.
        assert!(
            matches!(
                done.recv_timeout(Duration::from_millis(500)),
                Err(mpsc::RecvTimeoutError::Timeout)
            ),
            "{model:?}: the server ended at once instead of draining until the client's FIN"
        );
        drop(a); // our FIN: the drain is over

        let ended = done
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{model:?}: the server did not end after the break"));
        let err = ended.expect_err("a broken listener ends the server with an error");
        assert_eq!(
            err.raw_os_error(),
            Some(libc::EINVAL),
            "{model:?}: the accept error is what the server returns: {err}"
        );
    }
}
