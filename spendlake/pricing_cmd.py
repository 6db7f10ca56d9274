"""`spendlake pricing import|unpriced` and `spendlake reprice`, and which catalog a command uses.

Catalog specs (``[pricing] catalog``, ``--catalog``):
- ``auto`` (the default): the LiteLLM file imported into the lake with ``pricing import``, over
  the built-in catalog (models the file lacks keep their built-in prices); the built-in catalog
  alone when nothing was imported.
- ``builtin``: the built-in catalog only.
- a path: that LiteLLM-format file alone.

The imported file lives at ``<lake>/_catalog/litellm.json``, with ``import.json`` beside it
(where it came from, its digest, when, how many entries and problems). Running processes keep
the catalog they started with; restart ``serve`` after an import and run ``reprice`` for the
days the new prices should cover.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pricing import Catalog, CatalogError, load_catalog

LOCAL_DIR = "_catalog"
LOCAL_FILE = "litellm.json"
RECORD_FILE = "import.json"
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024


def resolve_catalog(spec: str, lake: str | os.PathLike[str] | None) -> Catalog:
    """The catalog a spec names (see module docstring). Raises CatalogError."""
    if spec == "builtin":
        return Catalog.builtin()
    if spec == "auto":
        local = Path(lake) / LOCAL_DIR / LOCAL_FILE if lake is not None else None
        if local is None or not local.exists():
            return Catalog.builtin()
        return load_catalog(str(local)).over(Catalog.builtin())
    return load_catalog(spec)


def _safe_source(source: str) -> str:
    """A URL without credentials or query string (either may hold a token) for records/logs."""
    parts = urlsplit(source)
    if parts.scheme not in ("http", "https"):
        return source
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _fetch(source: str) -> bytes:
    if urlsplit(source).scheme in ("http", "https"):
        import requests

        shown = _safe_source(source)
        try:
            with requests.get(source, timeout=(10, 120), stream=True) as resp:
                if resp.status_code != 200:
                    raise CatalogError(f"{shown}: HTTP {resp.status_code} {resp.reason}")
                body = resp.raw.read(MAX_DOWNLOAD_BYTES + 1, decode_content=True)
        except requests.RequestException as exc:
            raise CatalogError(f"{shown}: cannot download: {type(exc).__name__}") from None
        if len(body) > MAX_DOWNLOAD_BYTES:
            raise CatalogError(f"{shown}: larger than {MAX_DOWNLOAD_BYTES // 2**20} MiB; not a price file")
        return body
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise CatalogError(f"{source}: cannot read: {exc.strerror or exc}") from None


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _changes(old: Catalog | None, new: Catalog) -> tuple[int, int, int]:
    """(added, changed, removed) models between two imports."""
    if old is None:
        return len({(e.provider, e.model) for e in new.entries()}), 0, 0
    before = {(e.provider, e.model): e.prices() for e in old.entries()}
    after = {(e.provider, e.model): e.prices() for e in new.entries()}
    added = len(after.keys() - before.keys())
    removed = len(before.keys() - after.keys())
    changed = sum(1 for k in after.keys() & before.keys() if after[k] != before[k])
    return added, changed, removed


def cmd_import(source: str, lake: str, out: Any = sys.stdout) -> int:
    """Load a LiteLLM price file or URL into the lake's local catalog. Returns an exit code."""
    body = _fetch(source)
    folder = Path(lake) / LOCAL_DIR
    folder.mkdir(parents=True, exist_ok=True)
    fd, staged = tempfile.mkstemp(dir=folder, prefix=".incoming.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        catalog, problems = Catalog.from_litellm(staged)
    finally:
        Path(staged).unlink(missing_ok=True)
    shown = _safe_source(source)
    if not len(catalog):
        raise CatalogError(f"{shown}: no usable price entries; the local catalog is unchanged")
    target = folder / LOCAL_FILE
    old = Catalog.from_litellm(target)[0] if target.exists() else None
    added, changed, removed = _changes(old, catalog)
    _write_atomic(target, body)
    record = {
        "source": shown,
        "sha256": hashlib.sha256(body).hexdigest(),
        "imported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "entries": len(catalog),
        "problems": problems,
    }
    _write_atomic(folder / RECORD_FILE, json.dumps(record, indent=2).encode())
    out.write(
        f"imported {len(catalog):,} price entries from {shown} into {target}\n"
        f"  models: {added:,} new, {changed:,} with new prices, {removed:,} gone since the last import\n"
    )
    if problems:
        out.write(f"  {len(problems)} entries left out (those models stay unpriced unless the built-in catalog knows them):\n")
        for p in problems:
            out.write(f"    - {p}\n")
    if changed or removed:
        out.write("  past events keep their prices; run `spendlake reprice --lake DIR --since DATE` to apply the new ones\n")
    return 0


UNPRICED_SQL = """
with rows as (
    select provider, model, cost_source, event_id, input_tokens, output_tokens,
           reported_cost_usd, "timestamp"
    from read_parquet(?, hive_partitioning = true)
    where cost_source in ('unpriced', 'reported') and "timestamp" >= ?
    qualify row_number() over (partition by event_id order by ingested_at, source_offset) = 1
)
select provider, model,
       count(*) as events,
       count(*) filter (where cost_source = 'reported') as with_reported_cost,
       sum(input_tokens)::bigint as input_tokens,
       sum(output_tokens)::bigint as output_tokens,
       round(sum(reported_cost_usd), 6) as reported_cost_usd,
       min("timestamp") as first_seen,
       max("timestamp") as last_seen
from rows group by provider, model order by events desc, provider, model
"""


def unpriced_scope(since: date | None) -> str:
    """What ``pricing unpriced`` counted, in words: "all time" or "since 2026-11-01 (UTC)"."""
    return "all time" if since is None else f"since {since.isoformat()} (UTC)"


def cmd_unpriced(lake: str, since: date | None, fmt: str, out: Any = sys.stdout) -> int:
    """Models with usage but no catalog price: how much, since when. Exit 0 either way.

    Counted: events (one per request; a resent ``event_id`` once) whose cost did not come from
    the catalog or an override: ``cost_source`` ``unpriced`` (cost NULL) or ``reported`` (the
    emitter's figure), with event time on or after ``since`` (UTC midnight), or all time. The
    table says that scope in a title line and in its summary; JSON is the bare list of rows.
    """
    import duckdb

    files = Path(lake) / "events"
    if not any(files.glob("date=*/*.parquet")):
        out.write("[]\n" if fmt == "json" else f"no events in {files}\n")
        return 0
    start = datetime.combine(since or date(1970, 1, 1), datetime.min.time(), UTC)
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    cur = con.execute(UNPRICED_SQL, [str(files / "date=*" / "*.parquet"), start])
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, r)) for r in cur.fetchall()]
    for r in rows:
        for k in ("first_seen", "last_seen"):
            r[k] = r[k].astimezone(UTC).isoformat().replace("+00:00", "Z")
    if fmt == "json":
        out.write(json.dumps(rows, indent=2) + "\n")
        return 0
    scope = unpriced_scope(since)
    if not rows:
        out.write(f"no events without a catalog price, {scope}\n")
        return 0
    out.write(f"Events without a catalog price, {scope}; a resent event_id counts once:\n")
    head = ("provider", "model", "events", "with_reported_cost", "input_tokens", "output_tokens", "first_seen",
            "last_seen")  # fmt: skip
    cells = [[str(r[h]) if not isinstance(r[h], int) else f"{r[h]:,}" for h in head] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    out.write("  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip() + "\n")
    for c in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip() + "\n")
    total = sum(r["events"] for r in rows)
    out.write(
        f"{total:,} event{'s' if total != 1 else ''} of {len(rows)} model{'s' if len(rows) != 1 else ''} "
        f"without a catalog price, {scope}; their cost is NULL unless the emitter sent cost_usd.\n"
        "Fix: `spendlake pricing import FILE|URL`, or explicit prices in "
        "[[pricing.overrides]]; then `spendlake reprice`.\n"
    )
    return 0


def cmd_reprice(lake: str, since: date, until: date | None, price: Any, quiet: bool) -> int:
    from ingest.reprice import reprice

    bar = None if quiet else ProgressBar("repricing")
    stats = reprice(lake, since, until, price, progress=bar)
    if bar is not None:
        bar.done()
    sys.stderr.write(
        f"spendlake: repriced {stats.files_seen:,} files ({stats.rows:,} events): "
        f"{stats.files_rewritten:,} rewritten, {stats.files_unchanged:,} unchanged, "
        f"{stats.rows_changed:,} events changed; cost ${stats.cost_before_usd:,.6f} -> ${stats.cost_after_usd:,.6f}\n"
    )
    return 0


class ProgressBar:
    """``label [#####-----] k/n files`` on stderr, redrawn in place on a terminal."""

    def __init__(self, label: str, width: int = 30, unit: str = "files") -> None:
        self.label, self.width, self.unit = label, width, unit
        self.tty = sys.stderr.isatty()
        self.last_pct = -1

    def __call__(self, done: int, total: int) -> None:
        pct = 100 * done // max(total, 1)
        if not self.tty and pct // 10 == self.last_pct // 10 and done != total:
            return  # not a terminal: a line per 10%, not per file
        self.last_pct = pct
        filled = self.width * done // max(total, 1)
        line = f"spendlake: {self.label} [{'#' * filled}{'-' * (self.width - filled)}] {done}/{total} {self.unit}"
        sys.stderr.write(("\r" + line) if self.tty else (line + "\n"))
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
