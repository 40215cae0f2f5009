//! Clients nobody here wrote: OpenBSD `nc -u` and Python's socket module.
//! Both send plain datagrams with no header: the server must echo them
//! unchanged. (`.ci/run` installs netcat-openbsd and python3.)

mod support;

use std::process::Command;
use std::time::Duration;

use udp_echo::server::ServerConfig;

use support::{TestServer, run_with_timeout};

const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn nc_u_gets_a_plain_echo() {
    let server = TestServer::start(ServerConfig::default());
    let mut cmd = Command::new("nc");
    // -u: UDP; -w1: quit one second after stdin ends and nothing arrives
    // (UDP has no FIN, so nc cannot know the exchange is over).
    cmd.args(["-u", "-w1", "127.0.0.1", &server.addr.port().to_string()]);
    let o = run_with_timeout(cmd, b"hello over udp\n", LIMIT);
    assert_eq!(
        o.stdout,
        b"hello over udp\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let summary = server.stop();
    assert_eq!((summary.datagrams, summary.bytes), (1, 15));
}

#[test]
fn python_client_gets_each_datagram_back_whole() {
    let server = TestServer::start(ServerConfig::default());
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
addr = ("127.0.0.1", int(sys.argv[1]))
for msg in [b"ping", b"", b"\x00\xff binary", b"x" * 65507]:
    s.sendto(msg, addr)
    data, peer = s.recvfrom(65536)
    assert peer == addr, peer
    print(len(data), data == msg, data[:12])
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script, &server.addr.port().to_string()]);
    let o = run_with_timeout(cmd, b"", LIMIT);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "4 True b'ping'\n0 True b''\n9 True b'\\x00\\xff binary'\n65507 True b'xxxxxxxxxxxx'\n"
    );
    assert_eq!(server.stop().echoed, 4);
}
