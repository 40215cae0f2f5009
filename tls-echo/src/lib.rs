//! # tls-echo: chapter 8, security with TLS
//!
//! The echo server of the earlier chapters, wrapped in TLS with rustls, so
//! that what crosses the network can be neither read nor altered. The
//! course's text on security says this takes two kinds of cryptography; this
//! crate shows both at work:
//!
//! - **asymmetric** (public-key) cryptography in the *handshake*: client and
//!   server each make a one-time key pair and exchange only the public
//!   halves (ECDHE, here X25519 or P-256); both compute the same secret from
//!   them, which a listener cannot. The server *signs* the exchange with the
//!   private key behind its certificate, and the client checks that
//!   certificate against a CA it trusts, so it knows it is not talking to
//!   an impostor in the middle.
//! - **symmetric** cryptography in the *record layer*: from that shared
//!   secret both derive keys for an AEAD cipher (AES-GCM or ChaCha20-Poly1305)
//!   that encrypts every record and appends a tag; a changed bit makes the
//!   tag check fail and the connection is dropped.
//!
//! | module     | what it shows                                                     |
//! |------------|-------------------------------------------------------------------|
//! | [`pki`]    | a CA and certificates made at start-up (rcgen); PEM files; rustls configs |
//! | [`server`] | tokio + tokio-rustls: handshake per task with a deadline, then the shared echo and the workspace's server contract (backpressure, stall and idle timeouts, a shutdown that empties rustls and the kernel within `--grace`) |
//! | [`client`] | verifying the server, the negotiated parameters, one-line errors  |
//! | [`sniff`]  | a relay that prints what an eavesdropper sees: plaintext vs records |
//! | [`demo`]   | the default command: all of the above in one process              |
//!
//! Run with: `cargo run -p tls-echo` (the demo), or see `README.md`.

use std::fmt;
use std::io;

pub mod client;
pub mod demo;
pub mod pki;
pub mod server;
pub mod sniff;

pub use pki::install_crypto_provider;

/// What client and server agreed on in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// `TLS 1.3` or `TLS 1.2`.
    pub protocol: String,
    /// e.g. `TLS13_AES_256_GCM_SHA384`: the symmetric AEAD cipher and the
    /// hash used to derive its keys.
    pub cipher_suite: String,
    /// e.g. `X25519`: the elliptic curve of the (asymmetric) key exchange.
    pub key_exchange: String,
}

impl Negotiated {
    /// Read them off a connection whose handshake is complete.
    pub fn of(conn: &rustls::CommonState) -> Self {
        let protocol = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2".to_string(),
            Some(other) => format!("{other:?}"),
            None => "?".to_string(),
        };
        let cipher_suite = conn
            .negotiated_cipher_suite()
            .map_or_else(|| "?".to_string(), |s| format!("{:?}", s.suite()));
        let key_exchange = conn
            .negotiated_key_exchange_group()
            .map_or_else(|| "?".to_string(), |g| format!("{:?}", g.name()));
        Negotiated {
            protocol,
            cipher_suite,
            key_exchange,
        }
    }

    /// The three lines the client and the demo print.
    pub fn print(&self, out: &mut dyn io::Write) -> io::Result<()> {
        writeln!(out, "protocol:     {}", self.protocol)?;
        writeln!(out, "cipher suite: {}", self.cipher_suite)?;
        writeln!(out, "key exchange: {}", self.key_exchange)
    }
}

impl fmt::Display for Negotiated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, {}, {}",
            self.protocol, self.cipher_suite, self.key_exchange
        )
    }
}
