#!/usr/bin/env python3
"""How much do interleaved rounds steady the comparison? Reads a compare.json
written by `loadgen compare --rounds R` and, for every row of every load,
sets the spread of its single passes (each round's ratio to that round's
reference, as one pass of an old single-run comparison would report it)
beside the spread of the medians of G rounds (what `--rounds G` reports),
taken over the R/G disjoint groups of G consecutive rounds.

    target/release/loadgen compare --pin --rounds 15 --conns 100 --sizes 64 \
        --work 0 --out target/spread
    python3 scripts/rounds_spread.py target/spread/compare.json --group 5

Ratios are server CPU per request over the reference's (the `x ref`
column). "range" is max - min; the last column is how many times narrower
the medians' range is than the single passes'. Nothing here is asserted:
it only reads a measurement.
"""

import argparse
import json
import statistics
import sys


def ratios_by_row(doc):
    """{(load, row label): [ratio of round 1, round 2, ...]}"""
    refs = {}
    for c in doc["cells"]:
        if c["server"] == "epoll-ref" and c["status"] == "ok":
            load = (c["conns"], c["size"], c["work"])
            refs[load] = {r["round"]: r["server_cpu_us_per_request"] for r in c["runs"]}
    out = {}
    for c in doc["cells"]:
        load = (c["conns"], c["size"], c["work"])
        if c["server"] == "epoll-ref" or c["status"] != "ok" or load not in refs:
            continue
        per_round = []
        for r in sorted(c["runs"], key=lambda r: r["round"]):
            ref = refs[load].get(r["round"])
            mine = r["server_cpu_us_per_request"]
            if ref and mine:
                per_round.append(mine / ref)
        if per_round:
            out[(load, c["label"])] = per_round
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", help="compare.json from loadgen compare --rounds R")
    ap.add_argument("--group", type=int, default=5, help="rounds per median (default 5)")
    a = ap.parse_args()
    with open(a.json, encoding="utf-8") as f:
        doc = json.load(f)
    rows = ratios_by_row(doc)
    if not rows:
        sys.exit("no row with per-round ratios: was it run with --rounds and the reference?")
    print(f"| load | row | single passes: median, range | medians of {a.group}: values | range | narrower |")
    print("|---|---|---|---|---|---|")
    shrink = []
    for (load, label), rs in sorted(rows.items()):
        groups = [rs[i:i + a.group] for i in range(0, len(rs) - a.group + 1, a.group)]
        meds = [statistics.median(g) for g in groups]
        single = max(rs) - min(rs)
        med_range = max(meds) - min(meds) if len(meds) > 1 else float("nan")
        factor = single / med_range if med_range and med_range == med_range else float("inf")
        if len(meds) > 1 and med_range > 0:
            shrink.append(factor)
        conns, size, work = load
        print(
            f"| {conns} conns, {size} B, work {work} | {label} "
            f"| ×{statistics.median(rs):.2f}, ×{min(rs):.2f}–×{max(rs):.2f} ({single:.2f}, n={len(rs)}) "
            f"| {', '.join(f'×{m:.2f}' for m in meds)} | {med_range:.2f} | {factor:.1f}× |"
        )
    if shrink:
        print(f"\nmedian narrowing over the rows: {statistics.median(shrink):.1f}×")


if __name__ == "__main__":
    main()
