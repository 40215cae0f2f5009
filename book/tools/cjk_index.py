#!/usr/bin/env python3
"""Make an mdBook search index find Chinese words.

    cjk_index.py BOOK_DIR     rewrite BOOK_DIR/searchindex*.js in place

mdBook cuts text into words at spaces and hyphens (rust-lang/mdBook#1081),
so a Chinese sentence is indexed as one long "word" and 粘包 finds nothing.
This adds, for every page section, each Han character and each pair of
adjacent Han characters as words, and drops the long mixed words. The query
side is book/theme/cjk-search.js, which cuts a query into the same pairs;
the two must agree, and book/tools/check.py tests them together by running
the browser's code under node.

English words keep mdBook's own tokens (stemmed by its pipeline); only the
Latin pieces glued to Han text ("TCP的") are added as they are.
"""

import json
import math
import re
import sys
from pathlib import Path

HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
CJK_PUNCT = re.compile(r"[\u3000-\u303f\uff00-\uffef]")
# elasticlunr.tokenizer's separator, and its trimmer (JavaScript \W is ASCII).
SEPARATOR = re.compile(r"[\s\-]+")
TRIM = re.compile(r"^[^A-Za-z0-9_]+|[^A-Za-z0-9_]+$")
PREFIX = "window.search = Object.assign(window.search, JSON.parse('"
SUFFIX = "'));"


def split_han(token):
    """The same cut as splitHan() in cjk-search.js: (han_words, other_words)."""
    han, other = [], []
    run, rest = "", ""

    def flush_run():
        nonlocal run
        if len(run) == 1:
            han.append(run)
        han.extend(run[i : i + 2] for i in range(len(run) - 1))
        run = ""

    def flush_rest():
        nonlocal rest
        if rest:
            other.append(rest)
        rest = ""

    for ch in token:
        if HAN.match(ch):
            flush_rest()
            run += ch
        elif CJK_PUNCT.match(ch):
            flush_rest()
            flush_run()
        else:
            flush_run()
            rest += ch
    flush_rest()
    flush_run()
    return han, other


def words(text):
    """Index words of one field: Han pairs and characters, and the Latin
    pieces that were glued to Han text (mdBook indexed neither)."""
    out = []
    for token in SEPARATOR.split(text.lower()):
        if not token or not HAN.search(token):
            continue
        han, other = split_han(token)
        out.extend(han)
        out.extend(w for w in (TRIM.sub("", o) for o in other) if w)
    # Han punctuation glued to a Latin word never reaches the index as such.
    return out


def flatten(node, prefix, into):
    docs = node.get("docs", {})
    if docs:
        into[prefix] = docs
    for key, child in node.items():
        if key not in ("docs", "df"):
            flatten(child, prefix + key, into)


def build(postings):
    root = {"df": 0, "docs": {}}
    for token in sorted(postings):
        node = root
        for ch in token:
            node = node.setdefault(ch, {"df": 0, "docs": {}})
        node["docs"] = postings[token]
        node["df"] = len(postings[token])
    return root


def rewrite(index):
    store = index["documentStore"]
    added = 0
    for field in index["fields"]:
        postings = {}
        flatten(index["index"][field]["root"], "", postings)
        # The long words that contain Han text match no query: drop them.
        postings = {t: d for t, d in postings.items() if not HAN.search(t)}
        for ref, doc in store["docs"].items():
            counts = {}
            for w in words(doc.get(field) or ""):
                counts[w] = counts.get(w, 0) + 1
            for w, n in counts.items():
                # elasticlunr stores sqrt(count) as a term's frequency.
                postings.setdefault(w, {})[ref] = {"tf": math.sqrt(n)}
                added += 1
            if counts:
                info = store["docInfo"].setdefault(ref, {})
                info[field] = info.get(field, 0) + sum(counts.values())
        index["index"][field]["root"] = build(postings)
    # The query's pipeline: the same steps, with a trimmer that keeps Han.
    index["pipeline"] = ["han-aware-trimmer" if p == "trimmer" else p for p in index["pipeline"]]
    return added


def main(book_dir):
    paths = sorted(Path(book_dir).glob("searchindex*.js"))
    if not paths:
        sys.exit(f"cjk_index: no searchindex*.js in {book_dir}")
    for path in paths:
        text = path.read_text(encoding="utf-8")
        if not (text.startswith(PREFIX) and text.rstrip().endswith(SUFFIX)):
            sys.exit(f"cjk_index: {path} is not in the format of mdBook 0.5 (see book.sh's pinned version)")
        body = text.rstrip()[len(PREFIX) : -len(SUFFIX)]
        data = json.loads(re.sub(r"\\(.)", r"\1", body, flags=re.S))
        if "han-aware-trimmer" in data["index"]["pipeline"]:
            continue
        added = rewrite(data["index"])
        out = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        out = out.replace("\\", "\\\\").replace("'", "\\'")
        path.write_text(PREFIX + out + SUFFIX, encoding="utf-8")
        print(f"{path}: {added} Han words added to the search index")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
