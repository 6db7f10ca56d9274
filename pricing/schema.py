"""The cost columns pricing adds to every lake row (contract 2). Owned here so that pricing/ is
importable on its own; ingest/schema.py builds the full lake schema from it."""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("ms", tz="UTC")

COST_FIELDS: list[pa.Field] = [
    pa.field("cost_usd", pa.float64()),  # NULL when unpriced, never 0 for "unknown"
    pa.field("cost_source", pa.string(), nullable=False),
    pa.field("cost_input_usd", pa.float64()),
    pa.field("cost_cached_input_usd", pa.float64()),
    pa.field("cost_cache_write_usd", pa.float64()),
    pa.field("cost_output_usd", pa.float64()),
    pa.field("cost_reasoning_usd", pa.float64()),
    pa.field("price_id", pa.string()),
]

COST_SCHEMA = pa.schema(COST_FIELDS)
