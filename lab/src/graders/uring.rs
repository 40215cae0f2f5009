//! Grader for exercise 14: an io_uring echo that must resubmit short sends.
//! The program keeps the kernel's send buffer small (8 KiB, less than one
//! recv's 16 KiB), and a client here writes 4 MiB before it reads a byte:
//! the server's send buffer fills, its sends come back short, and a server
//! that treats a short send as done (or gives up after one) cannot return
//! every byte in order.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::harness::{
    Check, End, Fail, Run, Server, connect, expect_echo, expect_eof, fail, read_upto,
};

/// Bytes the slow reader sends before reading anything.
const BIG: usize = 4 << 20;

/// Not periodic (the harness's `pattern` repeats every 26 bytes, so a loss
/// of 26·k bytes would go unseen): byte `i` from a multiplicative hash of `i`.
fn payload(len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
        .collect()
}

/// `Some(why)` where this kernel refuses io_uring (seccomp, the
/// `kernel.io_uring_disabled` sysctl, an old kernel): the exercise cannot
/// run here.
fn uring_refused() -> Option<String> {
    // struct io_uring_params is 120 bytes; zeroed asks for a plain ring.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup(2) writes at most sizeof(io_uring_params) into
    // `params`, which outlives the call.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 2u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Some(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: `fd` is the ring just created, owned by nobody else.
    unsafe { libc::close(fd as libc::c_int) };
    None
}

/// A client socket whose receive buffer is small (4 KiB asked, about 8 KiB
/// given) from before `connect`, so the window it advertises stays small:
/// with the kernel's autotuning, a client that does not read could soak up
/// all 4 MiB of echo and the server's sends would never be short. (Set
/// after `connect` instead, loopback's 64 KiB segments overflow the buffer,
/// get dropped and are retransmitted with backoff.)
fn connect_small_window(addr: SocketAddr) -> Result<TcpStream, Fail> {
    let SocketAddr::V4(v4) = addr else {
        return connect(addr);
    };
    let os_err = |what: &str| {
        fail(
            what.to_string(),
            std::io::Error::last_os_error().to_string(),
            "",
        )
    };
    // SAFETY: socket(2) takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(os_err("a TCP socket"));
    }
    // SAFETY: `fd` was just created and nothing else owns it; the stream
    // closes it on every path below.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let size: libc::c_int = 4096;
    // SAFETY: setsockopt reads one c_int from `size`, which outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(os_err("SO_RCVBUF set on our socket"));
    }
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: connect(2) reads a sockaddr_in of the size given, from `sin`,
    // which outlives the call.
    let rc = unsafe {
        libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(os_err("to connect to your server"));
    }
    Ok(stream)
}

const SHORT_DONE: &str = "a SEND that completes with fewer bytes than asked took only part: add res to \
     sent and submit another SEND for buf[sent..len] (Next::SendRest). Treating a short send as done \
     loses the rest, and the next RECV overwrites it";
const SHORT_CLOSE: &str = "a short SEND is normal (the client is slow, the kernel's send buffer is full), \
     not an error: submit the rest (Next::SendRest). Closing the connection after a short send loses \
     the tail of the echo";

pub fn ex14_uring_short_sends(run: &mut Run) -> Check {
    if let Some(why) = uring_refused() {
        run.step("io_uring available on this kernel");
        run.note(&format!(
            "skipped: io_uring is refused here ({why}); this exercise needs Linux 5.6+ without a seccomp block"
        ));
        return Ok(());
    }
    let server = Server::start(run, &[])?;

    run.step("client A is echoed, twice on one connection");
    let mut a = connect(server.addr)?;
    expect_echo(
        &mut a,
        b"hello\n",
        "the loop receives, then sends buf[..len]; on_sent says what follows",
    )?;
    expect_echo(
        &mut a,
        b"again\n",
        "once a SEND has taken every byte (sent == len), receive again: Next::Recv. Next::Close ends the echo",
    )?;

    run.step(format!(
        "B writes {} MiB and reads nothing until its writes stall (the server's sends come back short), then reads it all",
        BIG >> 20
    ));
    let mut b = connect_small_window(server.addr)?;
    let data = payload(BIG);
    let mut w = b
        .try_clone()
        .map_err(|e| fail("a second handle on the socket", e.to_string(), ""))?;
    let (tx, rx) = mpsc::channel();
    let sent = data.clone();
    thread::spawn(move || {
        let result = w
            .write_all(&sent)
            .and_then(|()| w.shutdown(std::net::Shutdown::Write));
        let _ = tx.send(result.map_err(|e| e.to_string()));
    });
    // Either every byte is in the kernels' buffers already, or the writes
    // are stuck because nobody reads: both leave the server's send buffer
    // full, so its sends are coming back short by now.
    if let Ok(Err(e)) = rx.recv_timeout(Duration::from_secs(2)) {
        return Err(fail(
            format!("to send all {BIG} bytes"),
            format!("the server closed the connection while we were sending: {e}"),
            SHORT_CLOSE,
        ));
    }
    let (got, end) = read_upto(&mut b, BIG, Duration::from_secs(20));
    if got != data {
        let _ = b.shutdown(std::net::Shutdown::Both);
        let same = got.iter().zip(&data).take_while(|(x, y)| x == y).count();
        let (got_text, why) = if same < got.len() {
            (
                format!(
                    "{} bytes, differing from what was sent at offset {same}: bytes were skipped",
                    got.len()
                ),
                SHORT_DONE,
            )
        } else {
            match end {
                End::Eof | End::Reset(_) => (
                    format!("{same} bytes, then the server closed the connection"),
                    SHORT_CLOSE,
                ),
                _ => (format!("{same} bytes, then nothing for 20 s"), SHORT_DONE),
            }
        };
        return Err(fail(
            format!("all {BIG} bytes back, in order"),
            got_text,
            why,
        ));
    }

    run.step("B's FIN: every byte was echoed, the server closes");
    expect_eof(
        &mut b,
        Duration::from_secs(5),
        "a RECV that completes with 0 is the client's FIN: close (Next::Close)",
    )?;
    drop(b);
    drop(a);

    crate::loadgen::check(
        run,
        server.addr,
        &[
            "--framing",
            "raw",
            "--cases",
            "echo-sizes,one-byte-at-a-time,pipelined,half-close",
        ],
        &|_case| format!("{SHORT_DONE}; and the same for a RECV's result"),
    )?;
    Ok(())
}
