"""The Prometheus exporter: a custom collector that reads the rollups at scrape time (contract 5).

Counters are totals from the lake (sums over the per-day rollup tables), so they survive restarts
and agree with ``spendlake query`` to the cent; a ``reprice`` that lowers a total shows up as a
counter reset, which ``rate()`` and ``increase()`` already handle. Scrapes read only the small
per-day tables (``rollup_labels``, ``rollup_virtual_keys``), the budget usage and the last hour of
minute rollups: their cost follows the number of label sets and days, not the number of events.

Labels stay bounded: provider, model, team, customer, status, token_type, part; virtual keys only
for keys that have a budget or are among the top N by spend.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from aggregator.budgets import status
from aggregator.hierarchy import Hierarchy
from aggregator.rollup import COST_BUCKETS, LABEL_DIMS, bucket_column

log = logging.getLogger("spendlake.metrics")

TOKEN_TYPES = {
    "input": "input_tokens", "output": "output_tokens", "cached_input": "cached_input_tokens",
    "cache_write": "cache_write_tokens", "cache_write_1h": "cache_write_1h_tokens", "reasoning": "reasoning_tokens",
}  # fmt: skip
PARTS = {
    "input": "cost_input_usd", "cached_input": "cost_cached_input_usd", "cache_write": "cost_cache_write_usd",
    "output": "cost_output_usd", "reasoning": "cost_reasoning_usd",
}  # fmt: skip
BUDGET_LABELS = ["budget_id", "owner_type", "owner_id", "owner_name", "reset_duration"]


@dataclass
class Health:
    """What the running service knows that the lake does not."""

    last_flush_at: float | None = None  # epoch seconds
    lag: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> records behind
    rollup_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class SpendCollector(Collector):
    def __init__(
        self,
        connect: Callable[[], duckdb.DuckDBPyConnection],
        hierarchy: Hierarchy | None = None,
        health: Health | None = None,
        top_virtual_keys: int = 20,
    ) -> None:
        self.connect = connect  # a fresh cursor per scrape (scrapes run on the HTTP thread)
        self.hierarchy = hierarchy
        self.health = health
        self.top_virtual_keys = top_virtual_keys
        self.budgeted_keys = (
            {b.owner_id for b in hierarchy.budgets if b.owner_type == "virtual_key"} if hierarchy else set()
        )

    def describe(self) -> list:  # type: ignore[override]
        return []  # names are static; skip the registry's trial collect at registration

    def collect(self) -> Iterator:  # type: ignore[override]
        con = self.connect()
        try:
            con.execute("BEGIN TRANSACTION")  # one consistent snapshot for the whole scrape
            yield from self._totals(con)
            yield from self._virtual_keys(con)
            yield from self._budgets(con)
            yield from self._health(con)
            con.execute("COMMIT")
        finally:
            con.close()

    def _totals(self, con: duckdb.DuckDBPyConnection) -> Iterator:
        dims = ", ".join(LABEL_DIMS)
        sums = ", ".join(f"sum({c})" for c in (
            "requests", "unpriced", "cost_usd", *TOKEN_TYPES.values(), *PARTS.values(),
            *(bucket_column(b) for b in COST_BUCKETS),
        ))  # fmt: skip
        rows = con.execute(f"SELECT {dims}, {sums} FROM rollup_labels GROUP BY ALL ORDER BY ALL").fetchall()
        labels = list(LABEL_DIMS)
        cost = CounterMetricFamily("spendlake_cost_usd", "Spend in USD, from the lake (each event_id once)", labels=labels)
        reqs = CounterMetricFamily("spendlake_requests", "LLM requests, from the lake (each event_id once)", labels=labels)
        tokens = CounterMetricFamily("spendlake_tokens", "Tokens by type (input and output include their sub-kinds)",
                                     labels=[*labels[:4], "token_type"])  # fmt: skip
        parts = CounterMetricFamily("spendlake_cost_part_usd", "Spend in USD by cost part", labels=["provider", "model", "part"])
        unpriced = CounterMetricFamily("spendlake_unpriced_requests", "Requests of models with no price (cost unknown)",
                                       labels=["provider", "model"])  # fmt: skip
        hist = HistogramMetricFamily("spendlake_request_cost_usd", "Cost of one request in USD (priced requests)",
                                     labels=["provider", "model"])  # fmt: skip
        by_pm: dict[tuple[str, str], list[float]] = {}
        nt, np_ = len(TOKEN_TYPES), len(PARTS)
        for row in rows:
            lv = ["" if v is None else str(v) for v in row[:5]]
            n, unp, usd = row[5], row[6], row[7]
            tok = row[8 : 8 + nt]
            prt = row[8 + nt : 8 + nt + np_]
            buckets = row[8 + nt + np_ :]
            cost.add_metric(lv, float(usd))
            reqs.add_metric(lv, float(n))
            for (ttype, _), value in zip(TOKEN_TYPES.items(), tok):
                tokens.add_metric([*lv[:4], ttype], float(value))
            acc = by_pm.setdefault((lv[0], lv[1]), [0.0] * (3 + np_ + len(COST_BUCKETS)))
            acc[0] += unp
            acc[1] += n - unp
            acc[2] += usd
            for i, value in enumerate(prt):
                acc[3 + i] += value
            for i, value in enumerate(buckets):
                acc[3 + np_ + i] += value
        for (provider, model), acc in sorted(by_pm.items()):
            unpriced.add_metric([provider, model], acc[0])
            for i, part in enumerate(PARTS):
                parts.add_metric([provider, model, part], acc[3 + i])
            cumulative = [(f"{b:g}", acc[3 + np_ + i]) for i, b in enumerate(COST_BUCKETS)]
            hist.add_metric([provider, model], buckets=[*cumulative, ("+Inf", acc[1])], sum_value=acc[2])
        yield from (cost, reqs, tokens, parts, unpriced, hist)

    def _virtual_keys(self, con: duckdb.DuckDBPyConnection) -> Iterator:
        rows = con.execute(
            """SELECT virtual_key, team, customer, sum(cost_usd), sum(requests)
               FROM rollup_virtual_keys GROUP BY ALL"""
        ).fetchall()
        totals: dict[str, float] = {}
        for vk, _, _, usd, _ in rows:
            totals[vk] = totals.get(vk, 0.0) + float(usd)
        top = {vk for vk, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[: self.top_virtual_keys]}
        keep = top | self.budgeted_keys
        labels = ["virtual_key", "team", "customer"]
        cost = CounterMetricFamily("spendlake_virtual_key_cost_usd",
                                   "Spend in USD per virtual key (keys with a budget, and the top N)", labels=labels)  # fmt: skip
        reqs = CounterMetricFamily("spendlake_virtual_key_requests", "Requests per virtual key", labels=labels)
        for vk, team, customer, usd, n in sorted(rows, key=lambda r: tuple("" if v is None else str(v) for v in r[:3])):
            if vk in keep:
                lv = [vk, team or "", customer or ""]
                cost.add_metric(lv, float(usd))
                reqs.add_metric(lv, float(n))
        yield from (cost, reqs)

    def _budgets(self, con: duckdb.DuckDBPyConnection) -> Iterator:
        if not self.hierarchy or not self.hierarchy.budgets:
            return
        families = {
            "usage": GaugeMetricFamily("spendlake_budget_usage_usd", "Spend in the budget's current period", labels=BUDGET_LABELS),
            "limit": GaugeMetricFamily("spendlake_budget_limit_usd", "The budget's limit", labels=BUDGET_LABELS),
            "util": GaugeMetricFamily("spendlake_budget_utilization_ratio", "usage / limit", labels=BUDGET_LABELS),
            "start": GaugeMetricFamily("spendlake_budget_period_start_timestamp_seconds", "Start of the current period",
                                       labels=BUDGET_LABELS),  # fmt: skip
            "reset": GaugeMetricFamily("spendlake_budget_reset_timestamp_seconds", "When the budget resets",
                                       labels=BUDGET_LABELS),  # fmt: skip
            "burn": GaugeMetricFamily("spendlake_budget_burn_rate_usd_per_hour", "Spend per hour over the last hour",
                                      labels=BUDGET_LABELS),  # fmt: skip
            "exhaust": GaugeMetricFamily("spendlake_budget_projected_exhaustion_timestamp_seconds",
                                         "When the limit is reached at the current burn rate (absent: never)",
                                         labels=BUDGET_LABELS),  # fmt: skip
        }
        for s in status(con, self.hierarchy, datetime.now(UTC)):
            lv = [s.budget_id, s.type, s.id, s.name, s.reset_duration]
            families["usage"].add_metric(lv, s.current_usage)
            families["limit"].add_metric(lv, s.max_limit)
            families["util"].add_metric(lv, s.utilization)
            families["start"].add_metric(lv, _epoch(s.period_start))
            families["reset"].add_metric(lv, _epoch(s.reset_at))
            families["burn"].add_metric(lv, s.burn_rate_usd_per_hour)
            if s.projected_exhaustion_at is not None:
                families["exhaust"].add_metric(lv, _epoch(s.projected_exhaustion_at))
        yield from families.values()

    def _health(self, con: duckdb.DuckDBPyConnection) -> Iterator:
        landed, dead = con.execute(
            "SELECT (SELECT coalesce(sum(requests), 0) FROM rollup_labels), "
            "(SELECT coalesce(sum(rows), 0) FROM dead_letter_files)"
        ).fetchall()[0]  # type: ignore[misc]
        events = CounterMetricFamily("spendlake_events", "Events that reached the lake, by result", labels=["result"])
        events.add_metric(["landed"], float(landed))
        events.add_metric(["dead_letter"], float(dead))
        yield events
        if self.health is None:
            return
        with self.health.lock:
            lag = dict(self.health.lag)
            flushed, rolled = self.health.last_flush_at, self.health.rollup_at
        g = GaugeMetricFamily("spendlake_consumer_lag_records", "Records not yet consumed", labels=["topic", "partition"])
        for (topic, partition), n in sorted(lag.items()):
            g.add_metric([topic, str(partition)], float(n))
        yield g
        if flushed is not None:
            yield GaugeMetricFamily("spendlake_last_flush_timestamp_seconds", "Last batch landed in the lake", value=flushed)
        if rolled is not None:
            yield GaugeMetricFamily("spendlake_rollup_last_update_timestamp_seconds", "Last rollup update", value=rolled)


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()
