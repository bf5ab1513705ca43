"""HTTP requests to a running service as a client sends them (the standard library's http.client, nothing mocked)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterable
from typing import NamedTuple
from urllib.parse import urlsplit

BOUNDARY = "image-transfer-test-boundary"


class Reply(NamedTuple):
    status: int
    body: bytes

    def json(self):
        return json.loads(self.body)


def request(url: str, method: str = "GET", path: str = "/", body=None, headers: dict | None = None) -> Reply:
    """One request on a fresh connection. `body`: bytes, or an iterable of chunks (sent chunked, no length)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        chunked = body is not None and not isinstance(body, bytes)
        connection.request(method, path, body, headers or {}, encode_chunked=chunked)
        response = connection.getresponse()
        return Reply(response.status, response.read())
    finally:
        connection.close()


def post(url: str, body, content_type: str | None = "application/octet-stream", headers: dict | None = None) -> Reply:
    """POST /predict; content_type None sends no Content-Type header."""
    kind = {"Content-Type": content_type} if content_type else {}
    return request(url, "POST", "/predict", body, {**kind, **(headers or {})})


def multipart(parts: Iterable[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body of (field name, file name or None for a plain field, bytes), and its Content-Type."""
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode(), f"multipart/form-data; boundary={BOUNDARY}"


def files(*images: bytes) -> tuple[bytes, str]:
    """A multipart body of image files, as `curl -F file=@a.jpg -F file=@b.jpg` sends them."""
    return multipart(("file", f"{i}.jpg", data) for i, data in enumerate(images))
