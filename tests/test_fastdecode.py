"""The batch decoder gives exactly what the per-record reference decoder gives: same rows, same
values, same dead letters with the same messages — on random mixes of good, bad and other shapes."""

from __future__ import annotations

import random
from typing import Any
from unittest import mock

import orjson
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest import fastdecode
from ingest.decode import ROW_FIELDS, decode, decode_record
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
    cols: list[Any] = list(zip(*rows)) if rows else [[] for _ in ROW_FIELDS]
    table = pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(cols, EVENT_SCHEMA)], schema=EVENT_SCHEMA)
    return table.to_pylist(), at, bad


def reference_table(values: list[bytes]) -> tuple[pa.Table, list[int], list[tuple[int, str]]]:
    rows, at, bad = [], [], []
    for i, v in enumerate(values):
        try:
            rows.append(decode(v))
            at.append(i)
        except BadRecord as exc:
            bad.append((i, str(exc)))
    cols: list[Any] = list(zip(*rows)) if rows else [[] for _ in ROW_FIELDS]
    return pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(cols, EVENT_SCHEMA)], schema=EVENT_SCHEMA), at, bad


def assert_same(values: list[bytes], d: BatchDecoder | None = None, note: object = "") -> None:
    """The batch decoder's answer is the reference's (compared as tables; as rows for the diff)."""
    table, at, bad = (d or BatchDecoder()).decode(values)
    ref, ref_at, ref_bad = reference_table(values)
    assert (at, [(i, str(e)) for i, e in bad]) == (ref_at, ref_bad), note
    if not table.equals(ref):
        assert table.to_pylist() == ref.to_pylist(), note
        assert table.schema == ref.schema, note


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


# --- a bad record costs only itself ---------------------------------------------------------------
# Every kind of bad record a producer sends, and records Arrow reads differently from orjson. Some
# Arrow refuses (a chunk holding one used to go to the per-record decoder whole), some it reads
# and the checks refuse, some never reach it.
BAD: list[bytes] = [
    b"\xff\xfe not utf-8", b"{not json", b"[1, 2, 3]", b"", b"null", b'"a string"', b"{}",
    orjson.dumps({**GOOD, "input_tokens": "12"}), orjson.dumps({**GOOD, "output_tokens": 20.0}),
    orjson.dumps({**GOOD, "input_tokens": 1.5e3}), orjson.dumps({**GOOD, "input_tokens": True}),
    orjson.dumps({**GOOD, "input_tokens": [1]}), orjson.dumps({**GOOD, "input_tokens": {"n": 1}}),
    b'{"event_id":"big","timestamp":1764331200000,"provider":"o","model":"m","input_tokens":18446744073709551616}',
    orjson.dumps({**GOOD, "input_tokens": -5}), orjson.dumps({**GOOD, "output_tokens": 10**12}),
    orjson.dumps({k: v for k, v in GOOD.items() if k != "timestamp"}), orjson.dumps({**GOOD, "timestamp": 1764331200}),
    orjson.dumps({**GOOD, "timestamp": "2025-11-28T10:00:00"}), orjson.dumps({**GOOD, "timestamp": "yesterday"}),
    orjson.dumps({**GOOD, "timestamp": 1.7643312e12}), orjson.dumps({**GOOD, "cached_input_tokens": 101}),
    orjson.dumps({k: v for k, v in GOOD.items() if k != "provider"}), orjson.dumps({**GOOD, "provider": 3}),
    orjson.dumps({**GOOD, "event_id": 7}), orjson.dumps({**GOOD, "status_code": "200"}),
    orjson.dumps({**GOOD, "latency_ms": "fast"}), orjson.dumps({**GOOD, "batch": "yes"}),
    orjson.dumps({**GOOD, "tags": "flat"}), orjson.dumps({**GOOD, "tags": {"a": {"b": "c"}}}),
    orjson.dumps({**GOOD, "tags": {"n": 3}}), orjson.dumps({**GOOD, "extra": "a string this time"}),
    b'{"event_id":"u\xff","timestamp":1764331200000,"provider":"openai","model":"gpt-4o"}',  # invalid UTF-8 inside
    b'{"event_id":"nan","timestamp":1764331200000,"provider":"openai","model":"gpt-4o","extra":NaN}',
    b'{"event_id":"inf","timestamp":1764331200000,"provider":"openai","model":"gpt-4o","latency_ms":-Infinity}',
    b'{"event_id":"two","timestamp":1764331200000,"provider":"o","model":"m"} {"event_id":"x"}',
    b'{"event_id":"cut","timestamp":1764331200000,"provider":"o","mod',
    b'{"event_id":"trailing","timestamp":1764331200000,"provider":"o","model":"m",}',
    b'{"event_id":"s","timestamp":1764331200000,"provider":"o","model":"m","x":"\\ud800"}',
    b'{"event_id":"e","timestamp":1764331200000,"provider":"o","model":"m","pad":"' + b"x" * (1 << 20) + b'"}',
    *[orjson.dumps({**GOOD, key: value}) for key, value in MISTAKES],
]  # fmt: skip


def good_record(i: int, ts: str = "int") -> bytes:
    """A valid record like a gateway sends, different for each i."""
    e: dict[str, Any] = {
        "event_id": f"ev-{i}", "timestamp": 1764331200000 + i if ts == "int" else "2025-11-28T10:00:00Z",
        "provider": ("openai", "anthropic", "gemini")[i % 3], "model": ("gpt-4o", "claude-sonnet-4-5", "m")[i % 3],
        "input_tokens": 100 + i % 7, "output_tokens": 20 + i % 5, "virtual_key": f"vk-{i % 11}",
        "latency_ms": 100.5 + i, "status_code": 200,
    }  # fmt: skip
    if i % 2:
        e["tags"] = {"env": "prod", "n": str(i % 4)}
    if i % 5 == 0:
        e["cached_input_tokens"] = 50
    return orjson.dumps(e)


class CountingDecoder:
    """Wraps the per-record decoder the batch decoder falls back to, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, raw: bytes, names: Any) -> Any:
        self.calls += 1
        return decode_record(raw, names)


def small_chunks():  # type: ignore[no-untyped-def]
    """Chunks, scan groups and split floors small enough that a few hundred records cross every
    boundary: several chunks, refusals in the middle and at the edges of chunks and groups."""
    return mock.patch.multiple(fastdecode, CHUNK=64, SCAN_GROUP=8, SMALL=2)


@st.composite
def mixed_stream(draw: st.DrawFn) -> list[bytes]:
    """Good records with bad ones mixed in at random positions, sometimes in runs."""
    n = draw(st.integers(0, 400))
    ts = draw(st.sampled_from(["int", "int", "str"]))
    values = [good_record(i, ts) for i in range(n)]
    for _ in range(draw(st.integers(0, 12))):
        at = draw(st.integers(0, len(values)))
        values[at:at] = draw(st.lists(st.sampled_from(BAD), min_size=1, max_size=3))
    return values


@settings(max_examples=60, deadline=None)
@given(st.lists(mixed_stream(), min_size=1, max_size=3))
def test_bad_records_mixed_in_give_exactly_what_the_reference_gives(batches: list[list[bytes]]) -> None:
    """Batch after batch through one decoder (it remembers what it learned about the stream):
    the same rows in the same order, the same row → record mapping, the same dead letters with
    the same messages as decoding record by record."""
    with small_chunks():
        d = BatchDecoder()
        for values in batches:
            assert_same(values, d)


def test_every_bad_kind_costs_only_itself() -> None:
    """Each bad kind a few times amid 2,300 good records (two chunks; at the start, the end and
    on both sides of the chunk boundary): the output equals the reference, and the per-record
    decoder sees the bad records and hardly any good one."""
    good = [good_record(i) for i in range(2300)]
    for raw in BAD:
        values = list(good)
        for at in (7, 2046, 2048, 2302):
            values.insert(at, raw)
        counter = CountingDecoder()
        with mock.patch.object(fastdecode, "decode_record", counter):
            assert_same(values, note=raw[:80])
        assert counter.calls <= 4 + 3 * fastdecode.SMALL, (raw[:80], counter.calls)


def test_a_stream_with_bad_records_in_every_chunk_stays_on_the_fast_path() -> None:
    """1% bad records of every kind in a 40,000-record stream, in batches through one decoder:
    exactly the reference, and (apart from the bad records) under 1% of records decoded one by
    one — before, every chunk holding a record Arrow refused went to the per-record decoder."""
    rng = random.Random(3)
    values = [good_record(i) for i in range(40_000)]
    for k in range(400):
        values.insert(rng.randrange(len(values) + 1), BAD[k % len(BAD)])
    counter = CountingDecoder()
    d = BatchDecoder()
    with mock.patch.object(fastdecode, "decode_record", counter):
        for start in range(0, len(values), 10_000):
            assert_same(values[start : start + 10_000], d)
    assert counter.calls <= 400 + 400, counter.calls


def test_records_the_screen_misses_are_isolated_by_splitting() -> None:
    """An unknown field whose type changes from record to record: no screening rule knows it,
    Arrow refuses the chunk, and halving (no row named in that error) or the row Arrow names
    finds the record; its neighbours stay on the fast path."""
    good = [orjson.dumps({**orjson.loads(good_record(i)), "extra": i}) for i in range(3000)]
    for odd in (b'"text"', b"1.5", b"[1]", b'{"a": 1}', b"true"):
        values = list(good)
        values.insert(1500, good_record(99_999)[:-1] + b',"extra":' + odd + b"}")
        counter = CountingDecoder()
        with mock.patch.object(fastdecode, "decode_record", counter):
            assert_same(values, note=odd)
        assert counter.calls <= 3 * fastdecode.SMALL, (odd, counter.calls)


def test_a_chunk_of_only_refused_records_is_bounded_and_exact() -> None:
    """Every record refused, each for another reason: no endless splitting, the reference's
    answer, and no more Arrow work than the budget allows."""
    values = [orjson.dumps({**orjson.loads(good_record(i)), "extra": [i, "s", True, None, 1.5, {}][i % 6]})
              for i in range(3000)]  # fmt: skip
    reads = 0
    real = BatchDecoder._read

    def counting(self: BatchDecoder, data: bytes, n: int) -> Any:
        nonlocal reads
        reads += 1
        return real(self, data, n)

    with mock.patch.object(BatchDecoder, "_read", counting):
        assert_same(values)
    chunks = -(-3000 // fastdecode.CHUNK)
    # per chunk: the first parse, one after the screen, then what the split's budget pays for
    budget_calls = 3 * (fastdecode.CHUNK + fastdecode.CALL_COST) // fastdecode.CALL_COST
    assert reads <= chunks * (2 + budget_calls), reads


def test_utf8_and_nan_that_arrow_would_take_are_dead_letters_as_in_the_reference() -> None:
    good = [good_record(i) for i in range(50)]
    for raw in (b'{"event_id":"u\xff","timestamp":1764331200000,"provider":"openai","model":"gpt-4o"}',
                b'{"event_id":"n","timestamp":1764331200000,"provider":"openai","model":"gpt-4o","x":NaN}',
                b'{"event_id":"i","timestamp":1764331200000,"provider":"openai","model":"gpt-4o","x":[Infinity]}'):  # fmt: skip
        values = [*good, raw, *good]
        table, at, bad = BatchDecoder().decode(values)
        table.validate(full=True)
        assert [(i, str(e)) for i, e in bad] == reference(values)[2] != []
        assert (table.to_pylist(), at) == reference(values)[:2]


def test_the_stream_switching_timestamp_encoding_amid_bad_records_matches() -> None:
    d = BatchDecoder()
    ints = [good_record(i) for i in range(300)]
    strs = [good_record(i, "str") for i in range(300)]
    with small_chunks():
        for values in (ints + BAD[:10], strs + BAD[10:20], BAD[20:] + ints, strs[:5] + ints + strs):
            assert_same(values, d)
