"""aggregator/query.py and sql/: read-only, sandboxed SQL over a real lake.

The lake is built by the real pipeline (`spendlake ingest --source`), with the same events in
two source files (duplicate event_ids), two teams, an unknown model, emitter-reported costs and a
dead letter; the rollups are published by the real `Rollup.update()`. Every total is checked
against an independent computation over the raw Parquet files, in Python.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aggregator import query
from aggregator.rollup import Rollup
from conftest import event, spendlake
from ingest.schema import DEAD_LETTER_SCHEMA, LAKE_SCHEMA
from pricing.money import cost_text, round_cost

DAY_MS = 86_400_000
N_A, N_B, OVERLAP = 200, 110, 50  # a.jsonl: events 0..199; b.jsonl: 150..259 (150..199 in both)

VIEWS = (
    "request_log", "top_expensive_requests", "daily_cost_by_team", "daily_cost_by_customer",
    "daily_cost_by_model", "daily_cost_by_provider", "budget_status", "model_efficiency",
    "provider_comparison", "token_usage_over_time", "hourly_trend", "reported_vs_catalog", "unpriced_usage",
)  # fmt: skip
BASE_VIEWS = ("events", "dead_letters", "rollup_minute", "rollup_hourly", "rollup_daily", "rollup_labels")


def ev(i: int) -> dict[str, Any]:
    over: dict[str, Any] = {"team": "team-a" if i % 2 else "team-b"}
    if i % 3:
        over["customer"] = "customer-acme"
    if i % 10 == 0:
        over["timestamp"] = 1764331200000 + DAY_MS + i * 1000  # the next day
    if i % 25 == 0:
        over["model"] = "no-such-model-9000"  # unknown: unpriced (or the emitter's figure)
    if i % 7 == 0:
        over["cost_usd"] = 0.01  # the emitter's own figure
    if i % 11 == 0:
        over.update(output_tokens=600, reasoning_tokens=120, cache_write_tokens=100, status="error", status_code=500)
    if i % 13 == 0:
        over["tags"] = {"feature": "search"}
    e = event(i, **over)
    if i % 17 == 0:
        del e["latency_ms"]
    return e


def write_jsonl(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def ingest(lake: Path, src: Path) -> None:
    spendlake("ingest", "--source", str(src), "--lake", str(lake), "--catalog", "builtin", "--quiet", check=True)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("query")
    lake = root / "lake"
    a = write_jsonl(root / "a.jsonl", [orjson.dumps(ev(i)) for i in range(N_A)] + [b"this is not json"])
    b = write_jsonl(root / "b.jsonl", [orjson.dumps(ev(i)) for i in range(N_A - OVERLAP, N_A - OVERLAP + N_B)])
    ingest(lake, a)
    ingest(lake, b)  # its first 50 events are already in the lake (from a.jsonl): duplicates
    with Rollup(lake) as r:
        stats = r.update()
    assert stats.duplicates == OVERLAP
    # what the budgets module publishes (aggregator.budgets.STATUS_SCHEMA); written here so
    # budget_status reads a real file
    values = ["'team'", "'team-a'", "'Team A'", "'team-a#0'", "100", "'1M'", "2.5", "97.5", "0.025",
              "'2025-11-01 00:00:00+00'", "'2025-12-01 00:00:00+00'", "0.1", "NULL", "130"]  # fmt: skip
    select = ", ".join(f"{v}::{t} AS {c}" for v, (c, t) in zip(values, query.BUDGET_STATUS_COLUMNS, strict=True))
    budgets = duckdb.connect()
    budgets.execute(f"COPY (SELECT {select}) TO '{lake / '_rollups' / 'budgets.parquet'}' (FORMAT parquet)")
    budgets.close()
    return lake


@pytest.fixture
def con(lake: Path) -> Any:
    c = query.connect(lake)
    yield c
    c.close()


def raw_events(lake: Path) -> list[dict[str, Any]]:
    """Every lake row, read with pyarrow (not DuckDB)."""
    rows: list[dict[str, Any]] = []
    for f in sorted((lake / "events").glob("date=*/*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return rows


def deduplicated(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """event_id -> its earliest ingested copy, in plain Python."""
    best: dict[str, dict[str, Any]] = {}

    def order(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["ingested_at"], r["source_topic"], r["source_partition"], r["source_offset"])

    for r in rows:
        cur = best.get(r["event_id"])
        if cur is None or order(r) < order(cur):
            best[r["event_id"]] = r
    return best


def scalar(con: Any, sql: str) -> Any:
    _, rows = query.run(con, sql)
    assert len(rows) == 1 and len(rows[0]) == 1, rows
    return rows[0][0]


# --- views and totals ------------------------------------------------------------------------


def test_every_view_returns_rows(con: Any) -> None:
    for view in (*VIEWS, *BASE_VIEWS):
        if view == "rollup_minute":
            continue  # minute rollups are kept 3 days; these events are from 2025
        assert scalar(con, f"SELECT count(*) FROM {view}") > 0, view
    names = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert set(VIEWS) | set(BASE_VIEWS) <= names


def test_totals_agree_to_the_cent_and_count_each_event_once(con: Any, lake: Path) -> None:
    raw = raw_events(lake)
    events = deduplicated(raw)
    assert len(raw) == N_A + N_B and len(events) == N_A + N_B - OVERLAP  # the duplicates are in the lake
    expected = sum(r["cost_usd"] for r in events.values() if r["cost_usd"] is not None)
    unpriced = sum(1 for r in events.values() if r["cost_source"] == "unpriced")
    assert unpriced > 0 and expected > 1

    totals = {
        "request_log": "SELECT sum(cost_usd) FROM request_log",
        "top_expensive_requests": "SELECT sum(cost_usd) FROM top_expensive_requests",
        "rollup_daily": "SELECT sum(cost_usd) FROM rollup_daily",
        "rollup_hourly": "SELECT sum(cost_usd) FROM rollup_hourly",
        "rollup_labels": "SELECT sum(cost_usd) FROM rollup_labels",
        "daily_cost_by_team": "SELECT sum(cost_usd) FROM daily_cost_by_team",
        "daily_cost_by_customer": "SELECT sum(cost_usd) FROM daily_cost_by_customer",
        "daily_cost_by_model": "SELECT sum(cost_usd) FROM daily_cost_by_model",
        "daily_cost_by_provider": "SELECT sum(cost_usd) FROM daily_cost_by_provider",
        "model_efficiency": "SELECT sum(cost_usd) FROM model_efficiency",
        "provider_comparison": "SELECT sum(cost_usd) FROM provider_comparison",
        "hourly_trend": "SELECT sum(cost_usd) FROM hourly_trend",
    }
    for name, sql in totals.items():
        assert abs(scalar(con, sql) - expected) < 0.005, name
        assert round(scalar(con, sql), 2) == round(expected, 2), name

    # an independent DuckDB computation over the raw Parquet, with the dedup rule spelled out
    plain = duckdb.connect()
    independent = plain.execute(
        f"""SELECT sum(cost_usd), count(*) FROM (
              SELECT event_id, arg_min(cost_usd, (ingested_at, source_topic, source_partition, source_offset)) AS cost_usd
              FROM read_parquet('{lake}/events/*/*.parquet') GROUP BY event_id)"""
    ).fetchone()
    plain.close()
    assert independent is not None
    assert abs(independent[0] - expected) < 0.005 and independent[1] == len(events)

    n = len(events)
    assert scalar(con, "SELECT count(*) FROM events") == len(raw)
    for sql in ("SELECT count(*) FROM request_log", "SELECT count(DISTINCT event_id) FROM request_log",
                "SELECT sum(requests) FROM daily_cost_by_team", "SELECT sum(requests) FROM daily_cost_by_customer",
                "SELECT sum(requests) FROM model_efficiency", "SELECT sum(requests) FROM provider_comparison",
                "SELECT sum(requests) FROM hourly_trend", "SELECT sum(requests) FROM rollup_daily"):  # fmt: skip
        assert scalar(con, sql) == n, sql
    for sql in ("SELECT sum(requests) FROM unpriced_usage", "SELECT sum(unpriced) FROM daily_cost_by_model",
                "SELECT sum(unpriced) FROM hourly_trend"):  # fmt: skip
        assert scalar(con, sql) == unpriced, sql

    # per team, per day: the view against Python
    by_team: dict[tuple[date, str], float] = {}
    for r in events.values():
        key = (r["timestamp"].date(), r["team"])
        by_team[key] = by_team.get(key, 0.0) + (r["cost_usd"] or 0.0)
    _, rows = query.run(con, "SELECT day, team, cost_usd FROM daily_cost_by_team")
    assert {(d, t): round(c, 6) for d, t, c in rows} == {k: round(v, 6) for k, v in by_team.items()}
    assert {t for _, t, _ in rows} == {"team-a", "team-b"} and len({d for d, _, _ in rows}) == 2

    # tokens, unpivoted
    for token_type, column in (("input", "input_tokens"), ("output", "output_tokens"),
                               ("cached_input", "cached_input_tokens"), ("cache_write", "cache_write_tokens"),
                               ("reasoning", "reasoning_tokens")):  # fmt: skip
        got = scalar(con, f"SELECT sum(tokens) FROM token_usage_over_time WHERE token_type = '{token_type}'")
        assert got == sum(r[column] for r in events.values()), token_type
    assert scalar(con, "SELECT sum(tokens) FROM token_usage_over_time WHERE token_type = 'reasoning'") > 0


def test_request_log_keeps_the_earliest_ingested_copy(con: Any, lake: Path) -> None:
    dup = f"evt-{N_A - OVERLAP:09d}"
    _, copies = query.run(con, f"SELECT source_topic, ingested_at FROM events WHERE event_id = '{dup}' ORDER BY ingested_at")
    assert [t for t, _ in copies] == ["file:a.jsonl", "file:b.jsonl"]
    _, kept = query.run(con, f"SELECT ingested_at FROM request_log WHERE event_id = '{dup}'")
    assert kept == [(copies[0][1],)]
    cols, _ = query.run(con, "SELECT * FROM request_log LIMIT 0")
    for c in ("time", "virtual_key", "team", "customer", "user", "project", "model", "provider", "input_tokens",
              "output_tokens", "cached_input_tokens", "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens",
              "cost_usd", "cost_input_usd", "cost_cached_input_usd", "cost_cache_write_usd", "cost_output_usd",
              "cost_reasoning_usd", "cost_source", "latency_ms", "status", "status_code", "request_type", "event_id",
              "price_id"):  # fmt: skip
        assert c in cols, c


def test_views_answer_their_questions(con: Any, lake: Path) -> None:
    events = deduplicated(raw_events(lake))
    # the most expensive request first, unpriced ones last
    _, top = query.run(con, "SELECT event_id, cost_usd FROM top_expensive_requests LIMIT 3")
    best = max((r for r in events.values() if r["cost_usd"] is not None), key=lambda r: r["cost_usd"])
    assert top[0] == (best["event_id"], best["cost_usd"]) and top[0][1] >= top[1][1] >= top[2][1]
    _, last = query.run(con, "SELECT cost_usd FROM top_expensive_requests OFFSET (SELECT count(*) - 1 FROM request_log)")
    assert last == [(None,)]
    # the unknown model: unpriced rows (no reported cost) per provider
    _, rows = query.run(con, "SELECT provider, model, requests, last_seen FROM unpriced_usage ORDER BY provider")
    want: dict[str, list[datetime]] = {}
    for r in events.values():
        if r["cost_source"] == "unpriced":
            want.setdefault(r["provider"], []).append(r["timestamp"])
    assert [(p, m, n) for p, m, n, _ in rows] == [(p, "no-such-model-9000", len(v)) for p, v in sorted(want.items())]
    assert all(last == max(want[p]) for p, _, _, last in rows)
    # reported vs catalog: only requests priced from the catalog that also carry a figure
    _, rows = query.run(con, "SELECT provider, model, requests, cost_usd, reported_cost_usd, difference_usd FROM reported_vs_catalog")
    both = [r for r in events.values() if r["cost_source"] == "catalog" and r["reported_cost_usd"] is not None]
    assert sum(n for _, _, n, *_ in rows) == len(both) > 0
    for _, _, _, cost, reported, diff in rows:
        assert math.isclose(diff, cost - reported, abs_tol=1e-12)
    # efficiency: per-request cost over priced requests only
    _, rows = query.run(con, "SELECT requests, unpriced, cost_usd, cost_per_request, cost_per_1k_tokens FROM model_efficiency "
                             "WHERE model = 'gpt-4o'")  # fmt: skip
    ((n, u, cost, per_request, per_1k),) = rows
    assert u == 0 and math.isclose(per_request, cost / n)
    tokens = sum(r["input_tokens"] + r["output_tokens"] for r in events.values() if r["model"] == "gpt-4o")
    assert math.isclose(per_1k, 1000 * cost / tokens)
    _, rows = query.run(con, "SELECT provider, cost_share, error_rate FROM provider_comparison")
    assert math.isclose(sum(share for _, share, _ in rows), 1.0) and all(0 < e < 1 for _, _, e in rows)
    # hourly buckets are hours
    _, rows = query.run(con, "SELECT hour FROM hourly_trend")
    assert rows and all(h.minute == 0 and h.second == 0 and h.tzinfo is not None for (h,) in rows)
    # budget_status reads what the budgets module publishes
    cols, rows = query.run(con, "SELECT * FROM budget_status")
    assert cols == [c for c, _ in query.BUDGET_STATUS_COLUMNS] and rows[0][:2] == ("team", "team-a")


def test_select_like_statements_run(con: Any) -> None:
    for sql in (
        "SELECT 1",
        "  -- a comment first\n  SELECT 1;",
        "WITH t AS (SELECT team, cost_usd FROM request_log) SELECT team, sum(cost_usd) FROM t GROUP BY team",
        "FROM daily_cost_by_team LIMIT 1",
        "VALUES (1), (2)",
        "TABLE hourly_trend",
        "DESCRIBE request_log",
        "SUMMARIZE SELECT cost_usd FROM request_log",
        "SHOW TABLES",
        "EXPLAIN SELECT * FROM request_log",
        "EXPLAIN ANALYZE SELECT count(*) FROM events",
        "PIVOT (SELECT team, day, cost_usd FROM daily_cost_by_team) ON team USING sum(cost_usd)",
        "SELECT * FROM (VALUES ('a', 1), ('b', 2)) t(k, v) UNPIVOT (x FOR y IN (v))",
    ):
        cols, rows = query.run(con, sql)
        assert cols and rows, sql
    plan = query.format_rows(*query.run(con, "EXPLAIN SELECT * FROM request_log"), "table")
    assert "READ_PARQUET" in plan and "\\n" not in plan and plan.count("\n") > 5


# --- refused statements ----------------------------------------------------------------------


def refused_cases(out: Path) -> list[tuple[str, str]]:
    return [
        ("INSERT INTO t VALUES (1)", "INSERT"),
        ("CREATE TABLE t AS SELECT * FROM events", "CREATE"),
        ("CREATE OR REPLACE VIEW request_log AS SELECT 1", "CREATE"),
        ("DROP VIEW request_log", "DROP"),
        (f"COPY (SELECT * FROM request_log) TO '{out / 'copy.csv'}'", "COPY"),
        (f"COPY request_log FROM '{out / 'in.csv'}'", "COPY"),
        (f"ATTACH '{out / 'attached.duckdb'}' AS x", "ATTACH"),
        ("DETACH memory", "DETACH"),
        ("INSTALL httpfs", "INSTALL"),
        ("LOAD httpfs", "LOAD"),
        ("SET enable_external_access = true", "SET"),
        ("RESET lock_configuration", "RESET"),
        ("PRAGMA enable_profiling", "PRAGMA"),
        ("PRAGMA version", "PRAGMA"),
        (f"EXPORT DATABASE '{out / 'export'}'", "EXPORT"),
        ("CALL pragma_version()", "CALL"),
        ("CHECKPOINT", "CHECKPOINT"),
        ("UPDATE EXTENSIONS", "UPDATE"),
        ("BEGIN TRANSACTION", "BEGIN"),
        ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", "INSERT"),
        (f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{out / 'explained.csv'}'", "EXPLAIN of COPY"),
        (f"EXPLAIN (ANALYZE, FORMAT json) /* x */ COPY (SELECT 1) TO '{out / 'explained2.csv'}'", "EXPLAIN of COPY"),
        (f"/* leading comment */ COPY (SELECT 1) TO '{out / 'commented.csv'}'", "COPY"),
        ("SELECT 1; SELECT 2", "one statement at a time (got 2)"),
        (f"SELECT 1; COPY (SELECT 1) TO '{out / 'second.csv'}'", "one statement at a time (got 2)"),
        ("", "no SQL statement"),
        ("-- only a comment", "no SQL statement"),
    ]


def test_refused_statements_one_line_and_no_file(con: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for sql, label in refused_cases(out):
        with pytest.raises(query.QueryRefused) as info:
            query.run(con, sql)
        msg = str(info.value)
        assert "\n" not in msg and msg.startswith("query: "), (sql, msg)
        if "statement" in label:
            assert label in msg, (sql, msg)
        else:
            assert msg == f"query: only SELECT is allowed (got {label})", (sql, msg)
    assert list(out.iterdir()) == []
    # and the connection still works, its views intact
    assert scalar(con, "SELECT count(*) FROM request_log") == N_A + N_B - OVERLAP


def test_reads_outside_the_lake_are_refused(con: Any, lake: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.parquet"
    duckdb.execute(f"COPY (SELECT 42 AS secret) TO '{outside}' (FORMAT parquet)")
    sibling = Path(f"{lake}2") / "events" / "date=2025-11-28"  # a prefix of the lake is not the lake
    sibling.mkdir(parents=True)
    duckdb.execute(f"COPY (SELECT 42 AS secret) TO '{sibling / 'x.parquet'}' (FORMAT parquet)")
    for sql in (
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM glob('/etc/*')",
        f"SELECT * FROM '{outside}'",
        f"SELECT * FROM read_parquet('{sibling}/*.parquet')",
        f"SELECT * FROM read_parquet('{lake}/events/../../{outside.parent.name}/{outside.name}')",
        f"SELECT * FROM read_blob('{lake}/_state/spendlake.duckdb')",
        f"SELECT * FROM read_text('{lake}/_manifests/**')",
        "SELECT * FROM read_parquet('https://example.com/x.parquet')",
        "SELECT * FROM read_parquet('s3://bucket/x.parquet')",
    ):
        with pytest.raises(query.QueryRefused) as info:
            query.run(con, sql)
        msg = str(info.value)
        assert "\n" not in msg and "Permission Error" in msg and msg.startswith("query: "), (sql, msg)


# --- the second layer: DuckDB's own settings, with the statement check bypassed ----------------


def test_sandbox_holds_without_the_statement_check(con: Any, lake: Path, tmp_path: Path) -> None:
    secret_table = pa.table({"x": [1]})  # noqa: F841 (a Python replacement scan would find it)
    out = tmp_path / "out"
    out.mkdir()
    here = f"spendlake-query-test-{os.getpid()}.csv"  # relative: the current directory
    attempts = [
        f"COPY (SELECT * FROM request_log) TO '{out / 'copy.csv'}'",
        f"COPY (SELECT 1) TO '{here}'",
        f"COPY (SELECT 1) TO '{lake}/_state/x.csv'",
        f"COPY (SELECT 1) TO '{lake}/_manifests/x.csv'",
        f"EXPORT DATABASE '{out / 'export'}'",
        f"ATTACH '{out / 'attached.duckdb'}' AS x",
        f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{out / 'explained.csv'}'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM glob('/*')",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SELECT * FROM secret_table",
        "SET enable_external_access = true",
        "RESET enable_external_access",
        f"SET allowed_directories = ['/', '{out}']",
        "SET allowed_paths = ['/etc/passwd']",
        "SET lock_configuration = false",
        "SET autoinstall_known_extensions = true",
        "PRAGMA enable_profiling",
        "SELECT * FROM enable_logging(storage = 'file')",
    ]
    for sql in attempts:
        with pytest.raises(duckdb.Error):
            con.execute(sql).fetchall()
    assert list(out.iterdir()) == [] and not Path(here).exists()
    assert not (lake / "_state" / "x.csv").exists() and not (lake / "_manifests" / "x.csv").exists()
    settings = dict(con.execute(
        "SELECT name, value FROM duckdb_settings() WHERE name IN ('enable_external_access', 'lock_configuration', "
        "'autoinstall_known_extensions', 'autoload_known_extensions', 'allow_community_extensions')"
    ).fetchall())  # fmt: skip
    assert set(settings.values()) == {"false", "true"} and settings["lock_configuration"] == "true"
    assert settings["enable_external_access"] == "false" and settings["autoinstall_known_extensions"] == "false"
    # what may be read: the lake's three published folders, and DuckDB's own spill directory
    # (DuckDB adds it itself; a fresh one per connection, not ./.tmp)
    (allowed,) = con.execute("SELECT current_setting('allowed_directories')").fetchone()
    spill = con.execute("SELECT current_setting('temp_directory')").fetchone()[0]
    root = lake.resolve()
    assert sorted(allowed) == sorted([f"{root}/events/", f"{root}/dead_letter/", f"{root}/_rollups/", f"{spill}/"])
    assert Path(spill).name.startswith("spendlake-query-") and not Path(spill).exists()
    # and still reads the lake
    assert con.execute("SELECT count(*) FROM events").fetchone() == (N_A + N_B,)


# --- errors ------------------------------------------------------------------------------------


def test_bad_sql_is_one_line_query_error(con: Any) -> None:
    cases = {
        "SELEC cost_usd FROM request_log": 'syntax error at or near "SELEC"',
        "SELECT nosuch FROM request_log": 'Referenced column "nosuch" not found',
        "SELECT * FROM request_logg": "request_logg does not exist",
        "SELECT 'x'::INTEGER": "Could not convert string 'x'",
        "SELECT team,\n  nosuch\nFROM request_log": 'Referenced column "nosuch" not found',
    }
    for sql, needle in cases.items():
        with pytest.raises(query.QueryError) as info:
            query.run(con, sql)
        msg = str(info.value)
        assert needle in msg and "\n" not in msg, (sql, msg)
        assert "LINE " in msg and ">>" in msg, msg  # where, marked on the same line
    with pytest.raises(query.QueryError) as info:
        query.run(con, "SELECT nosuch FROM request_log")
    assert ">>nosuch<<" in str(info.value)


def test_unknown_table_lists_spendlake_names_not_duckdb_internals(con: Any, lake: Path) -> None:
    ours = {name for (name,) in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert set(VIEWS) | set(BASE_VIEWS) <= ours and query.relations(con) == sorted(ours)
    # what DuckDB itself answers: a guess among its internal catalog
    with pytest.raises(duckdb.CatalogException) as raw:
        con.execute("SELECT * FROM team_views")
    assert 'Did you mean "duckdb_views"?' in str(raw.value)

    def listed(msg: str) -> set[str]:
        assert "\n" not in msg and "LINE 1: " in msg, msg
        head, sep, names = msg.partition(" spendlake's tables and views: ")
        assert sep, msg
        return set(names.split(", "))

    with pytest.raises(query.QueryError) as info:
        query.run(con, "SELECT * FROM team_views")
    msg = str(info.value)
    assert "team_views does not exist" in msg and "duckdb_" not in msg and "Did you mean" not in msg, msg
    assert listed(msg) == ours

    # a near miss of one of our names is suggested, whatever DuckDB would have guessed
    for typed, want in (("daily_cost_by_tem", "daily_cost_by_team"), ("rollup_day", "rollup_daily"),
                        ("dead_letter", "dead_letters"), ("main.evnts", "events"), ('"Request_Logs"', "request_log")):
        with pytest.raises(query.QueryError) as info:
            query.run(con, f"SELECT count(*) FROM {typed} WHERE true")
        msg = str(info.value)
        assert f'Did you mean "{want}"?' in msg and f">>{typed}<<" in msg and listed(msg) == ours, msg
    # DuckDB's own names: its guess stays when it is nearly what was typed, or the schema is its own
    with pytest.raises(query.QueryError) as info:
        query.run(con, "SELECT * FROM duckdb_view")
    assert 'Did you mean "duckdb_views" (a DuckDB catalog name)?' in str(info.value)
    with pytest.raises(query.QueryError) as info:
        query.run(con, "SELECT * FROM information_schema.tablez")
    assert 'Did you mean "tables"?' in str(info.value) and "spendlake's" not in str(info.value)

    # the command: exit 2, one line on stderr
    r = spendlake("query", "--lake", str(lake), "SELECT * FROM daily_cost_by_tem")
    err = r.stderr.decode()
    assert r.returncode == 2 and err.count("\n") == 1 and err.startswith("spendlake: query: Catalog Error: "), err
    assert 'Did you mean "daily_cost_by_team"?' in err and listed(err.strip()) == ours


def test_unknown_column_keeps_duckdbs_candidates(con: Any) -> None:
    """DuckDB's candidates for an unknown column come from the query's own FROM: our columns."""
    with pytest.raises(query.QueryError) as info:
        query.run(con, "SELECT cost_us FROM request_log")
    msg = str(info.value)
    assert 'Candidate bindings: "cost_usd"' in msg and "duckdb_" not in msg and "spendlake's" not in msg, msg


# --- formats -----------------------------------------------------------------------------------


def test_format_rows_on_real_results(con: Any) -> None:
    # evt 1: everything set; evt 17: no latency; evt 75: no customer, unknown model (cost NULL)
    cols, rows = query.run(con, """
        SELECT event_id, time, customer, cost_usd, latency_ms
        FROM request_log WHERE event_id IN ('evt-000000001', 'evt-000000017', 'evt-000000075') ORDER BY event_id""")
    assert rows[1][4] is None and rows[2][2] is None and rows[2][3] is None
    table = query.format_rows(cols, rows, "table").splitlines()
    assert table[0].split() == cols and set(table[1]) == {"-", " "} and table[-1] == "(3 rows)"
    widths = [len(part) for part in table[1].split("  ")]
    assert table[2].startswith("evt-000000001  2025-11-28T12:00:01Z  customer-acme")
    assert table[2].endswith(cost_text(rows[0][4]).rjust(widths[4]))  # numbers right-aligned
    assert table[3].endswith("NULL".rjust(widths[4]))
    assert table[4].split()[2:4] == ["NULL", "NULL"]
    cost = table[2].split()[3]
    assert cost == cost_text(rows[0][3]) and float(cost) == pytest.approx(rows[0][3], rel=1e-11)

    text = query.format_rows(cols, rows, "csv")
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    assert parsed[0] == cols and len(parsed) == 4 and text.endswith("\r\n")
    assert parsed[1][:3] == ["evt-000000001", "2025-11-28T12:00:01Z", "customer-acme"]
    assert parsed[1][3] == cost_text(rows[0][3])  # 12 significant digits, as in the table
    assert parsed[2][4] == "" and parsed[3][2:4] == ["", ""]  # NULL is an empty field

    objs = json.loads(query.format_rows(cols, rows, "json"))
    assert [list(o) for o in objs] == [cols] * 3
    assert objs[0]["time"] == "2025-11-28T12:00:01Z" and objs[0]["cost_usd"] == round_cost(rows[0][3])
    assert objs[1]["latency_ms"] is None and objs[2]["customer"] is None and objs[2]["cost_usd"] is None


def test_format_rows_types(con: Any) -> None:
    cols, rows = query.run(con, """
        SELECT 1 AS n, NULL AS nothing, 0.1::DOUBLE + 0.2::DOUBLE AS f, 'nan'::DOUBLE AS nan,
               TIMESTAMPTZ '2025-11-28 12:00:00.123+00' AS ts, TIMESTAMP '2025-11-28 12:00:00' AS naive,
               DATE '2025-11-28' AS d, 'a,"b"' || chr(10) || 'c' AS s, 170141183460469231731687303715884105727::HUGEINT AS big,
               1.50::DECIMAL(10, 2) AS dec, [1, 2] AS l, MAP {'k': 'v'} AS m, INTERVAL 90 MINUTE AS iv,
               '\\xAA'::BLOB AS b, true AS ok, 1 AS n""")
    assert rows[0][9] == Decimal("1.50") and repr(rows[0][2]) == "0.30000000000000004"  # float noise
    objs = json.loads(query.format_rows(cols, rows, "json"))
    assert objs == [{
        "n": 1, "nothing": None, "f": 0.3, "nan": None, "ts": "2025-11-28T12:00:00.123Z",
        "naive": "2025-11-28T12:00:00", "d": "2025-11-28", "s": 'a,"b"\nc', "big": 2**127 - 1, "dec": 1.5,
        "l": [1, 2], "m": {"k": "v"}, "iv": "PT1H30M", "b": "\\xAA", "ok": True, "n_2": 1,
    }]  # fmt: skip
    text = query.format_rows(cols, rows, "csv")
    (header, row) = list(csv.reader(io.StringIO(text, newline="")))
    assert header == cols
    assert row[:4] == ["1", "", "0.3", "nan"] and row[7] == 'a,"b"\nc' and row[10] == "[1,2]"
    assert row[4] == "2025-11-28T12:00:00.123Z" and row[9] == "1.50" and row[14] == "true"
    table = query.format_rows(cols, rows, "table")
    assert "a,\"b\"\\nc" in table and "0.3 " in table and table.endswith("(1 row)\n")
    assert query.format_rows(["a"], [], "json") == "[]\n"
    assert query.format_rows(["a"], [], "table").splitlines()[-1] == "(0 rows)"
    assert query.format_rows(["a"], [], "csv") == "a\r\n"
    with pytest.raises(ValueError):
        query.format_rows(["a"], [], "xml")


# --- empty lakes, and while the state is held -------------------------------------------------


def describe(c: Any, view: str) -> list[tuple[str, str]]:
    return [(name, typ) for name, typ, *_ in c.execute(f"DESCRIBE {view}").fetchall()]


def test_empty_lake_views_exist_and_return_nothing(tmp_path: Path, con: Any) -> None:
    full = con
    for lake in (tmp_path / "empty", tmp_path / "never-created"):
        if lake.name == "empty":
            lake.mkdir()
        c = query.connect(lake)
        try:
            for view in (*VIEWS, *BASE_VIEWS):
                assert scalar(c, f"SELECT count(*) FROM {view}") == 0, view
            cols, _ = query.run(c, "SELECT * FROM events")
            assert cols == [*LAKE_SCHEMA.names, "date"]
            cols, _ = query.run(c, "SELECT * FROM dead_letters")
            assert cols == [*DEAD_LETTER_SCHEMA.names, "date"]
            cols, _ = query.run(c, "SELECT * FROM budget_status")
            assert cols == [name for name, _ in query.BUDGET_STATUS_COLUMNS]
            for view in ("events", "dead_letters", "rollup_hourly", "rollup_daily", "rollup_labels", "budget_status"):
                assert describe(c, view) == describe(full, view), view  # the same columns and types
            with pytest.raises(query.QueryRefused):
                query.run(c, "SELECT * FROM read_csv('/etc/passwd')")
        finally:
            c.close()
    assert not (tmp_path / "never-created").exists()


def test_events_without_published_rollups(tmp_path: Path, lake: Path) -> None:
    """Raw events are queryable before any rollup is published; the rollup views are empty."""
    fresh = tmp_path / "fresh"
    src = write_jsonl(tmp_path / "e.jsonl", [orjson.dumps(ev(i)) for i in range(30)])
    ingest(fresh, src)
    c = query.connect(fresh)
    try:
        assert scalar(c, "SELECT count(*) FROM request_log") == 30
        assert scalar(c, "SELECT count(*) FROM unpriced_usage") >= 1
        for view in ("daily_cost_by_team", "hourly_trend", "model_efficiency", "token_usage_over_time"):
            assert scalar(c, f"SELECT count(*) FROM {view}") == 0, view
    finally:
        c.close()


def test_queries_while_the_rollup_state_is_held(lake: Path) -> None:
    """`spendlake serve` holds the DuckDB state; query reads only what it published."""
    with Rollup(lake):
        c = query.connect(lake)
        try:
            assert scalar(c, "SELECT count(*) FROM daily_cost_by_team") > 0
            assert scalar(c, "SELECT count(*) FROM request_log") == N_A + N_B - OVERLAP
        finally:
            c.close()


def test_the_spendlake_query_command(lake: Path) -> None:
    r = spendlake("query", "--lake", str(lake), "--format", "json",
                  "SELECT team, sum(requests) AS requests FROM daily_cost_by_team GROUP BY team ORDER BY team")  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    assert json.loads(r.stdout) == [{"team": "team-a", "requests": 130}, {"team": "team-b", "requests": 130}]
    r = spendlake("query", "--lake", str(lake), "COPY (SELECT 1) TO '/tmp/spendlake-never.csv'")
    assert r.returncode == 2 and not Path("/tmp/spendlake-never.csv").exists()
    assert r.stderr.decode().count("\n") == 1 and "only SELECT is allowed (got COPY)" in r.stderr.decode()


def test_sql_files_are_one_documented_view_each() -> None:
    names = []
    for name, text in query.sql_views():
        assert text.lstrip().startswith("--"), name  # a header comment
        statements = duckdb.connect().extract_statements(text)
        assert len(statements) == 1 and statements[0].type == duckdb.StatementType.CREATE, name
        assert "read_parquet" not in text and "'/" not in text, name  # no lake path: views over views
        names.append(name.split("_", 1)[1].removesuffix(".sql"))
    assert set(names) == set(VIEWS) - {"budget_status"}
