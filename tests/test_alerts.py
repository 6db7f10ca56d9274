"""Alert rules and the outbox, in process: a real lake (ingested by `spendlake ingest`), real
DuckDB state, and real local HTTP servers answering as Slack and PagerDuty do.

What it shows: each budget threshold fires once per budget × period (a jump past several sends the
highest, records the others); per-budget thresholds; expensive requests once per event (a duplicate
event is not a second alert); spikes name the top team and key and do not repeat; unpriced usage
and the forecast fire; PagerDuty incidents keep one dedup_key per budget and period and are
resolved when the limit is raised or the period resets; transient failures are retried (honouring
Retry-After) until delivered once, terminal ones stop with the reason; Slack is paced, and alerts
due together share one message; a restart sends nothing twice; no secret reaches the outbox, the
published files or the logs. Grouping itself: tests/test_alert_grouping.py.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from aggregator.budgets import BudgetUsage
from aggregator.rollup import Rollup
from alerting.engine import AlertEngine
from conftest import event, wait_for
from receivers import HttpReceiver, pagerduty_receiver, slack_receiver
from spendlake import settings as settings_mod
from spendlake.cli import main as cli

M = 1_000_000
ROUTING_KEY = "R0UTINGKEY0123456789abcdef012345"  # 32 characters, as PagerDuty requires

BASE = """
[lake]
path = "{lake}"

[alerts]
evaluation_interval = "1s"
{alerts}

[[channels]]
name = "slack"
type = "slack"
url_env = "TEST_SLACK_URL"
{slack}

[[channels]]
name = "oncall"
type = "pagerduty"
routing_key_env = "TEST_PD_KEY"
url = "{pd_url}"
min_severity = "critical"

[[teams]]
id = "team-eng"
name = "Engineering"
budgets = [{{ max_limit = {team_limit}, reset_duration = "1M" }}]

[[virtual_keys]]
id = "vk-alice"
name = "Alice"
team_id = "team-eng"
budgets = [{{ max_limit = 10.0, reset_duration = "1d" }}]

[[virtual_keys]]
id = "vk-bob"
name = "Bob"
team_id = "team-eng"
budgets = [{{ max_limit = 10.0, reset_duration = "1d", thresholds = [0.5] }}]
"""


def spend(key: str, usd: float, n: int, ts: int | None = None, **over: Any) -> dict[str, Any]:
    """An event costing exactly ``usd`` (gpt-4o input: $2.50 per million tokens)."""
    fields: dict[str, Any] = {
        "event_id": f"{key}-{n}", "virtual_key": key, "team": None, "provider": "openai", "model": "gpt-4o",
        "input_tokens": int(round(usd / 2.5 * M)), "output_tokens": 0, "cached_input_tokens": 0,
        "timestamp": ts if ts is not None else int(time.time() * 1000),
    }  # fmt: skip
    return event(0, **{**fields, **over})


class Stack:
    """A lake, its config, and serve's alerting parts (rollup + engine) in this process."""

    def __init__(self, tmp: Path, slack: HttpReceiver, pd: HttpReceiver, alerts: str = "", slack_extra: str = "",
                 team_limit: float = 1000.0) -> None:  # fmt: skip
        self.tmp, self.lake = tmp, tmp / "lake"
        self.cfg = tmp / "spendlake.toml"
        self.files = 0
        self.write_config(slack, pd, alerts, slack_extra, team_limit)
        self.rollup: Rollup | None = None
        self.engine: AlertEngine | None = None
        _stacks.append(self)

    def write_config(self, slack: HttpReceiver, pd: HttpReceiver, alerts: str = "", slack_extra: str = "",
                     team_limit: float = 1000.0) -> None:  # fmt: skip
        self.cfg.write_text(BASE.format(lake=self.lake, alerts=alerts, slack=slack_extra, pd_url=pd.url,
                                        team_limit=team_limit))  # fmt: skip

    def ingest(self, events: list[dict[str, Any]]) -> None:
        self.files += 1
        src = self.tmp / f"batch-{self.files}.jsonl"
        src.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
        assert cli(["ingest", "--source", str(src), "--lake", str(self.lake), "--config", str(self.cfg)]) == 0

    def start(self) -> AlertEngine:
        s = settings_mod.load(str(self.cfg))
        assert s.hierarchy is not None
        self.engine = AlertEngine(self.lake, s.hierarchy, s.alerting)
        self.rollup = Rollup(self.lake, budget_hook=BudgetUsage(s.hierarchy), event_hooks=[self.engine.on_fresh])
        self.engine.start(self.rollup.con)
        return self.engine

    def step(self, now: datetime | None = None) -> None:
        """One rollup and evaluation, as serve's job does after a flush."""
        assert self.rollup is not None and self.engine is not None
        self.rollup.update()
        if now is None:
            self.engine.after_rollup(self.rollup)
        else:
            self.engine.rules.evaluate(self.rollup.con, now)
            self.engine._wake_after_commit = False
            assert self.engine.dispatcher is not None
            self.engine.dispatcher.wake()

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        assert self.rollup is not None
        return self.rollup.con.cursor().execute(sql).fetchall()

    def settle(self, timeout: float = 20.0) -> None:
        """Wait until no delivery is pending."""
        wait_for(lambda: not self.rows("SELECT 1 FROM deliveries WHERE state = 'pending'"), timeout,
                 "every delivery to finish")  # fmt: skip

    def stop(self) -> None:
        if self.engine is not None:
            self.engine.stop()
        if self.rollup is not None:
            self.rollup.close()
        self.engine = self.rollup = None


_stacks: list[Stack] = []


@pytest.fixture(autouse=True)
def _stop_stacks() -> Iterator[None]:
    """Delivery threads and DuckDB files are closed even when a test fails half-way."""
    yield
    while _stacks:
        _stacks.pop().stop()


@pytest.fixture
def receivers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[HttpReceiver, HttpReceiver]]:
    slack, pd = slack_receiver(), pagerduty_receiver()
    monkeypatch.setenv("TEST_SLACK_URL", slack.url)
    monkeypatch.setenv("TEST_PD_KEY", ROUTING_KEY)
    yield slack, pd
    slack.close()
    pd.close()


def titles(receiver: HttpReceiver) -> list[str]:
    out = []
    for r in receiver.requests:
        body = r.json or {}
        out.append(body.get("text") or body.get("payload", {}).get("summary") or body.get("event_action", ""))
    return out


GROUP_HEADER = re.compile(r"^\W*\d+ alerts$")


def alert_titles(body: dict[str, Any]) -> list[str]:
    """The alert titles one Slack message carries, without their emoji: a grouped message (header
    "🚨 3 alerts") lists one title a line in its text, most urgent first; a single alert's text
    starts with its title."""
    lines = str(body.get("text", "")).splitlines()
    blocks = body.get("blocks") or [{}]
    grouped = GROUP_HEADER.match(blocks[0].get("text", {}).get("text", "")) is not None
    return [re.sub(r"^\W+", "", line) for line in (lines if grouped else lines[:1])]


def slack_titles(receiver: HttpReceiver) -> list[str]:
    """The titles of every alert Slack got, in message order (a grouped message's in its order)."""
    return [t for r in receiver.requests for t in alert_titles(r.json or {})]


def test_budget_thresholds_fire_once_each_and_a_jump_sends_only_the_highest(tmp_path: Path, receivers: Any) -> None:
    slack, pd = receivers
    st = Stack(tmp_path, slack, pd, slack_extra='kinds = ["budget"]')
    st.start()
    st.ingest([spend("vk-alice", 7.5, 0)])  # 75%: nothing
    st.step()
    st.ingest([spend("vk-alice", 0.75, 1)])  # 82.5%: warning
    st.step()
    st.settle()
    assert slack_titles(slack) == ["Warning: Alice (vk-alice) at 80% of budget"]
    assert len(slack.requests) == 1 and pd.requests == []  # warning is below oncall's min_severity
    text = slack.requests[0].json["text"]
    assert "$8.25 / $10.00 (82.5%)" in text and "Time remaining:" in text and "resets" in text
    for _ in range(3):  # evaluating again changes nothing
        st.step()
    st.ingest([spend("vk-alice", 0.75, 2)])  # 90%: critical, to Slack and PagerDuty
    st.step()
    st.settle()
    assert len(slack.requests) == 2 and "Critical: Alice (vk-alice) at 90% of budget" in slack_titles(slack)[1]
    assert len(pd.requests) == 1
    trigger = pd.requests[0].json
    assert trigger["event_action"] == "trigger" and trigger["routing_key"] == ROUTING_KEY
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["custom_details"]["current_usage_usd"] == pytest.approx(9.0)
    period = datetime.now(UTC).strftime("%Y-%m-%dT00:00:00Z")
    assert trigger["dedup_key"] == f"spendlake:budget:virtual_key:vk-alice:0:{period}"

    # Bob's budget has its own thresholds ([0.5]); one jump to 120% of Alice's goes past 100%
    st.ingest([spend("vk-bob", 6.0, 0), spend("vk-alice", 3.0, 3)])
    st.step()
    st.settle()
    new = slack_titles(slack)[2:]
    assert sorted(new) == [
        "Exceeded: Alice (vk-alice) at 100% of budget",
        "Warning: Bob (vk-bob) at 50% of budget",
    ], new
    recorded = st.rows("SELECT key, note FROM alerts WHERE kind = 'budget' ORDER BY key")
    assert len(recorded) == 4  # alice 80, 90, 100; bob 50
    # the second PagerDuty trigger of Alice's period carries the same dedup_key (one incident)
    assert [r.json["dedup_key"] for r in pd.requests] == [trigger["dedup_key"]] * 2
    st.stop()

    assert len(slack.requests) == 3  # Alice's 100% and Bob's 50% came due together: one message
    # a restart (new engine over the same state) sends nothing again
    st.start()
    st.step()
    time.sleep(1.5)
    assert len(slack_titles(slack)) == 4 and len(slack.requests) == 3 and len(pd.requests) == 2
    st.stop()


def test_a_jump_past_several_thresholds_records_the_lower_ones_without_sending(tmp_path: Path, receivers: Any) -> None:
    slack, pd = receivers
    st = Stack(tmp_path, slack, pd, slack_extra='kinds = ["budget"]')
    st.start()
    st.ingest([spend("vk-alice", 9.5, 0)])  # 0 → 95%
    st.step()
    st.settle()
    assert slack_titles(slack) == ["Critical: Alice (vk-alice) at 90% of budget"]
    notes = dict(st.rows("SELECT key, note FROM alerts WHERE kind = 'budget'"))
    assert sorted(n for n in notes.values() if n) == ["passed in the same batch as 90%; only that alert was sent"]
    st.stop()
    # `spendlake alerts` lists it too, as what it was: recorded, not sent
    from spendlake import alerts_cmd

    text = alerts_cmd.render(*alerts_cmd.load(st.lake, 50))
    lines = text.splitlines()
    at80 = next(i for i, line in enumerate(lines) if line.endswith("Warning: Alice (vk-alice) at 80% of budget"))
    assert lines[at80 + 1].strip() == "(not sent: passed in the same batch as 90%; only that alert was sent)", text


def test_pagerduty_incident_is_resolved_when_the_limit_is_raised_or_the_period_resets(tmp_path: Path,
                                                                                     receivers: Any) -> None:  # fmt: skip
    slack, pd = receivers
    st = Stack(tmp_path, slack, pd, slack_extra='kinds = ["budget"]', team_limit=20.0)
    st.start()
    st.ingest([spend("vk-alice", 9.2, 0), spend("vk-bob", 9.2, 0)])  # team 18.4 / 20 = 92%
    st.step()
    st.settle()
    triggers = {r.json["dedup_key"]: r.json for r in pd.requests}
    team_key = next(k for k in triggers if ":team:team-eng:" in k)
    alice_key = next(k for k in triggers if ":vk-alice:" in k)
    st.stop()
    # the team's limit is raised: its incident is resolved, Alice's stays open
    st.write_config(slack, pd, slack_extra='kinds = ["budget"]', team_limit=50.0)
    st.start()
    st.step()
    st.settle()
    resolves = [r.json for r in pd.requests if r.json["event_action"] == "resolve"]
    assert [r["dedup_key"] for r in resolves] == [team_key]
    assert resolves[0]["routing_key"] == ROUTING_KEY
    # a day later Alice's daily budget has reset: her incident is resolved too
    st.step(now=datetime.now(UTC) + timedelta(days=1))
    st.settle()
    resolves = [r.json["dedup_key"] for r in pd.requests if r.json["event_action"] == "resolve"]
    assert resolves == [team_key, alice_key]
    st.step(now=datetime.now(UTC) + timedelta(days=1))  # resolved once only
    time.sleep(1.0)
    assert len([r for r in pd.requests if r.json["event_action"] == "resolve"]) == 2
    st.stop()


def test_expensive_requests_once_per_event_and_not_for_old_events(tmp_path: Path, receivers: Any) -> None:
    slack, pd = receivers
    st = Stack(tmp_path, slack, pd, alerts="expensive_request_usd = 5.0", slack_extra='kinds = ["expensive_request"]')
    st.start()
    old = int((time.time() - 3 * 3600) * 1000)
    big = spend("vk-carol", 6.0, 0)
    st.ingest([big, spend("vk-carol", 1.0, 1), spend("vk-carol", 7.0, 2, ts=old)])
    st.step()
    st.ingest([big])  # the same event again (a producer retry): counted once, alerted once
    st.step()
    st.settle()
    got = slack_titles(slack)
    assert len(got) == 1 and "Expensive request: $6.00 from vk-carol on gpt-4o" in got[0], got
    assert "vk-carol-0" in slack.requests[0].json["text"]  # the event id, to find it in request_log
    st.stop()


def test_cost_spike_names_the_top_team_and_key_and_does_not_repeat(tmp_path: Path, receivers: Any) -> None:
    slack, pd = receivers
    st = Stack(tmp_path, slack, pd, alerts="spike_floor_usd = 20.0\nspike_multiple = 3.0",
               slack_extra='kinds = ["cost_spike"]')  # fmt: skip
    st.start()
    now = int(time.time() * 1000)
    hour_ago = now - 40 * 60 * 1000
    # baseline: $6 in the hour before the window (an average of $0.50 per 5 minutes)
    quiet = [spend("vk-dave", 0.5, i, ts=hour_ago + i * 60_000, team="team-data") for i in range(12)]
    burst = [spend("vk-bob", 3.0, 100 + i, ts=now - i * 1000, team="team-eng") for i in range(8)]
    burst += [spend("vk-erin", 1.0, 200 + i, ts=now - i * 1000, team="team-data") for i in range(3)]
    st.ingest(quiet + burst)
    st.step()
    st.settle()
    got = [r.json["text"] for r in slack.requests]
    assert len(got) == 1 and got[0].splitlines()[0].endswith("Cost spike detected: $27.00 in the last 5 min"), got
    assert "Last 5 min: $27.00 (avg: $0.50)" in got[0]
    assert "Team: Engineering (team-eng) ($24.00)" in got[0] and "Top user: Bob (vk-bob) - $24.00" in got[0]
    assert len(pd.requests) == 1 and pd.requests[0].json["payload"]["severity"] == "critical"
    st.ingest([spend("vk-bob", 30.0, 300)])
    st.step()
    time.sleep(1.0)
    assert len(slack.requests) == 1  # within the cooldown
    st.stop()


def test_unpriced_usage_and_token_rate_and_forecast(tmp_path: Path, receivers: Any) -> None:
    slack, pd = receivers
    st = Stack(tmp_path, slack, pd, alerts="token_rate_limit = 1000000\nforecast_min_utilization = 0.2",
               slack_extra='min_interval = "0s"')  # fmt: skip
    st.start()
    now = int(time.time() * 1000)
    mystery = [event(i, event_id=f"m-{i}", provider="acme", model="mystery-1", timestamp=now) for i in range(3)]
    # Alice burns $3 within the last hour of a daily budget of $10: at that rate it runs out today
    # unless the day ends within (10 - 3) / 3 = 2.3 hours
    burn = [spend("vk-alice", 1.0, i, ts=now - i * 60_000) for i in range(3)]
    # the minute rollups reach back past the burn window, so the rate is the last hour's
    early = [spend("vk-zed", 0.01, 0, ts=now - 90 * 60_000)]
    st.ingest(mystery + burn + early)
    st.step()
    st.settle()
    got = slack_titles(slack)
    assert any("Unpriced usage: acme/mystery-1 has no price (3 requests on" in t for t in got), got
    assert any("Unusual token usage: 1,2" in t for t in got), got  # 1.2M gpt-4o tokens + the mystery ones
    hours_left = (datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
                  - datetime.now(UTC)).total_seconds() / 3600  # fmt: skip
    forecast = [t for t in got if "Forecast: Alice (vk-alice) runs out of budget on" in t]
    assert len(forecast) == (1 if hours_left > 7 / 3 + 0.05 else 0), (got, hours_left)
    st.stop()


def test_retries_honour_retry_after_until_delivered_once(tmp_path: Path, receivers: Any) -> None:
    slack, pd = receivers
    slack.script((500, "rollup_error"), (429, "rate_limited", {"Retry-After": "2"}), "close", ("slow", 3.0))
    st = Stack(tmp_path, slack, pd, slack_extra='kinds = ["budget"]\ntimeout = "1s"')
    st.start()
    st.ingest([spend("vk-alice", 8.5, 0)])
    st.step()
    st.settle(60)
    times = [r.received_at for r in slack.requests]
    assert len(times) == 5  # 500, 429, closed, timed out, delivered
    assert times[2] - times[1] >= 1.9  # Retry-After: 2 was honoured
    (state, attempts, error, status), = st.rows("SELECT state, attempts, last_error, status FROM deliveries")
    assert (state, attempts, status) == ("delivered", 5, 200) and "timed out" in error
    st.stop()


def test_terminal_failures_stop_with_the_reason_and_others_flow_on(tmp_path: Path, receivers: Any) -> None:
    slack, pd = receivers
    slack.script((404, "no_service"))
    st = Stack(tmp_path, slack, pd, slack_extra='kinds = ["budget"]\nmin_interval = "0s"')
    st.start()
    st.ingest([spend("vk-alice", 8.5, 0), spend("vk-bob", 5.5, 0)])
    st.step()
    st.settle()
    rows = st.rows("SELECT a.title, d.state, d.attempts, d.last_error FROM deliveries d JOIN alerts a "
                   "ON a.key = d.alert_key WHERE d.channel = 'slack' ORDER BY d.id")  # fmt: skip
    assert [(r[1], r[2]) for r in rows] == [("failed", 1), ("delivered", 1)]
    assert rows[0][3] == "HTTP 404: no_service"
    st.stop()


def test_slack_is_paced_to_one_message_a_second(tmp_path: Path, receivers: Any) -> None:
    slack, pd = receivers
    st = Stack(tmp_path, slack, pd, alerts="expensive_request_usd = 1.0", slack_extra='kinds = ["expensive_request"]')
    st.start()
    st.ingest([spend("vk-carol", 2.0, i) for i in range(4)])
    st.step()
    slack.wait_for(1)  # the four, due together, went out as one message
    st.ingest([spend("vk-carol", 3.0, 4)])
    st.step()
    st.settle()
    assert len(slack.requests) == 2
    assert [len(alert_titles(r.json)) for r in slack.requests] == [4, 1]
    assert {t.split(" from ")[0] for t in slack_titles(slack)} == {"Expensive request: $2.00", "Expensive request: $3.00"}
    times = [r.received_at for r in slack.requests]
    assert times[1] - times[0] >= 0.95  # paced: never two messages within a second
    st.stop()


def test_deliveries_give_up_after_the_configured_time(tmp_path: Path, receivers: Any) -> None:
    slack, pd = receivers
    slack.set_default((503, "service unavailable"))
    st = Stack(tmp_path, slack, pd, alerts='give_up_after = "2s"', slack_extra='kinds = ["budget"]')
    st.start()
    st.ingest([spend("vk-alice", 8.5, 0)])
    st.step()
    st.settle(30)
    (state, attempts, error), = st.rows("SELECT state, attempts, last_error FROM deliveries")
    assert state == "failed" and attempts >= 2 and error.startswith(f"gave up after {attempts} attempts: HTTP 503")
    st.stop()


def test_no_secret_reaches_the_outbox_published_files_or_logs(tmp_path: Path, receivers: Any,
                                                              caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    slack, pd = receivers
    slack.set_default("close")
    pd.set_default((400, {"status": "invalid event", "message": "Event object is invalid", "errors": ["bad"]}))
    caplog.set_level(logging.DEBUG)
    st = Stack(tmp_path, slack, pd, alerts='give_up_after = "1s"', slack_extra='kinds = ["budget"]')
    st.start()
    st.ingest([spend("vk-alice", 9.5, 0)])
    st.step()
    st.settle(30)
    st.stop()
    secrets = [slack.url.split("/services/", 1)[1], ROUTING_KEY]
    state = (tmp_path / "lake" / "_state" / "spendlake.duckdb").read_bytes()
    published = b"".join(p.read_bytes() for p in (tmp_path / "lake" / "_alerts").glob("*.parquet"))
    con = duckdb.connect()
    dumped = json.dumps(con.execute(
        f"SELECT * FROM read_parquet('{tmp_path}/lake/_alerts/deliveries.parquet')").fetchall(), default=str)  # fmt: skip
    assert "HTTP 400" in dumped and "connection" in dumped  # the reasons are there...
    for s in secrets:  # ...the secrets are not
        assert s.encode() not in state and s.encode() not in published and s not in dumped
        assert s not in caplog.text


def test_a_scheduled_report_goes_out_once_per_period_by_slack_and_email(tmp_path: Path, receivers: Any) -> None:
    from alerting.config import ReportSchedule
    from receivers import SmtpReceiver
    from spendlake.cli import _report_builder

    slack, pd = receivers
    smtp = SmtpReceiver()
    st = Stack(tmp_path, slack, pd, slack_extra='kinds = ["report"]')
    st.cfg.write_text(st.cfg.read_text() + f"""
[[channels]]
name = "mail"
type = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp.port}
from = "spendlake@example.com"
to = ["finops@example.com"]
kinds = ["report"]

[[reports]]
period = "daily"
channels = ["slack", "mail"]
""")
    yesterday = int((datetime.now(UTC) - timedelta(days=1)).replace(hour=12).timestamp() * 1000)
    st.ingest([spend("vk-alice", 1.25, 0, ts=yesterday), spend("vk-bob", 2.5, 0, ts=yesterday)])
    engine = st.start()
    settings = settings_mod.load(str(st.cfg))
    engine.report = _report_builder(settings)
    st.step()
    schedule = ReportSchedule("daily", ("slack", "mail"))
    assert settings.alerting.reports == (schedule,)
    engine.run_report(schedule)
    engine.run_report(schedule)  # the same period again: recorded once, sent once
    st.settle()
    assert len(slack.requests) == 1
    text = slack.requests[0].json["text"]
    assert "$3.75" in text, text  # yesterday's total
    (mail,) = smtp.wait_for(1)
    assert mail.rcpt_tos == ("finops@example.com",)
    html = mail.message.get_body(("html",)).get_content()
    assert "<svg" in html and "$3.75" in html
    smtp.close()
    st.stop()


def test_a_landed_batch_is_checked_before_its_rollup_and_never_counted_twice(tmp_path: Path, receivers: Any) -> None:
    slack, pd = receivers
    st = Stack(tmp_path, slack, pd, slack_extra='kinds = ["budget"]')
    engine = st.start()
    assert engine.watch is not None and st.rollup is not None
    st.ingest([spend("vk-alice", 7.5, 0)])
    st.step()  # 75%, rolled up
    rolled = {p.relative_to(st.lake).as_posix() for p in st.lake.glob("events/*/*.parquet")}
    # the same event again (a producer retry) and $0.40 more: 79% once the copy is dropped, not 154%
    st.ingest([spend("vk-alice", 7.5, 0), spend("vk-alice", 0.4, 1)])
    new = sorted(p.relative_to(st.lake).as_posix() for p in st.lake.glob("events/*/*.parquet"))
    new = [p for p in new if p not in rolled]
    con = engine.con.cursor()  # type: ignore[union-attr]
    assert engine.watch.check(con, new) == []
    # $0.60 more lands: 85%, recorded from the landed file alone, before any rollup
    st.ingest([spend("vk-alice", 0.6, 2)])
    newer = [p.relative_to(st.lake).as_posix() for p in st.lake.glob("events/*/*.parquet")]
    newer = [p for p in newer if p not in rolled and p not in new]
    got = engine.watch.check(con, new + newer)
    assert [r.alert.title for r in got] == ["Warning: Alice (vk-alice) at 80% of budget"]
    assert "$8.50 / $10.00 (85.0%)" in got[0].alert.text
    st.settle()
    assert len(slack.requests) == 1
    st.step()  # the rollup path finds it recorded
    time.sleep(1.0)
    assert len(slack.requests) == 1
    assert st.rows("SELECT count(*) FROM alerts WHERE kind = 'budget'") == [(1,)]
