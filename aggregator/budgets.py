"""Budget usage, kept incrementally beside the rollups, and each budget's status.

Usage is stored per (budget, period start, event date): an event adds its cost to every budget of
its virtual key, its team and its customer (contract 3: a VK's spend counts toward its team's and
customer's budgets), in the period its *own timestamp* falls in — a late event counts toward the
period it belongs to, not the current one. Keeping the event date in the key lets a recomputed
date (``reprice``) replace exactly its share. Unpriced events (cost NULL) add nothing; they are
reported separately, never as $0 of budget.

Which budgets the stored usage was computed for is recorded per date (the hierarchy's
fingerprint). When the budgets change (a new budget, another limit or reset_duration), the dates
that the current periods cover are recomputed from the lake's raw files once.

Status (``status()``): for each budget at a time ``at``: the period containing ``at`` (start and
reset time), usage in it, remaining, utilization, the burn rate over the last hour (from the
minute rollups; the period's average where the minute rollups do not reach) and, at that rate,
when the limit will be reached.
"""

from __future__ import annotations

import os
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aggregator.hierarchy import OWNER_TYPES, Budget, Hierarchy
from aggregator.rollup import sql_string

BURN_WINDOW = timedelta(hours=1)
EXHAUSTION_HORIZON_H = 24 * 366 * 100  # further than a century at this rate: "not in sight" (None)


@dataclass
class BudgetStatus:
    type: str
    id: str
    name: str
    budget_id: str
    max_limit: float
    reset_duration: str
    current_usage: float
    remaining: float
    utilization: float
    period_start: str
    reset_at: str
    burn_rate_usd_per_hour: float
    projected_exhaustion_at: str | None
    requests: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _rfc3339(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


class BudgetUsage:
    """The rollup hook (``Rollup(budget_hook=...)``) keeping budget usage for one hierarchy."""

    def __init__(self, hierarchy: Hierarchy) -> None:
        self.h = hierarchy
        self.fingerprint = hierarchy.fingerprint()
        # budgets grouped by (owner type, period): one period computation per group
        groups: dict[tuple[str, Any], dict[str, list[Budget]]] = defaultdict(lambda: defaultdict(list))
        for b in hierarchy.budgets:
            groups[(b.owner_type, b.period)][b.owner_id].append(b)
        self.groups = groups

    # --- the rollup hook -----------------------------------------------------------------------

    def fill_sql(self, con: duckdb.DuckDBPyConnection, table: str) -> None:
        """Contract 1: a missing team is the virtual key's, a missing customer the team's
        (never overwriting what the event says), in place on ``table``."""
        vk_team = {vk: team for vk, (_, team) in self.h.virtual_keys.items() if team}
        team_customer = {team: cust for team, (_, cust) in self.h.teams.items() if cust}
        if vk_team:
            con.register("hier_vk", pa.table({"vk": list(vk_team), "team": list(vk_team.values())}))
            con.execute(f"UPDATE {table} SET team = m.team FROM hier_vk m "
                        f"WHERE {table}.team IS NULL AND {table}.virtual_key = m.vk")  # fmt: skip
            con.unregister("hier_vk")
        if team_customer:
            con.register("hier_team", pa.table({"t": list(team_customer), "customer": list(team_customer.values())}))
            con.execute(f"UPDATE {table} SET customer = m.customer FROM hier_team m "
                        f"WHERE {table}.customer IS NULL AND {table}.team = m.t")  # fmt: skip
            con.unregister("hier_team")

    @staticmethod
    def schema(con: duckdb.DuckDBPyConnection) -> None:
        con.execute("CREATE TABLE IF NOT EXISTS budget_usage (budget_id VARCHAR, period_start TIMESTAMPTZ, "
                    "day DATE, usage DOUBLE, requests BIGINT)")  # fmt: skip
        con.execute("CREATE TABLE IF NOT EXISTS budget_days (day DATE PRIMARY KEY, fingerprint VARCHAR)")

    def forget_days(self, con: duckdb.DuckDBPyConnection, days: list[date]) -> None:
        self.schema(con)
        con.execute("DELETE FROM budget_usage WHERE day IN (SELECT unnest(?::DATE[]))", [days])
        con.execute("DELETE FROM budget_days WHERE day IN (SELECT unnest(?::DATE[]))", [days])

    def add(self, con: duckdb.DuckDBPyConnection, table: str, whole_days: bool = False) -> None:
        """Add the usage of the (deduplicated) event rows in ``table``; ``whole_days``: they are
        every event of their dates (a recomputation), not an increment."""
        self.schema(con)
        rows: pa.Table = con.sql(
            f"""SELECT day, epoch_ms("timestamp") AS ts, virtual_key, team, customer, cost_usd
                FROM {table} WHERE cost_usd IS NOT NULL"""
        ).to_arrow_table()
        days = [d for (d,) in con.execute(f"SELECT DISTINCT day FROM {table}").fetchall()]
        # A date whose stored usage was computed for other budgets, or never computed although
        # files of it were rolled up before, cannot take an increment: it is forgotten here and
        # ensure() recomputes it whole from the raw files.
        stale = [] if whole_days else [d for (d,) in con.execute(
            """SELECT DISTINCT f.day FROM files f LEFT JOIN budget_days b ON b.day = f.day
               WHERE f.day IN (SELECT unnest(?::DATE[])) AND (b.fingerprint IS NULL OR b.fingerprint <> ?)""",
            [days, self.fingerprint]).fetchall()] if days else []  # fmt: skip
        if stale:
            self.forget_days(con, stale)
            days = [d for d in days if d not in stale]
            rows = rows.filter(pc.invert(pc.is_in(rows.column("day"), value_set=pa.array(stale, pa.date32()))))
        if rows.num_rows and self.h.budgets:
            delta = self._usage(rows)
            if delta.num_rows:
                con.register("budget_delta", delta)
                con.execute(
                    """CREATE OR REPLACE TEMP TABLE budget_merged AS
                       SELECT budget_id, period_start, day, sum(usage) AS usage, sum(requests)::BIGINT AS requests
                       FROM (SELECT * FROM budget_usage WHERE day IN (SELECT DISTINCT day FROM budget_delta)
                             UNION ALL BY NAME
                             SELECT budget_id, make_timestamptz(period_start_ms * 1000) AS period_start, day,
                                    usage, requests FROM budget_delta)
                       GROUP BY ALL"""
                )
                con.execute("DELETE FROM budget_usage WHERE day IN (SELECT DISTINCT day FROM budget_delta)")
                con.execute("INSERT INTO budget_usage BY NAME SELECT * FROM budget_merged")
                con.unregister("budget_delta")
        for d in days:
            con.execute("INSERT OR REPLACE INTO budget_days VALUES (?, ?)", [d, self.fingerprint])

    def _usage(self, rows: pa.Table) -> pa.Table:
        """(budget_id, period_start_ms, day, usage, requests) for event rows, vectorised per
        (owner type, period) group."""
        ts = rows.column("ts").to_numpy()
        cost = rows.column("cost_usd").to_numpy()
        days = rows.column("day")
        out: dict[str, list[Any]] = {"budget_id": [], "period_start_ms": [], "day": [], "usage": [], "requests": []}
        for (owner_type, period), by_owner in self.groups.items():
            owners = rows.column(owner_type)  # the event column is named as the owner type
            if owners.null_count == len(owners):
                continue
            starts = period.starts_ms(ts)
            t = pa.table({"owner": owners, "start": pa.array(starts, pa.int64()), "day": days,
                          "cost": pa.array(cost, pa.float64())})  # fmt: skip
            t = t.filter(pc.is_in(t.column("owner"), value_set=pa.array(list(by_owner), pa.string())))
            if not t.num_rows:
                continue
            g = t.group_by(["owner", "start", "day"]).aggregate([("cost", "sum"), ("cost", "count")])
            for owner, start, day, usage, n in zip(*(g.column(c).to_pylist() for c in
                                                      ("owner", "start", "day", "cost_sum", "cost_count"))):  # fmt: skip
                for b in by_owner[owner]:
                    out["budget_id"].append(b.id)
                    out["period_start_ms"].append(start)
                    out["day"].append(day)
                    out["usage"].append(usage)
                    out["requests"].append(n)
        return pa.table({
            "budget_id": pa.array(out["budget_id"], pa.string()),
            "period_start_ms": pa.array(out["period_start_ms"], pa.int64()),
            "day": pa.array(out["day"], pa.date32()),
            "usage": pa.array(out["usage"], pa.float64()),
            "requests": pa.array(out["requests"], pa.int64()),
        })  # fmt: skip

    def add_raw(self, con: duckdb.DuckDBPyConnection, paths: list[str]) -> None:
        """Add the usage of raw lake files, deduplicated as the rollups deduplicate (an event is
        an event_id on its UTC date; the earliest ingested copy counts)."""
        self.schema(con)
        if not paths:
            return
        con.execute(
            """CREATE OR REPLACE TEMP TABLE budget_raw AS
               SELECT "timestamp"::DATE AS day, "timestamp", virtual_key, team, customer, cost_usd
               FROM read_parquet(?, union_by_name = true)
               QUALIFY row_number() OVER (PARTITION BY "timestamp"::DATE, event_id
                                          ORDER BY ingested_at, source_topic, source_partition, source_offset) = 1""",
            [paths],
        )
        self.fill_sql(con, "budget_raw")
        self.add(con, "budget_raw", whole_days=True)

    def ensure(self, con: duckdb.DuckDBPyConnection, lake: Path, at: datetime | None = None) -> int:
        """Recompute usage for the dates the budgets' current periods cover that were computed
        for other budgets (or none). Returns how many dates were recomputed."""
        self.schema(con)
        if not self.h.budgets:
            return 0
        at = at or datetime.now(UTC)
        first = min(p.start(at) for p in {b.period for b in self.h.budgets}).astimezone(UTC).date()
        stale = [
            d for (d,) in con.execute(
                """SELECT DISTINCT f.day FROM files f LEFT JOIN budget_days b ON b.day = f.day
                   WHERE f.day >= ? AND (b.fingerprint IS NULL OR b.fingerprint <> ?) ORDER BY 1""",
                [first, self.fingerprint],
            ).fetchall()
        ]  # fmt: skip
        if not stale:
            return 0
        paths = [str(lake / p) for (p,) in con.execute(
            "SELECT path FROM files WHERE day IN (SELECT unnest(?::DATE[]))", [stale]).fetchall()]  # fmt: skip
        con.execute("BEGIN TRANSACTION")
        try:
            self.forget_days(con, stale)
            self.add_raw(con, paths)
            con.execute("INSERT OR IGNORE INTO dirty_days SELECT unnest(?::DATE[])", [stale])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return len(stale)

    def publish(self, con: duckdb.DuckDBPyConnection, out: Path) -> None:
        """``budget_usage.parquet`` (per budget and period) and ``budgets.parquet`` (status now)."""
        self.schema(con)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".budget_usage-{uuid.uuid4().hex[:8]}.tmp"
        # each row says which budgets its dates were computed for; budget_days.parquet says it per date
        con.execute(
            f"""COPY (SELECT u.budget_id, u.period_start, sum(u.usage) AS usage, sum(u.requests)::BIGINT AS requests,
                             d.fingerprint
                      FROM budget_usage u JOIN budget_days d USING (day) GROUP BY ALL ORDER BY ALL)
                TO {sql_string(tmp)} (FORMAT parquet)"""
        )
        os.replace(tmp, out / "budget_usage.parquet")
        tmp3 = out / f".budget_days-{uuid.uuid4().hex[:8]}.tmp"
        con.execute(f"COPY (SELECT day, fingerprint FROM budget_days ORDER BY day) TO {sql_string(tmp3)} (FORMAT parquet)")
        os.replace(tmp3, out / "budget_days.parquet")
        table = status_table(con, self.h)
        tmp2 = out / f".budgets-{uuid.uuid4().hex[:8]}.tmp"
        pq.write_table(table, tmp2)
        os.replace(tmp2, out / "budgets.parquet")


class _Static:
    """Per-hierarchy arrays that do not change between evaluations."""

    def __init__(self, hierarchy: Hierarchy) -> None:
        budgets = hierarchy.budgets
        self.periods = list(dict.fromkeys(b.period for b in budgets))
        index = {p: i for i, p in enumerate(self.periods)}
        self.period_of = np.array([index[b.period] for b in budgets], dtype=np.int64)
        self.limit = np.array([b.max_limit for b in budgets], dtype=np.float64)
        self.ids = pa.array([b.id for b in budgets], pa.string())
        self.columns = {
            "type": pa.array([b.owner_type for b in budgets], pa.string()),
            "id": pa.array([b.owner_id for b in budgets], pa.string()),
            "name": pa.array([b.owner_name for b in budgets], pa.string()),
            "budget_id": self.ids,
            "max_limit": pa.array(self.limit),
            "reset_duration": pa.array([b.reset_duration for b in budgets], pa.string()),
        }
        self.owner_keys = [(b.owner_type, b.owner_id) for b in budgets]


_STATIC: dict[int, tuple[Hierarchy, _Static]] = {}


def _static(hierarchy: Hierarchy) -> _Static:
    hit = _STATIC.get(id(hierarchy))
    if hit is None or hit[0] is not hierarchy:
        hit = (hierarchy, _Static(hierarchy))
        _STATIC[id(hierarchy)] = hit
    return hit[1]


def status_table(con: duckdb.DuckDBPyConnection, hierarchy: Hierarchy, at: datetime | None = None) -> pa.Table:
    """Every budget's status at ``at`` (default now), as one Arrow table (STATUS_SCHEMA), in
    the hierarchy's budget order. ``con`` has ``budget_usage`` (per period) and
    ``rollup_minute``. Vectorised: one period computation per distinct period, one join for
    the usage, one grouped query per owner type for the burn rate."""
    at = (at or datetime.now(UTC)).astimezone(UTC)
    if not hierarchy.budgets:
        return STATUS_SCHEMA.empty_table()
    st = _static(hierarchy)
    bounds = np.array([[_ms(p.start(at)), _ms(p.end(at))] for p in st.periods], dtype=np.int64)
    start_ms, end_ms = bounds[st.period_of, 0], bounds[st.period_of, 1]
    wanted = pa.table({"i": pa.array(np.arange(len(start_ms))), "budget_id": st.ids,
                       "period_start": pa.array(start_ms, pa.timestamp("ms", "UTC"))})  # fmt: skip
    con.register("budget_wanted", wanted)
    try:
        got = con.sql(
            """SELECT w.i, coalesce(sum(u.usage), 0)::DOUBLE AS usage, coalesce(sum(u.requests), 0)::BIGINT AS n
               FROM budget_wanted w LEFT JOIN budget_usage u
                 ON u.budget_id = w.budget_id AND u.period_start = w.period_start
               GROUP BY w.i ORDER BY w.i"""
        ).to_arrow_table()
    finally:
        con.unregister("budget_wanted")
    used = got.column("usage").to_numpy()
    requests = got.column("n").to_numpy()
    covered, burn = _burn_by_owner(con, at)
    # minute rollups reach back an hour: an owner without spend in it burns 0; otherwise unknown
    rate = np.array([burn.get(k, 0.0 if covered else np.nan) for k in st.owner_keys], dtype=np.float64)
    at_ms = _ms(at)
    hours_in = np.maximum((at_ms - start_ms) / 3.6e6, 1e-9)
    young = hours_in < BURN_WINDOW.total_seconds() / 3600
    average = np.where(hours_in >= 1 / 60, used / hours_in, 0.0)
    # no minute rollups for the last hour, or a period younger than that hour: the period's average
    use_average = np.isnan(rate) | young
    rate = np.where(use_average, np.where(hours_in >= 1 / 60, average, np.nan_to_num(rate)), rate)
    remaining = st.limit - used
    with np.errstate(divide="ignore", invalid="ignore"):
        hours_left = np.where(rate > 0, remaining / rate, np.inf)
    exhaust = np.where(remaining <= 0, at_ms, at_ms + np.minimum(hours_left, EXHAUSTION_HORIZON_H) * 3.6e6)
    never = (remaining > 0) & ~(hours_left < EXHAUSTION_HORIZON_H)
    return pa.table({
        **st.columns,
        "current_usage": pa.array(np.round(used, 10)),
        "remaining": pa.array(np.round(remaining, 10)),
        "utilization": pa.array(used / st.limit),
        "period_start": pa.array(start_ms, pa.timestamp("ms", "UTC")),
        "reset_at": pa.array(end_ms, pa.timestamp("ms", "UTC")),
        "burn_rate_usd_per_hour": pa.array(rate),
        "projected_exhaustion_at": pa.array(exhaust.astype(np.int64), pa.timestamp("ms", "UTC"), mask=never),
        "requests": pa.array(requests.astype(np.int64)),
    }, schema=STATUS_SCHEMA)  # fmt: skip


def status(con: duckdb.DuckDBPyConnection, hierarchy: Hierarchy, at: datetime | None = None) -> list[BudgetStatus]:
    """``status_table`` as BudgetStatus records (RFC 3339 times), for the command line."""
    table = status_table(con, hierarchy, at)
    out = []
    for row in table.to_pylist():
        for k in ("period_start", "reset_at", "projected_exhaustion_at"):
            row[k] = None if row[k] is None else _rfc3339(row[k])
        out.append(BudgetStatus(**row))
    return out


def _burn_by_owner(con: duckdb.DuckDBPyConnection, at: datetime) -> tuple[bool, dict[tuple[str, str], float]]:
    """(whether the minute rollups cover the last BURN_WINDOW, USD per hour over it per (owner
    type, owner id))."""
    since = at - BURN_WINDOW
    try:
        first = con.execute("SELECT min(bucket) FROM rollup_minute").fetchall()[0][0]  # type: ignore[index]
    except duckdb.Error:
        return False, {}
    if first is None or first > since:
        return False, {}
    out: dict[tuple[str, str], float] = {}
    for owner_type in OWNER_TYPES:
        column = owner_type
        for owner, cost in con.execute(
            f"""SELECT {column}, sum(cost_usd) FROM rollup_minute
                WHERE bucket >= ? AND bucket < ? AND {column} IS NOT NULL GROUP BY 1""",
            [since, at],
        ).fetchall():
            out[(owner_type, owner)] = float(cost) / (BURN_WINDOW.total_seconds() / 3600)
    return True, out


STATUS_SCHEMA = pa.schema([
    ("type", pa.string()), ("id", pa.string()), ("name", pa.string()), ("budget_id", pa.string()),
    ("max_limit", pa.float64()), ("reset_duration", pa.string()), ("current_usage", pa.float64()),
    ("remaining", pa.float64()), ("utilization", pa.float64()), ("period_start", pa.timestamp("ms", "UTC")),
    ("reset_at", pa.timestamp("ms", "UTC")), ("burn_rate_usd_per_hour", pa.float64()),
    ("projected_exhaustion_at", pa.timestamp("ms", "UTC")), ("requests", pa.int64()),
])  # fmt: skip
