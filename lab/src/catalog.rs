//! The exercises, in course order: where each one lives, the file the
//! student edits, its grader, its hint, and the typical wrong solutions the
//! self-check must see rejected (each with the words its rejection must say).
//!
//! Per exercise NN-name:
//! - `lab/exercises/NN-name/`: the package the student builds; `file` is the
//!   one file they edit, and as committed it is the starter, its only copy
//!   (`lab reset` takes it from git, see `starters.rs`); a library exercise
//!   also has `grader/main.rs`, the driver half of its grader, compiled with
//!   their code; `TASK.zh-CN.md` is the task in Chinese;
//! - `lab/solutions/NN-name/reference.rs`: a correct solution;
//! - `lab/solutions/NN-name/wrong-*.rs`: the typical mistakes.

use crate::graders;
use crate::harness::{Check, Run};

#[derive(Debug)]
pub struct Wrong {
    /// `lab/solutions/NN-name/<file>`.
    pub file: &'static str,
    /// The mistake, in a few words (the self-check prints it).
    pub mistake: &'static str,
    /// The grader's failure message must contain this (case-insensitive).
    pub must_say: &'static str,
}

#[derive(Debug)]
pub struct Exercise {
    pub num: usize,
    pub dir: &'static str,
    pub package: &'static str,
    /// The file the student edits, relative to the exercise directory.
    pub file: &'static str,
    pub title: &'static str,
    /// The chapter crate it belongs to.
    pub chapter: &'static str,
    /// Graded through a driver binary `<package>-grade` built with the
    /// student's code, instead of the student's own program.
    pub driver: bool,
    pub grade: fn(&mut Run) -> Check,
    pub hint: &'static str,
    pub wrongs: &'static [Wrong],
}

impl Exercise {
    pub fn bin_name(&self) -> String {
        if self.driver {
            format!("{}-grade", self.package)
        } else {
            self.package.to_string()
        }
    }
}

pub static EXERCISES: &[Exercise] = &[
    Exercise {
        num: 1,
        dir: "01-tcp-echo",
        package: "ex01-tcp-echo",
        file: "src/main.rs",
        title: "the bare TCP echo server: read, write back exactly what arrived, stop at EOF",
        chapter: "tcp-echo",
        driver: false,
        grade: graders::tcp::ex01_tcp_echo,
        hint: "\
In Python you wrote `data = conn.recv(1024)`, `if not data: break`, `conn.sendall(data)`.
In Rust it is the same three lines inside `loop { }`:
    let n = stream.read(&mut buf)?;      // recv(1024): 1..=1024 bytes, or 0
    if n == 0 { return Ok(()); }         // 0 = the client closed its side
    stream.write_all(&buf[..n])?;        // sendall, and only the n new bytes
`write` (like Python's `send`) may write less than you ask; `write_all` loops.",
        wrongs: &[
            Wrong {
                file: "wrong-whole-buffer.rs",
                mistake: "writes the whole 1024-byte buffer back instead of &buf[..n]",
                must_say: "whole buffer",
            },
            Wrong {
                file: "wrong-ignores-eof.rs",
                mistake: "ignores read returning Ok(0), so it spins forever after the client's FIN",
                must_say: "ignores Ok(0)",
            },
            Wrong {
                file: "wrong-read-to-end.rs",
                mistake: "read_to_end, then one write: nothing is echoed until the client closes",
                must_say: "waits for the end of the stream",
            },
            Wrong {
                file: "wrong-accept-error-ends-server.rs",
                mistake: "`stream?` on accept's error: one EMFILE ends the server",
                must_say: "an accept error is not the end of the server",
            },
        ],
    },
    Exercise {
        num: 2,
        dir: "02-tcp-client",
        package: "ex02-tcp-client",
        file: "src/main.rs",
        title: "a TCP client with timeouts and a one-line error instead of a panic",
        chapter: "tcp-echo",
        driver: false,
        grade: graders::tcp::ex02_tcp_client,
        hint: "\
Three things, all in `run` and `main`:
- `TcpStream::connect_timeout(&addr, d)`, then `stream.set_read_timeout(Some(d))`:
  without it a read waits forever for a server that never answers.
- In `main`, `match run(..)`: on `Err(e)` print ONE line to stderr
  (`eprintln!(\"error: {addr}: {}\", describe(&e))`) and `std::process::exit(1)`.
- On Linux a read timeout is `ErrorKind::WouldBlock` (EAGAIN, \"Resource temporarily
  unavailable\"), not `TimedOut`: match both and say \"timed out\".",
        wrongs: &[
            Wrong {
                file: "wrong-no-timeout.rs",
                mistake: "sets no read timeout, so a silent server hangs the client forever",
                must_say: "still waiting",
            },
            Wrong {
                file: "wrong-raw-error.rs",
                mistake: "prints the raw io::Error, so a timeout reads \"Resource temporarily unavailable\"",
                must_say: "WouldBlock",
            },
            Wrong {
                file: "wrong-no-connect-timeout.rs",
                mistake: "a read timeout but a plain connect: a SYN nobody answers hangs it for minutes",
                must_say: "connect_timeout",
            },
            Wrong {
                file: "wrong-reads-to-end.rs",
                mistake: "read_to_string: waits for the server's FIN, which an echo server never sends",
                must_say: "read_to_string and read_to_end wait for the server's FIN",
            },
        ],
    },
    Exercise {
        num: 3,
        dir: "03-line-decoder",
        package: "ex03-line-decoder",
        file: "src/lib.rs",
        title: "the line decoder, sans-I/O: a read is not a message",
        chapter: "tcp-echo",
        driver: true,
        grade: graders::driver::grade,
        hint: "\
Look for the first b'\\n' in buf (`buf.iter().position(|&b| b == b'\\n')`):
- found at pos: if pos > max it is too long; else take `buf[..pos].to_vec()`,
  then `buf.drain(..=pos)` removes the line and its newline;
- not found: if `buf.len() > max` the peer is sending a line we will never
  accept, `Err(TooLong)`; otherwise `Ok(None)`: wait for more bytes.
Never return bytes that have no newline after them: they are half a line.",
        wrongs: &[
            Wrong {
                file: "wrong-read-is-a-message.rs",
                mistake: "returns whatever is in the buffer as a line (a read is taken for a message)",
                must_say: "a read is not a message",
            },
            Wrong {
                file: "wrong-no-limit.rs",
                mistake: "no length limit: a peer that never sends a newline grows the buffer forever",
                must_say: "over the limit",
            },
            Wrong {
                file: "wrong-cr-ends-line.rs",
                mistake: "a \\r ends a line too: \"a\\rb\\n\" comes out as two lines",
                must_say: "a \\r is an ordinary byte",
            },
            Wrong {
                file: "wrong-strips-cr.rs",
                mistake: "strips the \\r of \\r\\n, which the exercise says the decoder returns",
                must_say: "you removed the \\r",
            },
            Wrong {
                file: "wrong-assumes-utf8.rs",
                mistake: "turns the line into a String: bytes that are not UTF-8 are replaced",
                must_say: "a line is bytes, not text",
            },
            Wrong {
                file: "wrong-limit-before-line.rs",
                mistake: "compares buf.len() with max before looking for a line: a short line followed by a long one is refused",
                must_say: "a complete line at the front is a line",
            },
        ],
    },
    Exercise {
        num: 4,
        dir: "04-length-decoder",
        package: "ex04-length-decoder",
        file: "src/lib.rs",
        title: "the length-prefixed decoder that refuses a huge length before allocating",
        chapter: "tcp-echo",
        driver: true,
        grade: graders::driver::grade,
        hint: "\
In this order:
1. fewer than 4 bytes in buf: Ok(None);
2. len = u32::from_be_bytes(buf[..4]) as usize; if len > max: Err(TooLong) NOW,
   before waiting for the payload and before any Vec::with_capacity(len);
3. fewer than 4 + len bytes: Ok(None);
4. take buf[4..4 + len], drain ..4 + len, Ok(Some(payload)).",
        wrongs: &[
            Wrong {
                file: "wrong-allocates-announced-length.rs",
                mistake: "Vec::with_capacity(announced length) before checking it against max",
                must_say: "asked for 4294967295 bytes",
            },
            Wrong {
                file: "wrong-checks-after-waiting.rs",
                mistake: "checks the length only once the whole frame has arrived, so a huge announcement is waited for",
                must_say: "before waiting for the payload",
            },
            Wrong {
                file: "wrong-drains-header-early.rs",
                mistake: "drains the 4 header bytes before the payload is there: the next call misreads",
                must_say: "before the whole frame was there",
            },
            Wrong {
                file: "wrong-little-endian.rs",
                mistake: "reads the length with from_le_bytes",
                must_say: "byte-swapped",
            },
        ],
    },
    Exercise {
        num: 5,
        dir: "05-udp-client",
        package: "ex05-udp-client",
        file: "src/main.rs",
        title: "a UDP client with sequence numbers, a timeout and retries against a lossy server",
        chapter: "udp-echo",
        driver: false,
        grade: graders::udp::ex05_udp_client,
        hint: "\
`socket.set_read_timeout(Some(TIMEOUT))`, then `for _ in 0..TRIES`:
send the request, then loop on `recv`:
- Ok(n): parse the number before the first space; if it is `seq`, return the
  reply; if not, it answers an older request (late or duplicated): ignore it
  and recv again;
- Err(e) with kind WouldBlock or TimedOut: the timeout fired, break out and
  send again.
After TRIES tries, Ok(None): the request is lost.",
        wrongs: &[
            Wrong {
                file: "wrong-no-retry.rs",
                mistake: "waits with a timeout but never resends, so one lost datagram loses the request",
                must_say: "resend the request",
            },
            Wrong {
                file: "wrong-no-sequence-check.rs",
                mistake: "takes any reply as the answer, so a duplicate of an older reply is accepted",
                must_say: "duplicate",
            },
            Wrong {
                file: "wrong-any-sender.rs",
                mistake: "an unconnected socket and recv_from's source ignored: a forged reply is taken",
                must_say: "not from the server",
            },
            Wrong {
                file: "wrong-timeout-ends-client.rs",
                mistake: "returns the timeout's WouldBlock as an error: the first loss ends the client",
                must_say: "a timeout is not an error to return",
            },
            Wrong {
                file: "wrong-retries-forever.rs",
                mistake: "resends without a limit: a request lost for good hangs the client",
                must_say: "give up after TRIES tries",
            },
        ],
    },
    Exercise {
        num: 6,
        dir: "06-udp-guard",
        package: "ex06-udp-guard",
        file: "src/main.rs",
        title: "a UDP echo server with a reflection guard: never answer a low source port",
        chapter: "udp-echo",
        driver: false,
        grade: graders::udp::ex06_udp_guard,
        hint: "\
`refuse` gets the datagram's source address. Every port below `guard_below`
(1024 by default: where echo 7, daytime 13, chargen 19, DNS 53, NTP 123 live)
must be refused, and port 0, which no real sender has:
    src.port() < guard_below || src.port() == 0",
        wrongs: &[
            Wrong {
                file: "wrong-only-echo-and-chargen.rs",
                mistake: "refuses only ports 7 and 19, so every other low-port service is still answered",
                must_say: "your server answered a datagram from port",
            },
            Wrong {
                file: "wrong-off-by-one.rs",
                mistake: "port <= guard_below: the first allowed port is refused",
                must_say: "off-by-one",
            },
        ],
    },
    Exercise {
        num: 7,
        dir: "07-thread-per-client",
        package: "ex07-thread-per-client",
        file: "src/main.rs",
        title: "one thread per client: a quiet client no longer blocks the others",
        chapter: "threaded-server",
        driver: false,
        grade: graders::threads::ex07_thread_per_client,
        hint: "\
Replace `serve(stream);` with a new thread that owns the stream:
    std::thread::spawn(move || serve(stream));
`move` gives the stream to the thread. Do not `.join()` it there: joining
waits for the client to leave, which is the iterative server again.
`std::thread::Builder::new().name(..).spawn(..)` returns an io::Result
instead of panicking when no thread can be made: log that and go on.",
        wrongs: &[
            Wrong {
                file: "wrong-spawn-then-join.rs",
                mistake: "spawns a thread per client but joins it at once: still one client at a time",
                must_say: "one client at a time",
            },
            Wrong {
                file: "wrong-accept-error-ends-server.rs",
                mistake: "`stream?` on accept's error: one EMFILE ends the server",
                must_say: "an accept error is not the end of the server",
            },
        ],
    },
    Exercise {
        num: 8,
        dir: "08-bounded-pool",
        package: "ex08-bounded-pool",
        file: "src/main.rs",
        title: "the Rust book's thread pool, with a bounded crossbeam-channel queue and no Mutex",
        chapter: "threaded-server",
        driver: false,
        grade: graders::threads::ex08_bounded_pool,
        hint: "\
Fields: `sender: crossbeam_channel::Sender<Job>` (and the JoinHandles).
new: `let (sender, receiver) = crossbeam_channel::bounded::<Job>(queue);`
then `workers` threads, each with `let receiver = receiver.clone();` and
`for job in receiver { job() }` (it ends when the pool's sender is dropped).
try_execute: `self.sender.try_send(job).map_err(|e| e.into_inner())`:
TrySendError::Full hands the job back, and main answers \"busy\".",
        wrongs: &[
            Wrong {
                file: "wrong-unbounded-queue.rs",
                mistake: "an unbounded channel: the queue never fills, nobody is ever told busy",
                must_say: "unbounded queue",
            },
            Wrong {
                file: "wrong-lock-held-across-job.rs",
                mistake: "the book's Arc<Mutex<Receiver>> with the guard held across the job: one worker at a time",
                must_say: "lock held while a job runs",
            },
            Wrong {
                file: "wrong-one-worker-short.rs",
                mistake: "starts workers - 1 threads: one job at a time with 2 workers, and no lock to blame",
                must_say: "fewer worker threads than asked",
            },
            Wrong {
                file: "wrong-queue-one-short.rs",
                mistake: "bounded(queue - 1): a client is refused while the queue still has room",
                must_say: "not one less",
            },
            Wrong {
                file: "wrong-queue-one-long.rs",
                mistake: "bounded(queue + 1): one job more waits than --queue allows",
                must_say: "one job more than --queue",
            },
        ],
    },
    Exercise {
        num: 9,
        dir: "09-tls-config",
        package: "ex09-tls-config",
        file: "src/lib.rs",
        title: "rustls server and client configs: trust exactly the CA you were given",
        chapter: "tls-echo",
        driver: true,
        grade: graders::driver::grade,
        hint: "\
Server: `CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()`,
`PrivateKeyDer::from_pem_slice(key_pem)` (import rustls::pki_types::pem::PemObject),
then `ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key)`.
Client: `let mut roots = RootCertStore::empty();` and `roots.add(cert)` for each
certificate in ca_pem, then
`ClientConfig::builder().with_root_certificates(roots).with_no_client_auth()`.
Never `.dangerous()`: the default verifier checks the chain AND the name.",
        wrongs: &[
            Wrong {
                file: "wrong-empty-root-store.rs",
                mistake: "an empty RootCertStore: the CA is never added, so every handshake fails UnknownIssuer",
                must_say: "RootCertStore",
            },
            Wrong {
                file: "wrong-accepts-any-certificate.rs",
                mistake: "a custom verifier that accepts every certificate: encrypted, but anyone can be the server",
                must_say: "never told to trust",
            },
            Wrong {
                file: "wrong-first-cert-only.rs",
                mistake: "the server loads only the first certificate of its chain: the intermediate is never sent",
                must_say: "only part of its chain",
            },
            Wrong {
                file: "wrong-first-ca-only.rs",
                mistake: "the client trusts only the first CA of a bundle",
                must_say: "not only the first",
            },
        ],
    },
    Exercise {
        num: 10,
        dir: "10-tokio-limits",
        package: "ex10-tokio-limits",
        file: "src/main.rs",
        title: "a tokio echo server with an idle timeout and a connection limit",
        chapter: "async-server",
        driver: false,
        grade: graders::asyncs::ex10_tokio_limits,
        hint: "\
Idle timeout, in handle: put the timer around each read, so it restarts:
    let n = match tokio::time::timeout(idle, stream.read(&mut buf)).await {
        Ok(r) => r?,
        Err(_) => return Ok(()),   // nothing for `idle`: close
    };
Connection limit, in main: `match Arc::clone(&permits).try_acquire_owned()`;
on Err write b\"busy\\n\" and `continue`; on Ok(permit) move it into the task
(`let _permit = permit;` inside `async move`), so it is released when the
client's task ends. `let _ = ` would drop it on the spot.",
        wrongs: &[
            Wrong {
                file: "wrong-timeout-around-connection.rs",
                mistake: "one timeout around the whole connection: a lifetime limit that cuts busy clients",
                must_say: "restart after every read",
            },
            Wrong {
                file: "wrong-permit-dropped-at-once.rs",
                mistake: "`Ok(_)` drops the semaphore permit at once, so the limit never bites",
                must_say: "no connection limit",
            },
            Wrong {
                file: "wrong-waits-for-permit.rs",
                mistake: "acquire().await: the accept loop waits for a permit instead of answering busy",
                must_say: "waits for a permit",
            },
        ],
    },
    Exercise {
        num: 11,
        dir: "11-mio-writable",
        package: "ex11-mio-writable",
        file: "src/main.rs",
        title: "a mio readiness loop: WouldBlock, partial writes, WRITABLE only while output is pending",
        chapter: "async-server",
        driver: false,
        grade: graders::asyncs::ex11_mio_writable,
        hint: "\
on_readable: `loop { match conn.stream.read(&mut buf) { .. } }`: Ok(0) sets
read_closed and breaks; Ok(n) appends to conn.out; Err WouldBlock breaks (no
more for now); Interrupted retries; any other Err returns it. Then flush(conn).
flush: while out is not empty, `write(&conn.out)`: Ok(n) drains n bytes (a
short write is normal); Err WouldBlock breaks: the rest waits in out.
interest: READABLE, plus WRITABLE while out is not empty. main re-registers.",
        wrongs: &[
            Wrong {
                file: "wrong-wouldblock-is-an-error.rs",
                mistake: "treats write's WouldBlock as an error and closes the connection mid-echo",
                must_say: "WouldBlock is not an error",
            },
            Wrong {
                file: "wrong-never-registers-writable.rs",
                mistake: "never registers WRITABLE, so the rest of a short write is never sent",
                must_say: "register WRITABLE",
            },
            Wrong {
                file: "wrong-always-writable.rs",
                mistake: "READABLE | WRITABLE always: an idle connection stays registered for WRITABLE",
                must_say: "register WRITABLE only while conn.out holds bytes",
            },
            Wrong {
                file: "wrong-reads-once.rs",
                mistake: "one read per readable event: with edge-triggered epoll the rest is never announced",
                must_say: "read until WouldBlock",
            },
        ],
    },
    Exercise {
        num: 12,
        dir: "12-graceful-shutdown",
        package: "ex12-graceful-shutdown",
        file: "src/main.rs",
        title: "graceful shutdown: echo what was received, FIN, drain, all within --grace",
        chapter: "threaded-server",
        driver: false,
        grade: graders::shutdown::ex12_graceful_shutdown,
        hint: "\
In finish, with `let deadline = Instant::now() + grace;`:
1. `stream.set_nonblocking(true)`, read into pending until WouldBlock (Ok(0):
   the client is done too), then `set_nonblocking(false)`;
2. `echo_lines(stream, pending)` (a write timeout of the time left);
3. `stream.shutdown(Shutdown::Write)`: the client's read returns 0 after
   the last echo;
4. read and discard until Ok(0) or the deadline, with
   `set_read_timeout(Some(time left))` before each read.",
        wrongs: &[
            Wrong {
                file: "wrong-ignores-kernel-queue.rs",
                mistake: "echoes its own buffer only; lines still in the kernel's receive queue are lost",
                must_say: "already received",
            },
            Wrong {
                file: "wrong-no-deadline.rs",
                mistake: "waits for the client's FIN without a deadline, so a client that never closes keeps it alive",
                must_say: "past --grace",
            },
            Wrong {
                file: "wrong-timeout-per-read.rs",
                mistake: "a read timeout of the whole grace per read: a client sending a byte every 100 ms holds it forever",
                must_say: "not a timeout per read",
            },
            Wrong {
                file: "wrong-no-drain.rs",
                mistake: "closes right after its FIN: a client still sending gets a RST",
                must_say: "closing a socket with unread input sends a RST",
            },
        ],
    },
    Exercise {
        num: 13,
        dir: "13-rayon-offload",
        package: "ex13-rayon-offload",
        file: "src/main.rs",
        title: "CPU work off the event loop: rayon::spawn and a oneshot, never a blocking wait",
        chapter: "async-server",
        driver: false,
        grade: graders::asyncs::ex13_rayon_offload,
        hint: "\
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || { let _ = tx.send(cpu_work(ms)); });
    rx.await.unwrap_or(0)
The work runs on a rayon thread; `rx.await` gives the loop's thread back
until the answer is in. `tokio::spawn` would run it on the same single
thread, and `std::sync::mpsc::Receiver::recv` would block that thread.",
        wrongs: &[
            Wrong {
                file: "wrong-tokio-spawn-on-the-loop.rs",
                mistake: "tokio::spawn: on a current_thread runtime the work still runs on the loop's thread",
                must_say: "loop's only thread",
            },
            Wrong {
                file: "wrong-blocking-recv.rs",
                mistake: "rayon computes, but the task waits with a blocking std recv(), holding the loop",
                must_say: "blocking recv()",
            },
            Wrong {
                file: "wrong-one-look.rs",
                mistake: "try_recv() right after rayon::spawn: answers at once with no result",
                must_say: "before the work could have finished",
            },
        ],
    },
    Exercise {
        num: 14,
        dir: "14-uring-short-sends",
        package: "ex14-uring-short-sends",
        file: "src/main.rs",
        title: "io_uring echo: resubmit short sends",
        chapter: "async-server",
        driver: false,
        grade: graders::uring::ex14_uring_short_sends,
        hint: "\
A SEND's completion says how many bytes the kernel took: `res`.
    if res <= 0 { return Next::Close; }      // -errno: the connection failed
    conn.sent += res as usize;
    if conn.sent < conn.len { Next::SendRest } else { Next::Recv }
SendRest submits buf[sent..len]: the rest, as many times as it takes.",
        wrongs: &[
            Wrong {
                file: "wrong-short-send-is-done.rs",
                mistake: "treats a short send as done: the rest is lost and the next recv overwrites it",
                must_say: "treating a short send as done",
            },
            Wrong {
                file: "wrong-closes-after-short-send.rs",
                mistake: "ends the echo (closes the connection) after a short send",
                must_say: "closing the connection after a short send",
            },
        ],
    },
    Exercise {
        num: 15,
        dir: "15-tokio-room",
        package: "ex15-tokio-room",
        file: "src/main.rs",
        title: "the tokio chat room with bounded per-member queues: one slow member never holds up the room",
        chapter: "chat",
        driver: false,
        grade: graders::chat::ex15_tokio_room,
        hint: "\
type Queue = tokio::sync::mpsc::Sender<Msg>;
In member: `let (queue, mut rx) = mpsc::channel::<Msg>(queue_len);` and spawn
a task that does `while let Some(m) = rx.recv().await { write.write_all(..) }`.
In broadcast: lock the room, and for every other member
`let _ = m.queue.try_send(msg.clone());`: Full means that member misses the
line (and only it); never `.send().await`, never write a socket, never `?`.",
        wrongs: &[
            Wrong {
                file: "wrong-unbounded-queue.rs",
                mistake: "an unbounded channel per member: memory grows while one member does not read",
                must_say: "grows without bound",
            },
            Wrong {
                file: "wrong-write-under-lock.rs",
                mistake: "the room writes each member's socket while holding its lock: one slow member stalls everyone",
                must_say: "holding the room's lock",
            },
            Wrong {
                file: "wrong-lagging-fatal.rs",
                mistake: "a full queue treated as an error: the sender is disconnected because someone else lags",
                must_say: "that member's problem only",
            },
        ],
    },
    Exercise {
        num: 16,
        dir: "16-byte-order",
        package: "ex16-byte-order",
        file: "src/lib.rs",
        title: "network byte order and the Internet checksum, sans-I/O: a UDP header read off the wire",
        chapter: "network",
        driver: true,
        grade: graders::driver::grade,
        hint: "\
Header: `let h = datagram.get(..8)?;` (None when short, never a panic), then each
field is `u16::from_be_bytes([h[i], h[i + 1]])` for i = 0, 2, 4, 6.
Checksum: `let mut sum: u32 = 0;` add every `u16::from_be_bytes([a, b])` of
`data.chunks_exact(2)`; an odd last byte (the iterator's `remainder()`) adds
`u16::from_be_bytes([last, 0])`; then `while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }`
and return `!(sum as u16)`.",
        wrongs: &[
            Wrong {
                file: "wrong-host-byte-order.rs",
                mistake: "reads the fields little-endian (host byte order), so port 8080 reads as 36895",
                must_say: "host byte order",
            },
            Wrong {
                file: "wrong-drops-odd-byte.rs",
                mistake: "the checksum ignores an odd last byte (chunks_exact's remainder)",
                must_say: "last byte was never added",
            },
        ],
    },
    Exercise {
        num: 17,
        dir: "17-dual-stack",
        package: "ex17-dual-stack",
        file: "src/main.rs",
        title: "one socket for IPv4 and IPv6: a dual-stack listener that names each client's family",
        chapter: "socket",
        driver: false,
        grade: graders::sockets::ex17_dual_stack,
        hint: "\
listen, with socket2:
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() { socket.set_only_v6(false)?; }   // before bind
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?; socket.listen(128)?; Ok(socket.into())
greeting: an IPv4 client of that socket arrives as [::ffff:127.0.0.1]:PORT, so
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
then \"IPv4 {peer}\" or \"IPv6 {peer}\" by peer.is_ipv4().",
        wrongs: &[
            Wrong {
                file: "wrong-ipv4-only.rs",
                mistake: "binds 0.0.0.0 (an AF_INET socket), so IPv6 clients are refused",
                must_say: "IPv4 only",
            },
            Wrong {
                file: "wrong-ipv6-only.rs",
                mistake: "set_only_v6(true): the [::] socket refuses IPv4 clients",
                must_say: "IPV6_V6ONLY",
            },
            Wrong {
                file: "wrong-mapped-address.rs",
                mistake: "greets an IPv4 client as IPv6 [::ffff:127.0.0.1]: the mapped address taken at face value",
                must_say: "IPv4-mapped",
            },
        ],
    },
    Exercise {
        num: 18,
        dir: "18-tcp-vs-udp",
        package: "ex18-tcp-vs-udp",
        file: "src/main.rs",
        title: "the same messages over TCP and UDP: lines re-framed from a stream, one datagram one message",
        chapter: "tcp-vs-udp",
        driver: false,
        grade: graders::streams::ex18_tcp_vs_udp,
        hint: "\
serve_tcp: keep `let mut pending = Vec::new();` across reads; after each read
`pending.extend_from_slice(&buf[..n])`, then
    while let Some(pos) = pending.iter().position(|&b| b == b'\\n') {
        writeln!(stream, \"{pos}\")?; pending.drain(..=pos);
    }
and refuse a pending longer than MAX_LINE. Ok(0): return.
serve_udp: `let (n, from) = socket.recv_from(&mut buf)?;` then
`socket.send_to(n.to_string().as_bytes(), from)`: every datagram, n == 0 too.",
        wrongs: &[
            Wrong {
                file: "wrong-read-is-a-message.rs",
                mistake: "one TCP read taken for one message: three lines in one segment answered once",
                must_say: "a read is not a message",
            },
            Wrong {
                file: "wrong-no-carry-over.rs",
                mistake: "lines looked for in each read only: a line that takes several reads is answered in pieces",
                must_say: "split across reads",
            },
            Wrong {
                file: "wrong-udp-split-lines.rs",
                mistake: "a UDP datagram cut at its newlines, as if it were a stream",
                must_say: "a datagram is one message",
            },
            Wrong {
                file: "wrong-empty-datagram-ignored.rs",
                mistake: "recv_from returning 0 skipped: the empty datagram is never answered",
                must_say: "empty datagram is a message",
            },
        ],
    },
    Exercise {
        num: 19,
        dir: "19-read-exactly",
        package: "ex19-read-exactly",
        file: "src/lib.rs",
        title: "read exactly N bytes from a socket within one deadline, and say why not: EOF or timeout",
        chapter: "api",
        driver: true,
        grade: graders::driver::grade,
        hint: "\
One deadline for the whole message, and the time left before it for each read:
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; n]; let mut got = 0;
    while got < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() { return Err(ReadError::TimedOut { got }); }
        stream.set_read_timeout(Some(left)).map_err(ReadError::Io)?;
        match stream.read(&mut buf[got..]) { .. }
    }
Ok(0): Err(Eof { got }); Ok(k): got += k; Interrupted: again; WouldBlock or
TimedOut: Err(TimedOut { got }); anything else: Err(Io(e)).",
        wrongs: &[
            Wrong {
                file: "wrong-read-exact-loses-count.rs",
                mistake: "std's read_exact: an EOF mid-message is reported as 0 bytes received",
                must_say: "how many bytes arrived",
            },
            Wrong {
                file: "wrong-timed-out-only.rs",
                mistake: "matches ErrorKind::TimedOut only: Linux's read timeout (WouldBlock) becomes an Io error",
                must_say: "WouldBlock",
            },
            Wrong {
                file: "wrong-timeout-per-read.rs",
                mistake: "the same timeout for every read: a peer that trickles bytes keeps it reading forever",
                must_say: "time left",
            },
        ],
    },
];

/// Look an exercise up by number (`3`) or name (`03-line-decoder`, `line-decoder`).
pub fn find(key: &str) -> Option<&'static Exercise> {
    let key = key.trim();
    if let Ok(n) = key.parse::<usize>() {
        return EXERCISES.iter().find(|e| e.num == n);
    }
    EXERCISES
        .iter()
        .find(|e| e.dir == key || e.package == key || e.dir.get(3..) == Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::Paths;

    /// Every exercise has its package, its student file, a pristine starter,
    /// a reference and each declared wrong solution; numbers run 1, 2, 3...
    /// (an exercise added for an earlier chapter takes the next number);
    /// the exercises workspace lists exactly these packages.
    #[test]
    fn every_exercise_has_its_files() {
        let p = Paths::new();
        let members = std::fs::read_to_string(p.exercises.join("Cargo.toml")).unwrap();
        for (i, ex) in EXERCISES.iter().enumerate() {
            assert_eq!(ex.num, i + 1, "{} is out of order", ex.dir);
            assert!(ex.dir.starts_with(&format!("{:02}-", ex.num)), "{}", ex.dir);
            assert_eq!(
                ex.package,
                format!("ex{}", ex.dir),
                "package name of {}",
                ex.dir
            );
            let dir = p.exercises.join(ex.dir);
            assert!(dir.join(ex.file).is_file(), "{}/{}", ex.dir, ex.file);
            let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
            assert!(
                manifest.contains(&format!("name = \"{}\"", ex.package)),
                "{}",
                ex.dir
            );
            if ex.driver {
                assert!(
                    manifest.contains(&format!("name = \"{}\"", ex.bin_name())),
                    "{}",
                    ex.dir
                );
            }
            assert!(
                members.contains(&format!("\"{}\"", ex.dir)),
                "{} not in lab/exercises/Cargo.toml",
                ex.dir
            );
            let sol = p.solutions.join(ex.dir);
            assert!(
                sol.join("reference.rs").is_file(),
                "lab/solutions/{}/reference.rs",
                ex.dir
            );
            assert!(
                dir.join("TASK.zh-CN.md").is_file(),
                "lab/exercises/{}/TASK.zh-CN.md: the task in Chinese",
                ex.dir
            );
            assert!(
                !ex.wrongs.is_empty(),
                "{} needs a typical wrong solution",
                ex.dir
            );
            for w in ex.wrongs {
                let text = std::fs::read_to_string(sol.join(w.file)).unwrap();
                assert!(
                    text.contains("MISTAKE"),
                    "{}/{} should say where its MISTAKE is",
                    ex.dir,
                    w.file
                );
                assert!(!w.must_say.is_empty());
            }
            assert!(!ex.hint.is_empty());
        }
        assert!(EXERCISES.len() >= 12);
    }

    #[test]
    fn find_by_number_or_name() {
        assert_eq!(find("3").map(|e| e.num), Some(3));
        assert_eq!(find("03-line-decoder").map(|e| e.num), Some(3));
        assert_eq!(find("line-decoder").map(|e| e.num), Some(3));
        assert!(find("99").is_none());
    }
}
