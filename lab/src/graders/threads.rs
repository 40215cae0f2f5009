//! Graders for the threads chapter: 7 (thread per client) and 8 (the book's
//! pool, bounded with crossbeam-channel). The proof of concurrency is an
//! adversarial client, as in CMU's proxy lab: one client connects and goes
//! quiet, and a second must still be served.

use std::time::Duration;

use crate::harness::{
    Check, READ_TIMEOUT, Run, Server, connect, expect_bytes, expect_echo, expect_eof, read_upto,
    send, show,
};

pub fn ex07_thread_per_client(run: &mut Run) -> Check {
    let mut server = Server::start(run, &[])?;

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
    super::proc::survives_emfile(run, &mut server)?;
    Ok(())
}

const WORKERS: usize = 2;

pub fn ex08_bounded_pool(run: &mut Run) -> Check {
    let mut server = Server::start(run, &["--workers", "2", "--queue", "1"])?;

    run.step("client A is echoed, then stays connected (it keeps worker 1 busy)");
    let mut a = connect(server.addr)?;
    expect_echo(&mut a, b"A\n", "a job must run on a worker thread")?;

    run.step("client B is echoed by worker 2 while A holds worker 1");
    let mut b = connect(server.addr)?;
    if let Err(mut f) = expect_echo(&mut b, b"B\n", "") {
        // Two ways to run one job at a time: fewer threads than workers, or
        // a lock the running job holds. /proc/PID/task tells them apart.
        let n = super::proc::threads(server.pid()).unwrap_or(0);
        if n < 1 + WORKERS {
            f.got = format!(
                "{}; your server runs {} in all (the main thread and {} more) for --workers {WORKERS}",
                f.got,
                crate::harness::plural(n, "thread"),
                n.saturating_sub(1)
            );
            f.why = "fewer worker threads than asked: new must start exactly `workers` threads \
                     (for i in 0..workers), each taking jobs from the queue"
                .into();
        } else {
            f.why = "only one job runs at a time, though the worker threads are there: is a lock held \
                     while a job runs? The book's `while let Ok(job) = rx.lock().unwrap().recv()` keeps \
                     the MutexGuard alive for the whole loop body. Give each worker its own crossbeam \
                     Receiver clone: no Mutex at all"
                .into();
        }
        return Err(f);
    }

    run.step(
        "client C connects and sends \"C\\n\": both workers are busy, so C waits in the queue",
    );
    let mut c = connect(server.addr)?;
    send(&mut c, b"C\n")?;

    run.step("client D connects: the queue (1) is full, so D gets \"busy\\n\" and is closed");
    let mut d = connect(server.addr)?;
    if let Err(mut f) = expect_bytes(&mut d, b"busy\n", "") {
        // Queued instead of refused: one place too many, or no bound at all?
        // A fifth client E tells: refused means the queue holds exactly 2.
        let mut e = connect(server.addr)?;
        let (got_e, _) = read_upto(&mut e, 5, READ_TIMEOUT);
        f.why = if got_e == b"busy\n" {
            f.got = format!("{}; a fifth client E got \"busy\\n\"", f.got);
            "your queue holds one job more than --queue 1 (D was queued, only E was refused): \
             crossbeam_channel::bounded(queue), not queue + 1"
                .into()
        } else {
            "2 workers busy and 1 job queued: try_execute must give the job back. An unbounded \
             queue never says Full, so connections pile up without limit; use \
             crossbeam_channel::bounded(queue) and try_send"
                .into()
        };
        return Err(f);
    }
    expect_eof(
        &mut d,
        Duration::from_secs(3),
        "drop the refused job: that closes the connection",
    )?;

    run.step("A leaves: a worker is free, so the queued C is served");
    drop(a);
    if let Err(mut f) = expect_bytes(
        &mut c,
        b"C\n",
        "workers take the next job from the queue when they finish one",
    ) {
        if f.got.starts_with(&show(b"busy\n")) || f.got.starts_with(&show(b"bu")) {
            f.why = "C was refused, though the queue (--queue 1) was empty when it came: the \
                     channel must hold `queue` jobs, crossbeam_channel::bounded(queue), not one less"
                .into();
        }
        return Err(f);
    }
    drop((b, c));
    super::proc::survives_emfile(run, &mut server)?;
    Ok(())
}
