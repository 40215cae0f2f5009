//! Grader for the book's chapter 4 (TCP or UDP): exercise 18, the same
//! messages over both. Over TCP the grader makes 粘包 and 拆包 happen on
//! purpose: three lines in one write (one segment, one read on loopback),
//! then one line a byte at a time with TCP_NODELAY (one segment per byte).
//! Over UDP it sends three datagrams back to back, one holding two
//! newlines and one empty, and counts the datagrams that come back.

use std::io::Write;
use std::net::UdpSocket;
use std::thread;
use std::time::Duration;

use crate::harness::{Check, Run, Server, connect, describe, fail, read_upto};

const WAIT: Duration = Duration::from_secs(3);

/// Read `want` from a TCP stream, or fail with `why(got)`.
fn expect_tcp(c: &mut std::net::TcpStream, want: &[u8], why: &dyn Fn(&[u8]) -> String) -> Check {
    let (got, _) = read_upto(c, want.len(), WAIT);
    if got == want {
        return Ok(());
    }
    Err(fail(
        format!("{} back", describe(want)),
        format!("{} within {} s", describe(&got), WAIT.as_secs()),
        why(&got),
    ))
}

pub fn ex18_tcp_vs_udp(run: &mut Run) -> Check {
    let server = Server::start(run, &[])?;
    let addr = server.addr;
    let io = |e: std::io::Error| fail("the grader to set up", e.to_string(), "");

    run.step(
        "TCP: send \"one\\ntwo\\nthree\\n\" in one write (one segment): three messages, 3, 3 and 5",
    );
    let mut c = connect(addr)?;
    c.write_all(b"one\ntwo\nthree\n").map_err(io)?;
    expect_tcp(&mut c, b"3\n3\n5\n", &|got| {
        if got.starts_with(b"13\n") || got.starts_with(b"14\n") {
            "a read is not a message: one read brought three lines (粘包); find every b'\\n' \
             in what has arrived and answer each line"
                .into()
        } else if got.is_empty() {
            "read, find each line (the bytes before a b'\\n'), write its length and \"\\n\"".into()
        } else {
            "each line's length, without its b'\\n', in decimal, then \"\\n\"".into()
        }
    })?;

    run.step(
        "TCP: send \"four\\n\" one byte per segment (TCP_NODELAY, 50 ms apart): one message, 4",
    );
    c.set_nodelay(true).map_err(io)?;
    for b in b"four\n" {
        c.write_all(&[*b]).map_err(io)?;
        // Not synchronisation: only spacing, so each byte leaves as its own
        // segment and reaches the server's read alone (拆包 made certain).
        thread::sleep(Duration::from_millis(50));
    }
    expect_tcp(&mut c, b"4\n", &|got| {
        if got.starts_with(b"1\n") || got.starts_with(b"0\n") {
            "a line split across reads was answered in pieces: keep the bytes after the last \
             b'\\n' in a buffer until the rest of the line arrives"
                .into()
        } else {
            "a line can take several reads (拆包): keep what has no b'\\n' yet and read again"
                .into()
        }
    })?;
    drop(c);

    run.step("UDP: send the datagrams \"a\\nb\\n\", \"\" and \"c\" back to back: three replies, \"4\", \"0\" and \"1\"");
    let u = UdpSocket::bind("127.0.0.1:0").map_err(io)?;
    u.set_read_timeout(Some(WAIT)).map_err(io)?;
    for d in [&b"a\nb\n"[..], b"", b"c"] {
        u.send_to(d, addr).map_err(io)?;
    }
    let mut replies: Vec<String> = Vec::new();
    let mut buf = [0u8; 2048];
    // At most a few more than expected, so a server that answers each byte
    // is seen doing it, and a timeout ends the wait for a missing one.
    while replies.len() < 6 {
        match u.recv_from(&mut buf) {
            Ok((n, _)) => {
                replies.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                if replies.len() == 3 && replies == ["4", "0", "1"] {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    if replies != ["4", "0", "1"] {
        let got = if replies.is_empty() {
            format!("no datagram within {} s", WAIT.as_secs())
        } else {
            format!(
                "the datagrams {}",
                replies
                    .iter()
                    .map(|r| format!("{r:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let why = if replies.first().is_some_and(|r| r == "1") {
            "a datagram is one message: the newlines inside \"a\\nb\\n\" are data, not frame ends; \
             answer each recv_from once"
        } else if replies == ["4", "1"] {
            "an empty datagram is a message too: recv_from returning 0 over UDP means an empty \
             datagram arrived, not EOF; answer it \"0\""
        } else if replies.is_empty() {
            "recv_from, then send_to(the length, the address it came from), for every datagram"
        } else {
            "one reply per datagram: its length in bytes, in decimal, as one datagram"
        };
        return Err(fail("the datagrams \"4\", \"0\", \"1\"", got, why));
    }
    drop(server);
    Ok(())
}
