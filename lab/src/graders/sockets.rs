//! Graders for the book's chapter 2 (what a socket is): exercise 17, one
//! dual-stack listening socket for IPv4 and IPv6 clients that names the
//! family each client really used.
//!
//! The situation that exposes a wrong answer is made with two real clients
//! on the two loopbacks: one from ::1, one from 127.0.0.1, to the port the
//! program announced for `--addr [::]:0`. A socket bound to 0.0.0.0 refuses
//! the first, an IPV6_V6ONLY socket the second, and a server that trusts
//! the IPv4-mapped address accept() returns calls the second one IPv6.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{Check, End, Fail, Run, describe, fail, read_upto};

/// The student's program, started with arguments of our choice (the
/// harness's `Server` always passes 127.0.0.1), killed when dropped.
struct Program(Child);

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `bin args` and wait (at most 10 s) for `listening on ADDR`.
fn start(run: &mut Run, args: &[&str]) -> Result<(Program, SocketAddr), Fail> {
    run.step(format!("start your program with {}", args.join(" ")));
    let mut child = Command::new(&run.bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| fail("the program to start", e.to_string(), "is it built?"))?;
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    let program = Program(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(addr) = common::net::parse_announce(&line) {
                    return Ok((program, addr));
                }
            }
            // The reader ends at EOF on stdout: the program exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(fail(
                    "a line `listening on [::]:PORT` on stdout",
                    "the program exited without it",
                    "bind and listen can fail (is the address right?); main prints the address after listen",
                ));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(fail(
                    "a line `listening on [::]:PORT` on stdout within 10 s",
                    "nothing; the program was killed",
                    "main prints the address after listen, as in the starter",
                ));
            }
        }
    }
}

/// Connect from `ip` to the program's port and read its greeting (it
/// closes after one line). `refused_why` explains a refusal.
fn greeting_for(ip: IpAddr, port: u16, refused_why: &str) -> Result<(SocketAddr, String), Fail> {
    let to = SocketAddr::new(ip, port);
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3)).map_err(|e| {
        fail(
            format!("to connect to {to}"),
            format!("connect failed: {e}"),
            refused_why,
        )
    })?;
    let me = s
        .local_addr()
        .map_err(|e| fail("the grader to set up", e.to_string(), ""))?;
    let wait = Duration::from_secs(3);
    let (got, end) = read_upto(&mut s, 200, wait);
    if end == End::Timeout && !got.ends_with(b"\n") {
        return Err(fail(
            "one line, then the connection closed",
            format!("{}, then nothing for {} s", describe(&got), wait.as_secs()),
            "write the greeting and a newline, then drop the stream",
        ));
    }
    Ok((me, String::from_utf8_lossy(&got).into_owned()))
}

pub fn ex17_dual_stack(run: &mut Run) -> Check {
    let (_program, announced) = start(run, &["--addr", "[::]:0"])?;
    let port = announced.port();
    let only_v4 = announced.is_ipv4();

    run.step("connect from ::1 (IPv6) and read the greeting");
    let (me, line) = greeting_for(
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        port,
        &if only_v4 {
            format!(
                "your server listens on IPv4 only (it said listening on {announced}): \
                 an AF_INET socket bound to 0.0.0.0 never hears IPv6 clients; \
                 make an AF_INET6 socket and bind the [::] you were given"
            )
        } else {
            "a socket bound to [::] takes IPv6 clients: bind the address --addr gave".to_string()
        },
    )?;
    let want = format!("IPv6 {me}\n");
    if line != want {
        return Err(fail(
            describe(want.as_bytes()),
            describe(line.as_bytes()),
            "one line: the family (IPv4 or IPv6), a space, the client's address and port as \
             SocketAddr prints it, then a newline",
        ));
    }

    run.step("connect from 127.0.0.1 (IPv4) to the same port and read the greeting");
    let (me, line) = greeting_for(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        port,
        "your [::] socket takes IPv6 clients only: IPV6_V6ONLY is on (the default on Windows \
         and the BSDs, or set by you); with socket2, set_only_v6(false) before bind",
    )?;
    let want = format!("IPv4 {me}\n");
    if line != want {
        let mapped = SocketAddr::new(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()), me.port());
        let why = if line.contains("::ffff:") {
            format!(
                "this client used IPv4: a dual-stack socket shows it as the IPv4-mapped address \
                 {mapped}; IpAddr::to_canonical gives back the IPv4 address it is"
            )
        } else {
            "the family the client really used, then its address: IPv4 127.0.0.1:PORT".to_string()
        };
        return Err(fail(
            describe(want.as_bytes()),
            describe(line.as_bytes()),
            why,
        ));
    }
    Ok(())
}
