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
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ingest.errors import LakeConflict, PipelineFailure

MANIFESTS = "_manifests"  # the folder of the manifests, on every kind of lake
STRAY_TEMP_AGE_S = 600  # a temp file this old with no manifest is from a dead writer

# How events files are encoded, measured with bench/ingest.py (1M events in 52 files of ~19k
# rows; compressed bytes per event): the previous writer (zstd 3, a dictionary on nearly every
# column) made 57.7 B/event, these settings 51.9. Every total reads the same: only the bytes change.
# - zstd 9, not 3: costs and token counts are 8-byte values that repeat at a distance, and level
#   9 finds more of those matches (54.2 → 52.6 B/event for ~0.6 µs more CPU per event; 12 gains
#   nothing more, 15 and up cost seconds per batch).
# - event_id is unique random text with nothing to match: zstd 1 codes it best (18.5 B; 19.1 at
#   3 or 9) and cheapest, and DELTA_LENGTH_BYTE_ARRAY drops PLAIN's 4-byte length per value.
# - A dictionary pays only where values repeat within a file. Costs and most token counts are
#   nearly unique per file (cost_usd: 7.6 B with one, 6.4 PLAIN at zstd 3), so PLAIN and zstd
#   finds the repeats; output tokens, the output/reasoning costs and all labels keep one (and
#   so do the map `tags`, whose leaves the old list of top-level names never reached).
# - Timestamps and offsets arrive sorted: DELTA_BINARY_PACKED. Latencies and durations are
#   measurements with noisy low bits: BYTE_STREAM_SPLIT (within 1% of PLAIN on the bench's
#   one-decimal latencies). Not for costs: equal costs repeat as whole 8-byte values, which
#   splitting into byte streams takes apart (cost_usd 7.0 B against 6.4 PLAIN).
# - Rows keep their arrival order: sorting a file by (virtual_key, timestamp) measured 53.6
#   B/event against 51.9, as timestamp (1.8 → 3.4 B) and source_offset (0 → 1.9 B) lose more
#   than the key columns gain (3.6 → 1.9 B).
# These encodings are Parquet 2 ones that DuckDB, Spark, Trino and ClickHouse read; old files
# and new ones read together, the schema is unchanged.
ZSTD_LEVEL = 9
COLUMN_ZSTD_LEVEL = {"event_id": 1}
COLUMN_ENCODINGS = {
    "event_id": "DELTA_LENGTH_BYTE_ARRAY",
    "timestamp": "DELTA_BINARY_PACKED", "source_offset": "DELTA_BINARY_PACKED",
    "ingested_at": "DELTA_BINARY_PACKED",
    "latency_ms": "BYTE_STREAM_SPLIT", "duration_seconds": "BYTE_STREAM_SPLIT",
    **dict.fromkeys(("input_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens",
                     "cost_usd", "cost_input_usd", "cost_cached_input_usd", "cost_cache_write_usd",
                     "reported_cost_usd"), "PLAIN"),
}  # fmt: skip
ROW_GROUP_ROWS = 1 << 20  # a batch (≤ 50,000 records) is one row group: one footer, one dictionary
# Dead letters are few and read rarely: they keep the settings events files had before.
DEAD_LETTER_ZSTD_LEVEL = 3
DEAD_LETTER_ENCODINGS = {"source_offset": "DELTA_BINARY_PACKED"}


def write_options(schema: pa.Schema, *, dead_letters: bool = False) -> dict[str, Any]:
    """`pyarrow.parquet.write_table` options for a lake file of this schema. Per-column options
    are keyed by leaf path (`tags.key_value.key`): a top-level name does not reach a map's
    leaves."""
    leaves = _leaf_paths(schema)
    encodings = DEAD_LETTER_ENCODINGS if dead_letters else COLUMN_ENCODINGS
    if dead_letters:
        level: int | dict[str, int] = DEAD_LETTER_ZSTD_LEVEL
    else:
        level = {c: COLUMN_ZSTD_LEVEL.get(c, ZSTD_LEVEL) for c in leaves}
    return {
        "compression": "zstd",
        "compression_level": level,
        "row_group_size": ROW_GROUP_ROWS,
        "write_statistics": True,
        "use_dictionary": [c for c in leaves if c not in encodings],
        "column_encoding": {c: e for c, e in encodings.items() if c in leaves} or None,
    }


def _leaf_paths(schema: pa.Schema) -> list[str]:
    """Parquet column paths of an Arrow schema's leaves, as pyarrow names them."""
    out: list[str] = []

    def walk(path: str, t: pa.DataType) -> None:
        if pa.types.is_map(t):
            walk(f"{path}.key_value.key", t.key_type)
            walk(f"{path}.key_value.value", t.item_type)
        elif pa.types.is_struct(t):
            for f in t:
                walk(f"{path}.{f.name}", f.type)
        elif pa.types.is_list(t) or pa.types.is_large_list(t):
            walk(f"{path}.list.element", t.value_type)
        else:
            out.append(path)

    for f in schema:
        walk(f.name, f.type)
    return out


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


def manifest_from_doc(doc: dict[str, Any]) -> Manifest:
    """A manifest document (local or object-store lake) as a Manifest."""
    return Manifest(doc["stream"], doc["partition"], doc["first"], doc["last"], tuple(doc["files"]),
                    doc["rows"], doc["dead_letters"])  # fmt: skip


def manifest_doc(m: Manifest, **extra: Any) -> dict[str, Any]:
    """A Manifest as its document, stamped now, with what a kind of lake adds (a local lake's
    `temps`, an object-store lake's `attempt`)."""
    return {"stream": m.stream, "partition": m.partition, "first": m.first, "last": m.last, "files": list(m.files),
            "rows": m.rows, "dead_letters": m.dead_letters, "committed_at": time.time(), **extra}  # fmt: skip


def manifest_file(m: Manifest) -> str:
    """A local lake's manifest name (in `_manifests/<stream>/<partition>/`): its offset range."""
    return f"{m.first:020d}-{m.last:020d}.json"


def data_name(stream: str, partition: int, first: int, last: int) -> str:
    return f"{stream}+{partition}+{first:020d}+{last:020d}.parquet"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_durably(path: Path, doc: dict[str, Any]) -> None:
    """Replace `path` with `doc` as JSON atomically and durably: temp file, fsync, rename, fsync
    of the directory."""
    tmp = path.parent / f".{path.name}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(json.dumps(doc).encode())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class Lake:
    """A lake directory. Safe to use from several processes at once (one writer per partition
    at a time is enforced by a lock file and the manifest check)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.events_dir = self.root / "events"
        self.dead_dir = self.root / "dead_letter"
        self.manifest_dir = self.root / MANIFESTS
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
                staged.append(
                    self._stage(self.dead_dir / f"date={dead_date}", name, token, dead, dead_letters=True)
                )
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

    @staticmethod
    def _read_manifest(path: Path) -> Manifest:
        return manifest_from_doc(json.loads(path.read_bytes()))

    @contextmanager
    def _locked(self, mdir: Path) -> Iterator[None]:
        with open(mdir / ".lock", "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _stage(
        self, directory: Path, name: str, token: str, table: pa.Table, *, dead_letters: bool = False
    ) -> tuple[Path, Path]:
        """Write `table` to a hidden temp file beside `name` and fsync it. The bytes are a
        function of the table alone (pyarrow writes no time or randomness into the file)."""
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{name}.{token}.tmp"
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh, **write_options(table.schema, dead_letters=dead_letters))
            fh.flush()
            os.fsync(fh.fileno())
        return tmp, directory / name

    def _write_manifest(self, mdir: Path, m: Manifest, staged: list[tuple[Path, Path]]) -> None:
        doc = manifest_doc(m, temps=[str(t.relative_to(self.root)) for t, _ in staged])
        write_json_durably(mdir / manifest_file(m), doc)

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
