"""The local spool (ingest/spool.py): durable appends, group commit, torn tails, release, and the
spool source landing it exactly once across a restart."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson
import pytest

from conftest import event, lake_rows
from ingest.errors import PipelineFailure
from ingest.lake import Lake
from ingest.pipeline import BatchLimits, Pipeline
from ingest.spool import Spool
from ingest.spool_source import SpoolIngestor
from pricing import Catalog


def read_all(spool: Spool, start: int = 0) -> list[tuple[int, bytes]]:
    reader, out = spool.reader(start), []
    while got := reader.read(1000):
        out += got
    return out


def test_concurrent_appends_are_all_durable_in_one_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", segment_bytes=4096)  # small segments: many rolls
    def writer(w: int) -> None:
        for b in range(20):
            spool.append([f"w{w}-b{b}-r{r}".encode() for r in range(5)])

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = read_all(spool)
    assert [seq for seq, _ in got] == list(range(800)) and spool.next_seq == 800
    assert sorted(v for _, v in got) == sorted(f"w{w}-b{b}-r{r}".encode() for w in range(8) for b in range(20)
                                               for r in range(5))  # fmt: skip
    # one append's records stay together and in order
    for i in range(0, 800, 5):
        prefix = got[i][1].rsplit(b"-r", 1)[0]
        assert [v for _, v in got[i : i + 5]] == [prefix + f"-r{r}".encode() for r in range(5)]
    assert len(spool.segments()) > 3
    assert [v for _, v in read_all(spool, 333)] == [v for _, v in got[333:]]
    spool.close()


def test_a_torn_tail_is_cut_and_the_rest_survives_reopening(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s")
    spool.append([b"one", b"two"])
    stream = spool.stream
    spool.close()
    seg = tmp_path / "s" / "00000000000000000000.seg"
    with open(seg, "ab") as fh:  # a crash mid-write: a frame header promising more than is there
        fh.write(b"\x40\x00\x00\x00\x01\x02\x03\x04partial")
    spool = Spool(tmp_path / "s")
    assert spool.stream == stream and spool.next_seq == 2
    spool.append([b"three"])
    assert [v for _, v in read_all(spool)] == [b"one", b"two", b"three"]
    with pytest.raises(PipelineFailure, match="in use by another spendlake serve"):
        Spool(tmp_path / "s")
    spool.close()


def test_release_deletes_only_segments_the_lake_holds(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", segment_bytes=64)
    for i in range(10):
        spool.append([f"record-{i:02d}-".encode() * 3])
    segs = spool.segments()
    spool.release(segs[3])  # records below the 4th segment's first are landed
    assert spool.segments() == segs[3:]
    spool.release(10**9)
    assert spool.segments() == segs[-1:]  # the segment being written stays
    spool.close()


def test_spool_source_lands_exactly_once_across_a_restart(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    spool = Spool(tmp_path / "spool")
    spool.append([orjson.dumps(event(i)) for i in range(300)] + [b"not json"])
    pipeline = Pipeline(lake, Catalog.builtin(), limits=BatchLimits(max_records=100))
    SpoolIngestor(spool, pipeline, exit_when_idle_s=0.3).run()
    spool.append([orjson.dumps(event(i)) for i in range(300, 450)])
    # a restart: the lake says what it holds; the spool keeps only what it does not
    pipeline = Pipeline(lake, Catalog.builtin(), limits=BatchLimits(max_records=100))
    SpoolIngestor(spool, pipeline, exit_when_idle_s=0.3).run()
    assert lake_rows(tmp_path / "lake", "select count(*), count(distinct event_id), count(distinct source_offset), "
                                        "min(source_offset), max(source_offset) from ev") == [(450, 450, 450, 0, 450)]  # fmt: skip
    assert lake.next_offset(spool.stream, 0) == 451
    spool.close()
