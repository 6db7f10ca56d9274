"""`spendlake retention`: whole days before a cutoff leave the lake, manifests first, on a local
lake and on S3; the rollups keep them; a mirror pulled before drops its copies; writers restart."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from conftest import AnyLake, RemoteLake, event, lake_rows, local_lake, spendlake

DAY0 = datetime.date(2026, 11, 20)
DAY_MS = 86_400_000


def write_days(path: Path, days: int, per_day: int, start: int = 0) -> None:
    base = int(datetime.datetime(DAY0.year, DAY0.month, DAY0.day, tzinfo=datetime.UTC).timestamp() * 1000)
    lines = [json.dumps(event(start + d * per_day + j, timestamp=base + d * DAY_MS + j * 60_000))
             for d in range(days) for j in range(per_day)]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def manifest_files(lake: AnyLake) -> list[str]:
    if isinstance(lake, RemoteLake):
        store = lake.store()
        return [f for e in store.list("_manifests/") for f in json.loads(store.get(e.rel) or b"{}")["files"]]
    return [f for p in (lake / "_manifests").glob("*/*/*.json") for f in json.loads(p.read_bytes())["files"]]


def data_names(lake: AnyLake) -> list[str]:
    if isinstance(lake, RemoteLake):
        return [e.rel for k in ("events/", "dead_letter/") for e in lake.store().list(k)]
    return [p.relative_to(lake).as_posix() for k in ("events", "dead_letter") for p in (lake / k).glob("*/*.parquet")]


def test_retention_drops_whole_days_and_keeps_the_rollups(any_lake: AnyLake, tmp_path: Path) -> None:
    lake = any_lake
    src = tmp_path / "a.jsonl"
    write_days(src, days=6, per_day=40)
    with open(src, "a") as fh:
        fh.write("not json\n")  # a dead letter, of today
    spendlake("ingest", "--source", str(src), "--lake", str(lake), "--batch-records", "50", check=True)
    spendlake("rollup", "--lake", str(lake), check=True)
    before = lake_rows(lake, "select count(*) from ev")
    assert before == [(240,)]
    rolled = spendlake("query", "--lake", str(lake), "select sum(requests) from rollup_daily", "--format", "csv",
                       check=True).stdout.split()[-1]  # fmt: skip
    assert rolled == b"240"
    cutoff = DAY0 + datetime.timedelta(days=3)

    dry = spendlake("retention", "--before", cutoff.isoformat(), "--lake", str(lake), "--dry-run", check=True)
    assert b"would delete" in dry.stderr and lake_rows(lake, "select count(*) from ev") == [(240,)]

    r = spendlake("retention", "--before", cutoff.isoformat(), "--lake", str(lake), check=True)
    assert b"of 3 days (2026-11-20 to 2026-11-22)" in r.stderr, r.stderr
    # no manifest names an old file, and no old file is left
    old = [f for f in manifest_files(lake) if f.startswith("events/date=2026-11-2") and f[12:22] < cutoff.isoformat()]
    assert old == []
    assert not [f for f in data_names(lake) if f.startswith("events/") and f[12:22] < cutoff.isoformat()]
    # what readers see: the newer days whole (the check mirror was pulled before: it drops its copies)
    assert lake_rows(lake, "select min(cast(timestamp as date)), count(*) from ev") == [(cutoff, 120)]
    assert len(lake_rows(lake, "select * from ev")) == 120
    from conftest import dead_rows

    assert len(dead_rows(lake)) == 1  # failed today: kept
    if not isinstance(lake, RemoteLake):
        assert not any((local_lake(lake) / "events").glob(f"date={DAY0.isoformat()}"))  # empty day folders go
    # the rollups keep the dropped days
    again = spendlake("query", "--lake", str(lake), "select sum(requests) from rollup_daily", "--format", "csv",
                      check=True).stdout.split()[-1]  # fmt: skip
    assert again == b"240"
    # writers start again on the trimmed lake: a new file (a late day among them) lands, the old
    # content is still known
    more = tmp_path / "b.jsonl"
    write_days(more, days=1, per_day=10, start=10_000)
    spendlake("ingest", "--source", str(more), "--lake", str(lake), check=True)
    spendlake("ingest", "--source", str(src), "--lake", str(lake), check=True)  # lines already held: nothing new
    assert lake_rows(lake, "select count(*) from ev") == [(130,)]
