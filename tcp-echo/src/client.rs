//! The TCP echo client: `connect()`, then for each message `send()` one
//! frame and `recv()` its echo, timing the round trip.
//!
//! ```text
//! cargo run -p tcp-echo -- server                       # terminal 1
//! cargo run -p tcp-echo -- client hello "two words"    # terminal 2
//! printf 'a\nb\n' | cargo run -p tcp-echo -- client    # stdin: one frame per line
//! ```
//!
//! What can go wrong, and what you see:
//! - nobody listens on the port: the kernel answers our SYN with a reset and
//!   `connect()` fails with `ECONNREFUSED` ("connection refused");
//! - the host does not answer at all: `connect()` would wait for minutes of
//!   SYN retries, so we give it `--timeout`;
//! - the server closes before echoing everything: a short echo, reported
//!   with how many bytes did arrive.

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::framing::{ConnError, FrameError, FramedStream, Framing};

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub addr: SocketAddr,
    pub framing: Framing,
    pub max_frame: usize,
    /// Bound on `connect()` and on waiting for each echo.
    pub timeout: Duration,
}

/// Connect, send each message as one frame, print `> msg` and `< echo (rtt)`
/// lines to `out`. Fails on the first error, with a message that says what
/// happened (refused, timed out, short echo, wrong echo).
pub fn exchange<I>(config: &ClientConfig, messages: I, out: &mut dyn Write) -> Result<()>
where
    I: IntoIterator<Item = Vec<u8>>,
{
    let stream = TcpStream::connect_timeout(&config.addr, config.timeout)
        .with_context(|| format!("cannot connect to {}", config.addr))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(config.timeout))?;
    stream.set_write_timeout(Some(config.timeout))?;
    let local = stream.local_addr()?;
    writeln!(out, "connected {local} -> {}", config.addr)?;

    let mut framed = FramedStream::new(&stream, config.framing, config.max_frame);
    for msg in messages {
        writeln!(out, "> {}", String::from_utf8_lossy(&msg))?;
        let start = Instant::now();
        let echo = match config.framing {
            Framing::Raw => {
                // No frames in raw mode: the echo is "as many bytes as we
                // sent", which may arrive in several reads.
                framed.get_mut().write_all(&msg)?;
                read_exact_echo(&stream, msg.len(), config.timeout)?
            }
            _ => {
                framed
                    .write_frame(&msg)
                    .map_err(|e| describe(e, config.timeout))?;
                match framed
                    .read_frame()
                    .map_err(|e| describe(e, config.timeout))?
                {
                    Some(echo) => echo.to_vec(),
                    None => bail!(
                        "server closed the connection before echoing {} bytes",
                        msg.len()
                    ),
                }
            }
        };
        let rtt = start.elapsed();
        if echo != msg {
            bail!(
                "wrong echo: sent {} bytes, got {} bytes back ({:?})",
                msg.len(),
                echo.len(),
                String::from_utf8_lossy(&echo)
            );
        }
        writeln!(
            out,
            "< {}  ({:.3} ms)",
            String::from_utf8_lossy(&echo),
            rtt.as_secs_f64() * 1e3
        )?;
    }
    // Half-close: "I have nothing more to send". The server sees EOF, finishes
    // and closes; we then see EOF too, which proves nothing was left unsent.
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut rest = Vec::new();
    match (&stream).take(1 << 20).read_to_end(&mut rest) {
        Ok(_) if rest.is_empty() => writeln!(out, "closed cleanly")?,
        Ok(_) => bail!(
            "server sent {} unexpected bytes after the last echo",
            rest.len()
        ),
        Err(e) if common::framing::is_timeout(&e) => {
            bail!("server did not close within {:?}", config.timeout)
        }
        Err(e) => return Err(e).context("waiting for the server to close"),
    }
    Ok(())
}

fn read_exact_echo(mut stream: &TcpStream, len: usize, timeout: Duration) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match stream.read(&mut buf[got..]) {
            Ok(0) => bail!("short echo: server closed after {got} of {len} bytes"),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if common::framing::is_timeout(&e) => {
                bail!("short echo: {got} of {len} bytes within {timeout:?}")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(buf)
}

/// Turn a framed-stream error into a one-line explanation.
fn describe(e: ConnError, timeout: Duration) -> anyhow::Error {
    match e {
        ConnError::Io(io) if common::framing::is_timeout(&io) => {
            anyhow::anyhow!("no echo within {timeout:?}")
        }
        ConnError::Frame(FrameError::Truncated { pending }) => {
            anyhow::anyhow!("short echo: server closed with {pending} bytes of an unfinished frame")
        }
        other => anyhow::Error::new(other),
    }
}

/// Messages from stdin, one per line (without the newline).
pub fn stdin_lines() -> impl Iterator<Item = Vec<u8>> {
    io::stdin()
        .lock()
        .split(b'\n')
        .map_while(|line| line.ok())
        .map(|mut l| {
            if l.last() == Some(&b'\r') {
                l.pop();
            }
            l
        })
}
