//! The server contract (root README, "What every server promises") over
//! real sockets: shutdown with frames in flight and a client that never
//! reads, the stall timeout, and `--max-conns` at its maximum.
//!
//! The shutdown cases run the binary and send it a real SIGTERM; the stall
//! case runs the server in-process, so its counters can be checked.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns
mod support;

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Framing, Stats};
use support::*;
use tls_echo::pki::{TlsVersions, client_config, load_roots};

/// `--grace` of the shutdown cases.
const GRACE: Duration = Duration::from_secs(2);
/// How much later than `--grace` after SIGTERM the process may exit: the
/// time to write the summary and exit, on a machine busy compiling.
const MARGIN: Duration = Duration::from_secs(3);

/// `n` frames of varied sizes in `framing`, as they go on the wire. The
/// echo of every framing is byte for byte the same as what was sent.
fn wire(framing: Framing, client: usize, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let len = 1 + (client * 131 + i * 977) % 2000;
        let payload: Vec<u8> = (0..len)
            .map(|j| b'a' + ((client + i + j) % 26) as u8)
            .collect();
        match framing {
            Framing::Line => {
                out.extend_from_slice(&payload);
                out.push(b'\n');
            }
            Framing::Length => {
                out.extend_from_slice(&(len as u32).to_be_bytes());
                out.extend_from_slice(&payload);
            }
            Framing::Raw => out.extend_from_slice(&payload),
        }
    }
    out
}

/// One frame of 16 KiB in `framing`, for the clients that only send.
fn big_frame(framing: Framing) -> Vec<u8> {
    let mut frame = match framing {
        Framing::Length => (16 * 1024u32).to_be_bytes().to_vec(),
        _ => Vec::new(),
    };
    frame.extend(std::iter::repeat_n(b'h', 16 * 1024));
    if framing == Framing::Line {
        frame.pop();
        frame.push(b'\n');
    }
    frame
}

/// A client that writes frames as fast as the server lets it and never
/// reads, on its own thread: up to `cap` bytes, until a write fails (the
/// server reset the connection) or blocks for TIMEOUT. Reports the bytes
/// written so far on `progress`; its result is the error that stopped it.
fn never_reading_client(
    mut c: TlsClient,
    framing: Framing,
    cap: usize,
    progress: mpsc::Sender<usize>,
) -> mpsc::Receiver<io::Result<usize>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let frame = big_frame(framing);
        let mut sent = 0;
        let result = loop {
            if sent >= cap {
                break Ok(sent);
            }
            if let Err(e) = c.write_all(&frame).and_then(|()| c.flush()) {
                break Err(e);
            }
            sent += frame.len();
            let _ = progress.send(sent);
        };
        let _ = tx.send(result);
    });
    rx
}

/// Wait until the client on the other end of `progress` has written at
/// least `bytes`.
fn wait_written(progress: &mpsc::Receiver<usize>, bytes: usize) {
    loop {
        let sent = progress
            .recv_timeout(TIMEOUT)
            .unwrap_or_else(|_| panic!("the sending client stopped before {bytes} bytes"));
        if sent >= bytes {
            return;
        }
    }
}

/// Read until the TLS session ends: `Ok(0)` only after the server's
/// `close_notify` (rustls reports a bare FIN as `UnexpectedEof`).
fn expect_close_notify(c: &mut TlsClient) {
    let mut buf = [0u8; 64];
    match c.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("{n} unexpected bytes after the echoes: {:?}", &buf[..n]),
        Err(e) => panic!("no clean close_notify after the echoes: {e}"),
    }
}

/// The finding of issue 11, as a test, in one framing: twenty clients with
/// frames in flight and one that wrote half a MiB and more and never
/// reads. On SIGTERM every frame of the twenty comes back, then a
/// `close_notify`; the never-reading one is cut at `--grace`; the process
/// exits 0 by `--grace` plus a margin, with the summary line.
fn sigterm_with_frames_in_flight_and_a_client_that_never_reads(framing: Framing) {
    let ca = TempFile::new("ca.pem");
    let ca_path = ca.path().to_str().unwrap();
    let mut server = ServerChild::start(&[
        "--framing",
        framing.name(),
        "--grace",
        "2s",
        "--ca-out",
        ca_path,
    ]);
    let roots = load_roots(ca.path()).unwrap();
    let config = Arc::new(client_config(roots, None, TlsVersions::Any).unwrap());

    let hog = tls_connect(server.addr, "localhost", config.clone()).unwrap();
    let (progress_tx, progress) = mpsc::channel();
    let hog_done = never_reading_client(hog, framing, 64 << 20, progress_tx);
    // More than --max-pending (256 KiB) and rustls's own buffer: the
    // server has stopped reading it and its echoes are stuck.
    wait_written(&progress, 512 << 10);

    let mut clients: Vec<TlsClient> = (0..20)
        .map(|_| tls_connect(server.addr, "localhost", config.clone()).unwrap())
        .collect();
    // Frames *in flight* when the signal arrives, for sure: the server is
    // stopped (SIGSTOP) while they are sent, so they wait, encrypted, in
    // its kernel receive queues, and the SIGTERM is pending when it resumes
    // (SIGCONT). 25 frames, about 25 KB per client: well within a fresh
    // connection's receive window, so all of it has *arrived* (more would
    // wait in the client's send queue, which the server has not received
    // and need not echo).
    server.signal(SIGSTOP);
    let sent: Vec<Vec<u8>> = clients
        .iter_mut()
        .enumerate()
        .map(|(i, c)| {
            let bytes = wire(framing, i, 25);
            c.write_all(&bytes).unwrap();
            c.flush().unwrap();
            bytes
        })
        .collect();
    let exited = server.sigterm();
    let signalled = Instant::now();
    server.signal(SIGCONT);
    // Echoes of every frame sent before the signal, byte for byte, then a
    // clean end of the TLS session.
    for (i, (c, sent)) in clients.iter_mut().zip(&sent).enumerate() {
        let back = read_n(c, sent.len()).unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert!(back == *sent, "client {i}: the echo differs");
        expect_close_notify(c);
    }
    drop(clients); // our FIN, which the server's shutdown waits for

    let left = (signalled + GRACE + MARGIN).saturating_duration_since(Instant::now());
    let (status, stderr) = exited
        .recv_timeout(left)
        .unwrap_or_else(|_| panic!("still running {:?} after SIGTERM", GRACE + MARGIN));
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "tls-echo stopped: 21 connections served, 0 refused, 0 closed on error, 0 timed out, 1 cut at the deadline, "
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("still open at the --grace deadline, cut"),
        "{stderr}"
    );
    // The never-reading client learns of the cut as a failed write.
    let hog = hog_done.recv_timeout(TIMEOUT).expect("the hog never ended");
    assert!(
        hog.is_err(),
        "the never-reading client was not cut: {hog:?}"
    );
}

#[test]
fn sigterm_line() {
    sigterm_with_frames_in_flight_and_a_client_that_never_reads(Framing::Line);
}

#[test]
fn sigterm_length() {
    sigterm_with_frames_in_flight_and_a_client_that_never_reads(Framing::Length);
}

#[test]
fn sigterm_raw() {
    sigterm_with_frames_in_flight_and_a_client_that_never_reads(Framing::Raw);
}

/// A client that sends and never reads is closed by `--stall-timeout`
/// (counted as timed out, not as an error) while another client is served
/// before, during and after.
fn stalled_reader_is_closed_while_others_are_served(framing: Framing) {
    let server = TestServer::start_with(
        framing,
        |c| {
            c.common.stall_timeout = Duration::from_millis(300);
            c.common.max_pending = 1024;
        },
        None,
    );
    let mut good = tls_connect(server.addr, "localhost", server.client_config()).unwrap();
    round_trip(&mut good, &wire(framing, 1, 3)).unwrap();

    let staller = tls_connect(server.addr, "localhost", server.client_config()).unwrap();
    let (progress_tx, progress) = mpsc::channel();
    // 256 MiB is far more than every buffer between the two ends can hold,
    // so this client's writes block long before: it is stuck, as is the
    // server's echo to it.
    let stalled = never_reading_client(staller, framing, 256 << 20, progress_tx);
    wait_written(&progress, 128 << 10);
    round_trip(&mut good, &wire(framing, 2, 3)).unwrap();

    let ended = stalled
        .recv_timeout(TIMEOUT)
        .expect("the stalled client was never closed");
    let err = ended.expect_err("the stalled client wrote 256 MiB: nothing stopped it");
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ),
        "closed by the server, not by our own write timeout: {err}"
    );
    round_trip(&mut good, &wire(framing, 3, 3)).unwrap();
    drop(good);
    let stats = server.stop();
    assert_eq!(Stats::get(&stats.timed_out), 1, "the stall counted");
    assert_eq!(Stats::get(&stats.errors), 0, "a stall is not an error");
    assert_eq!(Stats::get(&stats.cut), 0);
}

#[test]
fn stall_line() {
    stalled_reader_is_closed_while_others_are_served(Framing::Line);
}

#[test]
fn stall_length() {
    stalled_reader_is_closed_while_others_are_served(Framing::Length);
}

#[test]
fn stall_raw() {
    stalled_reader_is_closed_while_others_are_served(Framing::Raw);
}

/// The largest `--max-conns` the CLI accepts starts a server that serves
/// (it once panicked in tokio's `Semaphore::new`).
#[test]
fn max_conns_at_its_maximum_starts_and_serves() {
    let ca = TempFile::new("ca.pem");
    let server = ServerChild::start(&[
        "--max-conns",
        "1000000",
        "--ca-out",
        ca.path().to_str().unwrap(),
    ]);
    let roots = load_roots(ca.path()).unwrap();
    let config = Arc::new(client_config(roots, None, TlsVersions::Any).unwrap());
    let mut c = tls_connect(server.addr, "localhost", config).unwrap();
    round_trip(&mut c, b"a million slots\n").unwrap();
    drop(c);
    let (code, stderr) = server.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("tls-echo stopped: 1 connections served, 0 refused, 0 closed on error"),
        "{stderr}"
    );
}

/// In-process, with the shutdown triggered while the frames are on their
/// way: everything comes back, then close_notify, and the connection is
/// logged as closed for shutdown (not cut), well before the deadline.
#[test]
fn shutdown_echoes_pipelined_frames_then_close_notify_in_every_framing() -> io::Result<()> {
    for framing in Framing::ALL {
        let server = TestServer::start_with(framing, |c| c.common.grace = TIMEOUT, None);
        let mut c = tls_connect(server.addr, "localhost", server.client_config())?;
        // About 25 KB: within the receive window, so all of it has arrived
        // (or is arriving) when the shutdown is triggered.
        let sent = wire(framing, 7, 25);
        c.write_all(&sent)?;
        c.flush()?;
        server.shutdown.trigger();
        assert!(
            read_n(&mut c, sent.len())? == sent,
            "{framing}: echo differs"
        );
        expect_close_notify(&mut c);
        drop(c);
        let stats = server.stop();
        assert_eq!(Stats::get(&stats.cut), 0, "{framing}");
        assert_eq!(Stats::get(&stats.errors), 0, "{framing}");
        match framing {
            // Raw: whatever each read returned is one frame.
            Framing::Raw => assert_eq!(Stats::get(&stats.bytes) as usize, sent.len()),
            _ => assert_eq!(Stats::get(&stats.frames), 25, "{framing}"),
        }
    }
    Ok(())
}

/// Out of file descriptors (`ulimit -n 32`, so `accept()` fails with
/// EMFILE while connections wait in the backlog): the server backs off
/// (the shared policy's warn line), keeps serving the client it has,
/// recovers when descriptors are freed, and still stops on SIGTERM.
#[test]
fn out_of_file_descriptors_backs_off_keeps_serving_and_recovers() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let ca = TempFile::new("ca.pem");
    // `ulimit -n` sets the soft and the hard limit, so the server's own
    // raise_fd_limit cannot lift it.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -n 32 && exec "$0" server --addr 127.0.0.1:0 --ca-out "$1""#)
        .arg(BIN)
        .arg(ca.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let kill = || {
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
    };
    let (out_tx, out_rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = out_tx.send(line);
        }
    });
    let (err_tx, err_rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = err_tx.send(line);
        }
    });
    let wait_for = |rx: &mpsc::Receiver<String>, what: &str| -> String {
        let until = Instant::now() + TIMEOUT;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(what) => return line,
                Ok(_) => {}
                Err(_) => {
                    kill();
                    panic!("no line with `{what}` within {TIMEOUT:?}");
                }
            }
        }
    };
    let announce = wait_for(&out_rx, "listening on");
    let addr = common::net::parse_announce(&announce).unwrap();
    let roots = load_roots(ca.path()).unwrap();
    let config = Arc::new(client_config(roots, None, TlsVersions::Any).unwrap());
    let mut served = tls_connect(addr, "localhost", config.clone()).unwrap();
    round_trip(&mut served, b"before\n").unwrap();

    // Silent TCP clients: the kernel completes their handshakes into the
    // backlog; the server accepts them until it has no descriptor left.
    let silent: Vec<std::net::TcpStream> = (0..40)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let line = wait_for(&err_rx, "pausing accepts");
    assert!(line.contains("out of file descriptors"), "{line}");
    round_trip(&mut served, b"during\n").unwrap();

    // Free the descriptors: the server accepts again.
    drop(silent);
    let mut fresh = tls_connect(addr, "localhost", config).unwrap();
    round_trip(&mut fresh, b"after\n").unwrap();
    drop((served, fresh));

    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let Ok(status) = rx.recv_timeout(TIMEOUT) else {
        kill();
        panic!("no exit within {TIMEOUT:?} of SIGTERM");
    };
    assert_eq!(status.unwrap().code(), Some(0));
    wait_for(&err_rx, "tls-echo stopped: ");
}
