#!/usr/bin/env python3
"""Turns the `key=value` results written by scripts/bench.sh into the Markdown tables it
prints: the figures (Aerugo, distribution, nginx, ratios) and the issue's targets.
(load, number, fmt and ratio are shared with report_cluster.py.)

    report.py RESULTS_FILE
"""

import sys

A, D, N = "aerugo", "distribution", "nginx"


def load(path):
    values = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if "=" in line:
                k, v = line.split("=", 1)
                values[k] = v
    return values


def number(values, key):
    """The value of `key` as a float; None when it is missing or not a number."""
    v = values.get(key)
    try:
        return float(v) if v not in (None, "") else None
    except ValueError:
        return None


def fmt(v, digits=0):
    if v is None:
        return "–"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def ratio(a, b, digits=2):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.{digits}f}×"


def main() -> int:
    r = load(sys.argv[1])

    def num(key):
        return number(r, key)

    rows = []

    def row(label, key, digits=0, servers=(A, D, N), unit=""):
        a, d, n = (num(f"{key}_{s}") if s in servers else None for s in (A, D, N))
        rows.append(
            (
                label + (f" ({unit})" if unit else ""),
                fmt(a, digits),
                fmt(d, digits),
                fmt(n, digits) if N in servers else "n/a",
                ratio(a, d),
                ratio(a, n) if N in servers else "",
            )
        )

    both = (A, D)
    conns = r.get("conns", "64")
    row("push, monolithic: POST + one PUT with the body", "push_put_mbps", 0, both, "MB/s")
    row("  server CPU per GiB pushed", "push_put_cpu_per_gib", 2, both, "CPU-s")
    row("  client (curl) CPU per GiB", "push_put_client_cpu_per_gib", 2, both, "CPU-s")
    row("push, monolithic: single POST ?digest= (distribution: not implemented)", "push_post_mbps", 0, (A,), "MB/s")
    row("  server CPU per GiB pushed", "push_post_cpu_per_gib", 2, (A,), "CPU-s")
    row("  client (curl) CPU per GiB", "push_post_client_cpu_per_gib", 2, (A,), "CPU-s")
    row("push 1 blob, 16 MiB chunks", "push_chunked_mbps", 0, both, "MB/s")
    row("  server CPU per GiB pushed", "push_chunked_cpu_per_gib", 2, both, "CPU-s")
    row("  client (Python) CPU per GiB", "push_chunked_client_cpu_per_gib", 2, both, "CPU-s")
    row("blob GET, 1 client", "get1_mbps", 0, unit="MB/s")
    row(f"blob GET, {r.get('clients', '8')} clients (total)", "get8_mbps", 0, unit="MB/s")
    row("  server CPU per GiB served (parallel GET)", "get8_cpu_per_gib", 3, unit="CPU-s")
    row("  peak RSS during the parallel GET", "get8_hwm_mib", 1, unit="MiB")
    for key, label in (("mtag", "manifest GET by tag"), ("mdig", "manifest GET by digest")):
        row(f"{label}, {conns} conns", f"{key}_rps", 0, unit="req/s")
        row("  p50", f"{key}_p50", 2, unit="ms")
        row("  p99", f"{key}_p99", 2, unit="ms")
        row("  server CPU per 1000 requests", f"{key}_cpu_ms_per_k", 1, unit="CPU-ms")
    row(f"blob HEAD, {conns} conns", "head_rps", 0, unit="req/s")
    row("  p50", "head_p50", 2, unit="ms")
    row("  p99", "head_p99", 2, unit="ms")
    row("  server CPU per 1000 requests", "head_cpu_ms_per_k", 1, unit="CPU-ms")

    out = []
    out.append(
        f"Blob: {r.get('blob_mib', '?')} MiB of random bytes; manifest: {r.get('manifest_bytes', '?')} bytes; "
        f"oha: {r.get('seconds', '?')} s per run at {r.get('conns', '?')} connections, best of {r.get('oha_repeat', '?')}; "
        f"pushes and blob GETs: best of {r.get('repeat', '?')} interleaved runs. "
        "MB = 10^6 bytes. nginx serves the same blob file and a file of the manifest's bytes."
    )
    out.append("")
    out.append("| Measurement | Aerugo | distribution | nginx | Aerugo / distribution | Aerugo / nginx |")
    out.append("|---|---:|---:|---:|---:|---:|")
    for label, a, d, n, rd, rn in rows:
        label = label.replace("  ", "&nbsp;&nbsp;") if label.startswith("  ") else label
        out.append(f"| {label} | {a} | {d} | {n} | {rd} | {rn} |")
    out.append("")
    if num("aerugo_hwm_total_mib") is not None:
        out.append(f"Aerugo's peak RSS over the whole run (pushes included): {fmt(num('aerugo_hwm_total_mib'), 1)} MiB.")
    if num("disk_fdatasync_mbps") is not None:
        out.append(
            f"Disk (context): writing the blob with dd + fdatasync: {fmt(num('disk_fdatasync_mbps'))} MB/s; "
            f"sha256 by Python hashlib (OpenSSL, SHA-NI): {fmt(num('hashlib_mbps'))} MB per CPU-second."
        )
    out.append("")

    # Targets of issue 2, as same-run ratios.
    targets = []

    def target(label, measured, ok):
        verdict = "–" if ok is None else ("met" if ok else "**missed**")
        targets.append((label, measured, verdict))

    for key, label in (("push_put_mbps", "push monolithic (POST + PUT) ≥ 3× distribution MB/s"),
                       ("push_post_mbps", "push monolithic (Aerugo single POST vs distribution POST + PUT) ≥ 3×"),
                       ("push_chunked_mbps", "push 16 MiB chunks ≥ 3× distribution MB/s")):
        a, d = num(f"{key}_{A}"), num(f"{key.replace('post', 'put')}_{D}")
        target(label, ratio(a, d), None if a is None or not d else a / d >= 3.0)
    a, n = num(f"get8_cpu_per_gib_{A}"), num(f"get8_cpu_per_gib_{N}")
    target("blob GET server CPU per GiB ≤ 1.2× nginx", ratio(a, n), None if a is None or not n else a / n <= 1.2)
    for key, label in (("mtag", "manifest GET by tag"), ("mdig", "manifest GET by digest"), ("head", "blob HEAD")):
        a, d, p99 = num(f"{key}_rps_{A}"), num(f"{key}_rps_{D}"), num(f"{key}_p99_{A}")
        target(f"{label} ≥ 20× distribution req/s", ratio(a, d, 1), None if a is None or not d else a / d >= 20.0)
        target(f"{label} p99 ≤ 10 ms", f"{fmt(p99, 2)} ms", None if p99 is None else p99 <= 10.0)
    hwm = num(f"get8_hwm_mib_{A}")
    target("peak RSS < 100 MiB while 8 clients pull", f"{fmt(hwm, 1)} MiB", None if hwm is None else hwm < 100.0)

    out.append("| Target (issue 2) | Measured | Verdict |")
    out.append("|---|---:|---|")
    for label, measured, verdict in targets:
        out.append(f"| {label} | {measured} | {verdict} |")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
