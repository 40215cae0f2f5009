//! A deliberately wrong chat room, one flag per typical mistake, so the
//! conformance tests can show that every `loadgen chat-check` case fails
//! when its rule is broken. Without a mistake it passes every case except
//! the two slow-member ones (it has no outbox policy at all: each member
//! gets an unbounded queue and a writer thread, like tokio's `chat.rs`).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mistake {
    NoWelcome,
    ShortNames,
    AnyName,
    Duplicates,
    SelfInPresence,
    NoJoinNotice,
    EchoToSender,
    /// Treats each read() as one message instead of splitting lines.
    ReadIsLine,
    /// Replays the last line said to every joiner.
    History,
    NoLeave,
    AnnounceUnjoined,
    /// Cuts lines at 512 bytes.
    Truncate,
    /// Carries a line of any length (no --max-frame).
    NoLimit,
    /// Writes to every member's socket while holding the room's lock.
    BlockingWrites,
    /// Queues without limit for a member that never reads.
    Unbounded,
}

struct Member {
    id: u64,
    name: String,
    tx: mpsc::Sender<Vec<u8>>,
    stream: TcpStream,
}

struct Room {
    mistake: Option<Mistake>,
    max_frame: usize,
    members: Mutex<Vec<Member>>,
    last: Mutex<Option<Vec<u8>>>,
}

impl Room {
    fn send_to(&self, m: &Member, msg: &[u8]) {
        if self.mistake == Some(Mistake::BlockingWrites) {
            let _ = (&m.stream).write_all(msg);
        } else {
            let _ = m.tx.send(msg.to_vec());
        }
    }

    fn broadcast(&self, except: Option<u64>, msg: &[u8]) {
        let members = self.members.lock().unwrap();
        for m in members.iter() {
            if Some(m.id) != except {
                self.send_to(m, msg);
            }
        }
    }
}

/// Start the broken room on 127.0.0.1:0; it runs until the test process ends.
pub fn start(mistake: Option<Mistake>, max_frame: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let room = Arc::new(Room {
        mistake,
        max_frame,
        members: Mutex::new(Vec::new()),
        last: Mutex::new(None),
    });
    std::thread::spawn(move || {
        for (id, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let room = room.clone();
            std::thread::spawn(move || serve(&room, id as u64, stream));
        }
    });
    addr
}

fn serve(room: &Room, id: u64, stream: TcpStream) {
    let is = |m| room.mistake == Some(m);
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let mut w = stream.try_clone().unwrap();
    std::thread::spawn(move || {
        for msg in rx {
            if w.write_all(&msg).is_err() {
                break;
            }
        }
    });
    if !is(Mistake::NoWelcome) {
        let _ = tx.send(b"Welcome! Name?\n".to_vec());
    }
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut name = String::new();
    if reader.read_line(&mut name).unwrap_or(0) == 0 {
        if is(Mistake::AnnounceUnjoined) {
            room.broadcast(None, b"* someone has left the room\n");
        }
        return;
    }
    let name = name.trim_end().to_owned();
    let max = if is(Mistake::ShortNames) { 15 } else { 16 };
    let valid = is(Mistake::AnyName)
        || (!name.is_empty()
            && name.len() <= max
            && name.bytes().all(|b| b.is_ascii_alphanumeric()));
    let taken = room.members.lock().unwrap().iter().any(|m| m.name == name);
    if !valid || (taken && !is(Mistake::Duplicates)) {
        let _ = tx.send(b"* bad name\n".to_vec());
        drop(tx);
        std::thread::sleep(std::time::Duration::from_millis(100));
        return;
    }
    {
        let mut members = room.members.lock().unwrap();
        let mut names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        if is(Mistake::SelfInPresence) {
            names.push(&name);
        }
        let _ = tx.send(format!("* The room contains: {}\n", names.join(", ")).into_bytes());
        if is(Mistake::History)
            && let Some(last) = room.last.lock().unwrap().clone()
        {
            let _ = tx.send(last);
        }
        if !is(Mistake::NoJoinNotice) {
            for m in members.iter() {
                room.send_to(m, format!("* {name} has entered the room\n").as_bytes());
            }
        }
        members.push(Member {
            id,
            name: name.clone(),
            tx,
            stream: stream.try_clone().unwrap(),
        });
    }
    let limit = if is(Mistake::NoLimit) {
        usize::MAX
    } else {
        room.max_frame
    };
    let mut pending: VecDeque<u8> = VecDeque::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut bytes = reader.buffer().to_vec();
    reader.consume(bytes.len());
    let mut stream = reader.into_inner();
    'conn: loop {
        if bytes.is_empty() {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
        if is(Mistake::ReadIsLine) {
            let mut msg = format!("[{name}] ").into_bytes();
            msg.extend_from_slice(&bytes);
            if msg.last() != Some(&b'\n') {
                msg.push(b'\n');
            }
            bytes.clear();
            room.broadcast(Some(id), &msg);
            continue;
        }
        pending.extend(bytes.drain(..));
        while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = pending.drain(..=nl).collect();
            line.pop();
            if line.len() > limit {
                break 'conn;
            }
            if is(Mistake::Truncate) {
                line.truncate(512);
            }
            let mut msg = format!("[{name}] ").into_bytes();
            msg.extend_from_slice(&line);
            msg.push(b'\n');
            *room.last.lock().unwrap() = Some(msg.clone());
            let except = if is(Mistake::EchoToSender) {
                None
            } else {
                Some(id)
            };
            room.broadcast(except, &msg);
        }
        if pending.len() > limit {
            break 'conn;
        }
    }
    let me = {
        let mut members = room.members.lock().unwrap();
        let at = members.iter().position(|m| m.id == id);
        at.map(|i| members.remove(i))
    };
    drop(me);
    if !is(Mistake::NoLeave) {
        room.broadcast(None, format!("* {name} has left the room\n").as_bytes());
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}
