"""How fast `spendlake ingest` lands a Kafka topic in the lake, next to what Kafka itself allows.

Produces N canonical usage events (contract 1) with kcat, then reads the same topic five ways:
(a) a bare kafka-python poll loop with ingest's own fetch settings (the Python client's ceiling),
(b) kcat (librdkafka: the broker's ceiling on this machine), (c) `spendlake ingest` end to end with
the kafka-python client, (d) a bare confluent-kafka consume loop (librdkafka's Python ceiling), and
(e) `spendlake ingest` with the confluent client. Prints events/s, the ratios, peak RSS of (c) and
(e), lake vs raw JSON size (bytes per event, and per column from the Parquet footers), the targets,
checks each lake with DuckDB and checks that (e)'s lake holds exactly what (c)'s does.
`--bad-share` mixes bad records into the topic (they must land as dead letters); `--partitions`
with `--workers 1,2` runs (c) and (e) as that many worker processes of one consumer group.
`--s3` (a SeaweedFS of the bench's own on 127.0.0.1:17333) or `--lake s3://BUCKET/PREFIX` (a store
from the AWS environment) runs (c) and (e) a second time each, on the same topic, into a lake on S3:
events/s and the ratio to the local lake, batches, PUTs per batch, the requests by kind, bytes per
event in the store, and a check that a mirror of the S3 lake holds exactly what the local lake holds.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BROKER = ["bash", str(ROOT / "ingest" / "broker" / "kafka-local.sh")]
BROKER_ENV = {**os.environ, "KAFKA_PORT": "29092", "KAFKA_HOME": "/var/tmp/spendlake-bench-kafka"}
KCAT = shutil.which("kcat") or "/usr/bin/kcat"
MiB = 1024 * 1024

# (provider, model, weight, reasoning?) — cheap models dominate real traffic; all are in the builtin catalog
MODELS = [
    ("openai", "gpt-4o-mini", 20, False), ("openai", "gpt-4o", 8, False), ("openai", "gpt-4.1", 6, False),
    ("openai", "o4-mini", 5, True), ("anthropic", "claude-sonnet-4-5", 12, False),
    ("anthropic", "claude-haiku-4-5", 10, False), ("gemini", "gemini-2.5-flash", 12, False),
    ("gemini", "gemini-2.5-pro", 4, True), ("bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", 6, False),
    ("bedrock", "amazon.nova-pro-v1:0", 3, False), ("mistral", "mistral-large-latest", 4, False),
    ("mistral", "mistral-small-latest", 5, False),
]


# What goes wrong upstream, each a dead letter (decode.py says why): a record cut off mid-write, a
# label in Latin-1, a number sent as a string or a float, a negative count, a required field left out
BAD_KINDS = ("invalid_json", "not_utf8", "wrong_type", "negative_tokens", "missing_field")


def bad_record(kind: str, e: dict[str, object], pick: int) -> bytes:
    """A bad twin of the good event `e` (own event_id); `pick` varies the detail. No tab or newline
    bytes (kcat's delimiters)."""
    import orjson

    e = dict(e, event_id=str(uuid.uuid4()))
    if kind == "invalid_json":
        v = orjson.dumps(e)
        return v[: len(v) // 2 + pick % 7]
    if kind == "not_utf8":
        v = orjson.dumps(e)
        return v.replace(f'"team":"{e["team"]}"'.encode(), '"team":"équipe-{}"'.format(pick % 60).encode("latin-1"))
    if kind == "wrong_type":
        field = ("input_tokens", "timestamp", "status_code")[pick % 3]
        e[field] = str(e[field]) if field != "timestamp" else e[field] / 1000  # type: ignore[operator]
    elif kind == "negative_tokens":
        field = ("input_tokens", "output_tokens")[pick % 2]
        e[field] = -e[field]  # type: ignore[operator]
    else:
        del e[("model", "provider", "timestamp")[pick % 3]]
    return orjson.dumps(e)


def write_events(n: int, path: Path, seed: int = 42, bad: int = 0, days: int = 30) -> tuple[int, dict[str, int]]:
    """Writes `key<TAB>json` lines for kcat -K: n good events over the last `days` days and `bad`
    bad records at random positions, keyed `bad-<kind>-<n>` (their dead letters keep the key). The
    good events are the same whatever `bad` is. Returns the raw JSON bytes (values only) and the
    bad records by kind."""
    import numpy as np
    import orjson

    brng = np.random.default_rng(seed + 1)
    bad_at = np.sort(brng.integers(0, n, bad)).tolist() + [n]  # a bad one follows good event bad_at[j]
    bad_kind = brng.integers(0, len(BAD_KINDS), bad).tolist()
    by_kind = dict.fromkeys(BAD_KINDS, 0)
    j = 0
    rng = np.random.default_rng(seed)
    w = np.array([m[2] for m in MODELS], dtype=float)
    model = rng.choice(len(MODELS), n, p=w / w.sum()).tolist()
    now_ms = int(time.time() * 1000)
    ts = np.sort(rng.integers(now_ms - days * 86_400_000, now_ms, n)).tolist()  # topics arrive ~in time order
    vk = (10_000 * rng.random(n) ** 3).astype(int).tolist()  # a few keys carry most traffic, as in life
    inp = np.clip(rng.lognormal(7.3, 1.1, n), 5, 200_000).astype(int)
    out = np.clip(rng.lognormal(5.6, 1.0, n), 1, 32_000).astype(int)
    cached = np.where(rng.random(n) < 0.35, (inp * rng.random(n) * 0.9).astype(int), 0)
    write = np.where(rng.random(n) < 0.05, ((inp - cached) * rng.random(n) * 0.5).astype(int), 0)
    latency = (150 + out * rng.uniform(8, 25, n)).round(1).tolist()
    status = rng.random(n)
    env, feat = rng.random(n), rng.integers(0, 6, n).tolist()
    reasoning = (out * rng.uniform(0.3, 0.9, n)).astype(int)
    inp_l, out_l, cached_l, write_l, reasoning_l = (x.tolist() for x in (inp, out, cached, write, reasoning))
    features = ["chat", "search", "summarize", "agent", "codegen", "classify"]
    total = 0
    dumps = orjson.dumps
    with path.open("wb", buffering=8 * MiB) as fh:
        for i in range(n):
            provider, name, _, reasons = MODELS[model[i]]
            key, team = f"vk-{vk[i]:05d}", vk[i] % 60  # the hierarchy is fixed: key → team → customer
            e: dict[str, object] = {
                "event_id": str(uuid.uuid4()), "timestamp": ts[i], "provider": provider, "model": name,
                "input_tokens": inp_l[i], "output_tokens": out_l[i],
                "virtual_key": key, "team": f"team-{team:02d}", "customer": f"customer-{team % 10}",
                "latency_ms": latency[i], "status": "success", "status_code": 200,
            }
            if cached_l[i]:
                e["cached_input_tokens"] = cached_l[i]
            if write_l[i] and provider in ("anthropic", "bedrock"):
                e["cache_write_tokens"] = write_l[i]
            if reasons:
                e["reasoning_tokens"] = reasoning_l[i]
            if status[i] < 0.02:  # a few errors: rate limits and server faults still get billed
                e["status"], e["status_code"] = "error", 429 if status[i] < 0.015 else 500
            if env[i] < 0.5:
                e["tags"] = {"env": "prod" if env[i] < 0.4 else "staging", "feature": features[feat[i]]}
            value = dumps(e)
            total += len(value)
            fh.write(b"%s\t%s\n" % (key.encode(), value))
            while bad_at[j] == i:
                kind = BAD_KINDS[bad_kind[j]]
                value = bad_record(kind, e, j)
                total += len(value)
                by_kind[kind] += 1
                fh.write(b"bad-%s-%d\t%s\n" % (kind.encode(), j, value))
                j += 1
    return total, by_kind


def poll_only(bootstrap: str, topic: str, n: int) -> None:
    """(a), run as a child: read until n records, exactly as ingest fetches, doing nothing with them."""
    from kafka import KafkaConsumer

    sys.path.insert(0, str(ROOT))  # run from a checkout, installed or not
    try:
        from ingest.clients.kafka_python import FETCH
    except ImportError:  # before ingest/clients
        from ingest.consumer import FETCH  # type: ignore[no-redef]

    c = KafkaConsumer(topic, bootstrap_servers=bootstrap.split(","), group_id=None, auto_offset_reset="earliest",
                      enable_auto_commit=False, **FETCH)
    seen, raw = 0, 0
    while seen < n:
        for records in c.poll(timeout_ms=1000).values():
            seen += len(records)
            raw += sum(len(r.value) for r in records)  # cheap; gives raw size even with --skip-produce
    c.close()
    print(seen, raw)


def consume_only(bootstrap: str, topic: str, n: int) -> None:
    """(d), run as a child: a bare confluent-kafka loop in a fresh group, librdkafka's own fetch and
    queue settings, touching each message's value and offset, until n records."""
    from confluent_kafka import Consumer, KafkaException

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-d-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    seen, raw, last = 0, 0, -1
    while seen < n:
        for m in c.consume(num_messages=10_000, timeout=1.0):
            if m.error():
                raise KafkaException(m.error())
            raw += len(m.value())  # type: ignore[arg-type]
            last = m.offset()  # type: ignore[assignment]
            seen += 1
    c.close()
    print(seen, raw, last)


def timed_children(cmds: list[list[str]], logs: list[Path], timeout: float) -> tuple[float, float, list[int], list[float]]:
    """Runs cmds at once; returns (start epoch, wall s until the last exits, exit codes, peak RSS MiB
    of each). A peak is the child's own VmHWM, read from /proc while it runs: rusage's ru_maxrss
    would report this (large) bench process's peak instead, since Linux carries it across fork and
    exec. Children past the timeout are killed (exit code -9): a stuck reader must fail the bench,
    not hang it."""
    fhs = [log.open("wb") for log in logs]
    try:
        start, t0, wall = time.time(), time.perf_counter(), 0.0
        procs = [subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT) for cmd, fh in zip(cmds, fhs)]
        hwm_kib = [0] * len(procs)
        codes: list[int | None] = [None] * len(procs)
        status_files = [Path(f"/proc/{proc.pid}/status") for proc in procs]
        while None in codes:
            for i, proc in enumerate(procs):
                if codes[i] is not None:
                    continue
                try:
                    for line in status_files[i].read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            hwm_kib[i] = max(hwm_kib[i], int(line.split()[1]))
                except (OSError, ValueError):
                    pass  # exiting: the last reading stands (VmHWM only grows)
                pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    codes[i] = proc.returncode = os.waitstatus_to_exitcode(status)
                    wall = time.perf_counter() - t0  # the last one to exit sets it
                elif time.perf_counter() - t0 > timeout:
                    proc.kill()
            if None in codes:
                time.sleep(0.002)  # polling granularity is part of the timing: keep it small
    finally:
        for fh in fhs:
            fh.close()
    return start, wall, [c for c in codes if c is not None], [k / 1024 for k in hwm_kib]


def timed_child(cmd: list[str], log: Path, timeout: float) -> tuple[float, float, int, float]:
    """One child: (start epoch, wall s, exit code, peak RSS MiB); see timed_children."""
    start, wall, codes, rss = timed_children([cmd], [log], timeout)
    return start, wall, codes[0], rss[0]


def killed(rc: int, limit: float) -> str:
    return f" (killed after the {limit:.0f} s timeout; see --timeout)" if rc == -9 else ""


def kcat_version() -> str:
    out = subprocess.run([KCAT, "-V"], capture_output=True, text=True).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("Version")), "Version ?")
    rdkafka = line.split("librdkafka ")[1].split()[0] if "librdkafka " in line else "?"
    return f"{line.split('(')[0].removeprefix('Version ').strip()} (librdkafka {rdkafka})"


def column_bytes(events_dir: Path) -> tuple[dict[str, int], int, int]:
    """Compressed bytes per top-level column (page headers included), summed over every column
    chunk of every data file, from the Parquet footers; plus the rest of the files (footers,
    magic) and the number of files."""
    import pyarrow.parquet as pq

    per: dict[str, int] = {}
    rest, files = 0, 0
    for f in sorted(events_dir.glob("**/*.parquet")):
        md = pq.ParquetFile(f).metadata
        chunks = 0
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            for c in range(rg.num_columns):
                col = rg.column(c)
                name = col.path_in_schema.split(".")[0]  # tags.key_value.key -> tags
                per[name] = per.get(name, 0) + col.total_compressed_size
                chunks += col.total_compressed_size
        rest += f.stat().st_size - chunks
        files += 1
    return per, rest, files


def check(ok: bool, what: str, log: Path | None = None) -> None:
    if not ok:
        tail = log.read_text(errors="replace")[-3000:] if log else ""
        sys.exit(f"bench: FAILED: {what}\n{tail}")


@dataclass
class IngestRun:
    """One `spendlake ingest` run: `workers` processes of one fresh group into one fresh lake."""

    label: str  # "c" or "e"
    client: str
    workers: int
    lake: Path  # the lake; for an S3 lake, the mirror pulled from it after the run
    logs: list[Path]
    seconds: float = 0.0  # start of the workers to the last commit point (manifest) in the lake
    wall: float = 0.0  # start to the last worker's exit
    rss: list[float] = field(default_factory=list)  # peak RSS MiB of each worker
    batches: int = 0
    s3: str = ""  # with --s3: the S3 lake's URL (this run is the S3 twin of `local`)
    local: IngestRun | None = None  # the same reader into a local lake
    requests: Counter[str] = field(default_factory=Counter)  # to the store, by kind, from the closing lines
    objects: dict[str, tuple[int, int]] = field(default_factory=dict)  # in the S3 lake by top folder: count, bytes
    unnamed: int = 0  # data objects in the S3 lake that no manifest names
    pulled: tuple[int, float] = (0, 0.0)  # the mirror's pull: objects, seconds

    @property
    def name(self) -> str:
        plural = "s" if self.workers > 1 else ""
        return (f"({self.label}) spendlake ingest, {self.client}" + (f", {self.workers} worker{plural}" if self.multi else "")
                + (", S3 lake" if self.s3 else ""))  # fmt: skip

    @property
    def tag(self) -> str:
        """(c), (e x2), (c S3): the run in the check lines."""
        return f"({self.label}{f' x{self.workers}' if self.multi else ''}{' S3' if self.s3 else ''})"

    multi = False  # set when more than one worker count runs: then names carry the count


def bench_s3() -> Any:
    """bench/s3.py: the S3 store of --s3 / --lake, what `spendlake ingest` said of it, its mirror."""
    if str(ROOT) not in sys.path[:1]:
        sys.path.insert(0, str(ROOT))  # bench.s3, the ingest package (not this file) and tests.s3server
    from bench import s3

    return s3


def kafka_client_flag() -> bool:
    """Whether this checkout's `spendlake ingest` has --kafka-client yet."""
    r = subprocess.run([sys.executable, "-m", "spendlake", "ingest", "--help"], capture_output=True, text=True, cwd=ROOT)
    return "--kafka-client" in r.stdout


def run_ingest(run: IngestRun, bootstrap: str, topic: str, flag: bool, idle: float, limit: float) -> IngestRun:
    group = f"bench-{run.label}{run.workers}{'-s3' if run.s3 else ''}-{uuid.uuid4().hex[:8]}"
    # on S3, spendlake through bench/s3.py, which notes when the last manifest was created
    spendlake = [sys.executable, str(ROOT / "bench" / "s3.py")] if run.s3 else [sys.executable, "-m", "spendlake"]
    cmd = spendlake + ["ingest", "--bootstrap-servers", bootstrap, "--topic", topic, "--group", group,
                       "--lake", run.s3 or str(run.lake), "--exit-when-idle", str(idle), "--quiet"]  # fmt: skip
    if flag:
        cmd += ["--kafka-client", run.client]
    start, run.wall, codes, run.rss = timed_children([cmd] * run.workers, run.logs, limit)
    for rc, log in zip(codes, run.logs):
        check(rc == 0, f"{run.name}: a worker exited {rc}{killed(rc, limit)} ({' '.join(cmd)})", log)
    if run.s3:
        return s3_results(run, start)
    manifests = list((run.lake / "_manifests").glob("**/*.json"))
    check(bool(manifests), f"{run.name} wrote no manifest", run.logs[0])
    # the last manifest is the last commit point: the time the lake held everything
    run.seconds = max(m.stat().st_mtime for m in manifests) - start
    run.batches = len(manifests)
    return run


def s3_results(run: IngestRun, start: float) -> IngestRun:
    """An S3 run's time to its last commit, batches and requests (from what each worker printed),
    and the mirror of its lake pulled into run.lake, which the lake checks then read."""
    s3 = bench_s3()
    texts = [log.read_text(errors="replace") for log in run.logs]
    for text, log in zip(texts, run.logs):
        closing = s3.closing_line(text)
        check(closing is not None, f"{run.name}: no closing line from a worker", log)
        run.batches += closing.batches
        run.requests += closing.requests
    last = [t for t in map(s3.last_manifest_at, texts) if t is not None]
    check(bool(last), f"{run.name} created no manifest", run.logs[0])
    run.seconds = max(last) - start
    run.objects = s3.lake_objects(run.s3)
    _, objects, seconds = s3.pull(run.s3, run.lake)
    run.pulled = (objects, seconds)
    run.unnamed = s3.unnamed_objects(run.s3, run.lake)
    return run


def s3_report(s3_runs: list[IngestRun], total: int, n: int) -> None:
    """The S3 runs beside their local twins: speed, batches, requests, bytes in the store."""
    print(f"\n{'into a lake on S3':<56}{'seconds':>9}{'events/s':>12}{'S3/local':>10}{'batches':>9}{'PUT/batch':>11}")
    for r in s3_runs:
        assert r.local is not None
        print(f"{r.name:<56}{r.seconds:>9.2f}{total / r.seconds:>12,.0f}{r.local.seconds / r.seconds:>9.2f}x"
              f"{r.batches:>9,}{r.requests['PUT'] / max(1, r.batches):>11.2f}")  # fmt: skip
    print("S3/local: its events/s over the same reader's into the local lake; PUT/batch: PUTs per committed batch "
          "per partition (from the workers' closing lines)")
    for r in s3_runs:
        assert r.local is not None
        (m, _), (ev, ev_b), (dl, dl_b) = (r.objects.get(k, (0, 0)) for k in ("_manifests", "events", "dead_letter"))
        other = r.requests["PUT"] - m - ev - dl
        local_b = sum(f.stat().st_size for k in ("events", "dead_letter") for f in (r.local.lake / k).glob("**/*.parquet"))
        print(f"  {r.tag}: {', '.join(f'{v:,} {k}' for k, v in sorted(r.requests.items()))} requests; "
              f"{r.requests['PUT']:,} PUT = {m:,} manifests + {ev:,} events objects + {dl:,} dead-letter objects"
              f"{f' + {other:,} more' if other else ''}; "
              f"{(ev_b + dl_b) / n:.1f} B/event in the store (events and dead letters, {(ev_b + dl_b) / MiB:,.1f} MiB), "
              f"{local_b / n:.1f} in the local lake; mirror pulled in {r.pulled[1]:.2f} s ({r.pulled[0]:,} objects)")  # fmt: skip


def parquet(lake: Path, what: str) -> str | None:
    """DuckDB's reader of the lake's events or dead_letter files; None when there are none."""
    if not any((lake / what).glob("**/*.parquet")):
        return None
    return f"read_parquet('{lake}/{what}/**/*.parquet', hive_partitioning=true)"


def lake_counts(con: Any, lake: Path) -> dict[str, Any]:
    ev, dl = parquet(lake, "events"), parquet(lake, "dead_letter")
    rows, ids = con.execute(f"select count(*), count(distinct event_id) from {ev}").fetchone() if ev else (0, 0)
    dead, dead_at, kinds = 0, 0, {}
    if dl:
        dead, dead_at = con.execute(
            f"select count(*), count(distinct (source_partition, source_offset)) from {dl}").fetchone()
        kinds = dict(con.execute(f"select regexp_extract(key::varchar, '^bad-([a-z0-9_]+)-', 1) k, count(*) from {dl} "
                                 "group by k order by k").fetchall())
    return {"rows": rows, "ids": ids, "dead": dead, "dead_at": dead_at, "kinds": kinds}


def lake_diff(con: Any, a: Path, b: Path) -> tuple[int, int, int, int]:
    """Rows of a not in b and of b not in a (EXCEPT ALL: duplicates count), for events (every column
    but ingested_at, the wall-clock time of the write) and dead letters (every column but failed_at
    and its date partition, the wall-clock time of the failure)."""

    def only_in(x: Path, y: Path, what: str, drop: str) -> int:
        sx, sy = parquet(x, what), parquet(y, what)
        if sx is None:
            return 0
        if sy is None:
            return con.execute(f"select count(*) from {sx}").fetchone()[0]
        return con.execute(f"select count(*) from (select * exclude ({drop}) from {sx} except all "
                           f"select * exclude ({drop}) from {sy})").fetchone()[0]

    return (only_in(a, b, "events", "ingested_at"), only_in(b, a, "events", "ingested_at"),
            only_in(a, b, "dead_letter", "failed_at, date"), only_in(b, a, "dead_letter", "failed_at, date"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000, help="good events to produce (default 1,000,000)")
    p.add_argument("--partitions", type=int, default=1, help="partitions of a new topic (default 1)")
    p.add_argument("--workers", default="1",
                   help="comma-separated worker counts: (c) and (e) run as that many `spendlake ingest` "
                        "processes of one group on one lake, each count in turn (default 1; e.g. 1,2)")
    p.add_argument("--bad-share", type=float, default=0.0, metavar="FRACTION",
                   help="share of the produced records that are bad (invalid JSON, not UTF-8, wrong types, "
                        "negative tokens, missing fields), at random positions; they must become dead letters "
                        "(default 0; e.g. 0.01)")
    p.add_argument("--days", type=int, default=30,
                   help="the produced events span the last DAYS days, in time order (default 30). A batch "
                        "writes one events file per date it spans (a 50,000-event batch of 1M events over 30 days "
                        "spans 2-3): 1 is like live traffic")
    p.add_argument("--bootstrap-servers", help="use this broker (default: start our own on 127.0.0.1:29092)")
    p.add_argument("--keep-broker", action="store_true", help="leave the broker we started running (and the S3 server of --s3)")
    p.add_argument("--topic", help="topic name (default a fresh one)")
    p.add_argument("--skip-produce", action="store_true", help="reuse --topic as it is (N = the records it holds)")
    p.add_argument("--timeout", type=float, help="kill a reader after this long (default 120 s + 1 s per 1000 events)")
    p.add_argument("--s3", action="store_true",
                   help="run (c) and (e) again into a lake on S3, a SeaweedFS of our own on 127.0.0.1:17333 "
                        "(ingest/broker/s3-local.sh, data in /var/tmp/spendlake-bench-s3; removed at the end "
                        "unless --keep-broker)")
    p.add_argument("--lake", "--s3-lake", dest="s3_lake", metavar="s3://BUCKET/PREFIX",
                   help="as --s3, into this store (endpoint and credentials from the AWS environment: "
                        "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...); a fresh prefix under it, deleted at the end")
    p.add_argument("--_poll", nargs=3, help=argparse.SUPPRESS)  # internal: the (a) child
    p.add_argument("--_consume", nargs=3, help=argparse.SUPPRESS)  # internal: the (d) child
    args = p.parse_args()
    if args._poll:
        poll_only(args._poll[0], args._poll[1], int(args._poll[2]))
        return 0
    if args._consume:
        consume_only(args._consume[0], args._consume[1], int(args._consume[2]))
        return 0
    check(not (args.skip_produce and not args.topic), "--skip-produce needs --topic")
    check(0 <= args.bad_share < 1, "--bad-share is a fraction from 0 to below 1")
    check(args.days >= 1, "--days is a whole number of days, at least 1")
    check(not (args.s3 and args.s3_lake), "--s3 starts a store of its own; --lake names one: not both")
    check(not args.s3_lake or args.s3_lake.startswith("s3://"), "--lake takes s3://BUCKET/PREFIX (the local lakes are temporary)")
    try:
        worker_counts = [int(w) for w in args.workers.split(",")]
    except ValueError:
        worker_counts = []
    check(bool(worker_counts) and min(worker_counts) >= 1, "--workers takes counts such as 1 or 1,2")

    import confluent_kafka
    import duckdb
    import kafka

    print(f"machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {platform.platform()}")
    print(f"python {platform.python_version()}, kafka-python {kafka.__version__}, confluent-kafka "
          f"{getattr(confluent_kafka, '__version__', None) or confluent_kafka.version()[0]} (librdkafka {confluent_kafka.libversion()[0]}), duckdb {duckdb.__version__}, "
          f"kcat {kcat_version()}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    flag = kafka_client_flag()
    if not flag:
        print("note: `spendlake ingest` has no --kafka-client here: (c) runs its default client, (e) is skipped")
    own_broker = args.bootstrap_servers is None
    bootstrap = args.bootstrap_servers or f"127.0.0.1:{BROKER_ENV['KAFKA_PORT']}"
    topic = args.topic or f"bench-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="spendlake-bench-"))
    s3 = None
    try:
        if own_broker:
            t = time.perf_counter()
            res = subprocess.run(BROKER + ["start"], env=BROKER_ENV, capture_output=True, text=True)
            check(res.returncode == 0, f"broker start:\n{res.stderr[-2000:]}")
            how = "already running" if "already running" in res.stderr else f"started in {time.perf_counter() - t:.1f} s"
            print(f"broker: own, {bootstrap}, {how}")
        if args.s3 or args.s3_lake:
            try:
                s3 = bench_s3().BenchS3.existing(args.s3_lake) if args.s3_lake else bench_s3().BenchS3.own()
            except Exception as exc:  # noqa: BLE001 - one line, not a traceback
                check(False, f"S3: {exc}")
            assert s3 is not None
            print(s3.how)
        # n: good events (the lake's rows), bad: bad records (its dead letters), total: the topic's records
        n, raw_bytes, partitions = args.events, 0, args.partitions
        bad = round(n * args.bad_share / (1 - args.bad_share))
        bad_kinds: dict[str, int] = {}
        if not args.skip_produce:
            from kafka.admin import KafkaAdminClient, NewTopic

            admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
            admin.create_topics([NewTopic(topic, partitions, 1)])  # explicit: auto-create gives 1 partition
            admin.close()
            t = time.perf_counter()
            raw_bytes, bad_kinds = write_events(n, work / "events.tsv", bad=bad, days=args.days)
            gen = time.perf_counter() - t
            total = n + bad
            t = time.perf_counter()
            res = subprocess.run([KCAT, "-P", "-b", bootstrap, "-t", topic, "-K", r"\t", "-X", "linger.ms=50",
                                "-X", "batch.num.messages=10000", "-X", "queue.buffering.max.messages=1000000",
                                "-l", str(work / "events.tsv")], capture_output=True, text=True)
            check(res.returncode == 0, f"kcat produce: {res.stderr[-2000:]}")
            prod = time.perf_counter() - t
            (work / "events.tsv").unlink(missing_ok=True)
            mixed = f" + {bad:,} bad records ({100 * bad / total:.2f}%)" if bad else ""
            over = f" over {args.days} day{'s' if args.days > 1 else ''}" if args.days != 30 else ""
            print(f"produce: {n:,} events{mixed}{over} to {topic} ({partitions} partition(s)): generated in {gen:.1f} s, "
                  f"kcat {prod:.1f} s ({total / prod:,.0f}/s); raw JSON {raw_bytes / MiB:,.1f} MiB, "
                  f"{raw_bytes / total:.0f} B/event")
            if bad:
                print("bad records by kind: " + ", ".join(f"{k} {v:,}" for k, v in bad_kinds.items()))
        else:
            c = kafka.KafkaConsumer(bootstrap_servers=bootstrap.split(","))
            tps = [kafka.TopicPartition(topic, q) for q in c.partitions_for_topic(topic) or ()]
            total = sum(c.end_offsets(tps).values()) - sum(c.beginning_offsets(tps).values())
            partitions = len(tps)
            c.close()
            check(total > 0, f"topic {topic} is empty or missing")
            n, bad = total, 0  # what is good is up to the lake: events + dead letters must make total
            print(f"topic: {topic} holds {total:,} records in {partitions} partition(s) (--events, --bad-share ignored)")

        limit = args.timeout or 120 + total / 1000
        # (a) the Python client's ceiling: same fetch sizes as ingest, no decoding, no lake
        poll = [sys.executable, __file__, "--_poll", bootstrap, topic, str(total)]
        _, a_s, rc, a_rss = timed_child(poll, work / "a.log", limit)
        check(rc == 0, f"kafka-python poll loop exited {rc}{killed(rc, limit)}", work / "a.log")
        raw_bytes = raw_bytes or int((work / "a.log").read_text().split()[-1])
        # (b) librdkafka's ceiling; -c n exits as soon as all n are read, -e if fewer exist
        _, b_s, rc, _ = timed_child([KCAT, "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q",
                                     "-c", str(total), "-f", r"%o\n"], work / "b.out", limit)
        check(rc == 0, f"kcat consume exited {rc}{killed(rc, limit)}", work / "b.out")
        b_n = sum(1 for _ in (work / "b.out").open("rb"))
        (work / "b.out").unlink()
        check(b_n == total, f"kcat read {b_n:,} records, expected {total:,}")
        # (d) librdkafka through confluent-kafka's Python API: the ceiling of a Python loop over it
        consume = [sys.executable, __file__, "--_consume", bootstrap, topic, str(total)]
        _, d_s, rc, d_rss = timed_child(consume, work / "d.log", limit)
        check(rc == 0, f"confluent-kafka consume loop exited {rc}{killed(rc, limit)}", work / "d.log")
        d_n = int((work / "d.log").read_text().split()[-3])
        check(d_n == total, f"confluent-kafka loop read {d_n:,} records, expected {total:,}")
        # (c) and (e) end to end, for each worker count; --exit-when-idle makes them stop, and the
        # idle wait must not count as work (the time is the lake's last commit point)
        idle = 2.0
        runs: list[IngestRun] = []
        s3_runs: list[IngestRun] = []  # with --s3: the same readers again, into a lake on S3
        for w in worker_counts:
            for label, client in (("c", "kafka-python"), ("e", "confluent")):
                if label == "e" and not flag:
                    continue
                tag = f"{label}{w}"
                run = IngestRun(label, client if flag else "default client", w, work / f"lake-{tag}",
                                [work / f"{tag}-{i}.log" for i in range(w)])
                run.multi = len(worker_counts) > 1 or w > 1
                runs.append(run_ingest(run, bootstrap, topic, flag, idle, limit))
                if s3 is not None:
                    twin = IngestRun(label, run.client, w, work / f"mirror-{tag}",
                                     [work / f"{tag}-s3-{i}.log" for i in range(w)], s3=s3.lake(tag), local=run)
                    twin.multi = run.multi
                    s3_runs.append(run_ingest(twin, bootstrap, topic, flag, idle, limit))
        first = {r.label: r for r in reversed(runs) if r.workers == worker_counts[0]}
        c1, e1 = first["c"], first.get("e")
        d_rate = total / d_s

        con = duckdb.connect()
        counts = {id(r): lake_counts(con, r.lake) for r in runs + s3_runs}
        diffs = {id(r): lake_diff(con, (r.local or c1).lake, r.lake) for r in runs + s3_runs if r is not c1}

        print(f"\n{'reader':<56}{'seconds':>9}{'events/s':>12}")
        rows = [("(a) kafka-python poll loop", a_s), ("(b) kcat -C", b_s), ("(d) confluent-kafka consume loop (rdkafka defaults)", d_s)]
        rows += [(r.name, r.seconds) for r in runs]
        for name, s in rows:
            print(f"{name:<56}{s:>9.2f}{total / s:>12,.0f}")
        if bad:
            print(f"events/s counts every record read: {n:,} good + {bad:,} bad")
        for r in runs + s3_runs:
            settle = " (a worker holding some partitions waits for the group to settle first)" if r.workers > 1 else ""
            print(f"{r.name}: wall {r.wall:.2f} s incl. exit-when-idle {idle:.0f} s and shutdown{settle}")
        print("all timings include process start (and group join for (c), (d), (e)); with several workers, "
              "from their start to the lake's last commit")
        print(f"ratio c/a {a_s / c1.seconds:.2f}   c/b {b_s / c1.seconds:.2f}   (throughput of c as a fraction of a, b)")
        for w in worker_counts:
            c, e = (next((r for r in runs if r.label == x and r.workers == w), None) for x in "ce")
            if c and e:
                at = f" ({w} worker{'s' if w > 1 else ''})" if len(worker_counts) > 1 else ""
                print(f"ratio e/c {c.seconds / e.seconds:.2f}   e/d {d_s / e.seconds:.2f}{at}   "
                      f"(throughput of e as a multiple of c, d)")
        print("peak RSS: " + "   ".join(
            f"{r.tag} " + " / ".join(f"{x:,.0f}" for x in r.rss) + " MiB"
            for r in runs + s3_runs) + f"   ((a) {a_rss:,.0f} MiB, (d) {d_rss:,.0f} MiB)")

        lake_bytes = max(1, sum(f.stat().st_size for f in (c1.lake / "events").glob("**/*.parquet")))
        print(f"size: raw JSON {raw_bytes / total:.1f} B/event, lake {lake_bytes / n:.1f} B/event "
              f"({lake_bytes / MiB:,.1f} MiB, {c1.batches} batches), raw/lake {raw_bytes / lake_bytes:.1f}x")
        per, rest, files = column_bytes(c1.lake / "events")
        print(f"bytes per event by column (compressed column chunks over {files} files, largest first):")
        for name, b in sorted(per.items(), key=lambda kv: -kv[1]):
            print(f"  {name:<24}{b / n:>7.2f}  {100 * b / lake_bytes:>5.1f}%")
        print(f"  {'(footers, headers)':<24}{rest / n:>7.2f}  {100 * rest / lake_bytes:>5.1f}%")
        if s3_runs:
            s3_report(s3_runs, total, n)

        failed: list[IngestRun] = []
        for r in runs + s3_runs:
            k = counts[id(r)]
            good = n if not args.skip_produce else total - k["dead"]
            ok = k["rows"] == k["ids"] == good
            what = f"lake check (duckdb), {r.tag}: {k['rows']:,} rows, " \
                   f"{k['ids']:,} distinct event_id, expected {good:,}"
            if bad or k["dead"]:
                ok = ok and k["dead"] == k["dead_at"] == bad
                if not args.skip_produce:
                    ok = ok and k["kinds"] == {x: v for x, v in bad_kinds.items() if v}
                what += f"; {k['dead']:,} dead letters at {k['dead_at']:,} offsets, expected {bad:,}"
                if not args.skip_produce:
                    by_kind = ", ".join(f"{x or '(not a bad-* key)'} {v:,}" for x, v in k["kinds"].items())
                    what += f" ({'by kind as produced' if k['kinds'] == {x: v for x, v in bad_kinds.items() if v} else by_kind})"
            if r.s3:
                what += f" (in its mirror; {r.unnamed:,} data objects in the store that no manifest names)"
            print(f"{what}: " + ("OK" if ok else "MISMATCH"))
            if not ok:
                failed.append(r)
            if r is not c1:
                ea, eb, da, db = diffs[id(r)]
                same = ea == eb == da == db == 0
                print(f"  {r.tag} vs {(r.local or c1).tag}: "
                      f"events {ea:,} / {eb:,} rows only in one (EXCEPT ALL both ways, all columns but ingested_at), "
                      f"dead letters {da:,} / {db:,} (all but failed_at): " + ("IDENTICAL" if same else "DIFFERENT"))
                if not same and r not in failed:
                    failed.append(r)

        cond = f"N = {n:,} events, {partitions} partition(s), bad share {args.bad_share:g}" + (
            f", over {args.days} day(s)" if args.days != 30 and not args.skip_produce else "")
        print(f"targets ({cond}):")

        def target(what: str, got: str, ok: bool | None, why: str = "") -> None:
            verdict = "met" if ok else "MISSED" if ok is not None else f"n/a{f' ({why})' if why else ''}"
            print(f"  {what:<52}{got:>12}   {verdict}")

        if e1 is None:
            print("  (e) did not run: no --kafka-client in this checkout")
        else:
            e_rate, e_w = total / e1.seconds, e1.workers
            one = partitions == 1 and e_w == 1
            target("(e) >= 150,000 events/s, 1 partition, 1 process", f"{e_rate:,.0f}",
                   e_rate >= 150_000 if one and not bad else None, "not 1 partition, 1 worker" if not one else "bad records mixed in")
            target("(e) >= 4x (c)", f"{c1.seconds / e1.seconds:.2f}x", c1.seconds / e1.seconds >= 4)
            target("(e) >= 0.5x (d)", f"{d_s / e1.seconds:.2f}x", d_s / e1.seconds >= 0.5)
            rss_mb = max(e1.rss) * MiB / 1e6
            target("peak RSS of (e) <= 300 MB over 1M events", f"{rss_mb:,.0f} MB",
                   rss_mb <= 300 if total >= 1_000_000 else None, "fewer than 1M events")
            target(">= 120,000 events/s with 1% bad records", f"{e_rate:,.0f}" if bad else "-",
                   e_rate >= 120_000 if one and abs(args.bad_share - 0.01) < 1e-9 else None,
                   "run with --bad-share 0.01" if not bad else "not 1 partition, 1 worker" if not one
                   else f"bad share {args.bad_share:g}")
        for r in s3_runs:
            assert r.local is not None
            ratio, puts = r.local.seconds / r.seconds, r.requests["PUT"] / max(1, r.batches)
            target(f"{r.tag} >= 0.8x {r.local.tag}'s events/s", f"{ratio:.2f}x", ratio >= 0.8)
            target(f"{r.tag} <= 3 PUTs per batch per partition", f"{puts:.2f}", puts <= 3)
            own = sum(r.objects.get(k, (0, 0))[0] for k in ("_manifests", "events", "dead_letter"))
            dates = r.objects.get("events", (0, 0))[0] / max(1, r.batches)
            if puts > 3 and r.requests["PUT"] == own and dates > 1:
                print(f"    (every PUT is one of the batches' own objects; a batch has one events object per date "
                      f"it spans, {dates:.1f} here: the topic's events cover {args.days} days; see --days)")  # fmt: skip
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        for bad_run in failed:
            for log in bad_run.logs:
                print(f"--- {bad_run.name}: {log.name}\n" + log.read_text(errors="replace")[-2000:], file=sys.stderr)
        return 1 if failed else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if s3 is not None:
            s3.close(keep_server=args.keep_broker)
        if own_broker and not args.keep_broker:
            subprocess.run(BROKER + ["stop"], env=BROKER_ENV, capture_output=True)


if __name__ == "__main__":
    raise SystemExit(main())
