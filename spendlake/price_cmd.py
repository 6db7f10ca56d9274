"""`spendlake price`: JSONL events on stdin → the same events with their cost on stdout.

Lines are decoded and validated exactly as ingest does, priced in batches of `CHUNK`, and written
in input order. A canonical event comes back with its own keys plus the cost fields (its own
`cost_usd`, if any, moves to `reported_cost_usd`); any other input shape (LiteLLM, Bifrost, ...)
comes back as the canonical event it maps to, so no prompt or response text is echoed. A bad line
is reported on stderr with its line number, field and value, and the run ends with exit code 1.

Every cost written (``cost_usd``, the ``cost_*_usd`` parts and ``reported_cost_usd``) is rounded to
12 significant digits (``pricing.money.round_cost``), so a sum of float prices prints as
``0.0045``, not ``0.0045000000000000005``. Ingest stores the unrounded float64; the two agree to
5e-12 relative.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, BinaryIO

import orjson
import pyarrow as pa

from ingest.decode import ROW_FIELDS, Row, decode
from ingest.errors import BadRecord
from ingest.schema import COST_SCHEMA, EVENT_SCHEMA
from pricing import Catalog, Override, price_table
from pricing.money import round_cost

CHUNK = 10_000
COST_KEYS = [f.name for f in COST_SCHEMA]
# The money fields of an output line: the cost columns pricing adds, and the emitter's own figure.
MONEY_KEYS = tuple(f.name for f in COST_SCHEMA if pa.types.is_floating(f.type)) + ("reported_cost_usd",)


def run(catalog: Catalog, policy: str, overrides: Sequence[Override], stdin: BinaryIO, stdout: BinaryIO) -> int:
    bad = 0
    pending: list[tuple[Row, dict[str, Any]]] = []
    for lineno, line in enumerate(stdin, start=1):
        if not line.strip():
            continue
        try:
            row = decode(line.rstrip(b"\r\n"))
        except BadRecord as exc:
            sys.stderr.write(f"spendlake price: line {lineno}: {exc}\n")
            bad += 1
            continue
        original = orjson.loads(line) if row[-1] == "spendlake.v1" else {}
        pending.append((row, original))
        if len(pending) >= CHUNK:
            _emit(pending, catalog, policy, overrides, stdout)
            pending = []
    _emit(pending, catalog, policy, overrides, stdout)
    stdout.flush()
    if bad:
        sys.stderr.write(f"spendlake price: {bad} line{'s' if bad != 1 else ''} could not be priced\n")
    return 1 if bad else 0


def _emit(
    pending: list[tuple[Row, dict[str, Any]]], catalog: Catalog, policy: str, overrides: Sequence[Override], out: BinaryIO
) -> None:
    if not pending:
        return
    cols = list(zip(*(row for row, _ in pending)))
    events = pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(cols, EVENT_SCHEMA)], schema=EVENT_SCHEMA)
    costs = price_table(events, catalog, policy=policy, overrides=overrides).to_pylist()
    for (row, original), cost in zip(pending, costs):
        if original:
            doc = dict(original)
            if "cost_usd" in doc:
                doc["reported_cost_usd"] = doc.pop("cost_usd")
        else:
            doc = _canonical(row)
        doc.update(cost)
        for key in MONEY_KEYS:
            if isinstance(doc.get(key), float):  # an int the emitter sent stays as it is
                doc[key] = round_cost(doc[key])
        out.write(orjson.dumps(doc) + b"\n")


def _canonical(row: Row) -> dict[str, Any]:
    doc = {k: v for k, v in zip(ROW_FIELDS, row) if v is not None}
    if "tags" in doc:
        doc["tags"] = dict(doc["tags"])
    doc["timestamp"] = _rfc3339(doc["timestamp"])
    return doc


def _rfc3339(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
