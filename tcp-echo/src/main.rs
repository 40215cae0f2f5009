//! `tcp-echo`: the blocking TCP chapter.
//!
//! ```text
//! cargo run -p tcp-echo                          # demo: server + client in one process
//! cargo run -p tcp-echo -- server                # listen on 127.0.0.1:7001
//! cargo run -p tcp-echo -- client hello world    # talk to it
//! nc 127.0.0.1 7001                              # or use netcat
//! ```
//!
//! `main` only parses arguments and reports errors; the server and client
//! are library code (`src/server.rs`, `src/client.rs`) so tests run them
//! in-process on port 0. A bad flag or address ends the program with status
//! 2 and one line naming it, before anything is bound; a closed stdout
//! (`tcp-echo | head -1`) ends it quietly with status 0.

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use common::cli::{Chapter, ClientArgs, ServerArgs, ports};
use common::framing::{DEFAULT_MAX_FRAME, Framing};
use common::{ServerConfig, Shutdown};
use tcp_echo::{client, server};

/// Subcommands (`common::cli::Chapter`): the demo (the default), `server`
/// (one client at a time until Ctrl-C, so `--max-conns` has no effect
/// here), `client`.
fn main() -> ExitCode {
    common::cli::chapter_main(
        "tcp-echo",
        "Chapter 5: a blocking, iterative TCP echo server and its client. Without a subcommand: the demo.",
        ports::TCP_ECHO,
        run,
    )
}

fn run(command: Chapter<ServerArgs, ClientArgs>) -> anyhow::Result<()> {
    match command {
        Chapter::Demo => demo(),
        Chapter::Server(args) => serve(&args),
        Chapter::Client(args) => talk(args),
    }
}

fn talk(c: ClientArgs) -> Result<()> {
    let config = client::ClientConfig {
        addr: c.socket_addr(ports::TCP_ECHO)?,
        framing: c.framing,
        max_frame: c.max_frame,
        timeout: c.timeout,
    };
    let mut out = io::stdout().lock();
    if c.messages.is_empty() {
        client::exchange(&config, client::stdin_lines(), &mut out)
    } else {
        client::exchange(
            &config,
            c.messages.into_iter().map(String::into_bytes),
            &mut out,
        )
    }
}

fn serve(args: &ServerArgs) -> Result<()> {
    let addr = args.socket_addr(ports::TCP_ECHO)?;
    let config = args.config();
    let listener = common::net::listen(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let shutdown = Shutdown::new();
    shutdown.install_signal_handler()?;
    common::net::announce(local);
    log::info!(
        "tcp-echo (iterative) on {local}, framing {}, max frame {} bytes, idle timeout {}, \
         grace {:?}: one client at a time, Ctrl-C to stop",
        config.framing,
        config.max_frame,
        config
            .idle_timeout
            .map_or("off".to_string(), |d| format!("{d:?}")),
        config.grace,
    );
    server::run(listener, &config, &shutdown)?;
    Ok(())
}

/// The whole chapter in one process: for each framing, a server thread on
/// an ephemeral port, a client exchange, a graceful shutdown, the summary.
/// (Both ends must agree on the framing: a `line` client talking to a
/// `length` server just waits, since the server is still reading a length.)
fn demo() -> Result<()> {
    common::outln!("== tcp-echo demo: an iterative server and a client in one process ==")?;
    for framing in Framing::ALL {
        let listener = common::net::listen("127.0.0.1:0".parse()?)?;
        let addr = listener.local_addr()?;
        common::outln!(
            "\n-- framing `{framing}`: server listening on {addr} (port 0: the kernel chose) --"
        )?;
        let shutdown = Shutdown::new();
        let server = {
            let shutdown = shutdown.clone();
            let config = ServerConfig {
                framing,
                idle_timeout: Some(Duration::from_secs(5)),
                ..ServerConfig::default()
            };
            std::thread::Builder::new()
                .name("server".into())
                .spawn(move || server::run(listener, &config, &shutdown))?
        };
        let config = client::ClientConfig {
            addr,
            framing,
            max_frame: DEFAULT_MAX_FRAME,
            timeout: Duration::from_secs(5),
        };
        let messages = ["hello", "TCP keeps bytes in order", "bye"];
        let exchanged = client::exchange(
            &config,
            messages.iter().map(|m| m.as_bytes().to_vec()),
            &mut io::stdout().lock(),
        );
        // Stop the server whatever happened to the client (a closed stdout
        // included), so its thread never outlives the demo.
        shutdown.trigger();
        let stats = server
            .join()
            .map_err(|_| anyhow::anyhow!("server thread panicked"))?;
        exchanged?;
        common::outln!("tcp-echo stopped: {}", stats?)?;
    }
    common::outln!(
        "\nTry it with two terminals: `cargo run -p tcp-echo -- server` and `nc 127.0.0.1 {}`.",
        ports::TCP_ECHO
    )?;
    Ok(())
}
