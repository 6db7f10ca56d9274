"""How much usage a real `spendlake serve` acknowledges over HTTP (contract 7), and how fast.

Starts `spendlake serve` with an [intake] section on 127.0.0.1 (loopback only), drives it with N
client threads (one keep-alive `requests.Session` each) and prints, per mode and endpoint:
records/s acknowledged (HTTP 200 = durable), p50 / p99 time to acknowledge, errors by status code,
and serve's CPU share (utime+stime from /proc/<pid>/stat over the phase, % of one core). The broker,
the bench's own clients and "others" (everything else busy on the machine, from /proc/stat) are
shown beside it: on a small or shared machine they take the same cores, so read them first.

Modes (--mode):
  spool   no [kafka]: serve runs embedded, a 200 means written and fsynced to its local spool,
          and the same process lands the spool in the lake.
  kafka   a local broker (ingest/broker/kafka-local.sh on 127.0.0.1:--kafka-port, data in
          /var/tmp/spendlake-bench-kafka-PORT), a fresh topic with 3 partitions; a 200 means
          produced with acks=all; serve consumes the topic into the lake itself.
  both    spool, then kafka (the default).

Endpoints, each in two phases of --seconds:
  POST /v1/events   JSON arrays of --events-batch (500) canonical events: the builtin catalog's
                    models (gpt-4o-mini, gpt-4o, claude-sonnet-4-5, gemini-2.5-flash, ...), 2,000
                    virtual keys, teams, customers, tags, cached and reasoning tokens now and then.
  POST /v1/traces   OTLP/HTTP protobuf ExportTraceServiceRequests of --spans-batch (100) GenAI
                    spans (opentelemetry.proto classes): gen_ai.provider.name, gen_ai.request.model,
                    gen_ai.response.model, gen_ai.usage.input_tokens / output_tokens,
                    spendlake.virtual_key, plus attributes the intake skips (server.address,
                    gen_ai.response.id, finish reasons), one resource with service.name per body.
  phase "max"       closed loop: every client sends its next body as soon as the last is answered.
  phase "at R/s"    open loop at a fixed offered rate R records/s (--rate; default half of the
                    "max" just measured for that mode and endpoint), to measure latency below
                    saturation; --rate applies to both endpoints. Before it the bench waits until
                    the lake holds everything acknowledged so far ("lake caught up"), so the phase
                    meets a steady serve, not one still landing the max phase's backlog.
                    Latency is send → answer; "p99 sched" counts from the planned send time
                    instead, so a client that fell behind shows up (no coordinated omission).

Bodies are encoded before timing: 32 templates per endpoint whose event ids (JSON) or trace ids
(protobuf) hold a fixed-width placeholder; each request stamps a fresh sequence number into it
(one bytes.replace, same length), so every acknowledged event has a unique event_id.

At the end of each mode the bench waits (at most --land-timeout) until the lake holds every
acknowledged event, polling `python -m spendlake query "select count(distinct event_id) from
events"`, and prints "landed N of M acknowledged"; exit 1 if N != M for any mode.

Targets printed beside the results: /v1/events >= 30,000 events/s acknowledged with a broker beside
it, p99 <= 100 ms at half that rate; /v1/traces (protobuf) >= 15,000 spans/s.

    python bench/intake.py                                  # both modes, 4 clients, 20 s phases
    python bench/intake.py --mode spool --seconds 10
    python bench/intake.py --mode kafka --rate 5000 --keep-broker
    python bench/intake.py --endpoints traces --clients 8

Bounded: every phase stops after --seconds or --max-records, serve and the broker get bounded
start and stop waits, and every request has a 30 s timeout. The default run takes ~3 minutes on
2 cores (spool ~1.5, kafka ~1.7 including the broker's start).
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BROKER = ["bash", str(ROOT / "ingest" / "broker" / "kafka-local.sh")]
TICK = os.sysconf("SC_CLK_TCK")
TEMPLATES = 32  # distinct bodies per endpoint; each request stamps a fresh sequence number into one
TARGETS = {"events": 30_000, "traces": 15_000}  # records/s acknowledged
TARGET_P99_MS = 100.0  # /v1/events at half the target rate
TOKEN_ENV = "SPENDLAKE_BENCH_INTAKE_TOKEN"

# (provider as in contract 1, OpenTelemetry gen_ai.provider.name, model, weight, reasoning?);
# every model is in the builtin catalog; cheap models dominate real traffic
MODELS = [
    ("openai", "openai", "gpt-4o-mini", 20, False), ("openai", "openai", "gpt-4o", 10, False),
    ("openai", "openai", "gpt-4.1", 6, False), ("openai", "openai", "o4-mini", 5, True),
    ("anthropic", "anthropic", "claude-sonnet-4-5", 12, False),
    ("anthropic", "anthropic", "claude-haiku-4-5", 10, False),
    ("gemini", "gcp.gemini", "gemini-2.5-flash", 12, False), ("gemini", "gcp.gemini", "gemini-2.5-pro", 4, True),
    ("bedrock", "aws.bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", 6, False),
    ("mistral", "mistral_ai", "mistral-small-latest", 5, False),
]  # fmt: skip
FEATURES = ["chat", "search", "summarize", "agent", "codegen", "classify"]
SERVICES = ["checkout-assistant", "support-bot", "search-api", "doc-summarizer", "code-review"]
JSON_MARK = b"##########"  # 10 digits of the request's sequence number go here
PROTO_MARK = b"\xa5SPLKSEQ"  # 8 bytes of each trace id; the sequence number (8 bytes) goes here


# --- bodies -------------------------------------------------------------------------------------


@dataclass
class Template:
    body: bytes
    mark: bytes
    records: int

    def render(self, seq: int) -> bytes:
        stamp = b"%010d" % seq if self.mark == JSON_MARK else seq.to_bytes(8, "big")
        return self.body.replace(self.mark, stamp)


def _usage(rng: random.Random, reasons: bool) -> tuple[int, int, int, int]:
    inp = max(5, min(200_000, int(rng.lognormvariate(7.3, 1.1))))
    out = max(1, min(32_000, int(rng.lognormvariate(5.6, 1.0))))
    cached = int(inp * rng.random() * 0.9) if rng.random() < 0.35 else 0
    reasoning = int(out * rng.uniform(0.3, 0.9)) if reasons else 0
    return inp, out, cached, reasoning


def event_templates(run: str, batch: int, seed: int = 7) -> list[Template]:
    """JSON arrays of `batch` contract-1 events; event_id = run-##########-index."""
    import orjson

    rng = random.Random(seed)
    weights = [m[3] for m in MODELS]
    now_ms = int(time.time() * 1000)
    out = []
    for _ in range(TEMPLATES):
        events = []
        for i in range(batch):
            provider, _, model, _, reasons = rng.choices(MODELS, weights)[0]
            vk = int(2000 * rng.random() ** 3)  # a few keys carry most traffic
            inp, outp, cached, reasoning = _usage(rng, reasons)
            e: dict[str, Any] = {
                "event_id": f"{run}-{JSON_MARK.decode()}-{i:04d}", "timestamp": now_ms - rng.randrange(60_000),
                "provider": provider, "model": model, "input_tokens": inp, "output_tokens": outp,
                "virtual_key": f"vk-{vk:04d}", "team": f"team-{vk % 40:02d}", "customer": f"customer-{vk % 8}",
                "latency_ms": round(150 + outp * rng.uniform(8, 25), 1), "status": "success", "status_code": 200,
            }  # fmt: skip
            if cached:
                e["cached_input_tokens"] = cached
            if reasoning:
                e["reasoning_tokens"] = reasoning
            if rng.random() < 0.02:
                e["status"], e["status_code"] = "error", 429
            if rng.random() < 0.5:
                e["tags"] = {"env": "prod", "feature": rng.choice(FEATURES)}
            events.append(e)
        body = orjson.dumps(events)
        assert body.count(JSON_MARK) == batch
        out.append(Template(body, JSON_MARK, batch))
    return out


def span_templates(run: str, batch: int, seed: int = 11) -> list[Template]:
    """ExportTraceServiceRequests of `batch` GenAI spans; trace id = PROTO_MARK + run + index."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue

    rng = random.Random(seed)
    weights = [m[3] for m in MODELS]
    run_b = bytes.fromhex(run[:8])
    now_ns = time.time_ns()

    def kv(key: str, value: Any) -> KeyValue:
        if isinstance(value, int):
            return KeyValue(key=key, value=AnyValue(int_value=value))
        if isinstance(value, list):
            values = [AnyValue(string_value=v) for v in value]
            return KeyValue(key=key, value=AnyValue(array_value=ArrayValue(values=values)))
        return KeyValue(key=key, value=AnyValue(string_value=value))

    out = []
    for _ in range(TEMPLATES):
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        rs.resource.attributes.extend([kv("service.name", rng.choice(SERVICES)), kv("telemetry.sdk.language", "python"),
                                       kv("telemetry.sdk.name", "opentelemetry"),
                                       kv("telemetry.sdk.version", "1.38.0")])  # fmt: skip
        ss = rs.scope_spans.add()
        ss.scope.name, ss.scope.version = "opentelemetry.instrumentation.openai_v2", "2.1b0"
        for i in range(batch):
            _, otel_provider, model, _, reasons = rng.choices(MODELS, weights)[0]
            vk = int(2000 * rng.random() ** 3)
            inp, outp, cached, reasoning = _usage(rng, reasons)
            s = ss.spans.add()
            s.trace_id = PROTO_MARK + run_b + i.to_bytes(4, "big")
            s.span_id = rng.randbytes(8)
            s.name = f"chat {model}"
            s.kind = 3  # SPAN_KIND_CLIENT
            end = now_ns - rng.randrange(60_000_000_000)
            s.start_time_unix_nano = end - int((150 + outp * rng.uniform(8, 25)) * 1e6)
            s.end_time_unix_nano = end
            attrs = [kv("gen_ai.operation.name", "chat"), kv("gen_ai.provider.name", otel_provider),
                     kv("gen_ai.request.model", model), kv("gen_ai.response.model", model),
                     kv("gen_ai.response.id", f"chatcmpl-{rng.getrandbits(96):024x}"),
                     kv("gen_ai.response.finish_reasons", ["stop"]), kv("server.address", "api.example.com"),
                     kv("gen_ai.usage.input_tokens", inp), kv("gen_ai.usage.output_tokens", outp),
                     kv("spendlake.virtual_key", f"vk-{vk:04d}"), kv("spendlake.team", f"team-{vk % 40:02d}")]
            if cached:
                attrs.append(kv("gen_ai.usage.cache_read.input_tokens", cached))
            if reasoning:
                attrs.append(kv("gen_ai.usage.reasoning.output_tokens", reasoning))
            s.attributes.extend(attrs)
        body = req.SerializeToString()
        assert body.count(PROTO_MARK) == batch, "the trace id placeholder occurs outside trace ids"
        out.append(Template(body, PROTO_MARK, batch))
    return out


# --- measuring ----------------------------------------------------------------------------------


def cpu_ticks(pid: int | None) -> int:
    """utime + stime of a process (all its threads), in clock ticks; 0 when it is gone."""
    if pid is None:
        return 0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def machine_busy() -> tuple[int, int]:
    """(busy, total) ticks over all CPUs, from /proc/stat."""
    vals = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals) - idle, sum(vals)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q * len(s) + 0.5)) - 1))]  # nearest rank


@dataclass
class Phase:
    mode: str
    endpoint: str
    name: str
    offered: float | None  # records/s, None = closed loop
    seconds: float = 0.0
    requests: int = 0
    accepted: int = 0
    rejected: int = 0
    latency_ms: list[float] = field(default_factory=list)
    sched_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # who → % of one core
    machine: float = 0.0  # % of all cores busy

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0


class Client:
    """One endpoint's load: templates, a shared sequence, and an answer parser."""

    def __init__(self, base: str, endpoint: str, templates: list[Template], token: str, seq: Any) -> None:
        self.url = f"{base}/v1/{endpoint}"
        self.endpoint = endpoint
        self.templates = templates
        self.batch = templates[0].records
        self.seq = seq
        ctype = "application/json" if endpoint == "events" else "application/x-protobuf"
        self.headers = {"Content-Type": ctype, "Authorization": f"Bearer {token}"}

    def accepted(self, status: int, content: bytes) -> tuple[int, int]:
        """(accepted, rejected) records of a 200 answer."""
        if self.endpoint == "events":
            import orjson

            a = orjson.loads(content)
            return int(a["accepted"]), int(a["rejected_count"])
        if not content:
            return self.batch, 0
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

        r = ExportTraceServiceResponse()
        r.ParseFromString(content)
        rejected = int(r.partial_success.rejected_spans)
        return self.batch - rejected, rejected

    def run(self, phase: Phase, clients: int, seconds: float, max_records: int,
            procs: dict[str, int | None]) -> Phase:  # fmt: skip
        """Closed loop when phase.offered is None, else open loop at phase.offered records/s."""
        import requests

        lock = threading.Lock()
        max_requests = max(1, max_records // self.batch)
        issued = itertools.count()
        per_req_s = None if phase.offered is None else self.batch / phase.offered
        t_start = deadline = 0.0  # set right before the workers start

        def worker() -> None:
            lat: list[float] = []
            sched: list[float] = []
            errors: dict[str, int] = {}
            acc = rej = n = 0
            session = requests.Session()
            try:
                while True:
                    k = next(issued)
                    if k >= max_requests:
                        break
                    planned = time.perf_counter() if per_req_s is None else t_start + k * per_req_s
                    if planned >= deadline or time.perf_counter() >= deadline:
                        break
                    wait = planned - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                    seq = next(self.seq)
                    body = self.templates[seq % len(self.templates)].render(seq)
                    t0 = time.perf_counter()
                    try:
                        r = session.post(self.url, data=body, headers=self.headers, timeout=30)
                        status, content = r.status_code, r.content
                    except requests.RequestException as exc:
                        status, content = 0, type(exc).__name__.encode()
                        session.close()
                        session = requests.Session()
                    t1 = time.perf_counter()
                    n += 1
                    if status == 200:
                        a, b = self.accepted(status, content)
                        acc, rej = acc + a, rej + b
                        lat.append((t1 - t0) * 1000)
                        sched.append((t1 - planned) * 1000)
                    else:
                        key = str(status) if status else content.decode()
                        errors[key] = errors.get(key, 0) + 1
                        if status == 503:
                            time.sleep(0.05)  # serve asked to retry later: don't spin
            finally:
                session.close()
            with lock:
                phase.requests += n
                phase.accepted += acc
                phase.rejected += rej
                phase.latency_ms += lat
                phase.sched_ms += sched
                for key, v in errors.items():
                    phase.errors[key] = phase.errors.get(key, 0) + v

        before = {who: cpu_ticks(pid) for who, pid in procs.items()}
        self_before = sum(os.times()[:2])
        busy0, total0 = machine_busy()
        t_start = time.perf_counter()
        deadline = t_start + seconds
        threads = [threading.Thread(target=worker, name=f"client-{i}", daemon=True) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 60)
        phase.seconds = time.perf_counter() - t_start
        busy1, total1 = machine_busy()
        ncpu = len(os.sched_getaffinity(0)) or 1
        for who, pid in procs.items():
            if pid is not None:
                phase.cpu[who] = 100 * (cpu_ticks(pid) - before[who]) / TICK / phase.seconds
        phase.cpu["bench"] = 100 * (sum(os.times()[:2]) - self_before) / phase.seconds
        phase.machine = 100 * ncpu * (busy1 - busy0) / max(total1 - total0, 1)
        phase.cpu["others"] = max(0.0, phase.machine - sum(phase.cpu.values()))  # other engineers' work, too
        return phase


# --- serve, broker, lake ------------------------------------------------------------------------


def write_config(work: Path, lake: Path, kafka: tuple[str, str] | None) -> Path:
    text = f"""
[lake]
path = "{lake}"
[pricing]
catalog = "builtin"
[metrics]
listen = "127.0.0.1:0"
[intake]
listen = "127.0.0.1:0"
tokens_env = "{TOKEN_ENV}"
"""
    if kafka:
        text += f'[kafka]\nbootstrap_servers = "{kafka[0]}"\ntopic = "{kafka[1]}"\ngroup_id = "bench-{kafka[1]}"\n'
    cfg = work / "spendlake.toml"
    cfg.write_text(text)
    return cfg


class Serve:
    def __init__(self, cfg: Path, log: Path, token: str) -> None:
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "spendlake", "serve", "--config", str(cfg)],
                                     stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=ROOT,
                                     env={**os.environ, TOKEN_ENV: token})  # fmt: skip
        deadline = time.monotonic() + 90
        while True:
            m = re.search(r"intake on (http://127\.0\.0\.1:\d+)", log.read_text(errors="replace"))
            if m:
                self.base = m.group(1)
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"bench: FAILED: serve did not start its intake:\n{self.tail()}")
            time.sleep(0.1)

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def landed(lake: Path, expected: int, timeout: float) -> tuple[int, int, float, str]:
    """Polls the lake until it holds `expected` distinct event ids (or timeout):
    (distinct event ids, rows, seconds waited, last query error)."""
    t0 = time.monotonic()
    distinct = rows = 0
    err = ""
    while True:
        r = subprocess.run([sys.executable, "-m", "spendlake", "query", "--lake", str(lake), "--format", "csv",
                            "select count(distinct event_id), count(*) from events"],
                           capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip
        if r.returncode == 0:
            last = r.stdout.strip().splitlines()[-1]
            distinct, rows = (int(x) for x in last.split(","))
            err = ""
        else:
            err = (r.stderr.strip().splitlines() or ["?"])[-1]
        waited = time.monotonic() - t0
        if distinct >= expected or waited > timeout:
            return distinct, rows, waited, err
        time.sleep(1.0)


class Broker:
    def __init__(self, port: int) -> None:
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        self.env = {**os.environ, "KAFKA_PORT": str(port), "KAFKA_HOME": f"/var/tmp/spendlake-bench-kafka-{port}"}
        self.pid: int | None = None

    def start(self) -> str:
        t = time.perf_counter()
        r = subprocess.run(BROKER + ["start"], env=self.env, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise SystemExit(f"bench: FAILED: broker start (is Java 17 installed?):\n{r.stderr[-2000:]}")
        pidfile = Path(self.env["KAFKA_HOME"]) / "kafka.pid"
        self.pid = int(pidfile.read_text().strip()) if pidfile.exists() else None
        return "already running" if "already running" in r.stderr else f"started in {time.perf_counter() - t:.1f} s"

    def topic(self, partitions: int) -> str:
        from kafka.admin import KafkaAdminClient, NewTopic

        name = f"intake-bench-{uuid.uuid4().hex[:8]}"
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            admin.create_topics([NewTopic(name, partitions, 1)])
        finally:
            admin.close()
        return name

    def drop(self, topic: str) -> None:
        """Delete the bench's topic, so repeated runs do not fill the broker's data directory."""
        from kafka.admin import KafkaAdminClient

        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
            try:
                admin.delete_topics([topic])
            finally:
                admin.close()
        except Exception as exc:  # noqa: BLE001 — a leftover topic is not a failed bench
            print(f"broker: could not delete topic {topic} ({type(exc).__name__})")

    def stop(self) -> None:
        subprocess.run(BROKER + ["stop"], env=self.env, capture_output=True, timeout=120)


# --- reporting ----------------------------------------------------------------------------------


def errors_text(errors: dict[str, int]) -> str:
    return ", ".join(f"{k}×{v}" for k, v in sorted(errors.items())) or "none"


def verdict(ph: Phase) -> str:
    target = TARGETS[ph.endpoint]
    unit = "events/s" if ph.endpoint == "events" else "spans/s"
    where = " (set for kafka mode)" if ph.endpoint == "events" and ph.mode != "kafka" else ""
    if ph.offered is None:
        ok = ph.rate >= target
        return f"target{where} ≥{target:,} {unit}: " + ("MET" if ok else f"missed ({100 * ph.rate / target:.0f}%)")
    if ph.endpoint == "events":
        p99 = pct(ph.latency_ms, 0.99)
        half = TARGETS["events"] // 2
        note = "" if ph.offered >= half else f" [offered {ph.offered:,.0f}/s < the {half:,}/s the target names]"
        return (f"target{where} p99 ≤{TARGET_P99_MS:.0f} ms at half of {target:,}/s: "
                + ("MET" if p99 <= TARGET_P99_MS else "missed") + note)
    return ""


def print_phase(ph: Phase) -> None:
    unit = "events" if ph.endpoint == "events" else "spans"
    cpu = ", ".join(f"{who} {v:.0f}%" for who, v in ph.cpu.items())
    print(f"  {ph.mode:<6}/v1/{ph.endpoint:<7} {ph.name:<14} {ph.rate:>9,.0f} {unit}/s acknowledged "
          f"({ph.requests:,} requests in {ph.seconds:.1f} s, {ph.accepted:,} {unit}"
          + (f", {ph.rejected:,} rejected" if ph.rejected else "") + ")", flush=True)
    print(f"         ack p50 {pct(ph.latency_ms, 0.5):.1f} ms, p99 {pct(ph.latency_ms, 0.99):.1f} ms"
          + (f" (p99 sched {pct(ph.sched_ms, 0.99):.1f} ms)" if ph.offered is not None else "")
          + f"; errors: {errors_text(ph.errors)}; CPU (% of one core): {cpu}; machine {ph.machine:.0f}% of "
          f"{100 * len(os.sched_getaffinity(0))}%", flush=True)
    v = verdict(ph)
    if v:
        print(f"         {v}", flush=True)


# --- a mode -------------------------------------------------------------------------------------


@dataclass
class ModeResult:
    mode: str
    phases: list[Phase]
    acknowledged: int
    landed: int
    rows: int
    wait_s: float
    error: str = ""


def run_mode(mode: str, args: argparse.Namespace, work: Path, bodies: dict[str, list[Template]]) -> ModeResult:
    print(f"\n== mode {mode} == load {Path('/proc/loadavg').read_text().split()[:3]} (1, 5, 15 min)", flush=True)
    mwork = work / mode
    mwork.mkdir()
    lake = mwork / "lake"
    broker = None
    kafka = None
    if mode == "kafka":
        broker = Broker(args.kafka_port)
        how = broker.start()
        topic = broker.topic(args.partitions)
        kafka = (broker.bootstrap, topic)
        print(f"broker: {broker.bootstrap} (pid {broker.pid}), {how}; topic {topic} ({args.partitions} partitions)")
    token = secrets.token_urlsafe(24)
    cfg = write_config(mwork, lake, kafka)
    phases: list[Phase] = []
    serve = None
    acknowledged = 0
    try:
        t = time.perf_counter()
        serve = Serve(cfg, mwork / "serve.log", token)
        how = "produces to Kafka (acks=all) and consumes it" if kafka else "embedded: fsynced spool, landed in-process"
        print(f"serve: pid {serve.proc.pid}, intake {serve.base}, up in {time.perf_counter() - t:.1f} s, {how}",
              flush=True)  # fmt: skip
        procs: dict[str, int | None] = {"serve": serve.proc.pid}
        if broker is not None:
            procs["broker"] = broker.pid
        seq = itertools.count(1)
        for endpoint in args.endpoints:
            client = Client(serve.base, endpoint, bodies[endpoint], token, seq)
            # warm-up (not timed): connections, the Kafka producer's first metadata, lazy imports
            warm = client.run(Phase(mode, endpoint, "warm-up", None), 2, 1.0, 4 * client.batch, procs)
            acknowledged += warm.accepted
            if warm.errors:
                print(f"  warm-up errors on /v1/{endpoint}: {errors_text(warm.errors)}\n{serve.tail(1500)}")
            top = client.run(Phase(mode, endpoint, f"max ({args.clients} cl.)", None), args.clients, args.seconds,
                             args.max_records, procs)  # fmt: skip
            acknowledged += top.accepted
            phases.append(top)
            print_phase(top)
            # let serve land what the max phase left behind, so the fixed rate meets a steady serve
            n, _, waited, _ = landed(lake, acknowledged, args.land_timeout)
            print(f"         lake caught up: {n:,} of {acknowledged:,} acknowledged landed {waited:.1f} s after it"
                  + ("" if n == acknowledged else " (NOT all: going on)"), flush=True)  # fmt: skip
            rate = args.rate or max(top.rate / 2, client.batch)  # at least one request a second
            fixed = client.run(Phase(mode, endpoint, f"at {rate:,.0f}/s", rate), args.clients, args.seconds,
                               args.max_records, procs)  # fmt: skip
            acknowledged += fixed.accepted
            phases.append(fixed)
            print_phase(fixed)
            if serve.proc.poll() is not None:
                print(f"serve exited with {serve.proc.returncode}:\n{serve.tail()}")
                break
        t = time.perf_counter()
        n, rows, waited, err = landed(lake, acknowledged, args.land_timeout)
        line = f"lake: landed {n:,} of {acknowledged:,} acknowledged (distinct event_id; {rows:,} rows)"
        if n == acknowledged:
            line += f", all there {waited:.1f} s after the last acknowledgement"
        else:
            line += (f" after waiting {waited:.0f} s (--land-timeout): "
                     f"{'MISSING' if n < acknowledged else 'EXTRA'} {abs(acknowledged - n):,}")
            line += f"; last query error: {err}" if err else ""
        print(line, flush=True)
        return ModeResult(mode, phases, acknowledged, n, rows, waited, err)
    finally:
        if serve is not None:
            rc = serve.stop()
            if rc not in (0, None):
                print(f"serve exited with {rc} on SIGTERM:\n{serve.tail(1500)}")
        if broker is not None and not args.keep_broker:
            if kafka is not None:
                broker.drop(kafka[1])
            broker.stop()
        elif broker is not None:
            print(f"broker left running on {broker.bootstrap} (KAFKA_PORT={broker.port} "
                  f"KAFKA_HOME={broker.env['KAFKA_HOME']} bash ingest/broker/kafka-local.sh stop)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("spool", "kafka", "both"), default="both",
                   help="spool: serve without [kafka]; kafka: with a local broker; both (default): spool, then kafka")
    p.add_argument("--endpoints", default="events,traces",
                   help="comma-separated: events (/v1/events), traces (/v1/traces); default both")
    p.add_argument("--clients", type=int, default=4, help="client threads, one keep-alive session each (default 4)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each phase (default 20)")
    p.add_argument("--rate", type=float,
                   help="offered records/s of the fixed-rate phase (default: half the max just measured, per mode "
                        "and endpoint)")
    p.add_argument("--events-batch", type=int, default=500, help="events per /v1/events request (default 500)")
    p.add_argument("--spans-batch", type=int, default=100, help="spans per /v1/traces request (default 100)")
    p.add_argument("--max-records", type=int, default=3_000_000,
                   help="stop a phase after this many records even before --seconds (default 3,000,000)")
    p.add_argument("--kafka-port", type=int, default=19692,
                   help="port of the bench's own broker (default 19692; its controller takes the next port); "
                        "data in /var/tmp/spendlake-bench-kafka-PORT")
    p.add_argument("--partitions", type=int, default=3, help="partitions of the fresh topic (default 3)")
    p.add_argument("--keep-broker", action="store_true",
                   help="leave the broker running at the end, with the bench's topic (default: delete the topic, "
                        "stop the broker)")
    p.add_argument("--land-timeout", type=float, default=120.0,
                   help="at most this long, per mode, for the lake to hold every acknowledged event (default 120 s)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (lakes, serve logs, configs)")
    args = p.parse_args()
    args.endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    if not args.endpoints or set(args.endpoints) - {"events", "traces"}:
        p.error("--endpoints: a comma-separated list of events, traces")
    if args.clients < 1 or args.seconds <= 0 or args.events_batch < 1 or args.spans_batch < 1:
        p.error("--clients, --seconds and the batch sizes must be > 0")

    import requests
    from google.protobuf.internal import api_implementation

    print(f"machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {platform.platform()}")
    print(f"python {platform.python_version()}, requests {requests.__version__}, protobuf "
          f"{api_implementation.Type()}; {args.clients} clients, {args.seconds:.0f} s phases, batches of "
          f"{args.events_batch} events / {args.spans_batch} spans")
    run = uuid.uuid4().hex[:8]
    t = time.perf_counter()
    bodies = {}
    if "events" in args.endpoints:
        bodies["events"] = event_templates(run, args.events_batch)
    if "traces" in args.endpoints:
        bodies["traces"] = span_templates(run, args.spans_batch)
    mean = {k: sum(len(b.body) for b in v) / len(v) for k, v in bodies.items()}
    sizes = ", ".join(f"/v1/{k} {mean[k] / 1024:,.0f} KiB ({mean[k] / v[0].records:,.0f} B/record)"
                      for k, v in bodies.items())
    print(f"bodies: {TEMPLATES} per endpoint encoded in {time.perf_counter() - t:.1f} s; {sizes}")
    work = Path(tempfile.mkdtemp(prefix="spendlake-intake-bench-"))
    results: list[ModeResult] = []
    try:
        for mode in ("spool", "kafka") if args.mode == "both" else (args.mode,):
            results.append(run_mode(mode, args, work, bodies))
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print("\nsummary (records/s acknowledged; time to acknowledge; CPU as % of one core: serve / broker / "
          "bench clients / everything else on the machine)")
    print(f"  {'mode':<6} {'endpoint':<11} {'phase':<14} {'rec/s':>9} {'p50 ms':>8} {'p99 ms':>8}  "
          f"{'CPU serve/broker/bench/others':<30} {'errors':<10} target")
    for r in results:
        for ph in r.phases:
            cpu = "/".join(f"{ph.cpu[w]:.0f}" if w in ph.cpu else "-" for w in ("serve", "broker", "bench", "others"))
            print(f"  {ph.mode:<6} /v1/{ph.endpoint:<7} {ph.name:<14} {ph.rate:>9,.0f} {pct(ph.latency_ms, 0.5):>8.1f} "
                  f"{pct(ph.latency_ms, 0.99):>8.1f}  {cpu:<30} {errors_text(ph.errors):<10} {verdict(ph)}")
        print(f"  {r.mode:<6} lake: landed {r.landed:,} of {r.acknowledged:,} acknowledged"
              + ("" if r.landed == r.acknowledged else "  <-- NOT EQUAL"))
    print(f"targets: /v1/events ≥ {TARGETS['events']:,} events/s acknowledged with a broker beside it, "
          f"p99 ≤ {TARGET_P99_MS:.0f} ms at half that rate; /v1/traces (protobuf) ≥ {TARGETS['traces']:,} spans/s")
    return 0 if results and all(r.landed == r.acknowledged for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
