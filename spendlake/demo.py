"""`spendlake demo`: a month of LLM traffic through the real pipeline, then an agent running away
live — and the alerts that say so, within seconds.

1. Starts a local Kafka broker (the same script the tests use) and produces 30 days of traffic for
   3 customers, 6 teams, 60 virtual keys and a dozen models, ending now; one agent ran away
   mid-month. It lands in a Parquet lake exactly once (`spendlake ingest`).
2. Writes a config whose budgets fit that history (a daily budget for the agent), starts a local
   Slack-like receiver and `spendlake serve` (rollups, budgets, alerts, /metrics).
3. The agent runs away again, now: its requests go to Kafka and the receiver prints the alerts as
   they arrive (the forecast, 80%, 90%, 100% of its daily budget, the cost spike). The burst is
   paced so that each threshold is its own moment: the demo sends just enough requests to cross
   the next threshold and waits for its alert before sending more; an alert that still shares a
   batch with a higher one is printed as such at the end, never hidden.
4. Prints the alerts, the budget table, writes the HTML report and suggests what to try next.

Every run tells the same story from a clean lake: a lake the demo made before (``_demo/`` marks
it) is reset, a directory that is not a demo lake is refused, and the lake ignores itself in git
(its own ``.gitignore``). The demo's own broker keeps its data under ``/var/tmp`` only while it
runs (``--keep-broker`` keeps both). ``SPENDLAKE_DEMO_KAFKA_PORT`` moves that broker (default 9092).

`--no-kafka` tells the same story on a machine without Java: the history through the file source,
then `spendlake serve` embedded (no broker) with the live burst sent over its HTTP intake.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
TEAMS = [("team-eng", "customer-acme"), ("team-support", "customer-acme"), ("team-research", "customer-globex"),
         ("team-sales", "customer-globex"), ("team-ops", "customer-initech"), ("team-data", "customer-initech")]  # fmt: skip
CUSTOMERS = {"customer-acme": "Acme Corp", "customer-globex": "Globex", "customer-initech": "Initech"}
RUNAWAY = ("vk-runaway-agent", "team-research", "customer-globex")
DAY_MS = 86_400_000
DEMO_PORT = int(os.environ.get("SPENDLAKE_DEMO_KAFKA_PORT", "9092"))
MARK = "_demo/.spendlake-demo"  # a lake the demo made, and so may reset
RUNAWAY_DAILY_BUDGET = 25.0
LIVE_EVENTS = 150  # ~$0.33 each: $50, twice the agent's daily budget
THRESHOLDS = (0.8, 0.9, 1.0)  # the default [alerts] budget_thresholds the story walks through
CHANNEL = "finops-slack"  # the README's example channel, so its commands work on the demo's config
SLACK_ENV = "SPENDLAKE_SLACK_WEBHOOK_URL"


def say(msg: str) -> None:
    sys.stderr.write(f"demo: {msg}\n")
    sys.stderr.flush()


def keys() -> list[tuple[str, str, str]]:
    return [(f"vk-{team.split('-', 1)[1]}-{i:02d}", team, cust) for team, cust in TEAMS for i in range(10)]


def traffic(n: int, end_ms: int, seed: int = 7) -> list[bytes]:
    """n events over the 30 days before ``end_ms``; the runaway agent loops on gpt-4o with huge
    prompts for two days in the middle (every 20th event)."""
    rng = random.Random(seed)
    start = end_ms - 30 * DAY_MS
    ks = keys()
    weights = [w for *_, w in MODELS]
    out = []
    for i in range(n):
        vk, team, cust = rng.choice(ks)
        provider, model, _ = rng.choices(MODELS, weights)[0]
        ts = start + rng.randrange(30 * DAY_MS)
        inp = int(rng.lognormvariate(7.0, 1.0)) + 20
        out_t = int(rng.lognormvariate(5.5, 0.8)) + 5
        if i % 20 == 0:
            (vk, team, cust), provider, model = RUNAWAY, "openai", "gpt-4o"
            ts = start + 14 * DAY_MS + rng.randrange(2 * DAY_MS)
            inp, out_t = rng.randrange(60_000, 120_000), rng.randrange(2_000, 4_000)
        out.append(orjson.dumps(_event(rng, ts, vk, team, cust, provider, model, inp, out_t)))
    return out


def live_burst(n: int, seed: int = 11) -> Iterable[bytes]:
    """The agent runs away again, now: ~$0.33 a request (110k prompt tokens of gpt-4o)."""
    rng = random.Random(seed)
    for _ in range(n):
        yield orjson.dumps(_event(rng, int(time.time() * 1000), *RUNAWAY, "openai", "gpt-4o", 110_000, 5_500))


def _event(rng: random.Random, ts: int, vk: str, team: str, cust: str, provider: str, model: str, inp: int,
           out_t: int) -> dict[str, Any]:  # fmt: skip
    return {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128))), "timestamp": ts, "provider": provider,
        "model": model, "input_tokens": inp, "output_tokens": out_t,
        "cached_input_tokens": inp // 3 if rng.random() < 0.3 else 0,
        "virtual_key": vk, "team": team, "customer": cust, "latency_ms": round(rng.uniform(200, 9000), 1),
        "status": "success" if rng.random() > 0.01 else "error",
    }  # fmt: skip


class SlackStandIn:
    """A local receiver that answers like a Slack incoming webhook and prints each message."""

    def __init__(self) -> None:
        self.messages: list[str] = []  # each message's text
        self.titles: list[str] = []  # each alert's title: a grouped message carries several
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    titles = alert_titles(json.loads(body))
                except ValueError:
                    titles = []
                stand_in.messages.append("\n".join(titles))
                stand_in.titles += titles
                now = time.strftime("%H:%M:%S")
                for i, title in enumerate(titles or ["(empty)"]):
                    grouped = f"  ({i + 1} of {len(titles)} in one message)" if len(titles) > 1 else ""
                    print(f"  Slack  {now}  {title}{grouped}", flush=True)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/DEMO/DEMO/demo"

    def close(self) -> None:
        self.server.shutdown()


def alert_titles(body: Any) -> list[str]:
    """The alert titles of one Slack message: the first line of a single alert's ``text``, or
    every line of a grouped one (serve sends alerts due together on a paced channel as one
    message, most severe first: its header reads "🚨 3 alerts", its text one title a line)."""
    text = str(body.get("text", "")) if isinstance(body, dict) else ""
    blocks = body.get("blocks") if isinstance(body, dict) else None
    header = blocks[0].get("text", {}).get("text", "") if blocks and isinstance(blocks[0], dict) else ""
    if re.fullmatch(r"\S+ \d+ alerts", header):
        return [line.split(" ", 1)[-1] for line in text.splitlines() if line.strip()]
    return text.splitlines()[:1]


def run(events: int, lake: str, no_kafka: bool, bootstrap: str | None, keep_broker: bool) -> int:
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
        broker_env = {**os.environ, "KAFKA_PORT": str(DEMO_PORT), "KAFKA_HOME": f"/var/tmp/spendlake-demo-kafka-{DEMO_PORT}"}
    lake_path = Path(lake).resolve()
    problem = fresh_lake(lake_path)
    if problem:
        say(problem)
        return 2
    work = lake_path / "_demo"
    end_ms = int(time.time() * 1000) - 2 * 3600 * 1000  # history ends two hours ago
    say(f"[1/5] generating {events:,} usage events for the last 30 days (3 customers, 6 teams, 60 keys, 12 models)")
    values = traffic(events, end_ms)
    slack = SlackStandIn()
    try:
        if no_kafka:
            _history_from_files(values, lake_path, work)
        else:
            if broker_env is not None:
                cached = subprocess.run(["bash", str(BROKER_SCRIPT), "cached"], env=broker_env).returncode == 0
                fetch = "" if cached else " (this first run fetches its jars from Maven Central, once)"
                say(f"starting a local Kafka broker on 127.0.0.1:{DEMO_PORT}{fetch}")
                subprocess.run(["bash", str(BROKER_SCRIPT), "start"], env=broker_env, check=True)
                bootstrap = f"127.0.0.1:{DEMO_PORT}"
            assert bootstrap is not None
            try:
                topic = _history_through_kafka(values, bootstrap, lake_path)
                cfg = _write_config(lake_path, work, bootstrap, topic)
                _live_through_serve(cfg, slack, work, _kafka_feed(bootstrap, topic))
            finally:
                if broker_env is not None and not keep_broker:
                    # the broker's data, logs and config go with it: nothing is left under /var/tmp
                    subprocess.run(["bash", str(BROKER_SCRIPT), "remove"], env=broker_env, check=False)
                elif broker_env is not None:
                    say(f"--keep-broker: the broker still runs on 127.0.0.1:{DEMO_PORT} (data in {broker_env['KAFKA_HOME']}); "
                        f"stop and remove it with KAFKA_PORT={DEMO_PORT} KAFKA_HOME={broker_env['KAFKA_HOME']} "
                        f"bash {BROKER_SCRIPT} remove")  # fmt: skip
        if no_kafka:
            cfg = _write_config(lake_path, work, None, None)
            _live_through_serve(cfg, slack, work, _http_feed)
        _story(lake_path, cfg, work, slack)
    finally:
        slack.close()
    return 0


def fresh_lake(lake: Path) -> str | None:
    """Make ``lake`` an empty demo lake; the reason it cannot be, else None.

    A lake the demo made before is removed and made again (said so); an empty or missing directory
    is used; anything else is refused: the demo never deletes what it did not make. The lake gets a
    ``.gitignore`` of ``*`` so that a demo run inside a clone leaves ``git status`` clean."""
    if lake.is_file():
        return f"--lake {lake} is a file; the demo needs a directory of its own"
    if lake.is_dir() and any(lake.iterdir()):
        if not (lake / MARK).is_file():
            return (f"--lake {lake} is not empty and not a lake an earlier demo made; the demo starts from an "
                    "empty lake and deletes only its own: choose another --lake")  # fmt: skip
        shutil.rmtree(lake)
        say(f"the demo lake is {lake}: reset (the previous demo run's lake was removed)")
    else:
        say(f"the demo lake is {lake}")
    (lake / "_demo").mkdir(parents=True, exist_ok=True)
    (lake / MARK).write_text("made by `spendlake demo`; the next demo run may delete this lake\n")
    (lake / ".gitignore").write_text("# a generated demo lake: never committed\n*\n")
    return None


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _history_through_kafka(values: list[bytes], bootstrap: str, lake: Path) -> str:
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    from ingest.consumer import KafkaIngestor, KafkaSettings
    from ingest.lake import Lake
    from ingest.pipeline import Pipeline
    from pricing import Catalog
    from spendlake.progress import Progress, summary as _summary

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
    say(f"[2/5] produced {len(values):,} events in {time.monotonic() - t0:.1f} s; "
        "ingesting (exactly once, into Parquet)")  # fmt: skip
    ks = KafkaSettings(bootstrap_servers=bootstrap, topic=topic, group_id=f"demo-{topic}")
    pipeline = Pipeline(Lake(lake), Catalog.builtin())
    KafkaIngestor(ks.consumer(long_running=False), topic, pipeline, exit_when_idle_s=2.0,
                  progress=Progress(2.0)).run()
    _summary(pipeline, f"all 3 partitions of {topic}")  # the progress lines above are samples; this is the total
    return topic


def _history_from_files(values: list[bytes], lake: Path, work: Path) -> None:
    from ingest.lake import Lake
    from ingest.pipeline import Pipeline
    from ingest.source import ingest_files
    from pricing import Catalog
    from spendlake.progress import summary as _summary

    src = work / "history.jsonl"
    src.write_bytes(b"\n".join(values) + b"\n")
    say(f"[2/5] --no-kafka: ingesting {len(values):,} events through the file source into {lake}")
    pipeline = Pipeline(Lake(lake), Catalog.builtin())
    ingest_files([str(src)], pipeline)
    _summary(pipeline, "the history file")
    src.unlink()


def _month_to_date(lake: Path) -> dict[str, float]:
    """Spend of this calendar month (UTC) per team and customer, from the lake."""
    import duckdb

    rows = duckdb.execute(
        f"""SELECT team, customer, sum(cost_usd) FROM (
              SELECT * FROM read_parquet('{lake}/events/*/*.parquet')
              QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY ingested_at) = 1)
            WHERE "timestamp" >= date_trunc('month', now()) GROUP BY ALL"""
    ).fetchall()
    out: dict[str, float] = {}
    for team, cust, usd in rows:
        out[team] = out.get(team, 0.0) + float(usd or 0)
        out[cust] = out.get(cust, 0.0) + float(usd or 0)
    return out


def _write_config(lake: Path, work: Path, bootstrap: str | None, topic: str | None) -> Path:
    """Budgets that fit the history: customers and teams at ~60–75% of a monthly budget *after*
    the live burst (so the story's threshold alerts are the agent's own, the same every run, and
    its team and customer get a forecast), every key a daily budget, the runaway agent $25 a day.
    Without a broker, serve runs embedded and takes the live traffic over HTTP (its intake on a
    free loopback port, no token: the demo only)."""
    mtd = _month_to_date(lake)
    burst = sum(live_costs(list(live_burst(LIVE_EVENTS))))
    for owner in RUNAWAY[1:]:
        mtd[owner] = mtd.get(owner, 0.0) + burst
    source = (f'[kafka]\nbootstrap_servers = "{bootstrap}"\ntopic = "{topic}"\ngroup_id = "demo-{topic}"\n'
              if bootstrap else '[intake]\nlisten = "127.0.0.1:0"\nallow_unauthenticated = true\n')  # fmt: skip
    lines = [f'[lake]\npath = "{lake}"\ntimezone = "UTC"\n', source,
             '[metrics]\nlisten = "127.0.0.1:0"\n',
             '[alerts]\nevaluation_interval = "2s"\nspike_floor_usd = 20.0\n',
             f'[[channels]]\nname = "{CHANNEL}"\ntype = "slack"\nurl_env = "{SLACK_ENV}"\n'
             'kinds = ["budget", "budget_forecast", "cost_spike", "expensive_request"]\n']  # fmt: skip
    for i, (cust, name) in enumerate(CUSTOMERS.items()):
        limit = max(round(mtd.get(cust, 0.0) / (0.6 + 0.05 * i), -1), 100.0)
        lines.append(f'[[customers]]\nid = "{cust}"\nname = "{name}"\n'
                     f'budgets = [{{ max_limit = {limit}, reset_duration = "1M" }}]\n')  # fmt: skip
    for i, (team, cust) in enumerate(TEAMS):
        limit = max(round(mtd.get(team, 0.0) / (0.6 + 0.03 * i), -1), 50.0)
        lines.append(f'[[teams]]\nid = "{team}"\ncustomer_id = "{cust}"\n'
                     f'budgets = [{{ max_limit = {limit}, reset_duration = "1M" }}]\n')  # fmt: skip
    for vk, team, _ in [*keys(), RUNAWAY]:
        daily = RUNAWAY_DAILY_BUDGET if vk == RUNAWAY[0] else 20.0
        lines.append(f'[[virtual_keys]]\nid = "{vk}"\nteam_id = "{team}"\n'
                     f'budgets = [{{ max_limit = {daily}, reset_duration = "1d" }}]\n')  # fmt: skip
    cfg = work / "spendlake.toml"
    cfg.write_text("\n".join(lines))
    return cfg


Feed = Callable[[Path, list[bytes]], None]  # (serve's log, the requests to send now)


def _kafka_feed(bootstrap: str, topic: str) -> Feed:
    def feed(_: Path, values: list[bytes]) -> None:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        for value in values:
            producer.send(topic, value=value, key=RUNAWAY[0].encode())
            time.sleep(15 / LIVE_EVENTS)
        producer.flush()
        producer.close()

    return feed


def _http_feed(log: Path, values: list[bytes]) -> None:
    """The burst over serve's HTTP intake, ten events a POST, as a service without Kafka would."""
    import requests

    deadline = time.monotonic() + 30
    while not (m := re.search(r"intake on (http://127\.0\.0\.1:\d+)", log.read_text(errors="replace"))):
        if time.monotonic() > deadline:
            raise RuntimeError(f"spendlake serve printed no intake address (log: {log})")
        time.sleep(0.1)
    for i in range(0, len(values), 10):
        r = requests.post(m.group(1) + "/v1/events", data=b"[" + b",".join(values[i : i + 10]) + b"]", timeout=30)
        r.raise_for_status()
        time.sleep(15 / LIVE_EVENTS * 10)


def _live_through_serve(cfg: Path, slack: SlackStandIn, work: Path, feed: Feed) -> None:
    log = work / "serve.log"
    env = {**os.environ, SLACK_ENV: slack.url}
    serve = subprocess.Popen([sys.executable, "-m", "spendlake", "serve", "--config", str(cfg)],
                             stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env)  # fmt: skip
    try:
        port = _wait_for_metrics(log, serve)
        how = "through Kafka" if "[kafka]" in cfg.read_text() else "over HTTP (POST /v1/events; no broker)"
        say(f"[3/5] spendlake serve is running: http://127.0.0.1:{port}/metrics (log: {log})")
        values = list(live_burst(LIVE_EVENTS))
        costs = live_costs(values)
        say(f"[4/5] {RUNAWAY[0]} runs away again, now: {LIVE_EVENTS} requests of ~${costs[0]:.2f} {how} "
            f"against a ${RUNAWAY_DAILY_BUDGET:.0f} daily budget; alerts as they reach the Slack stand-in:")  # fmt: skip
        sent = 0
        for step, threshold in zip(burst_steps(costs), THRESHOLDS):
            # just enough requests to cross the next threshold, then its alert before any more: each
            # threshold is its own moment, as a runaway slower than one batch would show it
            feed(log, values[sent:step])
            sent = step
            _wait_for_slack(slack, f"{RUNAWAY[0]} at {threshold * 100:g}% of budget")
        feed(log, values[sent:])
        _wait_for_slack(slack, "Cost spike detected")
        _wait_until_quiet(slack)  # alerts still queued (serve paces Slack at one message a second)
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(60)
        except subprocess.TimeoutExpired:
            serve.kill()


def live_costs(values: list[bytes]) -> list[float]:
    """What each request of the live burst costs at the built-in catalog's prices (some reuse a
    cached prompt, so they differ)."""
    import pyarrow as pa

    from ingest.decode import decode
    from ingest.schema import EVENT_SCHEMA
    from pricing import Catalog, price_table

    rows = list(zip(*(decode(v) for v in values)))
    events = pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(rows, EVENT_SCHEMA)], schema=EVENT_SCHEMA)
    costs = price_table(events, Catalog.builtin()).column("cost_usd").to_pylist()
    assert all(costs), "gpt-4o has a built-in price"
    return [float(c) for c in costs]


def burst_steps(costs: list[float]) -> list[int]:
    """How many burst requests take the agent's day (empty before the burst) past each threshold."""
    steps, total, n = [], 0.0, 0
    for t in THRESHOLDS:
        while n < len(costs) and total < t * RUNAWAY_DAILY_BUDGET - 1e-9:
            total += costs[n]
            n += 1
        steps.append(n)
    return steps


def _wait_for_metrics(log: Path, serve: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        m = re.search(r"serving /metrics on http://127\.0\.0\.1:(\d+)/metrics", log.read_text(errors="replace"))
        if m:
            return int(m.group(1))
        if serve.poll() is not None:
            raise RuntimeError(f"spendlake serve exited: {log.read_text(errors='replace')[-1500:]}")
        time.sleep(0.2)
    raise RuntimeError("spendlake serve did not start within 120 s")


def _wait_until_quiet(slack: SlackStandIn, quiet: float = 3.0, timeout: float = 20.0) -> None:
    """Until no message arrived for ``quiet`` seconds (serve paces a Slack webhook at one a second)."""
    deadline = time.monotonic() + timeout
    seen, since = len(slack.messages), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        time.sleep(0.1)
        if len(slack.messages) != seen:
            seen, since = len(slack.messages), time.monotonic()


def _wait_for_slack(slack: SlackStandIn, text: str, timeout: float = 30.0) -> bool:
    """Until a message containing ``text`` reached the Slack stand-in (False after ``timeout``:
    the story goes on, and the end says what arrived)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in m for m in slack.messages):
            return True
        time.sleep(0.1)
    return False


def _story(lake: Path, cfg: Path, work: Path, slack: SlackStandIn) -> None:
    import io

    from alerting.report import build_report
    from alerting.report_html import to_html
    from spendlake import settings as settings_mod
    from spendlake.budgets_cmd import evaluate, render

    s = settings_mod.load(str(cfg))
    assert s.hierarchy is not None
    report = build_report(lake, s, "monthly", to_date=True)
    html = work / "report.html"
    html.write_text(to_html(report))
    say("[5/5] the alerts, the month so far, the budgets, the report")
    print("\n" + alert_story(lake, len(slack.titles)))
    print(f"\nLast 30 days: {_requests(lake):,} requests; this month so far ${report.total_cost:,.2f} "
          f"({report.unpriced_requests:,} of this month's requests unpriced: no price known, cost NULL, not $0)")  # fmt: skip
    statuses = evaluate(lake, s.hierarchy, _now())
    interesting = [x for x in statuses if x.type != "virtual_key" or x.utilization >= 0.5]
    buf = io.StringIO()
    buf.write(render(interesting, _now()))
    print("\nBudgets (customers, teams, and keys at 50% or more)\n" + buf.getvalue())
    print(f"The lake:   {lake}  (reset by the next `spendlake demo`)")
    print(f"The report: {html}")
    print("Next:")
    print(f"  spendlake query --lake {lake} \"SELECT * FROM daily_cost_by_team ORDER BY day DESC LIMIT 12\"")
    print(f"  spendlake alerts --config {cfg}")
    print(f"  spendlake report --config {cfg} --period weekly --format md")
    print(f"  spendlake budgets --config {cfg}")
    print(f"  {SLACK_ENV}=<your Slack webhook URL> spendlake alerts test --channel {CHANNEL} --config {cfg}")


def alert_story(lake: Path, delivered: int) -> str:
    """Every alert serve recorded, oldest first, as the story tells it: a threshold passed in the
    same batch as a higher one is listed as such (it was recorded, not sent), never dropped."""
    import duckdb

    from aggregator.rollup import STATE_DIR, STATE_FILE, sql_string

    con = duckdb.connect()
    con.execute(f"ATTACH {sql_string(lake / STATE_DIR / STATE_FILE)} AS st (READ_ONLY)")
    rows = con.execute("""SELECT a.created_at, a.title, a.note, a.kind, count(d.id) FROM st.alerts a
                          LEFT JOIN st.deliveries d ON d.alert_key = a.key WHERE a.action = 'trigger'
                          GROUP BY a.key, a.created_at, a.title, a.note, a.kind ORDER BY a.created_at, a.key""").fetchall()  # fmt: skip
    con.close()
    lines = [f"Alerts: {delivered} delivered to the Slack stand-in"]
    for created, title, note, kind, routed in rows:
        when = created.astimezone(_now().tzinfo).strftime("%H:%M:%S")
        why = f"  — {note}" if note else "" if routed else f"  — recorded, not sent: the channel does not take {kind} alerts"
        lines.append(f"  {when}  {title}{why}")
    return "\n".join(lines)


def _requests(lake: Path) -> int:
    import duckdb

    got = duckdb.execute(f"SELECT count(DISTINCT event_id) FROM read_parquet('{lake}/events/*/*.parquet')").fetchall()
    return int(got[0][0])


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)
