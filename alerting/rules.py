"""The alert rules: what is worth telling, when, and to which channels.

Two entry points, both writing through ``outbox.record`` so every alert is recorded before it is
sent and at most once per key:

- ``Rules.on_fresh(con, table)`` — the rollup's event hook, inside the transaction that counts a
  date's new events: one ``expensive_request`` per event above the limit (an event counted once is
  alerted once, and a crash loses neither).
- ``Rules.evaluate(con, now)`` — after each rollup: budget thresholds (the highest one newly
  crossed is sent; lower ones passed in the same step are recorded as superseded), the forecast
  (runs out before reset at the current burn rate, before the first threshold), PagerDuty resolves
  (period reset, limit raised, budget gone), cost spikes and token rates over the last window,
  and unpriced usage.

Budget thresholds and the forecast read ``aggregator.budgets.status_table`` as of ``now``: usage and
the burn rate (the spend of ``[now - 1 h, now)``) count exactly the events stamped before ``now``,
so ``evaluate(con, T)`` for any T sees what ``spendlake budgets --at T`` and ``report --at T`` see.

Keys: ``budget:<budget id>:<period start>:<limit>:<threshold>`` (a raised limit is a new budget
for alerting; its incident is resolved), ``forecast:<budget id>:<period start>:<limit>``,
``expensive:<event id>``, ``spike:<window start>``, ``token_rate:<window start>``,
``unpriced:<provider>/<model>:<date>``, ``resolve:<dedup key>:<limit>``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import duckdb

from aggregator.budgets import status_table
from aggregator.hierarchy import Hierarchy
from aggregator.periods import period_words
from alerting.config import Alerting
from alerting.outbox import Record, known, record, route
from alerting.records import Alert

LEVEL = {"customer": "customer", "team": "team", "virtual_key": "virtual key"}


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def usd(x: float) -> str:
    return f"${x:,.2f}" if abs(x) >= 0.01 or x == 0 else f"${x:,.6f}"


def duration_words(seconds: float) -> str:
    s = max(int(seconds), 0)
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} day{'s' if days != 1 else ''}" + (f" {hours} h" if hours else "")
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min" if minutes else f"{s} s"


class Rules:
    def __init__(self, hierarchy: Hierarchy, alerting: Alerting) -> None:
        self.h = hierarchy
        self.cfg = alerting
        self.r = alerting.rules
        self.tz = ZoneInfo(hierarchy.timezone)

    def _local(self, dt: datetime) -> str:
        return dt.astimezone(self.tz).strftime("%Y-%m-%d %H:%M %Z")

    def _rec(self, alert: Alert, **kw: Any) -> Record:
        return Record(alert, route(self.cfg.channels, alert), **kw)

    # --- per event, inside the rollup transaction ----------------------------------------------

    def on_fresh(self, con: duckdb.DuckDBPyConnection, table: str, now: datetime | None = None) -> int:
        """Expensive requests among the newly counted events of ``table``."""
        limit = self.r.expensive_request_usd
        if limit <= 0:
            return 0
        now = now or datetime.now(UTC)
        since = now - timedelta(seconds=self.r.max_event_age_s)
        rows = con.execute(
            f"""SELECT event_id, "timestamp", virtual_key, team, customer, provider, model, cost_usd,
                       input_tokens, output_tokens, reasoning_tokens, latency_ms
                FROM {table} WHERE cost_usd > ? AND "timestamp" >= ? ORDER BY "timestamp" """,
            [limit, since],
        ).fetchall()
        out = [self._rec(self._expensive(row, limit, now), subject=row[2]) for row in rows]
        return len(record(con, out))

    def _expensive(self, row: tuple[Any, ...], limit: float, now: datetime) -> Alert:
        event_id, ts, vk, team, customer, provider, model, cost, inp, outp, reasoning, latency = row
        who = self._vk_words(vk)
        return Alert(
            key=f"expensive:{event_id}", kind="expensive_request", severity="warning",
            title=f"Expensive request: {usd(cost)} from {who} on {model}",
            created_at=now,
            lines=(f"Request cost {usd(cost)} (limit {usd(limit)}) at {self._local(ts)}",
                   f"Model: {provider}/{model}; tokens in {inp:,}, out {outp:,}" + (f", reasoning {reasoning:,}" if reasoning else ""),
                   f"Team: {self._team_words(team)}; customer: {self._customer_words(customer)}",
                   f"Event: {event_id}"),  # fmt: skip
            fields=(("Cost", usd(cost)), ("Limit", usd(limit)), ("Virtual key", who), ("Model", f"{provider}/{model}")),
            facts={"event_id": event_id, "timestamp": _iso(ts), "virtual_key": vk, "team": team, "customer": customer,
                   "provider": provider, "model": model, "cost_usd": cost, "limit_usd": limit, "input_tokens": inp,
                   "output_tokens": outp, "latency_ms": latency},  # fmt: skip
        )

    def _vk_words(self, vk: str | None) -> str:
        if vk is None:
            return "(no virtual key)"
        name = self.h.virtual_keys.get(vk, (vk, None))[0]
        return vk if name == vk else f"{name} ({vk})"

    def _team_words(self, team: str | None) -> str:
        if team is None:
            return "(none)"
        name = self.h.teams.get(team, (team, None))[0]
        return team if name == team else f"{name} ({team})"

    def _customer_words(self, customer: str | None) -> str:
        if customer is None:
            return "(none)"
        name = self.h.customers.get(customer, customer)
        return customer if name == customer else f"{name} ({customer})"

    # --- after each rollup ----------------------------------------------------------------------

    def evaluate(self, con: duckdb.DuckDBPyConnection, now: datetime | None = None) -> list[Record]:
        """Every rule but the per-event one, recorded in one transaction; returns the new records."""
        now = (now or datetime.now(UTC)).astimezone(UTC)
        candidates = self._budgets(con, now) + self._spikes(con, now) + self._unpriced(con, now)
        con.execute("BEGIN TRANSACTION")
        try:
            new = record(con, candidates)  # deliveries are due now, whatever time the rules looked at
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return new

    def _budgets(self, con: duckdb.DuckDBPyConnection, now: datetime, table: Any = None,
                 thresholds_only: bool = False) -> list[Record]:  # fmt: skip
        """Threshold crossings, forecasts and resolves from the budgets' status (``table``: a
        status table given by the caller, e.g. the rollup's plus a batch not rolled up yet; then
        with ``thresholds_only``)."""
        if not self.h.budgets:
            return []
        if table is None:
            table = status_table(con, self.h, now)
        budgets = {b.id: b for b in self.h.budgets}
        cols = {name: table.column(name).to_pylist() for name in
                ("budget_id", "utilization", "current_usage", "max_limit", "period_start", "reset_at",
                 "burn_rate_usd_per_hour", "projected_exhaustion_at")}  # fmt: skip
        out: list[Record] = []
        current: dict[str, tuple[datetime, float, float]] = {}
        crossings: list[tuple[int, Any, list[float]]] = []
        for i, bid in enumerate(cols["budget_id"]):
            b = budgets[bid]
            util, start, limit = cols["utilization"][i], cols["period_start"][i], cols["max_limit"][i]
            current[bid] = (start, limit, util)
            thresholds = b.thresholds if b.thresholds is not None else self.r.budget_thresholds
            crossed = [t for t in thresholds if util >= t - 1e-12]
            if crossed:
                crossings.append((i, b, crossed))
            elif self.r.forecast and not thresholds_only and thresholds and util >= self.r.forecast_min_utilization:
                row = {k: v[i] for k, v in cols.items()}
                exhaust = row["projected_exhaustion_at"]
                if exhaust is not None and exhaust < row["reset_at"]:
                    alert = self._forecast_alert(b, row, now)
                    out.append(self._rec(alert, subject=bid, period_start=start, max_limit=limit))
        seen = known(con, [self._budget_key(b.id, cols["period_start"][i], cols["max_limit"][i], t)
                           for i, b, crossed in crossings for t in crossed])  # fmt: skip
        for i, b, crossed in crossings:
            row = {k: v[i] for k, v in cols.items()}
            start, limit = row["period_start"], row["max_limit"]
            for t in crossed:
                if self._budget_key(b.id, start, limit, t) in seen:
                    continue
                alert = self._budget_alert(b, row, t, now)
                top = t == crossed[-1]
                out.append(Record(alert, route(self.cfg.channels, alert) if top else (), subject=b.id,
                                  period_start=start, max_limit=limit,
                                  note=None if top else f"passed in the same batch as {crossed[-1] * 100:g}%; "
                                  "only that alert was sent"))  # fmt: skip
        if not thresholds_only:
            out += self._resolves(con, current, now)
        return out

    def landed(self, con: duckdb.DuckDBPyConnection, table: Any, now: datetime) -> list[Record]:
        """Threshold crossings from a status table that includes a batch not rolled up yet."""
        return self._budgets(con, now, table, thresholds_only=True)

    @staticmethod
    def _budget_key(bid: str, start: datetime, limit: float, t: float) -> str:
        return f"budget:{bid}:{_iso(start)}:{limit:g}:{t:g}"

    def _who(self, b: Any) -> str:
        label = f"{b.owner_name} ({b.owner_id})" if b.owner_name != b.owner_id else b.owner_id
        if b.owner_type == "team":
            label = f"{label} team"
        elif b.owner_type == "customer":
            label = f"customer {label}"
        return label if b.name is None else f"{label} [{b.name}]"

    def _facts(self, b: Any, row: dict[str, Any], now: datetime) -> dict[str, Any]:
        exhaust = row["projected_exhaustion_at"]
        return {"budget_id": b.id, "owner_type": b.owner_type, "owner_id": b.owner_id, "owner_name": b.owner_name,
                "budget_name": b.name, "current_usage_usd": round(row["current_usage"], 6), "max_limit_usd": row["max_limit"],
                "utilization": round(row["utilization"], 6), "reset_duration": b.reset_duration,
                "period_start": _iso(row["period_start"]), "reset_at": _iso(row["reset_at"]),
                "seconds_until_reset": max(int((row["reset_at"] - now).total_seconds()), 0),
                "burn_rate_usd_per_hour": None if row["burn_rate_usd_per_hour"] is None or math.isnan(row["burn_rate_usd_per_hour"])
                else round(row["burn_rate_usd_per_hour"], 6),
                "projected_exhaustion_at": None if exhaust is None else _iso(exhaust)}  # fmt: skip

    def _budget_lines(self, b: Any, row: dict[str, Any], now: datetime) -> tuple[str, ...]:
        used, limit, util = row["current_usage"], row["max_limit"], row["utilization"]
        reset, exhaust, rate = row["reset_at"], row["projected_exhaustion_at"], row["burn_rate_usd_per_hour"]
        lines = [f"Current: {usd(used)} / {usd(limit)} ({util * 100:.1f}%)",
                 f"Time remaining: {duration_words((reset - now).total_seconds())} (resets {self._local(reset)})"]  # fmt: skip
        if used >= limit:
            lines.append("Projected exhaustion: already reached")
        elif exhaust is not None and exhaust < reset:
            lines.append(f"Projected exhaustion: {self._local(exhaust)} at {usd(rate)}/hour")
        elif rate is not None and not math.isnan(rate):
            lines.append(f"Projected exhaustion: not before reset at {usd(rate)}/hour")
        lines.append(f"Budget: {usd(limit)} per {period_words(b.reset_duration)} ({LEVEL[b.owner_type]} {b.id})")
        return tuple(lines)

    def _budget_alert(self, b: Any, row: dict[str, Any], t: float, now: datetime) -> Alert:
        severity = "warning" if t < 0.9 else "critical"
        label = "Exceeded" if t >= 1.0 else "Critical" if t >= 0.9 else "Warning"
        lines = self._budget_lines(b, row, now)
        if t >= 0.9:
            lines += ("Action required: review usage or increase the budget",)
        start = row["period_start"]
        return Alert(
            key=self._budget_key(b.id, start, row["max_limit"], t), kind="budget", severity=severity,
            title=f"{label}: {self._who(b)} at {t * 100:g}% of budget", created_at=now, lines=lines,
            fields=(("Spend", f"{usd(row['current_usage'])} / {usd(row['max_limit'])}"),
                    ("Used", f"{row['utilization'] * 100:.1f}%"),
                    ("Resets", self._local(row["reset_at"])), ("Level", LEVEL[b.owner_type])),  # fmt: skip
            facts={**self._facts(b, row, now), "threshold": t},
            dedup_key=f"spendlake:budget:{b.id}:{_iso(start)}",
        )

    def _forecast_alert(self, b: Any, row: dict[str, Any], now: datetime) -> Alert:
        start = row["period_start"]
        return Alert(
            key=f"forecast:{b.id}:{_iso(start)}:{row['max_limit']:g}", kind="budget_forecast", severity="warning",
            title=f"Forecast: {self._who(b)} runs out of budget on {self._local(row['projected_exhaustion_at'])}",
            created_at=now, lines=self._budget_lines(b, row, now),
            fields=(("Spend", f"{usd(row['current_usage'])} / {usd(row['max_limit'])}"),
                    ("Burn rate", f"{usd(row['burn_rate_usd_per_hour'])}/hour"),
                    ("Runs out", self._local(row["projected_exhaustion_at"])), ("Resets", self._local(row["reset_at"]))),
            facts=self._facts(b, row, now),
        )  # fmt: skip

    def _resolves(self, con: duckdb.DuckDBPyConnection, current: dict[str, tuple[datetime, float, float]],
                  now: datetime) -> list[Record]:  # fmt: skip
        """Resolve PagerDuty incidents whose period reset, whose limit was raised, or whose
        budget is gone — on the channels their triggers went to."""
        pd = {c.name for c in self.cfg.channels if c.type == "pagerduty"}
        if not pd:
            return []
        open_ = con.execute(
            """SELECT a.dedup_key, any_value(a.subject), any_value(a.period_start), any_value(a.max_limit),
                      list(DISTINCT d.channel)
               FROM alerts a JOIN deliveries d ON d.alert_key = a.key
               WHERE a.kind = 'budget' AND a.action = 'trigger' AND d.channel IN (SELECT unnest(?::VARCHAR[]))
                 AND d.state <> 'failed'
                 AND NOT EXISTS (SELECT 1 FROM alerts r WHERE r.action = 'resolve' AND r.dedup_key = a.dedup_key
                                 AND r.max_limit = a.max_limit)
               GROUP BY a.dedup_key, a.max_limit""",
            [sorted(pd)],
        ).fetchall()
        out = []
        budgets = {b.id: b for b in self.h.budgets}
        for dedup, bid, start, limit, channels in open_:
            cur = current.get(bid)
            if cur is None:
                reason = "the budget is no longer configured"
            elif cur[0] != start:
                reason = f"the period reset on {self._local(cur[0])}"
            elif cur[1] > limit:
                reason = f"the limit was raised from {usd(limit)} to {usd(cur[1])}"
            else:
                continue
            b = budgets.get(bid)
            who = self._who(b) if b is not None else bid
            alert = Alert(key=f"resolve:{dedup}:{limit:g}", kind="budget", severity="info", action="resolve",
                          dedup_key=dedup, created_at=now, title=f"Resolved: {who} budget alert ({reason})",
                          lines=(f"Resolved because {reason}.",), facts={"budget_id": bid, "reason": reason})  # fmt: skip
            out.append(Record(alert, tuple(sorted(channels)), subject=bid, period_start=start, max_limit=limit))
        return out

    def _spikes(self, con: duckdb.DuckDBPyConnection, now: datetime) -> list[Record]:
        r = self.r
        if r.spike_floor_usd <= 0 and r.token_rate_limit <= 0:
            return []
        w = timedelta(seconds=r.spike_window_s)
        start = now - w
        base_start = start - timedelta(seconds=r.spike_baseline_s)
        cost, tokens, base = con.execute(
            """SELECT coalesce(sum(cost_usd) FILTER (WHERE bucket >= ?), 0),
                      coalesce(sum(input_tokens + output_tokens) FILTER (WHERE bucket >= ?), 0),
                      coalesce(sum(cost_usd) FILTER (WHERE bucket < ?), 0)
               FROM rollup_minute WHERE bucket >= ? AND bucket <= ?""",
            [start, start, start, base_start, now],
        ).fetchall()[0]  # fmt: skip
        window_id = _iso(datetime.fromtimestamp(now.timestamp() // r.spike_window_s * r.spike_window_s, UTC))
        average = base * r.spike_window_s / r.spike_baseline_s
        out: list[Record] = []
        spike = r.spike_floor_usd > 0 and cost >= r.spike_floor_usd and cost >= r.spike_multiple * average
        rate = r.token_rate_limit > 0 and tokens >= r.token_rate_limit
        if not (spike or rate):
            return out
        (team, team_cost), (vk, vk_cost) = (self._top(con, d, start, now) for d in ("team", "virtual_key"))
        mins = duration_words(r.spike_window_s)
        top = (f"Team: {self._team_words(team)} ({usd(team_cost)})", f"Top user: {self._vk_words(vk)} - {usd(vk_cost)}")
        facts = {"window_start": _iso(start), "window_end": _iso(now), "window_cost_usd": round(cost, 6),
                 "baseline_average_usd": round(average, 6), "tokens": int(tokens), "top_team": team,
                 "top_team_cost_usd": round(team_cost, 6), "top_virtual_key": vk, "top_virtual_key_cost_usd": round(vk_cost, 6)}  # fmt: skip
        if spike and not self._cooling(con, "cost_spike", now):
            alert = Alert(key=f"spike:{window_id}", kind="cost_spike", severity="critical",
                          title=f"Cost spike detected: {usd(cost)} in the last {mins}", created_at=now,
                          lines=(f"Last {mins}: {usd(cost)} (avg: {usd(average)})", *top, "Action: investigate recent queries"),
                          fields=(("Last window", usd(cost)), ("Average window", usd(average)),
                                  ("Top team", self._team_words(team)), ("Top user", self._vk_words(vk))),
                          facts=facts)  # fmt: skip
            out.append(self._rec(alert, subject=vk))
        if rate and not self._cooling(con, "token_rate", now):
            per_s = tokens / r.spike_window_s
            alert = Alert(key=f"token_rate:{window_id}", kind="token_rate", severity="warning",
                          title=f"Unusual token usage: {tokens:,} tokens in the last {mins} ({per_s:,.0f}/s)",
                          created_at=now, lines=(f"Limit: {r.token_rate_limit:,} tokens per {mins}", *top),
                          fields=(("Tokens", f"{tokens:,}"), ("Per second", f"{per_s:,.0f}"),
                                  ("Top team", self._team_words(team)), ("Top user", self._vk_words(vk))),
                          facts={**facts, "limit_tokens": r.token_rate_limit})  # fmt: skip
            out.append(self._rec(alert, subject=vk))
        return out

    @staticmethod
    def _top(con: duckdb.DuckDBPyConnection, dim: str, start: datetime, now: datetime) -> tuple[str | None, float]:
        rows = con.execute(f"""SELECT {dim}, sum(cost_usd) AS c FROM rollup_minute WHERE bucket >= ? AND bucket <= ?
                               GROUP BY 1 ORDER BY c DESC NULLS LAST, 1 LIMIT 1""", [start, now]).fetchall()  # fmt: skip
        return (rows[0][0], float(rows[0][1] or 0.0)) if rows else (None, 0.0)

    def _cooling(self, con: duckdb.DuckDBPyConnection, kind: str, now: datetime) -> bool:
        since = now - timedelta(seconds=self.r.cooldown_s)
        return bool(con.execute("SELECT count(*) FROM alerts WHERE kind = ? AND created_at > ?", [kind, since]).fetchall()[0][0])

    def _unpriced(self, con: duckdb.DuckDBPyConnection, now: datetime) -> list[Record]:
        if not self.r.unpriced:
            return []
        since = (now - timedelta(seconds=self.r.max_event_age_s)).date()
        rows = con.execute(
            """SELECT day, provider, model, sum(unpriced)::BIGINT, sum(requests)::BIGINT FROM rollup_labels
               WHERE day >= ? AND unpriced > 0 GROUP BY ALL ORDER BY 1, 2, 3""", [since]).fetchall()  # fmt: skip
        out = []
        for day, provider, model, n, total in rows:
            alert = Alert(key=f"unpriced:{provider}/{model}:{day.isoformat()}", kind="unpriced", severity="warning",
                          title=f"Unpriced usage: {provider}/{model} has no price ({n:,} requests on {day})",
                          created_at=now,
                          lines=(f"{n:,} of {total:,} requests of {provider}/{model} on {day} have no price; "
                                 "their spend is not in any total or budget.",
                                 "Fix: add the model with `spendlake pricing import` or a [[pricing.overrides]] price, "
                                 "then `spendlake reprice --since " + day.isoformat() + "`."),
                          fields=(("Model", f"{provider}/{model}"), ("Unpriced requests", f"{n:,}"), ("Date", day.isoformat())),
                          facts={"provider": provider, "model": model, "date": day.isoformat(), "unpriced_requests": n,
                                 "requests": total})  # fmt: skip
            out.append(self._rec(alert, subject=f"{provider}/{model}"))
        return out

