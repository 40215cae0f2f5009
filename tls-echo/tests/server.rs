//! The TLS server over real sockets on 127.0.0.1:0, driven by a blocking
//! rustls client (independent of the crate's async client).

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns
mod support;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use common::{Framing, Stats};
use rustls::{AlertDescription, CertificateError};
use support::*;
use tls_echo::pki::{Ca, TlsVersions, client_config};
use tls_echo::server::PLAINTEXT_REPLY;

#[test]
fn line_framing_echoes_byte_exact_including_pipelined_frames() -> io::Result<()> {
    let server = TestServer::start(Framing::Line);
    let mut c = tls_connect(server.addr, "localhost", server.client_config())?;
    round_trip(&mut c, b"hello\n")?;
    // Several frames in one write (one TLS record), an empty line, CRLF,
    // bytes that are not UTF-8: all back, exactly.
    round_trip(&mut c, b"a\n\nb\r\n\xff\xfe\x00z\n")?;
    // One frame spread over many writes (many TLS records).
    for part in [&b"sp"[..], b"lit ", b"line\n"] {
        c.write_all(part)?;
        c.flush()?;
    }
    assert_eq!(read_n(&mut c, 11)?, b"split line\n");
    drop(c);
    let stats = server.stop();
    assert_eq!(Stats::get(&stats.frames), 6);
    Ok(())
}

#[test]
fn length_framing_echoes_byte_exact() -> io::Result<()> {
    let server = TestServer::start(Framing::Length);
    let mut c = tls_connect(server.addr, "127.0.0.1", server.client_config())?;
    let mut wire = Vec::new();
    // Empty, binary with newlines, and 100 KB: bigger than one TLS record
    // (16 KiB), so rustls splits and reassembles it.
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    for payload in [&b""[..], b"\n\x00\xffbinary\n", &big] {
        wire.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        wire.extend_from_slice(payload);
    }
    round_trip(&mut c, &wire)?;
    Ok(())
}

#[test]
fn raw_framing_echoes_byte_exact() -> io::Result<()> {
    let server = TestServer::start(Framing::Raw);
    let mut c = tls_connect(server.addr, "localhost", server.client_config())?;
    round_trip(&mut c, b"no framing at all \x00\x01\n")?;
    let blob: Vec<u8> = (0..50_000u32).map(|i| (i * 7) as u8).collect();
    round_trip(&mut c, &blob)?;
    Ok(())
}

#[test]
fn tls12_works_too() -> io::Result<()> {
    let server = TestServer::start(Framing::Line);
    let config = client_config(server.ca.roots().unwrap(), None, TlsVersions::Tls12).unwrap();
    let mut c = tls_connect(server.addr, "localhost", Arc::new(config))?;
    assert_eq!(
        c.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    round_trip(&mut c, b"old but fine\n")
}

#[test]
fn client_trusting_another_ca_is_rejected_and_server_keeps_serving() -> io::Result<()> {
    let server = TestServer::start(Framing::Line);
    let other = Ca::new("another CA").unwrap();
    let config = client_config(other.roots().unwrap(), None, TlsVersions::Any).unwrap();
    let err =
        tls_connect(server.addr, "localhost", Arc::new(config)).expect_err("handshake must fail");
    assert_eq!(
        tls_error(&err),
        Some(&rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer
        )),
        "{err}"
    );
    // Right CA, wrong name: also refused, before any data.
    let err = tls_connect(server.addr, "example.com", server.client_config())
        .expect_err("handshake must fail");
    assert!(
        matches!(
            tls_error(&err),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            ))
        ),
        "{err}"
    );
    let mut c = tls_connect(server.addr, "localhost", server.client_config())?;
    round_trip(&mut c, b"still here\n")?;
    drop(c);
    let stats = server.stop();
    assert_eq!(
        Stats::get(&stats.errors),
        2,
        "two failed handshakes counted"
    );
    Ok(())
}

#[test]
fn plaintext_client_gets_a_clear_error_and_server_survives() -> io::Result<()> {
    let server = TestServer::start(Framing::Line);
    let mut plain = TcpStream::connect(server.addr)?;
    plain.set_read_timeout(Some(TIMEOUT))?;
    plain.write_all(b"hello, is this the echo?\n")?;
    let mut reply = Vec::new();
    plain.read_to_end(&mut reply)?; // the server closes after its one line
    assert_eq!(reply, PLAINTEXT_REPLY);
    let mut c = tls_connect(server.addr, "localhost", server.client_config())?;
    round_trip(&mut c, b"after the plaintext client\n")?;
    drop(c);
    let stats = server.stop();
    assert_eq!(Stats::get(&stats.errors), 1, "the plaintext client counted");
    Ok(())
}

#[test]
fn silent_client_is_dropped_after_the_handshake_timeout() -> io::Result<()> {
    let server = TestServer::start_with(
        Framing::Line,
        |c| c.handshake_timeout = Duration::from_millis(200),
        None,
    );
    let mut silent = TcpStream::connect(server.addr)?;
    silent.set_read_timeout(Some(TIMEOUT))?;
    let mut buf = [0u8; 16];
    // Ok(0): the server closed the connection (well before our 10 s timeout).
    assert_eq!(silent.read(&mut buf)?, 0);
    let mut c = tls_connect(server.addr, "localhost", server.client_config())?;
    round_trip(&mut c, b"served\n")
}

#[test]
fn oversized_frame_closes_only_that_connection() -> io::Result<()> {
    let server = TestServer::start_with(Framing::Length, |c| c.common.max_frame = 16, None);
    let mut ok = tls_connect(server.addr, "localhost", server.client_config())?;
    let mut bad = tls_connect(server.addr, "localhost", server.client_config())?;
    bad.write_all(&17u32.to_be_bytes())?;
    bad.flush()?;
    let mut buf = [0u8; 8];
    // The server sends close_notify and closes: a clean end of stream.
    assert_eq!(bad.read(&mut buf)?, 0);
    let mut frame = 16u32.to_be_bytes().to_vec();
    frame.extend_from_slice(b"exactly 16 bytes");
    round_trip(&mut ok, &frame)
}

#[test]
fn shutdown_closes_idle_connections_with_close_notify() -> io::Result<()> {
    let server = TestServer::start(Framing::Line);
    let mut c = tls_connect(server.addr, "localhost", server.client_config())?;
    round_trip(&mut c, b"before shutdown\n")?;
    let addr = server.addr;
    let stats = server.stop();
    assert_eq!(Stats::get(&stats.frames), 1);
    let mut buf = [0u8; 8];
    assert_eq!(c.read(&mut buf)?, 0, "close_notify, then EOF");
    assert_eq!(
        TcpStream::connect(addr).unwrap_err().kind(),
        io::ErrorKind::ConnectionRefused,
        "no longer accepting"
    );
    Ok(())
}

#[test]
fn mutual_tls_accepts_the_right_certificate_and_refuses_others() -> io::Result<()> {
    let client_ca = Ca::new("client CA").unwrap();
    let server = TestServer::start_with(Framing::Line, |_| {}, Some(client_ca.roots().unwrap()));
    let roots = || server.ca.roots().unwrap();

    // Right certificate: served.
    let good = client_ca.issue_client("alice").unwrap();
    let config = client_config(roots(), Some(good), TlsVersions::Any).unwrap();
    let mut c = tls_connect(server.addr, "localhost", Arc::new(config))?;
    round_trip(&mut c, b"mutual\n")?;

    // In TLS 1.3 the client's side of the handshake is done before the
    // server has checked the client's certificate, so a refusal arrives as
    // an alert on the first read.
    let refused = |config: rustls::ClientConfig| -> rustls::Error {
        let err = match tls_connect(server.addr, "localhost", Arc::new(config)) {
            Err(e) => e,
            Ok(mut c) => round_trip(&mut c, b"let me in\n").expect_err("must be refused"),
        };
        tls_error(&err)
            .cloned()
            .unwrap_or_else(|| panic!("not a TLS error: {err}"))
    };

    // No certificate.
    let err = refused(client_config(roots(), None, TlsVersions::Any).unwrap());
    assert_eq!(
        err,
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired)
    );
    // A certificate from a CA the server does not trust.
    let stranger = Ca::new("client CA")
        .unwrap()
        .issue_client("mallory")
        .unwrap();
    let err = refused(client_config(roots(), Some(stranger), TlsVersions::Any).unwrap());
    assert_eq!(
        err,
        rustls::Error::AlertReceived(AlertDescription::UnknownCA)
    );
    // Same over TLS 1.2, where the refusal ends the handshake itself.
    let err = refused(client_config(roots(), None, TlsVersions::Tls12).unwrap());
    assert!(matches!(err, rustls::Error::AlertReceived(_)), "{err:?}");
    Ok(())
}

#[test]
fn idle_connection_is_closed_after_the_idle_timeout() -> io::Result<()> {
    let server = TestServer::start_with(
        Framing::Line,
        |c| c.common.idle_timeout = Some(Duration::from_millis(200)),
        None,
    );
    let mut c = tls_connect(server.addr, "localhost", server.client_config())?;
    round_trip(&mut c, b"then silence\n")?;
    let mut buf = [0u8; 8];
    assert_eq!(c.read(&mut buf)?, 0, "closed with close_notify");
    let stats = server.stop();
    assert_eq!(Stats::get(&stats.timed_out), 1, "idle close counted");
    assert_eq!(
        Stats::get(&stats.errors),
        0,
        "an idle client is not an error"
    );
    Ok(())
}

#[test]
fn truncated_line_is_an_error_for_that_connection() -> io::Result<()> {
    let server = TestServer::start(Framing::Line);
    let mut c = tls_connect(server.addr, "localhost", server.client_config())?;
    round_trip(&mut c, b"whole\n")?;
    c.write_all(b"half a li")?;
    // close_notify: a clean end of the TLS stream, in the middle of a line.
    c.conn.send_close_notify();
    c.flush()?;
    let mut buf = [0u8; 8];
    assert_eq!(c.read(&mut buf)?, 0);
    let stats = server.stop();
    assert_eq!(Stats::get(&stats.frames), 1, "the half line is not echoed");
    assert_eq!(Stats::get(&stats.errors), 1);
    Ok(())
}

#[test]
fn over_max_conns_is_refused() -> io::Result<()> {
    let server = TestServer::start_with(Framing::Line, |c| c.common.max_conns = 1, None);
    let mut first = tls_connect(server.addr, "localhost", server.client_config())?;
    round_trip(&mut first, b"I hold the only slot\n")?;
    let second = tls_connect(server.addr, "localhost", server.client_config());
    assert!(second.is_err(), "second client must be refused");
    round_trip(&mut first, b"still served\n")?;
    drop(first);
    let stats = server.stop();
    assert_eq!(Stats::get(&stats.refused), 1);
    Ok(())
}
