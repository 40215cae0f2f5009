//! `loadgen`: drive, compare and check any echo server of the workspace
//! (or your own).
//!
//! ```text
//! loadgen run     --addr 127.0.0.1:7004 --conns 100 --size 64 --duration 10s
//! loadgen compare --quick                 # every server, same load, one table
//! loadgen check   --addr 127.0.0.1:7004   # conformance and robustness cases
//! loadgen hold    --addr 127.0.0.1:7004 --conns 10000 --pid PID   # RSS per idle connection
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
}

fn main() -> ExitCode {
    common::log::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => loadgen::run::execute(args),
        Command::Compare(args) => loadgen::compare::execute(args),
        Command::Check(args) => loadgen::check::execute(args),
        Command::Hold(args) => loadgen::hold::execute(args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        // Whoever read our stdout has gone (`loadgen compare --list | head
        // -1`): a normal way for a command-line program to end.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Does the error chain hold an `io::Error` of kind `BrokenPipe`?
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
