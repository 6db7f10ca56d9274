"""aggregator/rollup.py: incremental DuckDB rollups of a real lake, and their publication.

Every lake here is built by the real `spendlake ingest --source ... --catalog builtin`; the rollups
by the real `Rollup.update()` in real DuckDB. Expected numbers come from hand arithmetic on the
built-in list prices (the golden case) or from an independent computation over the raw Parquet
files in plain Python (pyarrow rows, the dedup rule "earliest ingested copy wins" spelled out).
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from aggregator import query
from aggregator.rollup import Rollup, published_views
from conftest import ROOT, dedup, event, raw_rows, spendlake
from ingest.reprice import reprice
from pricing import Catalog, PriceEntry, price_table

DAY_MS = 86_400_000
BASE_MS = 1764331200000  # 2025-11-28T12:00:00Z, as in conftest.event
NAMES = ("minute", "hourly", "daily", "labels", "labels_hourly", "virtual_keys", "models_hourly")

# The measures, typed here (not imported from the code under test).
COSTS = ("cost_usd", "cost_input_usd", "cost_cached_input_usd", "cost_cache_write_usd", "cost_output_usd",
         "cost_reasoning_usd", "reported_cost_usd")  # fmt: skip
TOKENS = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "cache_write_1h_tokens",
          "reasoning_tokens")  # fmt: skip
MEASURES = ("requests", "unpriced", *COSTS, *TOKENS, "latency_ms_sum", "latency_count", "latency_ms_max")
GRAIN_DIMS = ("virtual_key", "team", "customer", "provider", "model", "status")
LABEL_DIMS = ("provider", "model", "team", "customer", "status")
MODEL_DIMS = ("provider", "model", "status")


def dims_of(name: str) -> tuple[str, ...]:
    if name == "virtual_keys":
        return ("virtual_key", "team", "customer")
    if name == "models_hourly":
        return MODEL_DIMS
    return LABEL_DIMS if name.startswith("labels") else GRAIN_DIMS


# --- building lakes ----------------------------------------------------------------------------


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def write_jsonl(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    return path


def ingest(lake: Path, src: Path) -> None:
    spendlake("ingest", "--source", str(src), "--lake", str(lake), "--catalog", "builtin", "--quiet", check=True)
    assert not list((lake / "dead_letter").glob("*/*.parquet")), "the test's events must all be valid"


def ingest_events(lake: Path, events: list[dict[str, Any]], name: str) -> None:
    ingest(lake, write_jsonl(lake.parent / name, events))


def event_files(lake: Path) -> set[str]:
    return {str(p.relative_to(lake)) for p in (lake / "events").glob("date=*/*.parquet")}


def published(lake: Path) -> dict[str, int]:
    """Published rollup file -> mtime_ns."""
    return {str(p.relative_to(lake)): p.stat().st_mtime_ns for p in (lake / "_rollups").glob("*/date=*/rollup.parquet")}


def utc_day(ts_ms: int) -> date:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).date()


# --- the independent truth: plain Python over the raw Parquet ------------------------------------




def empty_measures() -> dict[str, Any]:
    m: dict[str, Any] = {"requests": 0, "unpriced": 0, "latency_ms_sum": 0.0, "latency_count": 0, "latency_ms_max": None}
    m.update({c: 0.0 for c in COSTS})
    m.update({t: 0 for t in TOKENS})
    return m


def add_row(m: dict[str, Any], r: dict[str, Any]) -> None:
    m["requests"] += 1
    m["unpriced"] += r["cost_source"] == "unpriced"
    for c in COSTS:
        m[c] += r[c] or 0.0
    for t in TOKENS:
        m[t] += r[t]
    if r["latency_ms"] is not None:
        m["latency_ms_sum"] += r["latency_ms"]
        m["latency_count"] += 1
        top = m["latency_ms_max"]
        m["latency_ms_max"] = r["latency_ms"] if top is None else max(top, r["latency_ms"])


def floor_ts(dt: datetime, unit: str) -> int:
    s = int(dt.timestamp())
    return s - s % {"minute": 60, "hour": 3600, "day": 86400}[unit]


def truth_key(name: str, r: dict[str, Any]) -> tuple[Any, ...] | None:
    ts: datetime = r["timestamp"]
    day = ts.astimezone(UTC).date()
    unit = {"minute": "minute", "hourly": "hour", "daily": "day", "labels_hourly": "hour", "models_hourly": "hour"}.get(name)
    bucket = (floor_ts(ts, unit),) if unit else ()
    if name == "virtual_keys" and r["virtual_key"] is None:
        return None
    return (day, *bucket, *(r[d] for d in dims_of(name)))


Rows = dict[tuple[Any, ...], dict[str, Any]]


def truth(lake: Path, name: str, where: Callable[[dict[str, Any]], bool] = lambda r: True) -> Rows:
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in dedup(raw_rows(lake)):
        key = truth_key(name, r)
        if key is None or not where(r):
            continue
        add_row(out.setdefault(key, empty_measures()), r)
    return out


def table_rows(con: duckdb.DuckDBPyConnection, table: str, where: str = "true") -> list[dict[str, Any]]:
    cur = con.execute(f"SELECT * FROM {table} WHERE {where}")
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row)) for row in cur.fetchall()]


def keyed(name: str, rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        bucket = (int(r["bucket"].timestamp()),) if "bucket" in r else ()
        key = (r["day"], *bucket, *(r[d] for d in dims_of(name)))
        assert key not in out, f"rollup_{name}: two rows for {key}"
        out[key] = r
    return out


def assert_measures(got: dict[str, Any], want: dict[str, Any], what: Any) -> None:
    for m, w in want.items():
        g = got[m]
        if w is None or g is None:
            assert g == w, (what, m, g, w)
        elif isinstance(w, float):
            assert math.isclose(g, w, rel_tol=1e-9, abs_tol=1e-9), (what, m, g, w)
        else:
            assert g == w, (what, m, g, w)


def assert_rollup_matches_truth(con: duckdb.DuckDBPyConnection, lake: Path, names: tuple[str, ...] = NAMES[1:],
                                where: Callable[[dict[str, Any]], bool] = lambda r: True) -> None:  # fmt: skip
    for name in names:
        want = truth(lake, name, where)
        got = keyed(name, table_rows(con, f"rollup_{name}"))
        assert set(got) == set(want), (name, set(got) ^ set(want))
        for key, measures in want.items():
            assert_measures(got[key], measures, (name, key))


def snapshot(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[Any, ...]]]:
    """Everything the state holds that an update changes (file bookkeeping timestamps aside)."""
    tables = ["seen", "dirty_days", *(f"rollup_{n}" for n in NAMES)]
    snap = {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in tables}
    snap["files"] = con.execute("SELECT path, day, size, mtime_ns FROM files ORDER BY ALL").fetchall()
    return snap


# --- 1. golden case: hand arithmetic on the built-in prices ----------------------------------------

G = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
H10, H11, H12 = (int((G + timedelta(hours=h)).timestamp()) for h in range(3))
GDAY = date(2026, 1, 15)
A = {"virtual_key": "vk-a", "team": "team-x", "customer": "cust-1"}
B = {"virtual_key": "vk-b", "team": "team-y"}
GPT = {"provider": "openai", "model": "gpt-4o"}  # $2.50 / $10 per M, cached input $1.25 per M
CLAUDE = {"provider": "anthropic", "model": "claude-sonnet-4-5"}  # $3 / $15 per M, cache read $0.30 per M


def golden_events() -> list[dict[str, Any]]:
    def e(n: int, minutes: float, who: dict[str, Any], model: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return {"event_id": f"golden-{n:02d}", "timestamp": ms(G + timedelta(minutes=minutes)), **who, **model, **kw}

    return [
        e(1, 5, A, GPT, input_tokens=1000, output_tokens=200, latency_ms=100),  # 0.0025 + 0.002
        e(2, 20, A, GPT, input_tokens=2000, output_tokens=100, cached_input_tokens=1000, latency_ms=300),
        # 1000 * 2.5e-6 + 1000 * 1.25e-6 + 100 * 1e-5 = 0.0025 + 0.00125 + 0.001
        e(3, 40, B, GPT, input_tokens=480, output_tokens=0, status="error", status_code=500, latency_ms=50),  # 0.0012
        e(4, 50, B, CLAUDE, input_tokens=1000, output_tokens=1000, latency_ms=1000, cost_usd=0.02),  # 0.003 + 0.015
        e(5, 60, A, CLAUDE, input_tokens=4000, output_tokens=500, cached_input_tokens=2000, latency_ms=800),
        # 2000 * 3e-6 + 2000 * 3e-7 + 500 * 1.5e-5 = 0.006 + 0.0006 + 0.0075
        e(6, 90, A, GPT, input_tokens=1000, output_tokens=200, cache_hit=True, latency_ms=5),  # gateway cache: 0
        e(7, 105, B, {"provider": "openai", "model": "no-such-model-9000"}, input_tokens=100, output_tokens=100,
          latency_ms=200),  # unpriced  # fmt: skip
        e(8, 0, B, GPT, input_tokens=10000, output_tokens=1000, timestamp=ms(G) + 2 * 3_600_000 - 1),
        # 11:59:59.999, no latency: 0.025 + 0.01
        e(9, 120, A, GPT, input_tokens=100, output_tokens=10, latency_ms=20),  # 0.00025 + 0.0001
        e(10, 130, A, GPT, input_tokens=300, output_tokens=30, latency_ms=40),  # 0.00075 + 0.0003
        e(11, 140, B, CLAUDE, input_tokens=200, output_tokens=100, latency_ms=60),  # 0.0006 + 0.0015
        e(12, 179, B, CLAUDE, input_tokens=1000, output_tokens=2000, reasoning_tokens=500, latency_ms=900),
        # 0.003 + 1500 * 1.5e-5 + 500 * 1.5e-5 (reasoning at the output price) = 0.003 + 0.0225 + 0.0075
    ]


def M(requests: int, unpriced: int, cost: float, inp: float, cached: float, out: float, reasoning: float,
      reported: float, tok: tuple[int, int, int, int], lat: tuple[float, int, float | None]) -> dict[str, Any]:  # fmt: skip
    """Measures: costs in USD; tok = (input, output, cached input, reasoning) tokens; lat = (sum, count, max)."""
    return {
        "requests": requests, "unpriced": unpriced, "cost_usd": cost, "cost_input_usd": inp,
        "cost_cached_input_usd": cached, "cost_cache_write_usd": 0.0, "cost_output_usd": out,
        "cost_reasoning_usd": reasoning, "reported_cost_usd": reported, "input_tokens": tok[0],
        "output_tokens": tok[1], "cached_input_tokens": tok[2], "cache_write_tokens": 0, "cache_write_1h_tokens": 0,
        "reasoning_tokens": tok[3], "latency_ms_sum": lat[0], "latency_count": lat[1], "latency_ms_max": lat[2],
    }  # fmt: skip


GOLDEN_HOURLY = {
    (GDAY, H10, "vk-a", "team-x", "cust-1", "openai", "gpt-4o", "success"):
        M(2, 0, 0.00925, 0.005, 0.00125, 0.003, 0, 0, (3000, 300, 1000, 0), (400.0, 2, 300.0)),
    (GDAY, H10, "vk-b", "team-y", None, "openai", "gpt-4o", "error"):
        M(1, 0, 0.0012, 0.0012, 0, 0, 0, 0, (480, 0, 0, 0), (50.0, 1, 50.0)),
    (GDAY, H10, "vk-b", "team-y", None, "anthropic", "claude-sonnet-4-5", "success"):
        M(1, 0, 0.018, 0.003, 0, 0.015, 0, 0.02, (1000, 1000, 0, 0), (1000.0, 1, 1000.0)),
    (GDAY, H11, "vk-a", "team-x", "cust-1", "anthropic", "claude-sonnet-4-5", "success"):
        M(1, 0, 0.0141, 0.006, 0.0006, 0.0075, 0, 0, (4000, 500, 2000, 0), (800.0, 1, 800.0)),
    (GDAY, H11, "vk-a", "team-x", "cust-1", "openai", "gpt-4o", "success"):
        M(1, 0, 0.0, 0, 0, 0, 0, 0, (1000, 200, 0, 0), (5.0, 1, 5.0)),
    (GDAY, H11, "vk-b", "team-y", None, "openai", "no-such-model-9000", "success"):
        M(1, 1, 0.0, 0, 0, 0, 0, 0, (100, 100, 0, 0), (200.0, 1, 200.0)),
    (GDAY, H11, "vk-b", "team-y", None, "openai", "gpt-4o", "success"):
        M(1, 0, 0.035, 0.025, 0, 0.01, 0, 0, (10000, 1000, 0, 0), (0.0, 0, None)),
    (GDAY, H12, "vk-a", "team-x", "cust-1", "openai", "gpt-4o", "success"):
        M(2, 0, 0.0014, 0.001, 0, 0.0004, 0, 0, (400, 40, 0, 0), (60.0, 2, 40.0)),
    (GDAY, H12, "vk-b", "team-y", None, "anthropic", "claude-sonnet-4-5", "success"):
        M(2, 0, 0.0351, 0.0036, 0, 0.024, 0.0075, 0, (1200, 2100, 0, 500), (960.0, 2, 900.0)),
}  # fmt: skip

HIST = ("cost_le_0_0001", "cost_le_0_001", "cost_le_0_01", "cost_le_0_1", "cost_le_1", "cost_le_10", "cost_le_100")


def H(*counts: int) -> dict[str, int]:
    return dict(zip(HIST, counts, strict=True))


GOLDEN_LABELS = {
    # E1 0.0045, E2 0.00475, E6 0 (cache hit), E9 0.00035, E10 0.00105
    (GDAY, "openai", "gpt-4o", "team-x", "cust-1", "success"):
        {**M(5, 0, 0.01065, 0.006, 0.00125, 0.0034, 0, 0, (4400, 540, 1000, 0), (465.0, 5, 300.0)),
         **H(1, 2, 5, 5, 5, 5, 5)},
    (GDAY, "openai", "gpt-4o", "team-y", None, "error"):
        {**M(1, 0, 0.0012, 0.0012, 0, 0, 0, 0, (480, 0, 0, 0), (50.0, 1, 50.0)), **H(0, 0, 1, 1, 1, 1, 1)},
    (GDAY, "openai", "gpt-4o", "team-y", None, "success"):
        {**M(1, 0, 0.035, 0.025, 0, 0.01, 0, 0, (10000, 1000, 0, 0), (0.0, 0, None)), **H(0, 0, 0, 1, 1, 1, 1)},
    (GDAY, "openai", "no-such-model-9000", "team-y", None, "success"):  # no cost: in no finite bucket
        {**M(1, 1, 0.0, 0, 0, 0, 0, 0, (100, 100, 0, 0), (200.0, 1, 200.0)), **H(0, 0, 0, 0, 0, 0, 0)},
    (GDAY, "anthropic", "claude-sonnet-4-5", "team-x", "cust-1", "success"):
        {**M(1, 0, 0.0141, 0.006, 0.0006, 0.0075, 0, 0, (4000, 500, 2000, 0), (800.0, 1, 800.0)),
         **H(0, 0, 0, 1, 1, 1, 1)},
    # E4 0.018, E11 0.0021, E12 0.033
    (GDAY, "anthropic", "claude-sonnet-4-5", "team-y", None, "success"):
        {**M(3, 0, 0.0531, 0.0066, 0, 0.039, 0.0075, 0.02, (2200, 3100, 0, 500), (1960.0, 3, 1000.0)),
         **H(0, 0, 1, 3, 3, 3, 3)},
}  # fmt: skip


def test_golden_hourly_and_label_rows(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    ingest_events(lake, golden_events(), "golden.jsonl")
    with Rollup(lake) as r:
        stats = r.update()
        assert (stats.files_new, stats.events_added, stats.duplicates) == (1, 12, 0)
        assert stats.days_published == ["2026-01-15"]
        hourly = keyed("hourly", table_rows(r.con, "rollup_hourly"))
        labels = keyed("labels", table_rows(r.con, "rollup_labels"))
        assert set(hourly) == set(GOLDEN_HOURLY)
        for hkey, hwant in GOLDEN_HOURLY.items():
            assert_measures(hourly[hkey], hwant, hkey)
        assert set(labels) == set(GOLDEN_LABELS)
        for lkey, lwant in GOLDEN_LABELS.items():
            assert_measures(labels[lkey], lwant, lkey)
        # the other grains add up to the same day
        daily = r.con.execute("SELECT sum(requests), sum(unpriced), sum(cost_usd), sum(latency_count), max(latency_ms_max) "
                              "FROM rollup_daily").fetchone()  # fmt: skip
        assert daily is not None and daily[:2] == (12, 1) and daily[3:] == (11, 1000.0)
        assert math.isclose(daily[2], 0.11405, abs_tol=1e-9)
        vks = {(v, t, c): (n, cost) for v, t, c, n, cost in r.con.execute(
            "SELECT virtual_key, team, customer, requests, cost_usd FROM rollup_virtual_keys").fetchall()}  # fmt: skip
        assert set(vks) == {("vk-a", "team-x", "cust-1"), ("vk-b", "team-y", None)}
        assert vks[("vk-a", "team-x", "cust-1")][0] == 6 and math.isclose(vks[("vk-a", "team-x", "cust-1")][1], 0.02475)
        assert vks[("vk-b", "team-y", None)][0] == 6 and math.isclose(vks[("vk-b", "team-y", None)][1], 0.0893)
        lh = r.con.execute("SELECT bucket, sum(requests), sum(cost_usd) FROM rollup_labels_hourly "
                           "GROUP BY 1 ORDER BY 1").fetchall()  # fmt: skip
        assert [(int(b.timestamp()), n) for b, n, _ in lh] == [(H10, 4), (H11, 4), (H12, 4)]
        for (_, _, cost), hand in zip(lh, (0.02845, 0.0491, 0.0365)):
            assert math.isclose(cost, hand, abs_tol=1e-9)
        state = {n: r.con.execute(f"SELECT * FROM rollup_{n} ORDER BY ALL").fetchall() for n in NAMES}
    # the published Parquet holds the same rows
    for name in ("hourly", "labels"):
        f = lake / "_rollups" / name / "date=2026-01-15" / "rollup.parquet"
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        rows = con.execute(f"SELECT * FROM read_parquet('{f}', hive_partitioning = false) ORDER BY ALL").fetchall()
        assert rows == state[name], name
        con.close()
    assert not (lake / "_rollups" / "minute").exists()  # 2026-01-15 is past the minute retention


# --- 2. incremental updates ---------------------------------------------------------------------


def spread(i: int, days: int = 2, **over: Any) -> dict[str, Any]:
    """conftest.event over `days` consecutive dates; every 13th model unknown (unpriced)."""
    if i % 13 == 0:
        over.setdefault("model", "no-such-model-9000")
    return event(i, timestamp=BASE_MS + (i % days) * DAY_MS + i * 1000, **over)


def test_incremental_update_adds_only_new_events(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    a = [spread(i) for i in range(40)]
    ingest_events(lake, a, "a.jsonl")
    files_a = event_files(lake)
    with Rollup(lake) as r:
        s = r.update()
        assert (s.files_new, s.rows_read, s.events_added, s.duplicates) == (len(files_a), 40, 40, 0)
        assert s.days_published == ["2025-11-28", "2025-11-29"]
        assert_rollup_matches_truth(r.con, lake)

    # b.jsonl: 20 new events (one on a third date) and 10 of a.jsonl's event_ids again, with
    # their own timestamps (a retry is the same event) but other token counts: the first copy counts
    dups = [dict(e, output_tokens=e["output_tokens"] + 1000) for e in a[:10]]
    b = [spread(i, days=3) for i in range(40, 60)] + dups
    ingest_events(lake, b, "b.jsonl")
    files_b = event_files(lake) - files_a
    with Rollup(lake) as r:
        s = r.update()
        assert (s.files_new, s.files_rewritten, s.days_recomputed) == (len(files_b), 0, 0)
        assert (s.rows_read, s.events_added, s.duplicates) == (30, 20, 10)
        assert s.days_published == ["2025-11-28", "2025-11-29", "2025-11-30"]
        assert_rollup_matches_truth(r.con, lake)
        assert r.con.execute("SELECT sum(requests), sum(output_tokens) FROM rollup_daily").fetchone() == (
            60, sum(e["output_tokens"] for e in a + b[:20]))  # fmt: skip
        before = snapshot(r.con)
    files = published(lake)
    assert {f.split("/")[1] for f in files} == {"hourly", "daily", "labels", "labels_hourly", "virtual_keys", "models_hourly"}

    # nothing new: nothing changes, nothing is published
    with Rollup(lake) as r:
        s = r.update()
        assert (s.files_new, s.files_rewritten, s.rows_read, s.events_added, s.duplicates) == (0, 0, 0, 0, 0)
        assert s.days_published == []
        assert snapshot(r.con) == before
    assert published(lake) == files


def test_duplicates_in_one_update_keep_the_earliest_copy(tmp_path: Path) -> None:
    """Both copies arrive before the first update (in two files): the earlier ingested one counts."""
    lake = tmp_path / "lake"
    a = [spread(i) for i in range(20)]
    ingest_events(lake, a, "a.jsonl")
    ingest_events(lake, [dict(e, output_tokens=7777, virtual_key="vk-retry") for e in a[5:15]], "b.jsonl")
    with Rollup(lake) as r:
        s = r.update()
        assert (s.rows_read, s.events_added, s.duplicates) == (30, 20, 10)
        assert_rollup_matches_truth(r.con, lake)
        assert r.con.execute("SELECT count(*) FROM rollup_hourly WHERE virtual_key = 'vk-retry'").fetchone() == (0,)
        want = sum(e["output_tokens"] for e in a)
        assert r.con.execute("SELECT sum(output_tokens) FROM rollup_daily").fetchone() == (want,)


# --- 3. a duplicate arriving days later ----------------------------------------------------------


def test_duplicate_arriving_in_a_later_run_counts_once(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    a = [spread(i, days=1) for i in range(10)]  # all on 2025-11-28
    ingest_events(lake, a, "monday.jsonl")
    with Rollup(lake) as r:
        r.update()
        day1 = r.con.execute("SELECT * FROM rollup_hourly WHERE day = '2025-11-28' ORDER BY ALL").fetchall()
    # days later: that day's traffic, and a late retry of evt 3 with its original timestamp
    later = [event(100 + i, timestamp=BASE_MS + 3 * DAY_MS + i * 1000) for i in range(5)]
    retry = dict(a[3], latency_ms=99999.0, output_tokens=1)
    ingest_events(lake, [*later, retry], "thursday.jsonl")
    with Rollup(lake) as r:
        s = r.update()
        assert (s.events_added, s.duplicates) == (5, 1)
        assert r.con.execute("SELECT * FROM rollup_hourly WHERE day = '2025-11-28' ORDER BY ALL").fetchall() == day1
    # and again, in a third run, together with the whole first file re-sent under another name
    # (other bytes: a new stream to the lake)
    ingest_events(lake, [*reversed(a), retry], "resent.jsonl")
    with Rollup(lake) as r:
        s = r.update()
        assert (s.events_added, s.duplicates) == (0, 11)
        assert r.con.execute("SELECT * FROM rollup_hourly WHERE day = '2025-11-28' ORDER BY ALL").fetchall() == day1
        assert r.con.execute("SELECT sum(requests), max(latency_ms_max) FROM rollup_daily").fetchone() == (
            15, max(e["latency_ms"] for e in a + later))  # fmt: skip
        assert_rollup_matches_truth(r.con, lake)
    assert len(raw_rows(lake)) == 10 + 6 + 11  # the copies are all in the lake; counted once


# --- 4. late events ------------------------------------------------------------------------------


def test_late_event_lands_in_its_own_date_only(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    recent = [event(i, timestamp=ms(today - timedelta(days=i % 2, hours=-1)) + i * 1000) for i in range(20)]
    ingest_events(lake, recent, "recent.jsonl")
    with Rollup(lake) as r:
        r.update()
        before = {n: r.con.execute(f"SELECT * FROM rollup_{n} ORDER BY ALL").fetchall() for n in NAMES}
    files = published(lake)
    assert any("/minute/" in f for f in files)

    late_at = today - timedelta(days=10) + timedelta(hours=13, minutes=17, seconds=5)
    late_day = late_at.date()
    late = event(999, timestamp=ms(late_at), virtual_key="vk-late", team="team-late")
    ingest_events(lake, [late], "late.jsonl")
    with Rollup(lake) as r:
        s = r.update()
        assert (s.files_new, s.events_added) == (1, 1) and s.days_published == [late_day.isoformat()]
        for n in NAMES:
            after = r.con.execute(f"SELECT * FROM rollup_{n} WHERE day <> ? ORDER BY ALL", [late_day]).fetchall()
            assert after == before[n], n  # other dates untouched
        (row,) = table_rows(r.con, "rollup_hourly", f"day = '{late_day}'")
        assert int(row["bucket"].timestamp()) == int(late_at.replace(minute=0, second=0).timestamp())
        assert (row["virtual_key"], row["team"], row["requests"]) == ("vk-late", "team-late", 1)
        assert row["input_tokens"] == late["input_tokens"]
        assert r.con.execute("SELECT count(*) FROM rollup_minute WHERE day = ?", [late_day]).fetchone() == (0,)
        assert_rollup_matches_truth(r.con, lake)
    now_files = published(lake)
    for f, mtime in files.items():
        assert now_files[f] == mtime, f"{f} was rewritten"
    new = set(now_files) - set(files)
    assert new == {f"_rollups/{n}/date={late_day}/rollup.parquet" for n in NAMES if n != "minute"}


# --- 5. reprice ----------------------------------------------------------------------------------

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def changed_catalog() -> Catalog:
    prices = {("openai", "gpt-4o"): (4e-06, 1e-06, 2e-05), ("anthropic", "claude-sonnet-4-5"): (2e-06, 5e-07, 1.2e-05),
              ("openai", "gpt-4o-mini"): (3e-07, 1e-07, 9e-07)}  # fmt: skip
    return Catalog([PriceEntry(f"test/{m}", p, m, T0, input=i, cache_read=c, output=o)
                    for (p, m), (i, c, o) in prices.items()])  # fmt: skip


def others(con: duckdb.DuckDBPyConnection, name: str) -> list[tuple[Any, ...]]:
    return con.execute(f"SELECT * FROM rollup_{name} WHERE day <> '2025-11-29' ORDER BY ALL").fetchall()


def middle_cost(con: duckdb.DuckDBPyConnection) -> float:
    (cost,) = con.execute("SELECT sum(cost_usd) FROM rollup_daily WHERE day = '2025-11-29'").fetchone()  # type: ignore[misc]
    return float(cost)


def test_reprice_recomputes_exactly_the_rewritten_dates(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    a = [spread(i, days=3) for i in range(45)]
    ingest_events(lake, a, "a.jsonl")
    # a second file on the middle date: new events and copies of a.jsonl's (dedup again on recompute)
    middle = [e for e in a if utc_day(e["timestamp"]) == date(2025, 11, 29)]
    ingest_events(lake, [event(500 + i, timestamp=BASE_MS + DAY_MS + 7_000_000 + i) for i in range(5)]
                  + [dict(e, output_tokens=3) for e in middle[:4]], "b.jsonl")  # fmt: skip
    with Rollup(lake) as r:
        r.update()
        keep = {n: others(r.con, n) for n in NAMES}
        old_cost = middle_cost(r.con)
    files = published(lake)
    catalog = changed_catalog()

    rs = reprice(lake, date(2025, 11, 29), date(2025, 11, 29), price=lambda t: price_table(t, catalog))
    assert rs.files_rewritten == 2
    new_truth = truth(lake, "daily", lambda r: r["timestamp"].date() == date(2025, 11, 29))
    new_cost = sum(m["cost_usd"] for m in new_truth.values())
    assert abs(new_cost - old_cost) > 0.01  # the prices did change

    with Rollup(lake) as r:
        s = r.update()
        assert (s.files_rewritten, s.days_recomputed, s.files_new) == (2, 1, 0)
        assert s.days_published == ["2025-11-29"]
        assert s.duplicates == 4 and s.events_added == len(middle) + 5
        assert_rollup_matches_truth(r.con, lake)
        for n in NAMES:
            assert others(r.con, n) == keep[n], n
        assert math.isclose(middle_cost(r.con), new_cost, abs_tol=1e-9)
        s2 = r.update()
        assert (s2.files_rewritten, s2.days_recomputed, s2.events_added, s2.days_published) == (0, 0, 0, [])
    now = published(lake)
    for f, mtime in files.items():
        assert (now[f] == mtime) == ("date=2025-11-29" not in f), f


# --- 6. crash safety -----------------------------------------------------------------------------


def run_crashing(lake: Path, patch: str) -> subprocess.CompletedProcess[str]:
    """Run Rollup(lake).update() in a child process with `patch` applied (it calls os._exit)."""
    code = textwrap.dedent(
        """
        import os, sys
        sys.path.insert(0, {root!r})
        from aggregator import rollup
        calls = [0]
        def crash_on(n):
            calls[0] += 1
            if calls[0] == n:
                os._exit(9)
        {patch}
        with rollup.Rollup({lake!r}) as r:
            r.update()
        print("no crash")
        """
    ).format(root=str(ROOT), lake=str(lake), patch=textwrap.indent(textwrap.dedent(patch), "").strip())
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)


MERGE_CRASH = """
orig = rollup.Rollup._append
def _append(self, *a, **k):
    crash_on({n})
    return orig(self, *a, **k)
rollup.Rollup._append = _append
"""


def test_crash_mid_update_leaves_no_partial_rows(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    ingest_events(lake, [spread(i) for i in range(20)], "a.jsonl")
    with Rollup(lake) as r:
        r.update()
        before = snapshot(r.con)
    ingest_events(lake, [spread(i) for i in range(20, 50)], "b.jsonl")  # both dates again

    # (5 or 6 tables are appended to per date, the minute table only for recent dates)
    # in the 3rd append, of the first date: nothing of this update is left
    p = run_crashing(lake, MERGE_CRASH.format(n=3))
    assert p.returncode == 9, p.stderr
    with Rollup(lake) as r:
        assert snapshot(r.con) == before

    # in the 8th append, of the second date: the first date is complete, the second as before
    # (once compacted, as the next publish does: the first date's rows were appended)
    p = run_crashing(lake, MERGE_CRASH.format(n=8))
    assert p.returncode == 9, p.stderr
    with Rollup(lake) as r:
        r.compact()
        after = snapshot(r.con)
        first = lambda e: e["timestamp"].date() == date(2025, 11, 28)  # noqa: E731
        for n in NAMES[1:]:
            rows = keyed(n, table_rows(r.con, f"rollup_{n}", "day = '2025-11-28'"))
            want = truth(lake, n, first)
            assert set(rows) == set(want), n
            for k, m in want.items():
                assert_measures(rows[k], m, (n, k))
            assert [x for x in after[f"rollup_{n}"] if x[0] == date(2025, 11, 29)] == \
                   [x for x in before[f"rollup_{n}"] if x[0] == date(2025, 11, 29)], n  # fmt: skip

    # a normal update completes it
    with Rollup(lake) as r:
        s = r.update()
        assert s.events_added == 15 and s.days_published == ["2025-11-28", "2025-11-29"]
        assert_rollup_matches_truth(r.con, lake)
        assert r.con.execute("SELECT sum(requests) FROM rollup_daily").fetchone() == (50,)
    assert_published_equals_state(lake)


def published_totals(lake: Path) -> dict[str, tuple[Any, ...]]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    published_views(con, lake)
    out = {}
    for n in NAMES:
        sql = f"SELECT count(*), sum(requests), sum(cost_usd) FROM rollup_{n}"
        rows, requests, cost = con.execute(sql).fetchone()  # type: ignore[misc]
        out[n] = (rows, requests, None if cost is None else round(cost, 9))
    con.close()
    return out


def assert_published_equals_state(lake: Path) -> None:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    published_views(con, lake)
    with Rollup(lake) as r:
        for n in NAMES:
            want = r.con.execute(f"SELECT * FROM rollup_{n} ORDER BY ALL").fetchall()
            assert con.execute(f"SELECT * FROM rollup_{n} ORDER BY ALL").fetchall() == want, n
    con.close()


def test_crash_after_commit_before_publish(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    ingest_events(lake, [spread(i) for i in range(20)], "a.jsonl")
    with Rollup(lake) as r:
        r.update()
    ingest_events(lake, [spread(i, days=3) for i in range(20, 40)], "b.jsonl")
    old, old_files = published_totals(lake), published(lake)

    p = run_crashing(lake, "rollup.Rollup.publish = lambda self: os._exit(9)")
    assert p.returncode == 9, p.stderr
    assert published_totals(lake) == old and published(lake) == old_files  # nothing published
    with Rollup(lake) as r:
        assert r.con.execute("SELECT sum(requests) FROM rollup_daily").fetchone() == (40,)  # committed
        s = r.update()
        assert (s.files_new, s.events_added) == (0, 0)
        assert s.days_published == ["2025-11-28", "2025-11-29", "2025-11-30"]
    assert_published_equals_state(lake)

    # a crash in the middle of publishing (after two files were replaced): the next update
    # publishes every date again
    ingest_events(lake, [spread(i, days=3) for i in range(40, 60)], "c.jsonl")
    p = run_crashing(lake, """
        real = rollup.os.replace
        def replace(a, b):
            crash_on(3)
            return real(a, b)
        rollup.os.replace = replace
    """)
    assert p.returncode == 9, p.stderr
    with Rollup(lake) as r:
        s = r.update()
        assert s.events_added == 0 and s.days_published == ["2025-11-28", "2025-11-29", "2025-11-30"]
        assert_rollup_matches_truth(r.con, lake)
    assert_published_equals_state(lake)
    assert published_totals(lake)["daily"][1] == 60


# --- 7. published views --------------------------------------------------------------------------


def test_published_views_equal_the_state(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    now = datetime.now(UTC).replace(microsecond=0)
    recent = [event(1000 + i, timestamp=ms(now - timedelta(hours=30)) + i * 60_000) for i in range(30)]
    ingest_events(lake, [spread(i, days=3) for i in range(30)] + recent, "a.jsonl")

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    assert published_views(con, lake) == [f"rollup_{n}" for n in NAMES]
    empty_columns = {}
    for n in NAMES:
        assert con.execute(f"SELECT count(*) FROM rollup_{n}").fetchone() == (0,), n
        empty_columns[n] = con.execute(f"DESCRIBE rollup_{n}").fetchall()
    con.close()

    with Rollup(lake) as r:
        r.update()
        state = {n: r.con.execute(f"SELECT * FROM rollup_{n} ORDER BY ALL").fetchall() for n in NAMES}
        state_columns = {n: [c[:2] for c in r.con.execute(f"DESCRIBE rollup_{n}").fetchall()] for n in NAMES}
    fresh = duckdb.connect()
    fresh.execute("SET TimeZone = 'UTC'")
    published_views(fresh, lake)
    for n in NAMES:
        assert state[n], n  # every grain has rows, minute included (recent events)
        assert fresh.execute(f"SELECT * FROM rollup_{n} ORDER BY ALL").fetchall() == state[n], n
        assert [c[:2] for c in fresh.execute(f"DESCRIBE rollup_{n}").fetchall()] == state_columns[n], n
        assert [c[:2] for c in empty_columns[n]] == state_columns[n], n
    total = fresh.execute("SELECT sum(requests), sum(cost_usd) FROM rollup_daily").fetchone()
    events = dedup(raw_rows(lake))
    assert total is not None and total[0] == len(events) == 60
    assert math.isclose(total[1], sum(e["cost_usd"] or 0 for e in events), abs_tol=1e-9)
    for n in ("hourly", "labels", "labels_hourly", "virtual_keys", "models_hourly"):
        (cost,) = fresh.execute(f"SELECT sum(cost_usd) FROM rollup_{n}").fetchone()  # type: ignore[misc]
        assert math.isclose(cost, total[1]), n
    fresh.close()


# --- 8. minute retention -------------------------------------------------------------------------


def test_minute_rollups_keep_only_recent_days(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    ages = (1, 2, 3, 5)
    events = [event(a * 100 + i, timestamp=ms(today - timedelta(days=a, hours=-12)) + i * 1000)
              for a in ages for i in range(4)]  # fmt: skip
    ingest_events(lake, events, "a.jsonl")
    day = {a: (today - timedelta(days=a)).date() for a in ages}

    with Rollup(lake, minute_retention_days=2) as r:
        r.update()
        if datetime.now(UTC).date() != today.date():
            pytest.skip("the UTC date changed during the test")
        minute_days = {d for (d,) in r.con.execute("SELECT DISTINCT day FROM rollup_minute").fetchall()}
        assert minute_days == {day[1], day[2]}
        assert_rollup_matches_truth(r.con, lake, ("minute",), lambda e: e["timestamp"].date() in minute_days)
        assert_rollup_matches_truth(r.con, lake, NAMES[1:])
    dirs = {p.name for p in (lake / "_rollups" / "minute").iterdir()}
    assert dirs == {f"date={day[1]}", f"date={day[2]}"}
    for n in ("hourly", "daily"):
        assert {p.name for p in (lake / "_rollups" / n).iterdir()} == {f"date={d}" for d in day.values()}

    # a shorter retention: day 2 ages out of the state and of the published folder
    with Rollup(lake, minute_retention_days=1) as r:
        s = r.update()
        assert s.days_published == []
        assert {d for (d,) in r.con.execute("SELECT DISTINCT day FROM rollup_minute").fetchall()} == {day[1]}
        assert r.con.execute("SELECT count(DISTINCT day) FROM rollup_hourly").fetchone() == (4,)
    assert {p.name for p in (lake / "_rollups" / "minute").iterdir()} == {f"date={day[1]}"}


# --- 9. the command line -------------------------------------------------------------------------


def test_rollup_command_and_a_held_state(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    ingest_events(lake, [spread(i) for i in range(25)], "a.jsonl")
    r1 = spendlake("rollup", "--lake", str(lake))
    assert r1.returncode == 0, r1.stderr.decode()
    summary = r1.stderr.decode()
    assert "rolled up 25 new events" in summary and "published 2 dates" in summary, summary

    ingest_events(lake, [spread(i) for i in range(25, 40)], "b.jsonl")
    with Rollup(lake):  # another process (serve) holds the state
        held = spendlake("rollup", "--lake", str(lake))
        assert held.returncode == 1
        err = held.stderr.decode()
        assert err.count("\n") == 1 and "in use by another spendlake process" in err and "Traceback" not in err, err
        q = spendlake("query", "--lake", str(lake), "--format", "json",
                      "SELECT (SELECT sum(requests) FROM rollup_daily) AS rolled, "
                      "(SELECT count(*) FROM request_log) AS raw")  # fmt: skip
        assert q.returncode == 0, q.stderr.decode()
        assert orjson.loads(q.stdout) == [{"rolled": 25, "raw": 40}]  # published rollups; raw events
    r2 = spendlake("rollup", "--lake", str(lake))
    assert r2.returncode == 0 and "rolled up 15 new events" in r2.stderr.decode(), r2.stderr.decode()
    with Rollup(lake) as r:
        assert_rollup_matches_truth(r.con, lake)


# --- 10. compaction scope, the hourly trend's table ------------------------------------------------

UNIT_OF = {"minute": "minute", "hourly": "hour", "daily": "day", "labels_hourly": "hour", "models_hourly": "hour"}


def rows_by_rowid(con: duckdb.DuckDBPyConnection, name: str) -> dict[int, tuple[Any, ...]]:
    return {row[0]: row[1:] for row in con.execute(f"SELECT rowid, * FROM rollup_{name}").fetchall()}


def test_compaction_rewrites_only_the_appended_ranges(tmp_path: Path) -> None:
    """Two updates append to buckets that already hold rows (recent minutes and hours, and a
    late event on an old date) before one compaction: every key is one row again and equal to
    the raw truth, and every row outside the appended ranges (other dates, other hours of the
    same date) is the very row it was (same DuckDB rowid): a compaction rewrites what it was
    appended to, never a whole table, nor a whole date of a table with time buckets."""
    lake = tmp_path / "lake"
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(hours=6)
    recent = [event(i, timestamp=ms(start) + i * 72_000) for i in range(300)]  # 6 hours, 17 keys
    ingest_events(lake, recent + [spread(1000 + i) for i in range(40)], "a.jsonl")
    with Rollup(lake) as r:
        r.update()
        before = {n: rows_by_rowid(r.con, n) for n in NAMES}
        # the same keys again, in a 10-minute window two hours ago; a late event on an old date
        window = ms(now - timedelta(hours=2))
        b = [event(2000 + i, timestamp=window + i * 20_000) for i in range(20)]
        late = event(3000, timestamp=BASE_MS + 3_600_000)  # 2025-11-28 13:00: that date has rows
        ingest_events(lake, [*b, late], "b.jsonl")
        r.update(publish=False)
        c = [event(4000 + i, timestamp=window + 5_000 + i * 40_000) for i in range(10)]
        ingest_events(lake, c, "c.jsonl")
        r.update(publish=False)
        r.compact()
        minute_days = {d for (d,) in r.con.execute("SELECT DISTINCT day FROM rollup_minute").fetchall()}
        assert_rollup_matches_truth(r.con, lake)  # one row per key (keyed() asserts it), exact
        assert_rollup_matches_truth(r.con, lake, ("minute",), lambda e: e["timestamp"].date() in minute_days)
        after = {n: rows_by_rowid(r.con, n) for n in NAMES}

    appended = [datetime.fromtimestamp(e["timestamp"] / 1000, UTC) for e in (*b, late, *c)]
    for n in NAMES:
        unit = UNIT_OF.get(n)
        spans: dict[date, tuple[int, int]] = {}
        for ts in appended:
            key = floor_ts(ts, unit) if unit else 0
            lo, hi = spans.get(ts.date(), (key, key))
            spans[ts.date()] = (min(lo, key), max(hi, key))

        def inside(row: tuple[Any, ...], spans: dict[date, tuple[int, int]] = spans, unit: str | None = unit) -> bool:
            if row[0] not in spans:
                return False
            lo, hi = spans[row[0]]
            return not unit or lo <= int(row[1].timestamp()) <= hi

        kept = {rid: row for rid, row in before[n].items() if not inside(row)}
        assert all(after[n].get(rid) == row for rid, row in kept.items()), f"rollup_{n}: a row outside the appended ranges was rewritten"
        if n != "minute":
            assert kept, n  # there were rows outside the ranges to keep
            assert any(rid not in before[n] for rid in after[n]), n  # and the ranges were rewritten
        if unit in ("minute", "hour"):  # the same date's other buckets are among the kept rows
            assert any(row[0] in spans for row in kept.values()), n


def hourly_truth(lake: Path) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for r in dedup(raw_rows(lake)):
        m = out.setdefault(floor_ts(r["timestamp"], "hour"), {**empty_measures(), "errors": 0})
        add_row(m, r)
        m["errors"] += r["status"] == "error"
    return out


def assert_hourly_trend_is_the_truth(lake: Path) -> None:
    con = query.connect(lake)
    cols, rows = query.run(con, "SELECT * FROM hourly_trend")
    con.close()
    assert cols == ["hour", "requests", "unpriced", "errors", "cost_usd", "input_tokens", "output_tokens",
                    "total_tokens", "avg_latency_ms"]  # fmt: skip
    want = hourly_truth(lake)
    assert [int(r[0].timestamp()) for r in rows] == sorted(want)  # one row per hour, in order
    for hour, requests, unpriced, errors, cost, inp, out, total, latency in rows:
        w = want[int(hour.timestamp())]
        assert (requests, unpriced, errors, inp, out, total) == (
            w["requests"], w["unpriced"], w["errors"], w["input_tokens"], w["output_tokens"],
            w["input_tokens"] + w["output_tokens"]), hour  # fmt: skip
        assert math.isclose(cost, w["cost_usd"], rel_tol=1e-9, abs_tol=1e-12), hour
        avg = w["latency_ms_sum"] / w["latency_count"] if w["latency_count"] else None
        assert latency == avg if avg is None else math.isclose(latency, avg, rel_tol=1e-9), hour


def test_hourly_trend_reads_the_models_hourly_table_and_equals_raw_hours(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    events = [spread(i, days=3, status="error" if i % 9 == 0 else "success") for i in range(90)]
    for e in events[::11]:
        del e["latency_ms"]
    ingest_events(lake, events + [dict(e, output_tokens=1) for e in events[:7]], "a.jsonl")  # copies too
    with Rollup(lake) as r:
        r.update()
        assert_rollup_matches_truth(r.con, lake, ("models_hourly", "labels_hourly"))
        n_models, n_labels = r.con.execute(
            "SELECT (SELECT count(*) FROM rollup_models_hourly), (SELECT count(*) FROM rollup_labels_hourly)").fetchone()  # type: ignore[misc]  # fmt: skip
        assert n_models < n_labels  # narrower: no team and customer
    assert_hourly_trend_is_the_truth(lake)


def test_a_state_from_before_models_hourly_is_backfilled_once(tmp_path: Path) -> None:
    """A state rolled up by a version without rollup_models_hourly: the table is filled from
    rollup_labels_hourly when the state is opened, those dates are published again, and the
    hourly trend answers for the whole history, not only for what arrives afterwards."""
    lake = tmp_path / "lake"
    ingest_events(lake, [spread(i, days=3) for i in range(60)], "a.jsonl")
    with Rollup(lake) as r:
        r.update()
        r.con.execute("DROP TABLE rollup_models_hourly")
    for f in (lake / "_rollups" / "models_hourly").glob("date=*/rollup.parquet"):
        f.unlink()
    ingest_events(lake, [spread(i, days=3) for i in range(60, 70)], "b.jsonl")
    with Rollup(lake) as r:
        assert_rollup_matches_truth(r.con, lake, ("models_hourly",), lambda e: e["event_id"] < "evt-000000060")
        s = r.update()
        assert s.events_added == 10 and s.days_published == ["2025-11-28", "2025-11-29", "2025-11-30"]
        assert_rollup_matches_truth(r.con, lake)
    with Rollup(lake) as r:  # once: nothing more to do
        assert r.update().days_published == []
    assert_published_equals_state(lake)
    assert_hourly_trend_is_the_truth(lake)


# --- 11. exactly once across many small updates (the in-memory seen index) ------------------------


def assert_equal_states(a: duckdb.DuckDBPyConnection, b: duckdb.DuckDBPyConnection) -> None:
    """Two compacted states hold the same keys with the same measures (floats to 1e-9)."""
    for n in NAMES:
        ga, gb = keyed(n, table_rows(a, f"rollup_{n}")), keyed(n, table_rows(b, f"rollup_{n}"))
        assert set(ga) == set(gb), (n, set(ga) ^ set(gb))
        for k, row in gb.items():
            assert_measures(ga[k], {m: row[m] for m in MEASURES}, (n, k))


def raw_totals(lake: Path) -> tuple[int, float]:
    """Straight SQL over the lake: events (one per UTC date and event_id, the earliest ingested
    copy) and their cost."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    n, cost = con.execute(
        f"""SELECT count(*), sum(cost_usd) FROM (
              SELECT * FROM read_parquet('{lake}/events/*/*.parquet')
              QUALIFY row_number() OVER (PARTITION BY "timestamp"::DATE, event_id
                                         ORDER BY ingested_at, source_topic, source_partition, source_offset) = 1)"""
    ).fetchone()  # type: ignore[misc]
    con.close()
    return n, cost


def test_many_small_updates_count_each_event_once_and_equal_a_rollup_from_scratch(tmp_path: Path) -> None:
    """Eight files, each rolled up on its own by one long-lived Rollup (as serve does), with a
    restart in the middle. Each file repeats events of earlier files (another batch: the seen
    index must know them, after the restart from the seen table) and holds copies of its own
    events (one batch, one ingested_at: the first line counts); one file is a late retry of
    an old date's events. The result equals a rollup of the whole lake from scratch and plain
    SQL over the raw files, to the cent; status.json counts the same events."""
    lake = tmp_path / "lake"
    now = datetime.now(UTC).replace(microsecond=0)
    old_day_ms = ms(now - timedelta(days=9))  # past the minute retention: the other path
    sent: list[dict[str, Any]] = []
    r = Rollup(lake)
    try:
        for k in range(8):
            new = [event(k * 100 + i, timestamp=ms(now - timedelta(hours=5 - k * 0.5)) + i * 700) for i in range(30)]
            if k == 0:
                new += [event(900 + i, timestamp=old_day_ms + i * 1000) for i in range(10)]
            retries = [dict(e, output_tokens=1, latency_ms=99999.0) for e in sent[k * 7 % max(1, len(sent)) :][:9]]
            if k == 5:  # days later, a retry of the old date's events: that date's set is loaded again
                retries += [dict(e, output_tokens=2) for e in sent if e["event_id"] >= "evt-000000900"][:5]
            own_copies = [dict(e, output_tokens=3) for e in new[::6]]  # later lines of the same file
            ingest_events(lake, new + retries + own_copies, f"f{k}.jsonl")
            if k == 4:  # a restart: the index starts empty and loads each date from the seen table
                r.close()
                r = Rollup(lake)
                r._seen.max_entries = 1  # and keeps only the date in use: every date is loaded again
            s = r.update(publish=k % 3 == 2)
            assert s.events_added == len(new), (k, s)
            assert s.duplicates == len(retries) + len(own_copies), (k, s)
            sent += new
        r.publish()
        status = orjson.loads((lake / "_rollups" / "status.json").read_bytes())
        assert status["events"] == status["published_events"] == len(sent)
        assert_rollup_matches_truth(r.con, lake)
        (events, cost) = r.con.execute("SELECT sum(requests), sum(cost_usd) FROM rollup_daily").fetchone()  # type: ignore[misc]
        raw_n, raw_cost = raw_totals(lake)
        assert events == raw_n == len(sent)
        assert round(cost, 2) == round(raw_cost, 2) and math.isclose(cost, raw_cost, rel_tol=1e-9)
        scratch = tmp_path / "scratch"
        (scratch / "events").mkdir(parents=True)
        for d in (lake / "events").iterdir():
            (scratch / "events" / d.name).symlink_to(d)
        with Rollup(scratch) as fresh:
            assert fresh.update().events_added == len(sent)
            assert_equal_states(r.con, fresh.con)
    finally:
        r.close()


def test_a_retry_in_a_later_batch_after_the_date_left_memory_counts_once(tmp_path: Path) -> None:
    """The same event_id in two batches of two different files, the second after other dates
    pushed the first's date out of the in-memory index: the second copy is found in the seen
    table and counts nothing; a new event of that date still counts."""
    lake = tmp_path / "lake"
    first = [spread(i, days=1) for i in range(10)]  # 2025-11-28
    ingest_events(lake, first, "a.jsonl")
    with Rollup(lake) as r:
        r._seen.max_entries = 5
        assert r.update().events_added == 10
        other = [event(100 + i, timestamp=BASE_MS + 2 * DAY_MS + i * 1000) for i in range(8)]  # 2025-11-30
        ingest_events(lake, other, "b.jsonl")
        assert r.update().events_added == 8
        assert date(2025, 11, 28) not in r._seen.days  # evicted: 18 hashes > 5
        ingest_events(lake, [dict(first[4], output_tokens=1), event(50, timestamp=BASE_MS + 50_000)], "c.jsonl")
        s = r.update()
        assert (s.events_added, s.duplicates) == (1, 1)
        assert_rollup_matches_truth(r.con, lake)
        assert r.con.execute("SELECT sum(requests) FROM rollup_daily").fetchone() == (19,)


def test_a_failed_update_leaves_the_index_as_the_table(tmp_path: Path) -> None:
    """A hook fails inside a date's transaction: nothing of it is kept, neither in the state nor
    in the in-memory index, so the next update counts those events (once) and their retries
    after that count nothing."""
    lake = tmp_path / "lake"
    ingest_events(lake, [spread(i, days=1) for i in range(5)], "a.jsonl")
    calls = [0]

    def flaky(con: duckdb.DuckDBPyConnection, table: str) -> None:
        calls[0] += 1
        if calls[0] == 2:
            raise RuntimeError("hook failed")

    with Rollup(lake, event_hooks=[flaky]) as r:
        assert r.update().events_added == 5
        b = [spread(i, days=1) for i in range(5, 12)]
        ingest_events(lake, b, "b.jsonl")
        with pytest.raises(RuntimeError):
            r.update()
        s = r.update()
        assert (s.files_new, s.events_added, s.duplicates) == (1, 7, 0)
        ingest_events(lake, [dict(e, output_tokens=1) for e in b], "c.jsonl")
        assert (r.update().events_added, r.con.execute("SELECT count(*) FROM seen").fetchone()) == (0, (12,))
        assert orjson.loads((lake / "_rollups" / "status.json").read_bytes())["events"] == 12
        assert sum(len(s) for s in r._seen.days.values()) == 12  # each counted event's hash held once
        assert_rollup_matches_truth(r.con, lake)


def test_seen_index_is_exact_on_all_128_bits() -> None:
    """DaySet against a Python set: keys sharing their upper 64 bits (a run to scan), keys in the
    base, the delta and not yet sorted in, and keys absent."""
    import numpy as np

    from aggregator.seen import DaySet

    rng = np.random.default_rng(3)
    hi = rng.integers(1, 2**63, 5000, dtype=np.uint64)
    hi[100:110] = hi[99]  # eleven keys with one upper half
    lo = rng.integers(1, 2**63, 5000, dtype=np.uint64)
    s = DaySet(hi[:2000], lo[:2000])
    for a, b in ((2000, 2100), (2100, 2150), (2150, 4000)):  # delta, pending, a merge into the base
        s.add(hi[a:b], lo[a:b])
        assert len(s) == b
    held = set(zip(hi[:4000].tolist(), lo[:4000].tolist()))
    q_hi = np.concatenate([hi, hi[:50], np.full(5, hi[99], np.uint64)])
    q_lo = np.concatenate([lo, lo[:50] ^ np.uint64(1), rng.integers(1, 2**63, 5, dtype=np.uint64)])
    got = s.contains(q_hi, q_lo)
    want = np.array([(h, lo_) in held for h, lo_ in zip(q_hi.tolist(), q_lo.tolist())])
    assert (got == want).all()
    assert got[100:110].all() and not got[-5:].any() and not got[-55:-5].any()
