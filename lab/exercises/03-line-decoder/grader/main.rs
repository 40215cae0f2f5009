//! The lab's grader driver for exercise 3: calls your `decode_line` and
//! reports each step to `cargo run -p lab -- check 3`. Not yours to edit.

#[path = "../../grader_support.rs"]
mod support;

use ex03_line_decoder::{LineError, decode_line};
use support::{call, fail, pass, res, show, step};

#[global_allocator]
static ALLOC: support::Guarded = support::Guarded;

/// Decode every line out of `buf` (as a server does after each read).
fn drain(buf: &mut Vec<u8>, max: usize, what: &str) -> Result<Vec<Vec<u8>>, LineError> {
    let mut out = Vec::new();
    for _ in 0..100_000 {
        let before = buf.clone();
        let got = call("decode_line", || decode_line(buf, max));
        if got.is_err()
            && before
                .iter()
                .position(|&b| b == b'\n')
                .is_some_and(|p| p <= max)
        {
            fail(
                &format!("{what}: the line at the front of {}", show(&before)),
                &res(&got),
                "a complete line at the front is a line, whatever follows it: look for the \\n first, \
                 and compare buf.len() with max only when there is none",
            );
        }
        match got? {
            Some(line) => out.push(line),
            None if *buf != before => fail(
                &format!(
                    "{what}: Ok(None) with the buffer left as it was, {}",
                    show(&before)
                ),
                &format!("Ok(None), and the buffer became {}", show(buf)),
                "when there is no whole line yet, return Ok(None) without touching buf: the bytes \
                 are the start of a line whose end is on its way",
            ),
            None => return Ok(out),
        }
    }
    fail(
        &format!("{what}: Ok(None) once the buffer holds no more complete lines"),
        "more than 100000 lines from one buffer",
        "remove each line and its \\n from buf before returning it",
    )
}

fn list(lines: &[Vec<u8>]) -> String {
    if lines.is_empty() {
        return "no line".into();
    }
    let v: Vec<String> = lines.iter().take(5).map(|l| show(l)).collect();
    let more = if lines.len() > 5 {
        format!(" and {} more", lines.len() - 5)
    } else {
        String::new()
    };
    format!("{}{more}", v.join(", "))
}

fn main() {
    step("one line: decode_line(\"hello\\n\") returns \"hello\" and empties the buffer");
    let mut buf = b"hello\n".to_vec();
    let got = call("decode_line", || decode_line(&mut buf, 64));
    if got != Ok(Some(b"hello".to_vec())) {
        fail(
            "Ok(Some(\"hello\"))",
            &res(&got),
            "find the first \\n; return the bytes before it",
        );
    }
    if !buf.is_empty() {
        fail(
            "the buffer empty afterwards",
            &format!("{} left in it", show(&buf)),
            "drain the line AND its \\n from the buffer: buf.drain(..=pos)",
        );
    }

    step("a partial line: \"hel\" is not a line yet");
    let mut buf = b"hel".to_vec();
    let got = call("decode_line", || decode_line(&mut buf, 64));
    match got {
        Ok(None) if buf == b"hel" => {}
        Ok(None) => fail(
            "Ok(None) and \"hel\" kept in the buffer",
            &format!("Ok(None) and {} left", show(&buf)),
            "keep a partial line: the rest is on its way",
        ),
        other => fail(
            "Ok(None): no \\n has arrived, so there is no line yet",
            &res(&other),
            "a read is not a message: \"hel\" is a partial line, the rest may come in the next read",
        ),
    }

    step(
        "\"hello\\r\\n\" gives \"hello\\r\": only \\n ends a line, a \\r before it is part of the line",
    );
    let mut buf = b"hello\r\n".to_vec();
    let got = call("decode_line", || decode_line(&mut buf, 64));
    if got != Ok(Some(b"hello\r".to_vec())) || !buf.is_empty() {
        fail(
            "Ok(Some(\"hello\\r\")) and the buffer empty",
            &format!("{}, with {} left in the buffer", res(&got), show(&buf)),
            match &got {
                Ok(Some(l)) if l == b"hello" && buf == b"\n" => {
                    "a \\r is an ordinary byte of the line, only \\n ends it: your decoder ended the \
                     line at the \\r and left the \\n behind, which the next call takes for an empty line"
                }
                Ok(Some(l)) if l == b"hello" => {
                    "you removed the \\r: the decoder returns every byte before the \\n, a \\r \
                     included (stripping it is the application's choice, as str::lines does, not the \
                     decoder's)"
                }
                _ => "a line is every byte before the first \\n, whatever they are",
            },
        );
    }

    step(
        "a stray \\r inside a line is data: \"a\\rb\\n\" gives \"a\\rb\", and \"a\\r\" alone is no line yet",
    );
    let mut buf = b"a\rb\n".to_vec();
    let got = call("decode_line", || decode_line(&mut buf, 64));
    if got != Ok(Some(b"a\rb".to_vec())) {
        fail(
            "Ok(Some(\"a\\rb\"))",
            &res(&got),
            "only \\n ends a line: a \\r is an ordinary byte of it (old Mac line ends are not \
             this protocol's)",
        );
    }
    let mut buf = b"a\r".to_vec();
    let got = call("decode_line", || decode_line(&mut buf, 64));
    if got != Ok(None) || buf != b"a\r" {
        fail(
            "Ok(None), and \"a\\r\" kept in the buffer",
            &format!("{}, with {} left in the buffer", res(&got), show(&buf)),
            "only \\n ends a line: \"a\\r\" is the start of one, wait for its \\n",
        );
    }

    step("bytes that are not UTF-8 pass through: \"caf\\xe9 \\xff\\n\" gives \"caf\\xe9 \\xff\"");
    let mut buf = b"caf\xe9 \xff\n".to_vec();
    let got = call("decode_line", || decode_line(&mut buf, 64));
    if got != Ok(Some(b"caf\xe9 \xff".to_vec())) {
        fail(
            "Ok(Some(\"caf\\xe9 \\xff\"))",
            &res(&got),
            "a line is bytes, not text: do not turn it into a String (from_utf8_lossy replaces \
             every invalid byte with the three bytes \\xef\\xbf\\xbd); return the bytes as they came",
        );
    }

    let input = b"hello\nworld\n\nla\rst\0\n".to_vec();
    let want: Vec<Vec<u8>> = vec![
        b"hello".to_vec(),
        b"world".to_vec(),
        b"".to_vec(),
        b"la\rst\0".to_vec(),
    ];
    step("the same four lines cut into two reads at every possible byte");
    for cut in 0..=input.len() {
        let mut buf = input[..cut].to_vec();
        let mut got = drain(&mut buf, 64, "first part").unwrap_or_else(|e| {
            fail(
                "no error",
                &format!("{e:?} after the first {cut} bytes"),
                "these lines are short",
            )
        });
        buf.extend_from_slice(&input[cut..]);
        got.extend(
            drain(&mut buf, 64, "second part")
                .unwrap_or_else(|e| fail("no error", &format!("{e:?}"), "these lines are short")),
        );
        if got != want || !buf.is_empty() {
            fail(
                &format!("the lines {} whatever the cut", list(&want)),
                &format!(
                    "{} when the input was cut after byte {cut} ({} | {})",
                    list(&got),
                    show(&input[..cut]),
                    show(&input[cut..])
                ),
                if got.len() > want.len() {
                    "a partial line came out as a line: a read is not a message, wait for the \\n"
                } else {
                    "every complete line must come out, the empty one and the one with \\r and \\0 included"
                },
            );
        }
    }

    step("1000 lines in one buffer (pipelined) come out in order");
    let mut buf = Vec::new();
    for i in 0..1000 {
        buf.extend_from_slice(format!("line {i}\n").as_bytes());
    }
    let got = drain(&mut buf, 64, "pipelined")
        .unwrap_or_else(|e| fail("no error", &format!("{e:?}"), ""));
    let ok = got.len() == 1000
        && got
            .iter()
            .enumerate()
            .all(|(i, l)| *l == format!("line {i}").into_bytes());
    if !ok {
        fail(
            "1000 lines, \"line 0\" to \"line 999\"",
            &format!("{} lines: {}", got.len(), list(&got)),
            "return one line per call and keep the rest in buf",
        );
    }

    step(
        "with max 16: \"hi\\n\" then 20 bytes with no \\n: \"hi\" comes out first, then Err(TooLong)",
    );
    let mut buf = b"hi\n".to_vec();
    buf.extend_from_slice(&[b'x'; 20]);
    let got = call("decode_line", || decode_line(&mut buf, 16));
    if got != Ok(Some(b"hi".to_vec())) {
        fail(
            "Ok(Some(\"hi\"))",
            &format!("{} with {} in the buffer", res(&got), show(&buf)),
            "a complete line at the front is a line, whatever follows it: look for the \\n first, and \
             compare buf.len() with max only when there is none",
        );
    }
    let got = call("decode_line", || decode_line(&mut buf, 16));
    if got != Err(LineError::TooLong { max: 16 }) {
        fail(
            "Err(TooLong { max: 16 }): 20 bytes without a \\n",
            &res(&got),
            "with no \\n in the buffer and more than max bytes, the line is over the limit whatever \
             comes next: Err(TooLong), or the buffer grows without bound",
        );
    }

    step("with max 16: a 15-byte and a 16-byte line are fine, a 17-byte one is refused");
    let mut buf = b"0123456789abcde\n".to_vec();
    let got = call("decode_line", || decode_line(&mut buf, 16));
    if got != Ok(Some(b"0123456789abcde".to_vec())) {
        fail(
            "Ok(Some(the 15 bytes))",
            &res(&got),
            "a line shorter than max is fine",
        );
    }
    let mut buf = b"0123456789abcdef\n".to_vec();
    let got = call("decode_line", || decode_line(&mut buf, 16));
    if got != Ok(Some(b"0123456789abcdef".to_vec())) {
        fail(
            "Ok(Some(the 16 bytes))",
            &res(&got),
            "max counts the line's bytes, not its \\n",
        );
    }
    let mut buf = b"0123456789abcdefg\n".to_vec();
    let got = call("decode_line", || decode_line(&mut buf, 16));
    if got != Err(LineError::TooLong { max: 16 }) {
        fail(
            "Err(TooLong { max: 16 })",
            &res(&got),
            "a line over the limit is an error, even when its \\n is there",
        );
    }

    step("with max 16: 16 bytes and no newline may still become a line; 17 cannot");
    let mut buf = b"0123456789abcdef".to_vec();
    let got = call("decode_line", || decode_line(&mut buf, 16));
    if got != Ok(None) {
        fail(
            "Ok(None)",
            &res(&got),
            "16 bytes without a \\n can still end in a 16-byte line",
        );
    }
    buf.push(b'g');
    let got = call("decode_line", || decode_line(&mut buf, 16));
    if got != Err(LineError::TooLong { max: 16 }) {
        fail(
            "Err(TooLong { max: 16 }) as soon as 17 bytes have come without a \\n",
            &res(&got),
            "without that limit a peer that never sends \\n makes your buffer grow until the server dies",
        );
    }

    step("a peer sending 2 MiB without a newline is refused early (max 1 MiB)");
    let mut buf = Vec::new();
    let chunk = vec![b'x'; 64 * 1024];
    for n in 1..=32 {
        buf.extend_from_slice(&chunk);
        match call("decode_line", || decode_line(&mut buf, 1 << 20)) {
            Err(LineError::TooLong { .. }) => pass(),
            Ok(Some(l)) => fail(
                "Err(TooLong) once the buffer holds more than 1 MiB with no \\n",
                &format!("a line of {} bytes", l.len()),
                "no \\n was sent: that is not a line",
            ),
            Ok(None) => {}
        }
        if n == 32 {
            fail(
                "Err(TooLong) once more than 1 MiB arrived without a \\n",
                "Ok(None) with 2 MiB buffered",
                "check buf.len() > max when there is no \\n: the limit bounds the memory a peer can make you hold",
            );
        }
    }
    pass();
}
