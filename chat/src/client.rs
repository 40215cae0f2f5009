//! `chat client --name NAME`: join the room, send each stdin line, print
//! every line the room sends, until the server closes or stdin ends.
//!
//! ```text
//! cargo run -p chat -- client --name alice
//! ```
//!
//! Two threads, because two things block independently: reading stdin and
//! reading the socket. The socket reader prints as lines arrive; the main
//! thread sends the name, then stdin lines. At the end of stdin the client
//! half-closes (FIN: "I am done talking") and keeps printing until the
//! server closes, so nothing the room said meanwhile is lost.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result};

/// Connect as `name`, send `lines`, copy whatever arrives to `out`.
pub fn talk(
    addr: SocketAddr,
    name: &str,
    timeout: Duration,
    lines: impl Iterator<Item = io::Result<String>>,
    mut out: impl Write + Send + 'static,
) -> Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot connect to {addr}"))?;
    let reading = stream.try_clone().context("cannot clone the socket")?;
    let printer = std::thread::spawn(move || -> io::Result<()> {
        let mut r = BufReader::new(reading);
        let mut line = Vec::new();
        loop {
            line.clear();
            if r.read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            out.write_all(&line)?;
            out.flush()?;
        }
    });
    writeln!(stream, "{name}").context("sending the name")?;
    for line in lines {
        let line = line.context("reading stdin")?;
        if stream.write_all(format!("{line}\n").as_bytes()).is_err() {
            break; // the server closed; the printer shows why
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
    match printer.join() {
        Ok(r) => r.context("reading from the server"),
        Err(_) => anyhow::bail!("the printing thread panicked"),
    }
}
