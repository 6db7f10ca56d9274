"""How events files are encoded (ingest/lake.py `write_options`), on real Parquet files read by
real DuckDB: the new encodings are really used, files written by the previous writer (zstd 3, a
dictionary on nearly every column) and new ones read together through every reader with totals
equal to an independent sum to the cent, a batch written twice is the same bytes, and reprice
writes with the lake's options."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aggregator import query
from aggregator.rollup import Rollup
from conftest import dedup, event, raw_rows
from ingest.lake import COLUMN_ENCODINGS, Lake, _leaf_paths
from ingest.pipeline import BatchLimits, Pipeline
from ingest.reprice import reprice
from ingest.schema import LAKE_SCHEMA
from pricing import Catalog, PriceEntry, price_table

DAY_MS = 86_400_000
BASE_MS = 1764331200000  # 2025-11-28T12:00:00Z, as in conftest.event
CLOCK_OLD, CLOCK_NEW = 1_764_400_000.0, 1_764_500_000.0  # the old files were ingested first
MODELS = [("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5"), ("openai", "gpt-4o-mini")]

# The previous writer, as ingest/lake.py had it up to commit b708cc9 (written out here on
# purpose: the lake must go on reading the files it wrote, which nothing rewrites).
OLD_ENCODINGS = {"timestamp": "DELTA_BINARY_PACKED", "source_offset": "DELTA_BINARY_PACKED",
                 "latency_ms": "BYTE_STREAM_SPLIT"}  # fmt: skip


def old_write(table: pa.Table, path: Path) -> None:
    pq.write_table(
        table, path, compression="zstd", compression_level=3, row_group_size=1 << 20,
        write_statistics=True, column_encoding=OLD_ENCODINGS,
        use_dictionary=[c for c in table.column_names if c not in {"event_id", *OLD_ENCODINGS}],
    )  # fmt: skip


def realistic(i: int, rng: random.Random, **over: Any) -> dict[str, Any]:
    """An event like bench/ingest.py's: a random UUID, spread token counts, tags on half."""
    provider, model = MODELS[rng.randrange(len(MODELS))]
    inp = int(min(200_000, max(5, rng.lognormvariate(7.3, 1.1))))
    e = event(
        i, event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        timestamp=BASE_MS + (i % 3) * DAY_MS + i * 997, provider=provider, model=model,
        input_tokens=inp, output_tokens=int(max(1, rng.lognormvariate(5.6, 1.0))),
        cached_input_tokens=int(inp * rng.random() * 0.9) if rng.random() < 0.35 else 0,
        virtual_key=f"vk-{int(500 * rng.random() ** 3):03d}", latency_ms=round(150 + rng.random() * 9000, 1),
    )  # fmt: skip
    if rng.random() < 0.5:
        e["tags"] = {"env": rng.choice(["prod", "staging"]), "feature": rng.choice(["chat", "search", "agent"])}
    e.update(over)
    return e


def land(lake: Path, stream: str, events: list[dict[str, Any]], clock: float, batch: int = 10**9) -> None:
    """Through the real pipeline and lake writer, as `spendlake ingest` lands them."""
    p = Pipeline(Lake(lake), Catalog.builtin(), clock=lambda: clock, limits=BatchLimits(max_records=batch))
    for offset, e in enumerate(events):
        p.add(stream, stream, 0, offset, None, orjson.dumps(e))
        if p.should_flush():
            p.flush()
    p.flush()
    assert p.stats.dead_letters == 0


def files_of(lake: Path, stream: str) -> list[Path]:
    return sorted((lake / "events").glob(f"date=*/{stream}+*.parquet"))


def chunks(path: Path) -> Iterator[tuple[str, set[str], str]]:
    """(leaf path, encodings, compression) of every column chunk of a file."""
    md = pq.ParquetFile(path).metadata
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        for c in range(rg.num_columns):
            col = rg.column(c)
            yield col.path_in_schema, set(col.encodings), col.compression


def encodings(path: Path) -> dict[str, set[str]]:
    return {leaf: enc for leaf, enc, _ in chunks(path)}


DICT = "RLE_DICTIONARY"


def assert_new_style(path: Path) -> None:
    assert pq.ParquetFile(path).metadata.num_row_groups == 1
    assert {comp for _, _, comp in chunks(path)} == {"ZSTD"}
    enc = encodings(path)
    assert "DELTA_LENGTH_BYTE_ARRAY" in enc["event_id"] and DICT not in enc["event_id"]
    for c in ("timestamp", "source_offset", "ingested_at"):
        assert "DELTA_BINARY_PACKED" in enc[c] and DICT not in enc[c], c
    assert "BYTE_STREAM_SPLIT" in enc["latency_ms"]
    for c in ("cost_usd", "cost_input_usd", "cost_cached_input_usd", "input_tokens", "cached_input_tokens"):
        assert "PLAIN" in enc[c] and DICT not in enc[c], (c, enc[c])
    for c in ("model", "provider", "virtual_key", "team", "price_id", "cost_source", "output_tokens",
              "cost_output_usd", "tags.key_value.key", "tags.key_value.value"):  # fmt: skip
        assert DICT in enc[c], (c, enc[c])


def assert_old_style(path: Path) -> None:
    enc = encodings(path)
    assert "DELTA_LENGTH_BYTE_ARRAY" not in enc["event_id"] and DICT in enc["cost_usd"], enc


# --- what the writer writes ----------------------------------------------------------------------


def test_events_files_use_the_chosen_encodings_and_dead_letters_keep_theirs(tmp_path: Path) -> None:
    rng = random.Random(1)
    p = Pipeline(Lake(tmp_path), Catalog.builtin(), clock=lambda: CLOCK_NEW)
    for i in range(300):
        p.add("t", "t", 0, i, None, orjson.dumps(realistic(i, rng)))
    p.add("t", "t", 0, 300, None, b"not json")
    [c] = p.flush()
    assert c.manifest is not None and c.manifest.dead_letters == 1
    files = files_of(tmp_path, "t")
    assert len(files) == 3  # three dates
    for f in files:
        assert_new_style(f)
        schema = pq.read_schema(f)  # the schema is the contract's, metadata included
        assert schema.remove_metadata() == LAKE_SCHEMA.remove_metadata() and schema.metadata == LAKE_SCHEMA.metadata
    [dead] = (tmp_path / "dead_letter").glob("*/*.parquet")
    enc = encodings(dead)
    assert "DELTA_BINARY_PACKED" in enc["source_offset"] and DICT in enc["error"] and DICT in enc["raw"]


def test_every_per_column_setting_names_a_lake_column() -> None:
    """A misspelt name in COLUMN_ENCODINGS would silently fall back to a dictionary."""
    assert set(COLUMN_ENCODINGS) <= set(_leaf_paths(LAKE_SCHEMA))


def test_new_files_are_smaller_than_the_previous_writers(tmp_path: Path) -> None:
    rng = random.Random(2)
    land(tmp_path / "lake", "t", [realistic(i, rng) for i in range(6000)], CLOCK_NEW)
    new = old = 0
    for f in files_of(tmp_path / "lake", "t"):
        new += f.stat().st_size
        old_write(pq.read_table(f), tmp_path / "old.parquet")
        old += (tmp_path / "old.parquet").stat().st_size
    assert new < 0.93 * old, (new, old)


def test_the_same_batch_is_the_same_bytes(tmp_path: Path) -> None:
    """A file is a function of its batch: two lakes landing the same records at the same clock
    hold byte-identical files, and staging one table twice gives the same bytes."""
    rng = random.Random(3)
    events = [realistic(i, rng) for i in range(500)]
    land(tmp_path / "a", "t", events, CLOCK_NEW, batch=200)
    land(tmp_path / "b", "t", events, CLOCK_NEW, batch=200)
    a, b = files_of(tmp_path / "a", "t"), files_of(tmp_path / "b", "t")
    assert len(a) == 9 and [f.relative_to(tmp_path / "a") for f in a] == [f.relative_to(tmp_path / "b") for f in b]
    for fa, fb in zip(a, b):
        assert fa.read_bytes() == fb.read_bytes(), fa.name
    lake = Lake(tmp_path / "c")
    table = pq.read_table(a[0])
    t1, _ = lake._stage(tmp_path / "c", "x.parquet", "one", table)
    t2, _ = lake._stage(tmp_path / "c", "x.parquet", "two", table)
    assert t1.read_bytes() == t2.read_bytes()


# --- old and new files together ------------------------------------------------------------------


def changed_catalog() -> Catalog:
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    prices = {"gpt-4o": (4e-06, 1e-06, 2e-05), "claude-sonnet-4-5": (2e-06, 5e-07, 1.2e-05),
              "gpt-4o-mini": (3e-07, 1e-07, 9e-07)}  # fmt: skip
    return Catalog([PriceEntry(f"test/{m}", p, m, t0, input=prices[m][0], cache_read=prices[m][1],
                               output=prices[m][2]) for p, m in MODELS])  # fmt: skip


@pytest.fixture
def mixed(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """A lake holding old-style files (stream `old`, rewritten with the previous writer's
    settings) and new-style ones (stream `new`); 100 events are in both, with other token counts
    in the new copy, so dedup must match ids across the two kinds of file."""
    rng = random.Random(4)
    lake = tmp_path / "lake"
    old_events = [realistic(i, rng) for i in range(400)]
    new_events = [realistic(1000 + i, rng) for i in range(400)]
    new_events += [dict(e, output_tokens=e["output_tokens"] + 7) for e in old_events[:100]]
    land(lake, "old", old_events, CLOCK_OLD, batch=150)
    for f in files_of(lake, "old"):
        table = pq.read_table(f)
        old_write(table, f)
        assert pq.read_table(f).equals(table)
    land(lake, "new", new_events, CLOCK_NEW, batch=150)
    for f in files_of(lake, "old"):
        assert_old_style(f)
    for f in files_of(lake, "new"):
        assert_new_style(f)
    return lake, old_events + new_events  # the last 100 are the copies


def truth(lake: Path) -> dict[str, Any]:
    """Totals over the deduplicated rows (earliest ingested copy), read with pyarrow in Python."""
    rows = dedup(raw_rows(lake))
    return {
        "rows": len(raw_rows(lake)),
        "events": len(rows),
        "cost": sum(r["cost_usd"] for r in rows if r["cost_usd"] is not None),
        "input": sum(r["input_tokens"] for r in rows),
        "output": sum(r["output_tokens"] for r in rows),
    }


def assert_readers_agree(lake: Path, want: dict[str, Any]) -> None:
    with Rollup(lake) as r:
        r.update()
    con = query.connect(lake)
    try:
        def one(sql: str) -> Any:
            _, rows = query.run(con, sql)
            return rows[0][0]

        assert one("SELECT count(*) FROM events") == want["rows"]
        assert one("SELECT count(DISTINCT event_id) FROM events") == want["events"]
        assert one("SELECT count(*) FROM request_log") == want["events"]
        for view in ("request_log", "rollup_daily", "rollup_hourly", "daily_cost_by_team", "daily_cost_by_model"):
            got = one(f"SELECT sum(cost_usd) FROM {view}")
            assert round(got, 2) == round(want["cost"], 2) and abs(got - want["cost"]) < 1e-9, view
        for view in ("request_log", "rollup_daily"):
            assert one(f"SELECT sum(input_tokens) FROM {view}") == want["input"], view
            assert one(f"SELECT sum(output_tokens) FROM {view}") == want["output"], view
        assert one("SELECT sum(requests) FROM rollup_daily") == want["events"]
    finally:
        con.close()


def test_old_and_new_files_read_together_through_every_reader(mixed: tuple[Path, list[dict[str, Any]]]) -> None:
    lake, events = mixed
    want = truth(lake)
    assert want["rows"] == len(events) and want["events"] == len(events) - 100
    # the old copies won (ingested first): the new copies' extra output tokens are not counted
    assert want["output"] == sum(e["output_tokens"] for e in events[:-100])
    # and the costs are the builtin prices of the events themselves, not read wrongly from a file
    cat = Catalog.builtin()
    table = pa.Table.from_pylist([{**r, "cost_usd": None} for r in dedup(raw_rows(lake))], schema=LAKE_SCHEMA)
    assert abs(sum(price_table(table, cat)["cost_usd"].to_pylist()) - want["cost"]) < 1e-9
    assert_readers_agree(lake, want)


def test_reprice_writes_old_and_new_files_with_the_lakes_options(mixed: tuple[Path, list[dict[str, Any]]]) -> None:
    lake, _ = mixed
    before = truth(lake)
    with Rollup(lake) as r:
        r.update()
    catalog = changed_catalog()
    stats = reprice(lake, date(2025, 11, 28), None, price=lambda t: price_table(t, catalog))
    files = sorted((lake / "events").glob("date=*/*.parquet"))
    assert stats.files_rewritten == len(files) == len(files_of(lake, "old")) + len(files_of(lake, "new"))
    for f in files:
        assert_new_style(f)  # old-style files come out in the lake's current encoding too
    after = truth(lake)
    assert abs(after["cost"] - before["cost"]) > 0.01  # the prices did change
    assert {k: after[k] for k in ("rows", "events", "input", "output")} == {
        k: before[k] for k in ("rows", "events", "input", "output")
    }
    assert_readers_agree(lake, after)
