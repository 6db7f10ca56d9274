"""A local mirror of an object-store lake: how every reader (rollups, `query`, budgets, reports,
`/metrics`, reprice) reads it.

Why a mirror rather than DuckDB's own S3 reader: DuckDB reads S3 through its `httpfs` extension,
which is downloaded at run time and cannot be here (and is not on many locked-down hosts); and
the readers already speak a local lake, with its sandbox (`query` stays confined to the lake's
folders) and its incremental rollups keyed by file identity. The mirror follows the manifests,
never listings of data: a file is fetched only once a manifest names it, and the local manifest
is written after its files, so a local reader sees a batch whole or not at all. Data objects are
immutable once committed (a reprice replaces one under the same name and records that in
`_changes/`), so each is fetched once; an incremental pull costs one LIST per partition, one
LIST of `_changes/`, and one GET per new manifest and per new file.

The published folders (`_rollups/`, `_alerts/`, `_catalog/`, `_reprice/`) are what `serve`,
`pricing import` and `reprice` write for other readers: a writer writes them locally and
`push`es them; a reader `pull`s them. A local copy that changed since it was last pulled or
pushed is this host's newer output and is never overwritten by a pull.

Cost: the mirror holds what it read, on local disk (`[lake] cache_dir`). `serve` needs every
date anyway (its rollups and reports); for ad-hoc queries of a very large lake, read it with a
distributed engine instead (docs/operations.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ingest.lake import MANIFESTS, Manifest, manifest_file, manifest_from_doc
from ingest.objectstore import ObjectStore

log = logging.getLogger("spendlake.lake")

PUBLISHED = ("_rollups", "_alerts", "_catalog", "_reprice")
CHANGES = "_changes"
STATE = "_mirror.json"  # what was pulled or pushed: {rel: [etag, size, mtime_ns]}, the last change seen
FETCH_THREADS = 8


def change_key() -> str:
    """A new key under `_changes/`: UTC time first, so a listing returns changes in order."""
    from datetime import UTC, datetime

    return f"{CHANGES}/{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:8]}.json"


def default_cache_dir(url: str, endpoint: str | None) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "spendlake" / "lakes"
    digest = hashlib.sha256(f"{url}|{endpoint or ''}".encode()).hexdigest()[:12]
    bucket = url[len("s3://"):].split("/", 1)[0]
    return base / f"{bucket}-{digest}"


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def write_local_batch(root: Path, m: Manifest, blobs: list[tuple[str, bytes]], doc: dict[str, Any]) -> None:
    """A committed batch into a local lake directory: its files first, then its manifest (in the
    local lake's naming, with no temps), so a local reader sees it whole or not at all."""
    for rel, data in blobs:
        _write_atomic(root / rel, data)
    local = {**doc, "temps": []}
    _write_atomic(root / MANIFESTS / m.stream / str(m.partition) / manifest_file(m), json.dumps(local).encode())


class _Progress:
    """A line every few seconds while a long pull runs (the first pull of a large lake)."""

    EVERY_S = 5.0

    def __init__(self, total: int, url: str) -> None:
        self.total, self.url = total, url
        self.done = self.bytes = 0
        self.t0 = self.last = time.monotonic()

    def add(self, size: int) -> None:
        self.done += 1
        self.bytes += size
        now = time.monotonic()
        if now - self.last >= self.EVERY_S and self.done < self.total:
            self.last = now
            log.info("fetching %s into its mirror: %d of %d files, %.0f MB, %.0f MB/s", self.url, self.done,
                     self.total, self.bytes / 1e6, self.bytes / 1e6 / (now - self.t0))  # fmt: skip


class Mirror:
    def __init__(self, store: ObjectStore, root: Path) -> None:
        self.store = store
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        for d in ("events", "dead_letter", MANIFESTS):
            (root / d).mkdir(exist_ok=True)
        self._state: dict[str, Any] = self._load_state()

    # --- pulling -------------------------------------------------------------------------------

    def pull(self, published: bool = True) -> int:
        """Bring the mirror up to the lake: new batches, replaced files, and (with `published`)
        the published folders. Returns how many objects were fetched."""
        fetched = self._pull_batches()
        fetched += self._pull_changes()
        if published:
            fetched += self._pull_published()
        self._save_state()
        return fetched

    def _pull_batches(self) -> int:
        todo: list[str] = []
        for stream in self.store.folders(f"{MANIFESTS}/"):
            for part in self.store.folders(f"{MANIFESTS}/{stream}/"):
                prefix = f"{MANIFESTS}/{stream}/{part}/"
                found = [e.rel for e in self.store.list(prefix, self._state.get("after", {}).get(prefix))]
                if found:
                    self._state.setdefault("after", {})[prefix] = found[-1]
                have = self._local_firsts(prefix)
                todo += [rel for rel in found if rel.rsplit("/", 1)[1].split(".")[0] not in have]
        if not todo:
            return 0
        with ThreadPoolExecutor(FETCH_THREADS) as pool:
            docs = [json.loads(b) for b in pool.map(self._get_required, todo)]
            files = [rel for d in docs for rel in d["files"] if not (self.root / rel).exists()]
            progress = _Progress(len(files), self.store.where.url)
            missing = set()
            for rel, size in zip(files, pool.map(self._fetch, files)):  # each task writes its file: memory stays flat
                if size < 0:
                    missing.add(rel)
                progress.add(max(size, 0))
        if missing:  # retention dropped them since the manifest was read: read it again
            for i, (key, d) in enumerate(zip(todo, docs)):
                if missing & set(d["files"]):
                    docs[i] = d = json.loads(self._get_required(key))
                    still = missing & set(d["files"])
                    if still:
                        raise FileNotFoundError(f"{self.store.where.url}/{sorted(still)[0]} is named by a "
                                                f"manifest but does not exist")  # fmt: skip
        for d in docs:  # manifests after their files: a local reader sees a batch whole or not at all
            write_local_batch(self.root, manifest_from_doc(d), [], d)
        return len(todo) + len(files)

    def _local_firsts(self, prefix: str) -> set[str]:
        """The first offsets (zero-padded) of the batches the mirror holds of one partition
        (serve copies its own batches there as it commits them)."""
        try:
            return {name.split("-", 1)[0] for name in os.listdir(self.root / prefix) if name.endswith(".json")}
        except FileNotFoundError:
            return set()

    def _fetch(self, rel: str) -> int:
        """Fetch one file into the mirror; its size, or -1 when the store no longer has it."""
        data = self.store.get(rel)
        if data is None:
            return -1
        _write_atomic(self.root / rel, data)
        return len(data)

    def _pull_changes(self) -> int:
        """Apply what `reprice` and retention recorded: re-fetch the files reprice replaced,
        delete the copies of the files retention removed."""
        n = 0
        # every record, applied once each: keys are by time, and another host's clock may be behind
        applied = set(self._state.setdefault("changes", []))
        for e in self.store.list(f"{CHANGES}/"):
            if e.rel in applied:
                continue
            doc = json.loads(self._get_required(e.rel))
            for rel in doc.get("replaced", []):
                if (self.root / rel).exists():
                    data = self.store.get(rel)
                    if data is not None:  # else removed since: a later change says so
                        _write_atomic(self.root / rel, data)
                        n += 1
            for rel in doc.get("removed", []):
                (self.root / rel).unlink(missing_ok=True)
            self._state["changes"].append(e.rel)
        return n

    def _pull_published(self) -> int:
        known: dict[str, list[Any]] = self._state.setdefault("files", {})
        n = 0
        for top in PUBLISHED:
            for e in self.store.list(f"{top}/"):
                path = self.root / e.rel
                rec = known.get(e.rel)
                if path.exists():
                    st = path.stat()
                    if rec is None or [st.st_size, st.st_mtime_ns] != rec[1:]:
                        continue  # this host wrote it since: ours is newer
                    if rec[0] == e.etag:
                        continue
                data = self.store.get(e.rel)
                if data is None:
                    continue  # replaced or removed meanwhile
                _write_atomic(path, data)
                st = path.stat()
                known[e.rel] = [e.etag, st.st_size, st.st_mtime_ns]
                n += 1
        return n

    def _get_required(self, rel: str) -> bytes:
        data = self.store.get(rel)
        if data is None:
            raise FileNotFoundError(f"{self.store.where.url}/{rel} is named by a manifest but does not exist")
        return data

    # --- pushing -------------------------------------------------------------------------------

    def push(self, tops: tuple[str, ...] = PUBLISHED) -> int:
        """Upload what this host wrote under the published folders since the last push or pull,
        and remove from the store what this host pushed and has since deleted."""
        known: dict[str, list[Any]] = self._state.setdefault("files", {})
        n = 0
        for top in tops:
            base = self.root / top
            seen = set()
            # alerts.parquet last: a crash between two PUTs may leave deliveries newer than
            # alerts, never an alert without its deliveries (alerting/engine.py publishes so too)
            for path in sorted(base.rglob("*"), key=lambda p: (p.name == "alerts.parquet", p)) if base.is_dir() else []:
                if not path.is_file() or path.name.startswith("."):
                    continue
                rel = path.relative_to(self.root).as_posix()
                seen.add(rel)
                st = path.stat()
                rec = known.get(rel)
                if rec is not None and rec[1:] == [st.st_size, st.st_mtime_ns]:
                    continue
                etag = self.store.put(rel, path.read_bytes())
                known[rel] = [etag, st.st_size, st.st_mtime_ns]
                n += 1
            gone = [rel for rel in known if rel.startswith(top + "/") and rel not in seen]
            if gone:
                self.store.delete(gone)
                for rel in gone:
                    del known[rel]
        self._save_state()
        return n

    def record_replaced(self, rels: list[str]) -> None:
        """Upload files replaced in place (reprice) and record them in `_changes/`, so every
        other mirror fetches them again."""
        if not rels:
            return
        for rel in rels:
            self.store.put(rel, (self.root / rel).read_bytes())
        self.store.put(change_key(), json.dumps({"replaced": sorted(rels)}).encode())

    # --- state ---------------------------------------------------------------------------------

    def _load_state(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.root / STATE).read_bytes()))
        except (FileNotFoundError, ValueError):
            return {}

    def _save_state(self) -> None:
        _write_atomic(self.root / STATE, json.dumps(self._state).encode())
