"""Alert freshness: from a budget-crossing event going into spendlake to the Slack message.

A real `spendlake serve` process and a local Slack-like receiver (tests/receivers.py) that stamps
each message on arrival. Background traffic goes in at --rate events/s; every --every seconds a
fresh virtual key with a $10 budget gets, on top of that traffic: a warm-up at 75% of its budget,
then one event that takes it over 80% and, --every/3 seconds later, one over 90%. The matching
"... at 80% of budget" / "... at 90% of budget" Slack message's arrival ends each measurement.
Prints p50 / p95 / max over all crossings, split into "→ file in the lake" (the crossing event's
Parquet file's mtime) and "lake → Slack", the achieved background rate, how much of it the lake
held at the end, and serve's CPU.

How events go in (--via, --mode):
  --via kafka               (default) a broker of the bench's own (ingest/broker/kafka-local.sh on
                            127.0.0.1:29093); crossing events produced with kafka-python, the clock
                            starting right before `send()`; background lines through kcat
                            (librdkafka, C), so the harness itself takes little CPU. serve consumes
                            the topic.
  --via http --mode spool   no broker at all: serve runs embedded with an [intake] on 127.0.0.1, a
                            200 from POST /v1/events means fsynced to its local spool, which the
                            same process lands.
  --via http --mode kafka   the same broker as --via kafka; serve's intake produces what it accepts
                            to the topic (acks=all) before answering 200, and serve consumes it.
With --via http every crossing event is one `requests.post(intake + "/v1/events")` (bearer token)
and the clock starts when it returns 200 (acknowledged = durable; a 503 is retried and the clock
starts at the 200); the background load is one thread posting JSON arrays of 500 events on a
keep-alive requests.Session at --rate, also printed: time to acknowledge, errors by status.

Crossing amounts are exact: gpt-4o input costs $2.50 per million tokens in the built-in catalog, so
a request of 3,000,000 input tokens and no output costs $7.50 (75% of $10), 300,000 more $0.75.

Alerts that come together (--keys K, K > 1): every cycle warms up K fresh keys to 75% at once, then
--every/3 seconds later sends K crossing events back to back: key j jumps to 82.5%, 92.5% or 102.5%
(j mod 3), so one key crosses 80%, one 90% and one 100% in the same second (the lower thresholds a
jump passes are recorded, not sent). By default the Slack channel then also takes
`budget_forecast` (--kinds): the warm-ups' forecasts share the channel's queue, as in production.
Each crossing's own message ends its measurement (a grouped message names every alert it carries),
so p50 / p95 are per alert; the message count says how many Slack posts carried them.

    python bench/freshness.py                  # Kafka, 10k events/s, 12 crossing cycles
    python bench/freshness.py --rate 2000 --cycles 5 --batch-max-age 0.5
    python bench/freshness.py --via http --mode spool
    python bench/freshness.py --via http --mode kafka
    python bench/freshness.py --via http --mode spool --rate 3000 --keys 3   # three keys at once
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.intake import TICK, cpu_ticks, machine_busy  # noqa: E402
from tests.receivers import slack_receiver  # noqa: E402

KCAT = shutil.which("kcat") or "/usr/bin/kcat"
BROKER = ["bash", str(ROOT / "ingest" / "broker" / "kafka-local.sh")]
BROKER_ENV = {**os.environ, "KAFKA_PORT": "29093", "KAFKA_HOME": "/var/tmp/spendlake-bench-freshness-kafka"}
BOOTSTRAP = f"127.0.0.1:{BROKER_ENV['KAFKA_PORT']}"
TOKEN_ENV = "BENCH_FRESHNESS_INTAKE_TOKENS"
HTTP_BATCH = 500  # background events per POST /v1/events
LIMIT = 10.0  # USD, each crossing key's budget
M = 1_000_000


def config(lake: Path, key_ids: list[str], batch_max_age: float, interval: str, topic: str | None, intake: bool,
           kinds: list[str]) -> str:  # fmt: skip
    keys = "\n".join(
        f'[[virtual_keys]]\nid = "{k}"\nteam_id = "team-bench"\n'
        f'budgets = [{{ max_limit = {LIMIT}, reset_duration = "1d" }}]\n'
        for k in key_ids
    )
    kafka = f'[kafka]\nbootstrap_servers = "{BOOTSTRAP}"\ntopic = "{topic}"\ngroup_id = "bench-{topic}"\n'
    http = f'[intake]\nlisten = "127.0.0.1:0"\ntokens_env = "{TOKEN_ENV}"\n'
    return f"""
[lake]
path = "{lake}"
{kafka if topic else ""}{http if intake else ""}[ingest]
batch_max_age = {batch_max_age}
[metrics]
listen = "127.0.0.1:0"
[alerts]
evaluation_interval = "{interval}"
[[channels]]
name = "bench-slack"
type = "slack"
url_env = "BENCH_SLACK_URL"
kinds = {json.dumps(kinds)}
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


# --- the ways in: send(crossing) returns when the clock starts; background(events) returns how many went in


class ViaKafka:
    """Crossing events produced with kafka-python; background lines through kcat (librdkafka, C):
    the harness should not eat the CPU serve needs; this process only writes paced lines into
    kcat's stdin."""

    start = "produce"
    batch = 1  # background events go to kcat as soon as they are due

    def __init__(self, topic: str) -> None:
        from kafka import KafkaProducer

        self.topic = topic
        self.producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=5, batch_size=256 * 1024, acks=1)
        self.kcat = subprocess.Popen([KCAT, "-P", "-b", BOOTSTRAP, "-t", topic, "-X", "linger.ms=5"],
                                     stdin=subprocess.PIPE)  # fmt: skip

    def send(self, event: bytes) -> float:
        t = time.time()
        self.producer.send(self.topic, event)
        self.producer.flush(1)
        return t

    def background(self, events: list[bytes]) -> int:
        assert self.kcat.stdin is not None
        self.kcat.stdin.write(b"".join(e + b"\n" for e in events))
        self.kcat.stdin.flush()
        return len(events)

    def report(self) -> None:
        pass

    def close(self) -> None:
        assert self.kcat.stdin is not None
        self.kcat.stdin.close()
        self.kcat.wait(30)
        self.producer.close()


class ViaHttp:
    """POST /v1/events: crossing events one per `requests.post`, the clock starting at the 200;
    background in JSON arrays of HTTP_BATCH on the loader thread's keep-alive session."""

    start = "acknowledged"
    batch = HTTP_BATCH

    def __init__(self, intake_url: str, token: str) -> None:
        self.url = intake_url + "/v1/events"
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.session = requests.Session()  # the loader thread's only
        self.ack_s: dict[str, list[float]] = {"crossing": [], "background": []}  # POST → 200
        self.errors: dict[str, int] = {}

    def _post(self, post: Callable[..., requests.Response], events: list[bytes], kind: str) -> int:
        """Events acknowledged (0 unless the answer is a 200)."""
        t0 = time.perf_counter()
        try:
            r = post(self.url, data=b"[" + b",".join(events) + b"]", headers=self.headers, timeout=30)
            status = str(r.status_code)
            accepted = int(orjson.loads(r.content)["accepted"]) if status == "200" else 0
        except requests.RequestException as exc:
            status, accepted = type(exc).__name__, 0
        if status == "200":
            self.ack_s[kind].append(time.perf_counter() - t0)
        else:
            self.errors[f"{kind} {status}"] = self.errors.get(f"{kind} {status}", 0) + 1
        return accepted

    def send(self, event: bytes) -> float:
        deadline = time.monotonic() + 30
        while self._post(requests.post, [event], "crossing") != 1:  # a 503 says: send again
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: FAILED: {self.url} did not acknowledge a crossing event in 30 s "
                                 f"({self.errors})")  # fmt: skip
            time.sleep(0.2)
        return time.time()

    def background(self, events: list[bytes]) -> int:
        post = self.session.post
        return sum(self._post(post, events[k : k + self.batch], "background") for k in range(0, len(events), self.batch))

    def report(self) -> None:
        parts = []
        for kind, values in self.ack_s.items():
            if values:
                s = sorted(values)
                parts.append(f"{kind} p50 {1000 * statistics.median(s):.0f} ms, p99 {1000 * _pct(s, 0.99):.0f} ms, "
                             f"max {1000 * s[-1]:.0f} ms ({len(s):,} requests)")  # fmt: skip
        errors = ", ".join(f"{k}×{v}" for k, v in sorted(self.errors.items())) or "none"
        print(f"POST /v1/events → 200: {'; '.join(parts)}; errors: {errors}")

    def close(self) -> None:
        self.session.close()


def pace(rate: int, batch: int, send: Callable[[list[bytes]], int], stop: threading.Event, went_in: list[int]) -> None:
    """Background events at `rate`/s, in whole batches of `batch`, until `stop`; `went_in[0]` counts
    the events `send` took."""
    i = 0
    t0 = time.perf_counter()
    while not stop.is_set():
        due = int((time.perf_counter() - t0) * rate)
        due -= (due - i) % batch
        if due > i:
            now_ms = int(time.time() * 1000)
            went_in[0] += send([background(j, now_ms) for j in range(i, due)])
            i = due
        time.sleep(0.01)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--via", choices=("kafka", "http"), default="kafka",
                    help="how events go in: produced to Kafka (default), or POST /v1/events to serve's intake")
    ap.add_argument("--mode", choices=("spool", "kafka"),
                    help="with --via http, where the intake makes what it accepts durable: its local spool (no "
                         "broker at all) or the bench's broker (the default)")  # fmt: skip
    ap.add_argument("--rate", type=int, default=10_000,
                    help="background events per second, every way in (default 10000)")  # fmt: skip
    ap.add_argument("--cycles", type=int, default=12,
                    help="crossing cycles: two crossings each, or --keys crossings at once (default 12)")
    ap.add_argument("--keys", type=int, default=1,
                    help="keys crossing in the same second each cycle: one at 80%%, one at 90%%, one at 100%%, "
                         "... (default 1: one key crossing 80%% then 90%%)")
    ap.add_argument("--kinds", help="alert kinds the Slack channel takes, comma-separated (default budget; with "
                                    "--keys > 1 budget,budget_forecast)")
    ap.add_argument("--every", type=float, default=6.0,
                    help="seconds per cycle: warm-up, 80%% and 90%% crossings a third apart (default 6)")
    ap.add_argument("--batch-max-age", type=float, default=1.0, help="[ingest] batch_max_age of serve (default 1.0)")
    ap.add_argument("--interval", default="5s", help="[alerts] evaluation_interval (default 5s)")
    ap.add_argument("--keep", action="store_true", help="keep the lake and logs")
    args = ap.parse_args()
    if args.via == "kafka" and args.mode == "spool":
        ap.error("--mode spool needs --via http (with --via kafka the bench itself produces to the broker)")
    if args.rate < 1 or args.cycles < 1 or args.every <= 0 or args.keys < 1:
        ap.error("--rate, --cycles, --keys and --every must be > 0")
    kinds = (args.kinds or ("budget" if args.keys == 1 else "budget,budget_forecast")).split(",")
    key_ids = ([f"vk-cross-{c}" for c in range(args.cycles)] if args.keys == 1 else
               [f"vk-cross-{c}-{j}" for c in range(args.cycles) for j in range(args.keys)])  # fmt: skip
    way = "kafka" if args.via == "kafka" else f"http+{args.mode or 'kafka'}"
    broker = way != "http+spool"

    work = Path(tempfile.mkdtemp(prefix="spendlake-freshness-"))
    topic = f"fresh-{uuid.uuid4().hex[:8]}" if broker else None
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"via {way}; load average {load} (1, 5, 15 min) on {len(os.sched_getaffinity(0))} cores; "
          f"{args.keys} key(s) crossing at once; Slack takes {', '.join(kinds)}", flush=True)
    if broker:
        print(f"broker: starting on {BROKER_ENV['KAFKA_PORT']} ...", flush=True)
        subprocess.run([*BROKER, "start"], env=BROKER_ENV, check=True, capture_output=True)
        subprocess.run([*BROKER, "topic", str(topic), "1"], env=BROKER_ENV, check=True, capture_output=True)
    slack = slack_receiver()
    cfg = work / "spendlake.toml"
    cfg.write_text(config(work / "lake", key_ids, args.batch_max_age, args.interval, topic, args.via == "http",
                          kinds))  # fmt: skip
    log = work / "serve.log"
    token = secrets.token_urlsafe(24)
    env = {**os.environ, "BENCH_SLACK_URL": slack.url, TOKEN_ENV: token}
    serve = subprocess.Popen([sys.executable, "-m", "spendlake", "serve", "--config", str(cfg)],
                             stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env, cwd=ROOT)  # fmt: skip
    stop = threading.Event()
    loader: threading.Thread | None = None
    via: ViaKafka | ViaHttp | None = None
    try:
        intake = _wait_ready(serve, log, args.via == "http")
        via = ViaHttp(intake, token) if intake else ViaKafka(str(topic))
        sent: dict[str, float] = {}  # expected Slack title fragment -> when the clock started
        sent_ids: dict[str, str] = {}  # the same -> the crossing event's id
        went_in = [0]
        cpu0, busy0 = _cpu_seconds(serve.pid), machine_busy()
        t0 = time.perf_counter()
        loader = threading.Thread(target=pace, args=(args.rate, via.batch, via.background, stop, went_in), daemon=True)
        loader.start()
        time.sleep(3)  # let serve reach steady state under load
        t_start = time.perf_counter()
        for c in range(args.cycles):
            if args.keys == 1:
                key = f"vk-cross-{c}"
                via.send(crossing(key, 0, 3 * M))  # 75%: no alert
                time.sleep(args.every / 3)
                for n, pct, tokens in ((1, 80, 3 * M // 10), (2, 90, 4 * M // 10)):  # to 82.5%, then 92.5%
                    sent[f"{key} at {pct}% of budget"] = via.send(crossing(key, n, tokens))
                    sent_ids[f"{key} at {pct}% of budget"] = f"{key}-{n}"
                    time.sleep(args.every / 3)
            else:
                keys = [f"vk-cross-{c}-{j}" for j in range(args.keys)]
                for key in keys:
                    via.send(crossing(key, 0, 3 * M))  # 75% each: a forecast maybe, no threshold
                time.sleep(args.every / 3)
                for j, key in enumerate(keys):  # back to back: to 82.5%, 92.5%, 102.5%, 82.5%, ...
                    pct = (80, 90, 100)[j % 3]
                    sent[f"{key} at {pct}% of budget"] = via.send(crossing(key, 1, (3 + 4 * (j % 3)) * M // 10))
                    sent_ids[f"{key} at {pct}% of budget"] = f"{key}-1"
                time.sleep(2 * args.every / 3)
            print(f"\rcycle {c + 1}/{args.cycles}, {went_in[0]:,} background events", end="", flush=True)
        deadline = time.time() + 30
        while time.time() < deadline and len(_arrivals(slack, sent)) < len(sent):
            time.sleep(0.1)
        elapsed = time.perf_counter() - t_start
        stop.set()
        loader.join(60)
        seconds = time.perf_counter() - t0
        cpu1, busy1 = _cpu_seconds(serve.pid), machine_busy()
        bg_landed = _background_landed(work / "lake")
        print()
        got = _arrivals(slack, sent)
        lat = sorted(got[k] - sent[k] for k in got)
        print(f"background rate achieved: {went_in[0] / (elapsed + 3):,.0f} events/s (target {args.rate:,}); "
              f"batch_max_age {args.batch_max_age} s, evaluation_interval {args.interval}")  # fmt: skip
        behind = went_in[0] - bg_landed
        print(f"background in the lake at the end: {bg_landed:,} of {went_in[0]:,} sent ({behind:,} behind, "
              f"{behind / args.rate:.1f} s of load)")  # fmt: skip
        cores = len(os.sched_getaffinity(0))
        machine = 100 * cores * (busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1)
        print("CPU over the run (% of one core): "
              + ", ".join(f"{who} {100 * (cpu1[who] - cpu0[who]) / seconds:.0f}%" for who in cpu1 if cpu1[who])
              + f"; whole machine {machine:.0f}% of {100 * cores}%")  # fmt: skip
        via.report()
        print(f"crossings: {len(sent)}, alerts received: {len(got)}, missing: {len(sent) - len(got)}"
              + (f" ({', '.join(sorted(set(sent) - set(got)))})" if len(got) < len(sent) else ""))
        posts = slack.requests
        carried = [sum(k in str((r.json or {}).get("text", "")) for k in sent) for r in posts]
        print(f"Slack messages: {len(posts)} in all ({sum(1 for n in carried if n > 1)} carried several crossings, "
              f"at most {max(carried, default=0)}; {sum(1 for n in carried if n == 0)} carried none, e.g. forecasts)")
        if lat:
            print(f"{via.start} → Slack: {_summary(lat)}")
            print("  in order (s): " + " ".join(f"{got[k] - sent[k]:.2f}" for k in sent if k in got))
        landed = _landed(work / "lake", sent_ids)
        split = [(landed[k] - sent[k], got[k] - landed[k]) for k in got if k in landed]
        if split:
            a, b = zip(*split)
            print(f"  of which {via.start} → file in the lake: {_summary(a)}; lake → Slack: {_summary(b)}")
        seen = [k for r in posts for k in sent if k in str((r.json or {}).get("text", ""))]
        print(f"duplicate crossing alerts: {len(seen) - len(set(seen))}")
        return 0 if len(got) == len(sent) else 1
    finally:
        stop.set()
        if loader is not None:
            loader.join(60)
        if via is not None:
            via.close()
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(60)
        except subprocess.TimeoutExpired:
            serve.kill()
        slack.close()
        if broker:
            subprocess.run([*BROKER, "stop"], env=BROKER_ENV, capture_output=True)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)



def _wait_ready(serve: subprocess.Popen[bytes], log: Path, intake: bool) -> str | None:
    """Waits until serve serves /metrics (and its intake, when `intake`); the intake's URL."""
    while True:
        text = log.read_text(errors="replace")
        m = re.search(r"intake on (http://127\.0\.0\.1:\d+)", text)
        if "serving /metrics" in text and (m or not intake):
            return m.group(1) if m else None
        if serve.poll() is not None:
            raise SystemExit(f"serve exited:\n{text[-2000:]}")
        time.sleep(0.2)


def _cpu_seconds(serve_pid: int) -> dict[str, float]:
    """CPU seconds used so far by serve, the bench's broker (0 when none) and this process."""
    try:
        broker: int | None = int((Path(BROKER_ENV["KAFKA_HOME"]) / "kafka.pid").read_text().strip())
    except (OSError, ValueError):
        broker = None
    return {"serve": cpu_ticks(serve_pid) / TICK, "broker": cpu_ticks(broker) / TICK, "bench": sum(os.times()[:2])}


def _pct(s: list[float] | tuple[float, ...], q: float) -> float:
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def _summary(values: list[float] | tuple[float, ...]) -> str:
    s = sorted(values)
    return f"p50 {statistics.median(s):.3f} s, p95 {_pct(s, 0.95):.3f} s, max {s[-1]:.3f} s"


def _background_landed(lake: Path) -> int:
    import duckdb

    query = f"SELECT count(*) FROM read_parquet('{lake}/events/*/*.parquet') WHERE event_id LIKE 'bg-%'"
    return int(duckdb.execute(query).fetchall()[0][0])


def _landed(lake: Path, ids: dict[str, str]) -> dict[str, float]:
    """When each crossing event's lake file was committed (its mtime)."""
    import duckdb

    rows = duckdb.execute(
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
