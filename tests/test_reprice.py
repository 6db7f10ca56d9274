"""`reprice`: recompute stored costs after a catalog change, on a lake built by the real
`spendlake ingest`, priced by the real engine, totals read back through DuckDB."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, event, spendlake
from ingest.lake import STRAY_TEMP_AGE_S, Lake
from ingest.reprice import COST_COLUMNS, RepriceError, RepriceStats, reprice
from pricing import Catalog, PriceEntry, price_table

DAY_MS = 86_400_000
BASE_MS = 1764331200000  # 2025-11-28T12:00:00Z, as in conftest.event
DATES = [date(2025, 11, 28), date(2025, 11, 29), date(2025, 11, 30), date(2025, 12, 1)]
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)

# (input, cache_read, output) USD per token: builtin (in force on the test dates) and changed.
BUILTIN = {
    "gpt-4o": (2.5e-06, 1.25e-06, 1e-05),
    "claude-sonnet-4-5": (3e-06, 3e-07, 1.5e-05),
    "gpt-4o-mini": (1.5e-07, 7.5e-08, 6e-07),
}
CHANGED = {
    "gpt-4o": (4e-06, 1e-06, 2e-05),
    "claude-sonnet-4-5": (2e-06, 5e-07, 1.2e-05),
    "gpt-4o-mini": (3e-07, 1e-07, 9e-07),
}
PROVIDER = {"gpt-4o": "openai", "claude-sonnet-4-5": "anthropic", "gpt-4o-mini": "openai"}


def changed_catalog() -> Catalog:
    return Catalog(
        [PriceEntry(f"test/{m}", PROVIDER[m], m, T0, input=i, cache_read=c, output=o)
         for m, (i, c, o) in CHANGED.items()]
    )  # fmt: skip


def pricer(catalog: Catalog) -> Any:
    return lambda t: price_table(t, catalog)


def lake_event(i: int, **over: Any) -> dict[str, Any]:
    """conftest.event, spread over the four DATES (i % 4 days after the 28th)."""
    return event(i, timestamp=BASE_MS + (i % 4) * DAY_MS + i * 1000, **over)


def expected_cost(e: dict[str, Any], prices: dict[str, tuple[float, float, float]]) -> float:
    inp, cr, out = prices[e["model"]]
    cached = e["cached_input_tokens"]
    return (e["input_tokens"] - cached) * inp + cached * cr + e["output_tokens"] * out


def event_date(e: dict[str, Any]) -> date:
    return datetime.fromtimestamp(e["timestamp"] / 1000, timezone.utc).date()


def build_lake(tmp_path: Path, events: list[dict[str, Any]], extra_lines: list[bytes] = ()) -> Path:
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"\n".join([orjson.dumps(e) for e in events] + list(extra_lines)) + b"\n")
    lake = tmp_path / "lake"
    spendlake("ingest", "--source", str(src), "--lake", str(lake), "--batch-records", "100",
              "--catalog", "builtin", "--quiet", check=True)  # fmt: skip
    return lake


def sql(lake: Path, query: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect()
    con.execute(f"create view ev as select * from read_parquet('{lake}/events/**/*.parquet')")
    return con.execute(query).fetchall()


def total(lake: Path, since: date | None = None, until: date | None = None) -> float:
    where = []
    if since:
        where.append(f"cast(timestamp as date) >= date '{since}'")
    if until:
        where.append(f"cast(timestamp as date) <= date '{until}'")
    q = "select coalesce(sum(cost_usd), 0) from ev" + (" where " + " and ".join(where) if where else "")
    return sql(lake, q)[0][0]


def data_files(lake: Path, sub: str = "events") -> list[Path]:
    return sorted((lake / sub).glob("date=*/*.parquet"))


def snapshot(lake: Path) -> dict[Path, tuple[bytes, int]]:
    return {f: (f.read_bytes(), f.stat().st_mtime_ns) for f in data_files(lake) + data_files(lake, "dead_letter")}


def in_range(f: Path, since: date, until: date | None) -> bool:
    d = date.fromisoformat(f.parent.name.removeprefix("date="))
    return since <= d and (until is None or d <= until)


def journals(lake: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_bytes()) for p in sorted((lake / "_reprice").glob("*.json"))]


def stray_temps(lake: Path) -> list[Path]:
    return sorted((lake / "events").glob("date=*/.*.tmp"))


EVENTS = [lake_event(i) for i in range(800)]


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    bad = orjson.dumps(lake_event(10_000, input_tokens=-1))  # a dead letter, which reprice must leave alone
    path = build_lake(tmp_path, EVENTS, [bad])
    assert len(data_files(path)) >= 8 and data_files(path, "dead_letter")
    return path


def test_reprice_rewrites_files_in_range_only_and_totals_follow(lake: Path) -> None:
    since, until = DATES[1], DATES[2]
    before = snapshot(lake)
    tables = {f: pq.read_table(f) for f in data_files(lake)}
    schemas = {f: pq.read_schema(f) for f in data_files(lake)}
    layout = {f: _column_layout(f) for f in data_files(lake)}
    ids_before = sql(lake, "select count(*), count(distinct event_id), list(event_id order by event_id) from ev")
    in_range_before = total(lake, since, until)
    assert in_range_before == pytest.approx(
        sum(expected_cost(e, BUILTIN) for e in EVENTS if since <= event_date(e) <= until), rel=1e-9
    )

    stats = reprice(lake, since, until, pricer(changed_catalog()))

    changed = [f for f in before if f.is_relative_to(lake / "events") and in_range(f, since, until)]
    assert changed and len(changed) < len(data_files(lake))
    for f, (data, mtime) in before.items():
        if f in changed:
            assert f.read_bytes() != data and f.stat().st_mtime_ns != mtime, f
        else:  # other dates, and the dead letters: not touched at all
            assert (f.read_bytes(), f.stat().st_mtime_ns) == (data, mtime), f
    assert data_files(lake) == sorted(tables)  # no file added, none renamed
    assert stray_temps(lake) == []

    # totals follow the new prices, computed independently from tokens x prices
    for day in DATES:
        prices = CHANGED if since <= day <= until else BUILTIN
        want = sum(expected_cost(e, prices) for e in EVENTS if event_date(e) == day)
        assert total(lake, day, day) == pytest.approx(want, rel=1e-9), day
    assert sql(lake, "select count(*), count(distinct event_id), list(event_id order by event_id) from ev") == ids_before
    assert sql(lake, "select distinct cost_source, price_id from ev where cast(timestamp as date) "
               f"between date '{since}' and date '{until}' order by 2") == [
        ("catalog", f"test/{m}") for m in sorted(CHANGED)
    ]  # fmt: skip

    for f in changed:  # same schema, same non-cost content, same writer options
        assert pq.read_schema(f).equals(schemas[f], check_metadata=True)
        after = pq.read_table(f)
        assert after.drop_columns(list(COST_COLUMNS)).equals(tables[f].drop_columns(list(COST_COLUMNS)))
        assert not after.select(list(COST_COLUMNS)).equals(tables[f].select(list(COST_COLUMNS)))
        assert _column_layout(f) == layout[f]

    n_rows = sum(tables[f].num_rows for f in changed)
    assert stats == RepriceStats(
        files_seen=len(changed), files_rewritten=len(changed), files_unchanged=0,
        rows=n_rows, rows_changed=n_rows,
        cost_before_usd=pytest.approx(in_range_before, rel=1e-9),  # type: ignore[arg-type]
        cost_after_usd=pytest.approx(total(lake, since, until), rel=1e-9),  # type: ignore[arg-type]
    )  # fmt: skip
    [j] = journals(lake)
    assert j["status"] == "done" and j["error"] is None
    assert (j["since"], j["until"]) == ("2025-11-29", "2025-11-30")
    assert j["files_rewritten"] == [f.relative_to(lake).as_posix() for f in changed]
    assert j["stats"]["files_rewritten"] == len(changed)


def _column_layout(f: Path) -> list[tuple[str, str, tuple[str, ...], bool]]:
    """Per column chunk: compression, encodings, and whether it has a dictionary page."""
    md = pq.ParquetFile(f).metadata
    return [
        (md.row_group(g).column(c).path_in_schema, md.row_group(g).column(c).compression,
         tuple(sorted(md.row_group(g).column(c).encodings)), md.row_group(g).column(c).has_dictionary_page)
        for g in range(md.num_row_groups) for c in range(md.num_columns)
    ]  # fmt: skip


def test_a_second_run_is_a_no_op(lake: Path) -> None:
    first = reprice(lake, DATES[1], None, pricer(changed_catalog()))
    assert first.files_rewritten == first.files_seen > 0
    before, sums = snapshot(lake), total(lake)
    again = reprice(lake, DATES[1], None, pricer(changed_catalog()))
    assert again.files_rewritten == 0 and again.files_unchanged == again.files_seen == first.files_seen
    assert again.rows == first.rows and again.rows_changed == 0
    assert again.cost_before_usd == again.cost_after_usd == pytest.approx(first.cost_after_usd, rel=1e-12)
    assert snapshot(lake) == before and total(lake) == pytest.approx(sums, rel=1e-12)
    assert [j["files_rewritten"] == [] for j in journals(lake)] == [False, True]


def test_unknown_model_gets_priced_and_a_catalog_without_it_makes_it_null(tmp_path: Path) -> None:
    events = [lake_event(i, provider="openai", model="gpt-imaginary") if i % 5 == 0 else lake_event(i) for i in range(200)]
    lake = build_lake(tmp_path, events)
    unknown = "select count(*), count(cost_usd), list(distinct cost_source), count(price_id), " \
              "count(cost_input_usd) from ev where model = 'gpt-imaginary'"  # fmt: skip
    assert sql(lake, unknown) == [(40, 0, ["unpriced"], 0, 0)]
    known_before = sql(lake, "select sum(cost_usd) from ev where model <> 'gpt-imaginary'")[0][0]

    entry = PriceEntry("test/gpt-imaginary", "openai", "gpt-imaginary", T0, input=1e-06, cache_read=5e-07, output=4e-06)
    with_it = Catalog([*Catalog.builtin().entries(), entry])
    stats = reprice(lake, DATES[0], None, pricer(with_it))
    assert stats.rows_changed == 40 and stats.rows == 200  # only the unknown model's rows change
    rows = sql(lake, "select count(*), count(cost_usd), list(distinct cost_source), list(distinct price_id), "
               "sum(cost_usd) from ev where model = 'gpt-imaginary'")  # fmt: skip
    want = sum(expected_cost(e, {"gpt-imaginary": (1e-06, 5e-07, 4e-06)}) for e in events if e["model"] == "gpt-imaginary")
    assert rows[0][:4] == (40, 40, ["catalog"], ["test/gpt-imaginary"])
    assert rows[0][4] == pytest.approx(want, rel=1e-9)
    known_after = sql(lake, "select sum(cost_usd) from ev where model <> 'gpt-imaginary'")[0][0]
    assert known_after == pytest.approx(known_before, rel=1e-12)

    back = reprice(lake, DATES[0], None, pricer(Catalog.builtin()))
    assert back.rows_changed == 40
    assert back.cost_before_usd - back.cost_after_usd == pytest.approx(want, rel=1e-9)
    assert sql(lake, unknown) == [(40, 0, ["unpriced"], 0, 0)]  # NULL, never 0
    assert sql(lake, "select count(*) from ev where cost_usd = 0") == [(0,)]


def test_a_failed_replace_leaves_the_original_and_a_later_run_finishes(
    lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = data_files(lake)
    before, sums = snapshot(lake), total(lake)
    real_replace = os.replace
    calls: list[str] = []

    def replace(src: Any, dst: Any) -> None:  # fault injection: the 2nd data file's replace fails
        if str(dst).endswith(".parquet"):
            calls.append(str(dst))
            if len(calls) == 2:
                raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(RepriceError, match=re.escape(files[1].name)) as info:
        reprice(lake, DATES[0], None, pricer(changed_catalog()))
    assert "original is intact" in str(info.value)
    monkeypatch.setattr(os, "replace", real_replace)

    assert files[0].read_bytes() != before[files[0]][0]  # the first file was rewritten, and stays so
    for f in files[1:]:
        assert f.read_bytes() == before[f][0]
    assert pq.read_table(files[1]).num_rows > 0  # intact and readable
    assert stray_temps(lake) == []
    [j] = journals(lake)
    assert j["status"] == "failed" and files[1].name in j["error"]
    assert j["files_rewritten"] == [files[0].relative_to(lake).as_posix()]
    assert j["stats"]["files_rewritten"] == 1
    assert total(lake) != pytest.approx(sums)  # a mix, but each file whole

    rest = reprice(lake, DATES[0], None, pricer(changed_catalog()))
    assert (rest.files_rewritten, rest.files_unchanged) == (len(files) - 1, 1)
    assert total(lake) == pytest.approx(sum(expected_cost(e, CHANGED) for e in EVENTS), rel=1e-9)


def test_a_hard_crash_before_the_replace_leaves_a_hidden_temp_that_recover_sweeps(lake: Path) -> None:
    before, sums = snapshot(lake), total(lake)
    script = textwrap.dedent(f"""
        import datetime, os
        from ingest.reprice import reprice
        from pricing import price_table
        from tests.test_reprice import changed_catalog
        real = os.replace
        def replace(src, dst):
            if str(dst).endswith(".parquet"):
                os._exit(9)  # killed between the fsynced temp and the rename
            real(src, dst)
        os.replace = replace
        cat = changed_catalog()
        reprice({str(lake)!r}, datetime.date(2025, 11, 28), None, lambda t: price_table(t, cat))
    """)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert r.returncode == 9, r.stderr.decode()[-2000:]

    [tmp] = stray_temps(lake)
    assert tmp.name.startswith("." + data_files(lake)[0].name) and ".reprice-" in tmp.name
    assert snapshot(lake) == before  # every original intact
    assert total(lake) == pytest.approx(sums, rel=1e-12)  # readers never see the temp
    [j] = journals(lake)
    assert j["status"] == "running"  # the crash is visible in the journal

    assert Lake(lake).recover() == 0 and stray_temps(lake) == [tmp]  # fresh: maybe still in use
    old = time.time() - STRAY_TEMP_AGE_S - 60
    os.utime(tmp, (old, old))
    Lake(lake).recover()
    assert stray_temps(lake) == []

    stats = reprice(lake, DATES[0], None, pricer(changed_catalog()))
    assert stats.files_rewritten == len(data_files(lake))
    assert total(lake) == pytest.approx(sum(expected_cost(e, CHANGED) for e in EVENTS), rel=1e-9)


def test_progress_counts_files_up_to_the_total(lake: Path) -> None:
    calls: list[tuple[int, int]] = []
    stats = reprice(lake, DATES[2], None, pricer(changed_catalog()), progress=lambda k, n: calls.append((k, n)))
    n = len([f for f in data_files(lake) if in_range(f, DATES[2], None)])
    assert n == stats.files_seen > 1
    assert calls == [(k, n) for k in range(n + 1)]
    calls.clear()  # an empty range still reports its (empty) total
    reprice(lake, date(2030, 1, 1), None, pricer(changed_catalog()), progress=lambda k, n: calls.append((k, n)))
    assert calls == [(0, 0)]


def test_a_file_that_cannot_be_read_stops_the_run_and_names_it(lake: Path) -> None:
    files = data_files(lake)
    files[2].write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(RepriceError, match=re.escape(f"{files[2].name}: cannot read it")):
        reprice(lake, DATES[0], None, pricer(changed_catalog()))
    [j] = journals(lake)
    assert j["status"] == "failed" and files[2].name in j["error"]
    assert j["files_rewritten"] == [f.relative_to(lake).as_posix() for f in files[:2]]


def test_a_price_function_that_breaks_the_contract_stops_the_run(lake: Path) -> None:
    cat = changed_catalog()
    files = data_files(lake)
    before = snapshot(lake)
    with pytest.raises(RepriceError, match=re.escape(files[0].name) + r": price\(\) returned 24 rows for 25 events"):
        reprice(lake, DATES[0], None, lambda t: price_table(t, cat).slice(1))
    with pytest.raises(RepriceError, match=re.escape(f"{files[0].name}: cannot price it: KeyError")):
        reprice(lake, DATES[0], None, lambda t: price_table(t.drop_columns(["model"]), cat))
    assert snapshot(lake) == before


def test_a_file_replaced_meanwhile_is_read_again(lake: Path) -> None:
    """Two reprice runs at once: the outer one finds its first file rewritten by the inner one
    between reading and replacing it, reads it again, and leaves it be."""
    cat = changed_catalog()
    inner: list[RepriceStats] = []

    def price(t: pa.Table) -> pa.Table:
        if not inner:
            inner.append(reprice(lake, DATES[0], DATES[0], pricer(cat)))
        return price_table(t, cat)

    n_first_day = len([f for f in data_files(lake) if in_range(f, DATES[0], DATES[0])])
    outer = reprice(lake, DATES[0], None, price)
    assert inner[0].files_rewritten == n_first_day
    assert outer.files_rewritten == len(data_files(lake)) - n_first_day
    assert outer.files_unchanged == n_first_day
    assert total(lake) == pytest.approx(sum(expected_cost(e, CHANGED) for e in EVENTS), rel=1e-9)


def test_not_a_lake(tmp_path: Path) -> None:
    with pytest.raises(RepriceError, match="not a spendlake lake"):
        reprice(tmp_path / "nope", DATES[0], None, pricer(Catalog.builtin()))
    assert not (tmp_path / "nope").exists()
