"""Alert freshness: from producing the event that crosses a budget threshold to the Slack message.

A real broker (ingest/broker/kafka-local.sh), a real `spendlake serve` process, and a local
Slack-like receiver (tests/receivers.py) that stamps each message on arrival. A producer sends
background traffic at --rate events/s; every --every seconds a fresh virtual key with a $10 budget
gets, on top of that traffic: a warm-up at 75% of its budget, then one event that takes it over 80%
and, a second later, one over 90%. Each crossing event's produce time is taken right before
`send()`; the matching "... at 80% of budget" / "... at 90% of budget" Slack message's arrival
ends the measurement. Prints p50 / p95 / max over all crossings, and the achieved rate.

Crossing amounts are exact: gpt-4o input costs $2.50 per million tokens in the built-in catalog, so
a request of 3,000,000 input tokens and no output costs $7.50 (75% of $10), 300,000 more $0.75.

    python bench/freshness.py                  # 10k events/s, 12 crossing cycles
    python bench/freshness.py --rate 2000 --cycles 5 --batch-max-age 0.5
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.receivers import slack_receiver  # noqa: E402

KCAT = shutil.which("kcat") or "/usr/bin/kcat"
BROKER = ["bash", str(ROOT / "ingest" / "broker" / "kafka-local.sh")]
BROKER_ENV = {**os.environ, "KAFKA_PORT": "29093", "KAFKA_HOME": "/var/tmp/spendlake-bench-freshness-kafka"}
LIMIT = 10.0  # USD, each crossing key's budget
M = 1_000_000


def config(lake: Path, topic: str, cycles: int, batch_max_age: float, interval: str) -> str:
    keys = "\n".join(
        f'[[virtual_keys]]\nid = "vk-cross-{i}"\nteam_id = "team-bench"\n'
        f'budgets = [{{ max_limit = {LIMIT}, reset_duration = "1d" }}]\n'
        for i in range(cycles)
    )
    return f"""
[lake]
path = "{lake}"
[kafka]
bootstrap_servers = "{BROKER_ENV['KAFKA_PORT'] and '127.0.0.1:' + BROKER_ENV['KAFKA_PORT']}"
topic = "{topic}"
group_id = "bench-{topic}"
[ingest]
batch_max_age = {batch_max_age}
[metrics]
listen = "127.0.0.1:0"
[alerts]
evaluation_interval = "{interval}"
[[channels]]
name = "bench-slack"
type = "slack"
url_env = "BENCH_SLACK_URL"
kinds = ["budget"]
[[teams]]
id = "team-bench"
{keys}"""


def background(i: int, now_ms: int) -> bytes:
    return orjson.dumps({
        "event_id": f"bg-{i}", "timestamp": now_ms, "provider": "openai", "model": "gpt-4o-mini",
        "input_tokens": 800 + i % 1500, "output_tokens": 100 + i % 400, "virtual_key": f"vk-bg-{i % 5000}",
        "team": f"team-{i % 20}", "latency_ms": 300.0,
    })  # fmt: skip


def crossing(key: str, n: int, tokens: int) -> bytes:
    return orjson.dumps({
        "event_id": f"{key}-{n}", "timestamp": int(time.time() * 1000), "provider": "openai", "model": "gpt-4o",
        "input_tokens": tokens, "output_tokens": 0, "virtual_key": key,
    })  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=10_000, help="background events per second (default 10000)")
    ap.add_argument("--cycles", type=int, default=12, help="crossing cycles, two crossings each (default 12)")
    ap.add_argument("--every", type=float, default=6.0,
                    help="seconds per cycle: warm-up, 80%% and 90%% crossings a third apart (default 6)")
    ap.add_argument("--batch-max-age", type=float, default=1.0, help="[ingest] batch_max_age of serve (default 1.0)")
    ap.add_argument("--interval", default="5s", help="[alerts] evaluation_interval (default 5s)")
    ap.add_argument("--keep", action="store_true", help="keep the lake and logs")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="spendlake-freshness-"))
    topic = f"fresh-{uuid.uuid4().hex[:8]}"
    print(f"broker: starting on {BROKER_ENV['KAFKA_PORT']} ...", flush=True)
    subprocess.run([*BROKER, "start"], env=BROKER_ENV, check=True, capture_output=True)
    subprocess.run([*BROKER, "topic", topic, "1"], env=BROKER_ENV, check=True, capture_output=True)
    slack = slack_receiver()
    cfg = work / "spendlake.toml"
    cfg.write_text(config(work / "lake", topic, args.cycles, args.batch_max_age, args.interval))
    log = work / "serve.log"
    env = {**os.environ, "BENCH_SLACK_URL": slack.url}
    serve = subprocess.Popen([sys.executable, "-m", "spendlake", "serve", "--config", str(cfg)],
                             stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env, cwd=ROOT)  # fmt: skip
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{BROKER_ENV['KAFKA_PORT']}", linger_ms=5,
                             batch_size=256 * 1024, acks=1)  # fmt: skip
    try:
        while "serving /metrics" not in log.read_text(errors="replace"):
            if serve.poll() is not None:
                raise SystemExit(f"serve exited:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        sent: dict[str, float] = {}  # expected Slack title fragment -> produce time
        sent_ids: dict[str, str] = {}  # the same -> the crossing event's id
        stop = threading.Event()
        produced = [0]

        # background traffic through kcat (librdkafka, C): the harness should not eat the CPU
        # serve needs; this process only writes paced lines into kcat's stdin
        kcat = subprocess.Popen([KCAT, "-P", "-b", f"127.0.0.1:{BROKER_ENV['KAFKA_PORT']}", "-t", topic,
                                 "-X", "linger.ms=5"], stdin=subprocess.PIPE)  # fmt: skip
        assert kcat.stdin is not None

        def load() -> None:
            i = 0
            t0 = time.perf_counter()
            while not stop.is_set():
                now_ms = int(time.time() * 1000)
                due = int((time.perf_counter() - t0) * args.rate)
                if due > i:
                    kcat.stdin.write(b"".join(background(j, now_ms) + b"\n" for j in range(i, due)))  # type: ignore[union-attr]
                    kcat.stdin.flush()  # type: ignore[union-attr]
                    i = due
                produced[0] = i
                time.sleep(0.01)
            kcat.stdin.close()  # type: ignore[union-attr]
            kcat.wait(30)

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        time.sleep(3)  # let serve reach steady state under load
        t_start = time.perf_counter()
        for c in range(args.cycles):
            key = f"vk-cross-{c}"
            producer.send(topic, crossing(key, 0, 3 * M))  # 75%: no alert
            time.sleep(args.every / 3)
            sent[f"{key} at 80% of budget"] = time.time()
            sent_ids[f"{key} at 80% of budget"] = f"{key}-1"
            producer.send(topic, crossing(key, 1, 3 * M // 10))  # 82.5%
            producer.flush(1)
            time.sleep(args.every / 3)
            sent[f"{key} at 90% of budget"] = time.time()
            sent_ids[f"{key} at 90% of budget"] = f"{key}-2"
            producer.send(topic, crossing(key, 2, 4 * M // 10))  # 92.5%
            producer.flush(1)
            time.sleep(args.every / 3)
            print(f"\rcycle {c + 1}/{args.cycles}, {produced[0]:,} background events", end="", flush=True)
        deadline = time.time() + 30
        while time.time() < deadline and len(_arrivals(slack, sent)) < len(sent):
            time.sleep(0.1)
        elapsed = time.perf_counter() - t_start
        stop.set()
        loader.join()
        print()
        got = _arrivals(slack, sent)
        lat = sorted(got[k] - sent[k] for k in got)
        rate = produced[0] / (elapsed + 3)
        print(f"background rate achieved: {rate:,.0f} events/s (target {args.rate:,}); "
              f"batch_max_age {args.batch_max_age} s, evaluation_interval {args.interval}")  # fmt: skip
        print(f"crossings: {len(sent)}, messages received: {len(got)}, missing: {len(sent) - len(got)}"
              + (f" ({', '.join(sorted(set(sent) - set(got)))})" if len(got) < len(sent) else ""))
        if lat:
            p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
            print(f"produce → Slack: p50 {statistics.median(lat):.3f} s, p95 {p95:.3f} s, max {lat[-1]:.3f} s")
        landed = _landed(work / "lake", sent_ids)
        split = [(landed[k] - sent[k], got[k] - landed[k]) for k in got if k in landed]
        if split:
            a, b = zip(*split)
            print(f"  of which produce → file in the lake: p50 {statistics.median(a):.3f} s, max {max(a):.3f} s; "
                  f"lake → Slack: p50 {statistics.median(b):.3f} s, max {max(b):.3f} s")
        dup = len([r for r in slack.requests if r.json and "budget" in str(r.json.get("text", ""))]) - len(got)
        print(f"duplicate budget messages: {max(dup, 0)}")
        return 0 if len(got) == len(sent) else 1
    finally:
        producer.close()
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(60)
        except subprocess.TimeoutExpired:
            serve.kill()
        slack.close()
        subprocess.run([*BROKER, "stop"], env=BROKER_ENV, capture_output=True)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _landed(lake: Path, ids: dict[str, str]) -> dict[str, float]:
    """When each crossing event's lake file was committed (its mtime)."""
    import duckdb

    rows = duckdb.sql(
        f"SELECT event_id, filename FROM read_parquet('{lake}/events/*/*.parquet', filename = true) "
        f"WHERE event_id IN ({', '.join(repr(v) for v in ids.values())})"
    ).fetchall()
    where = {event_id: Path(f).stat().st_mtime for event_id, f in rows}
    return {k: where[v] for k, v in ids.items() if v in where}


def _arrivals(slack: object, sent: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in slack.requests:  # type: ignore[attr-defined]
        text = str((r.json or {}).get("text", ""))
        for k in sent:
            if k in text and k not in out:
                out[k] = r.received_at
    return out


if __name__ == "__main__":
    raise SystemExit(main())
