"""Bodies → validated canonical records → the sink; per-record rejects for the answer.

The rule: every record of a body is decoded and validated exactly as the pipeline will (the same
adapters, `decode.validate`, the same OTLP mapping), so the answer names the same field and value
a dead letter would. What is forwarded:

- each accepted record as its canonical contract-1 JSON (only contract-1 keys: prompt and response
  text never reach Kafka or the spool), keyed by its virtual key;
- each rejected record too, with its text removed, so that the pipeline keeps it as a dead letter
  (bad input is answered AND kept, never silently gone).

Nothing is acknowledged until the sink made all of it durable (`Sink.write`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import orjson

from ingest import otlp
from ingest.adapters import normalize, redact_bytes
from ingest.decode import parse, validate, validate_spans
from ingest.errors import BadRecord
from ingest.intake.sink import Record, Sink

MAX_REJECTS_LISTED = 100  # an answer lists this many rejects; the count covers them all


@dataclass
class Result:
    accepted: int = 0
    rejected: list[tuple[int, BadRecord]] = field(default_factory=list)
    skipped: int = 0

    def rejects_json(self) -> list[dict[str, Any]]:
        out = []
        for index, exc in self.rejected[:MAX_REJECTS_LISTED]:
            value = exc.value if isinstance(exc.value, (str, int, float, bool, type(None))) else str(exc.value)
            if isinstance(value, str) and len(value) > 200:
                value = value[:197] + "..."
            out.append({"index": index, "field": exc.field, "value": value, "error": str(exc)})
        return out


def varint(n: int) -> bytes:
    """A protobuf base-128 varint (the few small messages intake writes need no library)."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def rejected_message(result: Result) -> str:
    """OTLP partial_success.error_message: the first five rejected spans, then a count."""
    message = "; ".join(f"span {i}: {exc}" for i, exc in result.rejected[:5])
    if len(result.rejected) > 5:
        message += f"; ... and {len(result.rejected) - 5} more"
    return message


class IntakeStats:
    """Counters the /metrics exporter renders (aggregator/metrics.py names them)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}  # (endpoint, status code)
        self.records: dict[tuple[str, str], int] = {}  # (endpoint, accepted|rejected)
        self.rejected: dict[tuple[str, str], int] = {}  # (endpoint, field)
        self.skipped_spans = 0
        self.bytes: dict[str, int] = {}  # endpoint → request body bytes as received

    def request(self, endpoint: str, code: int, size: int) -> None:
        with self.lock:
            self.requests[(endpoint, code)] = self.requests.get((endpoint, code), 0) + 1
            self.bytes[endpoint] = self.bytes.get(endpoint, 0) + size

    def result(self, endpoint: str, result: Result) -> None:
        with self.lock:
            for key, n in ((("accepted"), result.accepted), ("rejected", len(result.rejected))):
                self.records[(endpoint, key)] = self.records.get((endpoint, key), 0) + n
            for _, exc in result.rejected:
                reason = exc.field.split(".", 1)[0] if exc.field.startswith("tags.") else exc.field
                self.rejected[(endpoint, reason)] = self.rejected.get((endpoint, reason), 0) + 1
            self.skipped_spans += result.skipped


class Intake:
    """Turns request bodies into durable records. Thread-safe: the HTTP threads share one."""

    def __init__(self, sink: Sink, names: otlp.AttributeNames = otlp.DEFAULT_NAMES,
                 stats: IntakeStats | None = None) -> None:  # fmt: skip
        self.sink = sink
        self.names = names
        self.stats = stats or IntakeStats()

    def events(self, body: bytes) -> Result:
        """POST /v1/events: one event, a JSON array, or NDJSON. Raises BadRecord("(body)") when
        the body is none of those; `Unavailable` when the records could not be made durable."""
        items = _items(body)
        if isinstance(items, dict) and "resourceSpans" in items:  # OTLP/JSON posted here: fine too
            return self._spans(otlp.from_json(items, self.names), "/v1/events")
        out: list[Record] = []
        result = Result()
        for index, item in enumerate(items if isinstance(items, list) else [items]):
            try:
                fmt, ev = parse(item) if type(item) is bytes else normalize(item)
                validate(ev, fmt)
            except BadRecord as exc:
                result.rejected.append((index, exc))
                out.append((None, _evidence(item)))
                continue
            result.accepted += 1
            out.append(_record(ev))
        self.sink.write(out)
        self.stats.result("/v1/events", result)
        return result

    def traces(self, body: bytes, encoding: str) -> Result:
        """POST /v1/traces: an ExportTraceServiceRequest (`protobuf` or `json`)."""
        return self._spans(otlp.decode_traces(body, encoding, self.names), "/v1/traces")

    def trace_request(self, request: Any) -> Result:
        """An ExportTraceServiceRequest already parsed (OTLP/gRPC)."""
        return self._spans(otlp.from_proto(request, self.names), "grpc")

    def _spans(self, spans: otlp.Spans, endpoint: str) -> Result:
        good, bad = validate_spans(spans)
        result = Result(accepted=len(good), rejected=bad, skipped=spans.skipped)
        out = [(None, exc.evidence or b"") for _, exc in bad] + [_record(ev) for _, ev, _ in good]
        self.sink.write(out)
        self.stats.result(endpoint, result)
        return result


def _record(ev: dict[str, Any]) -> Record:
    """An accepted event as forwarded: canonical JSON, keyed by its virtual key."""
    vk = ev.get("virtual_key")
    return (vk.encode() if type(vk) is str else None, orjson.dumps(ev))


def _items(body: bytes) -> Any:
    """The records of an events body: a parsed object, a list of parsed items, or NDJSON lines
    (bytes, decoded one by one so a bad line is one reject, not a bad body)."""
    text = body.strip()
    if not text:
        raise BadRecord("(body)", "", "one JSON event, a JSON array of events, or NDJSON (one event per line)")
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if b"\n" in text:
            return [line for line in text.split(b"\n") if line.strip()]
        raise BadRecord("(body)", text[:40], f"one JSON event, a JSON array of events, or NDJSON ({exc})") from None
    if isinstance(parsed, list):
        return parsed
    return parsed


def _evidence(item: Any) -> bytes:
    """A rejected record as forwarded for its dead letter: text keys removed where it parses."""
    return redact_bytes(item if type(item) is bytes else orjson.dumps(item))


__all__ = ["Intake", "IntakeStats", "Result"]
