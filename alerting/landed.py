"""Budget thresholds straight from a batch that just landed, before its rollup.

The rollup path (``Rules.evaluate`` after each rollup) is the source of truth, but a rollup under
load takes a second or more, and one already running makes a fresh flush wait for it. So each
landed batch is also checked on a thread of its own: its events not yet counted (anti-joined
with the rollup's ``seen`` hashes of their date, duplicates within the batch dropped) are added
to every budget's status read in the **same snapshot** (one read transaction), and the
thresholds that this crosses are recorded at once. Keys are the rollup path's, so whichever path
records a crossing first sends it and the other finds it recorded; if the batch was rolled up in
the meantime, its events are in ``seen`` and add nothing — never counted twice. A failure here
only loses the head start: the rollup path evaluates the same crossing moments later.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aggregator.budgets import BudgetUsage, status_table
from aggregator.hierarchy import Hierarchy
from alerting.outbox import Record
from alerting.rules import Rules

log = logging.getLogger("spendlake.alerts")

COLUMNS = ["event_id", "timestamp", "virtual_key", "team", "customer", "cost_usd", "ingested_at"]


class LandedWatch:
    def __init__(self, root: Path, hierarchy: Hierarchy, rules: Rules, cursor: Callable[[], duckdb.DuckDBPyConnection],
                 record: Callable[[list[Record]], Any]) -> None:  # fmt: skip
        self.root = root
        self.h = hierarchy
        self.rules = rules
        self.cursor = cursor
        self.record = record
        self.usage = BudgetUsage(hierarchy)
        self._queue: queue.Queue[list[str]] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alerts-landed", daemon=True)

    def start(self) -> None:
        if self.h.budgets:
            self._thread.start()

    def submit(self, paths: list[str]) -> None:
        """Lake-relative paths of event files just committed (called on the writer's thread)."""
        if self.h.budgets and paths:
            self._queue.put(paths)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        con = self.cursor()
        while not self._stop.is_set():
            try:
                paths = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            while True:  # everything queued meanwhile, in one check
                try:
                    paths = paths + self._queue.get_nowait()
                except queue.Empty:
                    break
            try:
                t0 = time.perf_counter()
                got = self.check(con, paths)
                took = time.perf_counter() - t0
                if got or took > 1.0:
                    log.info("landed batch of %d files checked in %.2f s: %d budget alerts", len(paths), took, len(got))
            except Exception:
                log.exception("checking a landed batch failed; the rollup's evaluation covers it")

    def check(self, con: duckdb.DuckDBPyConnection, paths: list[str], now: datetime | None = None) -> list[Record]:
        now = now or datetime.now(UTC)
        files = [str(self.root / p) for p in paths if p.startswith("events/")]
        if not files:
            return []
        landed = pa.concat_tables([pq.read_table(f, columns=COLUMNS) for f in files], promote_options="default")
        con.register("landed", landed)
        con.execute("BEGIN TRANSACTION")  # one snapshot: what `seen` holds is what the status counts
        try:
            fresh = con.sql(
                """SELECT epoch_ms("timestamp") AS ts, "timestamp"::DATE AS day, virtual_key, team, customer, cost_usd
                   FROM landed l
                   WHERE cost_usd IS NOT NULL AND NOT EXISTS (
                       SELECT 1 FROM seen s WHERE s.day = l."timestamp"::DATE AND s.h = md5_number(l.event_id))
                   QUALIFY row_number() OVER (PARTITION BY "timestamp"::DATE, event_id ORDER BY ingested_at) = 1"""
            ).to_arrow_table()
            status = status_table(con, self.h, now) if fresh.num_rows else None
        finally:
            con.execute("COMMIT")
            con.unregister("landed")
        if status is None:
            return []
        delta = self.usage._usage(fresh)
        if not delta.num_rows:
            return []
        adjusted = _add_usage(status, delta)
        if adjusted is None:
            return []
        records = self.rules.landed(con, adjusted, now)
        return list(self.record(records)) if records else []


def _add_usage(status: pa.Table, delta: pa.Table) -> pa.Table | None:
    """``status`` with ``delta``'s usage of each budget's current period added (None: nothing
    of the delta falls in a current period)."""
    starts = pc.cast(status.column("period_start"), pa.int64()).to_numpy()
    ids = status.column("budget_id").to_pylist()
    index = {(bid, int(start)): i for i, (bid, start) in enumerate(zip(ids, starts, strict=True))}
    extra = np.zeros(len(ids))
    hit = False
    for bid, start, usage in zip(*(delta.column(c).to_pylist() for c in ("budget_id", "period_start_ms", "usage")),
                                 strict=True):  # fmt: skip
        i = index.get((bid, int(start)))
        if i is not None:
            extra[i] += usage
            hit = True
    if not hit:
        return None
    used = status.column("current_usage").to_numpy() + extra
    limit = status.column("max_limit").to_numpy()
    out = status.set_column(status.schema.get_field_index("current_usage"), "current_usage", pa.array(used))
    out = out.set_column(out.schema.get_field_index("remaining"), "remaining", pa.array(limit - used))
    return out.set_column(out.schema.get_field_index("utilization"), "utilization", pa.array(used / limit))
