"""The lake on a real S3 server (SeaweedFS): the commit point, zombies, orphans, the mirror, and
the store stopping mid-commit. The Kafka exactly-once suite runs on S3 too (tests/test_kafka.py,
`any_lake`); this file holds what only an object store has."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from conftest import RemoteLake, event, lake_rows, spendlake, spendlake_bg, store_outage
from ingest.errors import LakeConflict
from ingest.lake_s3 import S3Lake
from ingest.mirror import Mirror

STREAM = "usage"
DAY = "2026-12-01"


def table(first: int, last: int) -> tuple[pa.Table, pa.Array]:
    t = pa.table({"event_id": [f"e{i}" for i in range(first, last + 1)],
                  "source_offset": pa.array(range(first, last + 1), pa.int64())})  # fmt: skip
    return t, pa.array([DAY] * t.num_rows)


def dead(first: int) -> pa.Table:
    return pa.table({"source_offset": pa.array([first], pa.int64()), "error": ["bad"]})


def commit(lake: S3Lake, first: int, last: int, with_dead: bool = False) -> Any:
    t, d = table(first, last)
    return lake.commit(STREAM, 0, first, last, t, d, dead(first) if with_dead else None, DAY)


def keys(remote: RemoteLake, prefix: str) -> list[str]:
    return [e.rel for e in remote.store().list(prefix)]


def test_a_batch_is_three_requests_and_the_manifests_say_what_the_lake_holds(s3_lake: RemoteLake) -> None:
    store = s3_lake.store()
    lake = S3Lake(store)
    assert lake.next_offset(STREAM, 0) is None
    store.requests.clear()
    for first in range(0, 500, 100):
        commit(lake, first, first + 99, with_dead=True)
    # events, dead letters, manifest: three PUTs per batch, nothing else in the steady state
    assert store.requests == {"PUT": 15}, store.requests
    fresh = S3Lake(s3_lake.store())  # another process (or host) learns it from the manifests
    assert fresh.next_offset(STREAM, 0) == 500
    assert [(m.first, m.last) for m in fresh.manifests(STREAM, 0)] == [(i, i + 99) for i in range(0, 500, 100)]
    assert list(fresh.streams()) == [(STREAM, 0)]
    assert lake_rows(s3_lake, "select count(*), count(distinct event_id) from ev") == [(500, 500)]


def test_a_zombie_is_refused_by_the_store_and_its_objects_never_reach_a_reader(s3_lake: RemoteLake) -> None:
    old = S3Lake(s3_lake.store())
    assert old.next_offset(STREAM, 0) is None
    commit(old, 0, 99)
    # a rebalance: the new owner seeks from the lake and commits the next range
    new = S3Lake(s3_lake.store())
    assert new.next_offset(STREAM, 0) == 100
    commit(new, 100, 149)
    # the old owner (a zombie) still believes it holds 99 and commits 100..199: the store refuses
    with pytest.raises(LakeConflict, match="another writer committed offsets 100..149"):
        commit(old, 100, 199)
    data = keys(s3_lake, "events/")
    assert not any("+00000000000000000100+00000000000000000199" in k for k in data), data
    # and a later batch of the zombie is refused without a request (it knows the lake moved on)
    with pytest.raises(LakeConflict):
        commit(old, 120, 130)
    assert lake_rows(s3_lake, "select min(source_offset), max(source_offset), count(*) from ev") == [(0, 149, 150)]


def test_two_writers_racing_for_one_range_one_wins(s3_lake: RemoteLake) -> None:
    """Many writers start the same batch at the same offset at once: exactly one manifest is
    created; every loser raises LakeConflict and leaves nothing behind but the winner's files."""
    lakes = [S3Lake(s3_lake.store()) for _ in range(6)]
    for lake in lakes:
        assert lake.next_offset(STREAM, 0) is None
    outcome: list[str] = []
    barrier = threading.Barrier(len(lakes))

    def run(i: int, lake: S3Lake) -> None:
        barrier.wait()
        try:
            commit(lake, 0, 50 + i)  # different lasts: different data object names
            outcome.append("won")
        except LakeConflict:
            outcome.append("lost")

    threads = [threading.Thread(target=run, args=(i, lake)) for i, lake in enumerate(lakes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcome) == ["lost"] * 5 + ["won"]
    manifests = keys(s3_lake, "_manifests/")
    assert len(manifests) == 1
    doc = json.loads(s3_lake.store().get(manifests[0]) or b"{}")
    assert keys(s3_lake, "events/") == doc["files"]  # the losers' objects are gone
    assert lake_rows(s3_lake, "select count(*) from ev") == [(doc["last"] + 1,)]


def test_orphans_of_a_crash_are_swept_by_the_next_commit_of_the_partition(s3_lake: RemoteLake) -> None:
    store = s3_lake.store()
    lake = S3Lake(store)
    lake.next_offset(STREAM, 0)
    commit(lake, 0, 99)
    # a writer died after PUTting the data of two batches in flight, before their manifests
    for first, last in ((100, 299), (300, 349)):
        store.put(f"events/date={DAY}/{STREAM}+0+{first:020d}+{last:020d}.parquet", b"orphan")
    assert lake_rows(s3_lake, "select count(*) from ev") == [(100,)]  # readers follow manifests
    restarted = S3Lake(s3_lake.store())
    assert restarted.next_offset(STREAM, 0) == 100
    commit(restarted, 100, 199)  # covers the first orphan's start: it goes; the second is later
    names = keys(s3_lake, "events/")
    assert not any("+00000000000000000100+00000000000000000299" in k for k in names), names
    assert any("+00000000000000000300+00000000000000000349" in k for k in names), names
    commit(restarted, 200, 399)  # passes the second one's start: it goes too
    names = keys(s3_lake, "events/")
    assert not any("+00000000000000000300+00000000000000000349" in k for k in names), names
    assert lake_rows(s3_lake, "select count(*), count(distinct source_offset) from ev") == [(400, 400)]


def test_the_file_source_twice_on_s3(s3_lake: RemoteLake, tmp_path: Path) -> None:
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"".join(json.dumps(event(i)).encode() + b"\n" for i in range(2000)))
    for _ in range(2):
        spendlake("ingest", "--source", str(src), "--lake", str(s3_lake), "--batch-records", "300", check=True)
    assert lake_rows(s3_lake, "select count(*), count(distinct event_id) from ev") == [(2000, 2000)]
    r = spendlake("query", "--lake", str(s3_lake), "select count(*), round(sum(cost_usd), 6) from events",
                  "--format", "json", check=True)  # fmt: skip
    got = json.loads(r.stdout)
    expected = lake_rows(s3_lake, "select count(*), round(sum(cost_usd), 6) from ev")[0]
    assert (got[0]["count_star()"], got[0]["round(sum(cost_usd), 6)"]) == expected


def test_the_store_stopped_mid_commit(s3: Any, s3_lake: RemoteLake, tmp_path: Path) -> None:
    """The S3 server is killed while ingest commits batches and started again: ingest waits for
    it, says so once, goes on by itself, and every line is in the lake exactly once."""
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"".join(json.dumps(event(i)).encode() + b"\n" for i in range(60_000)))
    log = tmp_path / "ingest.log"
    proc = spendlake_bg("ingest", "--source", str(src), "--lake", str(s3_lake), "--batch-records", "500", log=log)
    store_outage(s3, s3_lake, proc, log)
    text = log.read_text()
    assert text.count("does not answer") == 1, text
    assert "answers again" in text
    assert lake_rows(s3_lake, "select count(*), count(distinct source_offset) from ev") == [(60_000, 60_000)]


def test_the_mirror_follows_manifests_and_reprices(s3_lake: RemoteLake, tmp_path: Path) -> None:
    store = s3_lake.store()
    lake = S3Lake(store)
    lake.next_offset(STREAM, 0)
    m = commit(lake, 0, 9)
    a, b = Mirror(s3_lake.store(), tmp_path / "a"), Mirror(s3_lake.store(), tmp_path / "b")
    assert a.pull() == 2 and b.pull() == 2  # one manifest, one file
    assert a.pull() == 0  # nothing new: nothing fetched
    # host a replaces the file in place (what reprice does) and records it; b fetches it again
    path = a.root / m.files[0]
    path.write_bytes(b"repriced")
    a.record_replaced([m.files[0]])
    assert b.pull() == 1
    assert (b.root / m.files[0]).read_bytes() == b"repriced"
    # published folders: what a writes and pushes, b pulls; b never overwrites its own newer copy
    (a.root / "_rollups").mkdir()
    (a.root / "_rollups" / "status.json").write_text('{"v": 1}')
    assert a.push() == 1 and a.push() == 0
    b.pull()
    assert (b.root / "_rollups" / "status.json").read_text() == '{"v": 1}'
    (b.root / "_rollups" / "status.json").write_text('{"v": "b"}')
    (a.root / "_rollups" / "status.json").write_text('{"v": 2}')
    a.push()
    b.pull()
    assert (b.root / "_rollups" / "status.json").read_text() == '{"v": "b"}'


def test_an_imported_catalog_prices_what_ingest_lands_on_s3(s3_lake: RemoteLake, tmp_path: Path) -> None:
    """`pricing import` pushes the catalog to the lake's `_catalog/`; `ingest`, which has no
    mirror, reads it from the store (`[pricing] catalog = "auto"`)."""
    catalog = tmp_path / "prices.json"
    catalog.write_text(json.dumps({"acme-frontier-1": {
        "litellm_provider": "openai", "mode": "chat",
        "input_cost_per_token": 3e-6, "output_cost_per_token": 1.5e-5}}))  # fmt: skip
    spendlake("pricing", "import", str(catalog), "--lake", str(s3_lake), check=True)
    src = tmp_path / "e.jsonl"
    src.write_text(json.dumps(event(1, provider="openai", model="acme-frontier-1", input_tokens=1000,
                                    output_tokens=100, cached_input_tokens=0)) + "\n")  # fmt: skip
    spendlake("ingest", "--source", str(src), "--lake", str(s3_lake), check=True)
    assert lake_rows(s3_lake, "select cost_usd, cost_source from ev") == [(pytest.approx(0.0045), "catalog")]


def test_reprice_on_s3_reaches_every_mirror(s3_lake: RemoteLake, tmp_path: Path) -> None:
    """A reprice runs on its host's mirror, PUTs each replaced object whole (a reader sees the old
    file or the new one, never a mix) and records them in `_changes/`: another host's mirror,
    pulled before, fetches them again."""
    src = tmp_path / "e.jsonl"
    src.write_text("".join(json.dumps(event(i, provider="openai", model="acme-frontier-1", input_tokens=1000, output_tokens=100,
                                             cached_input_tokens=0)) + "\n" for i in range(50)))  # fmt: skip
    spendlake("ingest", "--source", str(src), "--lake", str(s3_lake), check=True)
    assert lake_rows(s3_lake, "select count(*), count(cost_usd) from ev") == [(50, 0)]  # unknown: NULL, not $0
    catalog = tmp_path / "prices.json"
    catalog.write_text(json.dumps({"acme-frontier-1": {
        "litellm_provider": "openai", "mode": "chat",
        "input_cost_per_token": 3e-6, "output_cost_per_token": 1.5e-5}}))  # fmt: skip
    spendlake("reprice", "--since", "2025-01-01", "--catalog", str(catalog), "--lake", str(s3_lake), check=True)
    # the check mirror was pulled above, before the reprice: it must fetch the replaced file again
    assert lake_rows(s3_lake, "select count(*), count(cost_usd), round(sum(cost_usd), 6) from ev") == [(50, 50, 0.225)]
    assert [e.rel for e in s3_lake.store().list("_reprice/")], "the reprice journal is published"


def test_a_missing_bucket_or_refused_credentials_is_one_line_without_the_secret(
        s3_lake: RemoteLake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    src = tmp_path / "e.jsonl"
    src.write_text(json.dumps(event(1)) + "\n")
    r = spendlake("ingest", "--source", str(src), "--lake", "s3://no-such-bucket/lake", timeout=120)
    assert r.returncode == 1
    assert r.stderr.decode().strip().splitlines()[-1] == (
        f"spendlake: [lake] path s3://no-such-bucket/lake: the bucket 'no-such-bucket' does not exist at "
        f"{s3_lake.server.endpoint}")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-at-all")
    for args in (("ingest", "--source", str(src)), ("query", "select 1")):
        r = spendlake(*args, "--lake", str(s3_lake), timeout=120)
        err = r.stderr.decode()
        assert r.returncode in (1, 2) and "Traceback" not in err, err
        assert "refused" in err and "check the AWS credentials" in err, err
        assert "not-the-secret-at-all" not in err and s3_lake.server.secret_key not in err
    assert spendlake("query", "--lake", "gs://bucket/lake", "select 1").returncode == 2
