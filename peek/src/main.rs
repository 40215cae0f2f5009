//! `peek [OPTIONS] -- COMMAND [ARGS...]`: run a command in a private network
//! namespace, capture every packet on its loopback, and print them as ladder
//! diagrams when it exits. `peek read FILE.pcap` draws a saved capture.
//!
//! ```text
//! cargo build -p peek -p tcp-echo
//! target/debug/peek -- target/debug/tcp-echo
//! target/debug/peek --mtu 1500 --pcap /tmp/big.pcap -- python3 peek/lessons/wire.py big
//! target/debug/peek read /tmp/big.pcap --layers 1
//! ```
//!
//! The order of `main` is the lesson: the namespace is made before anything
//! else (a user namespace needs a single-threaded process), the capture
//! socket is open before the command starts (so its first SYN is seen), and
//! the output comes after the command's own, once its last packet is in.

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use peek::{View, capture, namespace, pcap};

#[derive(Debug, Parser)]
#[command(
    name = "peek",
    about = "See every packet a program sends, without root: runs COMMAND in its own \
             network namespace, captures its loopback, draws a ladder per connection.",
    args_conflicts_with_subcommands = true,
    disable_help_subcommand = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    sub: Option<Sub>,
    #[command(flatten)]
    view: ViewArgs,
    #[command(flatten)]
    limits: LimitArgs,
    /// Set loopback's MTU first (default 65536 hides segmentation; try 1500).
    #[arg(long, value_parser = clap::value_parser!(u32).range(68..=65536))]
    mtu: Option<u32>,
    /// Also write the capture to FILE (pcap, opens in tcpdump and Wireshark).
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// Bytes kept of each frame (the rest is counted, not stored); at least
    /// 256, so that every header fits.
    #[arg(long, default_value_t = 262_144, value_parser = clap::value_parser!(u32).range(256..=262_144))]
    snaplen: u32,
    /// The command to run, and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<OsString>,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Draw a saved capture (pcap, Ethernet link type).
    Read {
        file: PathBuf,
        #[command(flatten)]
        view: ViewArgs,
        #[command(flatten)]
        limits: LimitArgs,
    },
}

#[derive(Debug, Args)]
struct ViewArgs {
    /// Draw the ladder to FILE as SVG too.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Show packet N (from 1, as numbered in the ladder) as an annotated hex dump.
    #[arg(long, value_name = "N")]
    layers: Option<usize>,
    /// Only conversations with this port on either side.
    #[arg(long, value_name = "PORT")]
    filter: Option<u16>,
}

#[derive(Debug, Args)]
struct LimitArgs {
    /// Stop keeping packets after this many.
    #[arg(long, default_value_t = 10_000)]
    max_packets: usize,
    /// Stop keeping packets after this many bytes of them.
    #[arg(long, default_value_t = 64 << 20)]
    max_bytes: usize,
}

impl ViewArgs {
    fn view(&self, mtu: Option<u32>) -> View {
        View {
            svg: self.svg.clone(),
            layers: self.layers,
            filter: self.filter,
            mtu,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Nothing has started a thread yet: this is the moment to unshare.
    if cli.sub.is_none() {
        match namespace::enter() {
            Ok(()) => {}
            // Status 4 and this prefix: what the tests recognise as "skip".
            Err(namespace::Error::Refused(why)) => {
                eprintln!("peek: no namespace: {why}");
                return ExitCode::from(4);
            }
            Err(namespace::Error::Failed(why)) => {
                eprintln!("peek: setting up the namespace: {why}");
                return ExitCode::FAILURE;
            }
        }
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peek: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

fn run(cli: Cli) -> Result<ExitCode> {
    let mut out = io::stdout().lock();
    if let Some(Sub::Read { file, view, limits }) = &cli.sub {
        let loaded = pcap::read(file, limits.max_bytes, limits.max_packets)?;
        peek::report(&loaded.frames, &view.view(None), &mut out)?;
        writeln!(
            out,
            "{} packets read from {}",
            loaded.frames.len(),
            file.display()
        )?;
        for n in &loaded.notes {
            writeln!(out, "note: {n}")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mtu = namespace::loopback_up(cli.mtu).context("cannot bring up lo in the namespace")?;
    let fd = capture::open().context("cannot open an AF_PACKET socket on lo")?;
    catch_sigint();
    let (program, args) = cli.command.split_first().context("no command given")?;
    let mut child = Command::new(program)
        .args(args)
        .spawn()
        .with_context(|| format!("cannot run {}", program.to_string_lossy()))?;
    let limits = capture::Limits {
        max_packets: cli.limits.max_packets,
        max_bytes: cli.limits.max_bytes,
        snaplen: cli.snaplen as usize,
    };
    let (cap, status) = capture::run(&fd, &mut child, limits)?;
    writeln!(out, "\n== peek: {} ==", describe(&status))?;
    peek::report(&cap.frames, &cli.view.view(Some(mtu)), &mut out)?;
    writeln!(
        out,
        "{} packets captured on lo (MTU {mtu}), {} bytes",
        cap.frames.len(),
        cap.bytes
    )?;
    if let Some(limit) = &cap.limit {
        writeln!(
            out,
            "note: {limit} reached: {} more packets were seen and not kept",
            cap.not_kept
        )?;
    }
    if cap.kernel_drops > 0 {
        writeln!(
            out,
            "note: the kernel dropped {} packets (socket buffer full)",
            cap.kernel_drops
        )?;
    }
    if let Some(path) = &cli.pcap {
        pcap::write(path, &cap.frames, limits.snaplen)?;
        writeln!(out, "capture written to {}", path.display())?;
    }
    // The command's own status, so `peek -- cmd` fails when `cmd` fails.
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::from(1),
    })
}

fn describe(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("the command exited with status {c}"),
        (None, Some(s)) => format!("the command was killed by signal {s}"),
        _ => "the command ended".into(),
    }
}

/// Ctrl-C goes to the whole foreground process group: let it end the
/// command but not `peek`, which still has the ladder to print. A handler
/// (not SIG_IGN, which `exec` would pass on) is reset in the child by exec.
/// The capture loop passes a SIGINT on to the command, for the case where
/// only `peek` got it (`kill -INT`, `timeout -s INT`).
fn catch_sigint() {
    extern "C" fn note(_: libc::c_int) {
        capture::INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, note as *const () as libc::sighandler_t);
    }
}
