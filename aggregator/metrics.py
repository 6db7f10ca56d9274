"""The Prometheus exporter: /metrics rendered from the rollups at scrape time (contract 5).

Counters are totals from the lake (sums over the per-day rollup tables), so they survive restarts
and agree with ``spendlake query`` to the cent; a ``reprice`` that lowers a total shows up as a
counter reset, which ``rate()`` and ``increase()`` already handle. A scrape reads only the small
per-day tables (``rollup_labels``, ``rollup_virtual_keys``), the budget usage and the last hour of
minute rollups, so its cost follows the number of label sets and budgets, not of events.

Labels stay bounded: cost and requests by provider, model, team, customer, status; tokens by
provider, model, token_type; cost parts by provider, model, part; virtual keys only for keys that
have a budget or are among the top N by spend.

The text exposition format (0.0.4) is written here directly, a family at a time from whole
columns: with 10,000 budgeted keys a scrape has ~100k samples, and prometheus-client's per-sample
objects cost ~40 µs each (4 s a scrape, measured); label prefixes of budgets are built once.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

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


def _family(out: list[str], name: str, kind: str, help_: str, samples: Iterable[str]) -> None:
    out.append(f"# HELP {name} {help_}\n# TYPE {name} {kind}\n")
    out.extend(samples)


@dataclass
class Health:
    """What the running service knows that the lake does not."""

    last_flush_at: float | None = None  # epoch seconds
    lag: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> records behind
    rollup_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    intake: Any = None  # ingest.intake.IntakeStats, when serve runs the HTTP intake


class Exporter:
    """Renders /metrics from a DuckDB connection holding the rollup state."""

    def __init__(
        self,
        connect: Callable[[], duckdb.DuckDBPyConnection],
        hierarchy: Hierarchy | None = None,
        health: Health | None = None,
        top_virtual_keys: int = 20,
        budget_details: bool = False,
    ) -> None:
        self.connect = connect  # a fresh cursor per scrape (scrapes run on the HTTP threads)
        self.gauges = BUDGET_GAUGES + (BUDGET_DETAILS if budget_details else ())
        self._labels: dict[tuple, str] = {}  # label sets seen before -> their rendered {…}
        self.hierarchy = hierarchy
        self.health = health
        self.top_virtual_keys = top_virtual_keys
        budgets = hierarchy.budgets if hierarchy else ()
        self.budgeted_keys = {b.owner_id for b in budgets if b.owner_type == "virtual_key"}
        names = ("budget_id", "owner_type", "owner_id", "owner_name", "reset_duration")
        self.budget_labels = [_labels(names, (b.id, b.owner_type, b.owner_id, b.owner_name, b.reset_duration))
                              for b in budgets]  # fmt: skip

    def _label(self, names: Sequence[str], values: Sequence[object]) -> str:
        key = (names, *values)
        hit = self._labels.get(key)
        if hit is None:
            if len(self._labels) > 1_000_000:
                self._labels.clear()
            hit = self._labels[key] = _labels(names, values)
        return hit

    def render(self) -> bytes:
        con = self.connect()
        out: list[str] = []
        try:
            con.execute("BEGIN TRANSACTION")  # one consistent snapshot for the whole scrape
            self._totals(con, out)
            self._virtual_keys(con, out)
            self._budgets(con, out)
            self._health(con, out)
            con.execute("COMMIT")
        finally:
            con.close()
        return "".join(out).encode()

    def _totals(self, con: duckdb.DuckDBPyConnection, out: list[str]) -> None:
        dims = ", ".join(LABEL_DIMS)
        rows = con.execute(f"""SELECT {dims}, sum(requests)::DOUBLE, sum(unpriced)::DOUBLE, sum(cost_usd)::DOUBLE
                               FROM rollup_labels GROUP BY ALL ORDER BY ALL""").fetchall()  # fmt: skip
        lab = [self._label(LABEL_DIMS, r[:5]) for r in rows]
        np_ = len(PARTS)
        _family(out, "spendlake_cost_usd_total", "counter", "Spend in USD, from the lake (each event once)",
                (f"spendlake_cost_usd_total{l} {r[7]!r}\n" for l, r in zip(lab, rows)))  # fmt: skip
        _family(out, "spendlake_requests_total", "counter", "LLM requests, from the lake (each event once)",
                (f"spendlake_requests_total{l} {r[5]!r}\n" for l, r in zip(lab, rows)))  # fmt: skip
        # tokens by (provider, model): six series per model (team-level token counts are one
        # `spendlake query` away; per team they were 6 x teams x models series a scrape)
        tsum = ", ".join(f"sum({c})::DOUBLE" for c in TOKEN_TYPES.values())
        tok_rows = con.execute(f"SELECT provider, model, {tsum} FROM rollup_labels GROUP BY ALL ORDER BY ALL").fetchall()
        tok = {tuple(r[:2]): r[2:] for r in tok_rows}
        psum = ", ".join(f"sum({c})::DOUBLE" for c in (
            "unpriced", "requests - unpriced", "cost_usd", *PARTS.values(), *(bucket_column(b) for b in COST_BUCKETS),
        ))  # fmt: skip
        pm = {(r[0], r[1]): r[2:] for r in con.execute(
            f"SELECT provider, model, {psum} FROM rollup_labels GROUP BY ALL ORDER BY ALL").fetchall()}  # fmt: skip
        tnames = ("provider", "model", "token_type")
        _family(out, "spendlake_tokens_total", "counter", "Tokens by type (input and output include their sub-kinds)",
                (f"spendlake_tokens_total{self._label(tnames, (*k, t))} {v!r}\n"
                 for k, vals in tok.items() for t, v in zip(TOKEN_TYPES, vals)))  # fmt: skip
        pmn = ("provider", "model")
        _family(out, "spendlake_cost_part_usd_total", "counter", "Spend in USD by cost part",
                (f"spendlake_cost_part_usd_total{self._label((*pmn, 'part'), (*k, part))} {_num(a[3 + i])}\n"
                 for k, a in pm.items() for i, part in enumerate(PARTS)))  # fmt: skip
        _family(out, "spendlake_unpriced_requests_total", "counter", "Requests of models with no price (cost unknown)",
                (f"spendlake_unpriced_requests_total{self._label(pmn, k)} {_num(a[0])}\n" for k, a in pm.items()))  # fmt: skip
        hist: list[str] = []
        for k, a in pm.items():
            base = ",".join(f'{n}="{_esc(v)}"' for n, v in zip(pmn, k))
            for i, b in enumerate(COST_BUCKETS):
                hist.append(f'spendlake_request_cost_usd_bucket{{{base},le="{b:g}"}} {_num(a[3 + np_ + i])}\n')
            hist.append(f'spendlake_request_cost_usd_bucket{{{base},le="+Inf"}} {_num(a[1])}\n')
            hist.append(f"spendlake_request_cost_usd_count{{{base}}} {_num(a[1])}\n")
            hist.append(f"spendlake_request_cost_usd_sum{{{base}}} {_num(a[2])}\n")
        _family(out, "spendlake_request_cost_usd", "histogram", "Cost of one request in USD (priced requests)", hist)

    def _virtual_keys(self, con: duckdb.DuckDBPyConnection, out: list[str]) -> None:
        rows = con.execute(
            """SELECT virtual_key, team, customer, sum(cost_usd)::DOUBLE, sum(requests)::DOUBLE
               FROM rollup_virtual_keys GROUP BY ALL ORDER BY ALL"""
        ).fetchall()
        totals: dict[str, float] = {}
        for vk, _, _, usd, _ in rows:
            totals[vk] = totals.get(vk, 0.0) + usd
        top = {vk for vk, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[: self.top_virtual_keys]}
        keep = top | self.budgeted_keys
        names = ("virtual_key", "team", "customer")
        kept = [(self._label(names, r[:3]), r) for r in rows if r[0] in keep]
        _family(out, "spendlake_virtual_key_cost_usd_total", "counter",
                "Spend in USD per virtual key (keys with a budget, and the top N)",
                (f"spendlake_virtual_key_cost_usd_total{l} {r[3]!r}\n" for l, r in kept))  # fmt: skip
        _family(out, "spendlake_virtual_key_requests_total", "counter", "Requests per virtual key",
                (f"spendlake_virtual_key_requests_total{l} {r[4]!r}\n" for l, r in kept))  # fmt: skip

    def _budgets(self, con: duckdb.DuckDBPyConnection, out: list[str]) -> None:
        if not self.budget_labels or self.hierarchy is None:
            return
        table = status_table(con, self.hierarchy, datetime.now(UTC))
        for name, help_, column in self.gauges:
            col = table.column(column)
            if pa.types.is_timestamp(col.type):
                values = col.cast("int64").to_numpy(zero_copy_only=False)
                valid = col.is_valid().to_numpy(zero_copy_only=False)
                samples = [f"{name}{l} {v / 1000!r}\n" for l, v, ok in zip(self.budget_labels, values.tolist(),
                                                                          valid.tolist()) if ok]  # fmt: skip
            else:
                values = np.nan_to_num(col.to_numpy(zero_copy_only=False).astype(np.float64), nan=0.0)
                samples = [f"{name}{l} {v!r}\n" for l, v in zip(self.budget_labels, values.tolist())]
            _family(out, name, "gauge", help_, samples)

    def _health(self, con: duckdb.DuckDBPyConnection, out: list[str]) -> None:
        landed, dead = con.execute(
            "SELECT (SELECT coalesce(sum(requests), 0) FROM rollup_labels)::DOUBLE, "
            "(SELECT coalesce(sum(rows), 0) FROM dead_letter_files)::DOUBLE"
        ).fetchall()[0]
        _family(out, "spendlake_events_total", "counter", "Events that reached the lake, by result",
                [f'spendlake_events_total{{result="landed"}} {_num(landed)}\n',
                 f'spendlake_events_total{{result="dead_letter"}} {_num(dead)}\n'])  # fmt: skip
        self._alerts(con, out)
        if self.health is None:
            return
        with self.health.lock:
            lag = dict(self.health.lag)
            flushed, rolled = self.health.last_flush_at, self.health.rollup_at
        _family(out, "spendlake_consumer_lag_records", "gauge", "Records not yet consumed",
                (f"spendlake_consumer_lag_records{_labels(('topic', 'partition'), (t, p))} {_num(n)}\n"
                 for (t, p), n in sorted(lag.items())))  # fmt: skip
        if flushed is not None:
            _family(out, "spendlake_last_flush_timestamp_seconds", "gauge", "Last batch landed in the lake",
                    [f"spendlake_last_flush_timestamp_seconds {_num(flushed)}\n"])  # fmt: skip
        if rolled is not None:
            _family(out, "spendlake_rollup_last_update_timestamp_seconds", "gauge", "Last rollup update",
                    [f"spendlake_rollup_last_update_timestamp_seconds {_num(rolled)}\n"])  # fmt: skip
        if self.health.intake is not None:
            self._intake(self.health.intake, out)

    @staticmethod
    def _intake(stats: Any, out: list[str]) -> None:
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
    def _alerts(con: duckdb.DuckDBPyConnection, out: list[str]) -> None:
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
