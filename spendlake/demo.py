"""`spendlake demo`: a month of synthetic LLM traffic through the real pipeline, end to end.

Starts a local Kafka broker (the same script the tests use), produces the traffic, ingests it
into a lake exactly as `spendlake ingest` does, and prints where the money went. One agent runs
away mid-month, which is the story the product exists for. `--no-kafka` tells the same story
through the file source on a machine without Java.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

BROKER_SCRIPT = Path(__file__).resolve().parents[1] / "ingest" / "broker" / "kafka-local.sh"
MODELS = [
    ("openai", "gpt-4o", 0.25), ("openai", "gpt-4o-mini", 0.2), ("openai", "o3-mini", 0.05),
    ("anthropic", "claude-sonnet-4-5", 0.15), ("anthropic", "claude-haiku-4-5", 0.08),
    ("gemini", "gemini-2.5-flash", 0.1), ("gemini", "gemini-2.5-pro", 0.04),
    ("mistral", "mistral-large-latest", 0.04), ("deepseek", "deepseek-chat", 0.03),
    ("bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", 0.03), ("xai", "grok-code-fast-1", 0.02),
    ("groq", "llama-3.3-70b-versatile", 0.01),  # not in the built-in catalog: shows up as unpriced, never $0
]  # fmt: skip
MONTH_START_MS = 1_761_955_200_000  # 2025-11-01T00:00:00Z
DAY_MS = 86_400_000
DEMO_PORT = 9092


def say(msg: str) -> None:
    sys.stderr.write(f"demo: {msg}\n")
    sys.stderr.flush()


def traffic(n: int, seed: int = 7) -> list[bytes]:
    """n events over 30 days for 3 customers, 6 teams, 60 virtual keys; vk-runaway-agent
    loops on gpt-4o for days 14–16 with huge prompts."""
    rng = random.Random(seed)
    teams = [(f"team-{t}", f"customer-{c}") for c, ts in
             (("acme", ("eng", "support")), ("globex", ("research", "sales")), ("initech", ("ops", "data")))
             for t in ts]  # fmt: skip
    keys = [(f"vk-{team.split('-', 1)[1]}-{i:02d}", team, cust) for team, cust in teams for i in range(10)]
    weights = [w for *_, w in MODELS]
    out = []
    for i in range(n):
        vk, team, cust = rng.choice(keys)
        provider, model, _ = rng.choices(MODELS, weights)[0]
        ts = MONTH_START_MS + rng.randrange(30 * DAY_MS)
        inp = int(rng.lognormvariate(7.0, 1.0)) + 20
        out_t = int(rng.lognormvariate(5.5, 0.8)) + 5
        if i % 20 == 0:  # the runaway agent: a loop re-sending a growing context
            vk, team, cust, provider, model = "vk-runaway-agent", "team-research", "customer-globex", "openai", "gpt-4o"
            ts = MONTH_START_MS + 14 * DAY_MS + rng.randrange(2 * DAY_MS)
            inp, out_t = rng.randrange(60_000, 120_000), rng.randrange(2_000, 4_000)
        ev: dict[str, Any] = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128))), "timestamp": ts, "provider": provider,
            "model": model, "input_tokens": inp, "output_tokens": out_t,
            "cached_input_tokens": inp // 3 if rng.random() < 0.3 else 0,
            "virtual_key": vk, "team": team, "customer": cust, "latency_ms": round(rng.uniform(200, 9000), 1),
            "status": "success" if rng.random() > 0.01 else "error",
        }  # fmt: skip
        out.append(orjson.dumps(ev))
    return out


def run(events: int, lake: str, no_kafka: bool, bootstrap: str | None, keep_broker: bool) -> int:
    from ingest.lake import Lake
    from ingest.pipeline import Pipeline
    from pricing import Catalog

    broker_env: dict[str, str] | None = None  # set when the demo starts (and stops) its own broker
    if not no_kafka and bootstrap is None:
        if shutil.which("java") is None:
            say("Java was not found: the demo runs a local Kafka broker on Java 17. "
                "Install Java, or run `spendlake demo --no-kafka`.")  # fmt: skip
            return 1
        if _port_taken(DEMO_PORT):
            say(f"127.0.0.1:{DEMO_PORT} is already taken; if a Kafka broker runs there, "
                f"use it: `spendlake demo --bootstrap-servers 127.0.0.1:{DEMO_PORT}`")  # fmt: skip
            return 1
        broker_env = {**os.environ, "KAFKA_PORT": str(DEMO_PORT), "KAFKA_HOME": "/var/tmp/spendlake-demo-kafka"}
    lake_path = Path(lake).resolve()
    say(f"generating {events:,} usage events for November 2025 (3 customers, 6 teams, 60 keys, 12 models)")
    values = traffic(events)
    pipeline = Pipeline(Lake(lake_path), Catalog.builtin())
    if no_kafka:
        from ingest.source import ingest_files

        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "demo-traffic.jsonl"
            src.write_bytes(b"\n".join(values) + b"\n")
            say(f"--no-kafka: ingesting {src.name} through the file source into {lake_path}")
            ingest_files([str(src)], pipeline)
    else:
        if broker_env is not None:
            say(f"starting a local Kafka broker on 127.0.0.1:{DEMO_PORT} (first run fetches its jars from Maven Central)")
            subprocess.run(["bash", str(BROKER_SCRIPT), "start"], env=broker_env, check=True)
            bootstrap = f"127.0.0.1:{DEMO_PORT}"
        assert bootstrap is not None
        try:
            _through_kafka(values, bootstrap, pipeline)
        finally:
            if broker_env is not None and not keep_broker:
                subprocess.run(["bash", str(BROKER_SCRIPT), "stop"], env=broker_env, check=False)
    _report(lake_path)
    return 0


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _through_kafka(values: list[bytes], bootstrap: str, pipeline: Any) -> None:
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    from ingest.consumer import KafkaIngestor, KafkaSettings

    topic = f"llm-usage-demo-{uuid.uuid4().hex[:6]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 3, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024)
    t0 = time.monotonic()
    for i, v in enumerate(values):
        producer.send(topic, value=v, key=orjson.loads(v)["virtual_key"].encode())
        if i and i % 20_000 == 0:
            say(f"produced {i:,} events to {topic}")
    producer.flush()
    producer.close()
    say(f"produced {len(values):,} events in {time.monotonic() - t0:.1f} s; ingesting (exactly once, into Parquet)")
    ks = KafkaSettings(bootstrap_servers=bootstrap, topic=topic, group_id=f"demo-{topic}")
    from spendlake.cli import Progress

    KafkaIngestor(ks.consumer(), topic, pipeline, exit_when_idle_s=2.0, progress=Progress(2.0)).run()


def _report(lake: Path) -> None:
    import duckdb

    con = duckdb.connect()
    con.execute(
        f"create view ev as select * from read_parquet('{lake}/events/*/*.parquet') "
        "qualify row_number() over (partition by event_id order by ingested_at) = 1"
    )
    total, n, unpriced = con.execute("select sum(cost_usd), count(*), count(*) - count(cost_usd) from ev").fetchone()  # type: ignore[misc]
    print(f"\nNovember 2025: {n:,} requests, ${total:,.2f} spent, {unpriced:,} unpriced (no price known: cost NULL, not $0)\n")
    print("Spend by customer and team")
    for cust, team, usd in con.execute(
        "select customer, team, sum(cost_usd) from ev group by all order by 1, 3 desc"
    ).fetchall():
        print(f"  {cust:<18} {team:<16} ${usd:>10,.2f}")
    print("\nTop virtual keys")
    for vk, usd in con.execute("select virtual_key, sum(cost_usd) s from ev group by 1 order by s desc limit 5").fetchall():
        print(f"  {vk:<20} ${usd:>10,.2f}")
    print("\nDaily spend (the runaway agent is the spike)")
    days = con.execute("select strftime(timestamp, '%m-%d') d, sum(cost_usd) from ev group by 1 order by 1").fetchall()
    peak = max(usd for _, usd in days) or 1.0
    for day, usd in days:
        print(f"  {day} {'█' * max(1, round(40 * usd / peak)):<40} ${usd:,.2f}")
    print(f"\nThe lake: {lake}")
    print("Next:")
    print(f"  python -c \"import duckdb; duckdb.sql(\\\"select model, sum(cost_usd) from '{lake}/events/*/*.parquet' group by 1 order by 2 desc\\\").show()\"")
    print(f"  spendlake ingest --source my-usage-log.jsonl --lake {lake}")
