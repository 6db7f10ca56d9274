"""Where the lake is: a local directory, or `s3://bucket/prefix` read through a local mirror.

Writers (`ingest`, the ingest inside `serve`) write an object-store lake directly
(ingest/lake_s3.py). Every other command works on a local lake directory: for an object-store
lake that is its mirror (ingest/mirror.py), pulled before the command runs; what a command
publishes (`_rollups/`, `_catalog/`, a reprice's replaced files and journal) is pushed after it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ingest.objectstore import ObjectStore, S3Location, parse_lake
from spendlake.settings import ConfigError

log = logging.getLogger("spendlake")


_STORES: dict[tuple[S3Location, str], ObjectStore] = {}


def store_of(cfg: Any) -> ObjectStore | None:
    """The object store of `[lake] path`, or None for a local lake; one per lake and process (a
    boto3 client costs ~0.15 s to build, and one client counts all the requests). A URL
    spendlake cannot write is a ConfigError (one line)."""
    try:
        where = parse_lake(cfg.get("lake", "path"))
    except ValueError as exc:
        raise ConfigError([str(exc)], "command line") from None
    if not isinstance(where, S3Location):
        return None
    endpoint = cfg.get("lake", "endpoint_url") or ""
    if (where, endpoint) not in _STORES:
        _STORES[(where, endpoint)] = ObjectStore(where, endpoint or None)
    return _STORES[(where, endpoint)]


def local_path(cfg: Any) -> str:
    where = parse_lake(cfg.get("lake", "path"))
    assert isinstance(where, str)
    return where


def mirror_of(cfg: Any, store: ObjectStore) -> Any:
    from ingest.mirror import Mirror, default_cache_dir

    root = Path(cfg.get("lake", "cache_dir") or default_cache_dir(store.where.url, store.endpoint))
    return Mirror(store, root)


def open_writer(cfg: Any, local_copy: Path | None = None) -> Any:
    """The lake a writer commits batches to: `Lake` on a local disk, `S3Lake` on a store."""
    store = store_of(cfg)
    if store is None:
        from ingest.lake import Lake

        return Lake(local_path(cfg))
    from ingest.lake_s3 import S3Lake

    return S3Lake(store, local_copy=local_copy)


def require_remote(store: ObjectStore) -> None:
    """A ConfigError (one line) unless the store's prefix holds a lake."""
    if not store.exists():
        raise ConfigError([f"[lake] path {store.where.url}: no lake there (the prefix holds nothing"
                           + (f" at {store.endpoint})" if store.endpoint else ")")], "command line")  # fmt: skip


def pull(cfg: Any, *, require: bool) -> Any:
    """For an object-store lake: its mirror, brought up to date (with a line on stderr when it
    fetched anything). None for a local lake."""
    store = store_of(cfg)
    if store is None:
        return None
    if require:
        require_remote(store)
    mirror = mirror_of(cfg, store)
    t0 = time.monotonic()
    n = mirror.pull()
    if n:
        log.info("fetched %d new object(s) of %s into its mirror %s in %.1f s", n, store.where.url, mirror.root,
                 time.monotonic() - t0)  # fmt: skip
    return mirror


def newest_reprice_journal(root: Path, since: float) -> list[str]:
    """The files the reprice journal written after `since` lists as rewritten."""
    import json

    out: list[str] = []
    d = root / "_reprice"
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        if p.stat().st_mtime >= since:
            out += json.loads(p.read_bytes()).get("files_rewritten", [])
    return out


def imported_catalog(cfg: Any) -> Any:
    """`[pricing] catalog = "auto"` for an object-store lake: the catalog `pricing import` pushed
    to its `_catalog/` over the builtin one, read from the store (a writer such as `ingest` has
    no mirror), or the builtin one when none was imported."""
    import tempfile

    from spendlake.pricing_cmd import LOCAL_DIR, LOCAL_FILE, resolve_catalog

    store = store_of(cfg)
    assert store is not None
    data = store.get(f"{LOCAL_DIR}/{LOCAL_FILE}")
    with tempfile.TemporaryDirectory(prefix="spendlake-catalog-") as folder:
        if data is not None:
            (Path(folder) / LOCAL_DIR).mkdir()
            (Path(folder) / LOCAL_DIR / LOCAL_FILE).write_bytes(data)
        return resolve_catalog("auto", folder)
