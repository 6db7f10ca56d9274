"""The HTTP edge of intake: OTLP/HTTP `POST /v1/traces` and `POST /v1/events` (contract 7).

Answers, per the OTLP/HTTP specification where it applies:

- 200: every accepted record is durable (sink.py). /v1/traces answers an
  ExportTraceServiceResponse in the request's encoding, with `partial_success` (rejected span
  count and a message) when some spans could not become events; /v1/events answers
  `{"accepted": N, "rejected": [{"index", "field", "value", "error"}], "rejected_count": M}`.
- 400: the body is not what the path takes (a `google.rpc.Status` for /v1/traces, in the
  request's encoding); also /v1/events when every record in it was rejected.
- 401 without a valid bearer token; 404 / 405 for other paths and methods; 411 without
  Content-Length; 413 over `max_body_bytes` (before or after gzip); 415 for another content
  type or encoding; 408 when the client stops sending mid-body (`read_timeout`);
  503 + Retry-After when the records could not be made durable now.

A request is never answered with a traceback; tokens and bodies are never logged.
"""

from __future__ import annotations

import logging
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from ingest.errors import BadRecord
from ingest.intake.auth import Tokens
from ingest.intake.core import Intake, Result, rejected_message, varint
from ingest.intake.sink import Unavailable

log = logging.getLogger("spendlake.intake")

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
INVALID_ARGUMENT = 3  # google.rpc.Code
UNAVAILABLE = 14


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.message = message
        self.headers = headers or {}
        super().__init__(message)


def rpc_status(code: int, message: str) -> bytes:
    """A google.rpc.Status protobuf: field 1 code, field 2 message (no library needed)."""
    msg = message.encode()
    return b"\x08" + varint(code) + b"\x12" + varint(len(msg)) + msg


def trace_response(result: Result, encoding: str) -> bytes:
    """An ExportTraceServiceResponse, with partial_success when spans were rejected."""
    if not result.rejected:
        return b"" if encoding == "protobuf" else b"{}"
    message = rejected_message(result)
    if encoding == "json":
        return orjson.dumps({"partialSuccess": {"rejectedSpans": str(len(result.rejected)), "errorMessage": message}})
    msg = message.encode()
    inner = b"\x08" + varint(len(result.rejected)) + b"\x12" + varint(len(msg)) + msg
    return b"\x0a" + varint(len(inner)) + inner


class IntakeServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], intake: Intake, tokens: Tokens, *,
                 max_body_bytes: int = 16 * 1024 * 1024, read_timeout_s: float = 10.0) -> None:  # fmt: skip
        self.intake = intake
        self.tokens = tokens
        self.max_body_bytes = max_body_bytes
        handler = type("Handler", (_Handler,), {"timeout": read_timeout_s})
        super().__init__(address, handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, name="intake-http", daemon=True)
        t.start()
        return t


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: exporters send batch after batch on one connection
    # headers and body go out as two writes: with Nagle on, the body waited ~40 ms for the
    # client's delayed ACK on every keep-alive request (bench/intake.py: 23 → 941 requests/s)
    disable_nagle_algorithm = True
    server: IntakeServer
    server_version = "spendlake-intake"
    sys_version = ""

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        endpoint = path if path in ("/v1/traces", "/v1/events") else "other"
        self._encoding, self._size = "json", 0
        status = 500
        try:
            status = self._post(path)
        except HttpError as exc:
            status = exc.status
            self._error(exc, path)
        except BadRecord as exc:
            status = 400
            self._error(HttpError(400, str(exc)), path)
        except Unavailable as exc:
            status = 503
            self._error(HttpError(503, str(exc), {"Retry-After": str(exc.retry_after_s)}), path)
        except TimeoutError:
            status = 408
            self.close_connection = True
        except Exception:  # a bug of ours: log it, answer plainly, keep serving
            log.exception("intake: %s failed", path)
            self._error(HttpError(500, "internal error (logged by spendlake)"), path)
        finally:
            self.server.intake.stats.request(endpoint, status, self._size)

    def _post(self, path: str) -> int:
        """Answer one POST; returns the status sent. Refusals are raised (HttpError & co.)."""
        if path not in ("/v1/traces", "/v1/events"):
            raise HttpError(404, f"no such endpoint {path!r}: POST /v1/traces or /v1/events")
        if path == "/v1/traces":
            self._encoding = self._trace_encoding()
        if self.server.tokens.check(self.headers.get("Authorization")) is None:
            self._drain()
            raise HttpError(401, "a valid 'Authorization: Bearer <token>' header is required",
                            {"WWW-Authenticate": 'Bearer realm="spendlake"'})  # fmt: skip
        body = self._body()
        if path == "/v1/traces":
            result = self.server.intake.traces(body, self._encoding)
            ctype = PROTOBUF if self._encoding == "protobuf" else JSON
            self._answer(200, trace_response(result, self._encoding), ctype)
            return 200
        result = self.server.intake.events(body)
        status = 400 if result.rejected and not result.accepted else 200
        answer = {"accepted": result.accepted, "rejected": result.rejects_json(), "rejected_count": len(result.rejected)}
        self._answer(status, orjson.dumps(answer), JSON)
        return status

    def do_GET(self) -> None:  # noqa: N802
        if self.path.split("?", 1)[0] in ("/", "/healthz"):
            self._answer(200, b"spendlake intake: POST /v1/traces (OTLP/HTTP), POST /v1/events\n", "text/plain")
        else:
            self._encoding = "json"
            self._error(HttpError(405, "use POST", {"Allow": "POST"}), self.path)

    def _trace_encoding(self) -> str:
        ctype = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if ctype == PROTOBUF:
            return "protobuf"
        if ctype == JSON:
            return "json"
        self._drain()
        raise HttpError(415, f"Content-Type: got {ctype!r}, expected {PROTOBUF!r} or {JSON!r}")

    def _drain(self) -> None:
        """Read a small refused body so the connection stays usable; a large one closes it."""
        length = self.headers.get("Content-Length", "")
        if length.isdigit() and int(length) <= 65536:
            self.rfile.read(int(length))
        else:
            self.close_connection = True

    def _body(self) -> bytes:
        """The request body, decompressed, within the limits; its size as sent goes to `_size`."""
        limit = self.server.max_body_bytes
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise HttpError(411, "send the body with a Content-Length (chunked transfer is not accepted)")
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            raise HttpError(411, f"Content-Length: got {length!r}, expected the body's size in bytes")
        n = int(length)
        if n > limit:
            self.close_connection = True  # the body is never read
            raise HttpError(413, f"the body is {n} bytes; at most {limit} are accepted ([intake] max_body_bytes)")
        raw = self.rfile.read(n)
        self._size = len(raw)
        if len(raw) < n:
            raise TimeoutError
        enc = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if enc == "gzip":
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                body = d.decompress(raw, limit + 1)
            except zlib.error as exc:
                raise HttpError(400, f"Content-Encoding: gzip, but the body does not decompress ({exc})") from None
            if len(body) > limit or d.unconsumed_tail:
                raise HttpError(413, f"the body decompresses to more than {limit} bytes ([intake] max_body_bytes)")
            return body
        if enc != "identity":
            raise HttpError(415, f"Content-Encoding: got {enc!r}, expected 'gzip' or none")
        return raw

    def _error(self, exc: HttpError, path: str) -> None:
        if path == "/v1/traces" and exc.status in (400, 503):
            code = INVALID_ARGUMENT if exc.status == 400 else UNAVAILABLE
            if self._encoding == "protobuf":
                body, ctype = rpc_status(code, exc.message), PROTOBUF
            else:
                body, ctype = orjson.dumps({"code": code, "message": exc.message}), JSON
        else:
            body, ctype = orjson.dumps({"error": exc.message}), JSON
        self._answer(exc.status, body, ctype, exc.headers)

    def _answer(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # request lines hold nothing secret, but access logs are the proxy's job; errors are logged above


__all__ = ["IntakeServer", "rpc_status", "trace_response"]
