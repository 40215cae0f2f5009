//! `examples/bare_uring_echo.rs` against `loadgen check`'s basic cases
//! (echo sizes, one byte at a time, pipelined, half-close, concurrent
//! clients), in raw framing: the bare echo knows no frames, so every byte
//! must come back exactly, in order. Skipped, with the one-line reason,
//! where the kernel refuses io_uring. Run with:
//! `cargo test -p async-server --test bare_uring -- --nocapture`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;

use loadgen::check::{self, CheckArgs, Status};

#[allow(dead_code)] // its `main` is the example's; the test uses `serve`
#[path = "../examples/bare_uring_echo.rs"]
mod bare;

/// The bare echo on an ephemeral port, on a thread of its own (it never
/// returns; the thread ends with the test process). `None`: io_uring is
/// refused here, and the reason was printed. `sndbuf`: the send buffer its
/// connections inherit from the listener (Linux copies it at accept).
fn start(sndbuf: Option<usize>) -> Option<std::net::SocketAddr> {
    if let Err(reason) = async_server::uring::probe() {
        eprintln!("skipped: {reason}");
        return None;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    if let Some(size) = sndbuf {
        socket2::SockRef::from(&listener)
            .set_send_buffer_size(size)
            .unwrap();
    }
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Err(e) = bare::serve(listener) {
            eprintln!("bare_uring_echo: {e}");
        }
    });
    Some(addr)
}

#[test]
fn the_basic_check_cases_pass() {
    let Some(addr) = start(None) else { return };
    let addr = addr.to_string();
    let flags = [
        "--addr",
        &addr,
        "--framing",
        "raw",
        "--clients",
        "200",
        "--cases",
        "echo-sizes,one-byte-at-a-time,pipelined,half-close,concurrent-clients",
    ];
    let args = CheckArgs::from_flags(flags).unwrap();
    let report = check::run(&args, |r| println!("{}", r.line())).unwrap();
    println!("{}", report.closing_line());
    let failed: Vec<String> = report
        .cases
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.line())
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(report.passed, 5, "every case ran and passed");
}

/// A client that writes 8 MiB before reading a byte, to a server whose send
/// buffer (4 KiB asked, about 8 KiB given) is smaller than one recv's
/// 16 KiB: each send can take only part, so sends come back short; every
/// byte must still arrive, in order. (With the default buffers the kernel
/// wakes a blocked send only once a third of the buffer is free, so 16 KiB
/// sends rarely come back short: this test would not see the bug.)
#[test]
fn short_sends_to_a_slow_reader_lose_nothing() {
    let Some(addr) = start(Some(4096)) else {
        return;
    };
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut client = TcpStream::from(socket);
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let sent: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut client = client.try_clone().unwrap();
        let sent = sent.clone();
        std::thread::spawn(move || {
            client.write_all(&sent).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut got = Vec::with_capacity(sent.len());
    client.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "the echo differs from what was sent");
}
