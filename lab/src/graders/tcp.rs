//! Graders for the blocking TCP exercises: 1 (the bare echo server) and
//! 2 (a client with timeouts and a one-line error).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use crate::harness::describe_status;
use crate::harness::{
    Check, Run, Server, connect, echo_big_on, expect_echo, expect_eof, fail, pattern, read_upto,
    run_with_deadline, show,
};

const WHY_NO_ECHO: &str =
    "handle must read, then write back exactly the n bytes read returned, in a loop";

/// The first echo, and when nothing comes back, why: a server that answers
/// only once we close our side is waiting for end of stream.
fn first_echo(c: &mut TcpStream, msg: &[u8]) -> Check {
    let Err(f) = expect_echo(c, msg, WHY_NO_ECHO) else {
        return Ok(());
    };
    if !f.got.starts_with("nothing within") {
        return Err(f);
    }
    let _ = c.shutdown(Shutdown::Write);
    let (late, _) = read_upto(c, msg.len(), Duration::from_secs(3));
    if late == msg {
        return Err(fail(
            f.expected,
            format!(
                "nothing while the connection was open; {} only after we closed our sending side (FIN)",
                show(&late)
            ),
            "your server waits for the end of the stream before it answers: read_to_end and \
             read_to_string return only at EOF, and a client waiting for its echo never sends one. \
             Call read, which returns what has arrived so far, and write that back",
        ));
    }
    Err(f)
}

pub fn ex01_tcp_echo(run: &mut Run) -> Check {
    let mut server = Server::start(run, &[])?;
    let addr = server.addr;

    run.step("connect, send \"hello\\n\", read the echo");
    let mut c = connect(addr)?;
    first_echo(&mut c, b"hello\n")?;

    run.step("send a second line on the same connection");
    expect_echo(
        &mut c,
        b"and a second one\n",
        "after one echo, go round the loop and read again",
    )?;

    run.step("send 100000 bytes at once (more than one read's worth) and read them back");
    echo_big_on(
        &mut c,
        &pattern(100_000, 1),
        "a read returns at most the buffer's 1024 bytes: keep looping until read returns 0",
    )?;

    run.step("close our sending side (FIN): your server should close too");
    expect_eof(
        &mut c,
        Duration::from_secs(3),
        "when read returns Ok(0) the client has finished: return from handle, which closes the stream. \
         A loop that ignores Ok(0) spins forever",
    )?;
    drop(c);

    run.step("a new client is served after the first one left");
    let mut c2 = connect(addr)?;
    expect_echo(
        &mut c2,
        b"next client\n",
        "the accept loop must go on after a client leaves",
    )?;
    drop(c2);

    super::proc::survives_emfile(run, &mut server)?;

    crate::loadgen::check(
        run,
        addr,
        &[
            "--framing",
            "raw",
            "--cases",
            "echo-sizes,one-byte-at-a-time,pipelined,half-close,reset-mid-frame",
        ],
        &|case| match case {
            "reset-mid-frame" => {
                "a client's reset must end that client only: log the error and accept the next"
                    .into()
            }
            _ => WHY_NO_ECHO.into(),
        },
    )?;
    drop(server);
    Ok(())
}

// ---------------------------------------------------------------- exercise 2

/// A correct line echo server on port 0, in a thread, for one client.
fn lab_echo_server() -> std::io::Result<std::net::SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
    Ok(addr)
}

/// A server that accepts and never says a word (the client must time out).
fn lab_silent_server() -> std::io::Result<(std::net::SocketAddr, TcpListener)> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    // The kernel completes the handshake for us (backlog): no accept needed,
    // the client's connect succeeds and its read then waits forever.
    Ok((addr, l))
}

/// A server whose accept queue is full: a listen backlog of 0 holds one
/// connection the program never accepts; we make it, and the next SYN is
/// dropped by the kernel, so a client's connect gets no answer at all and
/// waits for its SYN retries (about two minutes) unless it set a timeout.
fn lab_full_queue_server() -> std::io::Result<(std::net::SocketAddr, TcpListener, Vec<TcpStream>)> {
    use std::os::fd::AsRawFd;
    let l = TcpListener::bind("127.0.0.1:0")?;
    // SAFETY: listen() on a socket we own; a second listen changes the backlog.
    if unsafe { libc::listen(l.as_raw_fd(), 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let addr = l.local_addr()?;
    let mut held = Vec::new();
    for _ in 0..16 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(s) => held.push(s),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Ok((addr, l, held)),
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("the accept queue never filled"))
}

/// A port nothing listens on: bind one, note it, close it.
fn closed_port() -> std::io::Result<std::net::SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    l.local_addr()
}

fn one_error_line(stderr: &str) -> Result<String, String> {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    if let Some(i) = lines.iter().position(|l| l.contains("panicked")) {
        // Since Rust 1.73 the panic's message is on the line after "panicked at".
        let msg = lines
            .get(i + 1)
            .map(|m| format!(" {}", m.trim()))
            .unwrap_or_default();
        return Err(format!("a panic: {}{msg}", lines[i].trim()));
    }
    match lines.as_slice() {
        [one] => Ok(one.trim().to_string()),
        [] => Err("nothing on stderr".into()),
        many => Err(format!(
            "{} lines on stderr, starting {:?}",
            many.len(),
            many[0]
        )),
    }
}

pub fn ex02_tcp_client(run: &mut Run) -> Check {
    let deadline = Duration::from_secs(8);
    let io = |e: std::io::Error| fail("the grader to set up", e.to_string(), "");
    let bin = run.bin.clone();
    let args = |addr: std::net::SocketAddr, msg: &str| {
        vec!["--addr".to_string(), addr.to_string(), msg.to_string()]
    };

    run.step("run your client against an echo server: --addr ADDR hello");
    let addr = lab_echo_server().map_err(io)?;
    let ran = run_with_deadline(&bin, &args(addr, "hello"), deadline).map_err(io)?;
    if ran.status.is_none() {
        return Err(fail(
            "the client to print the echo and exit",
            format!(
                "it was still running after 8 s, so it was killed; it had printed {} on stdout",
                show(ran.stdout.as_bytes())
            ),
            "the echo server keeps the connection open after its reply, as servers do: read one line \
             (read_line stops at the \\n); read_to_string and read_to_end wait for the server's FIN, \
             which never comes",
        ));
    }
    if ran.stdout != "hello\n" || !ran.status.is_some_and(|s| s.success()) {
        return Err(fail(
            "\"hello\\n\" on stdout and exit status 0",
            format!(
                "{:?} on stdout, {}{}",
                ran.stdout,
                crate::harness::describe_status(ran.status),
                if ran.stderr.is_empty() {
                    String::new()
                } else {
                    format!(", stderr: {}", ran.stderr.trim())
                }
            ),
            if ran.stdout.is_empty()
                && [
                    "timed out",
                    "WouldBlock",
                    "os error 11",
                    "temporarily unavailable",
                ]
                .iter()
                .any(|w| ran.stderr.contains(w))
            {
                "your client timed out though the server had answered: the echo server keeps the \
                 connection open after its reply, as servers do. Read one line (read_line stops at the \
                 \\n); read_to_string and read_to_end wait for the server's FIN, which never comes"
            } else {
                "print exactly the line the server sent back"
            },
        ));
    }

    run.step("run your client against a port where nothing listens");
    let addr = closed_port().map_err(io)?;
    let ran = run_with_deadline(&bin, &args(addr, "hello"), deadline).map_err(io)?;
    if ran.status.is_none() {
        return Err(fail(
            "one line on stderr and a non-zero exit",
            "still running after 8 s, so it was killed",
            "connect fails at once with ConnectionRefused: report it and exit",
        ));
    }
    let line = one_error_line(&ran.stderr);
    match (&line, ran.status.is_some_and(|s| s.success())) {
        (Ok(l), false) if l.to_lowercase().contains("refused") => {}
        (Ok(l), _) => {
            return Err(fail(
                "exit status 1 and one line on stderr that says the connection was refused",
                format!("{l:?}, {}", crate::harness::describe_status(ran.status)),
                "print one line like `error: connecting to ADDR: connection refused` and exit with status 1",
            ));
        }
        (Err(e), _) => {
            return Err(fail(
                "exit status 1 and one line on stderr that says the connection was refused",
                e.clone(),
                "no unwrap on what the network can make fail: match the Err, print one line, \
                 std::process::exit(1)",
            ));
        }
    }

    run.step("run your client against a server that accepts and never answers");
    let (addr, _keep) = lab_silent_server().map_err(io)?;
    let ran = run_with_deadline(&bin, &args(addr, "hello"), deadline).map_err(io)?;
    let Some(status) = ran.status else {
        return Err(fail(
            "the client to give up within a few seconds, with one line saying it timed out",
            "your client was still waiting after 8 s, so it was killed",
            "a read waits forever by default: set_read_timeout(Some(..)) before reading",
        ));
    };
    match one_error_line(&ran.stderr) {
        Ok(l) if !status.success() && l.to_lowercase().contains("timed out") => {
            full_queue_step(run, &bin, deadline)
        }
        Ok(l) => Err(fail(
            "exit status 1 and one line on stderr saying the read timed out",
            format!("{l:?}, {}", crate::harness::describe_status(Some(status))),
            if l.contains("temporarily unavailable") || l.contains("os error 11") {
                "on Unix a read timeout comes back as ErrorKind::WouldBlock (EAGAIN, \"Resource temporarily \
                 unavailable\"): match WouldBlock and TimedOut and say \"timed out\""
            } else {
                "say \"timed out\" so the user knows the server did not answer"
            },
        )),
        Err(e) => Err(fail(
            "exit status 1 and one line on stderr saying the read timed out",
            e,
            "no unwrap on what the network can make fail",
        )),
    }
}

/// The connect itself gets no answer: the server's accept queue is full.
fn full_queue_step(run: &mut Run, bin: &std::path::Path, deadline: Duration) -> Check {
    run.step(
        "run your client against a server whose accept queue is full (its SYN gets no answer)",
    );
    let io = |e: std::io::Error| fail("the grader to set up", e.to_string(), "");
    let (addr, _l, _held) = lab_full_queue_server().map_err(io)?;
    let args = vec!["--addr".to_string(), addr.to_string(), "hello".to_string()];
    let ran = run_with_deadline(bin, &args, deadline).map_err(io)?;
    let Some(status) = ran.status else {
        return Err(fail(
            "the client to give up at its connect timeout, with one line saying it timed out",
            "your client was still waiting after 8 s, so it was killed",
            "TcpStream::connect waits for the kernel's SYN retries, about two minutes, when nobody \
             answers: use TcpStream::connect_timeout(&addr, d)",
        ));
    };
    match one_error_line(&ran.stderr) {
        Ok(l) if !status.success() && l.to_lowercase().contains("timed out") => Ok(()),
        Ok(l) => Err(fail(
            "exit status 1 and one line on stderr saying the connection timed out",
            format!("{}, {}", show(l.as_bytes()), describe_status(Some(status))),
            "connect_timeout fails with ErrorKind::TimedOut: say \"timed out\"",
        )),
        Err(e) => Err(fail(
            "exit status 1 and one line on stderr saying the connection timed out",
            format!("{e}, {}", describe_status(Some(status))),
            "no unwrap on what the network can make fail",
        )),
    }
}
