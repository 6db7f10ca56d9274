"""The lake writer's rules, on real Parquet files: names, atomic visibility, conflicts, recovery."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import event, lake_rows
from ingest.errors import LakeConflict
from ingest.lake import Lake, data_name
from ingest.pipeline import BatchLimits, Pipeline
from ingest.schema import LAKE_SCHEMA
from pricing import Catalog


def pipeline(lake: Path, **kw: object) -> Pipeline:
    return Pipeline(Lake(lake), Catalog.builtin(), clock=lambda: 1_764_331_200.0, **kw)  # type: ignore[arg-type]


def feed(p: Pipeline, start: int, n: int, stream: str = "topic", partition: int = 0) -> None:
    for i in range(start, start + n):
        p.add(stream, stream, partition, i, None, orjson.dumps(event(i)))


def test_names_are_a_function_of_the_range(tmp_path: Path) -> None:
    p = pipeline(tmp_path)
    feed(p, 0, 10)
    [c] = p.flush()
    assert c.manifest is not None and c.next_offset == 10
    assert [Path(f).name for f in c.manifest.files] == [data_name("topic", 0, 0, 9)]
    assert Path(c.manifest.files[0]).parent.name == "date=2025-11-28"


def test_a_batch_spanning_dates_is_one_file_per_date(tmp_path: Path) -> None:
    p = pipeline(tmp_path)
    day = 86_400_000
    for i in range(6):
        p.add("t", "t", 0, i, None, orjson.dumps(event(i, timestamp=1764331200000 + (i % 3) * day)))
    [c] = p.flush()
    assert c.manifest is not None
    assert sorted(Path(f).parent.name for f in c.manifest.files) == [
        "date=2025-11-28", "date=2025-11-29", "date=2025-11-30",
    ]  # fmt: skip
    assert lake_rows(tmp_path, "select count(*) from ev") == [(6,)]


def test_files_carry_the_explicit_schema_and_zstd(tmp_path: Path) -> None:
    p = pipeline(tmp_path)
    feed(p, 0, 5)
    [c] = p.flush()
    assert c.manifest is not None
    f = tmp_path / c.manifest.files[0]
    assert pq.read_schema(f).remove_metadata() == LAKE_SCHEMA.remove_metadata()
    assert pq.ParquetFile(f).metadata.row_group(0).column(0).compression == "ZSTD"


def test_overlapping_range_is_refused_and_never_visible(tmp_path: Path) -> None:
    p = pipeline(tmp_path)
    feed(p, 0, 100)
    p.flush()
    zombie = pipeline(tmp_path)
    feed(zombie, 50, 100)  # offsets 50..149: half already held
    [c] = zombie.flush()
    assert c.manifest is None and zombie.stats.conflicts == 1
    assert lake_rows(tmp_path, "select count(*), count(distinct source_offset) from ev") == [(100, 100)]
    assert not list(tmp_path.glob("events/*/.*.tmp"))  # its staged files were removed
    with pytest.raises(LakeConflict):
        Lake(tmp_path).commit("topic", 0, 99, 99, pa.table({}), None, None, None)


def test_crash_after_the_manifest_is_rolled_forward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process dies between the commit point (manifest) and the renames: the batch is
    committed, so recover() must publish it; readers never saw half of it."""
    p = pipeline(tmp_path)
    day = 86_400_000
    for i in range(4):
        p.add("t", "t", 0, i, None, orjson.dumps(event(i, timestamp=1764331200000 + (i % 2) * day)))

    def die(staged: object) -> None:
        raise SystemExit("killed")

    monkeypatch.setattr(Lake, "_publish", staticmethod(die))
    with pytest.raises(SystemExit):
        p.flush()
    monkeypatch.undo()
    assert lake_rows(tmp_path, "select count(*) from ev") == []  # nothing visible yet
    assert Lake(tmp_path).next_offset("t", 0) == 4  # but committed: a restart will not replay it
    assert Lake(tmp_path).recover() == 2  # two date files rolled forward
    assert lake_rows(tmp_path, "select count(*) from ev") == [(4,)]


def test_sigkill_state_after_manifest_recovers(tmp_path: Path) -> None:
    """Simulate the exact on-disk state a SIGKILL leaves after the manifest rename: temp files
    present, manifest present, final files absent."""
    lake = Lake(tmp_path)
    p = pipeline(tmp_path)
    feed(p, 0, 20)
    [c] = p.flush()
    assert c.manifest is not None
    final = tmp_path / c.manifest.files[0]
    doc = orjson.loads(next((tmp_path / "_manifests/topic/0").glob("*.json")).read_bytes())
    os.rename(final, tmp_path / doc["temps"][0])  # un-publish: back to the staged temp
    assert lake_rows(tmp_path, "select count(*) from ev") == []
    assert lake.recover() == 1
    assert lake_rows(tmp_path, "select count(*) from ev") == [(20,)]
    assert lake.recover() == 0  # idempotent


def test_stray_temps_without_manifest_are_swept_when_old(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    d = tmp_path / "events" / "date=2025-11-28"
    d.mkdir(parents=True)
    old, new = d / ".x.parquet.aaa.tmp", d / ".y.parquet.bbb.tmp"
    old.write_bytes(b"partial")
    new.write_bytes(b"partial")
    os.utime(old, (1, 1))
    lake.recover()
    assert not old.exists() and new.exists()  # a young temp may belong to a live writer


def test_next_offset_is_what_the_manifests_hold(tmp_path: Path) -> None:
    p = pipeline(tmp_path)
    assert p.lake.next_offset("topic", 0) is None
    feed(p, 0, 30)
    p.flush()
    feed(p, 30, 5)
    p.flush()
    assert p.lake.next_offset("topic", 0) == 35
    assert p.lake.next_offset("topic", 1) is None


def test_dead_letters_share_the_batch_and_keep_no_prompt_text(tmp_path: Path) -> None:
    p = pipeline(tmp_path)
    feed(p, 0, 3)
    secret = {"event_id": "x", "timestamp": "yesterday", "provider": "openai", "model": "gpt-4o",
              "messages": [{"role": "user", "content": "my secret prompt"}]}  # fmt: skip
    p.add("topic", "topic", 0, 3, b"vk-1", orjson.dumps(secret))
    [c] = p.flush()
    assert c.manifest is not None and c.manifest.dead_letters == 1 and c.manifest.rows == 3
    dl = pq.read_table(next((tmp_path / "dead_letter").glob("*/*.parquet"))).to_pylist()
    assert dl[0]["source_offset"] == 3 and dl[0]["key"] == b"vk-1" and dl[0]["field"] == "timestamp"
    assert "timestamp: got 'yesterday'" in dl[0]["error"]
    assert b"my secret prompt" not in dl[0]["raw"] and b"gpt-4o" in dl[0]["raw"]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=6))
def test_splitting_into_batches_never_changes_the_lake(tmp_path_factory: pytest.TempPathFactory, cuts: list[int]) -> None:
    """However a stream is cut into batches, the lake's rows and totals are the same."""
    total = sum(cuts)
    whole = tmp_path_factory.mktemp("whole")
    p = pipeline(whole)
    feed(p, 0, total)
    p.flush()
    split = tmp_path_factory.mktemp("split")
    q = pipeline(split, limits=BatchLimits(max_records=10**9))
    start = 0
    for n in cuts:
        feed(q, start, n)
        q.flush()
        start += n
    sql = "select count(*), sum(cost_usd), sum(input_tokens), count(distinct source_offset) from ev"
    assert lake_rows(whole, sql) == lake_rows(split, sql)
