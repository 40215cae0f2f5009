//! The step between the bare server (`examples/bare.rs`) and the full one
//! (`src/server.rs`): the same iterative loop, plus the first three things a
//! real client forces on a server. Messages are lines cut out of a buffer
//! by the workspace's decoder (`common::framing`), a line longer than the
//! limit is refused before it is stored, and a client that says nothing is
//! closed after a read timeout instead of holding the only slot for ever.
//!
//! Run it (two terminals):
//!   cargo run -p tcp-echo --example framed_tcp_echo                  # 127.0.0.1:8080
//!   cargo run -p tcp-echo --example framed_tcp_echo -- 127.0.0.1:0   # a free port
//!   printf 'one\ntwo\nthree\n' | nc -N 127.0.0.1 8080                # three lines back
//! What to watch: send `hel` and wait: nothing comes back until the `\n`
//! (a frame, not a read); say nothing for 10 s and the server closes you.
//! Still missing, and in `src/server.rs`: a bounded write, errors counted
//! per client, and a shutdown that loses nothing.

// ANCHOR: framed
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use bytes::BytesMut;
use common::framing::{Decoder, Framing, encode};

/// The longest line accepted, newline excluded: the decoder refuses a longer
/// one as soon as that many bytes arrived without a `\n`.
const MAX_LINE: usize = 64 * 1024;
/// How long a client may stay silent (SO_RCVTIMEO on its socket).
const IDLE: Duration = Duration::from_secs(10);

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let listener = TcpListener::bind(&addr)?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(conn) => conn,
            // A failed accept concerns one connection, not the server.
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        match serve(stream) {
            Ok(lines) => println!("{peer}: closed after {lines} lines"),
            Err(e) => eprintln!("{peer}: {e}"),
        }
    }
}

pub fn serve(mut stream: TcpStream) -> std::io::Result<u64> {
    // Without a timeout a silent client blocks `read` (and so every other
    // client of this one-at-a-time server) for ever.
    stream.set_read_timeout(Some(IDLE))?;
    let mut decoder = Decoder::new(Framing::Line, MAX_LINE);
    let mut inbuf = BytesMut::new();
    let mut out = BytesMut::new();
    let mut chunk = [0u8; 4096];
    let mut lines = 0;
    loop {
        let n = match stream.read(&mut chunk) {
            // EOF: everything the client sent has been answered.
            Ok(0) => return Ok(lines),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // SO_RCVTIMEO expired: Linux reports it as EAGAIN (WouldBlock).
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(std::io::Error::new(ErrorKind::TimedOut, "idle, closed"));
            }
            Err(e) => return Err(e),
        };
        inbuf.extend_from_slice(&chunk[..n]);
        // One read may hold several lines (粘包) or part of one (拆包): cut
        // off every complete line, keep the rest for the next read.
        while let Some(line) = decoder.decode(&mut inbuf).map_err(std::io::Error::other)? {
            // The payload came out of a line frame, so it has no `\n` and
            // encoding it again cannot fail; the error is passed on anyway.
            encode(Framing::Line, &line, &mut out).map_err(std::io::Error::other)?;
            lines += 1;
        }
        // All echoes of this read in one write; `write_all` loops over short
        // writes (a client that never reads can still block it: see
        // `src/server.rs` for the bounded version).
        stream.write_all(&out)?;
        out.clear();
    }
}
// ANCHOR_END: framed
