#!/usr/bin/env python3
"""ListMultipartUploads for an S3 server that lacks it (s3s-fs 0.14 answers 501), for
scripts/bench-cluster.sh (Python 3 standard library only).

    s3_uploads_shim.py LISTEN_PORT UPSTREAM_HOST:PORT

distribution 2.8's S3 driver lists the multipart uploads of a key to resume an upload on every
PATCH and PUT after the POST, so it cannot push to s3s-fs alone. nginx sits in front of s3s-fs
and sends only the multipart bookkeeping requests here (no blob bytes):

  POST   /bucket/key?uploads        CreateMultipartUpload: forwarded, the upload id recorded
  POST   /bucket/key?uploadId=…     CompleteMultipartUpload: forwarded, forgotten on success
  DELETE /bucket/key?uploadId=…     AbortMultipartUpload: forwarded, forgotten on success
  GET    /bucket?uploads&prefix=…   ListMultipartUploads: answered from the record
  GET    /bucket/key?uploadId=…     ListParts: forwarded, <IsTruncated> added when missing
                                    (s3s-fs leaves it out; the 2.8 driver dereferences it)

Requests are forwarded byte for byte (Host included), so their V4 signatures still hold.
"""

import datetime
import http.client
import http.server
import re
import sys
import threading
import urllib.parse
from xml.sax.saxutils import escape

UPSTREAM = ("127.0.0.1", 9100)
# (bucket, key) -> {upload id: initiated}
UPLOADS: dict[tuple[str, str], dict[str, str]] = {}
LOCK = threading.Lock()
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding"}


def split_target(target: str):
    """(bucket, key, query dict) of a path-style request target."""
    url = urllib.parse.urlsplit(target)
    path = urllib.parse.unquote(url.path).lstrip("/")
    bucket, _, key = path.partition("/")
    return bucket, key, urllib.parse.parse_qs(url.query, keep_blank_values=True)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet: the benchmark reads no log of this
        pass

    def forward(self):
        """Sends the request upstream as it came; returns (status, headers, body)."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        conn = http.client.HTTPConnection(*UPSTREAM, timeout=600)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP], data

    def answer(self, status, headers, body: bytes):
        self.send_response(status)
        for k, v in headers:
            if k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        bucket, key, query = split_target(self.path)
        status, headers, body = self.forward()
        if status == 200 and "uploads" in query:
            found = re.search(rb"<UploadId>([^<]+)</UploadId>", body)
            if found:
                now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
                with LOCK:
                    UPLOADS.setdefault((bucket, key), {})[found.group(1).decode()] = now
        elif status == 200 and "uploadId" in query and b"<Error>" not in body:
            self.forget(bucket, key, query["uploadId"][0])
        self.answer(status, headers, body)

    def do_DELETE(self):
        bucket, key, query = split_target(self.path)
        status, headers, body = self.forward()
        if status in (200, 204) and "uploadId" in query:
            self.forget(bucket, key, query["uploadId"][0])
        self.answer(status, headers, body)

    def do_GET(self):
        bucket, _, query = split_target(self.path)
        if "uploads" not in query:
            status, headers, body = self.forward()
            if status == 200 and b"<IsTruncated>" not in body:
                body = body.replace(b"</ListPartsResult>", b"<IsTruncated>false</IsTruncated></ListPartsResult>")
            self.answer(status, headers, body)
            return
        prefix = query.get("prefix", [""])[0]
        with LOCK:
            rows = sorted(
                (key, upload_id, initiated)
                for (b, key), ids in UPLOADS.items()
                if b == bucket and key.startswith(prefix)
                for upload_id, initiated in ids.items()
            )
        uploads = "".join(
            f"<Upload><Key>{escape(k)}</Key><UploadId>{escape(u)}</UploadId><Initiated>{t}</Initiated>"
            "<StorageClass>STANDARD</StorageClass></Upload>"
            for k, u, t in rows
        )
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Bucket>{escape(bucket)}</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>"
            f"<Prefix>{escape(prefix)}</Prefix><MaxUploads>1000</MaxUploads><IsTruncated>false</IsTruncated>"
            f"{uploads}</ListMultipartUploadsResult>"
        ).encode()
        self.answer(200, [("Content-Type", "application/xml")], xml)

    @staticmethod
    def forget(bucket, key, upload_id):
        with LOCK:
            UPLOADS.get((bucket, key), {}).pop(upload_id, None)


def main() -> int:
    global UPSTREAM
    port = int(sys.argv[1])
    host, _, upstream_port = sys.argv[2].rpartition(":")
    UPSTREAM = (host, int(upstream_port))
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
