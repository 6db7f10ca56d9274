"""A spend report's data: one period (daily, weekly, monthly) in the ``[lake]`` zone, against the
period before it.

Numbers come from the published rollups (``<lake>/_rollups/``), so a report works while ``spendlake
serve`` holds the DuckDB state; when nobody does, the rollups are brought up to date first. The
rollups already count each event_id once (contract 2, invariant 4), so every total here agrees with
the deduplicated raw rows.

Windows are half-open, ``[start, end)``, and exact. A to-date report ends at its as-of time ``at``
itself (the events stamped before ``at``, the rule budgets follow: ``aggregator.budgets``), and the
previous window it is compared to ends as long after its own start. Rollup time buckets are UTC
hours (``rollup_hourly``) and UTC days (``rollup_daily``): ``rollup_daily`` when every boundary is
a UTC midnight, ``rollup_hourly`` when every boundary is a whole UTC hour (local midnights in every
whole-hour zone, DST shifts included). Otherwise (a to-date window ending mid-hour, local midnight
in a 30- or 45-minute zone such as Asia/Kolkata) the rows come from ``aggregator.budgets.Exact``:
the whole hours from ``rollup_hourly``, the rest of an edge hour from ``rollup_minute`` and the raw
lake files, cut at the boundary itself.

A change is given as a percentage only when the previous window is something to compare with (see
``change_pct``): a lake that began during it, or a previous spend of a few cents, would make
"+8624.2%" out of nothing. Then ``change_pct`` is None and the renderers show the two amounts.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import duckdb

from aggregator.budgets import BudgetUsage, Exact
from aggregator.evaluate import evaluate
from aggregator.hierarchy import Hierarchy
from aggregator.periods import period as make_period
from aggregator.rollup import DIMS, published_views, update_if_free

PERIODS = {"daily": "1d", "weekly": "1w", "monthly": "1M"}
NONE_LABEL = "(none)"  # a team or customer label the events did not carry (and the hierarchy could not fill)
HOUR = timedelta(hours=1)
MS = timedelta(milliseconds=1)
# Below this previous-window spend a percentage says more about the cents than about the change.
MIN_PREVIOUS_USD = 1.00
# The window's rows where no rollup table's buckets cut it exactly (see Window.table).
EXACT_ROWS = "report_rows"
REPORT_MEASURES = ("requests", "unpriced", "cost_usd", "input_tokens", "output_tokens")


class Settings(Protocol):
    """What a report reads of the settings (``spendlake.settings.Settings``)."""

    @property
    def hierarchy(self) -> Hierarchy | None: ...

    def get(self, section: str, key: str) -> Any: ...


@dataclass(frozen=True)
class Spend:
    """One customer's, team's or virtual key's spend in the period and the one before."""

    key: str
    name: str
    cost: float
    previous: float
    change: float  # cost - previous (USD)
    change_pct: float | None  # None when no meaningful percentage (see change_pct())
    requests: int
    team: str | None = None  # virtual keys only: the key's team


@dataclass(frozen=True)
class ModelSpend:
    provider: str
    model: str
    cost: float
    requests: int
    input_tokens: int
    output_tokens: int
    unpriced: int


@dataclass(frozen=True)
class Point:
    """One bucket of the spend-over-time series: [start, start + one hour or one local day)."""

    start: datetime
    label: str
    cost: float
    requests: int


@dataclass(frozen=True)
class BudgetRow:
    budget_id: str  # "<type>:<id>:<index>", unique (an owner may have several budgets)
    type: str
    id: str
    name: str
    reset_duration: str
    limit: float
    usage: float
    utilization: float
    period_start: datetime
    reset_at: datetime


@dataclass(frozen=True)
class Unpriced:
    provider: str
    model: str
    requests: int


@dataclass(frozen=True)
class Report:
    period: str  # daily | weekly | monthly
    timezone: str
    to_date: bool
    start: datetime  # [start, end): the reported period (UTC, aware)
    end: datetime
    previous_start: datetime  # [previous_start, previous_end): what it is compared to
    previous_end: datetime
    generated_at: datetime
    as_of: datetime  # the report's moment (``at``, default when computed): a to-date report ends here
    history_start: datetime | None  # the lake's first hour with events if the previous window began before it
    # (that window is then not wholly in the lake); None when it is
    total_cost: float
    previous_cost: float
    change: float
    change_pct: float | None  # None when no meaningful percentage (see change_pct())
    requests: int
    previous_requests: int
    unpriced_requests: int
    customers: tuple[Spend, ...]
    teams: tuple[Spend, ...]
    top_keys: tuple[Spend, ...]
    top_models: tuple[ModelSpend, ...]
    series_unit: str  # "hour" (daily reports) or "day"
    series: tuple[Point, ...]
    by_model: tuple[tuple[str, float], ...]  # "provider/model" → cost; the top ones and "other"
    budgets: tuple[BudgetRow, ...]
    unpriced: tuple[Unpriced, ...]

    @property
    def local_start(self) -> datetime:
        return self.start.astimezone(ZoneInfo(self.timezone))

    @property
    def local_end(self) -> datetime:
        return self.end.astimezone(ZoneInfo(self.timezone))

    @property
    def previous_complete(self) -> bool:
        """Whether the lake holds the whole previous window (its history began before it)."""
        return self.history_start is None


@dataclass(frozen=True)
class Window:
    """The report's two windows and the table that cuts both exactly."""

    start: datetime
    end: datetime
    previous_start: datetime
    previous_end: datetime
    table: str  # rollup_daily, rollup_hourly, or EXACT_ROWS (build_report makes it)

    def params(self) -> list[Any]:
        """``$1``..``$6`` of the queries: the UTC dates to read (rollup files are per UTC ``day``;
        naming them lets DuckDB skip the rest), the window, the previous window."""
        first, last = self.previous_start.astimezone(UTC).date(), (self.end - MS).astimezone(UTC).date()
        return [first, last, self.start, self.end, self.previous_start, self.previous_end]


# Money is summed as DECIMAL: exact, so the same rollups give the same total to the last digit
# whatever order DuckDB's threads add them in (a DOUBLE sum may differ in the 16th digit).
COST = "cost_usd::DECIMAL(38, 12)"
# Both windows' measures in one scan.
WINDOW_SQL = f"""
    coalesce(sum({COST}) FILTER (WHERE bucket >= $3 AND bucket < $4), 0)::DOUBLE AS cur,
    coalesce(sum(requests) FILTER (WHERE bucket >= $3 AND bucket < $4), 0)::BIGINT AS n,
    coalesce(sum({COST}) FILTER (WHERE bucket >= $5 AND bucket < $6), 0)::DOUBLE AS prev,
    coalesce(sum(requests) FILTER (WHERE bucket >= $5 AND bucket < $6), 0)::BIGINT AS prev_n,
    coalesce(sum(unpriced) FILTER (WHERE bucket >= $3 AND bucket < $4), 0)::BIGINT AS unpriced,
    coalesce(sum(input_tokens) FILTER (WHERE bucket >= $3 AND bucket < $4), 0)::BIGINT AS input_tokens,
    coalesce(sum(output_tokens) FILTER (WHERE bucket >= $3 AND bucket < $4), 0)::BIGINT AS output_tokens
"""
WINDOW_WHERE = "day >= $1 AND day <= $2 AND ((bucket >= $3 AND bucket < $4) OR (bucket >= $5 AND bucket < $6))"


def periods(period: str, tz: ZoneInfo, at: datetime, to_date: bool) -> Window:
    """The reported window and the one it is compared to.

    Complete (default): the last whole period before ``at`` and the whole one before it.
    To date: the current period from its start to ``at`` itself (the events stamped before
    ``at``), compared to the same length of time from the previous period's start."""
    if period not in PERIODS:
        raise ValueError(f"period: got {period!r}, expected one of {', '.join(PERIODS)}")
    p = make_period(PERIODS[period], tz)
    current = p.start(at)
    if to_date:
        end = at
        previous_start = p.start(current - timedelta(seconds=1))
        previous_end = min(previous_start + (end - current), current)
        start = current
    else:
        start, end = p.start(current - timedelta(seconds=1)), current
        previous_start, previous_end = p.start(start - timedelta(seconds=1)), start
    bounds = [t.astimezone(UTC) for t in (start, end, previous_start, previous_end)]
    if all(t.time() == datetime.min.time() for t in bounds):
        table = "rollup_daily"
    elif all(t == t.replace(minute=0, second=0, microsecond=0) for t in bounds):
        table = "rollup_hourly"
    else:
        table = EXACT_ROWS
    return Window(start, end, previous_start, previous_end, table)


def _ceil_hour(t: datetime) -> datetime:
    floor = t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return floor if floor == t else floor + HOUR


def change_pct(cost: float, previous: float, previous_complete: bool = True) -> float | None:
    """The change in percent, or None where a percentage would mislead: the previous window is not
    wholly in the lake (history began during or after it), or its spend is under ``MIN_PREVIOUS_USD``
    (0 included). Renderers then show "new" or "from $0.85" instead."""
    if not previous_complete or previous < MIN_PREVIOUS_USD:
        return None
    return (cost - previous) / previous * 100.0


def _history_start(con: duckdb.DuckDBPyConnection, w: Window) -> datetime | None:
    """None when the lake has events in an hour bucket starting at or before the previous window's
    first bucket (so the previous window is wholly history); else the start of its first hour with
    events (None too for a lake without any). The first query stops at the first row it finds and
    the second reads only the report's days, so neither scans the whole history."""
    first_bucket = _ceil_hour(w.previous_start)
    older = con.execute("SELECT 1 FROM rollup_hourly WHERE day <= $1 AND bucket <= $2 LIMIT 1",
                        [first_bucket.astimezone(UTC).date(), first_bucket]).fetchone()  # fmt: skip
    if older is not None:
        return None
    got = con.execute("SELECT min(bucket) FROM rollup_hourly WHERE day >= $1 AND day <= $2", w.params()[:2]).fetchone()
    return None if got is None or got[0] is None else got[0].astimezone(UTC)


def build_report(lake: Path, settings: Settings, period: str, at: datetime | None = None, to_date: bool = False,
                 top: int = 10, refresh: bool = True) -> Report:  # fmt: skip
    """The report of ``period`` as of ``at`` (default now), read from the lake's published rollups
    (brought up to date first when no process holds the state and ``refresh``; serve's own
    scheduled reports pass False — it keeps them published)."""
    tz_name = settings.get("lake", "timezone")
    tz = ZoneInfo(tz_name)
    if at is not None and at.utcoffset() is None:
        raise ValueError(f"at: expected an aware datetime (with a time zone), got {at!r}")
    now = datetime.now(UTC)
    at = (at or now).astimezone(UTC)
    h = settings.hierarchy or Hierarchy(timezone=tz_name)
    w = periods(period, tz, at, to_date)
    retention = settings.get("aggregator", "minute_retention_days")
    # with the hook, events ingested before the config knew their key get its team and customer
    if refresh:
        update_if_free(lake, budget_hook=BudgetUsage(h), minute_retention_days=retention)
    con = duckdb.connect()
    exact = Exact(con, lake, h, dims=DIMS, measures=REPORT_MEASURES, fill_all=False, recent=False)
    try:
        con.execute("SET TimeZone = 'UTC'")
        published_views(con, lake)
        if w.table == EXACT_ROWS:
            windows = [(w.start, w.end), (w.previous_start, w.previous_end)]
            con.execute(f"CREATE TEMP TABLE {EXACT_ROWS} AS {exact.sql(windows, at)}")
        history_start = _history_start(con, w)
        complete = history_start is None
        total = _rows(con, w, ())[0]
        customers = _spend(con, w, "customer", lambda k: h.customers.get(k, k), complete)
        teams = _spend(con, w, "team", lambda k: (h.teams.get(k) or (k, None))[0], complete)
        keys = _top_keys(con, w, h, top, complete)
        models = _models(con, w)
        series_unit = "hour" if period == "daily" else "day"
        series = _series(con, w, tz, series_unit)
    finally:
        exact.close()
        con.close()
    cur, prev = float(total.get("cur", 0.0)), float(total.get("prev", 0.0))
    return Report(
        period=period, timezone=tz_name, to_date=to_date, start=w.start, end=w.end,
        previous_start=w.previous_start, previous_end=w.previous_end, generated_at=now, as_of=at,
        history_start=history_start, total_cost=cur, previous_cost=prev, change=cur - prev,
        change_pct=change_pct(cur, prev, complete),
        requests=int(total.get("n", 0)), previous_requests=int(total.get("prev_n", 0)),
        unpriced_requests=int(total.get("unpriced", 0)), customers=customers, teams=teams,
        top_keys=keys, top_models=tuple(models[:top]), series_unit=series_unit, series=series,
        by_model=_by_model(models, top), budgets=_budgets(lake, h, at, w, to_date, retention, refresh),
        unpriced=tuple(Unpriced(m.provider, m.model, m.unpriced) for m in
                       sorted(models, key=lambda m: (-m.unpriced, m.provider, m.model)) if m.unpriced),
    )  # fmt: skip


def _rows(con: duckdb.DuckDBPyConnection, w: Window, dims: tuple[str, ...]) -> list[dict[str, Any]]:
    """Both windows' measures grouped by ``dims`` (NULL labels as "(none)"), rows with activity in either."""
    select = "".join(f"coalesce({d}, '{NONE_LABEL}') AS {d}, " for d in dims)
    group = f"GROUP BY {', '.join(str(i + 1) for i in range(len(dims)))}" if dims else ""
    cur = con.execute(f"SELECT {select}{WINDOW_SQL} FROM {w.table} WHERE {WINDOW_WHERE} {group}", w.params())
    names = [c[0] for c in cur.description or ()]
    rows = [dict(zip(names, r)) for r in cur.fetchall()]
    return [r for r in rows if r["n"] or r["prev_n"]] if dims else rows


def _spend(con: duckdb.DuckDBPyConnection, w: Window, dim: str, name: Callable[[str], str],
           complete: bool) -> tuple[Spend, ...]:  # fmt: skip
    """Every label with spend (or requests) in either window, biggest first."""
    out = [_spend_row(r[dim], name(r[dim]) if r[dim] != NONE_LABEL else NONE_LABEL, r, complete)
           for r in _rows(con, w, (dim,))]  # fmt: skip
    return tuple(sorted(out, key=lambda s: (-s.cost, -s.previous, s.key)))


def _spend_row(key: str, name: str, r: dict[str, Any], complete: bool, team: str | None = None) -> Spend:
    cur, prev = float(r["cur"]), float(r["prev"])
    return Spend(key, name, cur, prev, cur - prev, change_pct(cur, prev, complete), int(r["n"]), team)


def _top_keys(con: duckdb.DuckDBPyConnection, w: Window, h: Hierarchy, top: int, complete: bool) -> tuple[Spend, ...]:
    """The ``top`` virtual keys by spend in the period. A key's team is the hierarchy's, else the
    team label most of its spend carried."""
    rows = [r for r in _rows(con, w, ("virtual_key",)) if r["n"]]
    rows.sort(key=lambda r: (-r["cur"], -r["n"], r["virtual_key"]))
    labels = _key_teams(con, w, [r["virtual_key"] for r in rows[:top]])
    out = []
    for r in rows[:top]:
        vk = r["virtual_key"]
        name = NONE_LABEL if vk == NONE_LABEL else (h.virtual_keys.get(vk) or (vk, None))[0]
        out.append(_spend_row(vk, name, r, complete, h.team_of(vk) or labels.get(vk, NONE_LABEL)))
    return tuple(out)


def _key_teams(con: duckdb.DuckDBPyConnection, w: Window, keys: list[str]) -> dict[str, str]:
    got = con.execute(
        f"""SELECT virtual_key, first(team ORDER BY c DESC, team) FROM (
                SELECT virtual_key, coalesce(team, '{NONE_LABEL}') AS team, sum({COST}) AS c FROM {w.table}
                WHERE day >= $1 AND day <= $2 AND bucket >= $3 AND bucket < $4 AND list_contains($5, virtual_key)
                GROUP BY ALL) GROUP BY 1""",
        [*w.params()[:4], keys],
    ).fetchall()
    return {k: t for k, t in got}


def _models(con: duckdb.DuckDBPyConnection, w: Window) -> list[ModelSpend]:
    """Every model used in the period, by spend (then requests)."""
    out = [ModelSpend(r["provider"], r["model"], float(r["cur"]), int(r["n"]), int(r["input_tokens"]),
                      int(r["output_tokens"]), int(r["unpriced"]))
           for r in _rows(con, w, ("provider", "model")) if r["n"]]  # fmt: skip
    return sorted(out, key=lambda m: (-m.cost, -m.requests, m.provider, m.model))


def _by_model(models: list[ModelSpend], top: int) -> tuple[tuple[str, float], ...]:
    """The chart's bars: the ``top`` priced models and the rest as "other", so they add up to the total."""
    priced = [m for m in models if m.cost > 0]
    out = [(f"{m.provider}/{m.model}", m.cost) for m in priced[:top]]
    rest = sum(m.cost for m in priced[top:])
    return tuple(out + ([("other", rest)] if rest > 0 else []))


def _series(con: duckdb.DuckDBPyConnection, w: Window, tz: ZoneInfo, unit: str) -> tuple[Point, ...]:
    """Spend per hour, or per local day (23 or 25 hours on a DST change), across the period, empty
    buckets included. Rollup buckets are added up in time order, so the floats come out the same."""
    day, starts, t = make_period("1d", tz), [], w.start
    while t < w.end:
        starts.append(t)
        t = t + HOUR if unit == "hour" else day.end(t)
    table = "rollup_hourly" if unit == "hour" and w.table == "rollup_daily" else w.table
    got = con.execute(
        f"""SELECT epoch_ms(bucket) AS ms, coalesce(sum({COST}), 0)::DOUBLE, coalesce(sum(requests), 0)::BIGINT
            FROM {table} WHERE day >= $1 AND day <= $2 AND bucket >= $3 AND bucket < $4 GROUP BY 1 ORDER BY 1""",
        w.params()[:4],
    ).fetchall()
    keys = [int(s.timestamp() * 1000) for s in starts]
    cost, requests = [0.0] * len(starts), [0] * len(starts)
    for ms, c, n in got:
        i = bisect.bisect_right(keys, ms) - 1
        cost[i] += c
        requests[i] += n
    fmt = "%H:%M" if unit == "hour" else "%a %m-%d"
    return tuple(Point(s, s.astimezone(tz).strftime(fmt), cost[i], requests[i]) for i, s in enumerate(starts))


def _budgets(lake: Path, h: Hierarchy, at: datetime, w: Window, to_date: bool, retention: int,
             refresh: bool = True) -> tuple[BudgetRow, ...]:  # fmt: skip
    """Every budget's status, whether or not ``serve`` holds the state: as of ``at`` for a to-date
    report; for a complete one, how budgets stood when the period closed (the events before its
    end, in the periods that held its last instant)."""
    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    as_of, period_at = (at, None) if to_date else (w.end, w.end - MS)
    return tuple(BudgetRow(s.budget_id, s.type, s.id, s.name, s.reset_duration, s.max_limit, s.current_usage,
                           s.utilization, parse(s.period_start), parse(s.reset_at))
                 for s in evaluate(lake, h, as_of, retention, refresh, period_at))  # fmt: skip


__all__ = ["MIN_PREVIOUS_USD", "PERIODS", "BudgetRow", "ModelSpend", "Point", "Report", "Spend", "Unpriced",
           "build_report", "change_pct", "periods"]
