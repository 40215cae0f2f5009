//! Shared by the grader drivers of the library exercises (`grader/main.rs`
//! in 03, 04 and 09): the report lines the lab reads, panics caught and
//! reported as a failed step, and an allocator that refuses any single
//! allocation over 64 MiB (no test here needs one, and a decoder that
//! allocates what the peer announced gets caught before the machine swaps).
//!
//! You are welcome to read this: it is how your code is graded.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{AssertUnwindSafe, catch_unwind};

pub const ALLOC_LIMIT: usize = 64 << 20;

pub struct Guarded;

// SAFETY: forwards to the system allocator; refusing (null) is allowed by
// the GlobalAlloc contract and makes Rust report "memory allocation failed".
unsafe impl GlobalAlloc for Guarded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_LIMIT {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOC_LIMIT {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// One field of a report line. The lab splits a line at tabs and ends it
/// at a newline, so those are escaped, and so is the backslash itself: a
/// value already showing an escape (`"hello\n"`, as `show` writes it) then
/// comes back as those same characters, never as a real line break. The lab
/// undoes exactly this (`decode_field` in lab/src/harness.rs).
pub fn encode_field(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

pub fn step(title: &str) {
    println!("STEP {}", encode_field(title));
}

pub fn note(text: &str) {
    println!("NOTE {}", encode_field(text));
}

/// Report the current step as failed and stop.
pub fn fail(expected: &str, got: &str, why: &str) -> ! {
    println!(
        "FAIL {}\t{}\t{}",
        encode_field(expected),
        encode_field(got),
        encode_field(why)
    );
    std::process::exit(1);
}

pub fn pass() -> ! {
    println!("PASS");
    std::process::exit(0);
}

/// Call the student's code; a panic becomes a failed step, not a crash.
pub fn call<T>(what: &str, f: impl FnOnce() -> T) -> T {
    std::panic::set_hook(Box::new(|_| {}));
    let r = catch_unwind(AssertUnwindSafe(f));
    let _ = std::panic::take_hook();
    match r {
        Ok(v) => v,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            fail(
                &format!("{what} to return"),
                &format!("it panicked: {msg}"),
                "never panic on what a peer sends: return an error or Ok(None)",
            )
        }
    }
}

/// Bytes as a student reads them: quoted, escaped, cut short.
pub fn show(b: &[u8]) -> String {
    let mut s = String::from("\"");
    for &c in b.iter().take(40) {
        s.extend(std::ascii::escape_default(c).map(char::from));
    }
    if b.len() > 40 {
        s.push_str(&format!("...\" ({} bytes)", b.len()));
    } else {
        s.push('"');
    }
    s
}

/// A decoder's answer, with bytes shown as text.
pub fn res<E: std::fmt::Debug>(r: &Result<Option<Vec<u8>>, E>) -> String {
    match r {
        Ok(Some(b)) => format!("Ok(Some({}))", show(b)),
        Ok(None) => "Ok(None)".into(),
        Err(e) => format!("Err({e:?})"),
    }
}
