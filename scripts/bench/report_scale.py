#!/usr/bin/env python3
"""Prints scripts/bench-scale.sh's report (markdown) from its results file.

    report_scale.py RESULTS MACHINE

RESULTS holds tab-separated `stack size metric value` lines; MACHINE the run's description.
Each registry stack gets a table (one row per metric, one column per size) with the ratio of
the largest size to the smallest beside latencies; the edge gets its own table.
"""

import sys
from collections import defaultdict


def load(path):
    data = defaultdict(dict)  # (stack) -> {(metric, size): value}
    for line in open(path, encoding="utf-8"):
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 4:
            continue
        stack, size, metric, value = parts
        data[stack][(metric, int(size))] = float(value)
    return data


def fmt(v):
    if v is None:
        return "–"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def table(title, values, ratio_of=lambda m: m.endswith("_ms")):
    sizes = sorted({s for (_, s) in values})
    metrics = sorted({m for (m, _) in values}, key=lambda m: (m.split(".")[0], m))
    lines = [f"### {title}", ""]
    head = "| metric | " + " | ".join(f"{s:,}" for s in sizes) + " | largest ÷ smallest |"
    lines += [head, "|---" * (len(sizes) + 2) + "|"]
    for m in metrics:
        row = [values.get((m, s)) for s in sizes]
        ratio = "–"
        if ratio_of(m) and row[0] and row[-1] is not None and len(sizes) > 1:
            ratio = f"{row[-1] / row[0]:.2f}×"
        lines.append(f"| {m} | " + " | ".join(fmt(v) for v in row) + f" | {ratio} |")
    return "\n".join(lines)


def main():
    results, machine = sys.argv[1], sys.argv[2]
    data = load(results)
    out = ["```", open(machine, encoding="utf-8").read().rstrip(), "```", ""]
    for stack in sorted(data):
        if stack == "edge":
            continue
        out += [table(f"{stack} stack (size = blobs; repositories and tags = size / 10)", data[stack]), ""]
    if "edge" in data:
        edge = data["edge"]
        out += [table("edge start-up (size = cached blobs)", edge, lambda m: True), ""]
        sizes = sorted({s for (_, s) in edge})
        if len(sizes) > 1 and ("warm.rss_mib", sizes[0]) in edge and ("warm.rss_mib", sizes[-1]) in edge:
            grown = (edge[("warm.rss_mib", sizes[-1])] - edge[("warm.rss_mib", sizes[0])]) * 2**20
            out += [f"Edge memory per cached entry: {grown / (sizes[-1] - sizes[0]):.0f} bytes "
                    f"(RSS after start-up, {sizes[-1]:,} entries against {sizes[0]:,}).", ""]
    print("\n".join(out))


if __name__ == "__main__":
    main()
