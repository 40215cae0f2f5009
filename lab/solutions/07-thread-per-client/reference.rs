//! Exercise 7: one thread per client (chapter 7).
//!
//! Exercise 1's server is iterative: while it is inside `handle` for one
//! client, nobody else is accepted, so one idle client (`nc` left open)
//! blocks everyone. The course's answer is `threading.Thread(target=...,
//! args=(conn,)).start()` per accepted connection. Do that with
//! `std::thread::spawn`: the accept loop goes straight back to `accept()`.
//!
//! Fill in the accept loop in `main`. A failed accept (out of file
//! descriptors, EMFILE, with many clients) or a failed spawn costs that
//! client only: log it and go back to accept. Try it: run it, open two `nc`
//! sessions, type in both. Grade: cargo run -p lab -- check 7

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};

/// Echo until the client closes (exercise 1's answer).
fn handle(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
}

/// Serve one client and log how it ended.
fn serve(stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    if let Err(e) = handle(stream) {
        eprintln!("{peer}: {e}");
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr = match args.iter().position(|a| a == "--addr") {
        Some(i) => args.get(i + 1).cloned().unwrap_or_default(),
        None => "127.0.0.1:7107".to_string(),
    };
    let listener = TcpListener::bind(&addr)?;
    println!("listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                // A named thread per client; the loop goes straight back to
                // accept(). spawn can fail (out of memory or threads): that
                // costs this client, not the server.
                let spawned = std::thread::Builder::new()
                    .name("client".into())
                    .spawn(move || serve(stream));
                if let Err(e) = spawned {
                    eprintln!("cannot start a thread: {e}");
                }
            }
            Err(e) => {
                // EMFILE, ECONNABORTED: this accept failed, the server goes
                // on; a short pause so a full descriptor table does not spin.
                eprintln!("accept failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
    Ok(())
}
