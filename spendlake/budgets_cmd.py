"""`spendlake budgets`: every budget's status, as bars on a terminal or as JSON (contract 4).

It brings the rollups up to date itself when no other process holds them; while `spendlake
serve` runs, it reads what serve publishes (``<lake>/_rollups/``). If serve runs with other
budgets than this config (the published fingerprint differs), usage is computed from the raw lake
files of the current periods instead: slower, never wrong.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import duckdb
import pyarrow.parquet as pq

from aggregator.budgets import BudgetStatus, BudgetUsage, status
from aggregator.hierarchy import Hierarchy
from aggregator.periods import period_words
from aggregator.rollup import PUBLISH_DIR, Rollup, StateLocked, published_views, sql_string
from spendlake import settings as settings_mod

BAR = 24


def run(cfg: settings_mod.Settings, at_text: str | None, fmt: str, out: TextIO) -> int:
    hierarchy = cfg.hierarchy
    assert hierarchy is not None
    at = _at(at_text)
    lake = Path(cfg.get("lake", "path"))  # that it is a lake, the command line checked (cli.require_lake)
    statuses = evaluate(lake, hierarchy, at, cfg.get("aggregator", "minute_retention_days"))
    if fmt == "json":
        out.write(json.dumps([s.as_json() for s in statuses], indent=2) + "\n")
    else:
        out.write(render(statuses, at))
    return 0


def _at(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise settings_mod.ConfigError([f"--at: got {text!r}, expected an RFC 3339 time such as 2026-11-28T12:00:00Z"]) from None
    if dt.tzinfo is None:
        raise settings_mod.ConfigError([f"--at: got {text!r}, expected a time WITH an offset, e.g. ...Z or +01:00"])
    return dt.astimezone(UTC)


def evaluate(lake: Path, hierarchy: Hierarchy, at: datetime, minute_retention_days: int = 3,
             refresh: bool = True) -> list[BudgetStatus]:  # fmt: skip
    """Budget status from the state when it is free (``refresh``), else from what serve
    publishes. serve itself passes ``refresh=False``: in its own process a second connection
    to the state would not be refused (DuckDB shares the open database) but roll up without
    serve's hooks."""
    if not hierarchy.budgets:
        return []
    hook = BudgetUsage(hierarchy)
    if refresh:
        try:
            with Rollup(lake, budget_hook=hook, minute_retention_days=minute_retention_days) as r:
                r.update()
                hook.ensure(r.con, lake, at)
                return status(r.con, hierarchy, at)
        except StateLocked:
            pass
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    published_views(con, lake)
    usage = lake / PUBLISH_DIR / "budget_usage.parquet"
    if _covered(lake, hook, at):
        con.execute("CREATE VIEW budget_usage AS SELECT budget_id, period_start, usage, requests "
                    f"FROM read_parquet({sql_string(usage)}) WHERE fingerprint = {sql_string(hook.fingerprint)}")
    else:
        sys.stderr.write("spendlake: serve runs with other budgets than this config; computing usage from the raw lake\n")
        _usage_from_raw(con, lake, hook, at)
    return status(con, hierarchy, at)


def _covered(lake: Path, hook: BudgetUsage, at: datetime) -> bool:
    """Whether the published usage was computed for these budgets on every date the periods
    containing ``at`` need (dates of the lake from the earliest period start up to ``at``)."""
    days_file = lake / PUBLISH_DIR / "budget_days.parquet"
    if not (lake / PUBLISH_DIR / "budget_usage.parquet").exists() or not days_file.exists():
        return False
    first = min(p.start(at) for p in {b.period for b in hook.h.budgets}).astimezone(UTC).date()
    needed = {d.name[5:] for d in (lake / "events").glob("date=*")
              if first.isoformat() <= d.name[5:] <= at.date().isoformat() and any(d.glob("*.parquet"))}  # fmt: skip
    t = pq.read_table(days_file)
    done = {day.isoformat() for day, fp in zip(t.column("day").to_pylist(), t.column("fingerprint").to_pylist())
            if fp == hook.fingerprint}  # fmt: skip
    return needed <= done


def _usage_from_raw(con: duckdb.DuckDBPyConnection, lake: Path, hook: BudgetUsage, at: datetime) -> None:
    first = min(p.start(at) for p in {b.period for b in hook.h.budgets}).astimezone(UTC).date()
    files = [str(p) for d in sorted((lake / "events").glob("date=*")) if d.name[5:] >= first.isoformat()
             for p in d.glob("*.parquet")]  # fmt: skip
    hook.add_raw(con, files)


def render(statuses: list[BudgetStatus], at: datetime) -> str:
    """One line per budget: who, a bar of usage / limit, $ used of $ limit, reset, exhaustion."""
    if not statuses:
        return "no budgets in the config ([[customers]], [[teams]], [[virtual_keys]] with budgets = [...])\n"
    indent = {"customer": "", "team": "  ", "virtual_key": "    "}
    who = [f"{indent.get(s.type, '')}{s.type} {s.id}" for s in statuses]
    width = max(len(w) for w in who)
    lines = [f"budgets at {at.isoformat(timespec='seconds').replace('+00:00', 'Z')}"]
    for w, s in zip(who, statuses):
        frac = max(s.utilization, 0.0)
        filled = min(int(round(frac * BAR)), BAR)
        bar = "█" * filled + "░" * (BAR - filled)
        mark = "  EXCEEDED" if frac >= 1 else ("  !" if frac >= 0.8 else "")
        runs_out = f", runs out {s.projected_exhaustion_at}" if s.projected_exhaustion_at and frac < 1 else ""
        lines.append(
            f"{w.ljust(width)}  {bar} {frac * 100:6.1f}%  ${s.current_usage:,.2f} / ${s.max_limit:,.2f} "
            f"per {period_words(s.reset_duration)}, resets {s.reset_at}{runs_out}{mark}"
        )
    return "\n".join(lines) + "\n"


