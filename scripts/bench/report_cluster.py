#!/usr/bin/env python3
"""Turns the `key=value` results written by scripts/bench-cluster.sh into the Markdown table it
prints: Aerugo on PostgreSQL + S3 + Redis against distribution on the same S3 server, with the
ratios and the targets of issue 7.

    report_cluster.py RESULTS_FILE
"""

import sys

from report import fmt, load, number, ratio

A, D = "aerugo", "distribution"
# "≈ 0" node CPU per GiB pulled through a redirect: the node answers one small request, so
# anything under 10 ms per GiB (one clock tick at 100 Hz) is noise.
NEAR_ZERO_CPU_S = 0.01


def main() -> int:
    r = load(sys.argv[1])
    rows = []

    def row(label, key, digits=0, unit="", min_ratio=None, max_aerugo=None):
        """One line; `min_ratio`: target Aerugo/distribution ≥ it; `max_aerugo`: Aerugo ≤ it."""
        a, d = number(r, f"{key}_{A}"), number(r, f"{key}_{D}")
        target, verdict = "", ""
        if min_ratio is not None:
            target = f"≥ {min_ratio:g}×"
            ok = None if a is None or not d else a / d >= min_ratio
        elif max_aerugo is not None:
            target = f"≈ 0 (≤ {max_aerugo:g})"
            ok = None if a is None else a <= max_aerugo
        else:
            ok = None
        if target:
            verdict = "–" if ok is None else ("met" if ok else "**missed**")
        rows.append((label + (f" ({unit})" if unit else ""), fmt(a, digits), fmt(d, digits), ratio(a, d), target, verdict))

    def cpu_rows(key, what, node_target=None):
        row(f"  node CPU per GiB {what}", f"{key}_cpu_per_gib", 3, "CPU-s", max_aerugo=node_target)
        row(f"  s3s-fs CPU per GiB {what}", f"{key}_s3_cpu_per_gib", 3, "CPU-s")
        row(f"  S3 front (nginx) CPU per GiB {what}", f"{key}_front_cpu_per_gib", 3, "CPU-s")

    chunk = r.get("chunk_mib", "16")
    row("push, monolithic (POST + one PUT)", "push_put_mbps", 0, "MB/s", min_ratio=2)
    cpu_rows("push_put", "pushed")
    row(f"push, chunked ({chunk} MiB PATCHes)", "push_chunked_mbps", 0, "MB/s", min_ratio=2)
    cpu_rows("push_chunked", "pushed")
    row("  requests retried (400: upload lock still held)", "push_chunked_retries", 0, "most in a run")
    row("pull, redirects on (client follows the 307 to s3s-fs)", "pull_redirect_mbps", 0, "MB/s", min_ratio=2)
    cpu_rows("pull_redirect", "pulled", node_target=NEAR_ZERO_CPU_S)
    row("pull, redirects off (bytes through the node)", "pull_direct_mbps", 0, "MB/s", min_ratio=2)
    cpu_rows("pull_direct", "pulled")
    conns = r.get("conns", "64")
    for cache, label in (("redis", "Redis on"), ("memory", "Redis off")):
        for key, what, target in (
            ("mtag", "manifest GET by tag", 20 if cache == "redis" else 2),
            ("mdig", "manifest GET by digest", 20 if cache == "redis" else 2),
            ("head", "blob HEAD", 2),
        ):
            row(f"{what}, {label}, {conns} conns", f"{key}_{cache}_rps", 0, "req/s", min_ratio=target)
            row("  p50", f"{key}_{cache}_p50", 2, "ms")
            row("  p99", f"{key}_{cache}_p99", 2, "ms")
            row("  node CPU per 1000 requests", f"{key}_{cache}_cpu_ms_per_k", 1, "CPU-ms")

    out = [
        f"Blob: {r.get('blob_mib', '?')} MiB of random bytes; manifest: {r.get('manifest_bytes', '?')} bytes; "
        f"pushes and pulls: best of {r.get('repeat', '?')} interleaved runs, 1 client; "
        f"oha: {r.get('seconds', '?')} s per run at {conns} connections, best of {r.get('oha_repeat', '?')}. "
        "MB = 10^6 bytes. Both registries store blobs in their own bucket of the same s3s-fs server; "
        "Aerugo's metadata is in PostgreSQL, distribution's in S3. "
        "\"Redis off\": Aerugo `cache.type = \"memory\"`, distribution `cache: blobdescriptor: inmemory`. "
        "The oha runs use redirects off (distribution would answer the blob HEAD with a 307 too). "
        "Both registries reach s3s-fs through the same nginx front (see docs/benchmarks.md: "
        "distribution 2.8 needs ListMultipartUploads, which s3s-fs lacks).",
        "",
        "| Measurement | Aerugo | distribution | Aerugo / distribution | Target | Verdict |",
        "|---|---:|---:|---:|---|---|",
    ]
    for label, a, d, rd, target, verdict in rows:
        label = label.replace("  ", "&nbsp;&nbsp;", 1) if label.startswith("  ") else label
        out.append(f"| {label} | {a} | {d} | {rd} | {target} | {verdict} |")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
