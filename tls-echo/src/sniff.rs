//! An eavesdropper in a box: a TCP relay that forwards every byte between a
//! client and a server unchanged and prints what it saw, as a hex dump.
//!
//! Run with (three terminals), once against a plaintext server and once
//! against this chapter's TLS server:
//!
//! ```text
//! cargo run -p tcp-echo -- server                                   # 127.0.0.1:7001
//! cargo run -p tls-echo -- sniff --listen 127.0.0.1:7015 --to 127.0.0.1:7001
//! echo 'attack at dawn' | nc -q1 127.0.0.1 7015                     # readable in the dump
//!
//! cargo run -p tls-echo -- server                                   # 127.0.0.1:7005
//! cargo run -p tls-echo -- sniff --listen 127.0.0.1:7015 --to 127.0.0.1:7005
//! cargo run -p tls-echo -- client --addr localhost:7015 'attack at dawn'
//! ```
//!
//! What to watch: against tcp-echo the message is right there in the ASCII
//! column, both ways. Against tls-echo the relay sees the TLS *records*: a
//! ClientHello and ServerHello in clear (the handshake's key exchange: public
//! values only, useless to a listener), then only `application_data`
//! records whose bytes look random. The relay cannot read them and, because
//! every record carries an authentication tag, it cannot change a single bit
//! without the receiver noticing. It can still see *who* talks (addresses,
//! the server name `localhost` in the ClientHello), *when*, and *how much*:
//! TLS hides content, not traffic shape.
//!
//! The record annotations come from the 5-byte header every TLS record
//! starts with, which is never encrypted: content type (22 handshake, 23
//! application data, 21 alert, 20 change_cipher_spec), version, length.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::Shutdown;
use common::net::{AcceptAction, Backoff, accept_policy, fatal_accept};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Where the relay prints what it sees (stdout in the binary, a `Vec<u8>`
/// in tests). A mutex so the two directions' dumps never interleave mid-line.
pub type Output = Arc<Mutex<dyn Write + Send>>;

/// Default `--dump-bytes`: how much of each chunk is shown.
pub const DEFAULT_DUMP_BYTES: usize = 256;

#[derive(Debug, Clone)]
pub struct Config {
    /// The real server, HOST:PORT.
    pub upstream: String,
    /// Show at most this many bytes of each chunk.
    pub dump_bytes: usize,
}

/// Relay on a std listener until `shutdown`; builds a small tokio runtime.
pub fn run(
    listener: std::net::TcpListener,
    config: Config,
    out: Output,
    shutdown: Shutdown,
) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        listener.set_nonblocking(true)?;
        serve(TcpListener::from_std(listener)?, config, out, shutdown).await
    })
}

/// The relay's accept loop.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    out: Output,
    shutdown: Shutdown,
) -> io::Result<()> {
    let mut tasks = JoinSet::new();
    let mut next_id = 0u64;
    let mut backoff = Backoff::new();
    let mut fatal = None;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = shutdown.triggered() => break,
        };
        let (client, peer) = match accepted {
            Ok(pair) => {
                backoff.reset();
                pair
            }
            // The accept-error policy of every server (common::net), with
            // its back-off cut short by shutdown.
            Err(e) => match accept_policy(&e, &mut backoff) {
                AcceptAction::Retry => continue,
                AcceptAction::Wait(delay) => tokio::select! {
                    () = tokio::time::sleep(delay) => continue,
                    () = shutdown.triggered() => break,
                },
                AcceptAction::Fatal => {
                    fatal = Some(fatal_accept(e, &shutdown));
                    break;
                }
            },
        };
        while tasks.try_join_next().is_some() {}
        next_id += 1;
        tasks.spawn(relay(client, peer, next_id, config.clone(), out.clone()));
    }
    // A relay has nothing of its own to finish: in-flight connections are
    // cut when the tasks are dropped with the set.
    while tasks.try_join_next().is_some() {}
    log::info!(
        "sniff: relayed {next_id} connection(s), {} still open were cut",
        tasks.len()
    );
    fatal.map_or(Ok(()), Err)
}

fn emit(out: &Output, text: &str) {
    let mut out = out.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // A closed stdout (`| head`) must not kill the relay's connections.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

async fn relay(client: TcpStream, peer: SocketAddr, id: u64, config: Config, out: Output) {
    let upstream = match TcpStream::connect(&config.upstream).await {
        Ok(s) => s,
        Err(e) => {
            emit(
                &out,
                &format!("[#{id}] {peer}: cannot reach {}: {e}\n", config.upstream),
            );
            return;
        }
    };
    emit(
        &out,
        &format!(
            "[#{id}] {peer} connected, relaying to {}\n",
            config.upstream
        ),
    );
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let label_up = format!("[#{id}] client -> server");
    let label_down = format!("[#{id}] server -> client");
    // Both directions at once: a relay that forwarded one way at a time
    // would deadlock as soon as both ends wait for each other.
    tokio::join!(
        pump(cr, uw, &label_up, &config, &out),
        pump(ur, cw, &label_down, &config, &out)
    );
    emit(&out, &format!("[#{id}] closed\n"));
}

/// Copy one direction, printing each chunk exactly as it crossed the wire.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    label: &str,
    config: &Config,
    out: &Output,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut records = RecordScanner::default();
    loop {
        let n = match from.read(&mut buf).await {
            // Ok(0): the sender closed its write side (FIN). Pass the
            // half-close on, so the other end sees end-of-stream too.
            Ok(0) => {
                emit(out, &format!("{label}: end of stream\n"));
                break;
            }
            Ok(n) => n,
            Err(e) => {
                emit(out, &format!("{label}: {e}\n"));
                break;
            }
        };
        let chunk = &buf[..n];
        let mut text = format!("{label}: {n} bytes\n");
        hex_dump(&mut text, chunk, config.dump_bytes);
        for note in records.feed(chunk) {
            let _ = writeln!(text, "    {note}");
        }
        emit(out, &text);
        if let Err(e) = to.write_all(chunk).await {
            emit(out, &format!("{label}: forwarding failed: {e}\n"));
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// `tcpdump -X` style: offset, 16 bytes in hex, the same bytes as ASCII
/// (`.` for anything unprintable).
pub fn hex_dump(text: &mut String, data: &[u8], limit: usize) {
    for (row, line) in data[..data.len().min(limit)].chunks(16).enumerate() {
        let _ = write!(text, "    {:04x}  ", row * 16);
        for i in 0..16 {
            match line.get(i) {
                Some(b) => {
                    let _ = write!(text, "{b:02x} ");
                }
                None => text.push_str("   "),
            }
        }
        text.push_str(" |");
        text.extend(line.iter().map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '.'
            }
        }));
        text.push_str("|\n");
    }
    if data.len() > limit {
        let _ = writeln!(text, "    ... {} more bytes", data.len() - limit);
    }
}

/// Follows the TLS record layer of one direction across chunks (a record
/// may be split over several reads, and one read may hold several records)
/// and describes each record once its last byte has gone past.
#[derive(Debug, Default)]
pub struct RecordScanner {
    state: ScanState,
    /// After a ChangeCipherSpec (TLS 1.2), even handshake records are encrypted.
    encrypted: bool,
}

#[derive(Debug, Default)]
enum ScanState {
    /// Nothing seen yet.
    #[default]
    Start,
    /// Collecting a 5-byte record header.
    Header(Vec<u8>),
    /// Inside a record body (kept, up to [`MAX_KEPT`] bytes, to describe it).
    Body {
        content_type: u8,
        remaining: usize,
        body: Vec<u8>,
    },
    /// The stream does not look like TLS: stop annotating.
    NotTls,
}

/// A TLS record holds at most 2^14 bytes of plaintext plus 256 of overhead.
const MAX_KEPT: usize = (1 << 14) + 256;

impl RecordScanner {
    /// Feed the next bytes of the stream; returns one line per record that
    /// ends in them (plus a note when the stream is not TLS at all).
    pub fn feed(&mut self, mut data: &[u8]) -> Vec<String> {
        let mut notes = Vec::new();
        while let Some(&first) = data.first() {
            match &mut self.state {
                ScanState::NotTls => break,
                ScanState::Start if (20..=23).contains(&first) => {
                    self.state = ScanState::Header(Vec::with_capacity(5));
                }
                ScanState::Start => {
                    notes.push("(not TLS: these are the application's own bytes)".to_string());
                    self.state = ScanState::NotTls;
                }
                ScanState::Header(h) => {
                    let take = (5 - h.len()).min(data.len());
                    h.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if h.len() < 5 {
                        continue;
                    }
                    let (content_type, major) = (h[0], h[1]);
                    let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
                    self.state = if !(20..=23).contains(&content_type) || major != 3 {
                        notes.push("(lost track of the TLS records)".to_string());
                        ScanState::NotTls
                    } else {
                        ScanState::Body {
                            content_type,
                            remaining: len,
                            body: Vec::new(),
                        }
                    };
                }
                ScanState::Body {
                    remaining, body, ..
                } => {
                    let take = (*remaining).min(data.len());
                    let keep = take.min(MAX_KEPT.saturating_sub(body.len()));
                    body.extend_from_slice(&data[..keep]);
                    *remaining -= take;
                    data = &data[take..];
                }
            }
            // A record whose body is complete (possibly empty) is described
            // at once, even when it was the last thing in this chunk.
            if let ScanState::Body {
                content_type,
                remaining: 0,
                body,
            } = &self.state
            {
                notes.push(self.describe(*content_type, body));
                if *content_type == 20 {
                    self.encrypted = true;
                }
                self.state = ScanState::Header(Vec::with_capacity(5));
            }
        }
        notes
    }

    /// One line about a complete record.
    fn describe(&self, content_type: u8, body: &[u8]) -> String {
        let what = match content_type {
            20 => "change_cipher_spec: \"from now on we encrypt\" (in TLS 1.3 only for old middleboxes)"
                .to_string(),
            21 if self.encrypted => "alert (encrypted)".to_string(),
            21 => match body {
                [level, desc, ..] => format!(
                    "alert, in clear: {} {}",
                    if *level == 2 { "fatal" } else { "warning" },
                    alert_name(*desc)
                ),
                _ => "alert, in clear".to_string(),
            },
            22 if self.encrypted => "handshake (encrypted: TLS 1.2's Finished)".to_string(),
            22 => format!("handshake, in clear: {}", handshake_messages(body)),
            23 => "application_data: encrypted and authenticated (AEAD)".to_string(),
            _ => "unknown".to_string(),
        };
        format!("TLS record ({} bytes): {what}", body.len())
    }
}

/// The handshake messages in a record body: each is a 1-byte type and a
/// 3-byte length, and one record may carry several (TLS 1.2's server sends
/// ServerHello, Certificate, ServerKeyExchange, ServerHelloDone in one go).
fn handshake_messages(mut body: &[u8]) -> String {
    let mut names = Vec::new();
    while let [kind, a, b, c, rest @ ..] = body {
        names.push(match kind {
            1 => "ClientHello (versions, cipher suites, key share, server name)",
            2 => "ServerHello (chosen version and suite, key share)",
            4 => "NewSessionTicket",
            11 => "Certificate (the server's, readable by anyone)",
            12 => "ServerKeyExchange (key share, signed)",
            13 => "CertificateRequest",
            14 => "ServerHelloDone",
            15 => "CertificateVerify",
            16 => "ClientKeyExchange (key share)",
            20 => "Finished",
            _ => "handshake message",
        });
        let len = usize::from(*a) << 16 | usize::from(*b) << 8 | usize::from(*c);
        if len > rest.len() {
            break; // continues in the next record
        }
        body = &rest[len..];
    }
    if names.is_empty() {
        "(fragment)".to_string()
    } else {
        names.join(", ")
    }
}

fn alert_name(code: u8) -> String {
    let name = match code {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        40 => "handshake_failure",
        42 => "bad_certificate",
        46 => "certificate_unknown",
        48 => "unknown_ca",
        51 => "decrypt_error",
        70 => "protocol_version",
        80 => "internal_error",
        112 => "unrecognized_name",
        116 => "certificate_required",
        _ => return format!("alert {code}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanner_follows_records_across_chunks() {
        let mut s = RecordScanner::default();
        // A ClientHello record split after 3 bytes, then an app-data record.
        let mut stream = vec![22, 3, 1, 0, 4, 1, 0, 0, 0];
        stream.extend_from_slice(&[23, 3, 3, 0, 2, 0xaa, 0xbb]);
        let mut notes = s.feed(&stream[..3]);
        assert!(notes.is_empty());
        notes.extend(s.feed(&stream[3..]));
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("ClientHello") && notes[0].starts_with("TLS record (4 bytes)"));
        assert!(notes[1].contains("application_data"));
    }

    #[test]
    fn one_record_may_hold_several_handshake_messages_and_alerts_are_named() {
        let mut s = RecordScanner::default();
        // ServerHello (1 byte body), Certificate (0), ServerHelloDone (0).
        let body = [2, 0, 0, 1, 0xee, 11, 0, 0, 0, 14, 0, 0, 0];
        let mut stream = vec![22, 3, 3, 0, body.len() as u8];
        stream.extend_from_slice(&body);
        stream.extend_from_slice(&[21, 3, 3, 0, 2, 2, 48]); // fatal unknown_ca
        let notes = s.feed(&stream);
        assert_eq!(
            notes,
            [
                "TLS record (13 bytes): handshake, in clear: ServerHello (chosen version and suite, key share), Certificate (the server's, readable by anyone), ServerHelloDone",
                "TLS record (2 bytes): alert, in clear: fatal unknown_ca",
            ]
        );
        // After change_cipher_spec, handshake records are encrypted.
        let notes = s.feed(&[20, 3, 3, 0, 1, 1, 22, 3, 3, 0, 1, 0x99]);
        assert!(notes[1].contains("encrypted"), "{notes:?}");
    }

    #[test]
    fn plaintext_is_named_as_such() {
        let mut s = RecordScanner::default();
        let notes = s.feed(b"attack at dawn\n");
        assert_eq!(notes, ["(not TLS: these are the application's own bytes)"]);
        assert!(s.feed(b"more").is_empty());
    }

    #[test]
    fn hex_dump_rows() {
        let mut t = String::new();
        hex_dump(&mut t, b"attack at dawn\n", 256);
        assert_eq!(
            t,
            "    0000  61 74 74 61 63 6b 20 61 74 20 64 61 77 6e 0a     |attack at dawn.|\n"
        );
        let mut t = String::new();
        hex_dump(&mut t, &[0u8; 40], 16);
        assert!(t.ends_with("    ... 24 more bytes\n"), "{t}");
    }
}
