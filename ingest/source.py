"""The file source: JSONL files, globs, gzip and stdin through the same decode → price → write path.

A file is its own stream, named by the digest of its bytes (`file-<sha256[:16]>`), partition 0,
with line numbers as offsets. Ingesting the same content again, under any name, therefore finds
the lake already holding those lines and adds nothing; a file that grew (an appended log) gets a
new digest and is a new stream — use Kafka for logs that grow. Stdin is spooled to a temporary
file first so that it gets a digest like any file.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import logging
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from ingest.errors import SpendlakeError
from ingest.pipeline import Pipeline

log = logging.getLogger("spendlake.ingest")

GZIP_MAGIC = b"\x1f\x8b"


class SourceNotFound(SpendlakeError):
    pass


def expand(spec: str) -> list[Path]:
    """A path, a directory (its *.jsonl and *.jsonl.gz), or a glob → the files, sorted."""
    if spec == "-":
        return [Path("-")]
    p = Path(spec)
    if p.is_dir():
        found = sorted([*p.glob("*.jsonl"), *p.glob("*.jsonl.gz"), *p.glob("*.json")])
    elif p.exists():
        found = [p]
    else:
        found = sorted(Path(x) for x in glob.glob(spec, recursive=True))
    if not found:
        raise SourceNotFound(f"--source: no file matches {spec!r}")
    return found


def _open(path: Path) -> BinaryIO:
    with open(path, "rb") as fh:
        gz = fh.read(2) == GZIP_MAGIC
    return gzip.open(path, "rb") if gz else open(path, "rb")  # type: ignore[return-value]


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with _open(path) as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _lines(fh: BinaryIO) -> Iterator[bytes]:
    for line in fh:
        yield line.rstrip(b"\r\n")


def ingest_files(
    specs: list[str],
    pipeline: Pipeline,
    *,
    stdin: BinaryIO | None = None,
    progress: Callable[[Pipeline, float], None] | None = None,
    clock: Callable[[], float] | None = None,
) -> int:
    """Ingest every file named by `specs`; returns how many lines were new to the lake."""
    pipeline.lake.recover()
    new = 0
    for spec in specs:
        for path in expand(spec):
            if str(path) == "-":
                new += _ingest_stdin(stdin or sys.stdin.buffer, pipeline, progress, clock)
            else:
                new += _ingest_one(path, path.name, pipeline, progress, clock)
    return new


def _ingest_stdin(
    stdin: BinaryIO,
    pipeline: Pipeline,
    progress: Callable[[Pipeline, float], None] | None,
    clock: Callable[[], float] | None,
) -> int:
    with tempfile.NamedTemporaryFile(prefix="spendlake-stdin-", suffix=".jsonl") as spool:
        shutil.copyfileobj(stdin, spool, 1 << 20)
        spool.flush()
        return _ingest_one(Path(spool.name), "stdin", pipeline, progress, clock)


def _ingest_one(
    path: Path,
    label: str,
    pipeline: Pipeline,
    progress: Callable[[Pipeline, float], None] | None,
    clock: Callable[[], float] | None,
) -> int:
    stream = f"file-{digest(path)}"
    start = pipeline.lake.next_offset(stream, 0) or 1
    if start > 1:
        log.info("%s: the lake already holds lines 1..%d of this content", label, start - 1)
    topic = f"file:{label}"
    new = 0
    add = pipeline.add
    with _open(path) as fh:
        for lineno, line in enumerate(_lines(fh), start=1):
            if lineno < start or not line.strip():
                continue  # held already, or a blank line (not a record)
            add(stream, topic, 0, lineno, None, line)
            new += 1
            if pipeline.should_flush():
                pipeline.flush()
                if progress is not None and clock is not None:
                    progress(pipeline, clock())
    pipeline.flush()
    if progress is not None and clock is not None:
        progress(pipeline, clock())
    return new
