//! The `tls-echo` binary as a user runs it: the server as a child process
//! (announce line, CA file, SIGTERM), the client's one-line errors and exit
//! codes, and the demo.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns
mod support;

use std::process::{Command, Output, Stdio};
use std::sync::mpsc;

use common::Framing;
use support::*;
use tls_echo::pki::Ca;

/// Run a command to completion, giving up (and killing it) after TIMEOUT.
fn run_bounded(mut cmd: Command) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(id.to_string()).status();
            panic!("command did not finish within {TIMEOUT:?}");
        }
    }
}

fn client(addr: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("client").arg("--addr").arg(addr).args(args);
    run_bounded(cmd)
}

/// stderr must be exactly one line starting with `tls-echo: error:` and containing `what`.
fn assert_one_line_error(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line, got:\n{stderr}");
    assert!(stderr.starts_with("tls-echo: error: "), "{stderr}");
    assert!(stderr.contains(what), "expected `{what}` in: {stderr}");
}

#[test]
fn server_announces_writes_its_ca_and_serves_the_client() {
    let ca_file = TempFile::new("ca.pem");
    let ca = ca_file.path().to_str().unwrap();
    let server = ServerChild::start(&["--ca-out", ca]);
    let addr = server.addr.to_string();

    let out = client(&addr, &["--ca", ca, "hello", "world"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("protocol:     TLS 1.3\n"), "{stdout}");
    assert!(stdout.contains("cipher suite: TLS13_"), "{stdout}");
    assert!(stdout.contains("key exchange: X25519\n"), "{stdout}");
    assert!(stdout.ends_with("echo: hello\necho: world\n"), "{stdout}");

    let out = client(&addr, &["--ca", ca, "--tls", "1.2", "old"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("protocol:     TLS 1.2\n"), "{stdout}");
    assert!(
        stdout.contains("cipher suite: TLS_ECDHE_ECDSA_WITH_"),
        "{stdout}"
    );

    // The same server, refusing: a name the certificate does not carry.
    let out = client(&addr, &["--ca", ca, "--server-name", "example.com", "x"]);
    assert_one_line_error(&out, "not valid for name \"example.com\"");
    assert!(out.stdout.is_empty(), "nothing was sent or printed");

    let (code, stderr) = server.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("CA certificate written to {ca}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("tls-echo stopped: 3 connections served, 0 refused, 1 closed on error, 0 timed out, 0 cut at the deadline, 3 frames, 13 payload bytes echoed"),
        "{stderr}"
    );
}

#[test]
fn client_sends_stdin_lines_when_given_no_messages() {
    let server = TestServer::start(Framing::Line);
    let ca = TempFile::with("ca.pem", &server.ca.cert_pem());
    let input = TempFile::with("input.txt", "first line\nsecond line\n");
    let mut cmd = Command::new(BIN);
    cmd.args(["client", "--addr", &server.addr.to_string(), "--ca"])
        .arg(ca.path());
    let child = cmd
        .stdin(std::fs::File::open(input.path()).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx.recv_timeout(TIMEOUT).expect("client hung").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.ends_with("echo: first line\necho: second line\n"),
        "{stdout}"
    );
}

#[test]
fn client_rejects_a_server_signed_by_an_unknown_ca() {
    let server = TestServer::start(Framing::Line);
    let other = TempFile::with("other-ca.pem", &Ca::new("other").unwrap().cert_pem());
    let out = client(
        &server.addr.to_string(),
        &["--ca", other.path().to_str().unwrap(), "hi"],
    );
    assert_one_line_error(
        &out,
        "UnknownIssuer (the server's certificate is not signed by a CA in --ca)",
    );
}

#[test]
fn client_names_a_plaintext_server() {
    let ca = TempFile::with("ca.pem", &Ca::new("any").unwrap().cert_pem());
    let out = client(
        &plain_echo(1).to_string(),
        &["--ca", ca.path().to_str().unwrap(), "hi"],
    );
    assert_one_line_error(&out, "is it a plaintext server?");
}

#[test]
fn client_reports_a_refused_client_certificate() {
    let client_ca = Ca::new("client CA").unwrap();
    let server = TestServer::start_with(Framing::Line, |_| {}, Some(client_ca.roots().unwrap()));
    let ca = TempFile::with("ca.pem", &server.ca.cert_pem());
    let addr = server.addr.to_string();
    let ca = ca.path().to_str().unwrap();

    let out = client(&addr, &["--ca", ca, "hi"]);
    assert_one_line_error(&out, "the server requires a client certificate");

    let stranger = Ca::new("client CA")
        .unwrap()
        .issue_client("mallory")
        .unwrap();
    let (cert, key) = identity_files(&stranger);
    let (cert, key) = (cert.path().to_str().unwrap(), key.path().to_str().unwrap());
    let out = client(&addr, &["--ca", ca, "--cert", cert, "--key", key, "hi"]);
    assert_one_line_error(&out, "the server refused our client certificate");

    let alice = client_ca.issue_client("alice").unwrap();
    let (cert, key) = identity_files(&alice);
    let (cert, key) = (cert.path().to_str().unwrap(), key.path().to_str().unwrap());
    let out = client(&addr, &["--ca", ca, "--cert", cert, "--key", key, "hi"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("echo: hi\n"));
}

#[test]
fn client_with_a_missing_ca_file_says_so() {
    let missing = TempFile::new("missing.pem");
    let out = client(
        "127.0.0.1:1",
        &["--ca", missing.path().to_str().unwrap(), "hi"],
    );
    assert_one_line_error(&out, "No such file");
}

#[test]
fn server_with_cert_and_key_files() {
    let ca = Ca::new("files CA").unwrap();
    let id = ca.issue_server(&tls_echo::pki::SERVER_NAMES).unwrap();
    let cert = TempFile::with("server.pem", &id.cert_pem());
    let key = TempFile::with("server.key", &id.key_pem());
    let ca_file = TempFile::with("ca.pem", &ca.cert_pem());
    let server = ServerChild::start(&[
        "--cert",
        cert.path().to_str().unwrap(),
        "--key",
        key.path().to_str().unwrap(),
        "--framing",
        "length",
    ]);
    let out = client(
        &format!("localhost:{}", server.addr.port()),
        &[
            "--ca",
            ca_file.path().to_str().unwrap(),
            "--framing",
            "length",
            "framed",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("as `localhost`"));
    let (code, _) = server.terminate();
    assert_eq!(code, Some(0));
}

#[test]
fn demo_runs_and_shows_the_negotiated_parameters() {
    let out = run_bounded(Command::new(BIN));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "protocol:     TLS 1.3",
        "protocol:     TLS 1.2",
        "echo: TLS keeps this secret",
        "UnknownIssuer",
        "not valid for name \"example.com\"",
        "server stopped: 4 connections served, 0 refused, 2 closed on error, 0 timed out, 0 cut at the deadline, 3 frames, 31 payload bytes echoed",
    ] {
        assert!(
            stdout.contains(expected),
            "missing `{expected}` in:\n{stdout}"
        );
    }
}
