"""Decode and validate: raw record bytes → one row of canonical columns, or a BadRecord.

The rule this module keeps: a record either becomes exactly one validated row whose every value
has the type of `schema.EVENT_SCHEMA`, or raises `BadRecord` naming the field, the bad value and
what was allowed. Nothing in between, nothing silently coerced to a different meaning.

This is the only per-record Python on the ingest path, so it does as little as it can: one
`orjson.loads`, one adapter call (a no-op for canonical events), then straight-line checks.
Columns are built per batch from the rows (see `batch.py`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from ingest import otlp
from ingest.adapters import normalize
from ingest.errors import BadRecord
from pricing.names import canonical_provider, split_model

MAX_RECORD_BYTES = 1_048_576
MAX_OTLP_RECORD_BYTES = 16 * 1_048_576  # a Collector batch of spans is one record
MAX_TOKENS = 100_000_000  # per field and request; anything above is a unit bug upstream
MAX_ID_CHARS = 256
MAX_LABEL_CHARS = 256
MIN_EPOCH_MS = 946_684_800_000  # 2000-01-01: earlier is a seconds-vs-milliseconds mistake
MAX_EPOCH_MS = 4_102_444_800_000  # 2100-01-01
STATUSES = ("success", "error")
MAX_IMAGES = 10_000  # per request
MAX_DURATION_S = 1_000_000  # ~11.6 days of audio or video in one request

# Row layout: the order of schema.EVENT_FIELDS.
ROW_FIELDS = (
    "event_id", "timestamp", "provider", "model",
    "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
    "cache_write_1h_tokens", "reasoning_tokens",
    "virtual_key", "team", "customer", "user", "project",
    "tags", "request_type", "batch", "status", "status_code", "latency_ms", "cache_hit",
    "images", "duration_seconds", "reported_cost_usd", "input_format",
)  # fmt: skip

Row = tuple[Any, ...]


def decode(raw: bytes) -> Row:
    """Raw bytes of one record → a validated row (ROW_FIELDS order). Raises BadRecord."""
    fmt, ev = parse(raw)
    return validate(ev, fmt)


def parse(raw: bytes) -> tuple[str, dict[str, Any]]:
    """Raw bytes of one record → (input format, canonical event dict), not yet validated."""
    if len(raw) > MAX_RECORD_BYTES:
        raise BadRecord("(record)", f"{len(raw)} bytes", f"at most {MAX_RECORD_BYTES} bytes")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as uexc:
            raise BadRecord("(record)", raw[:40], f"UTF-8 text ({uexc.reason})") from None
        raise BadRecord("(record)", raw[:40], f"one JSON object ({exc})") from None
    return normalize(obj)


def decode_record(raw: bytes, names: otlp.AttributeNames = otlp.DEFAULT_NAMES) -> tuple[list[Row], list[BadRecord]]:
    """One record → its rows and the errors of the events in it that failed. A record is one
    event, except an OTLP traces request (the Collector's Kafka exporter writes one per record),
    which holds one event per GenAI span. Raises BadRecord when the record as a whole is unusable."""
    kind = otlp.sniff(raw)
    if kind is None:
        return [decode(raw)], []
    if len(raw) > MAX_OTLP_RECORD_BYTES:
        raise BadRecord("(record)", f"{len(raw)} bytes", f"an OTLP record of at most {MAX_OTLP_RECORD_BYTES} bytes")
    if kind == "otlp_proto":
        try:
            spans = otlp.from_proto(otlp.parse_proto(raw), names)
        except BadRecord as exc:
            exc.evidence = b""  # undecodable protobuf may hold prompt text: keep none of it
            raise
    else:
        try:
            spans = otlp.from_json(orjson.loads(raw), names)
        except orjson.JSONDecodeError:
            return [decode(raw)], []  # not JSON after all: decode() words the error
    good, bad = validate_spans(spans)
    return [row for _, _, row in good], [exc for _, exc in bad]


def validate_spans(spans: otlp.Spans) -> tuple[list[tuple[int, dict[str, Any], Row]], list[tuple[int, BadRecord]]]:
    """An OTLP request's events validated: (span index, event, row) for the good ones, (span
    index, error) in span order for every span the mapping or the validation refused. A refused
    event keeps itself as evidence (its canonical fields: no text)."""
    good: list[tuple[int, dict[str, Any], Row]] = []
    bad = list(spans.rejected)
    for index, ev in zip(spans.event_index, spans.events):
        try:
            good.append((index, ev, validate(ev, "otlp")))
        except BadRecord as exc:
            exc.evidence = orjson.dumps(ev)
            bad.append((index, exc))
    bad.sort(key=lambda r: r[0])
    return good, bad


def validate(ev: dict[str, Any], fmt: str) -> Row:
    """A canonical event dict → a validated row. Raises BadRecord on the first bad field."""
    get = ev.get
    event_id = get("event_id")
    if type(event_id) is not str or not 0 < len(event_id) <= MAX_ID_CHARS:
        raise BadRecord("event_id", event_id, f"a non-empty string of at most {MAX_ID_CHARS} chars")
    ts = _timestamp(get("timestamp"))
    provider = get("provider")
    if type(provider) is not str or not provider:
        raise BadRecord("provider", provider, "a non-empty string such as 'openai'")
    model = get("model")
    if type(model) is not str or not model:
        raise BadRecord("model", model, "a non-empty string such as 'gpt-4o'")
    provider, model = split_model(canonical_provider(provider), model)

    inp = _tokens(ev, "input_tokens")
    out = _tokens(ev, "output_tokens")
    cached = _tokens(ev, "cached_input_tokens")
    cw = _tokens(ev, "cache_write_tokens")
    cw1h = _tokens(ev, "cache_write_1h_tokens")
    reasoning = _tokens(ev, "reasoning_tokens")
    if cached + cw > inp:
        raise BadRecord(
            "cached_input_tokens",
            {"cached_input_tokens": cached, "cache_write_tokens": cw, "input_tokens": inp},
            "cached + cache-write tokens ≤ input_tokens (input includes them)",
        )
    if cw1h > cw:
        raise BadRecord("cache_write_1h_tokens", cw1h, f"≤ cache_write_tokens ({cw})")
    if reasoning > out:
        raise BadRecord("reasoning_tokens", reasoning, f"≤ output_tokens ({out}; output includes them)")

    status = get("status") or "success"
    if status not in STATUSES:
        raise BadRecord("status", status, "'success' or 'error'")
    request_type = get("request_type") or "chat"
    if type(request_type) is not str:
        raise BadRecord("request_type", request_type, "a string such as 'chat' or 'embedding'")
    return (
        event_id, ts, provider, model, inp, out, cached, cw, cw1h, reasoning,
        _label(ev, "virtual_key"), _label(ev, "team"), _label(ev, "customer"),
        _label(ev, "user"), _label(ev, "project"),
        _tags(get("tags")), request_type,
        _flag(ev, "batch"), status, _status_code(get("status_code")),
        _number(ev, "latency_ms"), _flag(ev, "cache_hit"), _images(get("images")),
        _duration(get("duration_seconds")), _number(ev, "cost_usd"), fmt,
    )  # fmt: skip


def _timestamp(value: Any) -> int:
    """RFC 3339 with an offset, or integer epoch milliseconds → epoch milliseconds."""
    if type(value) is int:
        ms = value
    elif type(value) is str:
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise BadRecord("timestamp", value, "RFC 3339 with an offset, or epoch milliseconds") from None
        if dt.tzinfo is None:
            raise BadRecord("timestamp", value, "an RFC 3339 time WITH an offset such as 'Z' or '+02:00'")
        ms = int(dt.timestamp() * 1000)
    else:
        raise BadRecord("timestamp", value, "RFC 3339 string with an offset, or integer epoch milliseconds")
    if not MIN_EPOCH_MS <= ms < MAX_EPOCH_MS:
        raise BadRecord("timestamp", value, "a time between 2000 and 2100 (epoch milliseconds, not seconds)")
    return ms


def _tokens(ev: dict[str, Any], name: str) -> int:
    value = ev.get(name)
    if value is None:
        return 0
    if type(value) is not int or not 0 <= value <= MAX_TOKENS:
        raise BadRecord(name, value, f"an integer from 0 to {MAX_TOKENS:,}")
    return value


def _label(ev: dict[str, Any], name: str) -> str | None:
    value = ev.get(name)
    if value is None or value == "":
        return None
    if type(value) is not str or len(value) > MAX_LABEL_CHARS:
        raise BadRecord(name, value, f"a string of at most {MAX_LABEL_CHARS} chars")
    return value


def _flag(ev: dict[str, Any], name: str) -> bool:
    value = ev.get(name)
    if value is None:
        return False
    if type(value) is not bool:
        raise BadRecord(name, value, "true or false")
    return value


def _number(ev: dict[str, Any], name: str) -> float | None:
    value = ev.get(name)
    if value is None:
        return None
    if type(value) not in (int, float) or not 0 <= value < 1e12:
        raise BadRecord(name, value, "a number ≥ 0")
    return float(value)


def _images(value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= MAX_IMAGES:
        raise BadRecord("images", value, f"an integer from 0 to {MAX_IMAGES:,}")
    return value


def _duration(value: Any) -> float | None:
    if value is None:
        return None
    if type(value) not in (int, float) or not 0 <= value <= MAX_DURATION_S:
        raise BadRecord("duration_seconds", value, f"a number of seconds from 0 to {MAX_DURATION_S:,}")
    return float(value)


def _status_code(value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 100 <= value <= 599:
        raise BadRecord("status_code", value, "an HTTP status from 100 to 599")
    return value


def _tags(value: Any) -> list[tuple[str, str]] | None:
    """Tags as (key, value) pairs sorted by key; a null value means the tag is absent."""
    if value is None:
        return None
    if type(value) is not dict:
        raise BadRecord("tags", value, "an object of string → string")
    items = []
    for k, v in value.items():
        if type(v) is not str:
            if v is None:
                continue
            if type(v) in (int, float, bool):
                v = orjson.dumps(v).decode()  # 3 → "3", true → "true": still one flat dimension
            else:
                raise BadRecord(f"tags.{k}", v, "a string (tags are flat string → string)")
        items.append((k, v))
    items.sort()
    return items
