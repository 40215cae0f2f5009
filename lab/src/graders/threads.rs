//! Graders for the threads chapter: 7 (thread per client) and 8 (the book's
//! pool, bounded with crossbeam-channel). The proof of concurrency is an
//! adversarial client, as in CMU's proxy lab: one client connects and goes
//! quiet, and a second must still be served.

use std::time::Duration;

use crate::harness::{Check, Run, Server, connect, expect_bytes, expect_echo, expect_eof, send};

pub fn ex07_thread_per_client(run: &mut Run) -> Check {
    let server = Server::start(run, &[])?;

    run.step("client A connects, is echoed, then stays connected and quiet");
    let mut a = connect(server.addr)?;
    expect_echo(&mut a, b"I am A\n", "echo as in exercise 1")?;

    run.step("client B connects while A is still connected: B must be echoed");
    let mut b = connect(server.addr)?;
    expect_echo(
        &mut b,
        b"I am B\n",
        "your server serves one client at a time: while handle() runs for A, B is never accepted. \
         Spawn a thread per client, and do not join it in the accept loop",
    )?;

    run.step("A is still served");
    expect_echo(
        &mut a,
        b"A again\n",
        "each thread serves its own client until it leaves",
    )?;
    drop((a, b));

    crate::loadgen::check(
        run,
        server.addr,
        &[
            "--framing",
            "raw",
            "--cases",
            "idle-clients,concurrent-clients",
            "--idle-clients",
            "50",
            "--clients",
            "100",
        ],
        &|_| "every client needs its own thread, started as soon as it is accepted".into(),
    )?;
    Ok(())
}

pub fn ex08_bounded_pool(run: &mut Run) -> Check {
    let server = Server::start(run, &["--workers", "2", "--queue", "1"])?;

    run.step("client A is echoed, then stays connected (it keeps worker 1 busy)");
    let mut a = connect(server.addr)?;
    expect_echo(&mut a, b"A\n", "a job must run on a worker thread")?;

    run.step("client B is echoed by worker 2 while A holds worker 1");
    let mut b = connect(server.addr)?;
    expect_echo(
        &mut b,
        b"B\n",
        "only one job runs at a time. Is a lock held while a job runs? The book's \
         `while let Ok(job) = rx.lock().unwrap().recv()` keeps the MutexGuard alive for the whole \
         loop body. Give each worker its own crossbeam Receiver clone: no Mutex at all",
    )?;

    run.step(
        "client C connects and sends \"C\\n\": both workers are busy, so C waits in the queue",
    );
    let mut c = connect(server.addr)?;
    send(&mut c, b"C\n")?;

    run.step("client D connects: the queue (1) is full, so D gets \"busy\\n\" and is closed");
    let mut d = connect(server.addr)?;
    expect_bytes(
        &mut d,
        b"busy\n",
        "2 workers busy and 1 job queued: try_execute must give the job back. An unbounded queue \
         never says Full, so connections pile up without limit; use crossbeam_channel::bounded(queue) \
         and try_send",
    )?;
    expect_eof(
        &mut d,
        Duration::from_secs(3),
        "drop the refused job: that closes the connection",
    )?;

    run.step("A leaves: a worker is free, so the queued C is served");
    drop(a);
    expect_bytes(
        &mut c,
        b"C\n",
        "workers take the next job from the queue when they finish one",
    )?;
    drop((b, c));
    Ok(())
}
