//! Interop with a TLS stack nobody here wrote: OpenSSL's `s_client`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use common::Framing;
use support::*;

#[test]
fn openssl_s_client_completes_a_tls13_handshake_and_gets_its_echo() {
    let server = TestServer::start(Framing::Line);
    let ca = TempFile::with("ca.pem", &server.ca.cert_pem());
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &server.addr.to_string()])
        .args([
            "-servername",
            "localhost",
            "-tls1_3",
            "-brief",
            "-verify_return_error",
        ])
        .arg("-CAfile")
        .arg(ca.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is needed for this test (apt-get install openssl)");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    stdin.write_all(b"hello from openssl\n").unwrap();
    stdin.flush().unwrap();

    // Wait for the echo line, bounded.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let echo = rx.recv_timeout(TIMEOUT);
    // Closing stdin makes s_client send close_notify and exit.
    drop(stdin);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    let summary = rx.recv_timeout(TIMEOUT);
    let _ = child.kill();
    let _ = child.wait();

    let summary = summary.expect("s_client did not exit");
    assert_eq!(
        echo.as_deref(),
        Ok("hello from openssl\n"),
        "s_client said: {summary}"
    );
    assert!(summary.contains("Protocol version: TLSv1.3"), "{summary}");
    assert!(summary.contains("Verification: OK"), "{summary}");
}
