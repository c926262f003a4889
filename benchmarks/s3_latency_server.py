"""A small S3-compatible object server for benchmarks: objects in memory, a fixed delay on every request.

It speaks the part of the S3 REST API that pyarrow's S3 filesystem uses (path-style addressing): bucket HEAD/PUT,
object GET (with ``Range``), HEAD, PUT and DELETE, ``ListObjectsV2`` (prefix, delimiter, continuation tokens, at
most 1,000 keys a page, like S3) and the batch ``DeleteObjects``. Keys are kept sorted, so a listing page costs a
binary search rather than a scan: millions of keys stay cheap to serve, which moto's server is not built for. Every
request sleeps ``latency_s`` first (the round trip to an object store) and is counted by method.

Authentication is not checked. It is a benchmark fixture, not a store: nothing is persisted.
"""

from __future__ import annotations

import bisect
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

PAGE = 1000
"""Keys per ListObjectsV2 page (S3's maximum)."""


class Bucket:
    """Keys in sorted order with their bytes."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.data: dict[str, bytes] = {}
        self.entries: dict[str, bytes] = {}  # the key's <Contents> element of a listing, rendered once
        self.pages: dict[tuple[str, str, str], bytes] = {}  # rendered listing pages, until the bucket changes
        self.lock = threading.Lock()

    def put(self, key: str, data: bytes) -> None:
        with self.lock:
            if key not in self.data:
                bisect.insort(self.keys, key)
            self.data[key] = data
            self.entries[key] = _entry(key, data)
            self.pages.clear()

    def put_many(self, items: dict[str, bytes]) -> None:
        """Add many objects at once (benchmark set-up, no requests)."""
        with self.lock:
            self.data.update(items)
            self.entries.update((key, _entry(key, data)) for key, data in items.items())
            self.keys = sorted(self.data)
            self.pages.clear()

    def delete(self, key: str) -> None:
        with self.lock:
            if self.data.pop(key, None) is not None:
                self.entries.pop(key, None)
                self.keys.pop(bisect.bisect_left(self.keys, key))
                self.pages.clear()

    def page(self, prefix: str, token: str, delimiter: str) -> tuple[list[str], list[str], str | None]:
        """Up to :data:`PAGE` keys and common prefixes after ``token``, and the next token when more follow.

        The token is the last key or common prefix returned; with a delimiter, a token ending in it is a common
        prefix, and the next page starts after everything below it."""
        with self.lock:
            if not token:
                i = bisect.bisect_left(self.keys, prefix)
            elif delimiter and token.endswith(delimiter):
                i = bisect.bisect_left(self.keys, token + "\U0010ffff")
            else:
                i = bisect.bisect_right(self.keys, token)
            keys: list[str] = []
            prefixes: list[str] = []
            last = ""
            while i < len(self.keys) and len(keys) + len(prefixes) < PAGE:
                key = self.keys[i]
                if not key.startswith(prefix):
                    break
                rest = key[len(prefix) :]
                if delimiter and delimiter in rest:
                    last = prefix + rest[: rest.index(delimiter) + 1]
                    prefixes.append(last)
                    i = bisect.bisect_left(self.keys, last + "\U0010ffff")  # past the whole sub-folder
                else:
                    keys.append(key)
                    last = key
                    i += 1
            more = i < len(self.keys) and self.keys[i].startswith(prefix)
            return keys, prefixes, (last if more else None)


class LatencyS3:
    """The server: ``start()`` on 127.0.0.1 (a free port), ``endpoint``, ``bucket(name)``, ``counts``, ``stop()``."""

    def __init__(self, latency_s: float = 0.02) -> None:
        self.latency_s = latency_s
        self.buckets: dict[str, Bucket] = {}
        self.counts: Counter[str] = Counter()
        self._server: ThreadingHTTPServer | None = None

    def bucket(self, name: str) -> Bucket:
        return self.buckets.setdefault(name, Bucket())

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> LatencyS3:
        owner = self

        class Handler(_Handler):
            server_owner = owner

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    server_owner: LatencyS3
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet
        pass

    # -- plumbing ----------------------------------------------------------------------------------------
    def _parts(self) -> tuple[str, str, dict[str, list[str]]]:
        url = urlsplit(self.path)
        path = unquote(url.path).lstrip("/")
        bucket, _, key = path.partition("/")
        return bucket, key, parse_qs(url.query, keep_blank_values=True)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return _read_chunked(self.rfile)
        data = self.rfile.read(length) if length else b""
        if "aws-chunked" in self.headers.get("Content-Encoding", "") or self.headers.get(
            "x-amz-decoded-content-length"
        ):
            data = _strip_aws_chunks(data)
        return data

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _begin(self) -> None:
        owner = self.server_owner
        owner.counts[self.command] += 1
        time.sleep(owner.latency_s)

    def _missing(self) -> None:
        self._reply(404, b"<Error><Code>NoSuchKey</Code></Error>", {"Content-Type": "application/xml"})

    # -- methods -----------------------------------------------------------------------------------------
    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._begin()
        bucket, key, _ = self._parts()
        if not key:
            return self._reply(200 if bucket in self.server_owner.buckets else 404)
        data = self.server_owner.bucket(bucket).data.get(key)
        if data is None:
            return self._reply(404)
        self._reply(200, data, {"Last-Modified": formatdate(usegmt=True), "Content-Type": "binary/octet-stream"})

    def do_GET(self) -> None:  # noqa: N802
        self._begin()
        bucket, key, query = self._parts()
        if not key:
            return self._list(bucket, query)
        data = self.server_owner.bucket(bucket).data.get(key)
        if data is None:
            return self._missing()
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start_s, _, end_s = rng[6:].partition("-")
            start = int(start_s)
            end = min(int(end_s) if end_s else len(data) - 1, len(data) - 1)
            part = data[start : end + 1]
            headers = {"Content-Range": f"bytes {start}-{end}/{len(data)}", "Last-Modified": formatdate(usegmt=True)}
            return self._reply(206, part, headers)
        self._reply(200, data, {"Last-Modified": formatdate(usegmt=True)})

    def do_PUT(self) -> None:  # noqa: N802
        self._begin()
        bucket, key, _ = self._parts()
        body = self._body()
        if key:
            self.server_owner.bucket(bucket).put(key, body)
        else:
            self.server_owner.bucket(bucket)
        self._reply(200, b"", {"ETag": '"0"'})

    def do_DELETE(self) -> None:  # noqa: N802
        self._begin()
        bucket, key, _ = self._parts()
        self.server_owner.bucket(bucket).delete(key)
        self._reply(204)

    def do_POST(self) -> None:  # noqa: N802
        self._begin()
        bucket, _, query = self._parts()
        body = self._body()
        if "delete" not in query:
            return self._reply(400)
        root = ET.fromstring(body)
        deleted = []
        for obj in root.iter():
            if obj.tag.endswith("Key") and obj.text:
                self.server_owner.bucket(bucket).delete(obj.text)
                deleted.append(f"<Deleted><Key>{_xml(obj.text)}</Key></Deleted>")
        xml = f'<?xml version="1.0" encoding="UTF-8"?><DeleteResult>{"".join(deleted)}</DeleteResult>'
        self._reply(200, xml.encode(), {"Content-Type": "application/xml"})

    def _list(self, bucket: str, query: dict[str, list[str]]) -> None:
        if bucket not in self.server_owner.buckets:
            return self._reply(404, b"<Error><Code>NoSuchBucket</Code></Error>")
        prefix = query.get("prefix", [""])[0]
        delimiter = query.get("delimiter", [""])[0]
        token = query.get("continuation-token", [""])[0]
        store = self.server_owner.bucket(bucket)
        page = store.pages.get((prefix, token, delimiter))
        if page is None:  # rendered once: a real store's own work on a page is not this benchmark's subject
            page = _render_page(store, bucket, prefix, unquote(token), delimiter)
            store.pages[(prefix, token, delimiter)] = page
        self._reply(200, page, {"Content-Type": "application/xml"})


def _render_page(store: Bucket, bucket: str, prefix: str, token: str, delimiter: str) -> bytes:
    keys, prefixes, more = store.page(prefix, token, delimiter)
    items = b"".join(store.entries[k] for k in keys).decode()
    commons = "".join(f"<CommonPrefixes><Prefix>{_xml(p)}</Prefix></CommonPrefixes>" for p in prefixes)
    tail = (
        f"<IsTruncated>true</IsTruncated><NextContinuationToken>{quote(more)}</NextContinuationToken>"
        if more
        else "<IsTruncated>false</IsTruncated>"
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult>'
        f"<Name>{bucket}</Name><Prefix>{_xml(prefix)}</Prefix><KeyCount>{len(keys) + len(prefixes)}</KeyCount>"
        f"<MaxKeys>{PAGE}</MaxKeys>{tail}{items}{commons}</ListBucketResult>"
    ).encode()

    def _list(self, bucket: str, query: dict[str, list[str]]) -> None:
        if bucket not in self.server_owner.buckets:
            return self._reply(404, b"<Error><Code>NoSuchBucket</Code></Error>")
        prefix = query.get("prefix", [""])[0]
        delimiter = query.get("delimiter", [""])[0]
        token = query.get("continuation-token", [""])[0]
        keys, prefixes, more = self.server_owner.bucket(bucket).page(prefix, unquote(token), delimiter)
        entries = self.server_owner.bucket(bucket).entries
        items = b"".join(entries[k] for k in keys).decode()
        commons = "".join(f"<CommonPrefixes><Prefix>{_xml(p)}</Prefix></CommonPrefixes>" for p in prefixes)
        tail = (
            f"<IsTruncated>true</IsTruncated><NextContinuationToken>{quote(more)}</NextContinuationToken>"
            if more
            else "<IsTruncated>false</IsTruncated>"
        )
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult>'
            f"<Name>{bucket}</Name><Prefix>{_xml(prefix)}</Prefix><KeyCount>{len(keys) + len(prefixes)}</KeyCount>"
            f"<MaxKeys>{PAGE}</MaxKeys>{tail}{items}{commons}</ListBucketResult>"
        )
        self._reply(200, xml.encode(), {"Content-Type": "application/xml"})


def _entry(key: str, data: bytes) -> bytes:
    return (
        f"<Contents><Key>{_xml(key)}</Key><Size>{len(data)}</Size>"
        f'<LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>"0"</ETag></Contents>'
    ).encode()


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _read_chunked(stream) -> bytes:  # noqa: ANN001 - a socket file
    out = bytearray()
    while True:
        size = int(stream.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            stream.readline()
            return bytes(out)
        out += stream.read(size)
        stream.readline()


def _strip_aws_chunks(data: bytes) -> bytes:
    """The payload of an ``aws-chunked`` body (``<hex size>;chunk-signature=…\\r\\n<data>\\r\\n`` …)."""
    if b";chunk-signature=" not in data[:200]:
        return data
    out = bytearray()
    i = 0
    while i < len(data):
        end = data.index(b"\r\n", i)
        size = int(data[i:end].split(b";")[0], 16)
        if size == 0:
            break
        out += data[end + 2 : end + 2 + size]
        i = end + 2 + size + 2
    return bytes(out)
