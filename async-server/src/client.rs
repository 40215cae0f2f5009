//! A small blocking client for both servers: send each message as one frame,
//! wait for its echo, print it.
//!
//! Run with (two terminals):
//!
//! ```text
//! cargo run -p async-server -- server
//! cargo run -p async-server -- client hello world         # two frames
//! printf 'a\nb\n' | cargo run -p async-server -- client     # stdin lines
//! ```
//!
//! What to watch: with `--framing raw` there are no frame boundaries, so the
//! client counts bytes: it reads until as many came back as it sent.

use std::io::BufRead;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, bail};
use common::{FramedStream, Framing};

/// One connection to an echo server.
#[derive(Debug)]
pub struct Client {
    framed: FramedStream<TcpStream>,
    framing: Framing,
}

impl Client {
    /// Connect; every later read gives up after `timeout` (`SO_RCVTIMEO`),
    /// so a silent server cannot hang the client.
    pub fn connect(
        addr: SocketAddr,
        framing: Framing,
        max_frame: usize,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            framed: FramedStream::new(stream, framing, max_frame),
            framing,
        })
    }

    /// Send `message` as one frame and return its echo.
    pub fn echo(&mut self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.framed.write_frame(message)?;
        if self.framing != Framing::Raw {
            return match self.framed.read_frame()? {
                Some(frame) => Ok(frame.to_vec()),
                None => bail!("the server closed the connection before echoing"),
            };
        }
        // Raw: the echo may come back in any number of pieces.
        let mut echo = Vec::with_capacity(message.len());
        while echo.len() < message.len() {
            match self.framed.read_frame()? {
                Some(piece) => echo.extend_from_slice(&piece),
                None => bail!(
                    "the server closed the connection after {} of {} bytes",
                    echo.len(),
                    message.len()
                ),
            }
        }
        Ok(echo)
    }
}

/// `async-server client`: echo each message (or each stdin line) and print
/// the echoes on stdout, one per line, each as soon as it is back. A closed
/// stdout ends the client with a `BrokenPipe` error, which `main` treats as
/// a normal end.
pub fn run(
    addr: SocketAddr,
    framing: Framing,
    max_frame: usize,
    timeout: Duration,
    messages: &[String],
) -> anyhow::Result<()> {
    let mut client = Client::connect(addr, framing, max_frame, timeout)?;
    let mut one = |msg: &[u8]| -> anyhow::Result<()> {
        let echo = client.echo(msg)?;
        // Messages are text (arguments or stdin lines), so are their echoes.
        common::outln!("{}", String::from_utf8_lossy(&echo))?;
        Ok(())
    };
    if messages.is_empty() {
        for line in std::io::stdin().lock().lines() {
            one(line.context("reading stdin")?.as_bytes())?;
        }
    } else {
        for msg in messages {
            one(msg.as_bytes())?;
        }
    }
    Ok(())
}
