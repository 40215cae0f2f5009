#!/usr/bin/env python3
"""Copy the comparison's charts for the book: legend below the plot, and
for the zh-CN edition titles and axes in Chinese.

    charts.py SRC_DIR DEST_DIR [--zh]     every SRC_DIR/*.svg -> DEST_DIR/*.svg

The charts are drawn by `loadgen compare` (results/*.svg) with English
labels and the legend in a box over the top-left corner of the plot, where
it hides the points at one connection. The copies move the legend's entries
below the plot, three to a row, and make the picture taller to hold them.

With --zh each known label is replaced whole inside its <text> element;
series names are program names and stay as they are, except the reference
row's description. A label this table does not know makes the script fail,
so a new chart or a renamed axis is noticed at build time instead of showing
English in the Chinese edition. A chart whose legend is not where this
expects it fails too.
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


# The legend as plotters draws it: a translucent white box, its border, then
# one <text> per series and one short <polyline> (or <rect>) per series, each
# row ROW pixels below the one before.
LEGEND_BOX = re.compile(r'<rect x="(\d+)" y="(\d+)" width="(\d+)" height="(\d+)" opacity="0\.85" fill="#FFFFFF" stroke="none"/>\n')
SVG_SIZE = re.compile(r'<svg width="(\d+)" height="(\d+)" viewBox="0 0 (\d+) (\d+)"')
BACKGROUND = re.compile(r'(<rect x="0" y="0" width="\d+" height=")(\d+)(")')
ROW = 15
COLUMNS = 3


def legend_below(svg, name):
    box = LEGEND_BOX.search(svg)
    size = SVG_SIZE.search(svg)
    if not box or not size:
        raise ValueError(f"{name}: no legend box or no <svg> size where plotters puts them")
    x0, y0, _, _ = (int(v) for v in box.groups())
    width, height = int(size[1]), int(size[2])
    head, legend = svg[: box.start()], svg[box.end() :]
    # Drop the box's border: the entries stand on their own below the axis.
    legend = re.sub(r'<rect x="%d" y="%d" [^>]*fill="none"[^>]*/>\n' % (x0, y0), "", legend, count=1)
    col_width = (width - 2 * x0) // COLUMNS
    rows = 0

    def place(y):
        nonlocal rows
        i = (y - y0) // ROW
        rows = max(rows, i // COLUMNS + 1)
        return (i % COLUMNS) * col_width, height + (i // COLUMNS) * ROW - (y0 + i * ROW)

    def move_text(m):
        x, y = int(m[1]), int(m[2])
        dx, dy = place(y)
        return f'<text x="{x + dx}" y="{y + dy}"'

    def move_line(m):
        pts = [tuple(int(v) for v in p.split(",")) for p in m[1].split()]
        dx, dy = place(pts[0][1] - ROW // 2)
        return 'points="' + " ".join(f"{x + dx},{y + dy}" for x, y in pts) + ' "'

    def move_rect(m):
        x, y = int(m[1]), int(m[2])
        dx, dy = place(y)
        return f'<rect x="{x + dx}" y="{y + dy}"'

    legend = re.sub(r'<text x="(\d+)" y="(\d+)"', move_text, legend)
    legend = re.sub(r'points="([\d, ]+?) ?"', move_line, legend)
    legend = re.sub(r'<rect x="(\d+)" y="(\d+)"', move_rect, legend)
    new_height = height + rows * ROW + 10
    head = SVG_SIZE.sub(f'<svg width="{width}" height="{new_height}" viewBox="0 0 {width} {new_height}"', head, count=1)
    head = BACKGROUND.sub(lambda m: m[1] + str(new_height) + m[3], head, count=1)
    return head + legend


def main(src, dest, zh):
    Path(dest).mkdir(parents=True, exist_ok=True)
    unknown = set()
    for path in sorted(Path(src).glob("*.svg")):
        def sub(m):
            try:
                return m[1] + m[2] + translate(m[3]) + m[4] + m[5]
            except ValueError:
                unknown.add(f"{path.name}: {m[3]!r}")
                return m[0]

        out = path.read_text(encoding="utf-8")
        try:
            out = legend_below(out, path.name)
        except ValueError as e:
            sys.exit(f"charts: {e}")
        if zh:
            out = TEXT.sub(sub, out)
        (Path(dest) / path.name).write_text(out, encoding="utf-8")
    if unknown:
        sys.exit("charts: labels with no Chinese version (add them to book/tools/charts.py):\n  " + "\n  ".join(sorted(unknown)))


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--zh"]
    if len(args) != 2:
        sys.exit(__doc__)
    main(args[0], args[1], "--zh" in sys.argv[1:])
