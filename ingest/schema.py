"""Arrow schemas of the lake (contract 2). Parquet is never written with an inferred schema.

`EVENT_FIELDS` are the canonical usage event (contract 1) after decoding; `COST_FIELDS` (owned by pricing/) are what
pricing adds; `SOURCE_FIELDS` say where a row came from. A lake row is all three, in that order.
"""

from __future__ import annotations

import pyarrow as pa

from pricing.schema import COST_FIELDS, COST_SCHEMA, TS  # noqa: F401 (COST_SCHEMA re-exported)

SCHEMA_VERSION = 1

TOKEN_COLUMNS = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
)
ATTRIBUTION_COLUMNS = ("virtual_key", "team", "customer", "user", "project")

EVENT_FIELDS: list[pa.Field] = [
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("timestamp", TS, nullable=False),
    pa.field("provider", pa.string(), nullable=False),
    pa.field("model", pa.string(), nullable=False),
    *[pa.field(name, pa.int64(), nullable=False) for name in TOKEN_COLUMNS],
    *[pa.field(name, pa.string()) for name in ATTRIBUTION_COLUMNS],
    pa.field("tags", pa.map_(pa.string(), pa.string())),
    pa.field("request_type", pa.string(), nullable=False),
    pa.field("batch", pa.bool_(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("status_code", pa.int32()),
    pa.field("latency_ms", pa.float64()),
    pa.field("cache_hit", pa.bool_(), nullable=False),
    pa.field("images", pa.int64()),  # images generated (request_type image) or sent; per-image prices
    pa.field("duration_seconds", pa.float64()),  # audio/video seconds; per-second prices
    pa.field("reported_cost_usd", pa.float64()),
    pa.field("input_format", pa.string(), nullable=False),  # which adapter decoded it
]


SOURCE_FIELDS: list[pa.Field] = [
    pa.field("source_topic", pa.string(), nullable=False),  # Kafka topic, or "file:<name>"
    pa.field("source_partition", pa.int32(), nullable=False),  # -1 for files
    pa.field("source_offset", pa.int64(), nullable=False),  # Kafka offset, or line number
    pa.field("ingested_at", TS, nullable=False),
]

EVENT_SCHEMA = pa.schema(EVENT_FIELDS)
LAKE_SCHEMA = pa.schema(
    EVENT_FIELDS + COST_FIELDS + SOURCE_FIELDS,
    metadata={b"spendlake.schema_version": str(SCHEMA_VERSION).encode()},
)

DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("source_topic", pa.string(), nullable=False),
        pa.field("source_partition", pa.int32(), nullable=False),
        pa.field("source_offset", pa.int64(), nullable=False),
        pa.field("key", pa.binary()),
        pa.field("raw", pa.binary(), nullable=False),
        pa.field("raw_bytes", pa.int64(), nullable=False),  # size before any truncation
        pa.field("field", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
        pa.field("failed_at", TS, nullable=False),
    ],
    metadata={b"spendlake.schema_version": str(SCHEMA_VERSION).encode()},
)
