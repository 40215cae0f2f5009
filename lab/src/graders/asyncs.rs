//! Graders for the async chapter: 10 (tokio: idle timeout, connection
//! limit), 11 (a mio loop that must survive partial writes) and 13 (CPU
//! work off the loop).

use std::io::Write;
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::harness::{
    Check, End, READ_TIMEOUT, Run, Server, connect, expect_bytes, expect_echo, expect_eof, fail,
    pattern, read_upto, send,
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
    // When does A's idle timeout close A? If C is served only after that,
    // it waited for A's permit; if before, there was no limit at all.
    let a_closed = {
        let mut a2 = a
            .try_clone()
            .map_err(|e| fail("a socket handle", e.to_string(), ""))?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = read_upto(&mut a2, usize::MAX, Duration::from_secs(8));
            let _ = tx.send(std::time::Instant::now());
        });
        rx
    };
    let mut c = connect(server.addr)?;
    let (mut got, mut end) = read_upto(&mut c, 5, Duration::from_millis(100));
    let mut c_served_at = None;
    if got.is_empty() && matches!(end, End::Timeout) {
        // No "busy" at once: is C served? Its echo, and when it comes, tell.
        if send(&mut c, b"C\n").is_ok() {
            let (echo, e) = read_upto(&mut c, 2, READ_TIMEOUT);
            if echo == b"C\n" {
                c_served_at = Some(std::time::Instant::now());
            }
            got = echo;
            end = e;
        }
    }
    if let Some(at) = c_served_at {
        // A closed before C's echo came: its time is already sent, or
        // about to be (the reader thread stamps it as its read returns).
        let waited = a_closed
            .recv_timeout(Duration::from_millis(300))
            .is_ok_and(|a_at| a_at <= at);
        return Err(fail(
            "\"busy\\n\" at once, then the connection closed",
            if waited {
                "nothing at once; \"C\\n\" sent, and echoed only after A's idle timeout had closed A"
            } else {
                "nothing at once; \"C\\n\" sent, and echoed while A and B were still connected"
            },
            if waited {
                "your accept loop waits for a permit (acquire().await) instead of refusing at once: the \
                 client over the limit hangs until another one leaves. Use try_acquire_owned(), and on \
                 Err answer \"busy\\n\" and drop the stream"
            } else {
                "no connection limit is enforced. Take a permit with try_acquire_owned() and MOVE it \
                 into the client's task (`let _permit = permit;`): `let _ = ...` or `Ok(_)` drops it at \
                 once, and then the limit never bites"
            },
        ));
    }
    if got.len() < 5 && !got.is_empty() && !matches!(end, End::Eof | End::Reset(_)) {
        let (more, e) = read_upto(&mut c, 5 - got.len(), READ_TIMEOUT);
        got.extend_from_slice(&more);
        end = e;
    }
    if got != b"busy\n" {
        let closed = matches!(end, End::Eof | End::Reset(_));
        return Err(fail(
            "\"busy\\n\", then the connection closed",
            if got.is_empty() && closed {
                "the connection closed without \"busy\\n\"".to_string()
            } else if got.is_empty() {
                format!(
                    "nothing, and \"C\\n\" not echoed either within {} s",
                    READ_TIMEOUT.as_secs()
                )
            } else {
                crate::harness::describe(&got)
            },
            "over --max-conns, write \"busy\\n\" and drop the stream at once: \
             try_acquire_owned() says Err when no permit is left",
        ));
    }
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
            break;
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
    drop((d, server));

    // Out of descriptors, on a server of its own, so that the permits of
    // the clients above cannot be confused with it.
    let mut server = Server::start(run, &["--idle-timeout-ms", "5000", "--max-conns", "4"])?;
    super::proc::survives_emfile(run, &mut server)
}

// ---------------------------------------------------------------- exercise 11

/// epoll's EPOLLOUT bit: what mio's Interest::WRITABLE registers.
const EPOLLOUT: u32 = 0x004;

/// The event masks of the server's connections (every registration but the
/// listener's, Token(0)), read from /proc/PID/fdinfo of its epoll fd.
fn conn_masks(pid: u32) -> Vec<u32> {
    super::proc::epoll_registrations(pid)
        .unwrap_or_default()
        .into_iter()
        .filter(|&(_, _, token)| token != 0)
        .map(|(_, mask, _)| mask)
        .collect()
}

/// Wait (at most `d`) until the connections' registrations satisfy `ok`.
fn wait_masks(pid: u32, d: Duration, ok: impl Fn(&[u32]) -> bool) -> Result<(), Vec<u32>> {
    let deadline = std::time::Instant::now() + d;
    loop {
        let m = conn_masks(pid);
        if ok(&m) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(m);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn show_masks(m: &[u32]) -> String {
    if m.is_empty() {
        return "no connection registered at all".into();
    }
    let v: Vec<String> = m
        .iter()
        .map(|&x| {
            if x & EPOLLOUT != 0 {
                format!("{x:#x} (READABLE and WRITABLE)")
            } else {
                format!("{x:#x} (no WRITABLE)")
            }
        })
        .collect();
    v.join(", ")
}

/// An idle connection with nothing to send must not be registered for
/// WRITABLE: observed in the kernel's epoll table, not trusted from the code.
fn idle_not_writable(run: &mut Run, pid: u32, when: &str) -> Check {
    run.step(format!(
        "{when}: A has nothing to send, so its registration (in /proc/PID/fdinfo of your epoll fd) must not ask for WRITABLE"
    ));
    let idle = |m: &[u32]| !m.is_empty() && m.iter().all(|x| x & EPOLLOUT == 0);
    // Settled (a last writable event may still be on its way), and then
    // staying so: a loop that re-registers WRITABLE after each event shows
    // it within a moment of the echo.
    wait_masks(pid, Duration::from_secs(2), idle)
        .and_then(|()| {
            let until = std::time::Instant::now() + Duration::from_millis(300);
            while std::time::Instant::now() < until {
                let m = conn_masks(pid);
                if !idle(&m) {
                    return Err(m);
                }
                thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        })
    .map_err(|m| {
        fail(
            "A registered for READABLE only (EPOLLIN, no EPOLLOUT)",
            format!("its epoll events mask: {}", show_masks(&m)),
            "register WRITABLE only while conn.out holds bytes: a socket is writable almost always, so \
             interest in WRITABLE with nothing to write wakes the loop for nothing; interest() must \
             return READABLE alone when out is empty",
        )
    })
}

pub fn ex11_mio_writable(run: &mut Run) -> Check {
    const BIG: usize = 32 << 20;
    let mut server = Server::start(run, &[])?;

    run.step("client A is echoed");
    let mut a = connect(server.addr)?;
    expect_echo(
        &mut a,
        b"hello\n",
        "read until WouldBlock, queue the bytes in out, flush",
    )?;
    idle_not_writable(run, server.pid(), "after the echo")?;

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

    run.step("while A's echo is stuck, its registration asks for WRITABLE (EPOLLOUT)");
    wait_masks(server.pid(), Duration::from_secs(5), |m| {
        m.iter().any(|x| x & EPOLLOUT != 0)
    })
    .map_err(|m| {
        let unread = a
            .local_addr()
            .ok()
            .and_then(|me| super::proc::tcp_rx_queue(server.addr, me))
            .unwrap_or(0);
        fail(
            "A registered for READABLE and WRITABLE while its echo waits in out",
            format!(
                "its epoll events mask: {}{}",
                show_masks(&m),
                if unread > 0 {
                    format!("; {unread} bytes from A unread in your socket's receive queue")
                } else {
                    String::new()
                }
            ),
            if m.is_empty() {
                "A's connection is gone: a write that returns WouldBlock is not an error, the client \
                 is just not reading yet. Keep the rest in out and wait for WRITABLE"
            } else if unread > 0 {
                "bytes from A wait unread in your socket, and edge-triggered epoll announces new \
                 bytes only: on a readable event, read until WouldBlock, or the rest is never read"
            } else {
                "the rest of a short write waits for a writable event, and mio only reports what you \
                 register for: register WRITABLE while out is not empty"
            },
        )
    })?;

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

    idle_not_writable(run, server.pid(), "the echo all sent")?;

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
    super::proc::survives_emfile(run, &mut server)?;
    Ok(())
}

// ---------------------------------------------------------------- exercise 13

/// cpu_work's arithmetic, a step of 1000 iterations of the LCG at once (an
/// affine map composed with itself 1000 times).
fn lcg_step_1000() -> (u64, u64) {
    let (a, c) = (6_364_136_223_846_793_005u64, 1_442_695_040_888_963_407u64);
    let (mut ma, mut mc) = (1u64, 0u64);
    for _ in 0..1000 {
        // x -> a*(ma*x + mc) + c
        ma = a.wrapping_mul(ma);
        mc = a.wrapping_mul(mc).wrapping_add(c);
    }
    (ma, mc)
}

/// Is `x` a value cpu_work can return: the LCG from 1 after k blocks of
/// 1000 iterations, k >= 1? (Searched up to 2*10^8 blocks: far beyond what
/// 2 s of work reach.)
fn is_cpu_work_result(x: u64) -> bool {
    let (ma, mc) = lcg_step_1000();
    let mut v = 1u64;
    for _ in 0..200_000_000u64 {
        v = ma.wrapping_mul(v).wrapping_add(mc);
        if v == x {
            return true;
        }
    }
    false
}

const WORK_MS: u64 = 2000;

pub fn ex13_rayon_offload(run: &mut Run) -> Check {
    let mut server = Server::start(run, &[])?;

    run.step("client A is echoed");
    let mut a = connect(server.addr)?;
    expect_echo(&mut a, b"hello\n", "lines other than `work MS` are echoed")?;

    run.step(format!(
        "A asks for {WORK_MS} ms of CPU work (\"work {WORK_MS}\") and is told \"started\""
    ));
    send(&mut a, format!("work {WORK_MS}\n").as_bytes())?;
    let asked = std::time::Instant::now();
    expect_bytes(
        &mut a,
        b"started\n",
        "answer `started` before the work begins, as the starter does",
    )?;

    // A's answer is awaited on a thread of its own, timed, with a deadline:
    // no single look decides anything.
    let mut a_reader = a
        .try_clone()
        .map_err(|e| fail("a socket handle", e.to_string(), ""))?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while !got.ends_with(b"\n") && std::time::Instant::now() < deadline {
            let (more, end) = read_upto(&mut a_reader, 1, Duration::from_millis(500));
            got.extend_from_slice(&more);
            if matches!(end, End::Eof | End::Reset(_)) {
                break;
            }
        }
        let _ = tx.send((got, std::time::Instant::now()));
    });

    run.step(
        "while A's work runs, client B says \"ping\": B must be echoed before A's answer comes",
    );
    let mut b = connect(server.addr)?;
    send(&mut b, b"ping\n")?;
    let pinged = std::time::Instant::now();
    let (got_b, _) = read_upto(&mut b, 5, Duration::from_secs(8));
    let b_at = std::time::Instant::now();
    let a_answer = rx.recv_timeout(Duration::from_secs(15)).ok();
    let a_at = a_answer.as_ref().map(|(_, at)| *at);
    // Before A's answer, and well within the work's time: a loop held by
    // the work would have answered B only when the work was done.
    let b_first = got_b == b"ping\n"
        && a_at.is_none_or(|a_at| b_at < a_at)
        && b_at - pinged < Duration::from_millis(WORK_MS / 2);
    if !b_first {
        return Err(fail(
            format!("\"ping\\n\" back at once, while A's {WORK_MS} ms of work are still running"),
            if got_b == b"ping\n" {
                format!(
                    "\"ping\\n\", but {:.1} s after B sent it ({:.1} s after A asked{})",
                    (b_at - pinged).as_secs_f64(),
                    (b_at - asked).as_secs_f64(),
                    if a_at.is_some_and(|a_at| a_at <= b_at) {
                        ", after A's answer"
                    } else {
                        ""
                    }
                )
            } else {
                crate::harness::describe(&got_b)
            },
            "B had to wait for A's work: it ran on, or blocked, the loop's only thread. Hand it to \
             rayon::spawn and await a tokio::sync::oneshot: tokio::spawn is not enough on one thread, \
             and a blocking recv() holds the thread just the same",
        ));
    }

    run.step(format!(
        "A's answer \"done X\": not before the {WORK_MS} ms of work could be done, and X what cpu_work returns"
    ));
    let Some((got_a, a_at)) = a_answer else {
        return Err(fail(
            "a line \"done X\"",
            "nothing within 15 s",
            "send the worker's result back through the oneshot and write it",
        ));
    };
    let after = a_at - asked;
    let text = String::from_utf8_lossy(&got_a).into_owned();
    let value = text
        .trim_end()
        .strip_prefix("done ")
        .and_then(|v| v.parse::<u64>().ok());
    let Some(value) = value else {
        return Err(fail(
            "a line \"done X\", X a number",
            crate::harness::describe(&got_a),
            "send the worker's result back through the oneshot and write it",
        ));
    };
    if after < Duration::from_millis(WORK_MS) {
        return Err(fail(
            format!("\"done X\" no sooner than {WORK_MS} ms after the request"),
            format!(
                "{} after {} ms",
                crate::harness::show(&got_a),
                after.as_millis()
            ),
            "the answer came before the work could have finished: the task did not wait for the \
             worker's result. Send cpu_work's value through the oneshot from inside rayon::spawn, and \
             `rx.await` it: a try_recv() or a default value answers at once, with no result",
        ));
    }
    if !is_cpu_work_result(value) {
        return Err(fail(
            "X, a value cpu_work returns",
            format!(
                "{} (cpu_work can never return {value})",
                crate::harness::show(&got_a)
            ),
            "return the value cpu_work(ms) computed on the rayon thread, as it is",
        ));
    }
    drop((a, b));
    super::proc::survives_emfile(run, &mut server)
}
