"""Incremental rollups of the lake in DuckDB, and their publication as Parquet.

State lives in ``<lake>/_state/spendlake.duckdb``, owned by one process at a time (``spendlake
serve``, or any command that finds it free). What other processes read is published beside it as
Parquet under ``<lake>/_rollups/`` (contract 2: ``query`` and ``budgets`` work while ``serve``
runs, and a DuckDB file open for writing cannot be opened by anyone else).

The unit of work is the **event date**. The lake partitions events by their UTC date, a
duplicate of an event carries the event's own timestamp (a retry is the same event), so every
question "was this event_id counted?" is answered within one date. Rules:

1. Lake files are tracked by identity (path, size, mtime_ns). A file not seen before is rolled
   up incrementally: its rows are deduplicated against the date's ``seen`` set (a 128-bit hash
   of event_id) and within the batch (the earliest ingested copy wins), then added. The seen
   set is asked through a copy in memory (aggregator/seen.py: a binary search per new row, not
   an anti-join over every event of the date), and every file that landed since the last
   update is taken in one batch per date: under a fast stream, the more that waits, the less
   each event costs.
2. A tracked file whose identity changed (``spendlake reprice`` rewrote it) makes its date
   recomputed from all of that date's files. A file that disappears (raw retention) is not
   subtracted: rollups outlive the raw files.
3. Each event date of an update is one DuckDB transaction (its file bookkeeping, seen set,
   rollups, budget usage, and the date on the list to publish), so a crash leaves every date
   either as before or done, never between. Publishing runs after the commits, from the
   ``dirty_days`` list, and a restart finishes it.
4. Late events land in their own time bucket: only their date is touched.

Rollups: ``rollup_minute`` (kept ``minute_retention_days``), ``rollup_hourly`` and ``rollup_daily``
by (bucket, virtual_key, team, customer, provider, model, status); per day without a time bucket,
``rollup_labels`` by (provider, model, team, customer, status) with request-cost histogram buckets
and ``rollup_virtual_keys`` by (virtual_key, team, customer) — the small tables /metrics reads;
per hour, ``rollup_labels_hourly`` by the same labels and ``rollup_models_hourly`` by (provider,
model, status), the hourly trend's. Measures: requests, unpriced requests, cost and its parts,
reported cost, tokens by type, latency sum/count/max.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from aggregator.seen import SeenIndex, split_sql
from ingest.errors import SpendlakeError
from ingest.lake import _fsync_dir  # fsyncs any path it can open read-only, a file too

log = logging.getLogger("spendlake.rollup")

STATE_DIR = "_state"
STATE_FILE = "spendlake.duckdb"
PUBLISH_DIR = "_rollups"
DIMS = ("virtual_key", "team", "customer", "provider", "model", "status")
LABEL_DIMS = ("provider", "model", "team", "customer", "status")
VK_DIMS = ("virtual_key", "team", "customer")
MODEL_DIMS = ("provider", "model", "status")
# Tables by day and a set of labels (no time bucket); published like the grains.


@dataclass(frozen=True)
class Table:
    """One rollup table: ``rollup_<name>`` keyed by (day, [bucket,] dims)."""

    name: str
    dims: tuple[str, ...]
    unit: str | None = None  # date_trunc unit of the time bucket; None = per day only
    histogram: bool = False  # request-cost histogram columns
    where: str = "true"


TABLES = (
    Table("minute", DIMS, "minute"),
    Table("hourly", DIMS, "hour"),
    Table("daily", DIMS, "day"),
    Table("labels", LABEL_DIMS, histogram=True),
    Table("labels_hourly", LABEL_DIMS, "hour"),
    Table("virtual_keys", VK_DIMS, where="virtual_key IS NOT NULL"),
    # the hourly trend's table: a month is ~17k rows (hours x models x status), where
    # rollup_labels_hourly has a row per team and customer too (~3.5M at 50M events)
    Table("models_hourly", MODEL_DIMS, "hour"),
)
NAMES = tuple(t.name for t in TABLES)
TOKENS = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
          "cache_write_1h_tokens", "reasoning_tokens")  # fmt: skip
COSTS = ("cost_usd", "cost_input_usd", "cost_cached_input_usd", "cost_cache_write_usd",
         "cost_output_usd", "cost_reasoning_usd", "reported_cost_usd")  # fmt: skip
# Upper bounds (USD) of the request-cost histogram; +Inf is `requests`.
COST_BUCKETS = (0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0)


def bucket_column(bound: float) -> str:
    return "cost_le_" + f"{bound:g}".replace(".", "_").replace("-", "m")


def sql_string(value: object) -> str:
    """A SQL string literal (for file names, which DuckDB does not take as parameters)."""
    return "'" + str(value).replace("'", "''") + "'"


class StateLocked(SpendlakeError):
    """Another process (``spendlake serve``) holds the rollup state. A SpendlakeError: the
    command line reports it as one line (exit 1)."""


def raw_measure_sql(measure: str, prefix: str = "") -> str:
    """The aggregate of raw event rows that gives one rollup measure (``prefix``: a table alias
    with its dot)."""
    p = prefix
    if measure == "requests":
        return "count(*)::BIGINT"
    if measure == "unpriced":
        return f"count(*) FILTER (WHERE {p}cost_source = 'unpriced')::BIGINT"
    if measure in COSTS:
        return f"coalesce(sum({p}{measure}), 0)::DOUBLE"
    if measure in TOKENS:
        return f"coalesce(sum({p}{measure}), 0)::BIGINT"
    return {"latency_ms_sum": f"coalesce(sum({p}latency_ms), 0)::DOUBLE",
            "latency_count": f"count({p}latency_ms)::BIGINT",
            "latency_ms_max": f"max({p}latency_ms)::DOUBLE"}[measure]  # fmt: skip


def _measures_sql(prefix: str = "") -> str:
    """Aggregates of raw event rows into rollup measures."""
    return ", ".join(f"{raw_measure_sql(m, prefix)} AS {m}" for m in MEASURES)


MEASURES = ("requests", "unpriced", *COSTS, *TOKENS, "latency_ms_sum", "latency_count", "latency_ms_max")


def _merge_sql(measures: Sequence[str]) -> str:
    """Re-aggregating rollup rows (sums, and max for the latency maximum)."""
    return ", ".join(f"max({m}) AS {m}" if m.endswith("_max") else f"sum({m}) AS {m}" for m in measures)


@dataclass
class UpdateStats:
    files_new: int = 0
    files_rewritten: int = 0
    days_recomputed: int = 0
    rows_read: int = 0
    events_added: int = 0
    duplicates: int = 0
    seconds: float = 0.0
    days_published: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LakeFile:
    path: str  # relative to the lake root
    day: date
    size: int
    mtime_ns: int


EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
# A row of a batch read with read_parquet([...]): its file's place in the list and its row in the file.
ROW_ID = "(({0}file_index::BIGINT << 32) + {0}file_row_number)"
RACY_S = 2.0  # a directory changed this recently is listed again, whatever its mtime says


def _no_touch() -> dict[str, set[Any]]:
    return {"minute": set(), "hour": set(), "day": set(), "days": set()}


def lake_files(root: Path, kind: str = "events",
               cache: dict[str, tuple[int, list[LakeFile]]] | None = None) -> list[LakeFile]:  # fmt: skip
    """Every Parquet file of a lake folder. With ``cache``, a date directory whose mtime has not
    changed since it was listed is not listed again: the lake only adds, renames and removes
    files there (never edits in place), and each of those changes the directory's mtime. A
    directory changed in the last RACY_S seconds is listed anyway, because a file system's
    timestamps are coarse (a change in the same tick as the listing would otherwise be missed).
    With a month of one-second flushes that is one listing instead of ~2.6M stat calls."""
    out: list[LakeFile] = []
    now_ns = time.time_ns()
    for d in sorted((root / kind).glob("date=*")):
        try:
            day = date.fromisoformat(d.name[5:])
            dir_mtime = d.stat().st_mtime_ns
        except (ValueError, FileNotFoundError):
            continue
        hit = cache.get(d.name) if cache is not None else None
        if hit is not None and hit[0] == dir_mtime:
            out += hit[1]
            continue
        files = []
        for f in sorted(d.glob("*.parquet")):
            try:
                st = f.stat()
            except FileNotFoundError:
                continue  # replaced or swept between listing and stat
            files.append(LakeFile(f"{kind}/{d.name}/{f.name}", day, st.st_size, st.st_mtime_ns))
        if cache is not None and now_ns - dir_mtime > RACY_S * 1e9:
            cache[d.name] = (dir_mtime, files)
        out += files
    return out


def create_tables(c: duckdb.DuckDBPyConnection) -> None:
    """The state's tables (bookkeeping and the rollups), where they do not exist yet."""
    c.execute("CREATE TABLE IF NOT EXISTS files (path VARCHAR PRIMARY KEY, day DATE, size BIGINT, "
              "mtime_ns BIGINT, rolled_at TIMESTAMPTZ)")  # fmt: skip
    c.execute("CREATE TABLE IF NOT EXISTS seen (day DATE, h UHUGEINT)")
    c.execute("CREATE TABLE IF NOT EXISTS dead_letter_files (path VARCHAR PRIMARY KEY, day DATE, rows BIGINT)")
    c.execute("CREATE TABLE IF NOT EXISTS dirty_days (day DATE PRIMARY KEY)")
    measure_cols = ", ".join(
        f"{m} {'BIGINT' if m in ('requests', 'unpriced', 'latency_count') or m in TOKENS else 'DOUBLE'}"
        for m in MEASURES
    )
    hist = ", ".join(f"{bucket_column(b)} BIGINT" for b in COST_BUCKETS)
    for t in TABLES:
        cols = ["day DATE", *(["bucket TIMESTAMPTZ"] if t.unit else []), *(f"{d} VARCHAR" for d in t.dims),
                measure_cols, *([hist] if t.histogram else [])]  # fmt: skip
        c.execute(f"CREATE TABLE IF NOT EXISTS rollup_{t.name} ({', '.join(cols)})")


class Rollup:
    """The rollup state of one lake. ``Rollup(lake).update()`` brings it up to date."""

    def __init__(self, lake: str | os.PathLike[str], *, minute_retention_days: int = 3,
                 budget_hook: Any = None, event_hooks: Sequence[Any] = ()) -> None:  # fmt: skip
        self.root = Path(lake)
        # (vk -> team, team -> customer) tables of the budget hierarchy, to fill team and customer
        # (events ingested before the config knew a key); None without a hierarchy
        self.fill_maps = budget_hook.fill_maps if budget_hook is not None else None
        self.minute_retention_days = minute_retention_days
        self.budget_hook = budget_hook  # aggregator.budgets.BudgetUsage or None
        # called as hook(con, "fresh") inside each date's transaction with its newly counted
        # events (alerting's per-event rules: an event counted once is alerted once)
        self.event_hooks = tuple(event_hooks)
        self._listing: dict[str, tuple[int, list[LakeFile]]] = {}  # date dir -> (mtime_ns, files)
        self._touched = _no_touch()  # time buckets and dates appended to since compact()
        self._known: dict[str, tuple[int, int]] | None = None  # the files table: path -> (size, mtime_ns)
        self._seen = SeenIndex()  # the seen table in memory, by date (aggregator/seen.py)
        self._pending_seen: list[dict[date, tuple[np.ndarray, np.ndarray]]] = []  # written, not committed
        self._events: int | None = None  # rows of the seen table (events counted), when known
        self._status: dict[str, Any] = {}  # status.json
        (self.root / STATE_DIR).mkdir(parents=True, exist_ok=True)
        path = self.root / STATE_DIR / STATE_FILE
        try:
            self.con = duckdb.connect(str(path))
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise StateLocked(f"{path} is in use by another spendlake process (serve?)") from None
            raise
        self.con.execute("SET TimeZone = 'UTC'")
        had_models_hourly = self._has_table("rollup_models_hourly")
        self._schema()
        if budget_hook is not None:
            budget_hook.schema(self.con)
        # rows appended by an earlier process and not compacted are all on dates still dirty
        self._compact_days = {d for (d,) in self.con.execute("SELECT day FROM dirty_days").fetchall()}
        if not had_models_hourly:
            self._backfill_models_hourly()

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Rollup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _schema(self) -> None:
        create_tables(self.con)

    def _has_table(self, name: str) -> bool:
        return bool(self.con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchall()[0][0])

    def _backfill_models_hourly(self) -> None:
        """A state rolled up before ``rollup_models_hourly`` existed: fill it from
        ``rollup_labels_hourly`` (the same measures by finer labels, so the sums are exact), and
        publish those dates again. Once; the dates are not compacted whole for it (the rows
        written here are one per key already)."""
        c = self.con
        c.execute("BEGIN TRANSACTION")
        try:
            keys = ", ".join(("day", "bucket", *MODEL_DIMS))
            c.execute(f"INSERT INTO rollup_models_hourly BY NAME SELECT {keys}, {_merge_sql(MEASURES)} "
                      "FROM rollup_labels_hourly GROUP BY ALL")  # fmt: skip
            c.execute("INSERT OR IGNORE INTO dirty_days SELECT DISTINCT day FROM rollup_models_hourly")
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    # --- update ------------------------------------------------------------------------------

    def update(self, publish: bool = True) -> UpdateStats:
        """Roll up what the lake holds that the state does not; publish what changed (or leave
        that to a later ``publish()``: serve evaluates alerts first)."""
        t0 = time.perf_counter()
        stats = UpdateStats()
        files = lake_files(self.root, cache=self._listing)
        if self._known is None:  # the files table, held between updates (one row per lake file)
            self._known = {p: (s, m) for p, s, m in self.con.execute("SELECT path, size, mtime_ns FROM files").fetchall()}
        known = self._known
        new = [f for f in files if f.path not in known]
        rewritten = [f for f in files if f.path in known and known[f.path] != (f.size, f.mtime_ns)]
        recompute = sorted({f.day for f in rewritten})
        stats.files_rewritten = len(rewritten)
        stats.days_recomputed = len(recompute)
        if recompute:
            # the whole date again, from every file it has now
            new = [f for f in new if f.day not in recompute] + [f for f in files if f.day in recompute]
        stats.files_new = len(new) - sum(1 for f in new if f.day in recompute)
        # One transaction per event date (a first rollup of a big lake stays within memory, and
        # each committed date is done for good); the dates to recompute first.
        by_day: dict[date, list[LakeFile]] = {}
        for f in new:
            by_day.setdefault(f.day, []).append(f)
        for day in sorted(by_day, key=lambda d: (d not in recompute, d)):
            self.con.execute("BEGIN TRANSACTION")
            try:
                if day in recompute:
                    self._forget_days([day])
                self._add(by_day[day], stats)
                self.con.execute("COMMIT")
            except BaseException:
                self.con.execute("ROLLBACK")
                # what this process holds of the state may now differ from it: read it again
                self._seen.forget([day, *(d for keys in self._pending_seen for d in keys)])
                self._pending_seen = []
                self._known = None
                raise
            for keys in self._pending_seen:
                for d, (hi, lo) in keys.items():
                    self._seen.add(d, hi, lo)
                    if self._events is not None:
                        self._events += len(hi)
            self._pending_seen = []
            if day in recompute:
                self._events = None  # counted again when asked
                for path in [p for p, _ in known.items() if p.startswith(f"events/date={day.isoformat()}/")]:
                    del known[path]
            known.update((f.path, (f.size, f.mtime_ns)) for f in by_day[day])
        self.con.execute("BEGIN TRANSACTION")
        try:
            self._count_dead_letters()
            self._expire_minutes()
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        if self.budget_hook is not None:
            self.budget_hook.ensure(self.con, self.root)
        if publish:
            stats.days_published = self.publish()
        else:
            self._write_status(self.root / PUBLISH_DIR)
        stats.seconds = time.perf_counter() - t0
        return stats

    def has_new(self) -> bool:
        """Whether the lake lists event files that the state has not rolled up (new, or rewritten
        since): what the next ``update()`` would take in. A directory listing, no query."""
        if self._known is None:
            return True
        known = self._known
        return any(known.get(f.path) != (f.size, f.mtime_ns) for f in lake_files(self.root, cache=self._listing))

    def _forget_days(self, days: list[date]) -> None:
        c = self.con
        self._seen.forget(days)
        c.execute("CREATE OR REPLACE TEMP TABLE forget AS SELECT unnest(?::DATE[]) AS day", [days])
        for table in ("files", "seen", *(f"rollup_{n}" for n in NAMES)):
            c.execute(f"DELETE FROM {table} WHERE day IN (SELECT day FROM forget)")
        if self.budget_hook is not None:
            self.budget_hook.forget_days(c, days)
        c.execute("INSERT OR IGNORE INTO dirty_days SELECT day FROM forget")

    def _add(self, files: list[LakeFile], stats: UpdateStats) -> None:
        """Roll up ``files`` (in the caller's transaction). The new rows are not copied into a
        table: ``fresh`` is a view over the files (owners filled from the hierarchy, rows already
        counted left out), read once for the minute aggregate, from which every table is summed,
        and again, a few columns each, by the hooks. Copying ~25 columns into a temporary table
        first cost as much as the aggregate itself (~1 µs an event)."""
        c = self.con
        src = f"read_parquet([{', '.join(sql_string(self.root / f.path) for f in files)}], union_by_name = true)"
        rows, keys, drop = self._dedupe(src)
        stats.rows_read += rows
        stats.events_added += sum(len(hi) for _, (hi, _) in keys.items())
        stats.duplicates = stats.rows_read - stats.events_added
        self._fresh_view(src, drop)
        self._pending_seen.append(keys)  # into the in-memory index once the transaction commits
        for d, (hi, lo) in keys.items():
            if len(hi):
                c.register("fresh_seen", pa.table({"hi": hi, "lo": lo}))
                c.execute("INSERT INTO seen SELECT ?::DATE, (hi::UHUGEINT << 64) | lo::UHUGEINT FROM fresh_seen", [d])
                c.unregister("fresh_seen")
        horizon = datetime.now(UTC).date() - timedelta(days=self.minute_retention_days)
        counted = [d for d, (hi, _) in keys.items() if len(hi)]
        newest = max(counted, default=None)  # None: only duplicates
        # Every table is a re-aggregation of the minute aggregate (sums, and max for the maximum):
        # the new rows are read once, and the aggregates that follow read fewer rows.
        hist = ", ".join(f"count(*) FILTER (WHERE cost_usd <= {b})::BIGINT AS {bucket_column(b)}" for b in COST_BUCKETS)
        c.execute(
            f"""CREATE OR REPLACE TEMP TABLE fresh_minutes AS
                SELECT day, date_trunc('minute', "timestamp") AS bucket, {", ".join(DIMS)}, {_measures_sql()}, {hist}
                FROM fresh GROUP BY ALL"""
        )
        for t in TABLES:
            if t.name == "minute" and (newest is None or newest < horizon):
                continue  # older than the minute rollups keep: nothing to add (a first rollup of history)
            bucket = [f"date_trunc('{t.unit}', bucket) AS bucket"] if t.unit else []
            merge = _merge_sql((*MEASURES, *(bucket_column(b) for b in COST_BUCKETS if t.histogram)))
            self._append(t, ", ".join(["day", *bucket, *t.dims, merge]), "fresh_minutes")
        for (m,) in c.execute("SELECT DISTINCT bucket FROM fresh_minutes").fetchall():
            self._touched["minute"].add(m)
            self._touched["hour"].add(m.replace(minute=0))
            self._touched["day"].add(m.replace(hour=0, minute=0))
        self._touched["days"].update(counted)
        if self.budget_hook is not None:
            self.budget_hook.add(c, "fresh", days=counted)
        for hook in self.event_hooks:
            hook(c, "fresh")
        now = datetime.now(UTC)
        c.executemany(
            "INSERT OR REPLACE INTO files (path, day, size, mtime_ns, rolled_at) VALUES (?, ?, ?, ?, ?)",
            [(f.path, f.day, f.size, f.mtime_ns, now) for f in files],
        )
        c.execute("INSERT OR IGNORE INTO dirty_days SELECT unnest(?::DATE[])", [sorted({f.day for f in files})])

    def _fresh_view(self, src: str, drop: np.ndarray) -> None:
        """``fresh``: the rows of ``src`` to count (those not in ``drop``, row ids as ``_dedupe``
        makes them), team and customer filled from the hierarchy, with their UTC ``day``."""
        c = self.con
        cols = [f'f."{col}"' for col in ("event_id", "timestamp", "virtual_key", "provider", "model", "status",
                                          *TOKENS, *COSTS, "cost_source", "latency_ms", "ingested_at", "source_topic",
                                          "source_partition", "source_offset")]  # fmt: skip
        joins, where = "", ""
        vt, tc = self.fill_maps() if self.fill_maps is not None else (None, None)
        team, customer = "f.team", "f.customer"
        if vt is not None and vt.num_rows:
            c.register("fresh_vt", vt)
            joins += " LEFT JOIN fresh_vt vt ON vt.vk = f.virtual_key"
            team = "coalesce(f.team, vt.team)"
        if tc is not None and tc.num_rows:
            c.register("fresh_tc", tc)
            joins += f" LEFT JOIN fresh_tc tc ON tc.t = {team}"
            customer = "coalesce(f.customer, tc.customer)"
        if len(drop):
            c.execute("CREATE OR REPLACE TEMP TABLE fresh_drop AS SELECT unnest(?::BIGINT[]) AS rid", [drop.tolist()])
            where = f" WHERE {ROW_ID.format('f.')} NOT IN (SELECT rid FROM fresh_drop)"
        c.execute(f"""CREATE OR REPLACE TEMP VIEW fresh AS
                      SELECT {", ".join(cols)}, {team} AS team, {customer} AS customer, f."timestamp"::DATE AS day
                      FROM {src} f{joins}{where}""")  # fmt: skip

    def _dedupe(self, src: str) -> tuple[int, dict[date, tuple[np.ndarray, np.ndarray]], np.ndarray]:
        """Which rows of ``src`` are not to be counted: those whose event the state counted before
        (the date's ``seen``, through the in-memory index) and every later copy of an event the
        batch holds twice (the earliest ingested copy counts). Returns the rows read, per date the
        hashes (upper, lower 64 bits) of the rows to count, and the ids (``ROW_ID``) of the others."""
        c = self.con
        t = c.execute(f"""SELECT {ROW_ID.format("")} AS rid, "timestamp"::DATE AS day, {split_sql("md5_number(event_id)")},
                                 coalesce(epoch_us(ingested_at), {2**63 - 1}) AS ing, source_offset AS off
                          FROM {src}""").fetchnumpy()  # fmt: skip
        rid = np.asarray(t["rid"], np.int64)
        day = np.asarray(t["day"]).astype("datetime64[D]").astype(np.int64)
        hi, lo = np.asarray(t["hi"], np.uint64), np.asarray(t["lo"], np.uint64)
        n = len(rid)
        drop = np.zeros(n, bool)
        o = np.argsort(hi, kind="stable")  # one sort serves both questions
        s_hi = hi[o]
        # copies within the batch: rows sharing the upper 64 bits with another
        same = s_hi[1:] == s_hi[:-1]
        if same.any():
            member = np.zeros(n, bool)
            member[o[1:][same]] = member[o[:-1][same]] = True
            order = (np.asarray(t["ing"], np.int64), np.asarray(t["off"], np.int64))
            drop |= self._later_copies(src, np.flatnonzero(member), rid, day, hi, lo, *order)
        keys: dict[date, tuple[np.ndarray, np.ndarray]] = {}
        days = np.unique(day)
        for d in days:
            when = date.fromordinal(int(d) + EPOCH_ORDINAL)
            on = o if len(days) == 1 else o[day[o] == d]  # this date's rows, in hash order
            old = self._seen.day(c, when).contains(hi[on], lo[on], presorted=True)
            drop[on[old]] = True
            keep = on[~drop[on]]
            keys[when] = (hi[keep], lo[keep])
        return n, keys, rid[drop]

    def _later_copies(self, src: str, rows: np.ndarray, rid: np.ndarray, day: np.ndarray, hi: np.ndarray,
                      lo: np.ndarray, ing: np.ndarray, off: np.ndarray) -> np.ndarray:  # fmt: skip
        """Of ``rows`` (those sharing an upper hash half with another row of the batch), which are
        a later copy of an event the batch holds more than once: every copy but the first in the
        order ``ingested_at, source_topic, source_partition, source_offset``. A file is one
        topic and partition, so copies ingested together (one batch, one ``ingested_at``) in
        one file are ordered by offset; copies of different files ingested in the same
        microsecond are left to DuckDB, which orders them by topic and partition."""
        later = np.zeros(len(rid), bool)
        fidx = rid >> 32
        r = rows[np.lexsort((off[rows], fidx[rows], ing[rows], lo[rows], hi[rows], day[rows]))]  # by event, then order
        first = np.ones(len(r), bool)
        first[1:] = (day[r][1:] != day[r][:-1]) | (hi[r][1:] != hi[r][:-1]) | (lo[r][1:] != lo[r][:-1])
        group = np.cumsum(first) - 1
        head = r[first][group]  # each row's group's first row
        tie = ~first & (ing[r] == ing[head]) & (fidx[r] != fidx[head])
        if tie.any():
            tied = np.isin(group, group[tie])  # those events' copies: DuckDB orders them in full
            c = self.con
            c.execute("CREATE OR REPLACE TEMP TABLE fresh_copies AS SELECT unnest(?::BIGINT[]) AS rid", [rid[r[tied]].tolist()])
            ids = np.asarray([x for (x,) in c.execute(
                f"""SELECT rid FROM (SELECT {ROW_ID.format("")} AS rid, "timestamp"::DATE AS day, md5_number(event_id) AS h,
                                            ingested_at, source_topic, source_partition, source_offset FROM {src})
                    WHERE rid IN (SELECT rid FROM fresh_copies)
                    QUALIFY row_number() OVER (PARTITION BY day, h
                                               ORDER BY ingested_at, source_topic, source_partition, source_offset) > 1"""
            ).fetchall()], np.int64)  # fmt: skip
            later[r[tied][np.isin(rid[r[tied]], ids)]] = True
            first |= tied  # settled
        later[r[~first]] = True
        return later

    def _count_dead_letters(self) -> None:
        """Dead letters are counted, not rolled up: rows per file (from Parquet metadata)."""
        known = {p for (p,) in self.con.execute("SELECT path FROM dead_letter_files").fetchall()}
        for f in lake_files(self.root, "dead_letter"):
            if f.path not in known:
                n = self.con.execute("SELECT count(*) FROM read_parquet(?)", [str(self.root / f.path)]).fetchall()[0][0]  # type: ignore[index]
                self.con.execute("INSERT INTO dead_letter_files VALUES (?, ?, ?)", [f.path, f.day, n])

    def _append(self, t: Table, select: str, source: str = "fresh") -> None:
        """Add the new rows' aggregates to a rollup table. Appended, not merged: a key may
        have several rows until ``compact()`` (every reader sums), which keeps the work of a
        one-second flush independent of how much the day already holds."""
        self.con.execute(f"INSERT INTO rollup_{t.name} BY NAME SELECT {select} FROM {source} WHERE {t.where} GROUP BY ALL")

    def compact(self) -> None:
        """One row per key again in what ``_add`` appended since the last compaction. One
        transaction; idempotent.

        The scope is per table and event date: for a table with a time bucket, the range of
        buckets appended to on that date (a one-second flush: its minute and its hour; 100k
        events of the last hour: that hour of minutes); for a table without one, the date; a date
        left dirty by an earlier process, whole. Each scope is a plain ``day = ? [AND bucket
        BETWEEN ? AND ?]`` filter, which DuckDB checks against each row group's min/max before
        reading it, so a compaction reads the rows of its range, not the table. (A scope of
        ``day IN (subquery) OR ...`` cannot be pushed into the scan: every rollup row of every
        date was read, twice, per compaction.) Within the scope only the keys that have more
        than one row are re-aggregated, deleted and written again; the others stay as they are,
        so what the transaction writes follows the keys appended to twice, not the range."""
        touched, self._touched = self._touched, _no_touch()
        whole = set(self._compact_days)
        days = sorted(touched["days"] | whole)
        if not days:
            return
        horizon = datetime.now(UTC).date() - timedelta(days=self.minute_retention_days)
        spans: dict[str, dict[date, tuple[datetime, datetime]]] = {}
        for unit in ("minute", "hour", "day"):
            by_day: dict[date, tuple[datetime, datetime]] = {}
            for b in touched[unit]:
                d = b.astimezone(UTC).date()  # a bucket lies within its UTC date
                lo, hi = by_day.get(d, (b, b))
                by_day[d] = (min(lo, b), max(hi, b))
            spans[unit] = by_day
        c = self.con
        c.execute("BEGIN TRANSACTION")
        try:
            for t in TABLES:
                keys = ", ".join(("day", *(["bucket"] if t.unit else []), *t.dims))
                agg = _merge_sql((*MEASURES, *(bucket_column(b) for b in COST_BUCKETS if t.histogram)))
                for day in days:
                    if t.name == "minute" and day < horizon:
                        continue  # kept no minutes of that date (and _expire_minutes drops them)
                    span = spans[t.unit].get(day) if t.unit and day not in whole else None
                    if t.unit and day not in whole and span is None:
                        continue  # nothing appended to this table on that date
                    scope = "day = ?" + (" AND bucket BETWEEN ? AND ?" if span else "")
                    params = [day, *(span or ())]
                    # Only the rows of keys that have more than one are rewritten: merged in one
                    # pass, which also lists their rowids (stable within the transaction).
                    c.execute(f"CREATE OR REPLACE TEMP TABLE merged AS SELECT {keys}, {agg}, list(rowid) AS rids "
                              f"FROM rollup_{t.name} WHERE {scope} GROUP BY {keys} HAVING count(*) > 1", params)  # fmt: skip
                    if not c.execute("SELECT count(*) FROM merged").fetchall()[0][0]:  # type: ignore[index]
                        continue
                    c.execute(f"DELETE FROM rollup_{t.name} WHERE {scope} AND rowid IN (SELECT unnest(rids) FROM merged)",
                              params)  # fmt: skip
                    c.execute(f"INSERT INTO rollup_{t.name} BY NAME SELECT * EXCLUDE (rids) FROM merged")
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            self._touched = touched  # try again next time
            raise
        self._compact_days = set()

    def _expire_minutes(self) -> None:
        horizon = datetime.now(UTC).date() - timedelta(days=self.minute_retention_days)
        self.con.execute("DELETE FROM rollup_minute WHERE day < ?", [horizon])

    # --- publication -------------------------------------------------------------------------

    def publish(self) -> list[str]:
        """Write the rollups of every dirty date as Parquet (atomic per file), then forget the
        dates. Returns the dates published."""
        self.compact()
        days = [d for (d,) in self.con.execute("SELECT day FROM dirty_days ORDER BY day").fetchall()]
        out = self.root / PUBLISH_DIR
        horizon = datetime.now(UTC).date() - timedelta(days=self.minute_retention_days)
        for day in days:
            for name in NAMES:
                target = out / name / f"date={day.isoformat()}" / "rollup.parquet"
                if name == "minute" and day < horizon:
                    target.unlink(missing_ok=True)
                    continue
                n = self.con.execute(f"SELECT count(*) FROM rollup_{name} WHERE day = ?", [day]).fetchall()[0][0]  # type: ignore[index]
                if not n:
                    target.unlink(missing_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.parent / f".rollup-{uuid.uuid4().hex[:8]}.parquet.tmp"
                self.con.execute(
                    f"COPY (SELECT * FROM rollup_{name} WHERE day = ?) TO {sql_string(tmp)} "
                    "(FORMAT parquet, COMPRESSION zstd)",
                    [day],
                )
                _fsync_dir(tmp)
                os.replace(tmp, target)
                _fsync_dir(target.parent)
        for d in sorted((out / "minute").glob("date=*")) if (out / "minute").exists() else []:
            try:
                if date.fromisoformat(d.name[5:]) < horizon:
                    for f in d.glob("*"):
                        f.unlink()
                    d.rmdir()
            except (ValueError, OSError):
                continue
        if self.budget_hook is not None:
            self.budget_hook.publish(self.con, out)
        self._write_status(out, published=True)
        if days:
            self.con.execute("DELETE FROM dirty_days WHERE day IN (SELECT unnest(?::DATE[]))", [days])
        return [d.isoformat() for d in days]

    def _write_status(self, out: Path, published: bool = False) -> None:
        """``status.json``: when the state was last updated and how many events and files it had
        counted then, and the same for the last publication (what the Parquet copies hold).
        Written after every update and publication; a small file, read without DuckDB (e.g. by
        bench/pace.py, to see how far the rollups are behind the lake)."""
        if self._events is None:
            self._events = self.con.execute("SELECT count(*) FROM seen").fetchall()[0][0]  # type: ignore[index]
        if self._known is None:
            self._known = {p: (s, m) for p, s, m in self.con.execute("SELECT path, size, mtime_ns FROM files").fetchall()}
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        self._status.update(updated_at=now, events=self._events, files=len(self._known))
        if published:
            self._status.update(published_at=now, published_events=self._events)
        status = self._status
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".status-{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_text(json.dumps(status))
        _fsync_dir(tmp)
        os.replace(tmp, out / "status.json")
        _fsync_dir(out)


def published_views(con: duckdb.DuckDBPyConnection, lake: str | os.PathLike[str]) -> list[str]:
    """Create views ``rollup_<name>`` over a lake's published rollups in ``con``.

    A rollup nobody has published yet is an empty view with the right columns, so queries
    over it return no rows rather than failing."""
    root = Path(lake)
    made = []
    for name in NAMES:
        files = root / PUBLISH_DIR / name
        if any(files.glob("date=*/rollup.parquet")):
            pattern = sql_string(f"{files}/date=*/rollup.parquet")
            con.execute(f"CREATE OR REPLACE VIEW rollup_{name} AS SELECT * EXCLUDE (date) FROM "
                        f"read_parquet({pattern}, hive_partitioning = true, union_by_name = true)")  # fmt: skip
        else:
            empty = duckdb.connect()
            create_tables(empty)
            cols = empty.execute(f"DESCRIBE rollup_{name}").fetchall()
            empty.close()
            select = ", ".join(f"NULL::{typ} AS {col}" for col, typ, *_ in cols)
            con.execute(f"CREATE OR REPLACE VIEW rollup_{name} AS SELECT {select} WHERE false")
        made.append(f"rollup_{name}")
    return made


def update_if_free(lake: str | os.PathLike[str], **kw: Any) -> UpdateStats | None:
    """Roll up when no other process holds the state; None when ``serve`` does (it keeps the
    published rollups fresh itself)."""
    try:
        with Rollup(lake, **kw) as r:
            return r.update()
    except StateLocked:
        return None
