#!/usr/bin/env python3
"""Single-request small-blob pushes (`POST /v2/<repo>/blobs/uploads/?digest=` with the body)
against one registry, for scripts/bench-small-push.sh.

    small_push.py BASE_URL SECONDS CLIENTS [BLOB_BYTES]

Each client keeps one connection and pushes distinct random blobs (BLOB_BYTES, default 1024)
for SECONDS; every answer must be 201. Prints `<pushes/s> <p50 ms> <p99 ms> <pushes>`.
"""

import hashlib
import http.client
import os
import sys
import threading
import time
import urllib.parse


def client(base, deadline, size, latencies, failures):
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=30)
    repo = f"bench/small-{threading.get_ident()}"
    while time.monotonic() < deadline:
        body = os.urandom(size)
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        started = time.monotonic()
        conn.request(
            "POST",
            f"/v2/{repo}/blobs/uploads/?digest={digest}",
            body=body,
            headers={"Content-Type": "application/octet-stream"},
        )
        response = conn.getresponse()
        response.read()
        if response.status != 201:
            failures.append(response.status)
            return
        latencies.append(time.monotonic() - started)


def main():
    base, seconds, clients = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    size = int(sys.argv[4]) if len(sys.argv) > 4 else 1024
    latencies, failures = [], []
    started = time.monotonic()
    deadline = started + seconds
    threads = [
        threading.Thread(target=client, args=(base, deadline, size, latencies, failures))
        for _ in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    if failures or not latencies:
        sys.exit(f"pushes failed: HTTP {failures[:5]}")
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    print(f"{len(latencies) / elapsed:.1f} {p50:.2f} {p99:.2f} {len(latencies)}")


if __name__ == "__main__":
    main()
