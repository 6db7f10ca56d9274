"""The Prometheus exporter: /metrics rendered from the rollups at scrape time (contract 5).

Counters are totals from the lake (sums over the per-day rollup tables), so they survive restarts
and agree with ``spendlake query`` to the cent; a ``reprice`` that lowers a total shows up as a
counter reset, which ``rate()`` and ``increase()`` already handle. A scrape reads only the small
per-day tables (``rollup_labels``, ``rollup_virtual_keys``), the budget usage and the last hour of
minute rollups, so its cost follows the number of label sets and budgets, not of events.

Labels stay bounded: cost and requests by provider, model, team, customer, status; tokens by
provider, model, token_type; cost parts by provider, model, part; virtual keys only for keys that
have a budget or are among the top N by spend.

Two writers share one response:

- The families read from the DuckDB state, in one transaction (lake totals, per virtual key, per
  budget: ~75,000 series with 10,000 budgeted keys), are written here directly in the text
  exposition format (0.0.4), a family at a time from whole Arrow columns: one query per table,
  then Arrow kernels escape the label columns, format the values (shortest round-trip, as
  ``repr``) and join name, labels and value into one column of lines, whose data buffer *is* the
  family's text. No Python object is made per series (prometheus-client's per-sample objects cost
  ~40 µs each, 4 s a scrape, measured; per-row f-strings ~150 ms). The label sets of budgets and
  the HELP/TYPE headers are built once per hierarchy (the fingerprint leaves names out, and
  ``owner_name`` is a label, so the cache follows the Hierarchy object itself).
- The pipeline health the running process knows (consumer lag, last flush, last successful
  rollup, failed rollups) and the process itself (``process_*``: CPU, memory, open fds, start
  time) come from prometheus-client collectors on a registry of the exporter's own, appended with
  ``generate_latest``. The two sets of names are disjoint (tests/test_metrics_exposition.py).
  (The HTTP intake's process-local counters stay hand-written: see ``HealthCollector``.)
"""

from __future__ import annotations

import gc
import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache, partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from aggregator.budgets import status_table
from aggregator.hierarchy import Hierarchy
from aggregator.rollup import COST_BUCKETS, LABEL_DIMS, bucket_column

log = logging.getLogger("spendlake.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TOKEN_TYPES = {
    "input": "input_tokens", "output": "output_tokens", "cached_input": "cached_input_tokens",
    "cache_write": "cache_write_tokens", "cache_write_1h": "cache_write_1h_tokens", "reasoning": "reasoning_tokens",
}  # fmt: skip
PARTS = {
    "input": "cost_input_usd", "cached_input": "cost_cached_input_usd", "cache_write": "cost_cache_write_usd",
    "output": "cost_output_usd", "reasoning": "cost_reasoning_usd",
}  # fmt: skip
BUDGET_GAUGES = (
    ("spendlake_budget_usage_usd", "Spend in the budget's current period (descendants included)", "current_usage"),
    ("spendlake_budget_limit_usd", "The budget's limit", "max_limit"),
    ("spendlake_budget_utilization_ratio", "usage / limit", "utilization"),
    ("spendlake_budget_reset_timestamp_seconds", "When the budget resets", "reset_at"),
)  # fmt: skip
# Also per budget, opt-in ([metrics] budget_details = true): with 10,000 budgeted keys they would
# add 30,000 series a scrape that dashboards rarely need (`spendlake budgets` has them all).
BUDGET_DETAILS = (
    ("spendlake_budget_period_start_timestamp_seconds", "Start of the current period", "period_start"),
    ("spendlake_budget_burn_rate_usd_per_hour", "Spend per hour over the last hour", "burn_rate_usd_per_hour"),
    ("spendlake_budget_projected_exhaustion_timestamp_seconds",
     "When the limit is reached at the current burn rate (absent: not within a century)", "projected_exhaustion_at"),
)  # fmt: skip
BUDGET_LABELS = ("budget_id", "owner_type", "owner_id", "owner_name", "reset_duration")
VK_LABELS = ("virtual_key", "team", "customer")

# Every sum a scrape needs from rollup_labels, in one pass (one hash aggregation over days x label
# sets); the (provider, model) families are summed from its few thousand rows in Arrow.
_PM_SUMS = ("requests", "unpriced", "cost_usd", *TOKEN_TYPES.values(), *PARTS.values(),
            *(bucket_column(b) for b in COST_BUCKETS))  # fmt: skip
TOTALS_SQL = (f"SELECT {', '.join(LABEL_DIMS)}, " + ", ".join(f"sum({c})::DOUBLE AS {c}" for c in _PM_SUMS)
              + f" FROM rollup_labels GROUP BY ALL ORDER BY {', '.join(LABEL_DIMS)}")  # fmt: skip
VK_SQL = """SELECT virtual_key, team, customer, sum(cost_usd)::DOUBLE AS cost_usd, sum(requests)::DOUBLE AS requests
            FROM rollup_virtual_keys GROUP BY ALL"""


def _esc(value: object) -> str:
    return "" if value is None else str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: Sequence[str], values: Sequence[object]) -> str:
    return "{" + ",".join(f'{n}="{_esc(v)}"' for n, v in zip(names, values)) + "}"


def _num(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


@lru_cache(maxsize=None)
def _header(name: str, kind: str, help_: str) -> bytes:
    return f"# HELP {name} {help_}\n# TYPE {name} {kind}\n".encode()


def _family(out: list[Any], name: str, kind: str, help_: str, samples: Iterable[str]) -> None:
    """A small family, written a sample at a time."""
    out.append(_header(name, kind, help_) + "".join(samples).encode())


# --- whole columns ----------------------------------------------------------------------------


def _array(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _escaped(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Label values as the exposition writes them (``_esc`` on a column): backslash, double
    quote and newline escaped, NULL as the empty string."""
    s = pc.fill_null(_array(col).cast(pa.string()), "")
    for raw, escaped in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n")):
        s = pc.replace_substring(s, raw, escaped)
    return s


def _label_column(names: Sequence[str], cols: Sequence[pa.Array | pa.ChunkedArray]) -> pa.Array:
    """``{name="value",…}`` for every row (``_labels`` on columns)."""
    parts: list[Any] = []
    for i, (name, col) in enumerate(zip(names, cols)):
        parts += [("{" if i == 0 else ",") + name + '="', _escaped(col), '"']
    return pc.binary_join_element_wise(*parts, "}", "")


def _number_column(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Sample values as text (``_num`` on a column): the shortest string that reads back as the
    same double (Arrow writes 1 where repr writes 1.0, 1e-07 as 1e-7: the same numbers), with
    the exposition's NaN, +Inf and -Inf."""
    v = _array(values).cast(pa.float64())
    s = v.cast(pa.string())
    if not pc.all(pc.is_finite(v)).as_py():
        s = pc.if_else(pc.is_nan(v), "NaN", pc.if_else(pc.equal(v, math.inf), "+Inf",
                                                       pc.if_else(pc.equal(v, -math.inf), "-Inf", s)))  # fmt: skip
    return s


def _text(lines: pa.Array) -> Any:
    """The bytes of a string column without nulls, back to back: its data buffer (no copy)."""
    if len(lines) == 0:
        return b""
    if lines.null_count:  # a NULL would silently drop its line
        raise ValueError("a metric line is NULL")
    _, offsets, data = lines.buffers()
    o = np.frombuffer(offsets, dtype=np.int64 if pa.types.is_large_string(lines.type) else np.int32)
    start, end = int(o[lines.offset]), int(o[lines.offset + len(lines)])
    return b"" if data is None else data.slice(start, end - start)


def _samples(name: str, labels: pa.Array, values: pa.Array | pa.ChunkedArray) -> Any:
    """``name{labels} value\\n`` for every row, as one bytes-like object."""
    return _text(pc.binary_join_element_wise(name, labels, " ", _number_column(values), "\n", ""))


class _Memo:
    """What was built from some columns at the last scrape, reused while the columns are equal
    (label sets of the lake totals and of virtual keys change rarely; budget limits and reset
    times once a period). One slot, replaced whole, so concurrent scrapes at worst both build."""

    def __init__(self) -> None:
        self._slot: tuple[tuple[pa.Array, ...], Any] | None = None

    def get(self, key: Sequence[pa.Array], build: Callable[[], Any]) -> Any:
        slot = self._slot
        if slot is not None and len(slot[0]) == len(key) and all(a is b or a.equals(b) for a, b in zip(slot[0], key)):
            return slot[1]
        value = build()
        self._slot = (tuple(key), value)
        return value


# --- the process's own state, through prometheus-client ---------------------------------------


@dataclass
class Health:
    """What the running service knows that the lake does not."""

    last_flush_at: float | None = None  # epoch seconds
    lag: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> records behind
    rollup_at: float | None = None  # the last successful rollup update
    rollup_failures: int = 0  # rollup rounds (the update or the jobs after it) that raised, since start
    lock: threading.Lock = field(default_factory=threading.Lock)
    intake: Any = None  # ingest.intake.IntakeStats, when serve runs the HTTP intake


class HealthCollector(Collector):
    """Pipeline health as prometheus-client families: consumer lag, when the last batch landed
    and the last rollup succeeded, and failed rollups (process-local: from 0 at each start).

    The intake's counters (also process-local) stay written by hand in ``Exporter._intake``:
    prometheus-client writes label names sorted (``code`` before ``endpoint``), and their lines
    are matched as text elsewhere (tests/test_intake.py)."""

    def __init__(self, health: Health) -> None:
        self.health = health

    def describe(self) -> Iterator[Metric]:  # the names, so the registry refuses a clash
        yield from self._families(Health(last_flush_at=0.0, rollup_at=0.0))

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self.health)

    @staticmethod
    def _families(health: Health) -> Iterator[Metric]:
        with health.lock:
            lag, failures = sorted(health.lag.items()), health.rollup_failures
            flushed, rolled = health.last_flush_at, health.rollup_at
        g = GaugeMetricFamily("spendlake_consumer_lag_records", "Records not yet consumed",
                              labels=("topic", "partition"))  # fmt: skip
        for (topic, partition), n in lag:
            g.add_metric((topic, str(partition)), n)
        yield g
        if flushed is not None:
            yield GaugeMetricFamily("spendlake_last_flush_timestamp_seconds", "Last batch landed in the lake", flushed)
        if rolled is not None:
            yield GaugeMetricFamily("spendlake_rollup_last_update_timestamp_seconds", "Last successful rollup update",
                                    rolled)  # fmt: skip
        yield CounterMetricFamily(
            "spendlake_rollup_failures_total",
            "Failed rollup rounds (the update or the alert rules after it) since the process started", failures)


def default_registry(health: Health | None) -> CollectorRegistry:
    """The exporter's own prometheus-client registry: ``process_*`` (prometheus-client's process
    collector: CPU seconds, resident and virtual memory, open and max fds, start time; Linux)
    and, with a ``health``, the pipeline health collector."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    if health is not None:
        registry.register(HealthCollector(health))
    return registry


# --- the exporter -----------------------------------------------------------------------------


class Exporter:
    """Renders /metrics from a DuckDB connection holding the rollup state, then the registry's
    collectors."""

    def __init__(
        self,
        connect: Callable[[], duckdb.DuckDBPyConnection],
        hierarchy: Hierarchy | None = None,
        health: Health | None = None,
        top_virtual_keys: int = 20,
        budget_details: bool = False,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.connect = connect  # a fresh cursor per scrape (scrapes run on the HTTP threads)
        self.gauges = BUDGET_GAUGES + (BUDGET_DETAILS if budget_details else ())
        self._labels: dict[tuple, str] = {}  # small families' label sets seen before -> their rendered {…}
        self.hierarchy = hierarchy
        self.health = health
        self.top_virtual_keys = int(top_virtual_keys)
        self.registry = registry if registry is not None else default_registry(health)
        self._budget_cache: tuple[Hierarchy | None, pa.Array, pa.Array] | None = None
        self._memo: dict[str, _Memo] = {}
        self._budget_static()  # now, not on the first scrape

    def _budget_static(self) -> tuple[Hierarchy | None, pa.Array, pa.Array]:
        """(hierarchy, label sets of its budgets in its budget order, its budgeted keys), built
        once per Hierarchy (frozen: a new config is a new object)."""
        cached = self._budget_cache
        if cached is None or cached[0] is not self.hierarchy:
            budgets = self.hierarchy.budgets if self.hierarchy else ()
            labels = pa.array([_labels(BUDGET_LABELS, (b.id, b.owner_type, b.owner_id, b.owner_name, b.reset_duration))
                               for b in budgets], pa.string())  # fmt: skip
            keys = sorted({b.owner_id for b in budgets if b.owner_type == "virtual_key"})
            cached = self._budget_cache = (self.hierarchy, labels, pa.array(keys, pa.string()))
        return cached

    def _memoized(self, slot: str, key: Sequence[pa.Array], build: Callable[[], Any]) -> Any:
        memo = self._memo.get(slot)
        if memo is None:
            memo = self._memo.setdefault(slot, _Memo())
        return memo.get(key, build)

    def _label(self, names: Sequence[str], values: Sequence[object]) -> str:
        key = (names, *values)
        hit = self._labels.get(key)
        if hit is None:
            if len(self._labels) > 100_000:
                self._labels.clear()
            hit = self._labels[key] = _labels(names, values)
        return hit

    def render(self) -> bytes:
        """One scrape. The cyclic garbage collector is paused while it runs: a render makes
        ~10^5 short-lived objects, enough to set off a full collection over everything the process
        holds in the middle of the scrape (measured with bench/metrics.py on a quiet machine: p95
        112-119 ms with it, 78 ms without; p50 unchanged). Nothing here makes cycles; the
        collector runs again afterwards, on the process's normal schedule."""
        was_on = gc.isenabled()
        gc.disable()
        try:
            return self._render()
        finally:
            if was_on:
                gc.enable()

    def _render(self) -> bytes:
        con = self.connect()
        out: list[Any] = []  # bytes and Arrow buffers, joined once
        try:
            con.execute("BEGIN TRANSACTION")  # one consistent snapshot for the whole scrape
            landed = self._totals(con, out)
            self._virtual_keys(con, out)
            self._budgets(con, out)
            self._lake_health(con, out, landed)
            con.execute("COMMIT")
        finally:
            con.close()
        if self.health is not None and self.health.intake is not None:
            self._intake(self.health.intake, out)
        out.append(generate_latest(self.registry))
        return b"".join(out)

    def _totals(self, con: duckdb.DuckDBPyConnection, out: list[Any]) -> float:
        """The families summed from rollup_labels; returns the events landed (all requests)."""
        t = con.sql(TOTALS_SQL).to_arrow_table()
        dims = [_array(t.column(d)) for d in LABEL_DIMS]
        labels = self._memoized("labels", dims, partial(_label_column, LABEL_DIMS, dims))
        out.append(_header("spendlake_cost_usd_total", "counter", "Spend in USD, from the lake (each event once)"))
        out.append(_samples("spendlake_cost_usd_total", labels, t.column("cost_usd")))
        out.append(_header("spendlake_requests_total", "counter", "LLM requests, from the lake (each event once)"))
        out.append(_samples("spendlake_requests_total", labels, t.column("requests")))
        # By (provider, model): a few series per model, summed here from the label sets' rows.
        # (Team-level token counts are one `spendlake query` away; per team they were
        # 6 x teams x models series a scrape.)
        pm = (t.group_by(["provider", "model"], use_threads=False).aggregate([(c, "sum") for c in _PM_SUMS])
              .sort_by([("provider", "ascending"), ("model", "ascending")]))  # fmt: skip
        keys = list(zip(pm.column("provider").to_pylist(), pm.column("model").to_pylist()))
        a = {c: pm.column(f"{c}_sum").to_pylist() for c in _PM_SUMS}
        priced = [n - u for n, u in zip(a["requests"], a["unpriced"])]
        pmn = ("provider", "model")
        tnames = ("provider", "model", "token_type")
        _family(out, "spendlake_tokens_total", "counter", "Tokens by type (input and output include their sub-kinds)",
                (f"spendlake_tokens_total{self._label(tnames, (*k, t))} {_num(a[col][i])}\n"
                 for i, k in enumerate(keys) for t, col in TOKEN_TYPES.items()))  # fmt: skip
        _family(out, "spendlake_cost_part_usd_total", "counter", "Spend in USD by cost part",
                (f"spendlake_cost_part_usd_total{self._label((*pmn, 'part'), (*k, part))} {_num(a[col][i])}\n"
                 for i, k in enumerate(keys) for part, col in PARTS.items()))  # fmt: skip
        _family(out, "spendlake_unpriced_requests_total", "counter", "Requests of models with no price (cost unknown)",
                (f"spendlake_unpriced_requests_total{self._label(pmn, k)} {_num(a['unpriced'][i])}\n"
                 for i, k in enumerate(keys)))  # fmt: skip
        hist: list[str] = []
        for i, k in enumerate(keys):
            base = self._label(pmn, k)[1:-1]
            for b in COST_BUCKETS:
                hist.append(f'spendlake_request_cost_usd_bucket{{{base},le="{b:g}"}} {_num(a[bucket_column(b)][i])}\n')
            hist.append(f'spendlake_request_cost_usd_bucket{{{base},le="+Inf"}} {_num(priced[i])}\n')
            hist.append(f"spendlake_request_cost_usd_count{{{base}}} {_num(priced[i])}\n")
            hist.append(f"spendlake_request_cost_usd_sum{{{base}}} {_num(a['cost_usd'][i])}\n")
        _family(out, "spendlake_request_cost_usd", "histogram", "Cost of one request in USD (priced requests)", hist)
        return float(sum(a["requests"]))

    def _virtual_keys(self, con: duckdb.DuckDBPyConnection, out: list[Any]) -> None:
        """Keys with a budget and the top N by spend (the top chosen in Arrow: a DuckDB CTE or
        window for it took longer than the whole selection here)."""
        _, _, budgeted = self._budget_static()
        t = con.sql(VK_SQL).to_arrow_table()
        keys = t.column("virtual_key")
        keep = pc.is_in(keys, value_set=budgeted)
        if self.top_virtual_keys > 0 and t.num_rows:
            per_key = t.group_by("virtual_key", use_threads=False).aggregate([("cost_usd", "sum")])
            top = pc.select_k_unstable(per_key, self.top_virtual_keys,
                                       [("cost_usd_sum", "descending"), ("virtual_key", "ascending")])  # fmt: skip
            keep = pc.or_(keep, pc.is_in(keys, value_set=per_key.column("virtual_key").take(top)))
        t = t.filter(keep).sort_by([(c, "ascending") for c in VK_LABELS])
        dims = [_array(t.column(c)) for c in VK_LABELS]
        labels = self._memoized("virtual_keys", dims, partial(_label_column, VK_LABELS, dims))
        out.append(_header("spendlake_virtual_key_cost_usd_total", "counter",
                           "Spend in USD per virtual key (keys with a budget, and the top N)"))  # fmt: skip
        out.append(_samples("spendlake_virtual_key_cost_usd_total", labels, t.column("cost_usd")))
        out.append(_header("spendlake_virtual_key_requests_total", "counter", "Requests per virtual key"))
        out.append(_samples("spendlake_virtual_key_requests_total", labels, t.column("requests")))

    def _budgets(self, con: duckdb.DuckDBPyConnection, out: list[Any]) -> None:
        hierarchy, labels, _ = self._budget_static()
        if hierarchy is None or not hierarchy.budgets:
            return
        table = status_table(con, hierarchy, datetime.now(UTC))  # rows in the hierarchy's budget order
        for name, help_, column in self.gauges:
            col = _array(table.column(column))
            out.append(_header(name, "gauge", help_))
            # the same values as at the last scrape (limits; reset times within a period): the same text
            out.append(self._memoized(name, [labels, col], partial(self._budget_samples, name, labels, col)))

    @staticmethod
    def _budget_samples(name: str, labels: pa.Array, col: pa.Array) -> Any:
        if pa.types.is_timestamp(col.type):  # epoch seconds; NULL (no such time): no sample
            seconds = pc.divide(col.cast(pa.int64()).cast(pa.float64()), 1000.0)
            if col.null_count:
                valid = col.is_valid()
                return _samples(name, labels.filter(valid), seconds.filter(valid))
            return _samples(name, labels, seconds)
        values = np.nan_to_num(col.to_numpy(zero_copy_only=False).astype(np.float64), nan=0.0)
        return _samples(name, labels, pa.array(values))

    def _lake_health(self, con: duckdb.DuckDBPyConnection, out: list[Any], landed: float) -> None:
        (dead,) = con.execute("SELECT coalesce(sum(rows), 0)::DOUBLE FROM dead_letter_files").fetchall()[0]
        _family(out, "spendlake_events_total", "counter", "Events that reached the lake, by result",
                [f'spendlake_events_total{{result="landed"}} {_num(landed)}\n',
                 f'spendlake_events_total{{result="dead_letter"}} {_num(dead)}\n'])  # fmt: skip
        self._alerts(con, out)

    @staticmethod
    def _intake(stats: Any, out: list[Any]) -> None:
        """The HTTP/OTLP intake's counters (process-local: they restart at 0 with serve)."""
        with stats.lock:
            requests, records = sorted(stats.requests.items()), sorted(stats.records.items())
            rejected, sizes, skipped = sorted(stats.rejected.items()), sorted(stats.bytes.items()), stats.skipped_spans
        _family(out, "spendlake_intake_requests_total", "counter", "Intake requests by endpoint and HTTP status",
                (f"spendlake_intake_requests_total{_labels(('endpoint', 'code'), (e, c))} {_num(n)}\n"
                 for (e, c), n in requests))
        _family(out, "spendlake_intake_records_total", "counter", "Records received by intake, accepted or rejected",
                (f"spendlake_intake_records_total{_labels(('endpoint', 'result'), k)} {_num(n)}\n" for k, n in records))
        _family(out, "spendlake_intake_rejected_total", "counter", "Rejected records by the field at fault",
                (f"spendlake_intake_rejected_total{_labels(('endpoint', 'reason'), k)} {_num(n)}\n" for k, n in rejected))
        _family(out, "spendlake_intake_spans_skipped_total", "counter", "OTLP spans without GenAI usage (not LLM calls)",
                [f"spendlake_intake_spans_skipped_total {_num(skipped)}\n"])
        _family(out, "spendlake_intake_received_bytes_total", "counter", "Request body bytes as received (before gzip)",
                (f"spendlake_intake_received_bytes_total{_labels(('endpoint',), (e,))} {_num(n)}\n" for e, n in sizes))  # fmt: skip

    @staticmethod
    def _alerts(con: duckdb.DuckDBPyConnection, out: list[Any]) -> None:
        """Alerting's outbox (alerting/outbox.py), when this state has one: counted from the
        tables, so the totals survive restarts."""
        try:
            alerts = con.execute("SELECT kind, severity, count(*) FROM alerts WHERE note IS NULL "
                                 "GROUP BY ALL ORDER BY ALL").fetchall()  # fmt: skip
            deliveries = con.execute("SELECT channel, state, count(*), sum(attempts) FROM deliveries "
                                     "GROUP BY ALL ORDER BY ALL").fetchall()  # fmt: skip
        except duckdb.CatalogException:
            return
        _family(out, "spendlake_alerts_total", "counter", "Alerts fired, by kind and severity",
                (f"spendlake_alerts_total{_labels(('kind', 'severity'), (k, s))} {_num(n)}\n" for k, s, n in alerts))
        _family(out, "spendlake_alerts_sent_total", "counter",
                "Alert deliveries by channel and result (delivered, failed for good)",
                (f"spendlake_alerts_sent_total{_labels(('channel', 'result'), (c, st))} {_num(n)}\n"
                 for c, st, n, _ in deliveries if st != "pending"))
        pending: dict[str, int] = {}
        attempts: dict[str, int] = {}
        for c, st, n, a in deliveries:
            pending[c] = pending.get(c, 0) + (n if st == "pending" else 0)
            attempts[c] = attempts.get(c, 0) + int(a or 0)
        _family(out, "spendlake_alerts_pending", "gauge", "Alert deliveries waiting to be sent or retried",
                (f"spendlake_alerts_pending{_labels(('channel',), (c,))} {_num(n)}\n" for c, n in sorted(pending.items())))
        _family(out, "spendlake_alert_delivery_attempts_total", "counter", "Send attempts, successful or not",
                (f"spendlake_alert_delivery_attempts_total{_labels(('channel',), (c,))} {_num(n)}\n"
                 for c, n in sorted(attempts.items())))  # fmt: skip


def serve_metrics(exporter: Exporter, host: str, port: int) -> ThreadingHTTPServer:
    """A small threaded HTTP server answering GET /metrics (and / with a pointer to it)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path.split("?")[0] != "/metrics":
                body, status, ctype = b"spendlake: see /metrics\n", 404 if self.path != "/" else 200, "text/plain"
            else:
                try:
                    body, status, ctype = exporter.render(), 200, CONTENT_TYPE
                except Exception as exc:  # a scrape must not kill the service
                    log.exception("scrape failed")
                    body, status, ctype = f"scrape failed: {type(exc).__name__}\n".encode(), 500, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
