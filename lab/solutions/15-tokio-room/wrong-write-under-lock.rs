//! Exercise 15: the tokio chat room with bounded per-member queues (the
//! `chat` chapter).
//!
//! A chat room is the first program where clients talk to each other: every
//! line one member says goes to every other member as `[NAME] text`. The
//! part every popular example gets wrong is the member who stops reading.
//! Its socket's buffers fill; then whatever the server keeps for it grows,
//! or the room waits for it, and everyone else waits too. Here:
//!
//! - each member has a *bounded* queue of at most `--queue` messages, and a
//!   task of its own that writes what arrives on it to that member's socket;
//! - `broadcast` offers a line to every other member's queue *without
//!   waiting*: a full queue means that member misses the line, nothing else
//!   (no error, no wait, no growth).
//!
//! The protocol is cut down to what the exercise is about: the server says a
//! welcome line, the first line a client sends is its name, every later line
//! goes to the others as `[NAME] text`. (`cargo run -p chat` has the whole
//! Budget Chat protocol: presence list, join and leave notices, name rules.)
//!
//! Fill in the `Queue` type, `broadcast`, and the marked part of `member`.
//!
//! Run:   cargo run --manifest-path lab/exercises/Cargo.toml -p ex15-tokio-room -- --queue 16
//! Then:  `nc 127.0.0.1 7115` in three terminals; type a name in each, then lines.
//! Grade: cargo run -p lab -- check 15

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};

const WELCOME: &[u8] = b"Welcome to budgetchat! What shall I call you?\n";

/// One line as every recipient gets it: built once, shared (an `Arc`
/// clone per recipient, never a copy of the text).
type Msg = Arc<str>;

/// MISTAKE: the room keeps each member's socket and writes to it itself,
/// while holding the room's lock: one member who does not read blocks the
/// write, the lock, and so everyone.
type Queue = Arc<tokio::sync::Mutex<OwnedWriteHalf>>;

struct Member {
    name: String,
    queue: Queue,
}

/// Everyone in the room, behind an async lock (held across the writes).
type Room = Arc<tokio::sync::Mutex<HashMap<u64, Member>>>;

/// Offer `msg` to every member except `from`. It must never wait for a
/// member: a member whose queue is full just misses this line.
async fn broadcast(room: &Room, from: u64, msg: &Msg) {
    let room = room.lock().await;
    for (&id, m) in room.iter() {
        if id != from {
            let _ = m.queue.lock().await.write_all(msg.as_bytes()).await;
        }
    }
}

async fn member(room: Room, id: u64, stream: TcpStream, queue_len: usize) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(WELCOME).await?;
    let Some(name) = lines.next_line().await? else {
        return Ok(());
    };
    let _ = queue_len;
    let queue: Queue = Arc::new(tokio::sync::Mutex::new(write));
    room.lock().await.insert(
        id,
        Member {
            name: name.clone(),
            queue,
        },
    );
    while let Ok(Some(line)) = lines.next_line().await {
        let msg: Msg = format!("[{name}] {line}\n").into();
        broadcast(&room, id, &msg).await;
    }
    // Leaving drops the member's queue sender: its writer task then ends.
    if let Some(gone) = room.lock().await.remove(&id) {
        eprintln!("{} left", gone.name);
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let addr = flag("--addr").unwrap_or_else(|| "127.0.0.1:7115".into());
    let queue_len: usize = flag("--queue")
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(64);

    let listener = TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let room: Room = Arc::default();
    let mut next_id = 0u64;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("accept failed: {e}");
                continue;
            }
        };
        next_id += 1;
        let (room, id) = (room.clone(), next_id);
        tokio::spawn(async move {
            if let Err(e) = member(room, id, stream, queue_len).await {
                eprintln!("{peer}: {e}");
            }
        });
    }
}
