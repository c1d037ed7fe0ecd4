#!/usr/bin/env python3
"""Chunked blob push for scripts/bench.sh (Python 3 standard library only).

    push_chunked.py BASE_URL REPO FILE DIGEST CHUNK_BYTES

POST /v2/<repo>/blobs/uploads/ -> Location, then one PATCH per chunk with
`Content-Range: start-end` (inclusive) following the Location of every answer (the
distribution registry changes it after each PATCH), then PUT <location>?digest=<d>.
One keep-alive connection, like a real client. The file is read into memory before the
clock starts, so the client sends every chunk straight from memory (one copy into the
socket, as `curl --data-binary @file` does for the monolithic push).

A request refused with 400 "another request is writing to this upload session" (or whose
connection the registry closed while the body was still being sent, which is how that refusal
reaches a client in the middle of a 16 MiB body) is sent again (after 5 ms, at most 200 times): the answer to the previous request came back before
the registry released that request's upload lock (Aerugo on PostgreSQL releases advisory
locks in a spawned task). A client that does not retry fails the push there; the count is
printed so that the benchmark reports it instead of hiding it.

Prints one line: `<http status of the PUT> <bytes> <seconds> <client cpu seconds> <retries>`.
"""

import http.client
import os
import sys
import time
import urllib.parse

LOCK_BUSY = b"another request is writing to this upload session"
MAX_RETRIES = 200


def main() -> int:
    base, repo, path, digest, chunk = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    with open(path, "rb") as f:
        data = f.read()
    view = memoryview(data)
    size = len(data)
    parsed = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=600)

    retries = 0

    def request(method, target, body=b"", headers=None):
        nonlocal retries
        hdrs = {"Content-Length": str(len(body))}
        hdrs.update(headers or {})
        for _ in range(MAX_RETRIES):
            try:
                conn.request(method, target, body=body, headers=hdrs)
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, ConnectionError):
                # The refusal came while the body was still being sent: the registry answered
                # and closed the connection; the answer is lost with it.
                conn.close()
            else:
                if resp.status != 400 or LOCK_BUSY not in data:
                    return resp
            retries += 1
            time.sleep(0.005)
        raise SystemExit(f"{method} {target}: still refused after {MAX_RETRIES} attempts")

    def next_target(resp, what):
        loc = resp.getheader("Location")
        if not loc:
            raise SystemExit(f"{what}: HTTP {resp.status} without Location")
        absolute = urllib.parse.urlsplit(urllib.parse.urljoin(base + "/", loc))
        return absolute.path + (("?" + absolute.query) if absolute.query else "")

    cpu0 = os.times()
    t0 = time.perf_counter()
    resp = request("POST", f"/v2/{repo}/blobs/uploads/")
    if resp.status != 202:
        raise SystemExit(f"POST: HTTP {resp.status}")
    target = next_target(resp, "POST")
    offset = 0
    while offset < size:
        end = min(offset + chunk, size)
        resp = request(
            "PATCH",
            target,
            body=view[offset:end],
            headers={"Content-Type": "application/octet-stream", "Content-Range": f"{offset}-{end - 1}"},
        )
        if resp.status != 202:
            raise SystemExit(f"PATCH {offset}-{end - 1}: HTTP {resp.status}")
        target = next_target(resp, "PATCH")
        offset = end
    sep = "&" if "?" in target else "?"
    resp = request("PUT", f"{target}{sep}digest={urllib.parse.quote(digest, safe='')}")
    t1 = time.perf_counter()
    cpu1 = os.times()
    got = resp.getheader("Docker-Content-Digest")
    if resp.status == 201 and got and got != digest:
        raise SystemExit(f"PUT: Docker-Content-Digest {got} != {digest}")
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    print(f"{resp.status} {size} {t1 - t0:.6f} {cpu:.3f} {retries}")
    return 0 if resp.status == 201 else 1


if __name__ == "__main__":
    sys.exit(main())
