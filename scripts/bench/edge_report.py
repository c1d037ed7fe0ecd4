#!/usr/bin/env python3
"""Markdown report of scripts/bench-edge.sh from its key=value results file."""

import sys

r = {}
with open(sys.argv[1]) as f:
    for line in f:
        line = line.strip()
        if "=" in line:
            k, v = line.split("=", 1)
            r[k] = v


def num(key):
    v = r.get(key)
    if v is None or v == "":
        return None
    try:
        return float(v)
    except ValueError:
        return None


def fmt(v, digits=1):
    if v is None:
        return "–"
    return f"{v:.{digits}f}"


def ratio(a, b, digits=2):
    if a is None or b in (None, 0):
        return "–"
    return f"{a / b:.{digits}f}×"


blob = int(num("blob_mib") or 0)
small = int(num("small_mib") or 0)
repeat = int(num("repeat") or 1)
conc = [int(c) for c in r.get("concurrency", "").split(",") if c]
warm_clients = int(num("warm_clients") or 0)
rss_clients = int(num("rss_clients") or 0)
size = f"{blob} MiB" if blob != 1024 else "1 GiB"

out = []
p = out.append

direct = num("direct_mbps")
p(f"**1. Cold pull of a {size} blob, one client** (curl to /dev/null; best of {repeat}; every "
  "proxy pull on an empty cache; CPU-s/GiB of the proxy and of the upstream during that pull)")
p("")
p("| path | MB/s | × direct | proxy CPU-s/GiB | upstream CPU-s/GiB |")
p("|---|---:|---:|---:|---:|")
p(f"| direct from the upstream (docker-registry) | {fmt(direct)} | 1.00× | – | {fmt(num('direct_upstream_cpu'), 3)} |")
p(f"| through the Aerugo edge, cold | {fmt(num('cold_mbps_edge'))} | {ratio(num('cold_mbps_edge'), direct)} | "
  f"{fmt(num('cold_cpu_edge'), 3)} | {fmt(num('cold_upstream_cpu_edge'), 3)} |")
p(f"| through distribution (proxy mode), cold | {fmt(num('cold_mbps_distribution'))} | "
  f"{ratio(num('cold_mbps_distribution'), direct)} | {fmt(num('cold_cpu_distribution'), 3)} | "
  f"{fmt(num('cold_upstream_cpu_distribution'), 3)} |")
p(f"| nginx, the same file (context) | {fmt(num('nginx_mbps'))} | {ratio(num('nginx_mbps'), direct)} | – | – |")
p("")
p(f"Disk, for context: {fmt(num('disk_fdatasync_mbps'), 0)} MB/s writing the blob with `dd conv=fdatasync` "
  "(the edge fsyncs a filled blob before its last byte goes out).")
p("")

if num("phase_total_edge") is not None:
    p("Where a cold pull's time goes (one more cold pull per proxy, a Python client noting when "
      "bytes arrived; seconds from the request):")
    p("")
    p("| path | first byte | all but the last byte | last byte | last-byte wait | MB/s |")
    p("|---|---:|---:|---:|---:|---:|")
    for s, label in (("edge", "Aerugo edge, cold"), ("distribution", "distribution, cold")):
        t, pen, tot = num(f"phase_ttfb_{s}"), num(f"phase_penult_{s}"), num(f"phase_total_{s}")
        mb = None if not tot else blob * 1048576 / tot / 1e6
        p(f"| {label} | {fmt(t, 3)} | {fmt(pen, 3)} | {fmt(tot, 3)} | "
          f"{fmt(None if tot is None or pen is None else tot - pen, 3)} | {fmt(mb)} |")
    p("")

p("**2. Upstream traffic per cold blob** (blob GETs in the upstream's access log and the bytes "
  "they sent, in copies of the blob; every run on an empty cache, counted after the proxy "
  "finished its background fetches)")
p("")
p("| concurrent cold pulls | edge: upstream GETs | edge: copies | distribution: upstream GETs | distribution: copies | distribution: upstream HEADs |")
p("|---:|---:|---:|---:|---:|---:|")
p(f"| 1 (worst of {repeat}) | {fmt(num('gets_1_edge'), 0)} | {fmt(num('copies_1_edge'), 2)} | "
  f"{fmt(num('gets_1_distribution'), 0)} | {fmt(num('copies_1_distribution'), 2)} | {fmt(num('heads_1_distribution'), 0)} |")
for n in conc:
    p(f"| {n} | {fmt(num(f'gets_{n}_edge'), 0)} | {fmt(num(f'copies_{n}_edge'), 2)} | "
      f"{fmt(num(f'gets_{n}_distribution'), 0)} | {fmt(num(f'copies_{n}_distribution'), 2)} | {fmt(num(f'heads_{n}_distribution'), 0)} |")
p("")
if conc:
    p("Aggregate client throughput of those runs, and the proxies' peak RSS:")
    p("")
    p("| concurrent cold pulls | edge MB/s | edge peak RSS MiB | distribution MB/s | distribution peak RSS MiB |")
    p("|---:|---:|---:|---:|---:|")
    p(f"| 1 | {fmt(num('cold_mbps_edge'))} | {fmt(num('cold_hwm_1_edge'))} | "
      f"{fmt(num('cold_mbps_distribution'))} | {fmt(num('cold_hwm_1_distribution'))} |")
    for n in conc:
        p(f"| {n} | {fmt(num(f'cold_many_mbps_{n}_edge'))} | {fmt(num(f'cold_hwm_{n}_edge'))} | "
          f"{fmt(num(f'cold_many_mbps_{n}_distribution'))} | {fmt(num(f'cold_hwm_{n}_distribution'))} |")
    p("")
    p("Edge's own metrics for the same runs: " + "; ".join(
        f"{n} pulls → `aerugo_edge_upstream_fetches_total{{kind=\"blob\"}}` {fmt(num(f'edge_fetch_metric_{n}'), 0)}, "
        f"`aerugo_edge_coalesced_waiters_total` {fmt(num(f'edge_coalesced_metric_{n}'), 0)}, "
        f"{fmt(num(f'edge_misses_{n}'), 0)} responses `x-aerugo-cache: MISS`"
        for n in conc) + ".")
    p("")

nginx_cpu = num("warm_cpu_nginx")
p(f"**3. Warm serving of the {size} blob** (best of {repeat}; CPU = utime+stime of the server's "
  f"processes, nginx master + workers, over {warm_clients} concurrent pulls, per GiB sent; "
  f"upstream blob GETs meanwhile: {fmt(num('warm_upstream_gets'), 0)})")
p("")
p(f"| server | 1 client MB/s | {warm_clients} clients MB/s | CPU-s/GiB | × nginx |")
p("|---|---:|---:|---:|---:|")
for s, label in (("edge", "Aerugo edge"), ("distribution", "distribution (proxy mode)"), ("nginx", "nginx (sendfile)")):
    p(f"| {label} | {fmt(num(f'warm_mbps_{s}'))} | {fmt(num(f'warm_many_mbps_{s}'))} | "
      f"{fmt(num(f'warm_cpu_{s}'), 4)} | {ratio(num(f'warm_cpu_{s}'), nginx_cpu)} |")
p("")

tls_nginx_cpu = num("warm_cpu_nginx-tls")
if tls_nginx_cpu is not None:
    p(f"**3b. Warm serving over TLS** (the same runs against the edge's TLS listener and an nginx "
      f"TLS server on the same file, HTTP/1.1, self-signed P-256 certificate; suites: edge "
      f"`{r.get('tls_suite_edge', '?')}`, nginx `{r.get('tls_suite_nginx', '?')}`)")
    p("")
    p(f"| server | 1 client MB/s | {warm_clients} clients MB/s | CPU-s/GiB | × nginx over TLS |")
    p("|---|---:|---:|---:|---:|")
    for s, label in (("edge-tls", "Aerugo edge, TLS listener"), ("nginx-tls", "nginx, TLS")):
        p(f"| {label} | {fmt(num(f'warm_mbps_{s}'))} | {fmt(num(f'warm_many_mbps_{s}'))} | "
          f"{fmt(num(f'warm_cpu_{s}'), 4)} | {ratio(num(f'warm_cpu_{s}'), tls_nginx_cpu)} |")
    p("")

p(f"**4. Peak RSS with {rss_clients} concurrent downloads of a warm {small} MiB blob** (a smaller "
  f"blob than above so that {rss_clients} clients finish in seconds; VmHWM reset with "
  "`clear_refs` just before, summed over nginx's processes)")
p("")
p("| server | RSS before MiB | peak RSS MiB | MB/s in all |")
p("|---|---:|---:|---:|")
for s, label in (("edge", "Aerugo edge"), ("distribution", "distribution (proxy mode)"), ("nginx", "nginx")):
    p(f"| {label} | {fmt(num(f'rss_before_{s}'))} | {fmt(num(f'rss_peak_{s}'))} | {fmt(num(f'rss_mbps_{s}'))} |")
p("")

# Targets.
def verdict(ok):
    if ok is None:
        return "not measured"
    return "**met**" if ok else "**missed**"


cold = num("cold_mbps_edge")
t1 = None if cold is None or direct is None else cold >= 0.9 * direct
counts = [("1", num("gets_1_edge"), num("copies_1_edge"))] + [
    (str(n), num(f"gets_{n}_edge"), num(f"copies_{n}_edge")) for n in conc]
t2 = None if any(g is None for _, g, _ in counts) else all(
    g == 1 and c is not None and abs(c - 1) < 0.001 for _, g, c in counts)
edge_cpu = num("warm_cpu_edge")
t3 = None if edge_cpu is None or nginx_cpu is None else edge_cpu <= 1.2 * nginx_cpu
rss = num("rss_peak_edge")
t4 = None if rss is None else rss < 128
p("**Targets (issue 3)**")
p("")
p("| target | measured | |")
p("|---|---|---|")
p(f"| cold pull through the edge ≥ 0.9× direct | {fmt(cold)} vs {fmt(direct)} MB/s = {ratio(cold, direct)} | {verdict(t1)} |")
p("| one upstream copy per cold blob, whatever the concurrency | "
  + ", ".join(f"{n} → {fmt(g, 0)} GET ({fmt(c, 2)} copies)" for n, g, c in counts) + f" | {verdict(t2)} |")
p(f"| warm CPU-s/GiB ≤ 1.2× nginx | {fmt(edge_cpu, 4)} vs {fmt(nginx_cpu, 4)} = {ratio(edge_cpu, nginx_cpu)} | {verdict(t3)} |")
p(f"| RSS < 128 MiB with {rss_clients} concurrent downloads | {fmt(rss)} MiB | {verdict(t4)} |")
p("")

dist_cold = num("cold_mbps_distribution")
edge_tls_cpu = num("warm_cpu_edge-tls")
p("**Targets (issue 10)**")
p("")
p("| target | measured | |")
p("|---|---|---|")
p(f"| cold pull, one client, ≥ 1.0× distribution | {fmt(cold)} vs {fmt(dist_cold)} MB/s = "
  f"{ratio(cold, dist_cold)} | {verdict(None if cold is None or dist_cold is None else cold >= dist_cold)} |")
for n in conc:
    e, d = num(f"cold_many_mbps_{n}_edge"), num(f"cold_many_mbps_{n}_distribution")
    p(f"| {n} concurrent cold pulls ≥ 1.5× distribution's aggregate | {fmt(e)} vs {fmt(d)} MB/s = "
      f"{ratio(e, d)} | {verdict(None if e is None or d is None else e >= 1.5 * d)} |")
p(f"| warm hit, plain HTTP, CPU-s/GiB ≤ 2× nginx `sendfile` | {fmt(edge_cpu, 4)} vs {fmt(nginx_cpu, 4)} = "
  f"{ratio(edge_cpu, nginx_cpu)} | {verdict(None if edge_cpu is None or nginx_cpu is None else edge_cpu <= 2 * nginx_cpu)} |")
p(f"| warm hit, TLS, CPU-s/GiB ≤ 1.2× nginx over TLS | {fmt(edge_tls_cpu, 4)} vs {fmt(tls_nginx_cpu, 4)} = "
  f"{ratio(edge_tls_cpu, tls_nginx_cpu)} | "
  f"{verdict(None if edge_tls_cpu is None or tls_nginx_cpu is None else edge_tls_cpu <= 1.2 * tls_nginx_cpu)} |")

print("\n".join(out))
