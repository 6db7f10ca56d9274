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
reset time), usage in it, remaining, utilization, the burn rate over the last hour and, at that
rate, when the limit will be reached.

**As of ``at``** (one rule for budgets, reports, the forecast and the alert rules): a status at
``at`` counts exactly the events whose timestamp is **strictly before** ``at`` (``timestamp <
at``): periods and windows are half-open, ``[start, at)``, so at a period's first instant its usage
is 0, and an event stamped exactly ``at`` counts from the next moment on. Never the future, however
much the lake holds after ``at``; a late event (stamped before ``at``, landed later) counts when
``at`` is asked again. How (``status_table``):

- ``at`` recent (at or after ``budget_recent_since``): the hook also keeps every counted event of
  the last two hours, and any stamped later (clock skew), one row each (``budget_recent``). Usage
  is the stored usage of the period minus those recent events stamped at or after ``at``; the burn
  rate is the recent events in ``[at - 1 h, at)``. No rollup or raw file is read: this is serve's
  path (alert rules, /metrics, the landed check), evaluated every few seconds.
- otherwise: the stored usage of the period's whole UTC dates before ``at``'s date, plus
  ``[max(period start, that date's midnight), at)`` cut exactly (``Exact``): its whole UTC hours
  from ``rollup_hourly``, the minutes of a partial hour from ``rollup_minute`` (where the minute
  rollups hold the whole hour — they are kept ``minute_retention_days``), and what is left (a
  partial minute, or a partial hour the minute rollups no longer hold) from the raw lake files of
  that date, deduplicated as the rollups deduplicate. The burn window ``[at - 1 h, at)`` is cut the
  same way.
- when even the raw files of that date are gone (raw retention), what no data can cut is counted
  by bucket: a rollup bucket counts whole for the window it starts in, and only if it ended by
  ``at`` (never the future); the burn rate is then the period's average.
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

from aggregator.hierarchy import Budget, Hierarchy
from aggregator.rollup import STATE_DIR, raw_measure_sql, sql_string

BURN_WINDOW = timedelta(hours=1)
EXHAUSTION_HORIZON_H = 24 * 366 * 100  # further than a century at this rate: "not in sight" (None)
# budget_recent holds at least this much of the recent past (wall clock), every counted event:
# the burn window (an hour) and some slack.
RECENT_SPAN = timedelta(hours=2)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)


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
        self._fill_maps: tuple[pa.Table, pa.Table] | None = None

    # --- the rollup hook -----------------------------------------------------------------------

    def fill_maps(self) -> tuple[pa.Table, pa.Table]:
        """The hierarchy as two lookup tables: (vk, team) and (t, customer), keys that have one."""
        if self._fill_maps is None:
            vk_team = {vk: team for vk, (_, team) in self.h.virtual_keys.items() if team}
            team_customer = {team: cust for team, (_, cust) in self.h.teams.items() if cust}
            self._fill_maps = (
                pa.table({"vk": pa.array(list(vk_team), pa.string()), "team": pa.array(list(vk_team.values()), pa.string())}),
                pa.table({"t": pa.array(list(team_customer), pa.string()),
                          "customer": pa.array(list(team_customer.values()), pa.string())}),
            )  # fmt: skip
        return self._fill_maps

    def fill_sql(self, con: duckdb.DuckDBPyConnection, table: str) -> None:
        """Contract 1: a missing team is the virtual key's, a missing customer the team's
        (never overwriting what the event says), in place on ``table``. (The rollups apply the
        same rule in a query over ``fill_maps()``.)"""
        vk_team, team_customer = self.fill_maps()
        if vk_team.num_rows:
            con.register("hier_vk", vk_team)
            con.execute(f"UPDATE {table} SET team = m.team FROM hier_vk m "
                        f"WHERE {table}.team IS NULL AND {table}.virtual_key = m.vk")  # fmt: skip
            con.unregister("hier_vk")
        if team_customer.num_rows:
            con.register("hier_team", team_customer)
            con.execute(f"UPDATE {table} SET customer = m.customer FROM hier_team m "
                        f"WHERE {table}.customer IS NULL AND {table}.team = m.t")  # fmt: skip
            con.unregister("hier_team")

    @staticmethod
    def schema(con: duckdb.DuckDBPyConnection) -> None:
        con.execute("CREATE TABLE IF NOT EXISTS budget_usage (budget_id VARCHAR, period_start TIMESTAMPTZ, "
                    "day DATE, usage DOUBLE, requests BIGINT)")  # fmt: skip
        con.execute("CREATE TABLE IF NOT EXISTS budget_days (day DATE PRIMARY KEY, fingerprint VARCHAR)")
        # Every counted (priced) event stamped at or after budget_recent_since, one row each, owners
        # filled: what an as-of question about the recent past subtracts (see the module's doc).
        # No row in budget_recent_since: not kept yet (ensure() starts it).
        con.execute("CREATE TABLE IF NOT EXISTS budget_recent (day DATE, ts TIMESTAMPTZ, virtual_key VARCHAR, "
                    "team VARCHAR, customer VARCHAR, cost_usd DOUBLE)")  # fmt: skip
        con.execute("CREATE TABLE IF NOT EXISTS budget_recent_since (since TIMESTAMPTZ)")

    def forget_days(self, con: duckdb.DuckDBPyConnection, days: list[date]) -> None:
        self.schema(con)
        con.execute("DELETE FROM budget_usage WHERE day IN (SELECT unnest(?::DATE[]))", [days])
        con.execute("DELETE FROM budget_days WHERE day IN (SELECT unnest(?::DATE[]))", [days])
        con.execute("DELETE FROM budget_recent WHERE day IN (SELECT unnest(?::DATE[]))", [days])

    def add(self, con: duckdb.DuckDBPyConnection, table: str, whole_days: bool = False,
            days: list[date] | None = None) -> None:  # fmt: skip
        """Add the usage of the (deduplicated) event rows in ``table``; ``whole_days``: they are
        every event of their dates (a recomputation), not an increment; ``days``: the dates the
        rows are of, when the caller knows them (else read from ``table``)."""
        self.schema(con)
        rows: pa.Table = con.sql(
            f"""SELECT day, epoch_ms("timestamp") AS ts, virtual_key, team, customer, cost_usd
                FROM {table} WHERE cost_usd IS NOT NULL"""
        ).to_arrow_table()
        if days is None:
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
        self._keep_recent(con, rows, prune=not whole_days)
        for d in days:
            con.execute("INSERT OR REPLACE INTO budget_days VALUES (?, ?)", [d, self.fingerprint])

    def _keep_recent(self, con: duckdb.DuckDBPyConnection, rows: pa.Table, prune: bool) -> None:
        """Add the rows stamped at or after ``budget_recent_since`` to ``budget_recent``; with
        ``prune`` (an increment, on serve's clock) first move that mark up to RECENT_SPAN before
        now and drop what is older. The mark only moves forward, so every counted event stamped
        at or after it is in the table (the invariant an as-of status relies on)."""
        since = recent_since(con)
        if since is None:
            return  # not kept yet: ensure() starts it from the raw files
        if prune:
            floor = _floor(datetime.now(UTC), HOUR) - RECENT_SPAN
            if floor > since:
                since = floor
                con.execute("DELETE FROM budget_recent WHERE ts < ?", [since])
                con.execute("UPDATE budget_recent_since SET since = ?", [since])
        if not rows.num_rows:
            return
        keep = rows.filter(pc.greater_equal(rows.column("ts"), pa.scalar(_ms(since), pa.int64())))
        if keep.num_rows:
            con.register("budget_recent_new", keep.select(["day", "ts", "virtual_key", "team", "customer", "cost_usd"]))
            con.execute("""INSERT INTO budget_recent SELECT day, make_timestamptz(ts * 1000), virtual_key, team,
                           customer, cost_usd FROM budget_recent_new""")  # fmt: skip
            con.unregister("budget_recent_new")

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
        self._load_raw(con, paths)
        self.add(con, "budget_raw", whole_days=True)

    def _load_raw(self, con: duckdb.DuckDBPyConnection, paths: list[str]) -> None:
        """``budget_raw``: the events of raw lake files, one per (UTC date, event_id), owners filled."""
        con.execute(
            """CREATE OR REPLACE TEMP TABLE budget_raw AS
               SELECT "timestamp"::DATE AS day, "timestamp", virtual_key, team, customer, cost_usd
               FROM read_parquet(?, union_by_name = true)
               QUALIFY row_number() OVER (PARTITION BY "timestamp"::DATE, event_id
                                          ORDER BY ingested_at, source_topic, source_partition, source_offset) = 1""",
            [paths],
        )
        self.fill_sql(con, "budget_raw")

    def start_recent(self, con: duckdb.DuckDBPyConnection, since: datetime, paths: list[str]) -> None:
        """Start ``budget_recent`` at ``since`` from the raw files ``paths`` (every file holding
        events of the dates from ``since`` on). In the caller's transaction."""
        self.schema(con)
        con.execute("DELETE FROM budget_recent")
        con.execute("DELETE FROM budget_recent_since")
        if paths:
            self._load_raw(con, paths)
            con.execute("""INSERT INTO budget_recent SELECT day, "timestamp", virtual_key, team, customer, cost_usd
                           FROM budget_raw WHERE cost_usd IS NOT NULL AND "timestamp" >= ?""", [since])  # fmt: skip
        con.execute("INSERT INTO budget_recent_since VALUES (?)", [since])

    def ensure(self, con: duckdb.DuckDBPyConnection, lake: Path, at: datetime | None = None) -> int:
        """Recompute usage for the dates the budgets' current periods cover that were computed
        for other budgets (or none). Returns how many dates were recomputed."""
        self.schema(con)
        if not self.h.budgets:
            return 0
        at = at or datetime.now(UTC)
        since = recent_since(con)
        if since is None:  # the recent events are not kept yet: start them, from the raw files
            since = _floor(datetime.now(UTC), HOUR) - RECENT_SPAN
            paths = [str(lake / p) for (p,) in con.execute(
                "SELECT path FROM files WHERE day >= ? ORDER BY path", [since.date()]).fetchall()]  # fmt: skip
            con.execute("BEGIN TRANSACTION")
            try:
                self.start_recent(con, since, paths)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        first = min(p.start(at) for p in {b.period for b in self.h.budgets}).astimezone(UTC).date()
        first = min(first, since.date())  # the recent events are filled for these budgets too
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
        # each row says which budgets its dates were computed for; budget_days.parquet says it per
        # date. Per event date: an as-of status takes the whole dates before its own.
        con.execute(
            f"""COPY (SELECT u.budget_id, u.period_start, u.day, sum(u.usage) AS usage,
                             sum(u.requests)::BIGINT AS requests, d.fingerprint
                      FROM budget_usage u JOIN budget_days d USING (day) GROUP BY ALL ORDER BY ALL)
                TO {sql_string(tmp)} (FORMAT parquet)"""
        )
        os.replace(tmp, out / "budget_usage.parquet")
        since = recent_since(con)
        if since is not None:  # the recent events, with their mark in the file's metadata
            tmp4 = out / f".budget_recent-{uuid.uuid4().hex[:8]}.tmp"
            # written by DuckDB (in parallel, no round trip through Python): every counted event of
            # the last two hours is millions of rows at ~100k events/s
            meta = f"{{'spendlake.since': {sql_string(_rfc3339_ms(since))}, 'spendlake.fingerprint': {sql_string(self.fingerprint)}}}"
            con.execute(f"COPY (SELECT * FROM budget_recent ORDER BY ts) TO {sql_string(tmp4)} "
                        f"(FORMAT parquet, KV_METADATA {meta})")  # fmt: skip
            os.replace(tmp4, out / "budget_recent.parquet")
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
        self.index = {b.id: i for i, b in enumerate(budgets)}
        self.usage = BudgetUsage(hierarchy)  # its per-event usage (_usage), for events to take back


_STATIC: dict[int, tuple[Hierarchy, _Static]] = {}


def _static(hierarchy: Hierarchy) -> _Static:
    hit = _STATIC.get(id(hierarchy))
    if hit is None or hit[0] is not hierarchy:
        hit = (hierarchy, _Static(hierarchy))
        _STATIC[id(hierarchy)] = hit
    return hit[1]


# --- as of a moment ------------------------------------------------------------------------------


def _floor(t: datetime, unit: timedelta) -> datetime:
    """``t`` floored to a whole ``unit`` (minute, hour, day) of UTC."""
    us = (t - _EPOCH) // timedelta(microseconds=1)
    step = unit // timedelta(microseconds=1)
    return _EPOCH + timedelta(microseconds=us - us % step)


def _ceil(t: datetime, unit: timedelta) -> datetime:
    f = _floor(t, unit)
    return f if f == t else f + unit


def _rfc3339_ms(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _ts(t: datetime) -> str:
    """A TIMESTAMPTZ literal (the instants here are ours, not user text)."""
    return f"TIMESTAMPTZ '{t.astimezone(UTC).isoformat()}'"


def _has(con: duckdb.DuckDBPyConnection, *names: str) -> bool:
    """Whether ``con`` has tables or views of all these names (asked without failing: /metrics
    asks inside a transaction that an error would abort)."""
    got = con.execute(
        """SELECT (SELECT count(DISTINCT table_name) FROM duckdb_tables() WHERE table_name IN (SELECT unnest($1)))
                + (SELECT count(DISTINCT view_name) FROM duckdb_views() WHERE view_name IN (SELECT unnest($1)))""",
        [list(names)],
    ).fetchall()[0][0]  # fmt: skip
    return int(got) >= len(names)


def recent_since(con: duckdb.DuckDBPyConnection) -> datetime | None:
    """From when ``budget_recent`` holds every counted event; None where it is not kept."""
    if not _has(con, "budget_recent_since", "budget_recent"):
        return None
    got = con.execute("SELECT max(since) FROM budget_recent_since").fetchall()[0][0]
    return None if got is None else got.astimezone(UTC)


def lake_of(con: duckdb.DuckDBPyConnection) -> Path | None:
    """The lake whose state ``con`` is connected to (``<lake>/_state/spendlake.duckdb``); None for
    an in-memory connection (over published files), which has to be told."""
    try:
        got = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchall()
    except duckdb.Error:
        return None
    path = Path(got[0][0]) if got and got[0][0] else None
    return path.parent.parent if path is not None and path.parent.name == STATE_DIR else None


OWNER_DIMS = ("virtual_key", "team", "customer")
OWNER_MEASURES = ("cost_usd", "requests", "unpriced")
_MEASURE_TYPES = {"requests": "BIGINT", "unpriced": "BIGINT", "cost_usd": "DOUBLE", "input_tokens": "BIGINT",
                  "output_tokens": "BIGINT"}  # fmt: skip


class Exact:
    """Rows shaped like the rollups — ``seg, day, bucket, <dims>, <measures>`` — holding exactly
    the events stamped in half-open windows ``[lo, hi)``, each row tagged with its window's index
    ``seg``. A window is cut (see the module's doc): its part from ``recent_since`` on from
    ``budget_recent`` (``recent=True``: owner dims and cost only), whole UTC hours from
    ``rollup_hourly``, the whole minutes of a partial hour from ``rollup_minute`` where those hold
    the hour's every request, and the rest from the raw files of its date (deduplicated as the
    rollups are: one row per (UTC date, event_id), the earliest ingested copy; team and customer
    filled from the hierarchy, as the rollups fill them). A part no data can cut (raw files gone)
    counts the finest bucket that starts in it, whole, if it ended by ``until``; its window's index
    is then in ``inexact``.

    ``fill_all``: fill team and customer from the hierarchy on every row (budgets: what the budget
    usage was computed with), not only on the raw ones (reports keep the rollups' labels).
    ``con`` needs ``rollup_hourly`` and ``rollup_minute`` (tables or published views); ``lake``
    the raw files (None: none can be read)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, lake: Path | None, hierarchy: Hierarchy, *,
                 dims: tuple[str, ...] = OWNER_DIMS, measures: tuple[str, ...] = OWNER_MEASURES,
                 fill_all: bool = True, recent: bool | datetime | None = True) -> None:  # fmt: skip
        """``recent``: whether to read ``budget_recent`` (True: from ``recent_since``; or the mark
        itself, the caller having read it; False or None: not)."""
        self.con = con
        self.lake = None if lake is None else Path(lake)
        self.dims, self.measures = tuple(dims), tuple(measures)
        self.fill_all = fill_all
        self.since = recent_since(con) if recent is True else recent or None
        self.inexact: set[int] = set()
        self.h = hierarchy
        self._tag = uuid.uuid4().hex[:8]
        self._names: list[str] = []
        self._maps: tuple[str, str] | None = None
        self._raw: dict[date, str | None] = {}
        self._hourly: dict[datetime, int] = {}
        self._minutes: dict[datetime, bool] = {}
        self._raw_ok: dict[datetime, bool] = {}

    def close(self) -> None:
        for name in self._names:
            self.con.unregister(name)
        self._names = []

    def __enter__(self) -> Exact:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _register(self, what: str, table: pa.Table) -> str:
        name = f"asof_{what}_{self._tag}"
        self.con.register(name, table)
        self._names.append(name)
        return name

    # --- the plan ------------------------------------------------------------------------------

    def sql(self, windows: list[tuple[datetime, datetime]], until: datetime) -> str:
        """One query of the rows of every window (no parameters: a view may hold it)."""
        parts: list[str] = []
        kinds: set[str] = set()
        for seg, (lo, hi) in enumerate(windows):
            for kind, x, y in self._plan(seg, lo.astimezone(UTC), hi.astimezone(UTC), until.astimezone(UTC)):
                kinds.add(kind)
                parts.append(self._piece(kind, seg, x, y))
        cols = ("seg", "day", "bucket", *self.dims, *self.measures)
        if not parts:
            types = {"seg": "INTEGER", "day": "DATE", "bucket": "TIMESTAMPTZ", **_MEASURE_TYPES}
            return "SELECT " + ", ".join(f"NULL::{types.get(c, 'VARCHAR')} AS {c}" for c in cols) + " WHERE false"
        body = " UNION ALL ".join(f"({q})" for q in parts)
        if self.fill_all and kinds - {"recent", "raw"}:  # recent and raw rows are filled already
            body = self._filled(body)
        return f"SELECT {', '.join(cols)} FROM ({body})"

    def _plan(self, seg: int, lo: datetime, hi: datetime, until: datetime) -> list[tuple[str, datetime, datetime]]:
        out: list[tuple[str, datetime, datetime]] = []
        if lo >= hi:
            return out
        if self.since is not None and hi > self.since:
            out.append(("recent", max(lo, self.since), hi))
            hi = self.since
            if lo >= hi:
                return out
        h0, h1 = _ceil(lo, HOUR), _floor(hi, HOUR)
        if h0 < h1:
            out.append(("hourly", h0, h1))
            edges = [(lo, h0), (h1, hi)]
        elif h0 == h1:
            edges = [(lo, h0), (h0, hi)]
        else:  # within one hour
            edges = [(lo, hi)]
        for x, y in edges:
            if x < y:
                out += self._edge(seg, x, y, until)
        return out

    def _edge(self, seg: int, x: datetime, y: datetime, until: datetime) -> list[tuple[str, datetime, datetime]]:
        """``[x, y)`` within one UTC hour: its whole minutes, then raw files for the rest."""
        hour = _floor(x, HOUR)
        n = self._hour_requests(hour)
        if n == 0:
            return []  # the rollups hold nothing of that hour
        minutes = self._minutes_hold(hour, n)
        out: list[tuple[str, datetime, datetime]] = []
        fine = [(x, y)]
        m0, m1 = _ceil(x, MINUTE), _floor(y, MINUTE)
        if minutes and m0 < m1:
            out.append(("minute", m0, m1))
            fine = [(x, m0), (m1, y)]
        for fx, fy in fine:
            if fx >= fy:
                continue
            if self._raw_holds(hour, n):
                out.append(("raw", fx, fy))
                continue
            self.inexact.add(seg)  # nothing cuts it: the bucket starting in it, if it ended by `until`
            unit, kind = (MINUTE, "minute") if minutes else (HOUR, "hourly")
            b = _ceil(fx, unit)
            if b < fy and b + unit <= until:
                out.append((kind, b, b + unit))
        return out

    def _hour_requests(self, hour: datetime) -> int:
        if hour not in self._hourly:
            self._hourly[hour] = int(self.con.execute(
                "SELECT coalesce(sum(requests), 0) FROM rollup_hourly WHERE day = ? AND bucket = ?",
                [hour.date(), hour]).fetchall()[0][0])  # fmt: skip
        return self._hourly[hour]

    def _minutes_hold(self, hour: datetime, n: int) -> bool:
        """Whether the minute rollups hold every request of the hour (they are kept only
        ``minute_retention_days``)."""
        if hour not in self._minutes:
            got = self.con.execute(
                "SELECT coalesce(sum(requests), 0) FROM rollup_minute WHERE day = ? AND bucket >= ? AND bucket < ?",
                [hour.date(), hour, hour + HOUR]).fetchall()[0][0]  # fmt: skip
            self._minutes[hour] = int(got) == n
        return self._minutes[hour]

    def _raw_holds(self, hour: datetime, n: int) -> bool:
        """Whether the raw files hold (at least) the hour's events the rollups counted."""
        if hour not in self._raw_ok:
            name = self._raw_of(hour.date())
            ok = name is not None and int(self.con.execute(
                f'SELECT count(*) FROM {name} WHERE "timestamp" >= ? AND "timestamp" < ?',
                [hour, hour + HOUR]).fetchall()[0][0]) >= n  # fmt: skip
            self._raw_ok[hour] = ok
        return self._raw_ok[hour]

    def _fill_maps(self) -> tuple[str, str]:
        if self._maps is None:
            vk_team = {vk: team for vk, (_, team) in self.h.virtual_keys.items() if team}
            team_customer = {team: cust for team, (_, cust) in self.h.teams.items() if cust}
            self._maps = (
                self._register("vt", pa.table({"vk": pa.array(list(vk_team), pa.string()),
                                               "team": pa.array(list(vk_team.values()), pa.string())})),
                self._register("tc", pa.table({"t": pa.array(list(team_customer), pa.string()),
                                               "customer": pa.array(list(team_customer.values()), pa.string())})),
            )  # fmt: skip
        return self._maps

    def _filled(self, inner: str, columns: tuple[str, ...] | None = None) -> str:
        """``inner`` with a missing team taken from the virtual key's and a missing customer from
        the team's (never overwriting what the row says): ``BudgetUsage.fill_sql`` as a query."""
        vt, tc = self._fill_maps()
        cols = columns or ("seg", "day", "bucket", *self.dims, *self.measures)
        select = ", ".join("coalesce(f.team, vt.team) AS team" if c == "team" else
                           "coalesce(f.customer, tc.customer) AS customer" if c == "customer" else f'f."{c}"'
                           for c in cols)  # fmt: skip
        return (f"SELECT {select} FROM ({inner}) f LEFT JOIN {vt} vt ON vt.vk = f.virtual_key "
                f"LEFT JOIN {tc} tc ON tc.t = coalesce(f.team, vt.team)")  # fmt: skip

    def _raw_of(self, day: date) -> str | None:
        """The raw events of one UTC date (a registered relation), or None without raw files."""
        if day not in self._raw:
            folder = None if self.lake is None else self.lake / "events" / f"date={day.isoformat()}"
            files = sorted(str(f) for f in folder.glob("*.parquet")) if folder is not None and folder.is_dir() else []
            name = None
            if files:
                inputs = {"cost_usd", "cost_source"} | {m for m in self.measures if m.endswith("_tokens")}
                cols = ("timestamp", *dict.fromkeys((*OWNER_DIMS, *self.dims)), *sorted(inputs))
                dedup = f"""SELECT * FROM read_parquet({"[" + ", ".join(sql_string(f) for f in files) + "]"},
                                                    union_by_name = true)
                            QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY ingested_at, source_topic,
                                                       source_partition, source_offset) = 1"""  # fmt: skip
                table = self.con.sql(self._filled(dedup, cols)).to_arrow_table()
                name = self._register(f"raw_{day.strftime('%Y%m%d')}", table)
            self._raw[day] = name
        return self._raw[day]

    def _piece(self, kind: str, seg: int, x: datetime, y: datetime) -> str:
        dims = ", ".join(self.dims)
        if kind in ("hourly", "minute"):
            last = (y - timedelta(microseconds=1)).date()
            return (f"SELECT {seg}::INTEGER AS seg, day, bucket, {dims}, {', '.join(self.measures)} "
                    f"FROM rollup_{kind} WHERE day >= DATE '{x.date()}' AND day <= DATE '{last}' "
                    f"AND bucket >= {_ts(x)} AND bucket < {_ts(y)}")  # fmt: skip
        if kind == "raw":
            name = self._raw_of(x.date())
            assert name is not None
            measures = ", ".join(f"{raw_measure_sql(m)} AS {m}" for m in self.measures)
            return (f"SELECT {seg}::INTEGER AS seg, DATE '{x.date()}' AS day, {_ts(x)} AS bucket, {dims}, {measures} "
                    f'FROM {name} WHERE "timestamp" >= {_ts(x)} AND "timestamp" < {_ts(y)} GROUP BY ALL')  # fmt: skip
        assert kind == "recent" and self.dims == OWNER_DIMS
        recent = {"cost_usd": "cost_usd", "requests": "1::BIGINT", "unpriced": "0::BIGINT"}
        measures = ", ".join(f"{recent[m]} AS {m}" for m in self.measures)
        return (f"SELECT {seg}::INTEGER AS seg, day, ts AS bucket, {dims}, {measures} FROM budget_recent "
                f"WHERE ts >= {_ts(x)} AND ts < {_ts(y)}")  # fmt: skip

    def by_owner(self, windows: list[tuple[datetime, datetime]],
                 until: datetime) -> dict[int, dict[tuple[str, str], list[float]]]:  # fmt: skip
        """{window index: {(owner type, owner id): [cost, priced requests]}} (owners as budgets
        count them: a key's spend is its team's and its customer's too)."""
        out: dict[int, dict[tuple[str, str], list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0]))
        if not windows:
            return out
        rows = self.con.execute(
            f"""SELECT seg, virtual_key, team, customer, sum(cost_usd)::DOUBLE, sum(requests - unpriced)::BIGINT
                FROM ({self.sql(windows, until)}) GROUP BY ALL"""
        ).fetchall()
        for seg, vk, team, customer, cost, n in rows:
            for owner in (("virtual_key", vk), ("team", team), ("customer", customer)):
                if owner[1] is not None:
                    acc = out[seg][owner]
                    acc[0] += cost
                    acc[1] += n
        return out


def status_table(con: duckdb.DuckDBPyConnection, hierarchy: Hierarchy, at: datetime | None = None,
                 lake: Path | None = None, period_at: datetime | None = None) -> pa.Table:  # fmt: skip
    """Every budget's status at ``at`` (default now), as one Arrow table (STATUS_SCHEMA), in the
    hierarchy's budget order: usage counts exactly the events stamped **before** ``at`` (the as-of
    rule, see the module's doc). ``period_at`` (default ``at``, never after it) picks the period:
    a report asks how a budget stood when its own period closed (``at`` = the end, ``period_at``
    an instant before it). ``con`` has ``budget_usage`` (per period and date), ``budget_recent``
    where kept, and ``rollup_hourly`` / ``rollup_minute``; ``lake`` is where the raw files are
    (default: the lake of ``con``'s state file). Vectorised per period and per owner."""
    at = (at or datetime.now(UTC)).astimezone(UTC)
    period_at = at if period_at is None else min(period_at.astimezone(UTC), at)
    if not hierarchy.budgets:
        return STATUS_SCHEMA.empty_table()
    st = _static(hierarchy)
    bounds = np.array([[_ms(p.start(period_at)), _ms(p.end(period_at))] for p in st.periods], dtype=np.int64)
    starts = [p.start(period_at).astimezone(UTC) for p in st.periods]
    start_ms, end_ms = bounds[st.period_of, 0], bounds[st.period_of, 1]
    since = recent_since(con)
    recent = since is not None and at >= since
    day0 = _floor(at, DAY)
    # the period's usage on whole dates: all of them (recent: what is at or after `at` is taken
    # back below), or those before at's date (the rest of it is cut exactly below)
    used, requests = _stored(con, st, start_ms, None if recent else day0.date())
    with Exact(con, lake if lake is not None else lake_of(con), hierarchy, recent=since) as exact:
        windows: list[tuple[datetime, datetime]] = []
        cuts: list[datetime] = []
        if recent:
            _take_back_future(con, st, start_ms, at, used, requests)
        else:  # at's date up to at: from max(period start, midnight), one window between cuts
            cuts = sorted({max(s, day0) for s in starts if max(s, day0) < at})
            windows = [(c, cuts[k + 1] if k + 1 < len(cuts) else at) for k, c in enumerate(cuts)]
        burn_seg = len(windows)
        sums = exact.by_owner([*windows, (at - BURN_WINDOW, at)], at)
    if cuts:
        for i, (owner_key, p) in enumerate(zip(st.owner_keys, st.period_of.tolist())):
            lo = max(starts[p], day0)
            for k, c in enumerate(cuts):
                if c >= lo:
                    got = sums[k].get(owner_key)
                    if got is not None:
                        used[i] += got[0]
                        requests[i] += got[1]
    burn_exact = burn_seg not in exact.inexact
    hours = BURN_WINDOW.total_seconds() / 3600
    burn = sums[burn_seg]
    # an owner without spend in the last hour burns 0; where no data cuts that hour: unknown
    rate = np.array([burn[k][0] / hours if k in burn else 0.0 for k in st.owner_keys] if burn_exact
                    else [np.nan] * len(st.owner_keys), dtype=np.float64)  # fmt: skip
    at_ms = _ms(at)
    hours_in = np.maximum((at_ms - start_ms) / 3.6e6, 1e-9)
    young = hours_in < BURN_WINDOW.total_seconds() / 3600
    average = np.where(hours_in >= 1 / 60, used / hours_in, 0.0)
    # the last hour not known, or a period younger than that hour: the period's average
    use_average = np.isnan(rate) | young
    rate = np.where(use_average, np.where(hours_in >= 1 / 60, average, np.nan_to_num(rate)), rate)
    remaining = st.limit - used
    with np.errstate(divide="ignore", invalid="ignore"):
        hours_left = np.where(rate > 0, remaining / rate, np.inf)
    exhaust = np.where(remaining <= 0, at_ms, at_ms + np.minimum(hours_left, EXHAUSTION_HORIZON_H) * 3.6e6)
    never = (remaining > 0) & ~(hours_left < EXHAUSTION_HORIZON_H)
    return pa.table({
        **st.columns,
        "current_usage": pa.array(np.round(used, 10) + 0.0),
        "remaining": pa.array(np.round(remaining, 10) + 0.0),
        "utilization": pa.array(used / st.limit),
        "period_start": pa.array(start_ms, pa.timestamp("ms", "UTC")),
        "reset_at": pa.array(end_ms, pa.timestamp("ms", "UTC")),
        "burn_rate_usd_per_hour": pa.array(rate),
        "projected_exhaustion_at": pa.array(exhaust.astype(np.int64), pa.timestamp("ms", "UTC"), mask=never),
        "requests": pa.array(requests.astype(np.int64)),
    }, schema=STATUS_SCHEMA)  # fmt: skip


def _stored(con: duckdb.DuckDBPyConnection, st: _Static, start_ms: np.ndarray,
            before: date | None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Each budget's stored usage and requests in its period (on the dates before ``before``)."""
    wanted = pa.table({"i": pa.array(np.arange(len(start_ms))), "budget_id": st.ids,
                       "period_start": pa.array(start_ms, pa.timestamp("ms", "UTC"))})  # fmt: skip
    name = f"budget_wanted_{uuid.uuid4().hex[:8]}"
    con.register(name, wanted)
    try:
        got = con.sql(
            f"""SELECT w.i, coalesce(sum(u.usage), 0)::DOUBLE AS usage, coalesce(sum(u.requests), 0)::BIGINT AS n
                FROM {name} w LEFT JOIN budget_usage u
                  ON u.budget_id = w.budget_id AND u.period_start = w.period_start
                 {"" if before is None else f"AND u.day < DATE '{before.isoformat()}'"}
                GROUP BY w.i ORDER BY w.i"""
        ).to_arrow_table()
    finally:
        con.unregister(name)
    return got.column("usage").to_numpy().copy(), got.column("n").to_numpy().copy()


def _take_back_future(con: duckdb.DuckDBPyConnection, st: _Static, start_ms: np.ndarray, at: datetime,
                      used: np.ndarray, requests: np.ndarray) -> None:  # fmt: skip
    """Subtract the recent events stamped at or after ``at`` from the periods they count in."""
    future = con.sql(
        f"""SELECT day, epoch_ms(ts) AS ts, virtual_key, team, customer, cost_usd FROM budget_recent
            WHERE ts >= {_ts(at)} AND cost_usd IS NOT NULL""").to_arrow_table()  # fmt: skip
    if not future.num_rows:
        return
    delta = st.usage._usage(future)
    for bid, start, usage, n in zip(*(delta.column(c).to_pylist() for c in
                                      ("budget_id", "period_start_ms", "usage", "requests")), strict=True):  # fmt: skip
        i = st.index.get(bid)
        if i is not None and int(start_ms[i]) == start:
            used[i] -= usage
            requests[i] -= n


def status(con: duckdb.DuckDBPyConnection, hierarchy: Hierarchy, at: datetime | None = None,
           lake: Path | None = None, period_at: datetime | None = None) -> list[BudgetStatus]:  # fmt: skip
    """``status_table`` as BudgetStatus records (RFC 3339 times), for the command line."""
    table = status_table(con, hierarchy, at, lake, period_at)
    out = []
    for row in table.to_pylist():
        for k in ("period_start", "reset_at", "projected_exhaustion_at"):
            row[k] = None if row[k] is None else _rfc3339(row[k])
        out.append(BudgetStatus(**row))
    return out


STATUS_SCHEMA = pa.schema([
    ("type", pa.string()), ("id", pa.string()), ("name", pa.string()), ("budget_id", pa.string()),
    ("max_limit", pa.float64()), ("reset_duration", pa.string()), ("current_usage", pa.float64()),
    ("remaining", pa.float64()), ("utilization", pa.float64()), ("period_start", pa.timestamp("ms", "UTC")),
    ("reset_at", pa.timestamp("ms", "UTC")), ("burn_rate_usd_per_hour", pa.float64()),
    ("projected_exhaustion_at", pa.timestamp("ms", "UTC")), ("requests", pa.int64()),
])  # fmt: skip
