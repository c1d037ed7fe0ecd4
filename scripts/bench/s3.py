#!/usr/bin/env python3
"""Bucket set-up and removal for scripts/bench-cluster.sh (Python 3 standard library only:
no AWS CLI or SDK needed on the machine).

    s3.py ENDPOINT create BUCKET     # create the bucket (an existing one is left as it is)
    s3.py ENDPOINT purge BUCKET      # abort its multipart uploads, delete every object, then
                                     # the bucket; a missing bucket is no error

Path-style requests signed with AWS Signature V4; credentials from S3_ACCESS_KEY and
S3_SECRET_KEY, region from S3_REGION (default us-east-1).
"""

import datetime
import hashlib
import hmac
import http.client
import os
import sys
import urllib.parse
import xml.etree.ElementTree as ET

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _quote(s: str) -> str:
    return urllib.parse.quote(s, safe="-_.~")


class S3:
    def __init__(self, endpoint: str):
        url = urllib.parse.urlsplit(endpoint)
        self.host = url.netloc
        self.conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=120)
        self.key = os.environ.get("S3_ACCESS_KEY", "aerugo")
        self.secret = os.environ.get("S3_SECRET_KEY", "aerugo-secret")
        self.region = os.environ.get("S3_REGION", "us-east-1")

    def request(self, method: str, path: str, query: dict | None = None, body: bytes = b""):
        """One signed request; returns (status, body bytes)."""
        query = query or {}
        now = datetime.datetime.now(datetime.timezone.utc)
        amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        payload = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
        canonical_path = "/".join(_quote(p) for p in path.split("/"))
        canonical_query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items()))
        headers = {"host": self.host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
        signed = ";".join(sorted(headers))
        canonical = "\n".join(
            [method, canonical_path, canonical_query]
            + [f"{k}:{headers[k]}" for k in sorted(headers)]
            + ["", signed, payload]
        )
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        k = ("AWS4" + self.secret).encode()
        for part in (day, self.region, "s3", "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.key}/{scope}, SignedHeaders={signed}, Signature={signature}"
        )
        headers["content-length"] = str(len(body))
        target = canonical_path + (f"?{canonical_query}" if canonical_query else "")
        self.conn.request(method, target, body=body, headers=headers)
        resp = self.conn.getresponse()
        return resp.status, resp.read()


def _children(xml: bytes, tag: str):
    """Elements named `tag` anywhere in the document, namespace ignored."""
    return [e for e in ET.fromstring(xml).iter() if e.tag.rsplit("}", 1)[-1] == tag]


def _text(elem, tag: str) -> str:
    for e in elem:
        if e.tag.rsplit("}", 1)[-1] == tag:
            return e.text or ""
    return ""


def create(s3: S3, bucket: str) -> None:
    status, body = s3.request("PUT", f"/{bucket}")
    if status not in (200, 409):
        raise SystemExit(f"create bucket {bucket}: HTTP {status} {body[:200]!r}")


def purge(s3: S3, bucket: str) -> None:
    status, body = s3.request("GET", f"/{bucket}", {"uploads": ""})
    if status == 404:
        return
    if status == 200:
        for up in _children(body, "Upload"):
            s3.request("DELETE", f"/{bucket}/{_text(up, 'Key')}", {"uploadId": _text(up, "UploadId")})
    token = None
    while True:
        query = {"list-type": "2"} | ({"continuation-token": token} if token else {})
        status, body = s3.request("GET", f"/{bucket}", query)
        if status == 404:
            return
        if status != 200:
            raise SystemExit(f"list {bucket}: HTTP {status} {body[:200]!r}")
        for obj in _children(body, "Contents"):
            s3.request("DELETE", f"/{bucket}/{_text(obj, 'Key')}")
        truncated = [e.text for e in _children(body, "IsTruncated")]
        next_token = [e.text for e in _children(body, "NextContinuationToken")]
        if truncated != ["true"] or not next_token:
            break
        token = next_token[0]
    status, body = s3.request("DELETE", f"/{bucket}")
    if status not in (204, 200, 404):
        raise SystemExit(f"delete bucket {bucket}: HTTP {status} {body[:200]!r}")


def main() -> int:
    endpoint, action, bucket = sys.argv[1], sys.argv[2], sys.argv[3]
    s3 = S3(endpoint)
    {"create": create, "purge": purge}[action](s3, bucket)
    return 0


if __name__ == "__main__":
    sys.exit(main())
