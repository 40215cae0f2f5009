//! The book's middle step, `examples/framed.rs`: its `serve` (compiled here
//! from the example's own file, so the test never runs a stale binary) must
//! echo whole lines however the client's bytes are cut, and answer nothing
//! for a line without its newline.
//!
//! Run: cargo test -p tcp-echo --test framed_example

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

#[allow(dead_code)] // its `main` is the example's, not the test's
#[path = "../examples/framed.rs"]
mod framed;

/// One connection served by the example's `serve` on 127.0.0.1:0.
fn start() -> (JoinHandle<std::io::Result<u64>>, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept()?;
        framed::serve(stream)
    });
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    (server, s)
}

#[test]
fn echoes_whole_lines_however_the_bytes_are_cut() {
    let (server, mut s) = start();
    // A line cut in two writes, then two lines in one write: the echo is
    // the same bytes, line by line.
    s.write_all(b"hel").unwrap();
    s.write_all(b"lo\nsecond\nthird\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("echo, then EOF");
    assert_eq!(got, b"hello\nsecond\nthird\n");
    assert_eq!(server.join().unwrap().unwrap(), 3, "three lines counted");
}

#[test]
fn a_partial_line_is_not_echoed() {
    let (server, mut s) = start();
    s.write_all(b"no newline yet").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("EOF");
    assert_eq!(got, b"", "a line without its newline is not a frame");
    assert_eq!(server.join().unwrap().unwrap(), 0);
}
