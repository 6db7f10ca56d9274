"""Retention: drop the raw data of whole UTC days before a cutoff, on a local or an object-store lake.

Events files go by event date (`events/date=…/`), dead letters by the day they failed
(`dead_letter/date=…/`). What a reader follows must never name what is gone, so each batch's
manifest is rewritten first, without the dropped files, and only then are the files deleted:

- Local lake: per partition, under the partition lock `Lake.commit` takes, the manifests are
  rewritten (temp, fsync, rename) and the files they no longer name are unlinked; date folders
  left empty are removed. A batch committed meanwhile (a late event for an old day) keeps its
  file: it was not named when the manifests were read, or it waits for the lock.
- Object store: each manifest naming old files is replaced (a plain PUT of the same key, with its
  offsets, so the high water and the commit point are untouched); the dropped names are recorded
  under `_changes/` (mirrors delete their copies at their next pull); then the objects are
  deleted. A reader that follows a manifest sees a batch with or without its old files, never a
  name without its object for long: a mirror that meets one reads the manifest again.

A crash midway leaves manifests already rewritten and files not yet deleted, which a second run
deletes. Rollups keep the dropped days (a file that disappears is not subtracted).
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ingest.lake import MANIFESTS, Lake, _fsync_dir, write_json_durably

KINDS = ("events", "dead_letter")


@dataclass
class RetentionStats:
    manifests: int = 0  # rewritten
    files: int = 0  # deleted
    days: set[str] = field(default_factory=set)


def is_old(rel: str, before: datetime.date) -> bool:
    """Whether a lake file (`events/date=YYYY-MM-DD/name`) is of a day before `before`."""
    parts = rel.split("/")
    if len(parts) != 3 or parts[0] not in KINDS or not parts[1].startswith("date="):
        return False
    try:
        return datetime.date.fromisoformat(parts[1][5:]) < before
    except ValueError:
        return False


def _trim(doc: dict[str, Any], before: datetime.date) -> list[str]:
    """Drop the old files from a manifest document (and their staged names, aligned with them);
    returns the dropped names."""
    files = list(doc.get("files", []))
    keep = [i for i, f in enumerate(files) if not is_old(f, before)]
    if len(keep) == len(files):
        return []
    temps = doc.get("temps")
    doc["files"] = [files[i] for i in keep]
    if isinstance(temps, list) and len(temps) == len(files):
        doc["temps"] = [temps[i] for i in keep]
    return [f for i, f in enumerate(files) if i not in set(keep)]


def prune_local(root: str | os.PathLike[str], before: datetime.date, dry_run: bool = False) -> RetentionStats:
    lake = Lake(root)
    stats = RetentionStats()
    for stream, partition in lake.streams():
        mdir = lake.manifest_dir / stream / str(partition)
        with lake.partition_lock(stream, partition):
            for path in sorted(mdir.glob("*.json")):
                doc = json.loads(path.read_bytes())
                dropped = _trim(doc, before)
                if not dropped:
                    continue
                stats.manifests += 1
                stats.days.update(f.split("/")[1][5:] for f in dropped)
                if dry_run:
                    stats.files += len(dropped)
                    continue
                write_json_durably(path, doc)
                for rel in dropped:
                    f = lake.root / rel
                    if f.exists():
                        f.unlink()
                        stats.files += 1
    if not dry_run:
        for kind in KINDS:
            for d in sorted((lake.root / kind).glob("date=*")):
                if is_old(f"{kind}/{d.name}/x", before):
                    # Only when empty: a file some manifest still names stays, and so does a
                    # staged temp (a live writer's late event may be between staging it and its
                    # manifest; Lake.recover sweeps those of dead writers once they are old).
                    try:
                        d.rmdir()
                    except OSError:
                        pass
            _fsync_dir(lake.root / kind)
    return stats


def prune_s3(store: Any, before: datetime.date, dry_run: bool = False,
             progress: Callable[[int, int], None] | None = None) -> RetentionStats:  # fmt: skip
    """`store` is the lake's ingest.objectstore.ObjectStore."""
    from ingest.mirror import change_key

    stats = RetentionStats()
    keys = [e.rel for e in store.list(f"{MANIFESTS}/")]
    removed: list[str] = []

    def one(key: str) -> list[str]:
        body = store.get(key)
        if body is None:
            return []
        doc = json.loads(body)
        dropped = _trim(doc, before)
        if dropped and not dry_run:
            store.put(key, json.dumps(doc).encode())
        return dropped

    with ThreadPoolExecutor(16) as pool:
        for i, dropped in enumerate(pool.map(one, keys), start=1):
            if dropped:
                stats.manifests += 1
                removed += dropped
            if progress is not None:
                progress(i, len(keys))
    stats.days.update(f.split("/")[1][5:] for f in removed)
    stats.files = len(removed)
    if removed and not dry_run:
        store.put(change_key(), json.dumps({"removed": sorted(removed)}).encode())
        store.delete(sorted(removed))
    return stats
