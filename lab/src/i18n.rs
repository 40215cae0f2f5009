//! The lab in Simplified Chinese: English is what the runner and the graders
//! write; a catalog turns each finished English message into Chinese at the
//! moment it is shown.
//!
//! The catalog, `lab/i18n/zh-CN.po`, is a gettext file like the book's
//! (`book/po/zh-CN.po`): each `msgid` is an English message TEMPLATE, each
//! `msgstr` its Chinese. A template's placeholders stand for the parts that
//! change from run to run, and are carried over verbatim:
//!
//! ```text
//! msgid "{what}, then nothing for {#secs} s"
//! msgstr "{what}，之后 {#secs} 秒没有任何数据"
//! ```
//!
//! `{name}` matches any text (a quoted value, an error, a whole clause) and
//! `{#name}` only a number. A value is itself translated when it is a message
//! the catalog knows (`"hi" (2 bytes)` inside a longer one), and shown as
//! it is otherwise: bytes, addresses and a program's own output are data.
//!
//! Why templates matched at the output instead of a key per message: the
//! graders build their messages with `format!` in plain English, as anyone
//! adding a step writes them; nothing in a grader has to change for the lab
//! to speak Chinese, and a message the catalog does not know is visible: it
//! is shown in English and recorded (`misses`), so `lab self-check --lang
//! zh-CN` lists every message a grader emitted without a translation, and
//! the `every_message_literal_has_a_template` test lists every message in
//! the sources without one.

use std::collections::BTreeSet;
use std::sync::{LazyLock, Mutex, OnceLock};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    ZhCn,
}

static LANG: OnceLock<Lang> = OnceLock::new();
static MISSES: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Pick the language once, at start: `--lang` if given, else the locale
/// (`LC_ALL`, then `LC_MESSAGES`, then `LANG`, the first one set, as
/// POSIX orders them). Anything starting with `zh` is Chinese.
pub fn init(flag: Option<&str>) -> Lang {
    let pick = |v: &str| {
        if v.trim().to_ascii_lowercase().starts_with("zh") {
            Lang::ZhCn
        } else {
            Lang::En
        }
    };
    let lang = match flag {
        Some(f) => pick(f),
        None => ["LC_ALL", "LC_MESSAGES", "LANG"]
            .iter()
            .filter_map(|k| std::env::var(k).ok())
            .find(|v| !v.is_empty())
            .map(|v| pick(&v))
            .unwrap_or(Lang::En),
    };
    let _ = LANG.set(lang);
    lang
}

pub fn lang() -> Lang {
    LANG.get().copied().unwrap_or(Lang::En)
}

/// `msg` in the chosen language. In English it is `msg` itself.
pub fn tr(msg: &str) -> String {
    match lang() {
        Lang::En => msg.to_string(),
        Lang::ZhCn => match translate(msg) {
            Some(t) => t,
            None => {
                if let Ok(mut m) = MISSES.lock() {
                    m.insert(msg.trim().to_string());
                }
                msg.to_string()
            }
        },
    }
}

/// Every message shown in English so far because the catalog has no
/// template for it.
pub fn misses() -> Vec<String> {
    MISSES
        .lock()
        .map(|m| m.iter().cloned().collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- the catalog

#[derive(Debug, PartialEq)]
enum Piece {
    Lit(String),
    /// `{name}`: any text.
    Any(String),
    /// `{#name}`: a number.
    Num(String),
    /// `{@name}`: a message the catalog itself knows (so a short template
    /// like `{line}, {@status}` cannot swallow every sentence with a comma).
    Msg(String),
}

#[derive(Debug)]
struct Template {
    en: Vec<Piece>,
    zh: String,
    /// Characters of literal text: the most specific template wins.
    weight: usize,
}

/// `"{a} bytes"` -> [Any(a), Lit(" bytes")]. `{{` and `}}` are braces.
fn parse_template(t: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut it = t.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '{' if it.peek() == Some(&'{') => {
                it.next();
                lit.push('{');
            }
            '}' if it.peek() == Some(&'}') => {
                it.next();
                lit.push('}');
            }
            '{' => {
                let name: String = it.by_ref().take_while(|&c| c != '}').collect();
                if !lit.is_empty() {
                    pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                if let Some(n) = name.strip_prefix('#') {
                    pieces.push(Piece::Num(n.to_string()));
                } else if let Some(n) = name.strip_prefix('@') {
                    pieces.push(Piece::Msg(n.to_string()));
                } else {
                    pieces.push(Piece::Any(name));
                }
            }
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        pieces.push(Piece::Lit(lit));
    }
    pieces
}

#[cfg(test)]
/// The placeholder names of a template, in order (`#` kept).
fn names(t: &str) -> Vec<String> {
    parse_template(t)
        .into_iter()
        .filter_map(|p| match p {
            Piece::Any(n) => Some(n),
            Piece::Num(n) => Some(format!("#{n}")),
            Piece::Msg(n) => Some(format!("@{n}")),
            Piece::Lit(_) => None,
        })
        .collect()
}

/// One quoted PO string's contents, unescaped.
fn po_unquote(s: &str) -> String {
    let inner = s
        .trim()
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or("");
    let mut out = String::new();
    let mut it = inner.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(o) => out.push(o),
            None => {}
        }
    }
    out
}

/// The (msgid, msgstr) pairs of a PO file; entries marked `#, fuzzy` and
/// the header (empty msgid) are left out, as gettext does.
pub fn parse_po(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let (mut id, mut s, mut fuzzy) = (String::new(), String::new(), false);
    // `#, fuzzy` comes before the msgid of the entry it marks.
    let mut next_fuzzy = false;
    let mut into: Option<bool> = None; // Some(true): msgid, Some(false): msgstr
    let mut flush = |id: &mut String, s: &mut String, fuzzy: &mut bool| {
        if !id.is_empty() && !s.is_empty() && !*fuzzy {
            out.push((std::mem::take(id), std::mem::take(s)));
        }
        id.clear();
        s.clear();
        *fuzzy = false;
    };
    for line in text.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("msgid ") {
            flush(&mut id, &mut s, &mut fuzzy);
            fuzzy = std::mem::take(&mut next_fuzzy);
            id = po_unquote(rest);
            into = Some(true);
        } else if let Some(rest) = l.strip_prefix("msgstr ") {
            s = po_unquote(rest);
            into = Some(false);
        } else if l.starts_with('"') {
            match into {
                Some(true) => id.push_str(&po_unquote(l)),
                Some(false) => s.push_str(&po_unquote(l)),
                None => {}
            }
        } else if l.starts_with("#,") && l.contains("fuzzy") {
            next_fuzzy = true;
            into = None;
        } else if l.is_empty() {
            into = None;
        }
    }
    flush(&mut id, &mut s, &mut fuzzy);
    out
}

pub const ZH_CN_PO: &str = include_str!("../i18n/zh-CN.po");

static CATALOG: LazyLock<Vec<Template>> = LazyLock::new(|| {
    let mut v: Vec<Template> = parse_po(ZH_CN_PO)
        .into_iter()
        .map(|(en, zh)| {
            let en = parse_template(&en);
            let weight = en
                .iter()
                .map(|p| match p {
                    Piece::Lit(l) => l.chars().count(),
                    _ => 0,
                })
                .sum();
            Template { en, zh, weight }
        })
        .collect();
    v.sort_by_key(|t| std::cmp::Reverse(t.weight));
    v
});

/// How a captured value is shown.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Any,
    Num,
    Msg,
}

/// Match `text` against `pieces` in full; the captures in order.
fn matches<'t>(
    pieces: &[Piece],
    text: &'t str,
    caps: &mut Vec<(&'t str, Kind)>,
    depth: usize,
) -> bool {
    let Some((first, rest)) = pieces.split_first() else {
        return text.is_empty();
    };
    match first {
        Piece::Lit(l) => text
            .strip_prefix(l.as_str())
            .is_some_and(|t| matches(rest, t, caps, depth)),
        Piece::Any(_) | Piece::Num(_) | Piece::Msg(_) => {
            let kind = match first {
                Piece::Num(_) => Kind::Num,
                Piece::Msg(_) => Kind::Msg,
                _ => Kind::Any,
            };
            let numeric = kind == Kind::Num;
            // The shortest value first, at the places the next literal starts.
            let next_lit = match rest.first() {
                Some(Piece::Lit(l)) => Some(l.as_str()),
                _ => None,
            };
            for (i, _) in text
                .char_indices()
                .chain(std::iter::once((text.len(), ' ')))
            {
                let value = &text[..i];
                if numeric
                    && (value.is_empty()
                        || !value
                            .chars()
                            .all(|c| c.is_ascii_digit() || matches!(c, '.' | ',' | '-')))
                {
                    if value.is_empty() {
                        continue;
                    }
                    return false;
                }
                if rest.is_empty() && i != text.len() {
                    continue;
                }
                if let Some(l) = next_lit
                    && !text[i..].starts_with(l)
                {
                    continue;
                }
                if kind == Kind::Msg && (depth >= 3 || translate_depth(value, depth + 1).is_none())
                {
                    continue;
                }
                caps.push((value, kind));
                if matches(rest, &text[i..], caps, depth) {
                    return true;
                }
                caps.pop();
            }
            false
        }
    }
}

fn translate_depth(msg: &str, depth: usize) -> Option<String> {
    // Keep the message's own indentation and trailing space as they are.
    let body = msg.trim();
    if body.is_empty() {
        return Some(msg.to_string());
    }
    let lead = &msg[..msg.len() - msg.trim_start().len()];
    let tail = &msg[msg.trim_end().len()..];
    for t in CATALOG.iter() {
        let mut caps = Vec::new();
        if !matches(&t.en, body, &mut caps, depth) {
            continue;
        }
        let mut values = std::collections::HashMap::new();
        let names = t.en.iter().filter_map(|p| match p {
            Piece::Any(n) | Piece::Num(n) | Piece::Msg(n) => Some(n.as_str()),
            Piece::Lit(_) => None,
        });
        for (name, (value, kind)) in names.zip(caps) {
            let shown = if kind == Kind::Num || depth >= 3 {
                value.to_string()
            } else {
                translate_depth(value, depth + 1).unwrap_or_else(|| value.to_string())
            };
            values.entry(name).or_insert(shown);
        }
        let zh: String = parse_template(&t.zh)
            .iter()
            .map(|p| match p {
                Piece::Lit(l) => l.as_str(),
                Piece::Any(n) | Piece::Num(n) | Piece::Msg(n) => {
                    values.get(n.as_str()).map(String::as_str).unwrap_or("")
                }
            })
            .collect();
        return Some(format!("{lead}{zh}{tail}"));
    }
    None
}

/// The Chinese of `msg`, if the catalog has a template for it.
pub fn translate(msg: &str) -> Option<String> {
    translate_depth(msg, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_parses_and_each_entry_keeps_its_placeholders() {
        let pairs = parse_po(ZH_CN_PO);
        assert!(pairs.len() > 100, "{} entries", pairs.len());
        let mut seen = BTreeSet::new();
        for (en, zh) in &pairs {
            assert!(seen.insert(en.clone()), "msgid twice: {en:?}");
            let a: BTreeSet<String> = names(en).into_iter().collect();
            let b: BTreeSet<String> = names(zh).into_iter().collect();
            assert_eq!(a, b, "placeholders of {en:?} and {zh:?}");
            // Chinese words or at least Chinese punctuation; or on purpose
            // the same (code, a program's expected output).
            assert!(!zh.is_ascii() || zh == en, "not Chinese: {zh:?}");
            assert!(
                !matches!(parse_template(en).as_slice(), [Piece::Any(_)]),
                "a template that is one placeholder matches everything: {en:?}"
            );
        }
    }

    #[test]
    fn a_template_carries_its_values_over_and_translates_known_ones() {
        let _ = LANG.set(Lang::ZhCn);
        assert_eq!(
            translate("\"hello\\n\" (6 bytes) back").as_deref(),
            Some("回显 \"hello\\n\"（6 字节）")
        );
        assert_eq!(
            translate("   3. connect, send \"hello\\n\", read the echo").as_deref(),
            None,
            "a numbered line is not a message"
        );
        assert_eq!(
            translate("nothing within 3 s").as_deref(),
            Some("3 秒内什么也没收到")
        );
        // A number placeholder takes only a number.
        assert_eq!(translate("nothing within many s"), None);
        // Composed messages: each known part in Chinese, data as it came.
        assert_eq!(
            translate("0 of 2000 lines, then the connection was reset (Connection reset by peer (os error 104))")
                .as_deref(),
            Some("2000 行中的 0 行，然后连接被复位（RST）（Connection reset by peer (os error 104)）")
        );
        assert_eq!(
            translate("frame #3 of 14: expected 100 B, got 50 B, first difference at byte 7, then the server closed the connection")
                .as_deref(),
            Some("第 3 帧（共 14 帧）：应为 100 B，实际 50 B，第一个不同在字节 7，然后服务器关闭了连接")
        );
        assert_eq!(
            translate("\"error: x\", exit status 1").as_deref(),
            Some("\"error: x\"，退出状态 1")
        );
        // {@status} takes only a known message, so a sentence with a comma
        // is not mistaken for "{line}, {status}".
        assert_eq!(translate("connect, send the thing, read the echo"), None);
    }

    #[test]
    fn parse_po_reads_continuations_escapes_and_skips_fuzzy() {
        let po = "msgid \"\"\nmsgstr \"header\"\n\n#, fuzzy\nmsgid \"old\"\nmsgstr \"旧\"\n\n\
                  msgid \"\"\n\"a\\n\"\n\"b \\\"q\\\"\"\nmsgstr \"甲\\n乙\"\n";
        assert_eq!(
            parse_po(po),
            vec![("a\nb \"q\"".to_string(), "甲\n乙".to_string())]
        );
    }
}

/// The sources' message literals (see the test below): every string literal
/// of a file in the lab's runner, graders and grader drivers, decoded, with
/// the `format!` placeholders in it. `#[cfg(test)]` parts are left out.
#[cfg(test)]
pub fn literals(src: &str) -> Vec<String> {
    let src = match src.find("#[cfg(test)]\nmod tests") {
        Some(i) => &src[..i],
        None => src,
    };
    let b: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        // Skip comments, char literals and byte strings.
        if b[i] == '/' && b.get(i + 1) == Some(&'/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if b[i] == '\'' {
            // A char literal ('x', '\n', '"') or a lifetime ('a).
            if b.get(i + 1) == Some(&'\\') {
                i += 2;
                while i < b.len() && b[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
            continue;
        }
        if b[i] != '"' {
            i += 1;
            continue;
        }
        let byte_string = i > 0 && (b[i - 1] == 'b' || b[i - 1] == 'r');
        let mut s = String::new();
        i += 1;
        while i < b.len() && b[i] != '"' {
            if b[i] == '\\' {
                i += 1;
                match b.get(i) {
                    Some('n') => s.push('\n'),
                    Some('t') => s.push('\t'),
                    Some('r') => s.push('\r'),
                    Some('0') => s.push('\0'),
                    Some('\n') => {
                        // A line continuation: the newline and the next
                        // line's indentation are not part of the string.
                        while b.get(i + 1).is_some_and(|c| c.is_whitespace()) {
                            i += 1;
                        }
                    }
                    Some(&c) => s.push(c),
                    None => {}
                }
            } else {
                s.push(b[i]);
            }
            i += 1;
        }
        i += 1;
        if !byte_string {
            out.push(s);
        }
    }
    out
}

#[cfg(test)]
mod coverage {
    use super::*;

    /// Literals in those files that are not shown to anyone: what the
    /// graders look for in a program's output, arguments, file names.
    const NOT_MESSAGES: &[&str] = &[
        // looked for in a program's stderr
        "memory allocation of",
        "os error 11",
        "os error 24",
        "error: could not compile",
        // payloads sent to the student's program, shown quoted as data
        "{seq} hello",
        "\"still there?\"",
        "{seq} forged",
        "work {WORK_MS}\n",
        // the names inside the grader's test certificates
        "lab root CA",
        "lab intermediate CA",
        // the self-check's layout around translated parts
        "ok    {label:<44} {secs:>5.1} s  {}{detail}",
        "FAIL  {label:<44} {secs:>5.1} s  {}{detail}",
        // clap's `about` (the --help text stays English)
        "Graded exercises: edit the starter, run `check`, read what the grader saw",
    ];

    fn normalise_format(s: &str) -> String {
        // `format!` placeholders ({}, {n}, {:?}, {x:>2}) to \u{1}.
        let mut out = String::new();
        let mut it = s.chars().peekable();
        while let Some(c) = it.next() {
            match c {
                '{' if it.peek() == Some(&'{') => {
                    it.next();
                    out.push('{');
                }
                '}' if it.peek() == Some(&'}') => {
                    it.next();
                    out.push('}');
                }
                '{' => {
                    for c in it.by_ref() {
                        if c == '}' {
                            break;
                        }
                    }
                    out.push('\u{1}');
                }
                c => out.push(c),
            }
        }
        out
    }

    fn normalise_template(t: &str) -> String {
        parse_template(t)
            .into_iter()
            .map(|p| match p {
                Piece::Lit(l) => l,
                _ => "\u{1}".to_string(),
            })
            .collect()
    }

    /// A literal is a message if it has two words of letters.
    fn is_message(s: &str) -> bool {
        let words = s
            .split(|c: char| c.is_whitespace())
            .filter(|w| w.chars().filter(|c| c.is_ascii_alphabetic()).count() >= 2)
            .count();
        words >= 2 && !NOT_MESSAGES.contains(&s)
    }

    /// Every message a grader, a driver or the runner can show has a
    /// Chinese template: each message literal in their sources is part of
    /// some template in lab/i18n/zh-CN.po (placeholders for placeholders),
    /// and every exercise's title and hint translates. A grader step added
    /// without its translation fails here, listed by file.
    #[test]
    fn every_message_literal_has_a_template() {
        let lab = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<std::path::PathBuf> = vec![
            lab.join("src/main.rs"),
            lab.join("src/harness.rs"),
            lab.join("src/loadgen.rs"),
            lab.join("src/starters.rs"),
            lab.join("src/selfcheck.rs"),
            lab.join("exercises/grader_support.rs"),
        ];
        for dir in ["src/graders"] {
            for e in std::fs::read_dir(lab.join(dir)).unwrap().flatten() {
                files.push(e.path());
            }
        }
        for e in std::fs::read_dir(lab.join("exercises")).unwrap().flatten() {
            let g = e.path().join("grader").join("main.rs");
            if g.is_file() {
                files.push(g);
            }
        }
        files.sort();
        let templates: Vec<String> = parse_po(ZH_CN_PO)
            .iter()
            .map(|(en, _)| normalise_template(en))
            .collect();
        let mut missing = Vec::new();
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            for lit in literals(&text) {
                if !is_message(&lit) {
                    continue;
                }
                let probe = normalise_format(&lit);
                let probe = probe.trim();
                if !templates.iter().any(|t| t.contains(probe)) {
                    missing.push(format!(
                        "{}: {lit:?}",
                        f.strip_prefix(lab).unwrap_or(f).display()
                    ));
                }
            }
        }
        let _ = LANG.set(Lang::ZhCn);
        for ex in crate::catalog::EXERCISES {
            for (what, s) in [("title", ex.title), ("hint", ex.hint)] {
                if translate(s).is_none() {
                    missing.push(format!("catalog.rs: exercise {} {what}: {s:?}", ex.num));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "{} messages have no template in lab/i18n/zh-CN.po:\n{}",
            missing.len(),
            missing.join("\n")
        );
    }
}
