"""A real local server that answers like the OpenAI API, for driving the official ``openai`` SDK.

It mimics ``POST /v1/chat/completions`` (JSON, or server-sent events when ``stream`` is true, with
a last chunk of empty ``choices`` and the ``usage`` only under ``stream_options.include_usage``),
``POST /v1/embeddings`` (floats, or base64 float32 as the SDK asks by default) and non-streaming
``POST /v1/responses``. Each request takes the next scripted ``Usage`` (else the default), shaped
as that endpoint reports it, cached and reasoning details included; the answer's ``model`` is the
dated snapshot the real API reports ("gpt-4o" → "gpt-4o-2024-08-06"). A scripted ``int`` answers
that HTTP status with OpenAI's error body (the SDK retries 408/409/429/5xx unless max_retries=0).

    with OpenAIStandin() as api:
        api.script(Usage(120, 30, cached_tokens=100, reasoning_tokens=12))
        client = openai.OpenAI(base_url=api.base_url, api_key="sk-test", max_retries=0)
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert api.requests[0].json["model"] == "gpt-4o"
"""

from __future__ import annotations

import base64
import itertools
import json
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Union

SNAPSHOTS = {"gpt-4o": "gpt-4o-2024-08-06", "gpt-4o-mini": "gpt-4o-mini-2024-07-18", "o3-mini": "o3-mini-2025-01-31"}


@dataclass(frozen=True)
class Usage:
    """Token counts as OpenAI bills them: cached ⊆ prompt, reasoning ⊆ completion."""

    prompt_tokens: int
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    json: Any


Scripted = Union[Usage, int]  # an int answers with that HTTP status and an OpenAI error body


class OpenAIStandin:
    """A ThreadingHTTPServer on 127.0.0.1 and a free port, in a daemon thread; a context manager."""

    def __init__(self, default: Usage = Usage(12, 5), snapshots: Mapping[str, str] = SNAPSHOTS,
                 reply: str = "Hello from the stand-in.") -> None:  # fmt: skip
        self.default, self.snapshots, self.reply = default, dict(snapshots), reply
        self._script: deque[Scripted] = deque()
        self._requests: list[Received] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._requests)

    def script(self, *usages: Scripted | Iterable[Scripted]) -> OpenAIStandin:
        """Queue what the next requests get, one each, after those already queued."""
        with self._lock:
            for u in usages:
                self._script.extend([u] if isinstance(u, (Usage, int)) else u)
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> OpenAIStandin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _take(self, received: Received) -> tuple[Scripted, int]:
        with self._lock:
            self._requests.append(received)
            return (self._script.popleft() if self._script else self.default), next(self._ids)


def _chat_usage(u: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }  # fmt: skip


def _chat(n: int, model: str, u: Usage, text: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
    return {"id": f"chatcmpl-standin{n:06d}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
            "usage": _chat_usage(u), "service_tier": "default", "system_fingerprint": "fp_standin"}  # fmt: skip


def _chunks(n: int, model: str, u: Usage, text: str, include_usage: bool) -> list[dict[str, Any]]:
    """What a stream sends: role, one chunk per word, finish, then the usage chunk if asked for."""
    deltas: list[tuple[dict[str, Any], str | None]] = [({"role": "assistant", "content": "", "refusal": None}, None)]
    deltas += [({"content": word + " "}, None) for word in text.split(" ")] + [({}, "stop")]
    base = {"id": f"chatcmpl-standin{n:06d}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "system_fingerprint": "fp_standin", "service_tier": "default"}  # fmt: skip
    out = [{**base, "choices": [{"index": 0, "delta": d, "logprobs": None, "finish_reason": f}]} for d, f in deltas]
    if include_usage:  # every chunk then carries "usage": null, and one last chunk has no choices
        out = [{**c, "usage": None} for c in out] + [{**base, "choices": [], "usage": _chat_usage(u)}]
    return out


def _embeddings(body: dict[str, Any], model: str, u: Usage) -> dict[str, Any]:
    inputs = body.get("input")
    count = len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
    vector = [0.125, -0.5, 0.25, 1.0]
    as_b64 = body.get("encoding_format") == "base64"  # the SDK asks for base64 unless told otherwise
    encoded: Any = base64.b64encode(struct.pack("<4f", *vector)).decode() if as_b64 else vector
    data = [{"object": "embedding", "index": i, "embedding": encoded} for i in range(count)]
    usage = {"prompt_tokens": u.prompt_tokens, "total_tokens": u.prompt_tokens}
    return {"object": "list", "data": data, "model": model, "usage": usage}


def _response(n: int, model: str, u: Usage, text: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    output = [{"type": "message", "id": f"msg_standin{n:06d}", "status": "completed", "role": "assistant",
               "content": content}]  # fmt: skip
    usage = {"input_tokens": u.prompt_tokens, "input_tokens_details": {"cached_tokens": u.cached_tokens},
             "output_tokens": u.completion_tokens, "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
             "total_tokens": u.prompt_tokens + u.completion_tokens}  # fmt: skip
    return {"id": f"resp_standin{n:06d}", "object": "response", "created_at": int(time.time()),
            "status": "completed", "model": model, "output": output, "usage": usage, "error": None,
            "incomplete_details": None, "instructions": None, "metadata": {}, "parallel_tool_calls": True,
            "temperature": 1.0, "top_p": 1.0, "tool_choice": "auto", "tools": [], "store": True,
            "text": {"format": {"type": "text"}}, "truncation": "disabled", "service_tier": "default"}  # fmt: skip


def _error(message: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}


def _handler_class(api: OpenAIStandin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, and a stream simply ends when the connection closes
        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.loads(raw) if raw else {}
            path = self.path.split("?")[0]
            usage, n = api._take(Received("POST", path, {k.lower(): v for k, v in self.headers.items()}, body))
            if isinstance(usage, int):
                return self._send(usage, _error(f"stand-in error {usage}", "standin_error"))
            model = api.snapshots.get(body.get("model", ""), body.get("model", ""))
            if path == "/v1/chat/completions" and body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for chunk in _chunks(n, model, usage, api.reply, include_usage):
                    self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                self.wfile.write(b"data: [DONE]\n\n")
            elif path == "/v1/chat/completions":
                self._send(200, _chat(n, model, usage, api.reply))
            elif path == "/v1/embeddings":
                self._send(200, _embeddings(body, model, usage))
            elif path == "/v1/responses" and not body.get("stream"):
                self._send(200, _response(n, model, usage, api.reply))
            else:
                self._send(404, _error(f"the stand-in does not serve {path} (stream={body.get('stream')})", None))

    return Handler
