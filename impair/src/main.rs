//! `impair`: a bad network between a client and a server, on loopback.
//!
//! ```text
//! impair udp --listen 127.0.0.1:7102 --upstream 127.0.0.1:7002 [--loss 5% --dup 1% --reorder 5%
//!            --delay 50ms --jitter 10ms --rate 1Mbit --queue N --seed S]
//! impair tcp --listen 127.0.0.1:7101 --upstream 127.0.0.1:7001 [--delay 50ms --jitter 10ms
//!            --rate 1Mbit --split[=MAX] --coalesce 20ms --stall-after BYTES --stall 5s
//!            --reset-after BYTES --direction up|down|both]
//! ```
//!
//! Run with, in three terminals: a server (`cargo run -p udp-echo -- server`),
//! the relay (`cargo run -p impair -- udp --listen 127.0.0.1:7102 --upstream
//! 127.0.0.1:7002 --loss 5%`), and a client pointed at the relay
//! (`cargo run -p udp-echo -- client --addr 127.0.0.1:7102 --count 100`).
//! Watch the relay's report every 5 s on stderr and its summary on Ctrl-C.
//! See impair/README.md for the labs.
//!
//! `main` is thin: parse (clap exits 2 with a one-line error on a bad flag),
//! apply the loopback rule, start the relay, print `listening on ADDR`.

use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use impair::Relay;
use impair::cli::{Cli, Command, CommonArgs, check_loopback};

fn main() -> ExitCode {
    common::log::init();
    let cli = Cli::parse();
    common::cli::exit("impair", run(cli))
}

/// Loopback only unless asked: a relay that drops and delays is harmless on
/// 127.0.0.1 and in your own namespaces, and a nuisance anywhere else. A
/// refusal is a usage error, so it goes through clap (one line, exit 2).
fn enforce_loopback(c: &CommonArgs) {
    if c.allow_non_loopback {
        return;
    }
    for (flag, addr) in [("--listen", c.listen), ("--upstream", c.upstream)] {
        if let Err(msg) = check_loopback(flag, addr) {
            Cli::command()
                .error(clap::error::ErrorKind::ValueValidation, msg)
                .exit();
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let relay = match cli.command {
        Command::Udp(args) => {
            enforce_loopback(&args.common);
            let listen = args.common.listen;
            Relay::udp(listen, args.config())
                .with_context(|| format!("cannot bind UDP {listen}"))?
        }
        Command::Tcp(args) => {
            enforce_loopback(&args.common);
            let listen = args.common.listen;
            Relay::tcp(listen, args.config())
                .with_context(|| format!("cannot listen on TCP {listen}"))?
        }
    };
    relay
        .shutdown
        .install_signal_handler()
        .context("installing the signal handler")?;
    common::net::announce(relay.addr);
    relay.wait().context("relay")?;
    Ok(())
}
