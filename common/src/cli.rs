//! The command-line arguments every server shares, so that a flag means the
//! same thing, has the same default and is checked the same way in every
//! chapter, and the edges of every command (a bad flag, a bad address, a
//! closed pipe) behave alike.
//!
//! A chapter flattens [`ServerArgs`] into its own `server` subcommand, parses
//! with [`parse`] (which fills in the chapter's default port, so `--help`
//! shows the real one) and ends `main` with [`exit`]:
//!
//! ```ignore
//! #[derive(clap::Parser)]
//! struct Cli { #[command(subcommand)] command: Option<Command> }
//! #[derive(clap::Subcommand)]
//! enum Command { Server { #[command(flatten)] args: common::cli::ServerArgs } }
//!
//! fn main() -> std::process::ExitCode {
//!     let cli: Cli = common::cli::parse(common::cli::ports::TCP_ECHO);
//!     common::log::init();
//!     common::cli::exit("tcp-echo", run(cli))
//! }
//! ```
//!
//! **Validation happens while parsing**, before anything is bound or
//! announced: every numeric flag has a value parser with its accepted range,
//! so `--max-conns 0` ends the program with status 2 and clap's one line,
//! `error: invalid value '0' for '--max-conns <N>': must be 1 or more (at most
//! 1000000)`. A script waiting for `listening on` never sees that line from a
//! server that cannot serve.
//!
//! **Addresses are parsed, not guessed** ([`parse_host_port`]): exactly
//! `HOST:PORT`, `[V6]:PORT` or `IPV4:PORT`; a string that is not one of those
//! is an error that names what is wrong, and never reaches a DNS lookup.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use crate::config::{
    DEFAULT_GRACE, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNS, DEFAULT_MAX_FRAME, DEFAULT_MAX_PENDING,
    DEFAULT_STALL_TIMEOUT, DEFAULT_WORK, ServerConfig,
};
use crate::framing::Framing;

mod values;
pub use values::{
    count_in, duration_text, number_and_unit, parse_duration, parse_grace, parse_idle,
    parse_max_conns, parse_max_frame, parse_max_pending, parse_size, parse_stall, parse_timeout,
    parse_work, size_text,
};

/// Default client `--timeout`: on connecting and on each echo.
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The defaults as `--help` shows them ("1MiB", "30s"), made from the
/// constants of [`crate::config`] so that no default is written twice. clap
/// wants a `&'static str`; each string is built once, on first use.
mod shown {
    use super::*;
    pub static MAX_FRAME: LazyLock<String> = LazyLock::new(|| size_text(DEFAULT_MAX_FRAME));
    pub static MAX_PENDING: LazyLock<String> = LazyLock::new(|| size_text(DEFAULT_MAX_PENDING));
    pub static IDLE: LazyLock<String> = LazyLock::new(|| duration_text(DEFAULT_IDLE_TIMEOUT));
    pub static STALL: LazyLock<String> = LazyLock::new(|| duration_text(DEFAULT_STALL_TIMEOUT));
    pub static GRACE: LazyLock<String> = LazyLock::new(|| duration_text(DEFAULT_GRACE));
    pub static TIMEOUT: LazyLock<String> = LazyLock::new(|| duration_text(DEFAULT_CLIENT_TIMEOUT));
}

/// Default ports, one per chapter, so all servers can run at once.
pub mod ports {
    pub const TCP_ECHO: u16 = 7001;
    pub const UDP_ECHO: u16 = 7002;
    pub const THREADED_SERVER: u16 = 7003;
    pub const ASYNC_SERVER: u16 = 7004;
    pub const TLS_ECHO: u16 = 7005;
    pub const PYTHON_ASYNCIO: u16 = 7006;
}

/// Accepted ranges of the shared flags; a value outside is refused at parse
/// time with the range in the message.
pub mod limits {
    use std::time::Duration;
    pub const MAX_FRAME: (usize, usize) = (1, 1 << 30);
    pub const MAX_CONNS: (usize, usize) = (1, 1_000_000);
    pub const MAX_PENDING: (usize, usize) = (1 << 10, 1 << 30);
    /// `--idle-timeout`: 0 (off) up to a day.
    pub const IDLE: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(86_400));
    pub const STALL: (Duration, Duration) = (Duration::from_millis(1), Duration::from_secs(3600));
    pub const GRACE: (Duration, Duration) = (Duration::from_millis(1), Duration::from_secs(600));
    pub const WORK: (u32, u32) = (0, 1_000_000);
}

/// Flags shared by every TCP server. Their defaults are the constants of
/// [`crate::config`].
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Address to listen on: IPV4:PORT, [IPV6]:PORT or HOSTNAME:PORT. Port 0
    /// picks a free port, printed as `listening on ADDR`.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port)]
    pub addr: Option<HostPort>,

    /// How frames are delimited: `line` (up to \n), `length` (4-byte
    /// big-endian length prefix) or `raw` (no framing, echo as received).
    #[arg(long, value_enum, default_value_t = Framing::default())]
    pub framing: Framing,

    /// Largest frame accepted (suffixes K, M, KiB, MiB). A bigger frame is
    /// logged and its connection closed; nothing is allocated for it.
    #[arg(long, value_name = "BYTES", default_value = shown::MAX_FRAME.as_str(), value_parser = parse_max_frame)]
    pub max_frame: usize,

    /// Most clients served at once. Over the limit a client is refused (or
    /// waits in the backlog; each chapter documents which), and that is logged.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNS, value_parser = parse_max_conns)]
    pub max_conns: usize,

    /// Unsent echo bytes one connection may hold; at the limit the server
    /// stops reading that client until it reads its echoes (backpressure).
    #[arg(long, value_name = "BYTES", default_value = shown::MAX_PENDING.as_str(), value_parser = parse_max_pending)]
    pub max_pending: usize,

    /// Close a connection that sends nothing for this long (`30s`, `500ms`,
    /// `2m`; `0` turns it off).
    #[arg(long, value_name = "DURATION", default_value = shown::IDLE.as_str(), value_parser = parse_idle)]
    pub idle_timeout: Duration,

    /// Close a connection whose echoes have waited this long without the
    /// client taking a byte of them (it stopped reading).
    #[arg(long, value_name = "DURATION", default_value = shown::STALL.as_str(), value_parser = parse_stall)]
    pub stall_timeout: Duration,

    /// Shutdown deadline after Ctrl-C/SIGTERM: owed echoes are sent within
    /// it, and connections still open when it passes are cut.
    #[arg(long, value_name = "DURATION", default_value = shown::GRACE.as_str(), value_parser = parse_grace)]
    pub grace: Duration,

    /// CPU work per frame: N rounds of a hash over the payload before the
    /// echo (a stand-in for parsing or crypto). 0 = pure I/O.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_WORK, value_parser = parse_work)]
    pub work: u32,
}

/// The flags' defaults are [`ServerConfig::default`]'s, with no address.
impl Default for ServerArgs {
    fn default() -> Self {
        let c = ServerConfig::default();
        ServerArgs {
            addr: None,
            framing: c.framing,
            max_frame: c.max_frame,
            max_conns: c.max_conns,
            max_pending: c.max_pending,
            idle_timeout: c.idle_timeout.unwrap_or(Duration::ZERO),
            stall_timeout: c.stall_timeout,
            grace: c.grace,
            work: c.work,
        }
    }
}

impl From<&ServerArgs> for ServerConfig {
    fn from(args: &ServerArgs) -> Self {
        ServerConfig {
            framing: args.framing,
            max_frame: args.max_frame,
            max_conns: args.max_conns,
            max_pending: args.max_pending,
            idle_timeout: args.idle(),
            stall_timeout: args.stall_timeout,
            grace: args.grace,
            work: args.work,
        }
    }
}

impl ServerArgs {
    /// `--addr` (resolved if it is a host name), or 127.0.0.1 with the
    /// chapter's default port.
    pub fn socket_addr(&self, default_port: u16) -> io::Result<SocketAddr> {
        match &self.addr {
            Some(a) => a.resolve(),
            None => Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), default_port)),
        }
    }

    /// The idle timeout, or `None` when turned off with `0`.
    pub fn idle(&self) -> Option<Duration> {
        (!self.idle_timeout.is_zero()).then_some(self.idle_timeout)
    }

    /// The one configuration every server is built from.
    pub fn config(&self) -> ServerConfig {
        ServerConfig::from(self)
    }
}

/// Flags shared by every TCP client subcommand (`<chapter> client`).
#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// Server address: IPV4:PORT, [IPV6]:PORT or HOSTNAME:PORT.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port)]
    pub addr: Option<HostPort>,

    /// `line`, `length` or `raw`: must match the server's `--framing`.
    #[arg(long, value_enum, default_value_t = Framing::default())]
    pub framing: Framing,

    /// Largest echo accepted (suffixes K, M, KiB, MiB).
    #[arg(long, value_name = "BYTES", default_value = shown::MAX_FRAME.as_str(), value_parser = parse_max_frame)]
    pub max_frame: usize,

    /// Bound on connecting and on waiting for each echo (1ms to 1h).
    #[arg(long, value_name = "DURATION", default_value = shown::TIMEOUT.as_str(), value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Messages to send, one frame each; without any, each stdin line is one.
    pub messages: Vec<String>,
}

impl ClientArgs {
    /// `--addr` (resolved if it is a host name), or the chapter's default.
    pub fn socket_addr(&self, default_port: u16) -> io::Result<SocketAddr> {
        match &self.addr {
            Some(a) => a.resolve(),
            None => Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), default_port)),
        }
    }
}

/// The subcommands of every chapter, in one order: the demo (also what runs
/// without a subcommand), the server, the client. A chapter with more
/// (tls-echo's `certs` and `sniff`) keeps its own enum in this order.
#[derive(clap::Subcommand, Debug)]
pub enum Chapter<S: clap::Args, C: clap::Args> {
    /// Server and client in one process on an ephemeral port; prints the transcript (the default).
    Demo,
    /// Run the server until Ctrl-C or SIGTERM.
    Server(S),
    /// Send each MESSAGE (or each stdin line) as one frame and print its echo.
    Client(C),
}

#[derive(clap::Parser, Debug)]
struct Commands<T: clap::Subcommand> {
    #[command(subcommand)]
    command: Option<T>,
}

/// Parse a binary whose command line is a set of subcommands `T` (None:
/// none was given), with its name and one-line description in `--help` and
/// `default_port` as the default of every `--addr` (see [`parse`]).
pub fn parse_commands<T: clap::Subcommand + fmt::Debug>(
    name: &'static str,
    about: &'static str,
    default_port: u16,
) -> Option<T> {
    parse_commands_with(name, about, default_port, |cmd| cmd)
}

/// [`parse_commands`], with a chance to adjust the command first (say, a
/// chapter that lets `server --addr` also take `unix:PATH`).
pub fn parse_commands_with<T: clap::Subcommand + fmt::Debug>(
    name: &'static str,
    about: &'static str,
    default_port: u16,
    adjust: impl FnOnce(clap::Command) -> clap::Command,
) -> Option<T> {
    let cli: Commands<T> = parse_as(default_port, |cmd| {
        adjust(
            cmd.name(name)
                .bin_name(name)
                .about(about)
                .version(env!("CARGO_PKG_VERSION")),
        )
    });
    cli.command
}

/// The whole `main` of a chapter binary: parse (with the chapter's default
/// port, its name and one-line description in `--help`), start logging
/// (`warn` for the demo, whose transcript is on stdout; `info` otherwise;
/// `RUST_LOG` overrides both), run, and [`exit`].
///
/// ```ignore
/// fn main() -> ExitCode {
///     common::cli::chapter_main("tcp-echo", "Chapter 5: ...", ports::TCP_ECHO, run)
/// }
///
/// fn run(command: Chapter<ServerArgs, ClientArgs>) -> anyhow::Result<()> {
///     match command {
///         Chapter::Demo => demo(),
///         Chapter::Server(args) => serve(&args),
///         Chapter::Client(args) => talk(args),
///     }
/// }
/// ```
pub fn chapter_main<S, C>(
    name: &'static str,
    about: &'static str,
    default_port: u16,
    run: impl FnOnce(Chapter<S, C>) -> anyhow::Result<()>,
) -> ExitCode
where
    S: clap::Args + fmt::Debug,
    C: clap::Args + fmt::Debug,
{
    let command = parse_commands(name, about, default_port).unwrap_or(Chapter::Demo);
    main_with(name, matches!(command, Chapter::Demo), || run(command))
}

/// The end of `main` for a binary with its own command enum: start logging
/// (`warn` when `demo`, else `info`; `RUST_LOG` overrides), run, [`exit`].
pub fn main_with(name: &str, demo: bool, run: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    if demo {
        crate::log::init_with_default("warn");
    } else {
        crate::log::init();
    }
    exit(name, run())
}

/// A parsed `--addr`: an IP socket address, or a host name and a port
/// (resolved only when the program binds or connects, and only because the
/// string *is* a host name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPort {
    Ip(SocketAddr),
    Name { host: String, port: u16 },
}

impl HostPort {
    /// The socket address: as written, or the first address the host name
    /// resolves to (`getaddrinfo`, which reads /etc/hosts before DNS).
    pub fn resolve(&self) -> io::Result<SocketAddr> {
        match self {
            HostPort::Ip(addr) => Ok(*addr),
            HostPort::Name { host, port } => (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {host}: {e}")))?
                .next()
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address found"))
                }),
        }
    }

    pub fn port(&self) -> u16 {
        match self {
            HostPort::Ip(a) => a.port(),
            HostPort::Name { port, .. } => *port,
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPort::Ip(a) => write!(f, "{a}"),
            HostPort::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl FromStr for HostPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_host_port(s)
    }
}

impl From<SocketAddr> for HostPort {
    fn from(a: SocketAddr) -> Self {
        HostPort::Ip(a)
    }
}

const ADDR_FORM: &str = "write HOST:PORT, e.g. 127.0.0.1:7001 or [::1]:7001";

/// Parse `--addr`: `IPV4:PORT`, `[IPV6]:PORT` or `HOSTNAME:PORT`, and
/// nothing else. The message says what is wrong with the string; a string
/// that is neither an IP address nor a valid host name is refused here, so a
/// typo never turns into a DNS query and a confusing "Name or service not
/// known".
pub fn parse_host_port(s: &str) -> Result<HostPort, String> {
    if s.is_empty() {
        return Err(format!("empty address ({ADDR_FORM})"));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return Err(format!("unclosed `[` ({ADDR_FORM})"));
        };
        let ip: Ipv6Addr = inside
            .parse()
            .map_err(|_| format!("`{inside}` is not an IPv6 address"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => parse_port(p)?,
            None if after.is_empty() => return Err(format!("missing :PORT ({ADDR_FORM})")),
            None => return Err(format!("unexpected `{after}` after `]` ({ADDR_FORM})")),
        };
        return Ok(HostPort::Ip(SocketAddr::new(IpAddr::V6(ip), port)));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("missing :PORT ({ADDR_FORM})"));
    };
    if host.contains(':') {
        return Err("an IPv6 address goes in brackets with its port, e.g. [::1]:7001".to_owned());
    }
    if host.is_empty() {
        return Err(format!("missing host before `:` ({ADDR_FORM})"));
    }
    let port = parse_port(port)?;
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let ip: Ipv4Addr = host
            .parse()
            .map_err(|_| format!("`{host}` is not an IPv4 address"))?;
        return Ok(HostPort::Ip(SocketAddr::new(IpAddr::V4(ip), port)));
    }
    if !is_host_name(host) {
        return Err(format!("`{host}` is neither an IP address nor a host name"));
    }
    Ok(HostPort::Name {
        host: host.to_owned(),
        port,
    })
}

fn parse_port(p: &str) -> Result<u16, String> {
    if p.is_empty() {
        return Err(format!("missing port after `:` ({ADDR_FORM})"));
    }
    p.parse()
        .map_err(|_| format!("`{p}` is not a port (0 to 65535)"))
}

/// RFC 1123 host names: dot-separated labels of letters, digits and `-`, no
/// label starting or ending with `-`, at most 253 characters, and a last
/// label that is not all digits (that would be a mistyped IPv4 address).
fn is_host_name(h: &str) -> bool {
    let h = h.strip_suffix('.').unwrap_or(h);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    h.len() <= 253
        && h.split('.').all(label_ok)
        && !h
            .rsplit('.')
            .next()
            .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
}

/// Resolve `HOST:PORT` (or the default on 127.0.0.1): parsed first with
/// [`parse_host_port`], so a malformed string is an `InvalidInput` error and
/// never a DNS lookup.
pub fn resolve(addr: Option<&str>, default_port: u16) -> io::Result<SocketAddr> {
    match addr {
        None => Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), default_port)),
        Some(s) => parse_host_port(s)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{s}: {e}")))?
            .resolve(),
    }
}

/// Parse the command line of a chapter binary, with that chapter's default
/// port filled in as the default of every `--addr` (server and client), so
/// `--help` shows the real `[default: 127.0.0.1:7001]`. Exits with status 2
/// and clap's one-line message on any bad flag or value, before the program
/// has bound or printed anything.
pub fn parse<C: clap::Parser>(default_port: u16) -> C {
    parse_as(default_port, |cmd| cmd)
}

/// [`parse`], with a chance to adjust the command (name, about) first.
fn parse_as<C: clap::Parser>(
    default_port: u16,
    adjust: impl FnOnce(clap::Command) -> clap::Command,
) -> C {
    // clap wants a `'static` default; this one string per process is the
    // cost of a default decided at run time.
    let default: &'static str = Box::leak(format!("127.0.0.1:{default_port}").into_boxed_str());
    let matches = with_default_addr(adjust(C::command()), default).get_matches();
    C::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn with_default_addr(mut cmd: clap::Command, default: &'static str) -> clap::Command {
    if cmd.get_arguments().any(|a| a.get_id() == "addr") {
        cmd = cmd.mut_arg("addr", |a| a.default_value(default));
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in subs {
        cmd = cmd.mut_subcommand(name, |s| with_default_addr(s, default));
    }
    cmd
}

/// The end of every binary's `main`: success, or one line on stderr
/// (`NAME: error: CAUSE: CAUSE`, the whole chain, no backtrace: an
/// unreachable server is an expected failure, not a bug) and status 1.
///
/// A closed stdout (`loadgen compare --list | head -1`) is a normal way for a
/// command-line program to end: when the error chain holds a `BrokenPipe`,
/// exit 0 and print nothing. (Rust ignores SIGPIPE, so the write fails with
/// `EPIPE` instead of killing the process; write with [`crate::outln!`] and
/// `?`, never `println!`, which panics on that error.)
pub fn exit(name: &str, result: anyhow::Result<()>) -> ExitCode {
    exit_with(name, result.map(|()| ExitCode::SUCCESS))
}

/// [`exit`] for a program that chooses its own status when it succeeds
/// (`loadgen check` exits 1 when a case failed, with nothing more to say).
pub fn exit_with(name: &str, result: anyhow::Result<ExitCode>) -> ExitCode {
    use std::io::Write as _;
    match result {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(io::stderr(), "{name}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Does this error (or anything in its cause chain) say stdout was closed?
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// `println!` that returns the write's `io::Result` instead of panicking
/// when stdout is closed: `common::outln!("{echo}")?;`.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        ::std::writeln!(::std::io::stdout().lock(), $($arg)*)
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct T {
        #[command(flatten)]
        a: ServerArgs,
    }

    /// The `--help` strings are made from the constants; they must read back
    /// as the same values, and read the way a person would type them.
    #[test]
    fn defaults_are_shown_as_typed_and_read_back() {
        for n in [DEFAULT_MAX_FRAME, DEFAULT_MAX_PENDING, 1, 1536, 3 << 10, 0] {
            assert_eq!(parse_size(&size_text(n)), Ok(n), "{}", size_text(n));
        }
        for d in [
            DEFAULT_IDLE_TIMEOUT,
            DEFAULT_STALL_TIMEOUT,
            DEFAULT_GRACE,
            DEFAULT_CLIENT_TIMEOUT,
            Duration::from_millis(1500),
            Duration::from_micros(250),
            Duration::ZERO,
        ] {
            assert_eq!(
                parse_duration(&duration_text(d)),
                Ok(d),
                "{}",
                duration_text(d)
            );
        }
        let help = <T as clap::CommandFactory>::command()
            .render_help()
            .to_string();
        for shown in [
            "[default: 1MiB]",
            "[default: 256KiB]",
            "[default: 30s]",
            "[default: 10s]",
        ] {
            assert!(help.contains(shown), "{shown} missing from:\n{help}");
        }
        #[derive(Parser, Debug)]
        struct C {
            #[command(flatten)]
            a: ClientArgs,
        }
        let c = C::try_parse_from(["x"]).unwrap();
        assert_eq!(c.a.timeout, DEFAULT_CLIENT_TIMEOUT);
        assert_eq!(c.a.max_frame, DEFAULT_MAX_FRAME);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-5s").unwrap_err().contains("negative"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn defaults_match_default_impl() {
        let t = T::try_parse_from(["x"]).unwrap();
        assert_eq!(t.a.config(), ServerConfig::default());
        assert_eq!(t.a.config(), ServerArgs::default().config());
        let t = T::try_parse_from([
            "x",
            "--framing",
            "length",
            "--idle-timeout",
            "0",
            "--addr",
            "[::1]:0",
        ])
        .unwrap();
        assert_eq!(t.a.framing, Framing::Length);
        assert_eq!(t.a.idle(), None);
        assert!(t.a.socket_addr(1).unwrap().is_ipv6());
    }

    /// Each value that would make a server useless is refused by the parser,
    /// with clap's exit status 2 and a message naming the flag and range.
    #[test]
    fn useless_values_are_refused_while_parsing() {
        for (flag, value, says) in [
            ("--max-conns", "0", "between 1 and 1000000"),
            ("--max-conns", "-1", "not a whole number"),
            ("--max-frame", "0", "between 1 byte and 1GiB"),
            ("--max-frame", "2GiB", "between 1 byte and 1GiB"),
            ("--max-pending", "10", "between 1KiB and 1GiB"),
            ("--grace", "0", "between 1ms and 600s"),
            ("--grace", "-1s", "cannot be negative"),
            ("--stall-timeout", "0", "between 1ms and 3600s"),
            ("--idle-timeout", "2d", "unknown unit"),
            ("--idle-timeout", "100000h", "0 (off) or at most 86400s"),
            ("--work", "4000000000", "between 0 and 1000000"),
            ("--addr", "127.0.0.1", "missing :PORT"),
        ] {
            // `--flag=value`, so that clap reads `-1` as a value, not a flag.
            let err = T::try_parse_from(["x".to_owned(), format!("{flag}={value}")]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{flag} {value}");
            let text = err.to_string();
            assert!(
                text.contains(flag) && text.contains(value) && text.contains(says),
                "{flag} {value}: {text}"
            );
        }
    }

    #[test]
    fn addresses_are_parsed_never_guessed() {
        let ok = |s: &str| parse_host_port(s).unwrap();
        assert_eq!(
            ok("127.0.0.1:7001"),
            HostPort::Ip("127.0.0.1:7001".parse().unwrap())
        );
        assert_eq!(ok("[::1]:0"), HostPort::Ip("[::1]:0".parse().unwrap()));
        assert_eq!(
            ok("localhost:80"),
            HostPort::Name {
                host: "localhost".into(),
                port: 80
            }
        );
        assert_eq!(ok("my-host.example.:1").port(), 1);
        for (bad, says) in [
            ("127.0.0.1", "missing :PORT"),
            ("127.0.0.1:", "missing port after `:`"),
            ("127.0.0.1:70000", "`70000` is not a port"),
            ("[::1:7000", "unclosed `[`"),
            ("[::1]", "missing :PORT"),
            ("[::1]x", "unexpected `x`"),
            ("[::g]:1", "is not an IPv6 address"),
            ("::1:7000", "in brackets"),
            ("1.2.3:80", "`1.2.3` is not an IPv4 address"),
            ("300.1.1.1:80", "is not an IPv4 address"),
            ("bad_host:80", "neither an IP address nor a host name"),
            ("-x:80", "neither"),
            (":80", "missing host"),
            ("", "empty address"),
        ] {
            let e = parse_host_port(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        // The io::Error form keeps the message and never resolves.
        let e = resolve(Some("[::1:7000"), 1).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("unclosed"), "{e}");
    }

    #[test]
    fn parse_fills_in_the_chapter_port() {
        #[derive(Parser, Debug)]
        struct Cli {
            #[command(subcommand)]
            cmd: Sub,
        }
        #[derive(clap::Subcommand, Debug)]
        enum Sub {
            Server(ServerArgs),
        }
        let cmd = with_default_addr(<Cli as clap::CommandFactory>::command(), "127.0.0.1:7009");
        let help = cmd
            .find_subcommand("server")
            .unwrap()
            .clone()
            .render_help()
            .to_string();
        assert!(help.contains("[default: 127.0.0.1:7009]"), "{help}");
        let m = cmd.try_get_matches_from(["x", "server"]).unwrap();
        let Sub::Server(a) = <Cli as clap::FromArgMatches>::from_arg_matches(&m)
            .unwrap()
            .cmd;
        assert_eq!(a.socket_addr(1).unwrap().port(), 7009);
    }

    #[test]
    fn broken_pipe_anywhere_in_the_chain_is_success() {
        use anyhow::Context as _;
        let e = Err::<(), _>(io::Error::from(io::ErrorKind::BrokenPipe))
            .context("writing the report")
            .unwrap_err();
        assert!(is_broken_pipe(&e));
        assert!(!is_broken_pipe(&anyhow::anyhow!("refused")));
    }
}
