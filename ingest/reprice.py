"""Reprice: recompute the cost columns of stored events after a catalog change.

`reprice(lake, since, until, price)` walks `<lake>/events/date=YYYY-MM-DD/*.parquet` for
since <= date <= until (inclusive; until None = no upper bound) in sorted path order. Per file:
read it whole, price it again (`price` returns the COST_SCHEMA columns, vectorised over the whole
table), and if the cost columns differ from what is stored, replace the file in place:

1. Every column other than the cost columns, the schema (field order, types, nullability,
   metadata) and the file name stay exactly as they were; the name is still a function of
   (stream, partition, first, last) and the date (contract 2, invariant 1). The new file is
   written with the lake's own writer (`Lake._stage` with `write_options`: zstd levels,
   dictionary columns, column encodings; a file from an older writer comes out in today's), as
   a hidden `.<name>.reprice-<token>.tmp` beside the original, and fsynced.
2. Under the partition lock of the file's (stream, partition) (parsed from its name), we check
   the file is still the one we read (inode, size, mtime_ns) — another reprice may have replaced
   it meanwhile; if so we read it again — then `os.replace` the temp over it and fsync the
   directory. A crash leaves either the old file or the new one, never a mix; a temp left by a
   crash ends in `.tmp`, so readers (which glob `*.parquet`) never see it, and
   `Lake.recover()` sweeps it once it is older than STRAY_TEMP_AGE_S.
3. Files whose cost columns are already what `price` computes (Arrow `equals`, nulls included)
   are not touched at all, so a second run with the same catalog is a no-op (idempotent).

Why the partition lock is enough next to a running ingest: ingest only ever creates *new*
names — `Lake.commit()` refuses (LakeConflict, under this same lock) any batch that overlaps what
the partition holds, and `Lake.recover()` (also under this lock) only renames staged temps to
names that do not exist yet. Reprice only replaces names that exist. So no ingest rename ever
targets a file we replace, and the lock serialises us with both anyway (and with other reprice
runs, together with the identity check in 2.). What the lock does not give: reprice lists the
files once at the start, so files committed after that keep the prices ingest gave them — restart
ingest with the new catalog first, then reprice (a second run picks up any stragglers). Atomicity
is per file: a query running during a reprice may see some files repriced and others not.

Each run is recorded in `<lake>/_reprice/<UTC timestamp>-<short uuid>.json` (written atomically:
temp, fsync, rename): since/until, status, the files rewritten (paths relative to the lake root),
the stats and, when the run stopped on a failure, the error. It is written when the run starts
(status "running", so a hard crash is visible) and again when it ends, also on failure: files
already rewritten stay rewritten and are listed. A file that cannot be read or priced stops the
run with a RepriceError naming it; a bug or corruption is never skipped half-silently.

Rollups notice a rewritten file by its identity, (path, size, mtime_ns): a rewrite keeps the path
but always changes the identity (the replacement is a new inode written now; in the unlikely
case its size and mtime_ns both equal the old file's, its mtime is moved on by 1 ns).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ingest.errors import PipelineFailure
from ingest.lake import Lake, _fsync_dir, data_name
from ingest.schema import COST_SCHEMA

log = logging.getLogger(__name__)

COST_COLUMNS: tuple[str, ...] = tuple(COST_SCHEMA.names)
JOURNAL_DIR = "_reprice"
MAX_ATTEMPTS = 3  # times a file may change under us (a concurrent reprice) before we give up
_DATA_NAME = re.compile(r"^(?P<stream>.+)\+(?P<partition>-?\d+)\+(?P<first>\d+)\+(?P<last>\d+)\.parquet$")

PriceFn = Callable[[pa.Table], pa.Table]


class RepriceError(PipelineFailure):
    """A file could not be repriced (unreadable, unpriceable, or not a lake data file)."""


@dataclass
class RepriceStats:
    files_seen: int = 0  # files fully processed: rewritten + unchanged
    files_rewritten: int = 0
    files_unchanged: int = 0
    rows: int = 0
    rows_changed: int = 0  # rows whose cost columns differ (nulls included)
    cost_before_usd: float = 0.0  # sum of non-null cost_usd over the files seen, before
    cost_after_usd: float = 0.0  # ... and after


def reprice(
    lake_root: str | os.PathLike[str],
    since: datetime.date,
    until: datetime.date | None,
    price: PriceFn,
    progress: Callable[[int, int], None] | None = None,
) -> RepriceStats:
    """Reprice every events file dated since..until (inclusive; None = no upper bound).

    ``price(table)`` gets one file's events (LAKE_SCHEMA columns) and returns the COST_SCHEMA
    columns for the same rows in the same order. ``progress(done, total)`` is called once with
    ``(0, total)`` before the first file and after each file. Raises RepriceError naming the
    file that could not be read or priced; the journal still records what was done.
    """
    root = Path(lake_root)
    if not (root / "events").is_dir():
        raise RepriceError(f"{root}: not a spendlake lake (it has no events/ directory)")
    if until is not None and until < since:
        raise ValueError(f"until {until} is before since {since}")
    lake = Lake(root)
    files = _files_in_range(lake.events_dir, since, until)
    stats = RepriceStats()
    rewritten: list[str] = []
    journal = _Journal(root, since, until)
    journal.write("running", stats, rewritten, None)
    error: str | None = None
    try:
        if progress is not None:
            progress(0, len(files))
        for done, path in enumerate(files, start=1):
            if _reprice_file(lake, path, price, stats):
                rewritten.append(path.relative_to(root).as_posix())
            if progress is not None:
                progress(done, len(files))
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        status = "done" if error is None else "failed"
        if error is None:
            journal.write(status, stats, rewritten, error)
        else:
            try:  # never let a journal failure hide the error that stopped the run
                journal.write(status, stats, rewritten, error)
            except Exception:
                log.exception("reprice: could not write the journal %s", journal.path)
    return stats


def _files_in_range(
    events_dir: Path, since: datetime.date, until: datetime.date | None
) -> list[Path]:
    files: list[Path] = []
    for d in events_dir.iterdir():
        if not (d.is_dir() and d.name.startswith("date=")):
            continue
        try:
            day = datetime.date.fromisoformat(d.name[len("date=") :])
        except ValueError:
            continue  # not a date partition of ours
        if day < since or (until is not None and day > until):
            continue
        files.extend(p for p in d.glob("*.parquet") if not p.name.startswith("."))
    return sorted(files)


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _reprice_file(lake: Lake, path: Path, price: PriceFn, stats: RepriceStats) -> bool:
    """Reprice one file; adds to ``stats``; True when the file was rewritten."""
    m = _DATA_NAME.match(path.name)
    if m is None or data_name(
        m["stream"], int(m["partition"]), int(m["first"]), int(m["last"])
    ) != path.name:
        raise RepriceError(
            f"{path}: not a lake data file name (<stream>+<partition>+<first>+<last>.parquet)"
        )
    stream, partition = m["stream"], int(m["partition"])
    for _ in range(MAX_ATTEMPTS):
        table, ident = _read(path)
        old = table.select(list(COST_COLUMNS))
        new = _price(price, table, path)
        if all(old.column(c).equals(new.column(c)) for c in COST_COLUMNS):
            _count(stats, old, new, changed=0)
            stats.files_unchanged += 1
            return False
        out = pa.Table.from_arrays(
            [new.column(f.name) if f.name in COST_COLUMNS else table.column(i)
             for i, f in enumerate(table.schema)],
            schema=table.schema,
        )  # fmt: skip
        token = f"reprice-{uuid.uuid4().hex[:12]}"
        tmp, final = path.parent / f".{path.name}.{token}.tmp", path  # _stage's naming
        try:
            staged = lake._stage(path.parent, path.name, token, out)
            assert staged == (tmp, final), staged
            with lake.partition_lock(stream, partition):
                try:
                    current = os.stat(final)
                except FileNotFoundError:
                    raise RepriceError(f"{path}: the file vanished while it was repriced") from None
                if _identity(current) != ident:
                    log.info("reprice: %s changed while it was repriced; reading it again", path)
                    continue
                _move_mtime_on(tmp, current)
                os.replace(tmp, final)
                _fsync_dir(final.parent)
        except OSError as exc:
            raise RepriceError(
                f"{path}: cannot rewrite it (the original is intact): {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            tmp.unlink(missing_ok=True)  # gone after the replace; cleans up after a failure
        _count(stats, old, new, changed=_changed_rows(old, new))
        stats.files_rewritten += 1
        log.debug("reprice: rewrote %s", path)
        return True
    raise RepriceError(f"{path}: changed under reprice {MAX_ATTEMPTS} times in a row; giving up")


def _read(path: Path) -> tuple[pa.Table, tuple[int, int, int, int]]:
    try:
        with open(path, "rb") as fh:
            ident = _identity(os.fstat(fh.fileno()))
            table = pq.ParquetFile(fh).read()
    except Exception as exc:
        raise RepriceError(f"{path}: cannot read it: {type(exc).__name__}: {exc}") from exc
    missing = [c for c in COST_COLUMNS if c not in table.column_names]
    if missing:
        raise RepriceError(f"{path}: not a lake events file (no {', '.join(missing)} column)")
    return table, ident


def _price(price: PriceFn, table: pa.Table, path: Path) -> pa.Table:
    try:
        new = price(table)
    except Exception as exc:
        raise RepriceError(f"{path}: cannot price it: {type(exc).__name__}: {exc}") from exc
    if not isinstance(new, pa.Table) or new.column_names != list(COST_COLUMNS):
        got = new.column_names if isinstance(new, pa.Table) else type(new).__name__
        raise RepriceError(f"{path}: price() returned {got}, expected columns {list(COST_COLUMNS)}")
    if new.num_rows != table.num_rows:
        raise RepriceError(
            f"{path}: price() returned {new.num_rows} rows for {table.num_rows} events"
        )
    for name in COST_COLUMNS:
        field, column = table.schema.field(name), new.column(name)
        if column.type != field.type:
            raise RepriceError(
                f"{path}: price() returned {name} as {column.type}, the file holds {field.type}"
            )
        if not field.nullable and column.null_count:
            raise RepriceError(f"{path}: price() returned {column.null_count} NULL {name}")
    return new


def _changed_rows(old: pa.Table, new: pa.Table) -> int:
    """Rows where any cost column differs, a NULL on one side only included."""
    changed = None
    for c in COST_COLUMNS:
        a, b = old.column(c), new.column(c)
        diff = pc.or_(
            pc.fill_null(pc.not_equal(a, b), False), pc.xor(pc.is_null(a), pc.is_null(b))
        )
        changed = diff if changed is None else pc.or_(changed, diff)
    return 0 if changed is None else int(pc.sum(changed, min_count=0).as_py())


def _count(stats: RepriceStats, old: pa.Table, new: pa.Table, changed: int) -> None:
    stats.files_seen += 1
    stats.rows += old.num_rows
    stats.rows_changed += changed
    stats.cost_before_usd += pc.sum(old.column("cost_usd"), min_count=0).as_py() or 0.0
    stats.cost_after_usd += pc.sum(new.column("cost_usd"), min_count=0).as_py() or 0.0


def _move_mtime_on(tmp: Path, current: os.stat_result) -> None:
    """Make sure the replacement's (size, mtime_ns) differs from the file it replaces, so a
    rollup keyed on file identity always notices the rewrite."""
    st = os.stat(tmp)
    if (st.st_size, st.st_mtime_ns) != (current.st_size, current.st_mtime_ns):
        return
    os.utime(tmp, ns=(st.st_atime_ns, current.st_mtime_ns + 1))
    _fsync_dir(tmp)  # fsyncs any path it can open read-only, a file too


class _Journal:
    """`<lake>/_reprice/<UTC timestamp>-<short uuid>.json`, rewritten atomically."""

    def __init__(self, root: Path, since: datetime.date, until: datetime.date | None) -> None:
        self.root = root
        self.started = datetime.datetime.now(datetime.timezone.utc)
        self.dir = root / JOURNAL_DIR
        name = f"{self.started:%Y%m%dT%H%M%S.%fZ}-{uuid.uuid4().hex[:8]}.json"
        self.path = self.dir / name
        self.since, self.until = since, until

    def write(
        self, status: str, stats: RepriceStats, rewritten: list[str], error: str | None
    ) -> None:
        doc: dict[str, Any] = {
            "since": self.since.isoformat(),
            "until": None if self.until is None else self.until.isoformat(),
            "started_at": self.started.isoformat(),
            "finished_at": None
            if status == "running"
            else datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "status": status,
            "error": error,
            "files_rewritten": list(rewritten),
            "stats": asdict(stats),
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{self.path.name}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(json.dumps(doc, indent=1).encode())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.dir)
