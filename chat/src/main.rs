//! `chat`: a Budget Chat room in three designs.
//!
//! ```text
//! cargo run -p chat                                      # demo: three scripted members, transcript printed
//! cargo run -p chat -- server --model tokio              # listen on 127.0.0.1:7007 (threads, tokio, event-loop)
//! cargo run -p chat -- server --slow disconnect          # close a member whose outbox is full
//! cargo run -p chat -- client --name alice               # stdin lines in, room lines out
//! nc 127.0.0.1 7007                                      # or any Budget Chat client
//! ```
//!
//! `main` only parses and reports; the room is library code (`src/lib.rs`)
//! so tests and `loadgen` run it in-process on port 0.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chat::{ChatConfig, Model, SlowPolicy};
use common::Shutdown;
use common::cli::{HostPort, ServerArgs, parse_host_port, parse_timeout};
use common::framing::Framing;

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// A server in this process and three scripted members; prints what each one sees (the default).
    Demo {
        #[arg(long, value_enum, default_value_t = Model::Tokio)]
        model: Model,
    },
    /// Run the room until Ctrl-C or SIGTERM.
    Server(ServerCmd),
    /// Join as NAME: each stdin line is said to the room, every room line is printed.
    Client(ClientCmd),
}

#[derive(clap::Args, Debug)]
struct ServerCmd {
    /// The design: `threads`, `tokio` or `event-loop`.
    #[arg(long, value_enum, default_value_t = Model::Tokio)]
    model: Model,
    /// A member whose outbox (--max-pending bytes) is full: `skip` what does
    /// not fit and tell it how many it missed, or `disconnect` it.
    #[arg(long, value_enum, default_value_t = SlowPolicy::Skip)]
    slow: SlowPolicy,
    /// The shared flags; here --max-frame bounds one line and --max-pending
    /// one member's outbox. The chat protocol is lines only (--framing line).
    #[command(flatten)]
    args: ServerArgs,
}

#[derive(clap::Args, Debug)]
struct ClientCmd {
    /// The name to join as: 1 to 16 ASCII letters or digits.
    #[arg(long)]
    name: String,
    /// Server address: IPV4:PORT, [IPV6]:PORT or HOSTNAME:PORT.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port)]
    addr: Option<HostPort>,
    /// Bound on connecting.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_timeout)]
    timeout: Duration,
}

fn main() -> ExitCode {
    let command = common::cli::parse_commands(
        "chat",
        "The chat room (Budget Chat protocol) in three designs. Without a subcommand: the demo.",
        chat::PORT,
    )
    .unwrap_or(Command::Demo {
        model: Model::Tokio,
    });
    let demo = matches!(command, Command::Demo { .. });
    common::cli::main_with("chat", demo, || match command {
        Command::Demo { model } => demo_run(model),
        Command::Server(cmd) => serve(&cmd),
        Command::Client(cmd) => talk(&cmd),
    })
}

fn serve(cmd: &ServerCmd) -> Result<()> {
    if cmd.args.framing != Framing::Line {
        bail!(
            "the chat protocol is lines: --framing {} is not supported",
            cmd.args.framing
        );
    }
    if cmd.args.work != 0 {
        bail!("--work is an echo server's flag; the chat room has no per-line work");
    }
    let addr = cmd.args.socket_addr(chat::PORT)?;
    let listener = common::net::listen(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let shutdown = Shutdown::new();
    shutdown.install_signal_handler()?;
    common::net::announce(local);
    let config = ChatConfig {
        server: cmd.args.config(),
        slow: cmd.slow,
    };
    chat::run(cmd.model, listener, &config, &shutdown)?;
    Ok(())
}

fn talk(cmd: &ClientCmd) -> Result<()> {
    let addr = match &cmd.addr {
        Some(a) => a.resolve()?,
        None => SocketAddr::from(([127, 0, 0, 1], chat::PORT)),
    };
    chat::client::talk(
        addr,
        &cmd.name,
        cmd.timeout,
        io::stdin().lock().lines(),
        io::stdout(),
    )
}

/// One scripted member of the demo.
struct Member {
    name: &'static str,
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Member {
    fn join(addr: SocketAddr, name: &'static str, out: &mut impl Write) -> Result<Member> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut m = Member {
            name,
            reader: BufReader::new(stream.try_clone()?),
            stream,
        };
        m.hear(out)?;
        m.say(name, out)?;
        m.hear(out)?;
        Ok(m)
    }

    fn say(&mut self, line: &str, out: &mut impl Write) -> Result<()> {
        writeln!(out, "{:>6} -> {line}", self.name)?;
        writeln!(self.stream, "{line}")?;
        Ok(())
    }

    fn hear(&mut self, out: &mut impl Write) -> Result<()> {
        let mut line = String::new();
        if self
            .reader
            .read_line(&mut line)
            .context("waiting for the room")?
            == 0
        {
            bail!("{}: the server closed", self.name);
        }
        writeln!(out, "{:>6} <- {}", self.name, line.trim_end())?;
        Ok(())
    }
}

fn demo_run(model: Model) -> Result<()> {
    let listener = common::net::listen(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let addr = listener.local_addr()?;
    let shutdown = Shutdown::new();
    let server = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || chat::run(model, listener, &ChatConfig::default(), &shutdown))
    };
    let out = &mut io::stdout().lock();
    writeln!(
        out,
        "chat demo: the {model} room on {addr} (`->` a member sends, `<-` it receives)\n"
    )?;
    let mut alice = Member::join(addr, "alice", out)?;
    let mut bob = Member::join(addr, "bob", out)?;
    alice.hear(out)?; // bob has entered
    alice.say("hi bob", out)?;
    bob.hear(out)?;
    let mut carol = Member::join(addr, "carol", out)?;
    alice.hear(out)?;
    bob.hear(out)?;
    bob.say("hello both", out)?;
    alice.hear(out)?;
    carol.hear(out)?;
    writeln!(out, "{:>6} -- closes its connection", carol.name)?;
    carol.stream.shutdown(std::net::Shutdown::Both)?;
    alice.hear(out)?;
    bob.hear(out)?;
    writeln!(
        out,
        "\nnot shown: alice never receives its own line; carol saw nothing said before it joined."
    )?;
    shutdown.trigger();
    alice.hear(out)?;
    bob.hear(out)?;
    drop((alice, bob)); // close: the server's shutdown waits for our FIN
    match server.join() {
        Ok(r) => r.map(|_| ()).context("the server failed"),
        Err(_) => bail!("the server thread panicked"),
    }
}
