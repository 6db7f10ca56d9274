"""How fast `spendlake ingest` lands a Kafka topic in the lake, next to what Kafka itself allows.

Produces N canonical usage events (contract 1) with kcat, then reads the same topic three ways:
(a) a bare kafka-python poll loop with ingest's own fetch settings (the Python client's ceiling),
(b) kcat (librdkafka: the broker's ceiling on this machine), (c) `spendlake ingest` end to end.
Prints events/s, the ratios, (c)'s peak RSS, lake vs raw JSON size (bytes per event, and per column
from the Parquet footers), and checks the lake with DuckDB.
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
from pathlib import Path

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


def write_events(n: int, path: Path, seed: int = 42) -> int:
    """Writes `key<TAB>json` lines for kcat -K; returns the raw JSON bytes (values only)."""
    import numpy as np
    import orjson

    rng = np.random.default_rng(seed)
    w = np.array([m[2] for m in MODELS], dtype=float)
    model = rng.choice(len(MODELS), n, p=w / w.sum()).tolist()
    now_ms = int(time.time() * 1000)
    ts = np.sort(rng.integers(now_ms - 30 * 86_400_000, now_ms, n)).tolist()  # topics arrive ~in time order
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
    return total


def poll_only(bootstrap: str, topic: str, n: int) -> None:
    """(a), run as a child: read until n records, exactly as ingest fetches, doing nothing with them."""
    from kafka import KafkaConsumer

    sys.path.insert(0, str(ROOT))  # run from a checkout, installed or not
    from ingest.consumer import FETCH

    c = KafkaConsumer(topic, bootstrap_servers=bootstrap.split(","), group_id=None, auto_offset_reset="earliest",
                      enable_auto_commit=False, **FETCH)
    seen, raw = 0, 0
    while seen < n:
        for records in c.poll(timeout_ms=1000).values():
            seen += len(records)
            raw += sum(len(r.value) for r in records)  # cheap; gives raw size even with --skip-produce
    c.close()
    print(seen, raw)


def timed_child(cmd: list[str], log: Path, timeout: float) -> tuple[float, float, int, float]:
    """Runs cmd; returns (start epoch, wall s, exit code, peak RSS MiB). The peak is the child's own
    VmHWM, read from /proc while it runs: rusage's ru_maxrss would report this (large) bench
    process's peak instead, since Linux carries it across fork and exec.
    A child past the timeout is killed (exit code -9): a stuck reader must fail the bench, not hang it."""
    with log.open("wb") as fh:
        start, t0 = time.time(), time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        hwm_kib = 0
        status_file = Path(f"/proc/{proc.pid}/status")
        while True:
            try:
                for line in status_file.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        hwm_kib = max(hwm_kib, int(line.split()[1]))
            except (OSError, ValueError):
                pass  # exiting: the last reading stands (VmHWM only grows)
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > timeout:
                proc.kill()
            time.sleep(0.002)  # polling granularity is part of the timing: keep it small
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return start, wall, proc.returncode, hwm_kib / 1024


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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000, help="events to produce (default 1,000,000)")
    p.add_argument("--partitions", type=int, default=1, help="partitions of a new topic (default 1)")
    p.add_argument("--bootstrap-servers", help="use this broker (default: start our own on 127.0.0.1:29092)")
    p.add_argument("--keep-broker", action="store_true", help="leave the broker we started running")
    p.add_argument("--topic", help="topic name (default a fresh one)")
    p.add_argument("--skip-produce", action="store_true", help="reuse --topic as it is (N = the events it holds)")
    p.add_argument("--timeout", type=float, help="kill a reader after this long (default 120 s + 1 s per 1000 events)")
    p.add_argument("--_poll", nargs=3, help=argparse.SUPPRESS)  # internal: the (a) child
    args = p.parse_args()
    if args._poll:
        poll_only(args._poll[0], args._poll[1], int(args._poll[2]))
        return 0
    check(not (args.skip_produce and not args.topic), "--skip-produce needs --topic")

    import duckdb
    import kafka

    print(f"machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {platform.platform()}")
    print(f"python {platform.python_version()}, kafka-python {kafka.__version__}, duckdb {duckdb.__version__}, "
          f"kcat {kcat_version()}")
    own_broker = args.bootstrap_servers is None
    bootstrap = args.bootstrap_servers or f"127.0.0.1:{BROKER_ENV['KAFKA_PORT']}"
    topic = args.topic or f"bench-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="spendlake-bench-"))
    try:
        if own_broker:
            t = time.perf_counter()
            r = subprocess.run(BROKER + ["start"], env=BROKER_ENV, capture_output=True, text=True)
            check(r.returncode == 0, f"broker start:\n{r.stderr[-2000:]}")
            how = "already running" if "already running" in r.stderr else f"started in {time.perf_counter() - t:.1f} s"
            print(f"broker: own, {bootstrap}, {how}")
        n, raw_bytes = args.events, 0
        if not args.skip_produce:
            from kafka.admin import KafkaAdminClient, NewTopic

            admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
            admin.create_topics([NewTopic(topic, args.partitions, 1)])  # explicit: auto-create gives 1 partition
            admin.close()
            t = time.perf_counter()
            raw_bytes = write_events(n, work / "events.tsv")
            gen = time.perf_counter() - t
            t = time.perf_counter()
            r = subprocess.run([KCAT, "-P", "-b", bootstrap, "-t", topic, "-K", r"\t", "-X", "linger.ms=50",
                                "-X", "batch.num.messages=10000", "-X", "queue.buffering.max.messages=1000000",
                                "-l", str(work / "events.tsv")], capture_output=True, text=True)
            check(r.returncode == 0, f"kcat produce: {r.stderr[-2000:]}")
            prod = time.perf_counter() - t
            (work / "events.tsv").unlink(missing_ok=True)
            print(f"produce: {n:,} events to {topic} ({args.partitions} partition(s)): generated in {gen:.1f} s, "
                  f"kcat {prod:.1f} s ({n / prod:,.0f}/s); raw JSON {raw_bytes / MiB:,.1f} MiB, "
                  f"{raw_bytes / n:.0f} B/event")
        else:
            c = kafka.KafkaConsumer(bootstrap_servers=bootstrap.split(","))
            tps = [kafka.TopicPartition(topic, q) for q in c.partitions_for_topic(topic) or ()]
            n = sum(c.end_offsets(tps).values()) - sum(c.beginning_offsets(tps).values())
            c.close()
            check(n > 0, f"topic {topic} is empty or missing")
            print(f"topic: {topic} holds {n:,} events (--events ignored)")

        limit = args.timeout or 120 + n / 1000
        # (a) the Python client's ceiling: same fetch sizes as ingest, no decoding, no lake
        poll = [sys.executable, __file__, "--_poll", bootstrap, topic, str(n)]
        _, a_s, rc, a_rss = timed_child(poll, work / "a.log", limit)
        check(rc == 0, f"kafka-python poll loop exited {rc}{killed(rc, limit)}", work / "a.log")
        raw_bytes = raw_bytes or int((work / "a.log").read_text().split()[-1])
        # (b) librdkafka's ceiling; -c n exits as soon as all n are read, -e if fewer exist
        _, b_s, rc, _ = timed_child([KCAT, "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q",
                                     "-c", str(n), "-f", r"%o\n"], work / "b.out", limit)
        check(rc == 0, f"kcat consume exited {rc}{killed(rc, limit)}", work / "b.out")
        b_n = sum(1 for _ in (work / "b.out").open("rb"))
        (work / "b.out").unlink()
        check(b_n == n, f"kcat read {b_n:,} records, expected {n:,}")
        # (c) end to end; --exit-when-idle makes it stop, and its idle wait must not count as work
        lake, idle = work / "lake", 2.0
        start, c_wall, rc, c_rss = timed_child(
            [sys.executable, "-m", "spendlake", "ingest", "--bootstrap-servers", bootstrap, "--topic", topic,
             "--group", f"bench-{uuid.uuid4().hex[:8]}", "--lake", str(lake), "--exit-when-idle", str(idle), "--quiet"],
            work / "c.log", limit)
        check(rc == 0, f"spendlake ingest exited {rc}{killed(rc, limit)}", work / "c.log")
        manifests = list((lake / "_manifests").glob("**/*.json"))
        check(bool(manifests), "spendlake ingest wrote no manifest", work / "c.log")
        # the last manifest is the last commit point: the time the lake held everything
        c_s = max(m.stat().st_mtime for m in manifests) - start

        con = duckdb.connect()
        rows, ids = con.execute(f"select count(*), count(distinct event_id) from read_parquet("
                                f"'{lake}/events/**/*.parquet', hive_partitioning=true)").fetchone() or (0, 0)
        lake_bytes = max(1, sum(f.stat().st_size for f in (lake / "events").glob("**/*.parquet")))

        print(f"\n{'reader':<34}{'seconds':>9}{'events/s':>12}")
        for name, s in (("(a) kafka-python poll loop", a_s), ("(b) kcat -C", b_s), ("(c) spendlake ingest", c_s)):
            print(f"{name:<34}{s:>9.2f}{n / s:>12,.0f}")
        print(f"(c) wall {c_wall:.2f} s incl. exit-when-idle {idle:.0f} s and shutdown; "
              f"all timings include process start (and group join for (c))")
        print(f"ratio c/a {a_s / c_s:.2f}   c/b {b_s / c_s:.2f}   (throughput of c as a fraction of a, b)")
        print(f"peak RSS: (c) {c_rss:,.0f} MiB   ((a) {a_rss:,.0f} MiB)")
        print(f"size: raw JSON {raw_bytes / n:.1f} B/event, lake {lake_bytes / n:.1f} B/event "
              f"({lake_bytes / MiB:,.1f} MiB, {len(manifests)} batches), raw/lake {raw_bytes / lake_bytes:.1f}x")
        per, rest, files = column_bytes(lake / "events")
        print(f"bytes per event by column (compressed column chunks over {files} files, largest first):")
        for name, b in sorted(per.items(), key=lambda kv: -kv[1]):
            print(f"  {name:<24}{b / n:>7.2f}  {100 * b / lake_bytes:>5.1f}%")
        print(f"  {'(footers, headers)':<24}{rest / n:>7.2f}  {100 * rest / lake_bytes:>5.1f}%")
        print(f"lake check (duckdb): {rows:,} rows, {ids:,} distinct event_id, expected {n:,}: "
              + ("OK" if rows == ids == n else "MISMATCH"))
        if rows != ids or rows != n:
            print((work / "c.log").read_text(errors="replace")[-2000:], file=sys.stderr)
            return 1
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if own_broker and not args.keep_broker:
            subprocess.run(BROKER + ["stop"], env=BROKER_ENV, capture_output=True)


if __name__ == "__main__":
    raise SystemExit(main())
