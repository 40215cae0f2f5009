#!/usr/bin/env python3
"""Copy the comparison's charts with their titles and axes in Chinese.

    svg_zh.py SRC_DIR DEST_DIR     every SRC_DIR/*.svg -> DEST_DIR/*.svg

The charts are drawn by `loadgen compare` (results/*.svg) with English
labels. The zh-CN edition shows these copies, in which each known label is
replaced whole inside its <text> element; series names are program names and
stay as they are, except the reference row's description. A label this
table does not know makes the script fail, so a new chart or a renamed axis
is noticed at build time instead of showing English in the Chinese edition.
"""

import re
import sys
from pathlib import Path

SIZE = r"(?P<size>[\d.]+ ?[KMG]?i?B)"
WORK = {"0": "无额外计算", "heavy": "每请求重计算"}
TITLES = [
    (rf"Server CPU per request vs connections \({SIZE}, work (?P<work>\w+)\)", "每个请求的服务器 CPU 时间与连接数（{size}，{work}）"),
    (rf"Throughput vs connections \({SIZE}, work (?P<work>\w+)\)", "吞吐量与连接数（{size}，{work}）"),
    (rf"p99 latency vs connections \({SIZE}, work (?P<work>\w+)\)", "p99 延迟与连接数（{size}，{work}）"),
]
LABELS = {
    "server CPU µs / request": "服务器 CPU（微秒/请求）",
    "connections (log scale)": "连接数（对数刻度）",
    "requests/s": "每秒请求数",
    "p99 latency (µs, log)": "p99 延迟（微秒，对数刻度）",
    "p99 latency (ms)": "p99 延迟（毫秒）",
    "practical limit (epoll-ref)": "实际极限（epoll-ref）",
}
# What may stay untranslated: numbers, tick labels (10k, 1.0M), program names.
KEEP = re.compile(r"[\d.,]+[kM]?|[a-z0-9]+(-[a-z0-9]+)*")
TEXT = re.compile(r"(<text[^>]*>)(\s*)([^<]*?)(\s*)(</text>)")


def translate(label):
    if label in LABELS:
        return LABELS[label]
    for pattern, template in TITLES:
        m = re.fullmatch(pattern, label)
        if m:
            return template.format(size=m["size"], work=WORK.get(m["work"], "work " + m["work"]))
    if KEEP.fullmatch(label):
        return label
    raise ValueError(label)


def main(src, dest):
    Path(dest).mkdir(parents=True, exist_ok=True)
    unknown = set()
    for path in sorted(Path(src).glob("*.svg")):
        def sub(m):
            try:
                return m[1] + m[2] + translate(m[3]) + m[4] + m[5]
            except ValueError:
                unknown.add(f"{path.name}: {m[3]!r}")
                return m[0]

        out = TEXT.sub(sub, path.read_text(encoding="utf-8"))
        (Path(dest) / path.name).write_text(out, encoding="utf-8")
    if unknown:
        sys.exit("svg_zh: labels with no Chinese version (add them to book/tools/svg_zh.py):\n  " + "\n  ".join(sorted(unknown)))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
