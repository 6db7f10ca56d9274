"""The cost engine: a table of usage events in, the cost columns of contract 2 out.

Rules (token conventions of contract 1: input includes cached and cache-write tokens,
cache_write_1h is a subset of cache_write, output includes reasoning):

- input part = (input - cached - cache_write) x input; cached part = cached x cache_read;
  cache-write part = (cache_write - 1h) x cache_write + 1h x cache_write_1h; output part =
  (output - reasoning) x output; reasoning part = reasoning x reasoning. Remainders are clamped
  at 0, so no part is ever negative.
- A missing price falls back: cache_read and cache_write -> input, cache_write_1h ->
  cache_write, reasoning -> output. A price still missing where tokens need it (e.g. an entry
  with no output price and output tokens > 0) makes the row unpriced, never $0.
- Long context: input_tokens > threshold_tokens (strictly) prices the whole request at the tier
  prices; a tier price the entry lacks falls back to the normal price of that part.
- batch=true uses batch_input / batch_output when the entry has them. In the long-context tier
  the entry's batch discount (batch_input / input, batch_output / output) scales the tier
  prices. Cache and reasoning prices have no batch variant in our entries and are not scaled.
- The version in force is the latest with effective_from <= timestamp; an event older than
  every version uses the earliest (a catalog gap must not make traffic unpriced).
- cache_hit=true: every part 0, cost 0, source "cache_hit" (the provider was never called).
- Unknown model (or missing price): NULL cost and parts, source "unpriced", unless
  reported_cost_usd is present: then cost = reported, parts NULL, source "reported".
  Policy "reported_first" takes the reported figure whenever there is one.

No Python runs per row: (provider, model) pairs are factorised and resolved once per unique pair,
the rest is NumPy arithmetic on whole columns.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pricing.schema import COST_SCHEMA, TS
from pricing.catalog import Catalog, PriceEntry

POLICIES = ("catalog_first", "reported_first")
SOURCES = pa.array(["catalog", "reported", "unpriced", "cache_hit"], pa.string())
CATALOG, REPORTED, UNPRICED, CACHE_HIT = range(4)
# Price columns per (entry, variant); variant = 2 * long_context + batch.
INPUT, CACHE_READ, CACHE_WRITE, CACHE_WRITE_1H, OUTPUT, REASONING = range(6)
_DENSE_PAIRS_MAX = 1 << 22  # dense (provider x model) lookup table up to 4M cells, else np.unique


def _or(value: float | None, fallback: float) -> float:
    return fallback if value is None else value


def _variants(e: PriceEntry) -> list[list[float]]:
    """The six part prices of ``e`` for (normal, batch, tier, tier+batch); NaN = not published."""
    nan = float("nan")
    base_in, base_out = _or(e.input, nan), _or(e.output, nan)
    in_ratio = e.batch_input / e.input if e.batch_input is not None and e.input else 1.0
    out_ratio = e.batch_output / e.output if e.batch_output is not None and e.output else 1.0
    rows = []
    for tier in (False, True):
        inp = _or(e.tier_input, base_in) if tier else base_in
        out = _or(e.tier_output, base_out) if tier else base_out
        cache_read = e.tier_cache_read if tier and e.tier_cache_read is not None else e.cache_read
        cache_write = (
            e.tier_cache_write if tier and e.tier_cache_write is not None else e.cache_write
        )
        write_1h = (
            e.tier_cache_write_1h
            if tier and e.tier_cache_write_1h is not None
            else e.cache_write_1h
        )
        for batch in (False, True):
            i, o = inp, out
            if batch and not tier:
                i, o = _or(e.batch_input, inp), _or(e.batch_output, out)
            elif batch:
                i, o = inp * in_ratio, out * out_ratio
            cw = _or(cache_write, i)
            rows.append([i, _or(cache_read, i), cw, _or(write_1h, cw), o, _or(e.reasoning, o)])
    return rows


def _tokens(events: pa.Table, name: str) -> np.ndarray:
    column = events.column(name)
    if column.null_count:
        raise ValueError(f"{name}: got {column.null_count} nulls, expected none (ingest fills 0)")
    return np.asarray(column.to_numpy(), dtype=np.float64)


def _pairs(events: pa.Table) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Per row, the index of its (provider, model) pair, and the unique pairs themselves.

    Both columns are dictionary-encoded so the per-row work is integer arithmetic; Python only
    sees the unique pairs."""
    prov = pc.dictionary_encode(events.column("provider").combine_chunks())
    model = pc.dictionary_encode(events.column("model").combine_chunks())
    pi = prov.indices.to_numpy().astype(np.int64)
    mi = model.indices.to_numpy().astype(np.int64)
    n_models = max(len(model.dictionary), 1)
    code = pi * n_models + mi
    if len(prov.dictionary) * n_models <= _DENSE_PAIRS_MAX:
        seen = np.zeros(len(prov.dictionary) * n_models, dtype=bool)
        seen[code] = True
        uniq = np.flatnonzero(seen)
        lookup = np.zeros(seen.size, dtype=np.int64)
        lookup[uniq] = np.arange(uniq.size)
        inverse = lookup[code]
    else:
        uniq, inverse = np.unique(code, return_inverse=True)
    providers, models = prov.dictionary.to_pylist(), model.dictionary.to_pylist()
    pairs = [(providers[c // n_models], models[c % n_models]) for c in uniq.tolist()]
    return inverse, pairs


def _entry_per_row(
    pair: np.ndarray, versions: list[list[PriceEntry]], ts_ms: np.ndarray
) -> tuple[np.ndarray, list[PriceEntry]]:
    """Per row, the index of the price entry in force (-1 = unknown model), and the entries."""
    entries: list[PriceEntry] = []
    first = np.full(len(versions), -1, dtype=np.int64)
    for u, found in enumerate(versions):
        if found:
            first[u] = len(entries)
            entries.extend(found)
    entry = first[pair]
    for u, found in enumerate(versions):
        if len(found) > 1:  # only models with price history pay for this, once per model
            rows = np.flatnonzero(pair == u)
            starts = np.array([int(e.effective_from.timestamp() * 1000) for e in found])
            pos = np.searchsorted(starts, ts_ms[rows], side="right") - 1
            entry[rows] = first[u] + np.maximum(pos, 0)
    return entry, entries


def price_table(
    events: pa.Table, catalog: Catalog, *, policy: str = "catalog_first"
) -> pa.Table:
    """Price every event; returns ``COST_SCHEMA`` columns, same row count and order as ``events``.

    ``events`` needs the EVENT_SCHEMA columns provider, model, timestamp, the six token columns,
    batch, cache_hit and reported_cost_usd; provider and model already normalised (names.py).
    """
    if policy not in POLICIES:
        raise ValueError(f"policy: got {policy!r}, expected one of {', '.join(POLICIES)}")
    n = events.num_rows
    pair, pairs = _pairs(events)
    ts_ms = events.column("timestamp").cast(TS).cast(pa.int64()).to_numpy()
    entry, entries = _entry_per_row(pair, [catalog.resolve(p, m) for p, m in pairs], ts_ms)

    inp, cached, write, write_1h, out, reasoning = (
        _tokens(events, name)
        for name in (
            "input_tokens", "cached_input_tokens", "cache_write_tokens",
            "cache_write_1h_tokens", "output_tokens", "reasoning_tokens",
        )
    )  # fmt: skip
    # One extra NaN "entry" at the end stands for unknown models, so -1 indexes it.
    table = np.array([_variants(e) for e in entries] + [[[np.nan] * 6] * 4]).reshape(-1, 6)
    threshold = np.array(
        [np.inf if e.threshold_tokens is None else e.threshold_tokens for e in entries]
        + [np.inf]
    )
    batch = events.column("batch").to_numpy(zero_copy_only=False).astype(np.int64)
    long_context = inp > threshold[entry]
    row = (entry % (len(entries) + 1)) * 4 + 2 * long_context + batch

    def part(tokens: np.ndarray, price: int) -> np.ndarray:
        # 0 tokens cost 0 even when the price is unknown (0 x NaN would be NaN).
        return np.where(tokens > 0, tokens * table[row, price], 0.0)

    parts = [
        part(np.maximum(inp - cached - write, 0), INPUT),
        part(cached, CACHE_READ),
        part(np.maximum(write - write_1h, 0), CACHE_WRITE) + part(write_1h, CACHE_WRITE_1H),
        part(np.maximum(out - reasoning, 0), OUTPUT),
        part(reasoning, REASONING),
    ]
    total = parts[0] + parts[1] + parts[2] + parts[3] + parts[4]
    priced = ~np.isnan(total)

    reported_col = events.column("reported_cost_usd")
    has_reported = reported_col.is_valid().to_numpy(zero_copy_only=False)
    reported = np.nan_to_num(reported_col.to_numpy(zero_copy_only=False).astype(np.float64))
    cache_hit = events.column("cache_hit").to_numpy(zero_copy_only=False)

    source = np.where(priced, CATALOG, np.where(has_reported, REPORTED, UNPRICED))
    if policy == "reported_first":
        source = np.where(has_reported, REPORTED, source)
    source = np.where(cache_hit, CACHE_HIT, source).astype(np.int8)

    is_catalog = source == CATALOG
    zero = source == CACHE_HIT
    cost = np.where(is_catalog, total, np.where(source == REPORTED, reported, 0.0))
    cost_null = source == UNPRICED
    part_null = ~(is_catalog | zero)

    def column(values: np.ndarray, null: np.ndarray) -> pa.Array:
        return pa.array(np.where(zero | null, 0.0, values), pa.float64(), mask=null)

    ids = pa.array([e.id for e in entries] + [None], pa.string())
    price_id = ids.take(pa.array(np.where(is_catalog, entry, len(entries))))
    arrays = [
        column(cost, cost_null),
        SOURCES.take(pa.array(source)),
        *(column(p, part_null) for p in parts),
        price_id,
    ]
    assert all(len(a) == n for a in arrays)
    return pa.Table.from_arrays(arrays, schema=COST_SCHEMA)
