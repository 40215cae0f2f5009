//! The baseline: a bare tokio echo loop with no framing, limits, timeouts or
//! shutdown. The chapter's README measures the real server against it.
//!
//! Run with: `cargo run --release -p async-server --example bare_tokio_echo -- 127.0.0.1:0 1`
//! (address, worker threads; 1 = current-thread runtime), then `nc` to the
//! printed address.
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let threads: usize = args.next().and_then(|t| t.parse().ok()).unwrap_or(1);
    let rt = match threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
    };
    common::net::raise_fd_limit()?;
    rt.block_on(async {
        // ANCHOR: echo
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        common::net::announce(listener.local_addr()?);
        loop {
            let (mut sock, _) = listener.accept().await?;
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = sock.read(&mut buf).await {
                    if sock.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
        // ANCHOR_END: echo
    })
}
