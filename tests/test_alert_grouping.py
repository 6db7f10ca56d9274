"""Alerts due together on a paced channel go out as one message (issue 13, item 5).

In process, as tests/test_alerts.py: a real lake, real DuckDB state, and real local servers
answering as Slack, PagerDuty and a webhook do (tests/receivers.py). What it shows: three keys
crossing 80%, 90% and 100% in one step reach Slack as ONE message, most severe first, every title
in it, while PagerDuty still gets one event (one dedup_key) per alert; alerts that come due while
the channel waits out its pacing interval join the next message, never a second message within
the interval; a 503 then a 200 delivers the group once and records every row delivered, with no
copy of an alert delivered before; a group refused for good is split, so each alert gets its own
answer; a restart never resends a delivered alert. Then the renderers: the grouped Slack message
within Slack's limits (its receiver look-alike accepts it), the webhook's grouped body, and
PagerDuty and e-mail refusing a group.
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from receivers import HttpReceiver, Request, slack_answer
from test_alerts import Stack, _stop_stacks, alert_titles, receivers, slack_titles, spend  # noqa: F401 (fixtures)

from alerting.channels import send, slack_group_payload, webhook_group_payload, webhook_payload
from alerting.config import Channel
from alerting.records import Alert, TerminalError, by_urgency, urgency

EXTRA_KEYS = """
[[virtual_keys]]
id = "vk-carol"
name = "Carol"
team_id = "team-eng"
budgets = [{ max_limit = 10.0, reset_duration = "1d" }]

[[virtual_keys]]
id = "vk-dave"
name = "Dave"
team_id = "team-eng"
budgets = [{ max_limit = 10.0, reset_duration = "1d" }]
"""
WARNING = "Warning: Alice (vk-alice) at 80% of budget"
CRITICAL = "Critical: Carol (vk-carol) at 90% of budget"
EXCEEDED = "Exceeded: Dave (vk-dave) at 100% of budget"
HELD = 'kinds = ["budget"]\ntimeout = "60s"'  # a held request must not time out on a busy machine


def stack(tmp: Path, slack: HttpReceiver, pd: HttpReceiver, slack_extra: str = 'kinds = ["budget"]') -> Stack:
    st = Stack(tmp, slack, pd, slack_extra=slack_extra)
    st.cfg.write_text(st.cfg.read_text() + EXTRA_KEYS)
    return st


def three_crossings(n: int = 0) -> list[dict[str, Any]]:
    """Alice to 85% (80% crossed), Carol to 95% (90%), Dave to 105% (100%): in one batch."""
    return [spend("vk-alice", 8.5, n), spend("vk-carol", 9.5, n), spend("vk-dave", 10.5, n)]


class Gate:
    """A receiver answer that holds the request until ``open()``, then answers as ``then`` does:
    the channel's worker is mid-send while the test records the next alerts."""

    def __init__(self, then: Any = slack_answer) -> None:
        self.event = threading.Event()
        self.then = then

    def __call__(self, request: Request) -> Any:
        self.event.wait(50)
        return self.then(request) if callable(self.then) else self.then

    def open(self) -> None:
        self.event.set()


def delivery_rows(st: Stack, channel: str = "slack") -> list[tuple[Any, ...]]:
    return st.rows(f"SELECT a.title, d.state, d.attempts, d.status, d.last_error FROM deliveries d JOIN alerts a "
                   f"ON a.key = d.alert_key WHERE d.channel = '{channel}' ORDER BY a.title")  # fmt: skip


def test_alerts_due_together_go_to_slack_as_one_message_most_severe_first(tmp_path: Path, receivers: Any) -> None:
    slack, pd = receivers
    st = stack(tmp_path, slack, pd)
    st.start()
    st.ingest(three_crossings())
    st.step()
    st.settle()
    (message,) = [r.json for r in slack.requests]
    assert alert_titles(message) == [EXCEEDED, CRITICAL, WARNING]  # most severe first
    blocks = message["blocks"]
    assert blocks[0]["text"]["text"] == "🚨 3 alerts"
    sections = [b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b]
    assert [s.splitlines()[0] for s in sections] == [f"🚨 *{EXCEEDED}*", f"🚨 *{CRITICAL}*", f"⚠️ *{WARNING}*"]
    assert "Current: $10.50 / $10.00 (105.0%)" in sections[0] and "Current: $8.50 / $10.00 (85.0%)" in sections[2]
    assert slack_answer(slack.requests[0]) == (200, "ok")  # within what Slack accepts
    # every row is recorded delivered on its own, after one attempt
    assert [r[1:4] for r in delivery_rows(st)] == [("delivered", 1, 200)] * 3
    # PagerDuty is never grouped: one event per critical alert, each its own incident (dedup_key)
    assert sorted(r.json["payload"]["summary"] for r in pd.requests) == [CRITICAL, EXCEEDED]
    assert len({r.json["dedup_key"] for r in pd.requests}) == 2
    assert {r[1] for r in delivery_rows(st, "oncall")} == {"delivered"}
    st.stop()


def test_alerts_due_within_the_pacing_interval_join_the_next_message(tmp_path: Path, receivers: Any) -> None:
    slack, pd = receivers
    gate = Gate()
    slack.script(gate)  # the first message is held until the next alerts are recorded
    st = stack(tmp_path, slack, pd, HELD)
    st.start()
    st.ingest([spend("vk-alice", 8.5, 0)])
    st.step()
    slack.wait_for(1)
    st.ingest([spend("vk-dave", 10.5, 0), spend("vk-carol", 9.5, 0)])  # Dave 105%, Carol 95%
    st.step()
    st.ingest([spend("vk-alice", 0.6, 1)])  # Alice 91%
    st.step()
    gate.open()
    st.settle()
    messages = [alert_titles(r.json) for r in slack.requests]
    assert messages == [[WARNING], [EXCEEDED, CRITICAL, "Critical: Alice (vk-alice) at 90% of budget"]]
    # the critical ones of one rank keep their order: Carol's was recorded before Alice's 90%
    times = [r.received_at for r in slack.requests]
    assert times[1] - times[0] >= 0.95  # the pacing interval (1 s) held between the two messages
    assert len(pd.requests) == 3  # Dave, Carol, Alice at 90%: one event each
    st.stop()


def test_a_transient_failure_resends_the_group_once_and_records_each_delivery(tmp_path: Path,
                                                                              receivers: Any) -> None:  # fmt: skip
    slack, pd = receivers
    gate = Gate()
    slack.script(gate, (503, "service unavailable"))  # then Slack's own answers
    st = stack(tmp_path, slack, pd, HELD)
    st.start()
    st.ingest([spend("vk-alice", 8.5, 0)])
    st.step()
    slack.wait_for(1)
    st.ingest([spend("vk-carol", 9.5, 0), spend("vk-dave", 10.5, 0)])
    st.step()
    gate.open()
    st.settle(30)
    messages = [alert_titles(r.json) for r in slack.requests]
    # Alice's, delivered; the group answered 503; the same group again, answered 200 — Alice's
    # alert is not in it again
    assert messages == [[WARNING], [EXCEEDED, CRITICAL], [EXCEEDED, CRITICAL]]
    assert slack.requests[1].body == slack.requests[2].body
    rows = {r[0]: r[1:] for r in delivery_rows(st)}
    assert rows[WARNING] == ("delivered", 1, 200, None)
    assert rows[CRITICAL] == rows[EXCEEDED] == ("delivered", 2, 200, "HTTP 503: service unavailable")
    st.stop()


def test_a_group_refused_for_good_is_split_so_each_alert_gets_its_own_answer(tmp_path: Path,
                                                                             receivers: Any) -> None:  # fmt: skip
    slack, pd = receivers
    slack.script((400, "invalid_blocks"))  # the grouped message is refused; then Slack's own answers
    st = stack(tmp_path, slack, pd)
    st.start()
    st.ingest(three_crossings())
    st.step()
    st.settle(30)
    messages = [alert_titles(r.json) for r in slack.requests]
    assert messages == [[EXCEEDED, CRITICAL, WARNING], [EXCEEDED], [CRITICAL], [WARNING]]
    rows = delivery_rows(st)
    assert [r[1:4] for r in rows] == [("delivered", 2, 200)] * 3
    assert all(r[4].startswith("HTTP 400: invalid_blocks (as a group of 3 alerts") for r in rows), rows
    st.stop()


def test_a_restart_never_resends_a_delivered_alert(tmp_path: Path, receivers: Any) -> None:
    slack, pd = receivers
    down = {"on": False}
    accepted: list[Request] = []

    def answer(request: Request) -> Any:
        if down["on"]:
            return 503, "service unavailable"
        accepted.append(request)
        return slack_answer(request)

    slack.set_default(answer)
    st = stack(tmp_path, slack, pd)
    st.start()
    st.ingest(three_crossings())
    st.step()
    st.settle()
    assert len(slack.requests) == 1  # the three, in one message
    down["on"] = True  # an outage; then Carol and Dave pass their next thresholds, Alice hers
    st.ingest([spend("vk-carol", 0.6, 1), spend("vk-alice", 0.6, 1), spend("vk-bob", 5.5, 0)])
    st.step()
    slack.wait_for(2)
    st.stop()  # mid-way: the new alerts are pending
    pending = st_rows_after_stop(st)
    assert sorted(pending) == ["Critical: Alice (vk-alice) at 90% of budget", "Exceeded: Carol (vk-carol) at 100% of budget",
                               "Warning: Bob (vk-bob) at 50% of budget"], pending  # fmt: skip
    down["on"] = False
    st.start()
    st.step()
    st.settle(30)
    got = [t for r in accepted for t in alert_titles(r.json)]
    assert sorted(got) == sorted([EXCEEDED, CRITICAL, WARNING, *pending])  # each exactly once
    assert len(accepted) == 2 and got[:3] == [EXCEEDED, CRITICAL, WARNING]
    assert got[3:] == ["Exceeded: Carol (vk-carol) at 100% of budget",
                            "Critical: Alice (vk-alice) at 90% of budget",
                            "Warning: Bob (vk-bob) at 50% of budget"]  # fmt: skip
    st.stop()


def st_rows_after_stop(st: Stack) -> list[str]:
    """The titles of the Slack deliveries still pending, read from the state file after stop."""
    import duckdb

    con = duckdb.connect(str(st.lake / "_state" / "spendlake.duckdb"), read_only=True)
    try:
        return [t for (t,) in con.execute("SELECT a.title FROM deliveries d JOIN alerts a ON a.key = d.alert_key "
                                          "WHERE d.channel = 'slack' AND d.state = 'pending'").fetchall()]  # fmt: skip
    finally:
        con.close()


# --- renderers and channels ------------------------------------------------------------------

NOW = datetime(2026, 11, 14, 9, 30, tzinfo=UTC)


def alert(key: str, kind: str = "budget", severity: str = "warning", threshold: float | None = None,
          minutes: int = 0, **over: Any) -> Alert:  # fmt: skip
    facts = {} if threshold is None else {"threshold": threshold}
    base: dict[str, Any] = {"key": key, "kind": kind, "severity": severity, "title": f"{severity}: {key}",
                            "created_at": NOW + timedelta(minutes=minutes), "lines": (f"about {key}",),
                            "fields": (("Spend", "$1.00 / $2.00"), ("Used", "50.0%")), "facts": facts}  # fmt: skip
    return Alert(**{**base, **over})


def test_urgency_orders_exceeded_critical_warning_forecast_info_then_oldest_first() -> None:
    info = alert("info", severity="info", kind="unpriced")
    forecast = alert("forecast", kind="budget_forecast")
    warning = alert("warning", threshold=0.8)
    spike = alert("spike", kind="cost_spike", severity="critical")
    critical = alert("critical", severity="critical", threshold=0.9)
    exceeded = alert("exceeded", severity="critical", threshold=1.0)
    older_warning = alert("older-warning", kind="unpriced", minutes=-5)
    given = [info, forecast, older_warning, warning, spike, critical, exceeded]
    assert [a.key for a in by_urgency(given)] == ["exceeded", "spike", "critical", "older-warning", "warning",
                                                  "forecast", "info"]  # fmt: skip
    assert urgency(alert("r", severity="info", action="resolve", threshold=1.0)) == 0


def test_grouped_slack_message_keeps_slack_limits(slack: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    many = [alert(f"k{i}", lines=tuple("x" * 500 for _ in range(8)), fields=tuple((f"f{j}", "v") for j in range(14)))
            for i in range(10)]  # fmt: skip
    body = slack_group_payload(many)
    assert len(body["blocks"]) <= 50 and body["blocks"][0]["text"]["text"] == "⚠️ 10 alerts"
    assert body["text"].splitlines() == [f"⚠️ warning: k{i}" for i in range(10)]
    # 49 alerts still fit 50 blocks (one section each); dividers, fields and context lines go first
    crowd = slack_group_payload([alert(f"c{i}") for i in range(49)])
    assert len(crowd["blocks"]) == 50 and {b["type"] for b in crowd["blocks"][1:]} == {"section"}
    with pytest.raises(ValueError):
        slack_group_payload([alert(f"c{i}") for i in range(50)])
    assert slack_group_payload([many[0]])["blocks"][0]["text"]["text"] == "⚠️ warning: k0"  # one alert: as before
    # and Slack takes it: sent through the channel to its look-alike
    monkeypatch.setenv("SPENDLAKE_TEST_SLACK_URL", slack.url)
    channel = Channel(name="s", type="slack", url_env="SPENDLAKE_TEST_SLACK_URL", min_interval_s=1.0)
    assert send(channel, tuple(many)).status == 200
    assert slack.requests[0].json == body


def test_grouped_text_escapes_mentions() -> None:
    body = slack_group_payload([alert("a", title="Warning: <!channel> & co"), alert("b")])
    assert "<!channel>" not in str(body) and "&lt;!channel&gt; &amp; co" in body["text"]


def test_webhook_group_body_and_pagerduty_and_email_refuse_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    two = [alert("w", threshold=0.8), alert("x", severity="critical", threshold=1.0)]
    with HttpReceiver("/hooks/grouped") as hook:
        monkeypatch.setenv("SPENDLAKE_TEST_HOOK_URL", hook.url)
        channel = Channel(name="h", type="webhook", url_env="SPENDLAKE_TEST_HOOK_URL", min_interval_s=1.0)
        send(channel, two)
        got = hook.requests[0].json
    assert got == webhook_group_payload(two)
    assert got["count"] == 2 and got["title"] == "2 alerts" and got["text"] == "critical: x\nwarning: w"
    assert got["alerts"] == [webhook_payload(two[1]), webhook_payload(two[0])]
    assert webhook_group_payload(two[:1]) == webhook_payload(two[0])
    for typ, extra in (("pagerduty", {"url": "http://127.0.0.1:9/v2/enqueue", "routing_key_env": "NOPE"}),
                       ("email", {"smtp_host": "127.0.0.1", "sender": "a@b.c", "to": ("d@e.f",)})):  # fmt: skip
        with pytest.raises(TerminalError, match=f"a {typ} channel takes one alert per message, got 2"):
            send(Channel(name="x", type=typ, **extra), two)


@pytest.fixture
def slack() -> Any:
    from receivers import slack_receiver

    with slack_receiver() as r:
        yield r


def test_slack_group_header_names_the_most_severe_emoji() -> None:
    body = slack_group_payload([alert("i", severity="info"), alert("c", severity="critical")])
    assert body["blocks"][0]["text"]["text"] == "🚨 2 alerts"
    assert re.match(r"🚨 \*critical: c\*", body["blocks"][1]["text"]["text"])
