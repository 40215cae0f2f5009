//! `loadgen`: drive, compare and check any echo server of the workspace
//! (or your own).
//!
//! ```text
//! loadgen run     --addr 127.0.0.1:7004 --conns 100 --size 64 --duration 10s
//! loadgen compare --quick                 # every server, same load, one table
//! loadgen check   --addr 127.0.0.1:7004   # conformance and robustness cases
//! loadgen hold    --addr 127.0.0.1:7004 --conns 10000 --pid PID   # RSS per idle connection
//! loadgen run     --addr 127.0.0.1:7004 --rate 5000 --hist-log a.hlog   # on each load host...
//! loadgen merge   a.hlog b.hlog           # ...then the exact combined percentiles
//! loadgen chat-check --addr 127.0.0.1:7007 --slow skip   # the chat room's cases
//! loadgen chat    --addr 127.0.0.1:7007 --members 100 --rate 10   # fan-out latency
//! loadgen compare --chat --quick          # the chat room's three designs, one table
//! ```
//!
//! Each subcommand lives in its own module; this file only dispatches.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    about = "Drive, compare and check echo servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Drive one server and report throughput and latency.
    Run(loadgen::run::RunArgs),
    /// Start every server as a child process and run the same matrix on each.
    Compare(loadgen::compare::CompareArgs),
    /// Run conformance and robustness cases against one server.
    Check(loadgen::check::CheckArgs),
    /// Hold N idle connections open and report the server's RSS per connection.
    Hold(loadgen::hold::HoldArgs),
    /// Add up the latency of `run --hist-log` files (several load hosts):
    /// exact combined percentiles and counts.
    Merge(loadgen::histlog::MergeArgs),
    /// Check a chat server (Budget Chat protocol, slow members), case by case.
    ChatCheck(loadgen::chat::check::ChatCheckArgs),
    /// M chat members talking at rate R: fan-out latency, deliveries/s, server CPU per delivery.
    Chat(loadgen::chat::load::ChatLoadArgs),
}

fn main() -> ExitCode {
    common::log::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => loadgen::run::execute(args),
        Command::Compare(args) => loadgen::compare::execute(args),
        Command::Check(args) => loadgen::check::execute(args),
        Command::Hold(args) => loadgen::hold::execute(args),
        Command::Merge(args) => loadgen::histlog::execute(args),
        Command::ChatCheck(args) => loadgen::chat::check::execute(args),
        Command::Chat(args) => loadgen::chat::load::execute(args),
    };
    // A closed stdout (`loadgen compare --list | head -1`) is a quiet exit 0;
    // any other error is one line; `Ok(false)` (a failed check) is status 1.
    common::cli::exit_with(
        "loadgen",
        result.map(|ok| {
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }),
    )
}
