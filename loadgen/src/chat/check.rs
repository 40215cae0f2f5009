//! `loadgen chat-check`: one case per rule of the Budget Chat protocol
//! (Protohackers problem 3) and of the room's promise that one slow member
//! never holds up the others. Point it at any chat server, ours or not:
//!
//! ```text
//! cargo run -p chat -- server --model threads --max-pending 64KiB --stall-timeout 60s
//! cargo run -p loadgen -- chat-check --addr 127.0.0.1:7007 --slow skip
//! PASS welcome: ...
//! ```
//!
//! Every read has a deadline; absence is proved with a marker, never a
//! sleep: to show alice did *not* receive something, bob says a marker line
//! afterwards, and the marker must be the next thing alice reads. The
//! server-specific lines (the welcome, refusals, `* you missed N messages`)
//! are matched loosely, the protocol's own ones (`[NAME] text`, `*`
//! notices naming the member) exactly as the protocol fixes them.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Result;

/// Each read gives up after this: generous, the machine may be loaded.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the server under test does with a full outbox (its `--slow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Slow {
    Skip,
    Disconnect,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ChatCheckArgs {
    /// The chat server: IPV4:PORT, [IPV6]:PORT or HOSTNAME:PORT.
    #[arg(long, value_name = "HOST:PORT", required_unless_present = "list", value_parser = common::cli::parse_host_port)]
    pub addr: Option<common::cli::HostPort>,
    /// The server's `--max-frame`: `over-limit` sends a line one byte longer.
    #[arg(long, value_name = "BYTES", default_value = "1MiB", value_parser = common::cli::parse_size)]
    pub max_frame: usize,
    /// The server's `--slow` policy: picks which `slow-*` case runs (none
    /// without it). Start the server with a small `--max-pending` and a
    /// `--stall-timeout` longer than the flood takes.
    #[arg(long, value_enum)]
    pub slow: Option<Slow>,
    /// Bytes the slow case says while one member never reads: well over the
    /// server's `--max-pending` plus what the kernel buffers (the stalled
    /// member asks for a small receive buffer, but Linux grows the server's
    /// send buffer up to `tcp_wmem`'s maximum, 4 MiB by default).
    #[arg(long, value_name = "BYTES", default_value = "8MiB", value_parser = common::cli::parse_size)]
    pub flood: usize,
    /// The server's process id: the slow case then reports its RSS growth.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Only the cases named here (comma-separated; a trailing `*` matches a prefix).
    #[arg(long, value_name = "NAME,...", default_value = "*")]
    pub cases: String,
    /// Name the cases and exit.
    #[arg(long)]
    pub list: bool,
}

/// One case's verdict: `Ok(detail)` or `Err(what went wrong)`; `None`: skipped.
#[derive(Debug)]
pub struct Outcome {
    pub case: &'static str,
    pub result: Option<Result<String, String>>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        !matches!(self.result, Some(Err(_)))
    }

    pub fn line(&self) -> String {
        match &self.result {
            Some(Ok(d)) => format!("PASS {}: {d}", self.case),
            Some(Err(e)) => format!("FAIL {}: {e}", self.case),
            None => format!("SKIP {}: needs --slow", self.case),
        }
    }
}

type CaseFn = fn(&Ctx) -> Result<String, String>;

/// The cases, in the order they run.
pub const CASES: &[(&str, &str, CaseFn)] = &[
    (
        "welcome",
        "a connection is greeted with one line before it sends anything",
        welcome,
    ),
    (
        "name-16",
        "a name of 16 letters and digits is accepted",
        name_16,
    ),
    (
        "name-invalid",
        "an empty, spaced, punctuated or 17-character name is refused and closed, told to nobody",
        name_invalid,
    ),
    (
        "name-duplicate",
        "a name already in the room is refused and closed, told to nobody",
        name_duplicate,
    ),
    (
        "presence",
        "the joiner gets one `*` line naming the others, not itself",
        presence,
    ),
    (
        "join-notice",
        "the others get `* NAME has entered the room`",
        join_notice,
    ),
    (
        "no-echo",
        "a line goes to every other member as `[NAME] text`, never back to its sender",
        no_echo,
    ),
    (
        "order",
        "one member's lines arrive in the order it sent them",
        order,
    ),
    (
        "no-history",
        "a joiner receives nothing said before it joined",
        no_history,
    ),
    (
        "leave-notice",
        "a member that closes is announced as `* NAME has left the room`",
        leave_notice,
    ),
    (
        "leave-reset",
        "a member that resets (RST) is announced as left",
        leave_reset,
    ),
    (
        "leave-unjoined",
        "a client that leaves before joining causes no message",
        leave_unjoined,
    ),
    (
        "long-line",
        "lines of 1,000 and 10,000 characters are carried whole",
        long_line,
    ),
    (
        "over-limit",
        "a line over --max-frame is refused, its member closed and announced, the others unaffected",
        over_limit,
    ),
    (
        "slow-skip",
        "--slow skip: while one member never reads, the others get every line; it is told how many it missed",
        slow_skip,
    ),
    (
        "slow-disconnect",
        "--slow disconnect: while one member never reads, the others get every line; it is closed and announced",
        slow_disconnect,
    ),
];

#[derive(Debug)]
pub struct Ctx {
    pub addr: SocketAddr,
    pub args: ChatCheckArgs,
}

/// A member of the room as the checker drives it.
#[derive(Debug)]
pub struct Member {
    pub name: String,
    /// The names of this case's members start with this (see [`names`]).
    case: String,
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Member {
    /// Connect and read the welcome line.
    pub fn connect(addr: SocketAddr, name: &str) -> Result<Member, String> {
        Member::connect_with(addr, name, None)
    }

    /// `rcvbuf`: a small `SO_RCVBUF`, set before `connect()` so the kernel
    /// advertises a small window: a member that never reads then holds
    /// little in *our* kernel, and the server's outbox fills sooner.
    fn connect_with(addr: SocketAddr, name: &str, rcvbuf: Option<usize>) -> Result<Member, String> {
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )
        .map_err(|e| format!("socket: {e}"))?;
        if let Some(size) = rcvbuf {
            sock.set_recv_buffer_size(size)
                .map_err(|e| format!("SO_RCVBUF: {e}"))?;
        }
        sock.connect_timeout(&addr.into(), READ_TIMEOUT)
            .map_err(|e| format!("connect: {e}"))?;
        let stream: TcpStream = sock.into();
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
        let case = case_of(name).unwrap_or_default().to_owned();
        let mut m = Member {
            name: name.to_owned(),
            case,
            stream,
            reader,
        };
        m.line()
            .map_err(|e| format!("{name}: no welcome line: {e}"))?;
        Ok(m)
    }

    /// Connect, send the name, return the presence line.
    pub fn join(addr: SocketAddr, name: &str) -> Result<(Member, String), String> {
        Member::join_with(addr, name, None)
    }

    fn join_with(
        addr: SocketAddr,
        name: &str,
        rcvbuf: Option<usize>,
    ) -> Result<(Member, String), String> {
        let mut m = Member::connect_with(addr, name, rcvbuf)?;
        m.send(name)?;
        // The presence list names earlier cases' members too: never skipped.
        let presence = m
            .line_filtered(false)
            .map_err(|e| format!("{name}: no presence line after its name: {e}"))?;
        if !presence.starts_with('*') {
            return Err(format!(
                "{name}: the presence line should start with `*`, but was {presence:?}"
            ));
        }
        Ok((m, presence))
    }

    /// The socket itself, for a test that drives it by hand.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn send(&mut self, line: &str) -> Result<(), String> {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| format!("{}: sending: {e} (has the room stopped reading its members, waiting for its slowest member?)", self.name))
    }

    /// The next line, without its `\n` (an error at EOF or after the
    /// timeout). A `*` notice about members of an *earlier* case only (their
    /// leave may still be on its way when this case starts) is skipped.
    pub fn line(&mut self) -> io::Result<String> {
        self.line_filtered(true)
    }

    fn line_filtered(&mut self, skip_foreign: bool) -> io::Result<String> {
        loop {
            let mut buf = Vec::new();
            if self.reader.read_until(b'\n', &mut buf)? == 0 || buf.last() != Some(&b'\n') {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed",
                ));
            }
            buf.pop();
            let line = String::from_utf8_lossy(&buf).into_owned();
            let foreign = |w: &str| case_of(w).is_some_and(|c| c != self.case);
            if skip_foreign
                && !self.case.is_empty()
                && line.starts_with('*')
                && words(&line).any(foreign)
                && !words(&line).any(|w| case_of(w) == Some(&self.case))
            {
                continue;
            }
            return Ok(line);
        }
    }

    /// The next line must be exactly `want`.
    pub fn expect_line(&mut self, want: &str, why: &str) -> Result<(), String> {
        match self.line() {
            Ok(got) if got == want => Ok(()),
            Ok(got) => Err(format!(
                "{} should have received {:?} ({why}), but got {:?}",
                self.name,
                short(want),
                short(&got)
            )),
            Err(e) => Err(format!(
                "{} should have received {:?} ({why}), but: {e}",
                self.name,
                short(want)
            )),
        }
    }

    /// The next line is a `*` notice naming `who` (and containing `word`).
    pub fn expect_notice(&mut self, who: &str, word: &str) -> Result<String, String> {
        match self.line() {
            Ok(got)
                if got.starts_with('*') && words(&got).any(|w| w == who) && got.contains(word) =>
            {
                Ok(got)
            }
            Ok(got) => Err(format!(
                "{} should have received a `*` line saying {who} {word}, but got {got:?}",
                self.name
            )),
            Err(e) => Err(format!(
                "{} should have received a `*` line saying {who} {word}, but: {e}",
                self.name
            )),
        }
    }

    /// Prove `self` received nothing since its last read: `marker_from`
    /// says a marker, and it must be the next line here.
    pub fn nothing_then(&mut self, marker_from: &mut Member, what: &str) -> Result<(), String> {
        let marker = format!("marker{}", Instant::now().elapsed().subsec_nanos());
        marker_from.send(&marker)?;
        let want = format!("[{}] {marker}", marker_from.name);
        match self.line() {
            Ok(got) if got == want => Ok(()),
            Ok(got) => Err(format!(
                "{} should have received nothing ({what}) before {want:?}, but got {got:?}",
                self.name
            )),
            Err(e) => Err(format!(
                "{} should have received {want:?}, but: {e}",
                self.name
            )),
        }
    }

    /// The server must close: EOF (or a reset) within the deadline, after
    /// at most `lines` lines.
    pub fn expect_closed(&mut self, lines: usize) -> Result<Vec<String>, String> {
        let mut got = Vec::new();
        for _ in 0..=lines {
            let mut buf = Vec::new();
            match self.reader.read_until(b'\n', &mut buf) {
                Ok(0) => return Ok(got),
                Ok(_) => got.push(String::from_utf8_lossy(&buf).trim_end().to_owned()),
                Err(e) if is_timeout(&e) => {
                    return Err(format!(
                        "{} should have been closed by the server, but it stayed open {READ_TIMEOUT:?} (read so far: {got:?})",
                        self.name
                    ));
                }
                Err(_) => return Ok(got), // reset: closed too
            }
        }
        Err(format!(
            "{} should have been closed after at most {lines} line(s), but got {got:?} and more",
            self.name
        ))
    }

    /// Close with a reset (SO_LINGER 0) instead of a FIN.
    pub fn reset(self) {
        let sock = socket2::SockRef::from(&self.stream);
        let _ = sock.set_linger(Some(Duration::ZERO));
    }

    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// A line cut for a message: long lines are the point of some cases.
fn short(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((at, _)) => format!("{}... ({} bytes)", &s[..at], s.len()),
        None => s.to_owned(),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
}

/// The case part of a name made by [`names`] (`tag123x4` -> `tag123x`).
fn case_of(name: &str) -> Option<&str> {
    let (head, index) = name.rsplit_once('x')?;
    let ok = !index.is_empty()
        && index.bytes().all(|b| b.is_ascii_digit())
        && head.bytes().last().is_some_and(|b| b.is_ascii_digit());
    ok.then(|| &name[..head.len() + 1])
}

/// Names unique to one run of one case, so cases never collide in the room.
fn names<const N: usize>(case: &str) -> [String; N] {
    let tag: String = case
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(6)
        .collect();
    let n = std::process::id() % 1000 + Instant::now().elapsed().subsec_nanos() % 97;
    std::array::from_fn(|i| format!("{tag}{n}x{i}"))
}

fn welcome(ctx: &Ctx) -> Result<String, String> {
    let mut m = Member::connect(ctx.addr, "a fresh client")?;
    let _ = &mut m;
    Ok("a line arrived before the client said anything".into())
}

fn name_16(ctx: &Ctx) -> Result<String, String> {
    // Two names of exactly 16 characters, in the form `names` makes (so
    // later cases recognise their notices as this case's).
    let [base] = names::<1>("");
    let digits: String = base.chars().filter(char::is_ascii_digit).collect();
    let stem = format!("N{digits:0>13}");
    let (name, other) = (format!("{stem}x0"), format!("{stem}x1"));
    let (mut m, _) = Member::join(ctx.addr, &name)?;
    // Joined, not refused: the next joiner sees it in the room, and it
    // hears the next joiner enter.
    let (o, presence) = Member::join(ctx.addr, &other)?;
    if !words(&presence).any(|w| w == name) {
        return Err(format!(
            "{name:?} (16 characters) should be in the room, but the next joiner was told {presence:?}"
        ));
    }
    m.expect_line(
        &format!("* {other} has entered the room"),
        "a 16-character member hears the next joiner",
    )?;
    m.close();
    o.close();
    Ok(format!(
        "{name:?} joined; the next joiner was told {presence:?}"
    ))
}

fn name_invalid(ctx: &Ctx) -> Result<String, String> {
    let [watcher, helper] = names::<2>("invalid");
    let (mut w, _) = Member::join(ctx.addr, &watcher)?;
    let (mut h, _) = Member::join(ctx.addr, &helper)?;
    w.expect_notice(&helper, "enter")?;
    for bad in ["", "has space", "abcdefghijklmnopq", "bad!name", "naïve"] {
        let mut m = Member::connect(ctx.addr, "refused")?;
        m.send(bad)?;
        m.expect_closed(1)
            .map_err(|e| format!("name {bad:?}: {e}"))?;
        w.nothing_then(&mut h, &format!("the refused name {bad:?}"))?;
    }
    w.close();
    h.close();
    Ok("5 names refused with at most one line and closed; members told nothing".into())
}

fn name_duplicate(ctx: &Ctx) -> Result<String, String> {
    let [a, b] = names::<2>("dup");
    let (mut ma, _) = Member::join(ctx.addr, &a)?;
    let (mut mb, _) = Member::join(ctx.addr, &b)?;
    ma.expect_notice(&b, "enter")?;
    let mut again = Member::connect(ctx.addr, "duplicate")?;
    again.send(&a)?;
    again
        .expect_closed(1)
        .map_err(|e| format!("the second {a:?}: {e}"))?;
    ma.nothing_then(&mut mb, "a refused duplicate")?;
    ma.close();
    mb.close();
    Ok("the second member named alike was refused and closed; nobody told".into())
}

fn presence(ctx: &Ctx) -> Result<String, String> {
    let [a, b, c] = names::<3>("presence");
    let (ma, _) = Member::join(ctx.addr, &a)?;
    let (mb, _) = Member::join(ctx.addr, &b)?;
    let (mc, p) = Member::join(ctx.addr, &c)?;
    let listed: Vec<&str> = words(&p).collect();
    for who in [&a, &b] {
        if !listed.contains(&who.as_str()) {
            return Err(format!(
                "{c}'s presence line should name {who}, but was {p:?}"
            ));
        }
    }
    if listed.contains(&c.as_str()) {
        return Err(format!(
            "{c}'s presence line should not name {c} itself, but was {p:?}"
        ));
    }
    for m in [ma, mb, mc] {
        m.close();
    }
    Ok(format!("{p:?}"))
}

fn join_notice(ctx: &Ctx) -> Result<String, String> {
    let [a, b] = names::<2>("joinnot");
    let (mut ma, _) = Member::join(ctx.addr, &a)?;
    let (mb, _) = Member::join(ctx.addr, &b)?;
    ma.expect_line(&format!("* {b} has entered the room"), "the join notice")?;
    ma.close();
    mb.close();
    Ok("exact notice".into())
}

fn no_echo(ctx: &Ctx) -> Result<String, String> {
    let [a, b, c] = names::<3>("noecho");
    let (mut ma, _) = Member::join(ctx.addr, &a)?;
    let (mut mb, _) = Member::join(ctx.addr, &b)?;
    ma.expect_notice(&b, "enter")?;
    let (mut mc, _) = Member::join(ctx.addr, &c)?;
    ma.expect_notice(&c, "enter")?;
    mb.expect_notice(&c, "enter")?;
    ma.send("hello room")?;
    let want = format!("[{a}] hello room");
    mb.expect_line(&want, "a line said by another member")?;
    mc.expect_line(&want, "a line said by another member")?;
    ma.nothing_then(&mut mb, "its own line must not come back")?;
    for m in [ma, mb, mc] {
        m.close();
    }
    Ok("both others got it; the sender did not".into())
}

fn order(ctx: &Ctx) -> Result<String, String> {
    let [a, b] = names::<2>("order");
    let (mut ma, _) = Member::join(ctx.addr, &a)?;
    let (mut mb, _) = Member::join(ctx.addr, &b)?;
    ma.expect_notice(&b, "enter")?;
    let n = 200;
    let mut batch = String::new();
    for i in 0..n {
        batch.push_str(&format!("line {i}\n"));
    }
    // One write: the server reads many lines at once.
    ma.stream
        .write_all(batch.as_bytes())
        .map_err(|e| e.to_string())?;
    for i in 0..n {
        mb.expect_line(
            &format!("[{a}] line {i}"),
            "lines in the order they were sent",
        )?;
    }
    ma.close();
    mb.close();
    Ok(format!("{n} lines in order"))
}

fn no_history(ctx: &Ctx) -> Result<String, String> {
    let [a, b, c] = names::<3>("history");
    let (mut ma, _) = Member::join(ctx.addr, &a)?;
    let (mut mb, _) = Member::join(ctx.addr, &b)?;
    ma.expect_notice(&b, "enter")?;
    ma.send("said before c joined")?;
    mb.expect_line(&format!("[{a}] said before c joined"), "a line said")?;
    let (mut mc, _) = Member::join(ctx.addr, &c)?;
    mb.expect_notice(&c, "enter")?;
    mc.nothing_then(&mut ma, "what was said before it joined")?;
    for m in [ma, mb, mc] {
        m.close();
    }
    Ok("the joiner's first line after the presence list was said after it joined".into())
}

fn leave_with(ctx: &Ctx, case: &str, reset: bool) -> Result<String, String> {
    let [a, b] = names::<2>(case);
    let (mut ma, _) = Member::join(ctx.addr, &a)?;
    let (mb, _) = Member::join(ctx.addr, &b)?;
    ma.expect_notice(&b, "enter")?;
    if reset {
        mb.reset()
    } else {
        mb.close()
    }
    ma.expect_line(&format!("* {b} has left the room"), "the leave notice")?;
    ma.close();
    Ok("exact notice".into())
}

fn leave_notice(ctx: &Ctx) -> Result<String, String> {
    leave_with(ctx, "leave", false)
}

fn leave_reset(ctx: &Ctx) -> Result<String, String> {
    leave_with(ctx, "reset", true)
}

fn leave_unjoined(ctx: &Ctx) -> Result<String, String> {
    let [a, b] = names::<2>("unjoined");
    let (mut ma, _) = Member::join(ctx.addr, &a)?;
    let (mut mb, _) = Member::join(ctx.addr, &b)?;
    ma.expect_notice(&b, "enter")?;
    Member::connect(ctx.addr, "unjoined")?.reset();
    // The second one half-closes and waits for the server to close too:
    // by then the server has handled its departure (and the reset's,
    // usually), so a wrong notice would come before the marker.
    let mut fin = Member::connect(ctx.addr, "unjoined")?;
    let _ = fin.stream.shutdown(Shutdown::Write);
    fin.expect_closed(1)?;
    ma.nothing_then(&mut mb, "clients that left before joining")?;
    ma.close();
    mb.close();
    Ok("two clients left before joining (FIN, RST); nobody told".into())
}

fn long_line(ctx: &Ctx) -> Result<String, String> {
    let [a, b] = names::<2>("long");
    let (mut ma, _) = Member::join(ctx.addr, &a)?;
    let (mut mb, _) = Member::join(ctx.addr, &b)?;
    ma.expect_notice(&b, "enter")?;
    for len in [1_000, 10_000] {
        let text: String = (0..len)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        ma.send(&text)?;
        mb.expect_line(&format!("[{a}] {text}"), &format!("a {len}-character line"))?;
    }
    ma.close();
    mb.close();
    Ok("1,000 and 10,000 characters".into())
}

fn over_limit(ctx: &Ctx) -> Result<String, String> {
    let [a, b, c] = names::<3>("over");
    let (mut ma, _) = Member::join(ctx.addr, &a)?;
    let (mut mb, _) = Member::join(ctx.addr, &b)?;
    ma.expect_notice(&b, "enter")?;
    let (mut mc, _) = Member::join(ctx.addr, &c)?;
    ma.expect_notice(&c, "enter")?;
    mb.expect_notice(&c, "enter")?;
    let big = vec![b'x'; ctx.args.max_frame + 1];
    // The server may close while we still write: a failed write is fine.
    let _ = mc
        .stream
        .write_all(&big)
        .and_then(|()| mc.stream.write_all(b"\n"));
    mc.expect_closed(1)?;
    ma.expect_line(
        &format!("* {c} has left the room"),
        "the closed member's leave",
    )?;
    mb.expect_line(
        &format!("* {c} has left the room"),
        "the closed member's leave",
    )?;
    ma.send("still here")?;
    mb.expect_line(&format!("[{a}] still here"), "the others are unaffected")?;
    ma.close();
    mb.close();
    Ok(format!(
        "a line of {} bytes closed its member; the others went on",
        ctx.args.max_frame + 1
    ))
}

/// Lines of the flood, and how many the reading member may be behind (32
/// KiB: under any sensible `--max-pending`, so the reader is never slow).
const FLOOD_LINE: usize = 4000;
const WINDOW: usize = 8;

/// The stalled member's `SO_RCVBUF` (the kernel doubles it, and rounds up).
const STALLED_RCVBUF: usize = 4096;

/// Say `flood` bytes from `a` while `stalled` never reads, with `b` reading
/// every line (a window of [`WINDOW`] lines, so `b` itself is never slow).
fn flood(ctx: &Ctx, a: &mut Member, b: &mut Member) -> Result<(usize, String), String> {
    let text = "f".repeat(FLOOD_LINE);
    let n = ctx.args.flood / (text.len() + a.name.len() + 4) + 1;
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        a.send(&format!("{i} {text}"))?;
        if i >= WINDOW {
            let t = Instant::now();
            b.expect_line(
                &format!("[{}] {} {text}", a.name, i - WINDOW),
                "every line while one member does not read",
            )
            .map_err(|e| {
                format!(
                    "{e} (after {} lines; the room waits for its slowest member?)",
                    i - WINDOW
                )
            })?;
            slowest = slowest.max(t.elapsed());
        }
    }
    for i in n.saturating_sub(WINDOW)..n {
        b.expect_line(
            &format!("[{}] {i} {text}", a.name),
            "every line while one member does not read",
        )?;
    }
    Ok((
        n,
        format!(
            "{n} lines ({} KiB) to the reader in {:.0?}, its slowest wait {slowest:.0?}",
            ctx.args.flood / 1024,
            start.elapsed()
        ),
    ))
}

fn rss(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

fn rss_note(pid: Option<u32>, before: Option<u64>, flood: usize) -> Result<String, String> {
    match (before, rss(pid)) {
        (Some(b), Some(a)) => {
            let grew = a.saturating_sub(b);
            if grew as usize > flood / 2 {
                return Err(format!(
                    "the server's RSS grew {} KiB during a {} KiB flood: the stalled member's queue is not bounded",
                    grew / 1024,
                    flood / 1024
                ));
            }
            Ok(format!("; server RSS grew {} KiB", grew / 1024))
        }
        _ => Ok(String::new()),
    }
}

fn slow_skip(ctx: &Ctx) -> Result<String, String> {
    let [a, b, s] = names::<3>("slowskip");
    let (mut ma, _) = Member::join(ctx.addr, &a)?;
    let (mut mb, _) = Member::join(ctx.addr, &b)?;
    ma.expect_notice(&b, "enter")?;
    let (mut ms, _) = Member::join_with(ctx.addr, &s, Some(STALLED_RCVBUF))?;
    ma.expect_notice(&s, "enter")?;
    mb.expect_notice(&s, "enter")?;
    let before = rss(ctx.args.server_pid);
    let (n, detail) = flood(ctx, &mut ma, &mut mb)?;
    let mem = rss_note(ctx.args.server_pid, before, ctx.args.flood)?;
    // Now the stalled member reads: the lines that fitted, in order, and
    // `*` notices whose counts make up the rest (one each time its outbox
    // drained after a skip: the kernel may have taken some bytes meanwhile).
    let (mut got, mut missed, mut notices) = (0usize, 0usize, 0usize);
    let mut last = None;
    while got + missed < n {
        let line = ms.line().map_err(|e| format!("{s}, reading again after the flood, should get the lines that fitted and `*` lines saying how many it missed, but after {got} lines and {missed} missed: {e}"))?;
        if line.starts_with('*') {
            let Some(k) = words(&line).find_map(|w| w.parse::<usize>().ok()) else {
                return Err(format!(
                    "{s} should be told how many messages it missed, but got {line:?}"
                ));
            };
            missed += k;
            notices += 1;
            continue;
        }
        let Some(seq) = line
            .strip_prefix(&format!("[{a}] "))
            .and_then(|t| t.split(' ').next())
            .and_then(|t| t.parse::<usize>().ok())
        else {
            return Err(format!(
                "{s} should receive {a}'s lines, but got {:?}",
                line.get(..60).unwrap_or(&line)
            ));
        };
        if last.is_some_and(|l| seq <= l) {
            return Err(format!(
                "{s} received line {seq} after line {last:?}: out of order"
            ));
        }
        last = Some(seq);
        got += 1;
    }
    if missed == 0 {
        return Err(format!(
            "{s} got all {n} lines ({} KiB) after not reading during the flood: nothing was dropped, so its outbox is not bounded",
            ctx.args.flood / 1024
        ));
    }
    if got + missed != n {
        return Err(format!(
            "{s} got {got} lines and was told it missed {missed}: should add up to the {n} said"
        ));
    }
    ma.send("after")?;
    ms.expect_line(
        &format!("[{a}] after"),
        "the skipped member is back in the conversation",
    )?;
    for m in [ma, mb, ms] {
        m.close();
    }
    Ok(format!(
        "{detail}; the non-reader got {got}, was told it missed {missed} (in {notices} notice(s)){mem}"
    ))
}

fn slow_disconnect(ctx: &Ctx) -> Result<String, String> {
    let [a, b, s] = names::<3>("slowdisc");
    let (mut ma, _) = Member::join(ctx.addr, &a)?;
    let (mut mb, _) = Member::join(ctx.addr, &b)?;
    ma.expect_notice(&b, "enter")?;
    let (mut ms, _) = Member::join_with(ctx.addr, &s, Some(STALLED_RCVBUF))?;
    ma.expect_notice(&s, "enter")?;
    mb.expect_notice(&s, "enter")?;
    let before = rss(ctx.args.server_pid);
    // b reads a's lines; the leave notice for s lands among them.
    let text = "f".repeat(FLOOD_LINE);
    let n = ctx.args.flood / (text.len() + a.len() + 4) + 1;
    let mut left_seen = false;
    let want_left = format!("* {s} has left the room");
    let mut next = 0;
    let mut recv = |mb: &mut Member, upto: usize, left_seen: &mut bool| -> Result<(), String> {
        while next < upto {
            let line = mb.line().map_err(|e| format!("{b} should get every line while {s} does not read, but after {next}: {e} (the room waits for its slowest member?)"))?;
            if line == want_left {
                *left_seen = true;
                continue;
            }
            let want = format!("[{a}] {next} {text}");
            if line != want {
                return Err(format!(
                    "{b} should have received line {next}, but got {:?}",
                    line.get(..60).unwrap_or(&line)
                ));
            }
            next += 1;
        }
        Ok(())
    };
    for i in 0..n {
        ma.send(&format!("{i} {text}"))?;
        if i >= WINDOW {
            recv(&mut mb, i - WINDOW, &mut left_seen)?;
        }
    }
    recv(&mut mb, n, &mut left_seen)?;
    if !left_seen {
        mb.expect_line(&want_left, "the slow member closed by --slow disconnect")
            .map_err(|e| {
                format!(
                    "{e} (it never read during a {} KiB flood)",
                    ctx.args.flood / 1024
                )
            })?;
    }
    let mem = rss_note(ctx.args.server_pid, before, ctx.args.flood)?;
    // What it still gets is bounded: it must end, well before all n lines.
    let mut got = 0usize;
    let mut ended = false;
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0usize;
    for _ in 0..100_000 {
        match ms.reader.read(&mut buf) {
            Ok(0) | Err(_) => {
                ended = true;
                break;
            }
            Ok(k) => {
                bytes += k;
                got = bytes / (text.len() + a.len() + 4);
            }
        }
    }
    if !ended || got >= n {
        return Err(format!(
            "{s} should have been closed as slow, but it read {bytes} bytes (~{got} of {n} lines) without the server closing it"
        ));
    }
    ma.close();
    mb.close();
    Ok(format!(
        "{b} got all {n} lines; {s} was closed after ~{got} and announced as left{mem}"
    ))
}

fn selected(patterns: &str, case: &str) -> bool {
    patterns
        .split(',')
        .map(str::trim)
        .any(|p| match p.strip_suffix('*') {
            Some(prefix) => case.starts_with(prefix),
            None => p == case,
        })
}

/// Run the selected cases against `addr`, calling `on_result` after each.
pub fn run(
    args: &ChatCheckArgs,
    addr: SocketAddr,
    mut on_result: impl FnMut(&Outcome),
) -> Vec<Outcome> {
    let ctx = Ctx {
        addr,
        args: args.clone(),
    };
    let mut all = Vec::new();
    for &(case, _, f) in CASES {
        if !selected(&args.cases, case) {
            continue;
        }
        let wanted = match case {
            "slow-skip" => args.slow == Some(Slow::Skip),
            "slow-disconnect" => args.slow == Some(Slow::Disconnect),
            _ => true,
        };
        let result = wanted.then(|| f(&ctx));
        let outcome = Outcome { case, result };
        on_result(&outcome);
        all.push(outcome);
    }
    all
}

pub fn execute(args: ChatCheckArgs) -> Result<bool> {
    let mut out = io::stdout().lock();
    if args.list {
        for (case, what, _) in CASES {
            writeln!(out, "{case:<16} {what}")?;
        }
        return Ok(true);
    }
    let Some(addr) = &args.addr else {
        anyhow::bail!("--addr is required");
    };
    let addr = addr.resolve()?;
    let outcomes = run(&args, addr, |o| {
        let _ = writeln!(out, "{}", o.line());
    });
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    let skipped = outcomes.iter().filter(|o| o.result.is_none()).count();
    writeln!(
        out,
        "{} passed, {failed} failed, {skipped} skipped",
        outcomes.len() - failed - skipped
    )?;
    Ok(failed == 0)
}
