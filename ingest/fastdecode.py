"""Batch decoding: a whole micro-batch of canonical events parsed and validated in Arrow.

`decode.decode` is the reference: one record at a time, in Python, ~10 µs each — as slow as the
Kafka client itself. This module gets the same answer for the common case at a fraction of the
cost: records that look canonical are joined into one newline-delimited buffer, parsed by
Arrow's C++ JSON reader with an explicit schema, and checked with vectorised comparisons.

The rule it keeps: **a row leaves the fast path only if `decode.decode` would produce exactly
that row.** Anything it is not sure of — other input shapes, a record Arrow refuses, a value out
of range, a string timestamp that does not parse, invalid UTF-8, NaN — goes to `decode.decode`,
which either produces the row or the dead letter with its exact message. So the fast path can
only make ingest faster, never different (tests/test_fastdecode.py checks this on random mixes).

A bad record costs only itself: Arrow refuses a whole chunk for one value of the wrong JSON kind,
so such records are found by regular expressions (`RULES`, run by Arrow) and taken out before the
chunk is parsed again; what those miss is isolated by splitting the chunk (`BatchDecoder._split`).
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from ingest.decode import (
    MAX_DURATION_S, MAX_EPOCH_MS, MAX_ID_CHARS, MAX_IMAGES, MAX_RECORD_BYTES, MAX_LABEL_CHARS, MAX_TOKENS,
    MIN_EPOCH_MS, Row, _timestamp, decode_record,
)  # fmt: skip
from ingest.otlp import DEFAULT_NAMES, AttributeNames
from ingest.errors import BadRecord
from ingest.schema import ATTRIBUTION_COLUMNS, EVENT_SCHEMA, TOKEN_COLUMNS, TS
from pricing.names import canonical_provider, split_model

CHUNK = 2048  # records per Arrow parse: ~0.7 MB of JSON; 1024–8192 measured alike for speed
FORMAT = "spendlake.v1"


def _json_schema(ts_type: pa.DataType) -> pa.Schema:
    fields = [
        ("event_id", pa.string()), ("timestamp", ts_type), ("provider", pa.string()), ("model", pa.string()),
        *[(c, pa.int64()) for c in TOKEN_COLUMNS], *[(c, pa.string()) for c in ATTRIBUTION_COLUMNS],
        ("request_type", pa.string()), ("batch", pa.bool_()), ("status", pa.string()),
        ("status_code", pa.int64()), ("latency_ms", pa.float64()), ("cache_hit", pa.bool_()),
        ("images", pa.int64()), ("duration_seconds", pa.float64()), ("cost_usd", pa.float64()),
        ("usage", pa.struct([])),  # only a marker: a `usage` object means another adapter
    ]  # fmt: skip
    return pa.schema(fields)


SCHEMAS = {"int": _json_schema(pa.int64()), "str": _json_schema(pa.string())}


# --- screening: finding the records Arrow would refuse, before it refuses their chunk ---------
_BAD_VALUE = {  # RE2 for the start of a JSON value Arrow refuses for a field of each type
    "int": r"(?:[^-0-9n\s]|-?[0-9]+[.eE]|-?[0-9]{19})",  # not an int64 literal, or too long for one
    "str": r'[^"n\s]', "float": r"[^-0-9nNI\s]", "bool": r"[^tfn\s]",
}  # fmt: skip
_JSON_STRING = r'"(?:[^"\\]|\\.)*"'
_TAGS = rf'"\s*:\s*(?:[^{{n\s]|\{{(?:\s*{_JSON_STRING}\s*:\s*(?:{_JSON_STRING}|null)\s*,)*\s*{_JSON_STRING}\s*:\s*[^"n\s])'
_TWO_OBJECTS = r"\}[ \t\r]*\{"  # not \s: a scan runs over many records joined by newlines


def _kind(t: pa.DataType) -> str | None:
    for k, test in (("int", pa.types.is_integer), ("str", pa.types.is_string), ("float", pa.types.is_floating),
                    ("bool", pa.types.is_boolean)):  # fmt: skip
        if test(t):
            return k
    return None


def _rules(ts_kind: str) -> tuple[dict[str, tuple[str, str]], str]:
    """Regular expressions (RE2; Python reads them alike) for the records Arrow refuses in a
    chunk parsed with SCHEMAS[ts_kind]: a field holding a value of a JSON kind its type does not
    take (a string or 1.5 for an integer, a number for a string, ...), a tags value that is not
    a string, two objects on one line. Approximate both ways, and that is fine: a record flagged
    wrongly only takes the slow path, one missed is found by `_split`.

    Returns per field (the token fields share one) a pair: a loose expression for finding the
    groups of records worth a look (the key without its opening quote: a scan for it does not
    stop at every quote, ~0.2 ms per 2,048 records instead of ~0.5; it also matches longer keys
    that end so) and the exact one for the records of those groups; and every exact rule in one
    expression (SUSPECT: one scan, ~1.5 ms per 2,048 records, costs less than four separate ones)."""
    rules: dict[str, tuple[str, str]] = {}
    by_kind: dict[str, list[str]] = {}
    for f in SCHEMAS[ts_kind]:
        k = _kind(f.type)
        if k is None:
            continue
        by_kind.setdefault(k, []).append(f.name)
        if f.name in TOKEN_COLUMNS:  # every token field's name ends in _tokens
            rules["*_tokens"] = (rf'_tokens"\s*:\s*{_BAD_VALUE[k]}',
                                 rf'"(?:{"|".join(TOKEN_COLUMNS)})"\s*:\s*{_BAD_VALUE[k]}')  # fmt: skip
        else:
            rules[f.name] = (rf'{f.name}"\s*:\s*{_BAD_VALUE[k]}', rf'"{f.name}"\s*:\s*{_BAD_VALUE[k]}')
    rules["tags"] = ("tags" + _TAGS, '"tags' + _TAGS)
    rules["two objects"] = (_TWO_OBJECTS, _TWO_OBJECTS)
    together = [rf'"(?:{"|".join(names)})"\s*:\s*{_BAD_VALUE[k]}' for k, names in by_kind.items()]
    return rules, "|".join([*together, '"tags' + _TAGS, _TWO_OBJECTS])


RULES = {kind: _rules(kind)[0] for kind in SCHEMAS}
SUSPECT = {kind: _rules(kind)[1] for kind in SCHEMAS}
_RULES_PY = {kind: {name: re.compile(rx[1].encode()) for name, rx in rules.items()} for kind, rules in RULES.items()}
MAX_LEARNED = 3  # past this many rules, separate scans cost more than one scan with SUSPECT
FORGET_AFTER = 8  # chunks: a learned rule that has matched nothing for this long is dropped
SCAN_GROUP = 16  # records per element in the first scan; only elements that match are looked into
SMALL = 32  # a refused piece this small goes to decode.decode whole: one Arrow call costs ~25 records there
CALL_COST = 100  # one pj.read_json call's fixed cost (~0.25 ms), in records parsed (~2.5 µs each)
_ROW = re.compile(r" in row (\d+)")


class BatchDecoder:
    """Decodes batches; remembers which timestamp encoding the stream used last, and which kinds
    of records Arrow refuses it has held lately."""

    def __init__(self, otlp_names: AttributeNames = DEFAULT_NAMES) -> None:
        self._ts_kind = "int"
        # RULES that found records Arrow refuses in recent chunks → chunks since one last did;
        # while there are any, a chunk is screened with them before it is parsed
        self._learned: dict[str, int] = {}
        self.otlp_names = otlp_names

    def decode(self, values: Sequence[bytes]) -> tuple[pa.Table, list[int], list[tuple[int, BadRecord]]]:
        """values → (events in EVENT_SCHEMA, the index in `values` of each row, the bad ones).
        Rows come out in index order; an OTLP record's rows share its index (and so do its bad
        spans in `bad`)."""
        # Candidates: one JSON object per value (Arrow splits on newlines, and a buffer of only
        # `null` crashes its reader), canonical by the adapters' rule (event_id, no usage). A
        # value not ending in `}` (cut short, or trailing space) takes the per-record path at
        # once: Arrow's error does not name the row of a truncated record, and isolating it by
        # halving cost ~30 good neighbours on the slow path each (measured on bench/ingest.py's mix).
        fast = [
            i for i, v in enumerate(values)
            if len(v) <= MAX_RECORD_BYTES and v[:1] == b"{" and v[-1:] == b"}" and b'"event_id"' in v
            and b'"usage"' not in v and b"\n" not in v
        ]  # fmt: skip
        slow: list[int] = []
        if len(fast) != len(values):
            others = np.ones(len(values), dtype=bool)
            others[fast] = False
            slow = np.flatnonzero(others).tolist()
        tables: list[pa.Table] = []
        indices: list[np.ndarray] = []
        for idx, table in _merge(self._parse(values, fast, slow)):
            ok, cols = _validate(table)
            if not ok.all():
                slow.extend(np.asarray(idx)[~ok].tolist())
                cols = [c.filter(pa.array(ok)) for c in cols]
                idx = np.asarray(idx)[ok]
            tables.append(pa.Table.from_arrays(cols, schema=EVENT_SCHEMA))
            indices.append(np.asarray(idx, dtype=np.int64))
        rows: list[Row] = []
        row_idx: list[int] = []
        bad: list[tuple[int, BadRecord]] = []
        for i in sorted(slow):
            try:
                got, failed = decode_record(values[i], self.otlp_names)
            except BadRecord as exc:
                bad.append((i, exc))
                continue
            rows += got
            row_idx += [i] * len(got)  # an OTLP record holds many events: they share its offset
            bad += [(i, exc) for exc in failed]
        if rows:
            cols = list(zip(*rows))
            tables.append(pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(cols, EVENT_SCHEMA)],
                                               schema=EVENT_SCHEMA))  # fmt: skip
            indices.append(np.asarray(row_idx, dtype=np.int64))
        if not tables:
            return EVENT_SCHEMA.empty_table(), [], bad
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        order = np.concatenate(indices)
        if len(tables) > 1:
            perm = np.argsort(order, kind="stable")
            table, order = table.take(pa.array(perm)), order[perm]
        return table, order.tolist(), bad

    def _parse(self, values: Sequence[bytes], fast: list[int], slow: list[int]) -> list[tuple[list[int], pa.Table]]:
        """Parse the fast candidates CHUNK records at a time (peak memory stays small however
        large the batch). A bad record costs itself, not its chunk: see `_chunk`."""
        parts: list[tuple[list[int], pa.Table]] = []
        for start in range(0, len(fast), CHUNK):
            self._chunk(values, fast[start : start + CHUNK], slow, parts)
        return parts

    def _chunk(self, values: Sequence[bytes], chunk: list[int], slow: list[int],
               parts: list[tuple[list[int], pa.Table]]) -> None:  # fmt: skip
        """One chunk into `parts` (indices, table) and `slow`. Arrow refuses a whole chunk for one
        record of the wrong JSON kind, so a refused chunk is screened (`_screen`: the records
        with a value of a kind Arrow refuses go to `slow`) and parsed again; what the screen
        misses is split (`_split`). The rules that found something are learned and the next
        chunks are screened with just them before their first parse, so a stream with bad
        records in every chunk pays a quick screen per chunk, not a failed parse."""
        lines = [values[i] for i in chunk]
        data = b"\n".join(lines)
        utf8 = data.isascii() or _utf8(data)
        if not utf8 or (b"N" in data and b"NaN" in data) or (b"I" in data and b"Infinity" in data):
            chunk, lines = _unsure(chunk, lines, slow, utf8)
            data = b"\n".join(lines)
        if self._learned and chunk:
            names = list(self._learned)
            chunk, lines, data, hits = self._screen(chunk, lines, data, slow, names)
            for name in names:
                self._learned[name] = 0 if name in hits else self._learned[name] + 1
                if self._learned[name] > FORGET_AFTER:
                    del self._learned[name]
        if not chunk:
            return
        t, row = self._read(data, len(chunk))
        if t is None:
            n = len(chunk)
            chunk, lines, data, _ = self._screen(chunk, lines, data, slow, None)
            if len(chunk) != n and chunk:
                t, row = self._read(data, len(chunk))
        if t is not None:
            parts.append((chunk, t))
        elif chunk:
            self._split(chunk, lines, row, slow, parts)

    def _screen(self, chunk: list[int], lines: list[bytes], data: bytes, slow: list[int],
                names: list[str] | None) -> tuple[list[int], list[bytes], bytes, set[str]]:  # fmt: skip
        """Moves to `slow` the records that match the named RULES (or any rule: SUSPECT, and the
        rules those records match are learned). Returns what is left (indices, records, joined)
        and the names of the rules that matched. When most records match, the other timestamp
        encoding is tried, and the one that flags fewer records is the stream's."""
        kind = self._ts_kind
        if names is not None and len(names) > MAX_LEARNED:
            names = None
        scan = _Scan(lines, data)
        at, hits = scan.match([(SUSPECT[kind],) * 2] if names is None else [RULES[kind][n] for n in names])
        if 2 * len(at) > len(lines):
            other = "str" if kind == "int" else "int"
            at2, _ = scan.match([(SUSPECT[other],) * 2])
            if len(at2) < len(at):
                self._ts_kind, kind, at, names = other, other, at2, None
        if not at:
            return chunk, lines, data, set()
        if names is None:
            learned = set().union(*(self._learn(lines[k], kind) for k in at))
        else:
            learned = {n for n, h in zip(names, hits) if h}
        slow.extend(chunk[k] for k in at)
        kept_i: list[int] = []
        kept_l: list[bytes] = []
        prev = 0
        for k in at:
            kept_i += chunk[prev:k]
            kept_l += lines[prev:k]
            prev = k + 1
        kept_i += chunk[prev:]
        kept_l += lines[prev:]
        return kept_i, kept_l, b"\n".join(kept_l), learned

    def _learn(self, line: bytes, kind: str) -> set[str]:
        """The rules a refused record matches: the next chunks are screened with them."""
        names = {name for name, rx in _RULES_PY[kind].items() if rx.search(line)}
        for name in names:
            self._learned[name] = 0
        return names

    def _split(self, chunk: list[int], lines: list[bytes], row: int | None, slow: list[int],
               parts: list[tuple[list[int], pa.Table]]) -> None:  # fmt: skip
        """A refused piece: the record Arrow named (`in row N`) goes to `slow` and both sides
        are parsed again, or, unnamed, the piece is halved. Pieces of SMALL records or fewer go
        to `slow`, and so does all that is left once the Arrow work spent here exceeds about
        three parses of the chunk: a chunk full of bad records costs little more than decoding
        it record by record."""
        budget = 3 * (len(chunk) + CALL_COST)
        stack = [(chunk, lines, row)]
        while stack:
            idx, ls, row = stack.pop()
            if row is not None and 0 <= row < len(idx):
                slow.append(idx[row])
                self._learn(ls[row], self._ts_kind)
                pieces = [(idx[:row], ls[:row]), (idx[row + 1 :], ls[row + 1 :])]
            else:
                h = len(idx) // 2
                pieces = [(idx[:h], ls[:h]), (idx[h:], ls[h:])]
            for pi, pl in pieces:
                if len(pi) <= SMALL or budget <= 0:
                    slow.extend(pi)
                    continue
                budget -= CALL_COST + len(pi)
                t, r = self._read(b"\n".join(pl), len(pi))
                if t is not None:
                    parts.append((pi, t))
                else:
                    stack.append((pi, pl, r))

    def _read(self, data: bytes, n: int) -> tuple[pa.Table | None, int | None]:
        """n newline-separated records → their table, or (None, the row Arrow named in its error
        if it did: with two timestamp encodings tried, the later of the two)."""
        rows: list[int] = []
        for kind in (self._ts_kind, "str" if self._ts_kind == "int" else "int"):
            try:
                t = pj.read_json(
                    io.BytesIO(data),
                    read_options=pj.ReadOptions(use_threads=False, block_size=2 << 20),  # > MAX_RECORD_BYTES: a line never straddles blocks
                    parse_options=pj.ParseOptions(explicit_schema=SCHEMAS[kind], unexpected_field_behavior="infer"),
                )
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                m = _ROW.search(str(exc))
                if m:
                    rows.append(int(m.group(1)))
                if "/timestamp)" in str(exc) and kind == self._ts_kind:
                    continue  # the other timestamp encoding may parse
                return None, max(rows, default=None)
            if t.num_rows != n:
                return None, None  # a line holding two objects: found by halving
            self._ts_kind = kind
            return t, None
        return None, max(rows, default=None)


class _Scan:
    """Regular expressions over a chunk's records without copying them: each expression runs
    first over groups of SCAN_GROUP records (one Arrow element each: per-element overhead is
    what a scan of short records costs most), then over the single records of the groups that
    matched."""

    def __init__(self, lines: list[bytes], data: bytes) -> None:
        n = len(lines)
        offsets = np.zeros(n + 1, dtype=np.int64)  # record k is data[offsets[k]:offsets[k + 1]], its newline included
        np.cumsum(np.fromiter(map(len, lines), dtype=np.int64, count=n) + 1, out=offsets[1:])
        offsets[n] = len(data)
        buf = pa.py_buffer(data)
        self.n = n
        self.records = pa.LargeBinaryArray.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(offsets), buf])
        group_offsets = np.append(offsets[:n:SCAN_GROUP], offsets[n])
        self.groups = pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(group_offsets) - 1,
                                                       [None, pa.py_buffer(group_offsets), buf])  # fmt: skip

    def match(self, rules: list[tuple[str, str]]) -> tuple[list[int], list[bool]]:
        """(the positions of the records matching any of `rules`, ascending; per rule, whether
        its loose expression matched a group). A rule is (loose expression for the groups, exact
        one for records); the records of every matching group are looked into in one call (Arrow
        compiles an expression per call)."""
        hit_groups = np.zeros(len(self.groups), dtype=bool)
        hits = []
        for loose, _ in rules:
            g = pc.match_substring_regex(self.groups, loose).to_numpy(zero_copy_only=False)
            hits.append(bool(g.any()))
            hit_groups |= g
        if not hit_groups.any():
            return [], hits
        exact = "|".join(dict.fromkeys(e for (_, e), h in zip(rules, hits) if h))
        at = (np.flatnonzero(hit_groups)[:, None] * SCAN_GROUP + np.arange(SCAN_GROUP)).ravel()
        at = at[at < self.n]
        m = pc.match_substring_regex(self.records.take(pa.array(at)), exact).to_numpy(zero_copy_only=False)
        return at[m].tolist(), hits


def _unsure(chunk: list[int], lines: list[bytes], slow: list[int], utf8: bool) -> tuple[list[int], list[bytes]]:
    """Records Arrow reads but decode.decode refuses whole go to `slow` before the parse:
    invalid UTF-8 (Arrow keeps the bytes in a string column) and NaN / Infinity (Arrow reads
    them, orjson does not; in a field the checks see they fail anyway, in an unknown one they
    would not). A record that only mentions NaN in a string merely takes the slow path.
    `utf8`: the whole chunk is known to be valid UTF-8."""
    keep_i, keep_l = [], []
    for i, v in zip(chunk, lines):
        if b"NaN" in v or b"Infinity" in v or not (utf8 or v.isascii() or _utf8(v)):
            slow.append(i)
        else:
            keep_i.append(i)
            keep_l.append(v)
    return keep_i, keep_l


def _utf8(v: bytes) -> bool:
    try:
        v.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _merge(parts: list[tuple[list[int], pa.Table]]) -> list[tuple[list[int], pa.Table]]:
    """One table for all parsed chunks when their inferred extras agree (tags keys are merged),
    so the vectorised checks run once per batch instead of once per chunk."""
    if len(parts) < 2:
        return parts
    try:
        table = pa.concat_tables([t for _, t in parts], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return parts  # an unknown field with different types in different chunks
    return [([i for idx, _ in parts for i in idx], table)]


def _arr(table: pa.Table, name: str) -> pa.Array:
    return table.column(name).combine_chunks()


def _validate(t: pa.Table) -> tuple[np.ndarray, list[pa.Array]]:
    """Vectorised checks mirroring decode.validate; returns the rows that pass and the
    EVENT_SCHEMA columns (for all rows: callers filter)."""
    n = t.num_rows
    ok = np.ones(n, dtype=bool)

    def mask(cond: pa.Array) -> None:
        nonlocal ok
        ok &= pc.fill_null(cond, False).to_numpy(zero_copy_only=False)

    mask(pc.is_null(_arr(t, "usage")))
    eid = _arr(t, "event_id")
    mask(pc.and_(pc.greater_equal(pc.utf8_length(eid), 1), pc.less_equal(pc.utf8_length(eid), MAX_ID_CHARS)))

    ts_raw = _arr(t, "timestamp")
    if pa.types.is_integer(ts_raw.type):
        mask(pc.and_(pc.greater_equal(ts_raw, MIN_EPOCH_MS), pc.less(ts_raw, MAX_EPOCH_MS)))
        ts = pc.fill_null(ts_raw, MIN_EPOCH_MS).cast(TS)
    else:
        ms = []
        for i, s in enumerate(ts_raw.to_pylist()):
            try:
                ms.append(_timestamp(s))
            except BadRecord:
                ok[i] = False
                ms.append(MIN_EPOCH_MS)
        ts = pa.array(ms, pa.int64()).cast(TS)

    provider, model = _arr(t, "provider"), _arr(t, "model")
    mask(pc.greater(pc.utf8_length(provider), 0))
    mask(pc.greater(pc.utf8_length(model), 0))
    provider, model = _normalise_names(provider, model, ok)

    tokens = {c: pc.fill_null(_arr(t, c), 0) for c in TOKEN_COLUMNS}
    for c in TOKEN_COLUMNS:
        mask(pc.and_(pc.greater_equal(tokens[c], 0), pc.less_equal(tokens[c], MAX_TOKENS)))
    inp, out = tokens["input_tokens"], tokens["output_tokens"]
    mask(pc.less_equal(pc.add(tokens["cached_input_tokens"], tokens["cache_write_tokens"]), inp))
    mask(pc.less_equal(tokens["cache_write_1h_tokens"], tokens["cache_write_tokens"]))
    mask(pc.less_equal(tokens["reasoning_tokens"], out))

    labels = {}
    for c in ATTRIBUTION_COLUMNS:
        a = _arr(t, c)
        a = pc.if_else(pc.equal(a, ""), pa.scalar(None, pa.string()), a)
        mask(pc.or_kleene(pc.is_null(a), pc.less_equal(pc.utf8_length(a), MAX_LABEL_CHARS)))
        labels[c] = a

    status = _default(_arr(t, "status"), "success")
    mask(pc.is_in(status, pa.array(["success", "error"])))
    request_type = _default(_arr(t, "request_type"), "chat")
    code = _arr(t, "status_code")
    mask(pc.or_kleene(pc.is_null(code), pc.and_(pc.greater_equal(code, 100), pc.less_equal(code, 599))))
    nums = {}
    for c in ("latency_ms", "cost_usd"):
        a = _arr(t, c)
        mask(pc.or_kleene(pc.is_null(a), pc.and_(pc.greater_equal(a, 0), pc.less(a, 1e12))))
        nums[c] = a
    images, duration = _arr(t, "images"), _arr(t, "duration_seconds")
    mask(pc.or_kleene(pc.is_null(images), pc.and_(pc.greater_equal(images, 0), pc.less_equal(images, MAX_IMAGES))))
    mask(pc.or_kleene(pc.is_null(duration),
                      pc.and_(pc.greater_equal(duration, 0), pc.less_equal(duration, MAX_DURATION_S))))  # fmt: skip
    tags = _tags(t, ok)
    cols = [
        eid, ts, provider, model, *[tokens[c] for c in TOKEN_COLUMNS], *[labels[c] for c in ATTRIBUTION_COLUMNS],
        tags, request_type, pc.fill_null(_arr(t, "batch"), False), status,
        pc.if_else(pc.is_null(code), pa.scalar(None, pa.int64()), code).cast(pa.int32(), safe=False),
        nums["latency_ms"], pc.fill_null(_arr(t, "cache_hit"), False), images, duration, nums["cost_usd"],
        pa.repeat(pa.scalar(FORMAT), n),
    ]  # fmt: skip
    return ok, cols


def _default(a: pa.Array, value: str) -> pa.Array:
    return pc.if_else(pc.or_kleene(pc.is_null(a), pc.equal(a, "")), pa.scalar(value), a)


def _normalise_names(provider: pa.Array, model: pa.Array, ok: np.ndarray) -> tuple[pa.Array, pa.Array]:
    """canonical_provider + split_model, once per distinct (provider, model) pair."""
    pd_, md_ = provider.dictionary_encode(), model.dictionary_encode()
    pi = pc.fill_null(pd_.indices, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    mi = pc.fill_null(md_.indices, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    pairs, inverse = np.unique(pi * max(len(md_.dictionary), 1) + mi, return_inverse=True)
    pv, mv = pd_.dictionary.to_pylist(), md_.dictionary.to_pylist()
    out_p, out_m = [], []
    for code in pairs.tolist():
        p, m = pv[code // max(len(mv), 1)] if pv else "", mv[code % max(len(mv), 1)] if mv else ""
        if p and m:
            p, m = split_model(canonical_provider(p), m)
        out_p.append(p or "")
        out_m.append(m or "")
    idx = pa.array(inverse.reshape(-1))
    return pa.array(out_p).take(idx), pa.array(out_m).take(idx)


def _tags(t: pa.Table, ok: np.ndarray) -> pa.Array:
    """The inferred `tags` struct → map<string, string>, keys sorted (as decode does). Rows with
    a non-string tag value go to the reference path."""
    n = t.num_rows
    map_type = EVENT_SCHEMA.field("tags").type
    if "tags" not in t.column_names or pa.types.is_null(t.schema.field("tags").type):
        return pa.nulls(n, map_type)
    s = _arr(t, "tags")
    if not pa.types.is_struct(s.type):
        ok &= ~pc.is_valid(s).to_numpy(zero_copy_only=False)
        return pa.nulls(n, map_type)
    rows, keys, vals = [], [], []
    names = sorted(s.type.field(i).name for i in range(s.type.num_fields))
    for name in names:
        child = s.field(name)
        present = pc.is_valid(child).to_numpy(zero_copy_only=False)
        if not pa.types.is_string(child.type):
            ok &= ~present  # 3, true, nested objects: decode.py renders or rejects them
            continue
        where = np.flatnonzero(present)
        rows.append(where)
        keys.append(np.full(len(where), name, dtype=object))
        vals.append(child.take(pa.array(where)))
    valid = pc.is_valid(s).to_numpy(zero_copy_only=False)
    if not rows:
        offsets = np.zeros(n + 1, dtype=np.int32)
        return pa.MapArray.from_arrays(pa.array(offsets), pa.array([], pa.string()), pa.array([], pa.string()),
                                       type=map_type, mask=pa.array(~valid))  # fmt: skip
    r = np.concatenate(rows)
    order = np.argsort(r, kind="stable")  # names were visited sorted: stable keeps key order
    counts = np.bincount(r, minlength=n)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    k = pa.array(np.concatenate(keys)[order], pa.string())
    v = pa.concat_arrays(vals).take(pa.array(order))
    return pa.MapArray.from_arrays(pa.array(offsets), k, v, type=map_type, mask=pa.array(~valid))
