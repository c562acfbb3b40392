"""Raw HTTP to a running server, for requests that tritonclient cannot express (malformed bodies)."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any


@dataclass
class RawResponse:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        """The `error` of Triton's error body; fails the test if the body is not one."""
        value = self.json()
        assert set(value) == {"error"}, f"not an error body: {value}"
        return value["error"]


def send(http_url: str, method: str, path: str, body: bytes | str = b"", headers: dict | None = None) -> RawResponse:
    """One request on a fresh connection; `http_url` is "host:port"."""
    host, port = http_url.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        payload = body.encode() if isinstance(body, str) else body
        connection.request(method, path, body=payload, headers=headers or {})
        response = connection.getresponse()
        return RawResponse(response.status, response.headers, response.read())
    finally:
        connection.close()


def post_json(http_url: str, path: str, value: Any) -> RawResponse:
    return send(http_url, "POST", path, json.dumps(value), {"Content-Type": "application/json"})


def post_binary(
    http_url: str, path: str, header: dict, binary: bytes, header_length: int | str | None = None
) -> RawResponse:
    """A body of the JSON `header` then `binary`, with Inference-Header-Content-Length set
    to the header's size unless `header_length` overrides it."""
    header_bytes = json.dumps(header).encode()
    length = len(header_bytes) if header_length is None else header_length
    headers = {"Inference-Header-Content-Length": str(length), "Content-Type": "application/octet-stream"}
    return send(http_url, "POST", path, header_bytes + binary, headers)


def split_binary_response(response: RawResponse) -> tuple[dict, bytes]:
    """(JSON header, the binary bytes after it) of an infer response with binary outputs."""
    length = int(response.headers["Inference-Header-Content-Length"])
    return json.loads(response.body[:length]), response.body[length:]
