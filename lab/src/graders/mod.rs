//! One grader per exercise, grouped by chapter. Library exercises (the
//! decoders, the TLS configs) are graded by a driver compiled into the
//! exercise itself; `driver` reads its report.

pub mod asyncs;
pub mod chat;
pub mod driver;
pub mod proc;
pub mod shutdown;
pub mod sockets;
pub mod streams;
pub mod tcp;
pub mod threads;
pub mod udp;
pub mod uring;
