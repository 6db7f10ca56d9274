"""Alerting end to end in `spendlake serve`: a real broker, real DuckDB, local Slack and PagerDuty.

What it shows: budget crossings produced to Kafka reach Slack and PagerDuty; during an outage the
deliveries wait (and `spendlake alerts` shows them pending with the receiver's answer while serve
runs); serve killed with SIGKILL in the middle of the outage and started again delivers every alert
exactly once when the receivers come back; /metrics counts the deliveries; `spendlake alerts test`
reports what a channel answered.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from conftest import Broker, spendlake, spendlake_bg, wait_for
from receivers import HttpReceiver, Request, pagerduty_receiver, slack_receiver
from test_alerts import ROUTING_KEY, alert_titles, spend
from test_serve import metrics_port

CONFIG = """
[lake]
path = "{lake}"

[kafka]
bootstrap_servers = "{bootstrap}"
topic = "{topic}"
group_id = "g-{topic}"

[metrics]
listen = "127.0.0.1:0"

[ingest]
batch_max_age = 0.3

[alerts]
evaluation_interval = "1s"
retry_max_interval = "2s"

[[channels]]
name = "finops-slack"
type = "slack"
url_env = "TEST_SLACK_URL"
kinds = ["budget"]
min_interval = "0.2s"

[[channels]]
name = "oncall"
type = "pagerduty"
routing_key_env = "TEST_PD_KEY"
url = "{pd_url}"
min_severity = "critical"

[[teams]]
id = "team-eng"
name = "Engineering"
budgets = [{{ max_limit = 37.0, reset_duration = "1M" }}]

[[virtual_keys]]
id = "vk-alice"
name = "Alice"
team_id = "team-eng"
budgets = [{{ max_limit = 10.0, reset_duration = "1d" }}]

[[virtual_keys]]
id = "vk-bob"
name = "Bob"
team_id = "team-eng"
budgets = [{{ max_limit = 30.0, reset_duration = "1d" }}]
"""


class Outage:
    """A receiver answer that fails while ``down`` and records which requests it accepted."""

    def __init__(self, failure: Any) -> None:
        self.down = True
        self.failure = failure
        self.accepted: list[Request] = []
        self.lock = threading.Lock()

    def __call__(self, ok: Any) -> Any:
        def answer(request: Request) -> Any:
            if self.down:
                return self.failure
            with self.lock:
                self.accepted.append(request)
            return ok(request) if callable(ok) else ok

        return answer


def serve_env(slack: HttpReceiver) -> dict[str, str]:
    return {"TEST_SLACK_URL": slack.url, "TEST_PD_KEY": ROUTING_KEY}


def test_an_outage_and_a_kill_lose_no_alert_and_send_none_twice(kafka: Broker, topic_name: str,
                                                                tmp_path: Path, monkeypatch: Any) -> None:  # fmt: skip
    from receivers import pagerduty_answer, slack_answer

    kafka.create_topic(topic_name, partitions=2)
    lake = tmp_path / "lake"
    slack, pd = slack_receiver(), pagerduty_receiver()
    slack_outage = Outage((503, "service unavailable"))
    pd_outage = Outage("close")
    slack.set_default(slack_outage(slack_answer))
    pd.set_default(pd_outage(pagerduty_answer))
    cfg = tmp_path / "spendlake.toml"
    cfg.write_text(CONFIG.format(lake=lake, bootstrap=kafka.bootstrap, topic=topic_name, pd_url=pd.url))
    for k, v in serve_env(slack).items():
        monkeypatch.setenv(k, v)
    log = tmp_path / "serve.log"
    proc = spendlake_bg("serve", "--config", str(cfg), log=log)
    metrics_port(log)

    # Alice crosses 80% (Slack), then 90% (Slack + PagerDuty); Bob crosses 80%; the team (34.1 of 37)
    # passes 80% and 90% in one step: only its 90% alert is sent
    kafka.produce(topic_name, [orjson.dumps(spend("vk-alice", 8.5, 0))])
    wait_for(lambda: len(slack.requests) >= 2, 60, "Slack attempts during the outage")
    kafka.produce(topic_name, [orjson.dumps(e) for e in (spend("vk-alice", 0.6, 1), spend("vk-bob", 25.0, 0))])
    wait_for(lambda: len(pd.requests) >= 2, 60, "PagerDuty attempts during the outage")

    # while serve runs, `spendlake alerts` shows what is pending and why
    def pending_shown() -> bool:
        out = spendlake("alerts", "--config", str(cfg), "--format", "json", check=True).stdout
        states = [d for a in json.loads(out) for d in a["deliveries"]]
        return any(d["state"] == "pending" and d["last_error"] == "HTTP 503: service unavailable" for d in states)

    wait_for(pending_shown, 60, "`spendlake alerts` to show the pending deliveries", every=1.0)
    table = spendlake("alerts", "--config", str(cfg), check=True).stdout.decode()
    assert "pending" in table and "Critical: Alice (vk-alice) at 90% of budget" in table

    proc.send_signal(signal.SIGKILL)  # in the middle of the outage
    proc.wait(30)
    attempts_before = len(slack.requests) + len(pd.requests)
    assert slack_outage.accepted == [] and pd_outage.accepted == []

    slack_outage.down = pd_outage.down = False
    log2 = tmp_path / "serve2.log"
    proc2 = spendlake_bg("serve", "--config", str(cfg), log=log2)
    port = metrics_port(log2)
    expected_slack = {
        "Warning: Alice (vk-alice) at 80% of budget",
        "Critical: Alice (vk-alice) at 90% of budget",
        "Warning: Bob (vk-bob) at 80% of budget",
        "Critical: Engineering (team-eng) team at 90% of budget",
    }
    expected_pd = {"Critical: Alice (vk-alice) at 90% of budget", "Critical: Engineering (team-eng) team at 90% of budget"}

    def slack_titles() -> list[str]:  # alerts due together arrive as one message (Slack is paced)
        return [t for r in slack_outage.accepted for t in alert_titles(r.json)]

    def pd_titles() -> list[str]:
        return [r.json["payload"]["summary"] for r in pd_outage.accepted]

    wait_for(lambda: set(slack_titles()) >= expected_slack and set(pd_titles()) >= expected_pd, 90,
             "every alert to be delivered after the restart")  # fmt: skip
    time.sleep(3)  # anything sent twice would arrive now
    assert sorted(slack_titles()) == sorted(expected_slack)
    assert sorted(pd_titles()) == sorted(expected_pd)
    assert len({r.json["dedup_key"] for r in pd_outage.accepted}) == 2
    assert len(slack.requests) + len(pd.requests) > attempts_before  # retried after the restart

    metrics = __import__("requests").get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert 'spendlake_alerts_sent_total{channel="finops-slack",result="delivered"} 4.0' in metrics
    assert 'spendlake_alerts_sent_total{channel="oncall",result="delivered"} 2.0' in metrics
    assert 'spendlake_alerts_pending{channel="finops-slack"} 0.0' in metrics
    proc2.send_signal(signal.SIGTERM)
    assert proc2.wait(60) == 0, log2.read_text()[-3000:]
    slack.close()
    pd.close()
    for text in (log.read_text(), log2.read_text()):  # secrets never in logs
        assert slack.url.split("/services/")[1] not in text and ROUTING_KEY not in text


def test_alerts_test_reports_what_the_channel_answered(tmp_path: Path) -> None:
    slack, pd = slack_receiver(), pagerduty_receiver()
    cfg = tmp_path / "spendlake.toml"
    cfg.write_text(CONFIG.format(lake=tmp_path / "lake", bootstrap="127.0.0.1:9", topic="t", pd_url=pd.url))
    env = {**os.environ, **serve_env(slack)}

    def run(*args: str) -> Any:
        import subprocess
        import sys

        return subprocess.run([sys.executable, "-m", "spendlake", "alerts", "test", *args, "--config", str(cfg)],
                              capture_output=True, text=True, env=env, timeout=60)  # fmt: skip

    ok = run("--channel", "finops-slack")
    assert ok.returncode == 0 and "delivered" in ok.stdout, ok.stderr
    assert "spendlake test message for channel 'finops-slack'" in slack.requests[-1].json["text"]
    page = run("--channel", "oncall")
    assert page.returncode == 0, page.stderr
    assert [r.json["event_action"] for r in pd.requests] == ["trigger", "resolve"]
    slack.script((404, "channel_not_found"))
    refused = run("--channel", "finops-slack")
    assert refused.returncode == 1 and "permanent failure: HTTP 404: channel_not_found" in refused.stderr
    unknown = run("--channel", "nope")
    assert unknown.returncode == 2 and "no channel named 'nope' (channels: finops-slack, oncall)" in unknown.stderr
    env.pop("TEST_SLACK_URL")
    missing = run("--channel", "finops-slack")
    assert missing.returncode == 1 and "TEST_SLACK_URL" in missing.stderr
    # the channel is named once, not again inside the reason
    assert missing.stderr.count("finops-slack") == 1, missing.stderr
    slack.close()
    pd.close()
