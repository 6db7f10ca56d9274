"""The batch decoder gives exactly what the per-record reference decoder gives: same rows, same
values, same dead letters with the same messages — on random mixes of good, bad and other shapes."""

from __future__ import annotations

from typing import Any

import orjson
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.decode import ROW_FIELDS, decode
from ingest.errors import BadRecord
from ingest.fastdecode import BatchDecoder
from ingest.schema import EVENT_SCHEMA


def reference(values: list[bytes]) -> tuple[list[dict[str, Any]], list[int], list[tuple[int, str]]]:
    rows, at, bad = [], [], []
    for i, v in enumerate(values):
        try:
            row = decode(v)
        except BadRecord as exc:
            bad.append((i, str(exc)))
            continue
        rows.append(row)
        at.append(i)
    cols = list(zip(*rows)) if rows else [[] for _ in ROW_FIELDS]
    table = pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(cols, EVENT_SCHEMA)], schema=EVENT_SCHEMA)
    return table.to_pylist(), at, bad


def batch(values: list[bytes]) -> tuple[list[dict[str, Any]], list[int], list[tuple[int, str]]]:
    table, at, bad = BatchDecoder().decode(values)
    return table.to_pylist(), at, [(i, str(e)) for i, e in bad]


GOOD = {
    "event_id": "e", "timestamp": 1764331200000, "provider": "openai", "model": "gpt-4o",
    "input_tokens": 100, "output_tokens": 20,
}  # fmt: skip

# Per field: values a correct producer sends, and mistakes (or edges) it makes. Records are mostly
# valid with at most one mistake, so both the fast path and the dead-letter path are exercised.
VALID: dict[str, list[Any]] = {
    "event_id": ["x", "a" * 256, "ü" * 3],
    "timestamp": [1764331200000, "2025-11-28T10:00:00Z", "2025-11-28T10:00:00.123456+02:00"],
    "provider": ["openai", "OpenAI", "vertex_ai", "anthropic"],
    "model": ["gpt-4o", "openai/gpt-4o", "gpt-4o-2024-08-06", "mystery"],
    "input_tokens": [100, 10**6, None],
    "output_tokens": [20, 30, None],
    "cached_input_tokens": [0, 50, None],
    "cache_write_tokens": [0, 10, None],
    "cache_write_1h_tokens": [0, None],
    "reasoning_tokens": [0, 10, None],
    "virtual_key": ["vk-1", "", None, "k" * 256],
    "team": ["t", None, ""],
    "tags": [None, {}, {"env": "prod"}, {"b": "2", "a": "1"}, {"n": 3}, {"n": None}, {"f": 1e20}, {"t": True}],
    "request_type": [None, "", "embedding"],
    "batch": [None, True, False],
    "status": [None, "", "success", "error"],
    "status_code": [None, 200, 599],
    "latency_ms": [None, 0, 12.5, 5e11, 7],
    "cache_hit": [None, True],
    "images": [None, 0, 4, 10_000],
    "duration_seconds": [None, 0, 12.5, 61, 1_000_000],
    "cost_usd": [None, 0.01, 3],
    "extra_field": ["ignored", {"deep": [1, 2]}],
}  # fmt: skip
MISTAKES: list[tuple[str, Any]] = [
    ("event_id", ""), ("event_id", None), ("event_id", 7), ("event_id", "a" * 257),
    ("timestamp", 1764331200), ("timestamp", "2025-11-28T10:00:00"), ("timestamp", "yesterday"),
    ("timestamp", 1.7e12), ("timestamp", None), ("timestamp", True), ("provider", ""), ("provider", None),
    ("provider", 3), ("model", ""), ("model", None), ("input_tokens", -1), ("input_tokens", 1.5),
    ("input_tokens", 2.0), ("input_tokens", "3"), ("input_tokens", True), ("input_tokens", 2**64 - 1),
    ("input_tokens", 10**9), ("output_tokens", -3), ("cached_input_tokens", 200), ("cache_write_tokens", 95),
    ("cache_write_1h_tokens", 20), ("reasoning_tokens", 25), ("virtual_key", "k" * 257), ("virtual_key", 5),
    ("tags", {"x": {"y": 1}}), ("tags", "flat"), ("tags", [1]), ("request_type", 4), ("batch", 1),
    ("status", "failure"), ("status", 0), ("status_code", 99), ("status_code", 600), ("status_code", "200"),
    ("status_code", True), ("latency_ms", -1), ("latency_ms", 5e12), ("latency_ms", 1e13), ("latency_ms", True),
    ("cache_hit", "yes"), ("images", -1), ("images", 2.5), ("images", 10_001), ("images", "3"), ("images", True),
    ("duration_seconds", -0.5), ("duration_seconds", 1e7), ("duration_seconds", "60"), ("duration_seconds", False),
    ("cost_usd", -0.5), ("usage", {"prompt_tokens": 10, "completion_tokens": 2}),
]  # fmt: skip


@st.composite
def canonical(draw: st.DrawFn) -> bytes:
    doc = dict(GOOD)
    for key, choices in VALID.items():
        if draw(st.booleans()):
            doc[key] = draw(st.sampled_from(choices))
    if draw(st.integers(0, 3)) == 0:
        key, value = draw(st.sampled_from(MISTAKES))
        doc[key] = value
    return orjson.dumps(doc)


record = st.one_of(
    canonical(),
    canonical(),
    canonical(),
    st.sampled_from([b"", b"null", b"{not json", b"\xff\xfe", b"[1]", b'{"event_id": "a"} {"event_id": "b"}',
                     b'  {"event_id": "s", "timestamp": 1764331200000, "provider": "openai", "model": "m"}',
                     b'{"event_id": "n", "latency_ms": NaN, "timestamp": 1764331200000, "provider": "o", "model": "m"}',
                     b'{"event_id":"d","event_id":"d2","timestamp":1764331200000,"provider":"o","model":"m"}']),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(record, min_size=1, max_size=40))
def test_batch_decoder_equals_the_reference(values: list[bytes]) -> None:
    assert batch(values) == reference(values)


def test_many_good_rows_take_the_fast_path_and_match() -> None:
    values = [orjson.dumps({**GOOD, "event_id": f"e{i}", "tags": {"env": "prod", "i": str(i)}, "team": f"t{i % 3}"})
              for i in range(5000)]  # fmt: skip
    values[1234] = b"{broken"
    assert batch(values) == reference(values)


def test_a_stream_switching_timestamp_encoding_matches() -> None:
    d = BatchDecoder()
    ints = [orjson.dumps({**GOOD, "event_id": f"i{i}"}) for i in range(10)]
    strs = [orjson.dumps({**GOOD, "event_id": f"s{i}", "timestamp": "2025-11-28T10:00:00Z"}) for i in range(10)]
    for values in (ints, strs, ints, ints + strs):
        table, at, bad = d.decode(values)
        assert (table.to_pylist(), at, bad) == (reference(values)[0], reference(values)[1], [])


def test_every_mistake_alone_gets_the_same_verdict_on_both_paths() -> None:
    """Each known mistake in an otherwise good record, amid good records (so the batch takes the
    fast path): the same dead letter, with the same message, as the reference."""
    good = [orjson.dumps({**GOOD, "event_id": f"g{i}"}) for i in range(20)]
    for key, value in MISTAKES:
        values = [*good, orjson.dumps({**GOOD, key: value}), *good]
        assert batch(values) == reference(values), f"{key}={value!r}"


def test_every_valid_variant_alone_decodes_the_same_on_both_paths() -> None:
    good = [orjson.dumps({**GOOD, "event_id": f"g{i}"}) for i in range(20)]
    for key, choices in VALID.items():
        for value in choices:
            values = [*good, orjson.dumps({**GOOD, key: value}), *good]
            assert batch(values) == reference(values), f"{key}={value!r}"
