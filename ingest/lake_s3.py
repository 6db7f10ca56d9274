"""The lake on object storage (contract 2 without locks or rename).

Layout under `s3://bucket/prefix/`, the same as a local lake's, except for manifest names:

    events/date=YYYY-MM-DD/<stream>+<partition>+<first>+<last>.parquet    written first
    dead_letter/date=YYYY-MM-DD/<stream>+<partition>+<first>+<last>.parquet
    _manifests/<stream>/<partition>/<first>.json                          the commit point

The rules:

1. Data objects keep their deterministic names and are PUT at their final keys. Until a
   manifest names them they are not part of the lake: readers follow manifests, never listings.
2. The manifest is *created* with `If-None-Match: *`; that creation is the commit point. It is
   keyed by the batch's first offset alone, so two writers of one partition that start a batch
   at the same offset (a zombie after a rebalance, a restarted worker racing its predecessor)
   race for one key and the store lets exactly one win. The loser's batch raises LakeConflict,
   as on a local lake. Why the first offset is enough: every writer starts at what the lake
   holds + 1 (seek-from-lake) and batches are contiguous, so a batch that overlapped a
   committed one would have to start where that one started.
3. A refused create is read back: if the manifest there carries this attempt's token, the
   create had succeeded and only its answer was lost (the store stopped mid-commit); the batch
   is committed. Otherwise the loser deletes its data objects, except those the winner's
   manifest names (same name, same offsets, same events).
4. A crash between the data PUTs and the manifest leaves orphans. The first commit of a
   partition after a seek lists that partition's objects in the date folders it writes and
   deletes the ones at or after the offset it started from that no manifest names; names past
   the committed range are remembered and deleted once a later commit passes them, so a live
   writer's in-flight objects are never touched. Steady state: three requests per batch and
   partition (events, dead letters, manifest), more only when a batch spans several dates.
5. The high water per partition is cached after the first LIST; a stale cache is harmless,
   since the store itself refuses an overlapping manifest.

`local_copy`: a local lake directory (serve's mirror, ingest/mirror.py) that also receives each
committed batch's files and manifest, so serve rolls up what it landed without downloading it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ingest.errors import LakeConflict, PipelineFailure
from ingest.lake import (MANIFESTS, Manifest, _split_by_date, data_name, manifest_doc, manifest_from_doc,
                         write_options)
from ingest.mirror import write_local_batch
from ingest.objectstore import ObjectStore, StoreUnavailable

log = logging.getLogger("spendlake.lake")

OUTAGE_RETRY_MAX_S = 10.0


def manifest_key(stream: str, partition: int, first: int) -> str:
    return f"{MANIFESTS}/{stream}/{partition}/{first:020d}.json"


def parquet_bytes(table: pa.Table, *, dead_letters: bool = False) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **write_options(table.schema, dead_letters=dead_letters))
    return bytes(sink.getvalue().to_pybytes())


@dataclass
class _Partition:
    last_key: str | None = None  # the highest manifest key seen (relative)
    held: int | None = None  # its last offset
    swept_from: int | None = None  # the seek point whose orphans are still to be swept
    pending: dict[str, int] = field(default_factory=dict)  # orphan candidates past the committed range: name → first
    committed: set[str] = field(default_factory=set)  # data names this process committed since the seek


class S3Lake:
    """A lake on S3 or an S3-compatible store. Safe for many processes on many hosts at once."""

    def __init__(self, store: ObjectStore, local_copy: Path | None = None) -> None:
        self.store = store
        self.url = store.where.url
        self.root = self.url  # what messages name the lake by (a local Lake's root is its directory)
        self.local_copy = local_copy
        self._parts: dict[tuple[str, int], _Partition] = {}
        self._lock = threading.Lock()
        self._outage_since: float | None = None
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="lake-put")

    # --- what the lake holds -------------------------------------------------------------

    def next_offset(self, stream: str, partition: int) -> int | None:
        """Last committed offset + 1 (from the manifests), or None when the lake holds nothing
        of that partition. Also the seek point from which orphans are swept."""
        st = self._part(stream, partition)
        self._refresh(stream, partition, st)
        st.swept_from = None if st.held is None else st.held + 1
        st.pending.clear()
        st.committed.clear()
        return None if st.held is None else st.held + 1

    def manifests(self, stream: str, partition: int) -> list[Manifest]:
        out = []
        for e in self._retrying(lambda: list(self.store.list(f"{MANIFESTS}/{stream}/{partition}/"))):
            doc = self._retrying(lambda e=e: self.store.get(e.rel))
            if doc is not None:
                out.append(manifest_from_doc(json.loads(doc)))
        return sorted(out, key=lambda m: m.first)

    def streams(self) -> Iterator[tuple[str, int]]:
        for s in sorted(self._retrying(lambda: self.store.folders(f"{MANIFESTS}/"))):
            parts = self._retrying(lambda s=s: self.store.folders(f"{MANIFESTS}/{s}/"))
            for p in sorted(parts, key=int):
                yield s, int(p)

    def recover(self) -> int:
        """Nothing to roll forward on object storage (data objects are written at their final
        names; the manifest alone decides). Orphans are swept by the next commit."""
        return 0

    # --- writing a batch -------------------------------------------------------------------

    def commit(self, stream: str, partition: int, first: int, last: int, events: pa.Table,
               events_date: pa.Array | None, dead: pa.Table | None, dead_date: str | None) -> Manifest:  # fmt: skip
        """Make one batch visible atomically; raise LakeConflict if any of its offsets is held."""
        name = data_name(stream, partition, first, last)
        blobs: list[tuple[str, bytes]] = []
        if events.num_rows:
            assert events_date is not None
            for date, part in _split_by_date(events, events_date):
                blobs.append((f"events/date={date}/{name}", parquet_bytes(part)))
        if dead is not None and dead.num_rows:
            blobs.append((f"dead_letter/date={dead_date}/{name}", parquet_bytes(dead, dead_letters=True)))
        return self.commit_objects(stream, partition, first, last, blobs, events.num_rows,
                                   0 if dead is None else dead.num_rows)  # fmt: skip

    def commit_objects(self, stream: str, partition: int, first: int, last: int, blobs: list[tuple[str, bytes]],
                       rows: int, dead_letters: int) -> Manifest:  # fmt: skip
        """`commit` of a batch already encoded: (key, Parquet bytes) of each of its data objects
        (bench/rollup.py commits a local lake's files, byte for byte, through it)."""
        if first > last:
            raise ValueError(f"empty offset range {first}..{last}")
        st = self._part(stream, partition)
        if st.held is not None and first <= st.held:
            raise LakeConflict(f"{stream}[{partition}] offsets {first}..{last}: the lake already holds up to "
                               f"{st.held}; this batch is stale and is discarded")  # fmt: skip
        manifest = Manifest(stream, partition, first, last, tuple(r for r, _ in blobs), rows, dead_letters)
        token = uuid.uuid4().hex
        doc = manifest_doc(manifest, attempt=token)
        body = json.dumps(doc).encode()

        def put(blob: tuple[str, bytes]) -> None:
            self._retrying(lambda: self.store.put(*blob))

        if len(blobs) > 1:  # several dates, or dead letters: the data PUTs go at once
            list(self._pool.map(put, blobs))
        else:
            for blob in blobs:
                put(blob)
        key = manifest_key(stream, partition, first)
        created = self._retrying(lambda: self.store.create(key, body))
        if not created:
            theirs = self._retrying(lambda: self.store.get(key))
            other = json.loads(theirs) if theirs is not None else {}
            if other.get("attempt") != token:
                keep = set(other.get("files", ()))
                mine = [rel for rel, _ in blobs if rel not in keep]
                if mine:
                    self._retrying(lambda: self.store.delete(mine))
                st.held = max(st.held or -1, int(other.get("last", last)))
                raise LakeConflict(f"{stream}[{partition}] offsets {first}..{last}: another writer committed "
                                   f"offsets {other.get('first')}..{other.get('last')} first; this batch is "
                                   f"discarded")  # fmt: skip
            log.info("%s[%d]: the manifest of %d..%d was created before the store stopped answering",
                     stream, partition, first, last)  # fmt: skip
        st.held, st.last_key = last, key
        st.committed.update(rel.rsplit("/", 1)[1] for rel in manifest.files)
        self._sweep(stream, partition, st, manifest)
        if self.local_copy is not None:
            write_local_batch(self.local_copy, manifest, blobs, doc)
        return manifest

    # --- internals -------------------------------------------------------------------------

    def _part(self, stream: str, partition: int) -> _Partition:
        with self._lock:
            return self._parts.setdefault((stream, partition), _Partition())

    def _refresh(self, stream: str, partition: int, st: _Partition) -> None:
        prefix = f"{MANIFESTS}/{stream}/{partition}/"
        keys = [e.rel for e in self._retrying(lambda: list(self.store.list(prefix, st.last_key)))]
        if not keys:
            return
        last_key = max(keys)
        doc = self._retrying(lambda: self.store.get(last_key))
        if doc is None:  # pragma: no cover - manifests are never deleted
            raise PipelineFailure(f"{self.url}: manifest {last_key} was listed but cannot be read")
        st.last_key, st.held = last_key, int(json.loads(doc)["last"])

    def _sweep(self, stream: str, partition: int, st: _Partition, m: Manifest) -> None:
        """Delete orphaned data objects of this partition (rule 4 of the module docstring)."""
        doomed = [n for n, f in st.pending.items() if f <= m.last and n.rsplit("/", 1)[1] not in st.committed]
        for n in [n for n, f in st.pending.items() if f <= m.last]:
            del st.pending[n]
        if st.swept_from is not None:
            start = st.swept_from
            st.swept_from = None
            head = f"{stream}+{partition}+"
            folders = {rel.rsplit("/", 1)[0] for rel in m.files}
            for folder in sorted(folders):
                after = f"{folder}/{head}{start - 1:020d}+~" if start > 0 else None
                for e in self._retrying(lambda folder=folder, after=after: list(self.store.list(f"{folder}/{head}", after))):
                    fname = e.rel.rsplit("/", 1)[1]
                    try:
                        ofirst = int(fname[len(head):].split("+")[0])
                    except ValueError:
                        continue
                    if fname in st.committed:
                        continue
                    if ofirst <= m.last:
                        doomed.append(e.rel)
                    else:
                        st.pending[e.rel] = ofirst
        if doomed:
            self._retrying(lambda: self.store.delete(sorted(set(doomed))))
            log.info("%s[%d]: deleted %d orphaned data object(s) of an earlier, uncommitted attempt",
                     stream, partition, len(set(doomed)))  # fmt: skip

    def _retrying(self, fn: Any) -> Any:
        """Run a store call; while the store does not answer, wait (with a warning once) and try
        again: an outage of the store, like one of Kafka, pauses ingest, it does not end it."""
        delay = 0.2
        while True:
            try:
                out = fn()
            except StoreUnavailable as exc:
                if self._outage_since is None:
                    self._outage_since = time.monotonic()
                    log.warning("the object store does not answer (%s); waiting for it", exc)
                time.sleep(delay)
                delay = min(delay * 2, OUTAGE_RETRY_MAX_S)
                continue
            if self._outage_since is not None:
                log.warning("the object store answers again after %.0f s", time.monotonic() - self._outage_since)
                self._outage_since = None
            return out
