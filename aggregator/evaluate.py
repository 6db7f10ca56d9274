"""Every budget's status as of a moment, whether or not another process holds the rollup state.

The core of `spendlake budgets`, also used by reports (their budget bars) and the demo. It brings
the rollups up to date itself when no other process holds them; while `spendlake serve` runs, it
reads what serve publishes (``<lake>/_rollups/``). If serve runs with other budgets than the
caller's (the published fingerprint differs), usage is computed from the raw lake files of the
current periods instead: slower, never wrong.

Whichever way, usage counts exactly the events stamped before ``at`` (``timestamp < at``; see
``aggregator.budgets``).
"""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from aggregator.budgets import BURN_WINDOW, BudgetStatus, BudgetUsage, status
from aggregator.hierarchy import Hierarchy
from aggregator.rollup import PUBLISH_DIR, Rollup, StateLocked, published_views, sql_string


def evaluate(lake: Path, hierarchy: Hierarchy, at: datetime, minute_retention_days: int = 3,
             refresh: bool = True, period_at: datetime | None = None) -> list[BudgetStatus]:  # fmt: skip
    """Budget status at ``at`` (usage: the events stamped before it; ``period_at``, default ``at``,
    picks the period: see ``aggregator.budgets.status_table``), from the state when it is free
    (``refresh``), else from what serve publishes. serve itself passes ``refresh=False``: in its
    own process a second connection to the state would not be refused (DuckDB shares the open
    database) but roll up without serve's hooks."""
    if not hierarchy.budgets:
        return []
    lake = Path(lake)
    at = at.astimezone(UTC)
    first_at = at if period_at is None else min(period_at.astimezone(UTC), at)  # the earlier periods
    hook = BudgetUsage(hierarchy)
    if refresh:
        try:
            with Rollup(lake, budget_hook=hook, minute_retention_days=minute_retention_days) as r:
                r.update()
                hook.ensure(r.con, lake, first_at)
                return status(r.con, hierarchy, at, lake, period_at)
        except StateLocked:
            pass
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        published_views(con, lake)
        if _covered(lake, hook, at, first_at):
            _published_usage(con, lake, hook)
        else:
            sys.stderr.write("spendlake: serve runs with other budgets than this config; computing usage from the raw lake\n")
            _usage_from_raw(con, lake, hook, at, first_at)
        return status(con, hierarchy, at, lake, period_at)
    finally:
        con.close()


def _covered(lake: Path, hook: BudgetUsage, at: datetime, first_at: datetime) -> bool:
    """Whether the published usage was computed for these budgets on every date the periods
    containing ``first_at`` and ``at`` need (dates of the lake from the earliest period start up
    to ``at``), per event date (older publications lack the date column)."""
    usage_file = lake / PUBLISH_DIR / "budget_usage.parquet"
    days_file = lake / PUBLISH_DIR / "budget_days.parquet"
    if not usage_file.exists() or not days_file.exists() or "day" not in pq.read_schema(usage_file).names:
        return False
    first = _first_day(hook, first_at)
    needed = {d.name[5:] for d in (lake / "events").glob("date=*")
              if first.isoformat() <= d.name[5:] <= at.date().isoformat() and any(d.glob("*.parquet"))}  # fmt: skip
    t = pq.read_table(days_file)
    done = {day.isoformat() for day, fp in zip(t.column("day").to_pylist(), t.column("fingerprint").to_pylist())
            if fp == hook.fingerprint}  # fmt: skip
    return needed <= done


def _published_usage(con: duckdb.DuckDBPyConnection, lake: Path, hook: BudgetUsage) -> None:
    """``budget_usage`` (and ``budget_recent`` with its mark, where serve publishes them) over the
    published files."""
    usage = lake / PUBLISH_DIR / "budget_usage.parquet"
    fp = sql_string(hook.fingerprint)
    con.execute("CREATE VIEW budget_usage AS SELECT budget_id, period_start, day, usage, requests "
                f"FROM read_parquet({sql_string(usage)}) WHERE fingerprint = {fp}")  # fmt: skip
    recent = lake / PUBLISH_DIR / "budget_recent.parquet"
    meta = pq.read_schema(recent).metadata or {} if recent.exists() else {}
    since = meta.get(b"spendlake.since")
    if since is not None and meta.get(b"spendlake.fingerprint") == hook.fingerprint.encode():
        con.execute(f"CREATE VIEW budget_recent AS SELECT * FROM read_parquet({sql_string(recent)})")
        con.execute("CREATE TABLE budget_recent_since AS SELECT ?::TIMESTAMPTZ AS since",
                    [datetime.fromisoformat(since.decode().replace("Z", "+00:00"))])  # fmt: skip


def _usage_from_raw(con: duckdb.DuckDBPyConnection, lake: Path, hook: BudgetUsage, at: datetime,
                    first_at: datetime) -> None:  # fmt: skip
    """Usage of the dates the periods need, up to ``at``'s date, from the raw files; the events of
    the last hour before ``at`` and after it kept one by one (``budget_recent`` from ``at`` - 1 h),
    so the status cuts at ``at`` and gets its burn rate without any rollup."""
    first = min(_first_day(hook, first_at), (at - BURN_WINDOW).date())
    files = [str(p) for d in sorted((lake / "events").glob("date=*"))
             if first.isoformat() <= d.name[5:] <= at.date().isoformat() for p in d.glob("*.parquet")]  # fmt: skip
    hook.schema(con)
    con.execute("INSERT INTO budget_recent_since VALUES (?)", [at - BURN_WINDOW])
    hook.add_raw(con, files)


def _first_day(hook: BudgetUsage, at: datetime) -> date:
    return min(p.start(at) for p in {b.period for b in hook.h.budgets}).astimezone(UTC).date()


__all__ = ["evaluate"]
