//! The default subcommand: a server and a client in one process, the
//! transcript printed. Run with `cargo run -p udp-echo` (no arguments).
//!
//! The server runs on an ephemeral port (`127.0.0.1:0`) in a thread and
//! drops a quarter of what it receives, with a fixed seed, so the demo shows
//! the same losses every time; the client resends after a short timeout and
//! recovers them. What to watch: the `resending` lines, the `(attempt 2)`
//! replies, and the two summaries, whose numbers must agree (every
//! transmission the client counts, the server received; every retry the
//! client made answers a datagram the server dropped).

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Duration;

use common::Shutdown;

use crate::client::{self, ClientConfig};
use crate::server::{self, ServerConfig};

/// `--drop` used by the demo.
pub const DROP_PERCENT: f64 = 25.0;
/// `--seed` used by the demo.
pub const SEED: u64 = 7;
/// The messages the demo sends, one datagram each (plus one of the largest
/// size IPv4 allows, sent after them).
pub const MESSAGES: [&str; 7] = [
    "hello",
    "",
    "each datagram is one message",
    "boundaries are kept",
    "but delivery is not promised",
    "nor is order",
    "so the client counts and retries",
];

/// Run the demo, writing the transcript to `out`. Returns the client's
/// report so a test can check it.
pub fn run(out: &mut dyn Write) -> io::Result<client::Report> {
    let socket = server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let addr = socket.local_addr()?;
    let shutdown = Shutdown::new();
    let config = ServerConfig {
        drop_percent: DROP_PERCENT,
        seed: SEED,
        ..ServerConfig::default()
    };
    let server = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || server::run(socket, config, shutdown))
    };
    let client_config = ClientConfig {
        timeout: Duration::from_millis(300),
        retries: 3,
        window: 1,
    };
    writeln!(
        out,
        "udp-echo demo: a server on {addr} in this process, throwing away {DROP_PERCENT}% of \
         the datagrams it receives\n(like `udp-echo server --drop {DROP_PERCENT} --seed {SEED}`), \
         and a client that numbers its datagrams and resends\nafter 300 ms without a reply, \
         up to 3 times (like `udp-echo client --timeout 300ms --retries 3 ...`).\n"
    )?;
    for m in MESSAGES {
        writeln!(out, "> {m:?}")?;
    }
    writeln!(
        out,
        "> (one generated datagram of 65507 bytes, the IPv4 maximum)\n"
    )?;

    let payloads = MESSAGES
        .iter()
        .map(|m| Ok(m.as_bytes().to_vec()))
        .chain(client::generated(1, crate::wire::MAX_IPV4_PAYLOAD));
    let result = client::connect(addr)
        .map_err(|source| client::ClientError::Io {
            op: "connect to",
            server: addr,
            source,
        })
        .and_then(|socket| {
            client::run(&socket, payloads, &client_config, |event| {
                // The transcript is best effort: a closed stdout must not
                // stop the exchange.
                let _ = writeln!(out, "{event}");
            })
        });
    shutdown.trigger();
    let summary = match server.join() {
        Ok(summary) => summary?,
        Err(_) => return Err(io::Error::other("the server thread panicked")),
    };
    let report = result.map_err(io::Error::other)?;
    writeln!(out, "\nclient: {report}")?;
    writeln!(out, "server: {summary}")?;
    writeln!(
        out,
        "\nNow try it in two terminals: `udp-echo server --drop 25` and `nc -u 127.0.0.1 7002` \
         (or `udp-echo client hello`)."
    )?;
    Ok(report)
}
