#!/usr/bin/env python3
"""Checks for the course book that mdBook does not make itself.

    check.py includes BOOK_SRC        every {{#include}} names an existing file and,
                                      for workspace sources, a named anchor that exists
                                      and is not empty; no code listing is pasted
    check.py links OUT_ROOT DIR...    every relative link, image and fragment in the
                                      rendered HTML resolves (no network: external
                                      links are counted, not fetched)
    check.py search DIR TERM...       each TERM finds every section of the built edition
                                      DIR whose text contains it, and shows at least one,
                                      searched by the browser's own code (mdBook's
                                      elasticlunr, book/theme/cjk-search.js, DIR's
                                      searchindex) run under node

Why: mdBook logs a missing include file and carries on, and renders a missing
anchor as an empty listing without a word; its HTML renderer does not check
links at all. Exit status 1 on any problem, with one line per problem.
"""

import html.parser
import os
import re
import sys
import urllib.parse

INCLUDE = re.compile(r"\{\{#(include|rustdoc_include)\s+([^}\s]+)\s*\}\}")
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
# Languages whose blocks must be includes of real files, never pasted code.
CODE_LANGS = {"rust", "rs", "python", "py", "toml"}
ANCHOR_START = re.compile(r"ANCHOR:\s*([\w-]+)")
ANCHOR_END = re.compile(r"ANCHOR_END:\s*([\w-]+)")


def anchor_name(pattern, line):
    m = pattern.search(line)
    return m.group(1) if m else None


def check_includes(src):
    problems = []
    count = 0
    for dirpath, _, files in os.walk(src):
        for name in sorted(files):
            if not name.endswith(".md"):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, src)
            with open(path, encoding="utf-8") as f:
                lines = f.read().split("\n")
            fence = None
            for lineno, line in enumerate(lines, 1):
                where = f"{rel}:{lineno}"
                m = FENCE.match(line)
                if m and fence is None:
                    fence = (m.group(2), m.group(3).lower(), lineno)
                    continue
                if m and fence is not None and m.group(2).startswith(fence[0]) and not m.group(3):
                    fence = None
                    continue
                if fence is not None and fence[1] in CODE_LANGS and line.strip():
                    if not INCLUDE.fullmatch(line.strip()):
                        problems.append(
                            f"{rel}:{fence[2]}: a ```{fence[1]} listing with pasted code "
                            f"(line {lineno}); include it from the workspace with an anchor"
                        )
                        fence = (fence[0], "reported", fence[2])
                for m in INCLUDE.finditer(line):
                    count += 1
                    problems.extend(check_one_include(dirpath, where, m.group(2)))
    return count, problems


def check_one_include(dirpath, where, spec):
    target, _, anchor = spec.partition(":")
    path = os.path.normpath(os.path.join(dirpath, target))
    if not os.path.isfile(path):
        return [f"{where}: include of a missing file: {target}"]
    generated = f"{os.sep}generated{os.sep}" in path
    if not anchor:
        if generated:
            return []
        return [f"{where}: include of a whole workspace file ({target}); name an anchor"]
    if re.fullmatch(r"[\d:]*", anchor):
        return [f"{where}: include by line numbers ({spec}) drifts when the file changes; use an anchor"]
    with open(path, encoding="utf-8") as f:
        text = f.read().split("\n")
    # The names as mdBook reads them: `ANCHOR: name`, name = [\w-]+.
    start = [i for i, l in enumerate(text) if anchor_name(ANCHOR_START, l) == anchor]
    end = [i for i, l in enumerate(text) if anchor_name(ANCHOR_END, l) == anchor]
    if not start:
        return [f"{where}: anchor `{anchor}` not found in {target} (no `ANCHOR: {anchor}` line)"]
    if not end:
        return [f"{where}: anchor `{anchor}` in {target} has no `ANCHOR_END: {anchor}` line"]
    if len(start) > 1 or len(end) > 1:
        return [f"{where}: anchor `{anchor}` appears more than once in {target}"]
    body = [l for l in text[start[0] + 1 : end[0]] if l.strip() and "ANCHOR" not in l]
    if end[0] < start[0] or not body:
        return [f"{where}: anchor `{anchor}` in {target} is empty"]
    return []


class Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.refs = []
        self.ids = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name"):
            if a.get(key):
                self.ids.add(a[key])
        attr = {"a": "href", "img": "src", "link": "href", "script": "src"}.get(tag)
        if attr and a.get(attr):
            self.refs.append((tag, a[attr]))


def parse(path, cache):
    if path not in cache:
        p = Links()
        with open(path, encoding="utf-8", errors="replace") as f:
            p.feed(f.read())
        cache[path] = p
    return cache[path]


def check_links(root, dirs):
    root = os.path.realpath(root)
    cache, problems, checked, external = {}, [], 0, 0
    for d in dirs:
        for dirpath, _, files in os.walk(d):
            for name in sorted(files):
                if not name.endswith(".html"):
                    continue
                page = os.path.join(dirpath, name)
                for tag, ref in parse(page, cache).refs:
                    url = urllib.parse.urlsplit(ref)
                    if url.scheme or ref.startswith("//"):
                        external += 1
                        continue
                    checked += 1
                    target = page
                    if url.path:
                        target = os.path.realpath(
                            os.path.join(dirpath, urllib.parse.unquote(url.path))
                        )
                        if os.path.isdir(target):
                            target = os.path.join(target, "index.html")
                    rel = os.path.relpath(page, root)
                    if not target.startswith(root + os.sep):
                        problems.append(f"{rel}: <{tag}> {ref} leaves the book")
                    elif not os.path.isfile(target):
                        problems.append(f"{rel}: <{tag}> {ref}: no such file")
                    elif url.fragment and target.endswith(".html"):
                        frag = urllib.parse.unquote(url.fragment)
                        if frag not in parse(target, cache).ids:
                            problems.append(f"{rel}: <{tag}> {ref}: no element with id `{frag}`")
    return checked, external, problems


# What searcher.js does in the browser (init, then doSearch), with the
# scripts the page loads, in the page's order: elasticlunr, then the
# additional JS (cjk-search.js registers its tokenizer and trimmer), then the
# index, loaded lazily when the search bar opens.
SEARCH_JS = r"""
const fs = require("fs"), vm = require("vm"), path = require("path");
const [dir, ...terms] = process.argv.slice(2);
const pick = (sub, re) => {
    const hits = fs.readdirSync(path.join(dir, sub)).filter((f) => re.test(f));
    if (hits.length !== 1) { throw new Error(`${dir}/${sub}: expected one file matching ${re}, found [${hits}]`); }
    return path.join(dir, sub, hits[0]);
};
globalThis.window = globalThis;
globalThis.search = {};
vm.runInThisContext(fs.readFileSync(pick(".", /^elasticlunr.*\.js$/), "utf8"));
vm.runInThisContext(fs.readFileSync(pick("theme", /^cjk-search.*\.js$/), "utf8"));
vm.runInThisContext(fs.readFileSync(pick(".", /^searchindex.*\.js$/), "utf8"));
const config = window.search;
const index = elasticlunr.Index.load(config.index);
const out = {};
for (const term of terms) {
    // What the reader is shown (doSearch keeps the first limit_results),
    // which of those sections really contain the term (a hit that only
    // shares a pair of characters with it does not count), and every section
    // whose text contains the term, all of which the search must find.
    const contains = (ref) => {
        const d = index.documentStore.getDoc(ref);
        return (d.title + " " + d.body).toLowerCase().includes(term.toLowerCase());
    };
    const all = index.search(term, config.search_options);
    const shown = all.slice(0, config.results_options.limit_results);
    const found = new Set(all.map((r) => r.ref));
    const refs = Object.keys(index.documentStore.docs);
    out[term] = {
        shown: shown.map((r) => config.doc_urls[r.ref]),
        containing: shown.filter((r) => contains(r.ref)).map((r) => config.doc_urls[r.ref]),
        missed: refs.filter((ref) => contains(ref) && !found.has(ref)).map((ref) => config.doc_urls[ref]),
        sections: refs.filter(contains).length,
    };
}
console.log(JSON.stringify(out));
"""


def check_search(book_dir, terms):
    import json
    import subprocess
    import tempfile
    import shutil

    if not shutil.which("node"):
        return {}, ["node is needed to run the search check (apt-get install nodejs)"]
    with tempfile.NamedTemporaryFile("w", suffix=".js", delete=False) as f:
        f.write(SEARCH_JS)
    try:
        run = subprocess.run(["node", f.name, book_dir, *terms], capture_output=True, text=True, timeout=120)
    finally:
        os.unlink(f.name)
    if run.returncode != 0:
        return {}, [f"search under node failed: {run.stderr.strip()[-2000:]}"]
    found = json.loads(run.stdout)
    problems = []
    for t in terms:
        hits = found.get(t, {})
        if not hits.get("containing"):
            problems.append(f"{book_dir}: searching `{t}` shows no section that contains it")
        if hits.get("missed"):
            problems.append(
                f"{book_dir}: searching `{t}` misses {len(hits['missed'])} of the {hits['sections']} "
                f"sections that contain it, e.g. {', '.join(hits['missed'][:3])}"
            )
    return found, problems


def main(argv):
    if len(argv) >= 3 and argv[0] == "search":
        found, problems = check_search(argv[1], argv[2:])
        for term, hits in found.items():
            pages = sorted({u.split("#")[0] for u in hits["containing"]})
            print(
                f"search {term}: {len(hits['shown'])} result(s) shown, {len(hits['containing'])} "
                f"containing the term, on {len(pages)} page(s): {', '.join(pages)}; "
                f"{hits['sections'] - len(hits['missed'])} of the {hits['sections']} sections "
                f"that contain it found"
            )
        for p in problems:
            print(f"book: {p}")
        return 1 if problems else 0
    if len(argv) >= 2 and argv[0] == "includes":
        count, problems = check_includes(argv[1])
        for p in problems:
            print(f"book: {p}")
        print(f"includes: {count} checked, {len(problems)} problem(s)")
        return 1 if problems else 0
    if len(argv) >= 3 and argv[0] == "links":
        checked, external, problems = check_links(argv[1], argv[2:])
        for p in problems:
            print(f"book: {p}")
        print(f"links: {checked} internal checked, {external} external not fetched, {len(problems)} broken")
        return 1 if problems else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
