"""The cost engine: a table of usage events in, the cost columns of contract 2 out.

Token conventions (contract 1): input includes cached and cache-write tokens, cache_write_1h is
a subset of cache_write, output includes reasoning. The formula is LiteLLM's published one
(``generic_cost_per_token`` and ``batch_cost_calculator``), so a LiteLLM catalog gives LiteLLM's
numbers, with one principled difference: **a price the catalog lacks is never $0**.

- Parts: input = max(input - cached - cache_write, 0) x input price; cached = cached x
  cache_read; cache write = (cache_write - 1h) x cache_write + 1h x cache_write_1h; output =
  (output - reasoning) x output; reasoning = reasoning x reasoning price. Remainders are
  clamped at 0, so no part is ever negative.
- Missing prices: cache_read and cache_write fall back to the input price in force (a tier's
  input price inside a long-context tier), cache_write_1h to cache_write, reasoning to output
  (as the newest LiteLLM does; older ones billed missing cache prices at $0). An input or
  output price still missing where tokens need it makes the row unpriced, never $0.
- Tiers pick the whole request's prices by its input tokens (cached count): threshold tiers
  (the highest threshold strictly exceeded; at the threshold for xAI) and range tables; see
  ``PriceEntry``.
- batch=true (LiteLLM's batch rule): with a batch input price, uncached input at it and cached
  and cache-write tokens at their batch prices, or at the batch input price where none is
  listed; without one, half the regular prices. Output (reasoning included) at the batch
  output price, else half the output price. Batch prices have long-context thresholds of their
  own; the regular tiers do not apply. (Every major provider's batch API is 50% off list.)
- The version in force is the latest with effective_from <= timestamp; an event older than
  every version uses the earliest (a catalog gap must not make traffic unpriced).
- Overrides (negotiated rates per customer, team or virtual key; ``overrides.py``) replace the
  catalog's prices or discount its cost; the row's source is then "override".
- Unit prices: per_request on every request; images x the per-image price (output side for
  image generation, else input side); duration_seconds x the per-second price (input side for
  transcription, else output). An entry with unit prices only bills its units and ignores
  tokens; with no units recorded the row is unpriced. Units have no batch or tier variants.
- cache_hit=true: every part 0, cost 0, source "cache_hit" (the provider was never called).
- Unknown model (or missing price): NULL cost and parts, source "unpriced", unless
  reported_cost_usd is present: then cost = reported, parts NULL, source "reported".
  Policy "reported_first" takes the reported figure whenever there is one.

No Python runs per row: (provider, model) pairs are factorised and resolved once per unique pair,
the rest is NumPy arithmetic on whole columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pricing.catalog import EPOCH, UNIT_FIELDS, Catalog, PriceEntry, Tier
from pricing.overrides import SCOPES, Override
from pricing.schema import COST_SCHEMA, TS

POLICIES = ("catalog_first", "reported_first")
SOURCES = pa.array(["catalog", "reported", "unpriced", "cache_hit", "override"], pa.string())
CATALOG, REPORTED, UNPRICED, CACHE_HIT, OVERRIDE = range(5)
# The six part prices of a price vector.
INPUT, CACHE_READ, CACHE_WRITE, CACHE_WRITE_1H, OUTPUT, REASONING = range(6)
_DENSE_PAIRS_MAX = 1 << 22  # dense (provider x model) lookup table up to 4M cells, else np.unique
NAN = float("nan")


def _or(*values: float | None) -> float:
    """The first value that is not None; NaN (= not published) when all are."""
    for v in values:
        if v is not None:
            return v
    return NAN


def price_vectors(e: PriceEntry) -> list[list[float]]:
    """The entry's price vectors: [base, tier 1..K, batch 0..Kb]; NaN = not published.

    Batch vector k holds the batch prices of a request above k of the entry's batch thresholds.
    """
    i, o = _or(e.input), _or(e.output)
    cw = _or(e.cache_write, i)
    base = [i, _or(e.cache_read, i), cw, _or(e.cache_write_1h, cw), o, _or(e.reasoning, o)]
    rows = [base]
    for t in e.tiers:
        rows.append(_tier_vector(e, t))
    for k in range(len(e.batch_tiers) + 1):
        rows.append(_batch_vector(e, e.batch_tiers[:k], base))
    return rows


def _batch_vector(e: PriceEntry, crossed: tuple[Tier, ...], base: list[float]) -> list[float]:
    """LiteLLM's batch rule. Each batch price is the one of the highest crossed threshold that
    lists it, else the flat batch price. With a batch input price: uncached input at it, cached
    and cache-write tokens at their batch prices where listed, else at the batch input price.
    Without: half the regular prices (a cache write at half the regular cache-write price, or
    half the input price where that is 0 or unlisted). Output and reasoning: the batch output
    price, else half the regular output price. No 1-hour distinction in batch."""

    def pick(field: str, flat: float | None) -> float | None:
        for t in reversed(crossed):
            if getattr(t, field) is not None:
                return getattr(t, field)
        return flat

    bi, bo = pick("input", e.batch_input), pick("output", e.batch_output)
    bcr, bcw = pick("cache_read", e.batch_cache_read), pick("cache_write", e.batch_cache_write)
    if bi is not None:
        inputs = [bi, _or(bcr, bi), _or(bcw, bi), _or(bcw, bi)]
    elif e.input is not None and e.input != 0:
        write = (e.cache_write or e.input) / 2
        inputs = [e.input / 2, base[CACHE_READ] / 2, write, write]
    else:
        inputs = [_or(e.input)] * 4  # 0 (free) or NaN (unpriced)
    out = _or(bo, base[OUTPUT] / 2)
    return [*inputs, out, out]


def _tier_vector(e: PriceEntry, t: Tier) -> list[float]:
    if e.tier_kind == "range":
        i = _or(t.input)
        cw = _or(t.cache_write, i)
        o = _or(t.output, e.output)
        return [i, _or(t.cache_read, i), cw, _or(t.cache_write_1h, t.cache_write, i), o,
                _or(t.reasoning, t.output, e.reasoning, o)]  # fmt: skip
    # Threshold tier: the tier's price, else the entry's own price of that part, else (for
    # cache prices the entry never published) the price in force: the tier's input price.
    i = _or(t.input, e.input)
    o = _or(t.output, e.output)
    cw = _or(t.cache_write, e.cache_write, i)
    return [i, _or(t.cache_read, e.cache_read, i), cw, _or(t.cache_write_1h, e.cache_write_1h, cw), o,
            _or(t.reasoning, e.reasoning, o)]  # fmt: skip


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


def _factorize(codes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(unique codes, per-row index into them) for codes in [-1, size): a dense table, no sort."""
    seen = np.zeros(size + 1, dtype=bool)
    seen[codes + 1] = True
    uniq = np.flatnonzero(seen)
    lookup = np.zeros(size + 1, dtype=np.int64)
    lookup[uniq] = np.arange(uniq.size)
    return uniq - 1, lookup[codes + 1]


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


def _variant(entry: np.ndarray, entries: list[PriceEntry], inp: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """Per row, which price vector of its entry applies: 0 base, 1..K a tier, K+1+k batch
    (k = batch thresholds crossed)."""
    variant = np.zeros(len(entry), dtype=np.int64)
    for u, e in enumerate(entries):
        if not e.tiers and not e.batch_tiers:
            continue
        rows = np.flatnonzero(entry == u)
        if not rows.size:
            continue
        n = inp[rows]
        chosen = np.zeros(rows.size, dtype=np.int64)
        for k in range(len(e.tiers), 0, -1):  # backwards, so the first matching tier wins
            t = e.tiers[k - 1]
            chosen[(n > t.above) & (n <= t.up_to)] = k
        if e.tier_kind == "range":  # beyond every range: the last tier; no input: the base
            chosen[(chosen == 0) & (n > 0)] = len(e.tiers)
        crossed = np.zeros(rows.size, dtype=np.int64)
        for t in e.batch_tiers:
            crossed += n > t.above
        variant[rows] = np.where(batch[rows], len(e.tiers) + 1 + crossed, chosen)
    sizes = np.array([len(e.tiers) + 1 for e in entries] + [0], dtype=np.int64)
    plain = np.array([not e.batch_tiers for e in entries] + [True])[entry]
    return np.where(batch & plain, sizes[entry], variant)


def _apply_overrides(
    events: pa.Table,
    overrides: Sequence[Override],
    pair: np.ndarray,
    pairs: list[tuple[str, str]],
    resolved: list[list[PriceEntry]],
    ts_ms: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the index of the override that applies (-1 none) and its cost factor.

    Overrides are applied least specific first (customer, team, virtual key; older before
    newer), so the most specific one in force wins."""
    which = np.full(events.num_rows, -1, dtype=np.int64)
    order = sorted(range(len(overrides)), key=lambda k: (SCOPES.index(overrides[k].scope),
                                                         overrides[k].effective_from))  # fmt: skip
    owners: dict[str, tuple[np.ndarray, dict[str, int]]] = {}  # scope -> (codes, value -> code)
    for k in order:
        o = overrides[k]
        if o.scope not in events.column_names:
            continue
        if o.scope not in owners:  # one dictionary encoding per column; then integer compares
            enc = pc.dictionary_encode(events.column(o.scope).combine_chunks())
            codes = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
            owners[o.scope] = codes, {v: i for i, v in enumerate(enc.dictionary.to_pylist())}
        codes, lookup = owners[o.scope]
        if o.owner not in lookup:
            continue
        mask = codes == lookup[o.owner]
        if not o.always():
            mask &= o.in_force(ts_ms)
        if o.provider is not None:
            models = [(p, found[0].model if found else m) for (p, m), found in zip(pairs, resolved)]
            match = np.array([o.matches(p, m) for p, m in models] + [False])
            mask &= match[pair]
        which[mask] = k
    factor = np.array([1.0 - (o.discount or 0.0) for o in overrides] + [1.0])
    return which, factor[which]


def _units(events: pa.Table, name: str) -> np.ndarray:
    if name not in events.column_names:  # lake files written before the column existed
        return np.zeros(events.num_rows)
    return np.nan_to_num(events.column(name).to_numpy(zero_copy_only=False).astype(np.float64))


def _unit_costs(
    events: pa.Table, entries: list[PriceEntry], entry: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per row: the per-request/-image/-second cost on the input side and on the output side,
    and whether the row's entry has unit prices only (None when no entry has unit prices)."""
    if not any(getattr(e, f) is not None for e in entries for f in UNIT_FIELDS):
        return 0.0, 0.0, None  # type: ignore[return-value]

    def price(name: str) -> np.ndarray:
        return np.array([_or(getattr(e, name), 0.0) for e in entries] + [0.0])[entry]

    images, seconds = _units(events, "images"), _units(events, "duration_seconds")
    has = np.array([[e.output_per_image is not None, e.input_per_second is not None] for e in entries]
                   + [[False, False]])[entry]  # fmt: skip
    unit_in = (price("per_request") + np.where(has[:, 0], 0.0, images * price("input_per_image"))
               + seconds * price("input_per_second"))  # fmt: skip
    unit_out = images * price("output_per_image") + np.where(has[:, 1], 0.0, seconds * price("output_per_second"))
    # Unit-only entries bill their units; with no units recorded there is nothing they can
    # price, and the row stays unpriced rather than $0.
    only = np.array([not e.has_token_prices() for e in entries] + [False])[entry]
    per_request = np.array([e.per_request is not None for e in entries] + [False])[entry]
    return unit_in, unit_out, only & ((images > 0) | (seconds > 0) | per_request)


def price_table(
    events: pa.Table,
    catalog: Catalog,
    *,
    policy: str = "catalog_first",
    overrides: Sequence[Override] = (),
) -> pa.Table:
    """Price every event; returns ``COST_SCHEMA`` columns, same row count and order as ``events``.

    ``events`` needs the EVENT_SCHEMA columns provider, model, timestamp, the six token columns,
    batch, cache_hit and reported_cost_usd (and the attribution columns overrides name);
    provider and model already normalised (names.py).
    """
    if policy not in POLICIES:
        raise ValueError(f"policy: got {policy!r}, expected one of {', '.join(POLICIES)}")
    n = events.num_rows
    pair, pairs = _pairs(events)
    ts_ms = events.column("timestamp").cast(TS).cast(pa.int64()).to_numpy()
    resolved = [catalog.resolve(p, m) for p, m in pairs]
    entry, entries = _entry_per_row(pair, resolved, ts_ms)

    inp, cached, write, write_1h, out, reasoning = (
        _tokens(events, name)
        for name in (
            "input_tokens", "cached_input_tokens", "cache_write_tokens",
            "cache_write_1h_tokens", "output_tokens", "reasoning_tokens",
        )
    )  # fmt: skip
    batch = events.column("batch").to_numpy(zero_copy_only=False).astype(bool)

    which = np.full(n, -1, dtype=np.int64)
    factor = np.ones(n)
    if overrides:
        which, factor = _apply_overrides(events, overrides, pair, pairs, resolved, ts_ms)
        explicit = np.array([o.entry is not None for o in overrides] + [False])[which]
        if explicit.any():
            # Explicit negotiated prices are entries of their own, after the catalog's.
            ids = np.array([len(entries) + k for k in range(len(overrides))] + [-1])
            entries = entries + [o.entry or PriceEntry("", "", "", EPOCH) for o in overrides]
            entry = np.where(explicit, ids[which], entry)

    # One extra NaN vector at the end stands for unknown models, so entry -1 indexes it.
    vectors = [price_vectors(e) for e in entries]
    offsets = np.cumsum([0] + [len(v) for v in vectors])
    table = np.array([row for v in vectors for row in v] + [[NAN] * 6], dtype=np.float64)
    if entries:
        row = np.where(entry >= 0, offsets[np.maximum(entry, 0)] + _variant(entry, entries, inp, batch),
                       len(table) - 1)  # fmt: skip
    else:
        row = np.full(n, len(table) - 1, dtype=np.int64)

    def part(tokens: np.ndarray, price: int) -> np.ndarray:
        # 0 tokens cost 0 even when the price is unknown (0 x NaN would be NaN).
        return np.where(tokens > 0, tokens * table[row, price], 0.0) * factor

    parts = [
        part(np.maximum(inp - cached - write, 0), INPUT),
        part(cached, CACHE_READ),
        part(np.maximum(write - write_1h, 0), CACHE_WRITE) + part(write_1h, CACHE_WRITE_1H),
        part(np.maximum(out - reasoning, 0), OUTPUT),
        part(reasoning, REASONING),
    ]
    unit_in, unit_out, unit_only = _unit_costs(events, entries, entry)
    if unit_only is not None:
        # An entry priced only per request, image or second bills those; its token counts are
        # informational (as in LiteLLM's image and audio calculators).
        parts = [np.where(unit_only, np.nan_to_num(p), p) for p in parts]
        parts[0] = parts[0] + unit_in * factor
        parts[3] = parts[3] + unit_out * factor
    total = parts[0] + parts[1] + parts[2] + parts[3] + parts[4]
    priced = ~np.isnan(total)

    reported_col = events.column("reported_cost_usd")
    has_reported = reported_col.is_valid().to_numpy(zero_copy_only=False)
    reported = np.nan_to_num(reported_col.to_numpy(zero_copy_only=False).astype(np.float64))
    cache_hit = events.column("cache_hit").to_numpy(zero_copy_only=False)

    source = np.where(priced, np.where(which >= 0, OVERRIDE, CATALOG),
                      np.where(has_reported, REPORTED, UNPRICED))  # fmt: skip
    if policy == "reported_first":
        source = np.where(has_reported, REPORTED, source)
    source = np.where(cache_hit, CACHE_HIT, source).astype(np.int8)

    is_priced = (source == CATALOG) | (source == OVERRIDE)
    zero = source == CACHE_HIT
    cost = np.where(is_priced, total, np.where(source == REPORTED, reported, 0.0))
    cost_null = source == UNPRICED
    part_null = ~(is_priced | zero)

    def column(values: np.ndarray, null: np.ndarray) -> pa.Array:
        return pa.array(np.where(zero | null, 0.0, values), pa.float64(), mask=null)

    # price_id: the catalog entry; an explicit override's own id; "<override>|<entry>" for a
    # discounted catalog price. Built over the few distinct (entry, override) combinations.
    labels = [e.id for e in entries] + [None]
    combo = (np.where(entry >= 0, entry, len(entries)) * (len(overrides) + 1)
             + np.where(which >= 0, which, len(overrides)))  # fmt: skip
    uniq, inverse = _factorize(np.where(is_priced, combo, -1), (len(entries) + 1) * (len(overrides) + 1))
    names: list[str | None] = []
    for c in uniq.tolist():
        if c < 0:
            names.append(None)
            continue
        e, k = divmod(c, len(overrides) + 1)
        base = labels[e]
        if k == len(overrides):
            names.append(base)
        else:
            names.append(overrides[k].id if overrides[k].entry is not None else f"{overrides[k].id}|{base}")
    price_id = pa.array(names, pa.string()).take(pa.array(inverse))
    arrays = [
        column(cost, cost_null),
        SOURCES.take(pa.array(source)),
        *(column(p, part_null) for p in parts),
        price_id,
    ]
    assert all(len(a) == n for a in arrays)
    return pa.Table.from_arrays(arrays, schema=COST_SCHEMA)


