#!/usr/bin/env python3
"""Find import cycles between the modules of each workspace crate.

    python3 scripts/import_cycles.py          # exit 1 and print each cycle

A module is a file under src/ (a folder module is its mod.rs plus its files,
counted as one module: `uring/` is one node). An edge A -> B is any
`crate::B` path written in A outside a `#[cfg(test)]` module; `super::` in a
folder's file is its own folder. Binaries (main.rs) and lib.rs are roots that
may import anything, so they are left out.
"""
import os, re, sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
# Every workspace member, as the root Cargo.toml lists them (so a new crate
# is checked without anyone remembering to add it here).
with open(os.path.join(ROOT, "Cargo.toml"), encoding="utf-8") as _f:
    _members = re.search(r"^members\s*=\s*\[(.*?)\]", _f.read(), re.M | re.S)
CRATES = re.findall(r'"([^"]+)"', _members.group(1)) if _members else []


def module_of(src, path):
    rel = os.path.relpath(path, src)
    top = rel.split(os.sep)[0]
    return top[:-3] if top.endswith(".rs") else top


def strip_tests(text):
    # Drop everything from the first `#[cfg(test)]` item on: test modules
    # sit at the end of a file and may import freely.
    i = text.find("#[cfg(test)]")
    return text if i < 0 else text[:i]


def edges(src):
    graph = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            m = module_of(src, path)
            if m in ("main", "lib", "bin"):
                continue
            text = strip_tests(open(path, encoding="utf-8").read())
            text = re.sub(r"//[^\n]*", "", text)
            deps = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", text))
            # `use crate::{a, b::c}` groups
            for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
                deps |= set(re.findall(r"(?:^|[,{\s])([a-z_][a-z0-9_]*)", group))
            graph.setdefault(m, set()).update(d for d in deps if d != m)
    return graph


def cycles(graph):
    found, seen = [], set()

    def walk(node, stack):
        for nxt in sorted(graph.get(node, ())):
            if nxt in stack:
                cyc = stack[stack.index(nxt):] + [nxt]
                key = frozenset(cyc)
                if key not in seen:
                    seen.add(key)
                    found.append(cyc)
            elif len(stack) < 12:
                walk(nxt, stack + [nxt])

    for n in sorted(graph):
        walk(n, [n])
    return found


bad = 0
for crate in CRATES:
    src = os.path.join(ROOT, crate, "src")
    if not os.path.isdir(src):
        continue
    for cyc in cycles(edges(src)):
        bad += 1
        print(f"{crate}: " + " -> ".join(cyc))
print(f"{bad} import cycle(s)")
sys.exit(1 if bad else 0)
