//! Graders for the async chapter: 10 (tokio: idle timeout, connection
//! limit), 11 (a mio loop that must survive partial writes) and 13 (CPU
//! work off the loop).

use std::io::Write;
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::harness::{
    Check, End, Run, Server, connect, expect_bytes, expect_echo, expect_eof, fail, pattern,
    read_upto, send,
};

const IDLE_MS: u64 = 600;

/// Expect the SERVER to close (we send no FIN) within `d`.
fn expect_closed_by_server(s: &mut TcpStream, d: Duration, why: &str) -> Check {
    let (got, end) = read_upto(s, usize::MAX, d);
    match end {
        End::Eof | End::Reset(_) if got.is_empty() => Ok(()),
        End::Eof | End::Reset(_) => Err(fail(
            "the connection closed with nothing more sent",
            format!("{} unexpected bytes before the close", got.len()),
            why,
        )),
        _ => Err(fail(
            "the server to close the connection",
            format!("still open after {:.1} s", d.as_secs_f64()),
            why,
        )),
    }
}

pub fn ex10_tokio_limits(run: &mut Run) -> Check {
    let idle = IDLE_MS.to_string();
    let server = Server::start(run, &["--idle-timeout-ms", &idle, "--max-conns", "2"])?;

    run.step("client A is echoed");
    let mut a = connect(server.addr)?;
    expect_echo(&mut a, b"A\n", "echo every byte read, as in exercise 1")?;

    run.step(format!(
        "A sends a line every 150 ms for 1.5 s (longer than the {IDLE_MS} ms idle timeout): A is busy, not idle"
    ));
    for i in 0..10 {
        thread::sleep(Duration::from_millis(150));
        expect_echo(
            &mut a,
            format!("line {i}\n").as_bytes(),
            "the server cut a client that was talking all along: the idle timer must restart after every \
             read. A timeout around the whole connection limits its lifetime instead; put \
             tokio::time::timeout(idle, stream.read(..)) around each read",
        )?;
    }

    run.step("client B connects and is echoed (2 connections, the limit)");
    let mut b = connect(server.addr)?;
    expect_echo(&mut b, b"B\n", "a second client is within --max-conns 2")?;

    run.step("client C connects: over --max-conns 2, it gets \"busy\\n\" and is closed");
    let mut c = connect(server.addr)?;
    expect_bytes(
        &mut c,
        b"busy\n",
        "no connection limit is enforced. Take a permit with try_acquire_owned() and MOVE it into the \
         client's task (`let _permit = permit;`): `let _ = ...` or `Ok(_)` drops it at once, and \
         then the limit never bites",
    )?;
    expect_closed_by_server(
        &mut c,
        Duration::from_secs(3),
        "after \"busy\\n\", drop the stream",
    )?;

    run.step(format!(
        "B now sends nothing: it must be closed after about {IDLE_MS} ms"
    ));
    expect_closed_by_server(
        &mut b,
        Duration::from_millis(IDLE_MS + 3000),
        "a client that sends nothing holds its connection forever unless the server gives up on it: wrap \
         each read in tokio::time::timeout(idle, ...), and return when it elapses (idle timeout)",
    )?;
    drop((a, b, c));

    run.step("once A and B are gone, a new client is served (their permits came back)");
    let mut d = connect(server.addr)?;
    // A was idle too and has been closed by now, or will be within the timeout.
    let deadline = std::time::Instant::now() + Duration::from_millis(IDLE_MS + 3000);
    loop {
        d.write_all(b"D\n")
            .map_err(|e| fail("to send \"D\\n\"", e.to_string(), ""))?;
        let (got, _) = read_upto(&mut d, 5, Duration::from_millis(IDLE_MS + 500));
        if got == b"D\n" {
            return Ok(());
        }
        if got != b"busy\n" || std::time::Instant::now() >= deadline {
            return Err(fail(
                "\"D\\n\" echoed",
                crate::harness::describe(&got),
                "a permit must go back when its client's task ends (drop it there, never forget it)",
            ));
        }
        d = connect(server.addr)?;
    }
}

// ---------------------------------------------------------------- exercise 11

pub fn ex11_mio_writable(run: &mut Run) -> Check {
    const BIG: usize = 32 << 20;
    let server = Server::start(run, &[])?;

    run.step("client A is echoed");
    let mut a = connect(server.addr)?;
    expect_echo(
        &mut a,
        b"hello\n",
        "read until WouldBlock, queue the bytes in out, flush",
    )?;

    run.step("A sends 32 MiB (more than the kernel buffers hold) and reads NOTHING meanwhile (the server's writes must come up short)");
    let payload = pattern(BIG, 5);
    let mut w = a
        .try_clone()
        .map_err(|e| fail("a socket handle", e.to_string(), ""))?;
    let (tx, rx) = mpsc::channel();
    let data = payload.clone();
    thread::spawn(move || {
        let _ = tx.send(w.write_all(&data).map_err(|e| e.to_string()));
    });
    // If the server applies back-pressure (it stops reading while its
    // output is stuck), our write cannot finish until we read: fine too.
    let sent = rx.recv_timeout(Duration::from_secs(5));
    if let Ok(Err(e)) = &sent {
        return Err(fail(
            "to send all 32 MiB",
            format!("the server closed the connection while we were sending: {e}"),
            "a write that returns WouldBlock is not an error: the client is just not reading yet. Keep \
             the rest in out, register WRITABLE, write more on the writable event",
        ));
    }

    run.step("client B is echoed while A's echo is stuck (the loop never blocks)");
    let mut b = connect(server.addr)?;
    expect_echo(
        &mut b,
        b"B here\n",
        "one stuck client must not stop the loop",
    )?;
    drop(b);

    run.step("A reads: all 32 MiB must come back, in order");
    let (got, end) = read_upto(&mut a, BIG, Duration::from_secs(6));
    if got != payload {
        let _ = a.shutdown(std::net::Shutdown::Both);
        let prefix = got.iter().zip(&payload).take_while(|(x, y)| x == y).count();
        let (got_text, why) = match end {
            End::Eof | End::Reset(_) => (
                format!("{prefix} bytes, then the connection was closed"),
                "a write that returns WouldBlock is not an error: the send buffer is full because the \
                 client is not reading yet. Keep the rest in out and wait for WRITABLE",
            ),
            _ => (
                format!("{prefix} bytes, then nothing for 6 s"),
                "the rest of a short write must be written when the socket becomes writable again: \
                 register WRITABLE while out is not empty (mio only reports what you register for)",
            ),
        };
        let got_text = if prefix < got.len() {
            format!("a different byte at offset {prefix}")
        } else {
            got_text
        };
        return Err(fail(format!("all {BIG} bytes back"), got_text, why));
    }

    run.step("A closes its side: the server finishes and closes");
    expect_eof(
        &mut a,
        Duration::from_secs(3),
        "on Ok(0), set read_closed; the loop closes once out is empty",
    )?;
    drop(a);

    crate::loadgen::check(
        run,
        server.addr,
        &[
            "--framing",
            "raw",
            "--cases",
            "echo-sizes,one-byte-at-a-time,pipelined,half-close,reset-mid-frame",
        ],
        &|case| {
            match case {
            "reset-mid-frame" => "a reset ends that connection only: remove it, and go on serving the others".into(),
            _ => "read until WouldBlock, keep what write did not take, WRITABLE while out is not empty".into(),
        }
        },
    )?;
    Ok(())
}

// ---------------------------------------------------------------- exercise 13

pub fn ex13_rayon_offload(run: &mut Run) -> Check {
    let server = Server::start(run, &[])?;

    run.step("client A is echoed");
    let mut a = connect(server.addr)?;
    expect_echo(&mut a, b"hello\n", "lines other than `work MS` are echoed")?;

    run.step("A asks for 2 s of CPU work (\"work 2000\") and is told \"started\"");
    send(&mut a, b"work 2000\n")?;
    expect_bytes(
        &mut a,
        b"started\n",
        "answer `started` before the work begins, as the starter does",
    )?;

    run.step(
        "while A's work runs, client B says \"ping\": B must be echoed before A's work is done",
    );
    let mut b = connect(server.addr)?;
    send(&mut b, b"ping\n")?;
    let (got, _) = read_upto(&mut b, 5, Duration::from_secs(6));
    // Whatever reached A by now: "done ..." means B waited for A's work.
    let _ = a.set_nonblocking(true);
    let mut early = [0u8; 256];
    let a_done = matches!(std::io::Read::read(&mut a, &mut early), Ok(n) if n > 0);
    let _ = a.set_nonblocking(false);
    if got != b"ping\n" || a_done {
        return Err(fail(
            "\"ping\\n\" back at once, while A's 2 s of work are still running",
            if got == b"ping\n" {
                "\"ping\\n\", but only after A's work was done".to_string()
            } else {
                crate::harness::describe(&got)
            },
            "B had to wait for A's work: it ran on, or blocked, the loop's only thread. Hand it to \
             rayon::spawn and await a tokio::sync::oneshot: tokio::spawn is not enough on one thread, \
             and a blocking recv() holds the thread just the same",
        ));
    }

    run.step("A's result arrives: \"done X\"");
    let (got, _) = read_upto(&mut a, 6, Duration::from_secs(10));
    if !got.starts_with(b"done ") {
        return Err(fail(
            "a line starting \"done \"",
            crate::harness::describe(&got),
            "send the worker's result back through the oneshot and write it",
        ));
    }
    Ok(())
}
