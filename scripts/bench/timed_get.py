#!/usr/bin/env python3
"""GET a URL, discard the body, and time its phases.

Prints "bytes ttfb_s all_but_last_byte_s total_s": when the first body byte arrived, when
all but the last byte had arrived, and when the body was complete (seconds since the request
was sent). The edge holds a blob's last byte back until the whole blob is verified and
durable, so the gap between the last two figures is that wait.
"""

import socket
import sys
import time
import urllib.parse

url = urllib.parse.urlsplit(sys.argv[1])
path = url.path + (f"?{url.query}" if url.query else "")
sock = socket.create_connection((url.hostname, url.port or 80))
buf = memoryview(bytearray(4 << 20))
t0 = time.monotonic()
sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\nConnection: close\r\n\r\n".encode())
# Headers (small; read until the blank line), then the body with plain recv_into, which returns
# whatever has arrived, so a held-back last byte shows up as a read of its own.
head = b""
while b"\r\n\r\n" not in head:
    n = sock.recv_into(buf)
    if not n:
        sys.exit("connection closed in the headers")
    head += bytes(buf[:n])
header, _, first = head.partition(b"\r\n\r\n")
lines = header.decode("latin-1").split("\r\n")
if lines[0].split()[1] != "200":
    sys.exit(f"GET {sys.argv[1]}: {lines[0]}")
total = next(int(l.split(":", 1)[1]) for l in lines[1:] if l.lower().startswith("content-length:"))
got = len(first)
ttfb = time.monotonic() - t0 if got else None
penultimate = time.monotonic() - t0 if got >= total - 1 else None
while got < total:
    n = sock.recv_into(buf)
    if not n:
        break
    got += n
    if ttfb is None:
        ttfb = time.monotonic() - t0
    if penultimate is None and got >= total - 1:
        penultimate = time.monotonic() - t0
end = time.monotonic() - t0
sock.close()
print(got, f"{ttfb:.4f}", f"{penultimate:.4f}", f"{end:.4f}")
