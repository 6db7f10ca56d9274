"""`spendlake serve` end to end: a real broker, real DuckDB, a real Prometheus scraping /metrics.

What it shows: serve consumes and rolls up; PromQL `sum by (team)` of cost equals the DuckDB
total over the raw lake to the cent; `query` and `budgets` work while serve holds the state;
SIGTERM exits 0; counters after a restart are the same totals (they come from the lake).
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import orjson
import pytest
import requests

from conftest import Broker, event, lake_rows, spendlake, spendlake_bg, wait_for
from prometheus import by_label, prometheus_factory, value  # noqa: F401

CONFIG = """
[lake]
path = "{lake}"
timezone = "UTC"

[kafka]
bootstrap_servers = "{bootstrap}"
topic = "{topic}"
group_id = "{group}"

[metrics]
listen = "127.0.0.1:0"

[alerts]
evaluation_interval = "1s"

[ingest]
batch_max_age = 0.5

[[customers]]
id = "customer-acme"
budgets = [{{ max_limit = 1000.0, reset_duration = "1M" }}]

[[teams]]
id = "team-1"
customer_id = "customer-acme"
budgets = [{{ max_limit = 100.0, reset_duration = "1d" }}]

[[teams]]
id = "team-2"
customer_id = "customer-acme"

[[virtual_keys]]
id = "vk-1"
team_id = "team-1"
budgets = [{{ max_limit = 5.0, reset_duration = "1h" }}]
"""


def metrics_port(log: Path) -> int:
    found: list[int] = []

    def ready() -> bool:
        m = re.search(r"serving /metrics on http://127\.0\.0\.1:(\d+)/metrics", log.read_text(errors="replace"))
        if m:
            found.append(int(m.group(1)))
        return bool(m)

    wait_for(ready, 120, "serve to start its /metrics server")
    return found[0]


def scrape(port: int) -> str:
    return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text


def sample_sum(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def test_serve_metrics_match_the_lake_to_the_cent(
    kafka: Broker, topic_name: str, tmp_path: Path, prometheus_factory  # noqa: F811
) -> None:
    kafka.create_topic(topic_name, partitions=2)
    lake = tmp_path / "lake"
    cfg = tmp_path / "spendlake.toml"
    cfg.write_text(CONFIG.format(lake=lake, bootstrap=kafka.bootstrap, topic=topic_name, group=f"g-{topic_name}"))
    now = int(time.time() * 1000)
    # vk-1 has no team in its events: serve fills it from the hierarchy (team-1, customer-acme)
    events = [orjson.dumps(event(i, virtual_key=f"vk-{i % 3}", team=None if i % 3 == 1 else f"team-{1 + i % 2}",
                                 timestamp=now - i * 1000)) for i in range(3000)]  # fmt: skip
    events += events[:200]  # producer retries: the same events again, counted once
    events.append(orjson.dumps(event(5000, provider="acme", model="mystery", timestamp=now)))  # unpriced
    kafka.produce(topic_name, events)
    log = tmp_path / "serve.log"
    proc = spendlake_bg("serve", "--config", str(cfg), log=log)
    port = metrics_port(log)
    wait_for(lambda: sample_sum(scrape(port), "spendlake_requests_total") == 3001, 120,
             "serve to land and roll up every event once")  # fmt: skip

    truth = {
        team: round(cost, 6)
        for team, cost in lake_rows(
            lake,
            """select team, coalesce(sum(cost_usd), 0) from (select * from ev qualify row_number() over
               (partition by event_id order by ingested_at) = 1) group by team""",
        )
    }
    prom = prometheus_factory([f"127.0.0.1:{port}"], interval=1.0)
    prom.wait_for_targets_up()
    got = prom.wait_until("sum by (team) (spendlake_cost_usd_total)", lambda r: len(r) >= 2)
    by_team = {k: round(v, 6) for k, v in by_label(got, "team").items()}
    assert by_team == {k: v for k, v in truth.items() if k is not None}, (by_team, truth)
    assert value(prom.query("sum(spendlake_requests_total)")) == 3001
    assert value(prom.query('sum(spendlake_unpriced_requests_total{model="mystery"})')) == 1

    # query and budgets work while serve holds the DuckDB state
    q = spendlake("query", "--lake", str(lake), "--format", "json",
                  "select team, round(coalesce(sum(cost_usd), 0), 6) as cost from request_log group by team",
                  check=True)  # fmt: skip
    assert {r["team"]: r["cost"] for r in json.loads(q.stdout)} == truth
    b = spendlake("budgets", "--config", str(cfg), "--format", "json", check=True)
    budgets = {x["budget_id"]: x for x in json.loads(b.stdout)}
    assert set(budgets) == {"customer:customer-acme:0", "team:team-1:0", "virtual_key:vk-1:0"}
    team1_today = lake_rows(
        lake,
        f"""select sum(cost_usd) from (select * from ev qualify row_number() over
            (partition by event_id order by ingested_at) = 1)
            where team = 'team-1' and "timestamp" >= '{budgets["team:team-1:0"]["period_start"]}'""",
    )[0][0]
    assert budgets["team:team-1:0"]["current_usage"] == pytest.approx(team1_today, abs=0.005)
    scraped = scrape(port)
    usage_line = [ln for ln in scraped.splitlines()
                  if ln.startswith("spendlake_budget_usage_usd{") and 'budget_id="team:team-1:0"' in ln]  # fmt: skip
    assert float(usage_line[0].rsplit(" ", 1)[1]) == pytest.approx(team1_today, abs=0.005)

    # SIGTERM: flush, commit, exit 0; a restart serves the same totals (counters are lake totals)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(120) == 0, log.read_text()[-3000:]
    log2 = tmp_path / "serve2.log"
    proc2 = spendlake_bg("serve", "--config", str(cfg), log=log2)
    port2 = metrics_port(log2)
    again = scrape(port2)
    assert sample_sum(again, "spendlake_requests_total") == 3001
    assert round(sample_sum(again, "spendlake_cost_usd_total"), 6) == round(sum(v for v in truth.values()), 6)
    proc2.send_signal(signal.SIGTERM)
    assert proc2.wait(120) == 0
