"""The S3 side of bench/ingest.py and bench/rollup.py: where their S3 lakes go, and what they read
back from them.

`BenchS3.own()` starts a SeaweedFS of the bench's own on 127.0.0.1:17333 (ingest/broker/s3-local.sh
through tests/s3server.py, data in /var/tmp/spendlake-bench-s3) and puts the AWS_* variables of it
in this process's environment, so the `spendlake` children it starts reach it too;
`BenchS3.existing("s3://bucket/prefix")` uses a store the AWS environment already points at
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...). Either way each run takes a fresh prefix under it and
deletes what it wrote there at the end (`close`).

Run as a script (`python bench/s3.py ingest ARGS`), it is `spendlake ARGS` that also prints when
its last manifest was created (`bench: last manifest at EPOCH`): a store stamps objects to the
second, too coarse for a run of a few seconds, and this is the instant a local lake's last
manifest mtime gives bench/ingest.py for a local lake.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):
    # run from a checkout, installed or not; and before bench/, whose ingest.py is not the package
    sys.path.insert(0, str(ROOT))

S3_PORT = 17333  # the bench's own server; it also takes 17334..17337 and 27333..27337
S3_HOME = Path("/var/tmp/spendlake-bench-s3")
LAST_MANIFEST = "bench: last manifest at "


@dataclass
class BenchS3:
    """Where one bench run's S3 lakes go: s3://BUCKET/BASE/<name>, one fresh prefix per run."""

    base: str  # s3://bucket/prefix of this run (nothing else writes under it)
    server: Any = None  # tests.s3server.S3Server when the bench started its own
    how: str = ""  # a line on where the store is, for the bench's header

    @classmethod
    def own(cls) -> BenchS3:
        from tests.s3server import S3Server

        server = S3Server(S3_PORT, S3_HOME)
        t = time.perf_counter()
        was_running = server.running()
        server.start()
        os.environ.update(server.env())
        how = "already running" if was_running else f"started in {time.perf_counter() - t:.1f} s"
        return cls(server.url(server.new_prefix()), server,
                   f"S3: own, {server.endpoint}, {how} ({server_banner(server.endpoint)})")  # fmt: skip

    @classmethod
    def existing(cls, url: str) -> BenchS3:
        from ingest.objectstore import S3Location, parse_lake

        where = parse_lake(url)
        if not isinstance(where, S3Location):
            raise ValueError(f"expected s3://BUCKET[/PREFIX], got {url!r}")
        base = f"{where.url}/bench-{uuid.uuid4().hex[:8]}"
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS"
        return cls(base, None, f"S3: {base} at {endpoint} (from the AWS environment)")

    def lake(self, name: str) -> str:
        return f"{self.base}/{name}"

    def close(self, keep_server: bool = False) -> None:
        """Delete what this run wrote; stop (and remove) our own server unless `keep_server`."""
        try:
            s = store(self.base)
            s.delete([e.rel for e in s.list("")])
        except Exception as exc:  # noqa: BLE001 - cleaning up must not hide the bench's own outcome
            print(f"bench: could not delete {self.base}: {exc}", file=sys.stderr)
        if self.server is not None and not keep_server:
            self.server.remove()


def server_banner(endpoint: str) -> str:
    """The store's Server header (e.g. "SeaweedFS 30GB 4.53"), for the record."""
    import urllib.request

    try:
        with urllib.request.urlopen(endpoint, timeout=5) as r:
            return str(r.headers.get("Server", "?"))
    except Exception as exc:  # noqa: BLE001 - an anonymous request is refused; the header is still there
        headers = getattr(exc, "headers", None)
        return str(headers.get("Server", "?")) if headers is not None else "?"


def store(url: str) -> Any:
    """An ObjectStore for s3://bucket/prefix (endpoint and credentials from the environment)."""
    from ingest.objectstore import ObjectStore, S3Location, parse_lake

    where = parse_lake(url)
    assert isinstance(where, S3Location), url
    return ObjectStore(where)


def lake_objects(url: str) -> dict[str, tuple[int, int]]:
    """(objects, bytes) under each top folder of an S3 lake (events, dead_letter, _manifests, ...)."""
    out: dict[str, tuple[int, int]] = {}
    for e in store(url).list(""):
        top = e.rel.split("/", 1)[0]
        n, b = out.get(top, (0, 0))
        out[top] = (n + 1, b + e.size)
    return out


def pull(url: str, root: Path) -> tuple[Any, int, float]:
    """A mirror of the S3 lake at `url` in `root` (ingest.mirror.Mirror), pulled: what every
    reader of an S3 lake reads. Returns (mirror, objects fetched, seconds)."""
    from ingest.mirror import Mirror

    mirror = Mirror(store(url), root)
    t = time.perf_counter()
    n = mirror.pull(published=False)
    return mirror, n, time.perf_counter() - t


def unnamed_objects(url: str, mirror_root: Path) -> int:
    """Data objects of the S3 lake that no manifest names (orphans of an uncommitted attempt):
    the mirror's local manifests list every named one."""
    named = set()
    for m in (mirror_root / "_manifests").glob("**/*.json"):
        named.update(json.loads(m.read_bytes())["files"])
    return sum(1 for e in store(url).list("") if e.rel.split("/", 1)[0] in ("events", "dead_letter")
               and e.rel not in named)  # fmt: skip


def commit_file(s: Any, local_root: Path, rel: str, stream: str, partition: int, first: int, last: int,
                rows: int) -> None:  # fmt: skip
    """Commit one local lake file to an S3 lake as a batch of its own, these very bytes, the way
    S3Lake commits one (ingest/lake_s3.py: the data object, then the manifest's conditional create)."""
    from ingest.lake_s3 import S3Lake

    S3Lake(s).commit_objects(stream, partition, first, last, [(rel, (local_root / rel).read_bytes())], rows, 0)


# --- what `spendlake ingest` says on its closing line ------------------------------------------

CLOSING = re.compile(r"spendlake: done \(.*?\): ([\d,]+) events landed in ([\d,]+) batches, ([\d,]+) dead letters")
REQUESTS = re.compile(r"\(([^()]*) requests to the store\)\s*$", re.M)


@dataclass
class Closing:
    events: int
    batches: int
    dead_letters: int
    requests: Counter[str]


def closing_line(log_text: str) -> Closing | None:
    """The totals and the store requests by kind of one `spendlake ingest`'s closing line."""
    m = CLOSING.search(log_text)
    if m is None:
        return None
    requests: Counter[str] = Counter()
    r = REQUESTS.search(log_text, m.start())
    if r is not None and r.group(1) != "no":
        for count, kind in re.findall(r"([\d,]+) ([A-Z]+)", r.group(1)):
            requests[kind] += int(count.replace(",", ""))
    events, batches, dead = (int(g.replace(",", "")) for g in m.groups())
    return Closing(events, batches, dead, requests)


def last_manifest_at(log_text: str) -> float | None:
    stamps = [float(line[len(LAST_MANIFEST):]) for line in log_text.splitlines() if line.startswith(LAST_MANIFEST)]
    return max(stamps) if stamps else None


def _spendlake_noting_commits(argv: list[str]) -> int:
    """`spendlake ARGV`, noting the wall-clock time each manifest creation returns (one
    time.time() per batch) and printing the last one on exit."""
    import atexit

    from ingest.objectstore import ObjectStore

    last: list[float] = []
    create = ObjectStore.create

    def noted(self: Any, rel: str, data: bytes) -> bool:
        ok = create(self, rel, data)
        if ok and rel.startswith("_manifests/"):
            last[:] = [time.time()]
        return ok

    ObjectStore.create = noted  # type: ignore[method-assign]
    atexit.register(lambda: last and sys.stderr.write(f"{LAST_MANIFEST}{last[0]:.6f}\n"))
    from spendlake.cli import main

    return main(argv)


if __name__ == "__main__":
    if sys.argv[1:2] != ["ingest"]:
        sys.exit("usage: python bench/s3.py ingest ARGS (spendlake ingest, noting when its last manifest was created)")
    raise SystemExit(_spendlake_noting_commits(sys.argv[1:]))
