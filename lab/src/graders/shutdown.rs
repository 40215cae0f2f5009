//! Grader for exercise 12, graceful shutdown.
//!
//! To put lines in the server's kernel receive queue that the server has
//! certainly not read yet when shutdown begins, without racing it, the
//! grader freezes the server (SIGSTOP), sends, queues SIGTERM, and thaws it
//! (SIGCONT): the kernel keeps receiving for a stopped process, so shutdown
//! starts with the lines sitting unread in the queue. Event-based, no sleep.

use std::time::{Duration, Instant};

use crate::harness::{
    Check, End, Run, Server, connect, describe_status, expect_echo, fail, read_upto, send,
};

const GRACE_MS: u64 = 2000;
const LINES: usize = 2000;

pub fn ex12_graceful_shutdown(run: &mut Run) -> Check {
    let grace = GRACE_MS.to_string();
    let mut server = Server::start(run, &["--grace-ms", &grace])?;
    super::proc::survives_emfile(run, &mut server)?;

    run.step("client A is echoed (the server is now serving A)");
    let mut a = connect(server.addr)?;
    expect_echo(
        &mut a,
        b"hello\n",
        "echo lines as they come, as the starter does",
    )?;

    run.step(format!(
        "freeze the server (SIGSTOP), A sends {LINES} lines, SIGTERM, thaw (SIGCONT): shutdown starts with them unread"
    ));
    let mut input = Vec::new();
    for i in 0..LINES {
        input.extend_from_slice(format!("line {i:04}\n").as_bytes());
    }
    server.signal(libc::SIGSTOP);
    // 20 KB: the kernel's receive buffer takes it all while the server sleeps.
    let sent = send(&mut a, &input);
    server.signal(libc::SIGTERM);
    server.signal(libc::SIGCONT);
    sent?;

    run.step(format!(
        "A reads: all {LINES} lines echoed, then the server's FIN"
    ));
    let (got, end) = read_upto(
        &mut a,
        input.len() + 1,
        Duration::from_secs(GRACE_MS / 1000 + 3),
    );
    let lines = got.iter().filter(|&&b| b == b'\n').count();
    if got.len() > input.len() || got[..] != input[..got.len()] {
        return Err(fail(
            format!("the {LINES} lines back, in order"),
            format!("{} bytes that differ from what was sent", got.len()),
            "echo each line once, in order",
        ));
    }
    match end {
        End::Eof if got.len() == input.len() => {}
        End::Eof | End::Reset(_) => {
            let how = match &end {
                End::Reset(e) => format!("then the connection was reset ({e})"),
                _ => "then the connection closed".into(),
            };
            return Err(fail(
                format!("all {LINES} lines, then FIN"),
                format!("{lines} of {LINES} lines, {how}"),
                "on shutdown, echo every line already received, including those still in the kernel's \
                 receive queue: read without waiting (set_nonblocking(true)) until WouldBlock, echo them, \
                 and only then shutdown(Write). Dropping a socket with unread input sends a RST",
            ));
        }
        _ if got.len() == input.len() => {
            return Err(fail(
                format!("after the {LINES} lines, FIN (our read returns 0)"),
                format!("the connection still open after {} s", GRACE_MS / 1000 + 3),
                "after the last echo, say \"no more from me\": stream.shutdown(Shutdown::Write)",
            ));
        }
        _ => {
            return Err(fail(
                format!("all {LINES} lines"),
                format!("{lines} lines, then nothing"),
                "echo every line already received, without waiting for new ones",
            ));
        }
    }

    run.step("A closes: the server exits, status 0");
    drop(a);
    match server.wait_exit(Duration::from_secs(GRACE_MS / 1000 + 3)) {
        Some(s) if s.success() => {}
        Some(s) => {
            return Err(fail(
                "exit status 0",
                format!("{}{}", describe_status(Some(s)), server.stderr_tail()),
                "a shutdown on request is a success: return Ok(()) from main",
            ));
        }
        None => {
            return Err(fail(
                "the server to exit once its client is done",
                "still running",
                "after finish, leave the accept loop: it checks the flag",
            ));
        }
    }
    drop(server);

    let mut server = Server::start(run, &["--grace-ms", &grace])?;
    run.step("client B is echoed, then stays connected and never closes");
    let mut b = connect(server.addr)?;
    expect_echo(&mut b, b"B\n", "echo lines as they come")?;

    run.step(format!(
        "SIGTERM: with B never closing, the server must still exit within --grace-ms {GRACE_MS} (+1 s)"
    ));
    let t = Instant::now();
    server.signal(libc::SIGTERM);
    match server.wait_exit(Duration::from_millis(GRACE_MS + 1000)) {
        Some(s) if s.success() => {}
        Some(s) => {
            return Err(fail(
                "exit status 0",
                format!("{}{}", describe_status(Some(s)), server.stderr_tail()),
                "a shutdown on request is a success",
            ));
        }
        None => {
            return Err(fail(
                format!(
                    "the server gone {:.1} s after SIGTERM",
                    (GRACE_MS + 1000) as f64 / 1000.0
                ),
                format!("still running after {:.1} s", t.elapsed().as_secs_f64()),
                "a client that never closes must not keep your server alive past --grace: wait for its FIN \
                 only until the deadline (set_read_timeout with the time left), then close",
            ));
        }
    }
    run.step("B saw the server's FIN");
    let (_, end) = read_upto(&mut b, usize::MAX, Duration::from_secs(1));
    if !matches!(end, End::Eof) {
        return Err(fail(
            "FIN (read returns 0)",
            format!("{end:?}"),
            "shutdown(Write) before closing, so the client learns the server is done",
        ));
    }
    drop((b, server));
    trickling_client(run, &grace)
}

/// A client that goes on sending after SIGTERM, a byte every 100 ms: the
/// server must keep reading (no RST while the client talks, within the
/// grace period) and still be gone one --grace after the signal, however
/// often a byte arrives.
fn trickling_client(run: &mut Run, grace: &str) -> Check {
    let mut server = Server::start(run, &["--grace-ms", grace])?;
    run.step(
        "client C is echoed, then keeps sending a byte every 100 ms, before and after SIGTERM",
    );
    let mut c = connect(server.addr)?;
    expect_echo(&mut c, b"C\n", "echo lines as they come")?;
    let _ = c.set_nonblocking(true);
    let t = Instant::now();
    server.signal(libc::SIGTERM);
    let (mut fin_at, mut reset_at, mut exit_at) = (None, None, None);
    let mut reset_what = String::new();
    let mut next_byte = Instant::now();
    let end = Duration::from_millis(GRACE_MS + 1000);
    // Past the server's exit too, for a few of C's bytes: a server that
    // left early shows it by the reset they meet.
    while t.elapsed() < end
        && exit_at
            .is_none_or(|(at, _): (Duration, _)| t.elapsed() < at + Duration::from_millis(400))
    {
        if reset_at.is_none() && Instant::now() >= next_byte {
            next_byte += Duration::from_millis(100);
            if let Err(e) = std::io::Write::write(&mut c, b"z")
                && e.kind() != std::io::ErrorKind::WouldBlock
            {
                reset_at = Some(t.elapsed());
                reset_what = e.to_string();
            }
        }
        let mut buf = [0u8; 256];
        match std::io::Read::read(&mut c, &mut buf) {
            Ok(0) if fin_at.is_none() => fin_at = Some(t.elapsed()),
            Err(e)
                if reset_at.is_none()
                    && !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) =>
            {
                reset_at = Some(t.elapsed());
                reset_what = e.to_string();
            }
            _ => {}
        }
        if exit_at.is_none()
            && let Some(s) = server.exited()
        {
            exit_at = Some((t.elapsed(), s));
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    run.step(format!(
        "C, still sending, gets the server's FIN and no reset for the --grace-ms {GRACE_MS} after SIGTERM (give or take 0.5 s)"
    ));
    let early = Duration::from_millis(GRACE_MS.saturating_sub(500));
    if let Some(r) = reset_at.filter(|r| *r < early) {
        return Err(fail(
            format!(
                "the connection open, reading what C sends, until about {:.1} s after SIGTERM",
                GRACE_MS as f64 / 1000.0
            ),
            format!(
                "{}a reset {:.1} s after SIGTERM ({reset_what})",
                match fin_at {
                    Some(f) => format!("the server's FIN at {:.1} s, then ", f.as_secs_f64()),
                    None => String::new(),
                },
                r.as_secs_f64()
            ),
            "after shutdown(Write), go on reading and throwing away what the client sends, until its \
             FIN or the deadline: closing a socket with unread input sends a RST, and the client may \
             lose the echoes still in flight",
        ));
    }
    if let Some((at, _)) = exit_at.filter(|(at, _)| *at < early) {
        return Err(fail(
            format!(
                "the connection open, reading what C sends, until about {:.1} s after SIGTERM",
                GRACE_MS as f64 / 1000.0
            ),
            format!(
                "your server gone {:.1} s after SIGTERM, while C was still sending and had not closed",
                at.as_secs_f64()
            ),
            "after shutdown(Write), go on reading and throwing away what the client sends, until its \
             FIN or the deadline: closing a socket with unread input sends a RST, and the client may \
             lose the echoes still in flight",
        ));
    }
    if fin_at.is_none() {
        return Err(fail(
            "the server's FIN (our read returns 0) soon after SIGTERM",
            match reset_at {
                Some(r) => format!("a reset at {:.1} s ({reset_what}), no FIN", r.as_secs_f64()),
                None => format!("no FIN within {:.1} s", t.elapsed().as_secs_f64()),
            },
            "shutdown(Shutdown::Write) right after the last echo: the client learns at once that \
             nothing more will come",
        ));
    }

    run.step(format!(
        "the server is gone within --grace-ms {GRACE_MS} (+1 s) of SIGTERM, however often C's bytes arrive"
    ));
    match exit_at {
        Some((_, s)) if s.success() => Ok(()),
        Some((_, s)) => Err(fail(
            "exit status 0",
            format!("{}{}", describe_status(Some(s)), server.stderr_tail()),
            "a shutdown on request is a success",
        )),
        None => Err(fail(
            format!("the server gone {:.1} s after SIGTERM", end.as_secs_f64()),
            format!(
                "still running after {:.1} s, while C sent a byte every 100 ms",
                t.elapsed().as_secs_f64()
            ),
            "the grace period is one deadline from the signal, not a timeout per read: a read timeout \
             of `grace` restarts with every byte, so a client that trickles holds the server forever. \
             Compute the deadline once (Instant::now() + grace) and give each read the time LEFT",
        )),
    }
}
