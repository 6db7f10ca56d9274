"""The Parquet lake writer and its bookkeeping (contract 2).

Layout under the lake root:

    events/date=YYYY-MM-DD/<stream>+<partition>+<first>+<last>.parquet    priced events
    dead_letter/date=YYYY-MM-DD/<stream>+<partition>+<first>+<last>.parquet
    _manifests/<stream>/<partition>/<first>-<last>.json                 one per committed batch

`stream` is the Kafka topic, or `file-<content digest>` for the file source; first/last are the
batch's offset range (Kafka offsets, or line numbers). The rules this module keeps:

1. A data file's name is a function of (stream, partition, first, last) and its date partition,
   so a replayed range produces the very same names.
2. A batch becomes visible all at once: its files are written as hidden temp files and fsynced;
   then, under a per-partition lock, the manifest is created (the commit point) and the temp
   files are renamed into place. A crash after the manifest is rolled forward by `recover()`;
   a crash before it leaves only temp files, which are swept.
3. The manifests are what the lake holds: `next_offset()` is the last committed offset + 1.
4. A batch that overlaps what the lake already holds (a zombie consumer after a rebalance, two
   processes racing on one partition) raises LakeConflict and never becomes visible, so no
   (partition, offset) is ever written twice.

Readers that glob `events/**/*.parquet` never see temp files (they end in `.tmp`).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ingest.errors import LakeConflict, PipelineFailure

STRAY_TEMP_AGE_S = 600  # a temp file this old with no manifest is from a dead writer
ZSTD_LEVEL = 3  # levels 1..9 measured within 3% of each other on bench data; 3 is the cheapest good one
# Encodings measured on bench/ingest.py data (72 → 65 bytes/event): dictionaries suit the
# low-cardinality columns and the cost parts (tokens x a few prices repeat); timestamps and
# offsets arrive nearly sorted, so deltas; latencies are noisy floats, so byte-stream-split.
# event_id is unique: a dictionary would only be built and thrown away.
DELTA_COLUMNS = {"timestamp": "DELTA_BINARY_PACKED", "source_offset": "DELTA_BINARY_PACKED",
                 "latency_ms": "BYTE_STREAM_SPLIT"}  # fmt: skip
NO_DICTIONARY = {"event_id", *DELTA_COLUMNS}


@dataclass(frozen=True)
class Manifest:
    """One committed batch: its offset range and the files that hold it."""

    stream: str
    partition: int
    first: int
    last: int
    files: tuple[str, ...]  # paths relative to the lake root
    rows: int
    dead_letters: int


def data_name(stream: str, partition: int, first: int, last: int) -> str:
    return f"{stream}+{partition}+{first:020d}+{last:020d}.parquet"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Lake:
    """A lake directory. Safe to use from several processes at once (one writer per partition
    at a time is enforced by a lock file and the manifest check)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.events_dir = self.root / "events"
        self.dead_dir = self.root / "dead_letter"
        self.manifest_dir = self.root / "_manifests"
        for d in (self.events_dir, self.dead_dir, self.manifest_dir):
            d.mkdir(parents=True, exist_ok=True)

    # --- what the lake holds -------------------------------------------------------------

    def manifests(self, stream: str, partition: int) -> list[Manifest]:
        d = self._mdir(stream, partition)
        if not d.is_dir():
            return []
        return sorted(
            (self._read_manifest(p) for p in d.glob("*.json")), key=lambda m: m.first
        )

    def next_offset(self, stream: str, partition: int) -> int | None:
        """Last committed offset + 1, or None when the lake holds nothing of that partition."""
        last = self._high_water(self._mdir(stream, partition))
        return None if last is None else last + 1

    def streams(self) -> Iterator[tuple[str, int]]:
        for sdir in sorted(self.manifest_dir.iterdir()):
            for pdir in sorted(sdir.iterdir(), key=lambda p: int(p.name)):
                yield sdir.name, int(pdir.name)

    @contextmanager
    def partition_lock(self, stream: str, partition: int) -> Iterator[None]:
        """The per-partition lock `commit()` and `recover()` take, for other writers of the lake
        (e.g. ingest/reprice.py replacing a data file in place)."""
        mdir = self._mdir(stream, partition)
        mdir.mkdir(parents=True, exist_ok=True)
        with self._locked(mdir):
            yield

    # --- writing a batch -------------------------------------------------------------------

    def commit(
        self,
        stream: str,
        partition: int,
        first: int,
        last: int,
        events: pa.Table,
        events_date: pa.Array | None,
        dead: pa.Table | None,
        dead_date: str | None,
    ) -> Manifest:
        """Make one batch visible atomically; raise LakeConflict if any of its offsets is held.

        `events_date` gives each event row its partition date (YYYY-MM-DD strings); the rows of
        one date go to one file. Dead letters go to one file under `dead_date`.
        """
        if first > last:
            raise ValueError(f"empty offset range {first}..{last}")
        name = data_name(stream, partition, first, last)
        token = uuid.uuid4().hex[:12]
        staged: list[tuple[Path, Path]] = []  # (temp, final)
        committed = False
        try:
            if events.num_rows:
                assert events_date is not None
                for date, part in _split_by_date(events, events_date):
                    staged.append(self._stage(self.events_dir / f"date={date}", name, token, part))
            if dead is not None and dead.num_rows:
                staged.append(self._stage(self.dead_dir / f"date={dead_date}", name, token, dead))
            manifest = Manifest(
                stream, partition, first, last,
                tuple(str(final.relative_to(self.root)) for _, final in staged),
                events.num_rows, 0 if dead is None else dead.num_rows,
            )  # fmt: skip
            mdir = self._mdir(stream, partition)
            mdir.mkdir(parents=True, exist_ok=True)
            with self._locked(mdir):
                held = self._high_water(mdir)
                if held is not None and first <= held:
                    raise LakeConflict(
                        f"{stream}[{partition}] offsets {first}..{last}: the lake already holds "
                        f"up to {held}; this batch is stale and is discarded"
                    )
                self._write_manifest(mdir, manifest, staged)
                committed = True
                self._publish(staged)
            return manifest
        except BaseException:
            if not committed:  # after the manifest, the temps are the batch: recover() needs them
                for tmp, _ in staged:
                    tmp.unlink(missing_ok=True)
            raise

    def recover(self) -> int:
        """Roll forward committed batches whose files were not all renamed; sweep dead temp
        files. Returns how many files were rolled forward."""
        rolled = 0
        for stream, partition in self.streams():
            mdir = self._mdir(stream, partition)
            with self._locked(mdir):
                for path in mdir.glob("*.json"):
                    doc = json.loads(path.read_bytes())
                    pending = [
                        (self.root / t, self.root / f)
                        for t, f in zip(doc["temps"], doc["files"])
                        if not (self.root / f).exists()
                    ]
                    missing = [str(t) for t, _ in pending if not t.exists()]
                    if missing:
                        raise PipelineFailure(
                            f"manifest {path} lists files that exist neither final nor staged: "
                            f"{missing[:3]}; the lake needs repair"
                        )
                    self._publish(pending)
                    rolled += len(pending)
        now = time.time()
        for d in (self.events_dir, self.dead_dir):
            for tmp in d.glob("date=*/.*.tmp"):
                if now - tmp.stat().st_mtime > STRAY_TEMP_AGE_S:
                    tmp.unlink(missing_ok=True)
        return rolled

    # --- internals -------------------------------------------------------------------------

    def _mdir(self, stream: str, partition: int) -> Path:
        return self.manifest_dir / stream / str(partition)

    @staticmethod
    def _high_water(mdir: Path) -> int | None:
        if not mdir.is_dir():
            return None
        lasts = [int(p.stem.split("-")[1]) for p in mdir.glob("*.json")]
        return max(lasts) if lasts else None

    def _read_manifest(self, path: Path) -> Manifest:
        doc = json.loads(path.read_bytes())
        return Manifest(
            doc["stream"], doc["partition"], doc["first"], doc["last"],
            tuple(doc["files"]), doc["rows"], doc["dead_letters"],
        )  # fmt: skip

    @contextmanager
    def _locked(self, mdir: Path) -> Iterator[None]:
        with open(mdir / ".lock", "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _stage(self, directory: Path, name: str, token: str, table: pa.Table) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{name}.{token}.tmp"
        with open(tmp, "wb") as fh:
            encodings = {c: e for c, e in DELTA_COLUMNS.items() if c in table.column_names}
            pq.write_table(
                table, fh, compression="zstd", compression_level=ZSTD_LEVEL,
                row_group_size=1 << 20, write_statistics=True,
                use_dictionary=[c for c in table.column_names if c not in NO_DICTIONARY],
                column_encoding=encodings or None,
            )  # fmt: skip
            fh.flush()
            os.fsync(fh.fileno())
        return tmp, directory / name

    def _write_manifest(self, mdir: Path, m: Manifest, staged: list[tuple[Path, Path]]) -> None:
        doc = {
            "stream": m.stream, "partition": m.partition, "first": m.first, "last": m.last,
            "files": list(m.files), "temps": [str(t.relative_to(self.root)) for t, _ in staged],
            "rows": m.rows, "dead_letters": m.dead_letters, "committed_at": time.time(),
        }  # fmt: skip
        final = mdir / f"{m.first:020d}-{m.last:020d}.json"
        tmp = mdir / f".{final.name}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(json.dumps(doc).encode())
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, final)
        _fsync_dir(mdir)

    @staticmethod
    def _publish(staged: list[tuple[Path, Path]]) -> None:
        dirs = set()
        for tmp, final in staged:
            os.replace(tmp, final)  # replace: a replayed range rewrites the same name
            dirs.add(final.parent)
        for d in dirs:
            _fsync_dir(d)


def _split_by_date(table: pa.Table, dates: pa.Array) -> Iterator[tuple[str, pa.Table]]:
    """Rows grouped by their date partition, in date order; one table per date."""
    uniq = pc.unique(dates)
    if len(uniq) == 1:
        yield uniq[0].as_py(), table
        return
    for date in sorted(uniq.to_pylist()):
        yield date, table.filter(pc.equal(dates, date))
