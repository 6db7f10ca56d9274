"""serve moved to another machine: a `spendlake serve` started with no state on an existing lake
takes what the old serve published under ``<lake>/_alerts/`` as the record of its alert outbox.

What it shows, end to end (real serve processes in embedded mode fed over the HTTP intake, real
DuckDB, local Slack and PagerDuty stand-ins): budget alerts and an expensive-request alert are
delivered; serve dies (SIGKILL: a crash; or SIGTERM) while PagerDuty is down, so one delivery is
still pending in the published copy; ``_state/`` is deleted; a new serve rebuilds its rollups from
the lake and its outbox from ``_alerts/``: it sends nothing that was delivered again (checked after
the new serve has evaluated its rules at least twice), sends the pending PagerDuty event once, with
its full detail, and then sends the next threshold's alert, exactly once. The outbox's seeding
itself (a copy published by an older version, without ``body``): the last test.
"""

from __future__ import annotations

import re
import shutil
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
import requests

from conftest import RemoteLake, spendlake, wait_for
from intake_env import auth, start_serve
from receivers import HttpReceiver, pagerduty_answer, pagerduty_receiver, slack_receiver
from test_alerts import ROUTING_KEY, alert_titles, spend
from test_serve import scrape

EXTRA = """
[alerts]
evaluation_interval = "1s"
retry_max_interval = "1s"

[[channels]]
name = "finops-slack"
type = "slack"
url_env = "TEST_SLACK_URL"
min_interval = "0.2s"

[[channels]]
name = "oncall"
type = "pagerduty"
routing_key_env = "TEST_PD_KEY"
url = "{pd_url}"
min_severity = "critical"

[[virtual_keys]]
id = "vk-alice"
name = "Alice"
budgets = [{{ max_limit = 10.0, reset_duration = "1d" }}]
"""

A80 = "Warning: Alice (vk-alice) at 80% of budget"
A90 = "Critical: Alice (vk-alice) at 90% of budget"
A100 = "Exceeded: Alice (vk-alice) at 100% of budget"
EXPENSIVE = "Expensive request: $12.00 from vk-carol on gpt-4o"


def post(serve: Any, events: list[dict[str, Any]]) -> None:
    r = requests.post(serve.url + "/v1/events", data=orjson.dumps(events), headers=auth(), timeout=10)
    assert r.status_code == 200, r.text


def slack_titles(slack: HttpReceiver) -> list[str]:
    return [t for r in slack.requests for t in alert_titles(r.json or {})]


def pd_events(pd: HttpReceiver, since: int) -> list[tuple[str, Any]]:
    """(summary, custom_details) of each PagerDuty event after the first ``since`` requests."""
    return [(r.json["payload"]["summary"], r.json["payload"].get("custom_details")) for r in pd.requests[since:]]


def published(lake: Path) -> list[tuple[str, str, str, int]]:
    """(alert title, channel, state, attempts) of each delivery in the published copy."""
    pub = lake / "_alerts"
    if not (pub / "deliveries.parquet").exists():
        return []
    for _ in range(5):  # serve replaces the files while we read (as `spendlake alerts` does)
        try:
            return duckdb.connect().execute(
                f"""SELECT a.title, d.channel, d.state, d.attempts
                    FROM read_parquet('{pub}/deliveries.parquet') d JOIN read_parquet('{pub}/alerts.parquet') a
                      ON a.key = d.alert_key ORDER BY d.id""").fetchall()  # fmt: skip
        except duckdb.Error:
            time.sleep(0.2)
    raise AssertionError("the published copy could not be read")


def rolled_at(port: int) -> float:
    m = re.search(r"^spendlake_rollup_last_update_timestamp_seconds (\S+)$", scrape(port), re.M)
    return float(m.group(1)) if m else 0.0


@pytest.mark.parametrize("where", ["local", "s3"])
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["crash", "sigterm"])
def test_a_serve_started_without_state_sends_nothing_twice(stop: signal.Signals, where: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           request: pytest.FixtureRequest) -> None:  # fmt: skip
    """On a local lake the new serve finds the lake without its `_state/`; on an S3 lake it runs on
    another "host": a new mirror and state directory, nothing shared with the old one but the store."""
    remote: RemoteLake | None = request.getfixturevalue("s3_lake") if where == "s3" else None
    lake: Any = remote if remote is not None else tmp_path / "lake"
    view = (lambda: remote.local()) if remote is not None else (lambda: lake)  # noqa: E731 - what readers see
    slack, pd = slack_receiver(), pagerduty_receiver()
    pd.set_default((503, "service unavailable"))  # PagerDuty is down while the first serve runs
    monkeypatch.setenv("TEST_SLACK_URL", slack.url)
    monkeypatch.setenv("TEST_PD_KEY", ROUTING_KEY)
    serve = start_serve(tmp_path, lake, EXTRA.format(pd_url=pd.url))

    # Alice passes 80%, Carol sends one $12 request; then Alice passes 90% (Slack, and PagerDuty: down)
    post(serve, [spend("vk-alice", 8.5, 0), spend("vk-carol", 12.0, 0)])
    wait_for(lambda: {A80, EXPENSIVE} <= set(slack_titles(slack)), 30, "the 80% and expensive alerts in Slack")
    post(serve, [spend("vk-alice", 0.6, 1)])
    wait_for(lambda: A90 in slack_titles(slack) and len(pd.requests) >= 1, 30, "the 90% alert in Slack, tried on PD")

    # the positive signal: the published copy says what was delivered and what is pending
    def recorded() -> bool:
        got = {(t, ch): (st, n) for t, ch, st, n in published(view())}
        return (all(got.get((t, "finops-slack"), ("", 0))[0] == "delivered" for t in (A80, A90, EXPENSIVE))
                and got.get((A90, "oncall"), ("", 0))[0] == "pending" and got[(A90, "oncall")][1] >= 1)  # fmt: skip

    wait_for(recorded, 30, "the published copy to record the deliveries")
    serve.proc.send_signal(stop)
    code = serve.proc.wait(60)
    assert code == (0 if stop == signal.SIGTERM else -signal.SIGKILL), serve.log.read_text()[-3000:]
    assert sorted(slack_titles(slack)) == sorted([A80, A90, EXPENSIVE])
    states = {(t, ch): st for t, ch, st, _ in published(view())}
    assert states[(A90, "oncall")] == "pending", states  # the one delivery the new serve owes

    # a new machine: no state, the same lake; PagerDuty is back
    if remote is None:
        shutil.rmtree(lake / "_state")
        root = lake
    else:
        root = tmp_path / "host-2"
        monkeypatch.setenv("SPENDLAKE_LAKE_CACHE_DIR", str(root))
    pd.set_default(pagerduty_answer)
    pd_before = len(pd.requests)  # the refused attempts
    sent_before = slack_titles(slack)
    log_start = serve.log.stat().st_size
    serve2 = start_serve(tmp_path, lake)
    started = time.time()

    # the pending PagerDuty event goes out once, with the detail of the alert that was recorded
    wait_for(lambda: len(pd_events(pd, pd_before)) >= 1, 30, "the pending PagerDuty event to be sent")
    # the new serve rolled up (and so evaluated its rules) at least twice after it started
    wait_for(lambda: rolled_at(serve2.metrics_port) >= started + 2.0, 30, "two evaluations after the restart")
    time.sleep(0.5)  # a delivery of the last evaluation would be on its way now
    assert slack_titles(slack) == sent_before  # nothing delivered before is delivered again
    (summary, details), = pd_events(pd, pd_before)
    assert summary == A90 and details["threshold"] == 0.9 and details["budget_id"] == "virtual_key:vk-alice:0"

    # the next threshold is new: exactly its alert arrives, in Slack and on PagerDuty
    post(serve2, [spend("vk-alice", 1.0, 2)])
    wait_for(lambda: A100 in slack_titles(slack) and len(pd_events(pd, pd_before)) >= 2, 30, "the 100% alert")
    time.sleep(1.5)  # anything sent twice would arrive now
    assert sorted(slack_titles(slack)) == sorted([A80, A90, EXPENSIVE, A100])
    assert [s for s, _ in pd_events(pd, pd_before)] == [A90, A100]
    serve2.proc.send_signal(signal.SIGTERM)
    assert serve2.proc.wait(60) == 0, serve2.log.read_text()[-3000:]
    text = serve2.log.read_text()[log_start:]
    assert f"alert state rebuilt from {root}/_alerts/: 3 alerts, 4 deliveries" in text, text[-3000:]
    slack.close()
    pd.close()


def test_the_outbox_is_seeded_once_and_from_a_copy_without_bodies(tmp_path: Path) -> None:
    """A copy published before ``body`` was: the pending delivery is rebuilt from the alert's
    columns; new deliveries get ids after the published ones; a state with alerts is not seeded."""
    from alerting import outbox
    from alerting.records import Alert

    pub = tmp_path / "pub"
    pub.mkdir()
    old = duckdb.connect()
    old.execute("SET TimeZone = 'UTC'")
    outbox.schema(old)
    now = datetime.now(UTC)
    alert = Alert(key="budget:b:1", kind="budget", severity="critical", title="Critical: B at 90% of budget",
                  created_at=now, lines=("detail",), dedup_key="spendlake:budget:b")  # fmt: skip
    outbox.record_now(old, [outbox.Record(alert, ("slack", "oncall"), subject="b", period_start=now, max_limit=10.0)])
    old.execute("UPDATE deliveries SET state = 'delivered', attempts = 1 WHERE channel = 'slack'")
    old.execute("UPDATE deliveries SET id = id + 40")  # ids the old serve's sequence had reached
    cols = [c for c in outbox.ALERT_COLUMNS if c != "body"]
    old.execute(f"COPY (SELECT {', '.join(cols)} FROM alerts) TO '{pub}/alerts.parquet' (FORMAT parquet)")
    old.execute(f"COPY (SELECT * FROM deliveries) TO '{pub}/deliveries.parquet' (FORMAT parquet)")

    new = duckdb.connect()
    new.execute("SET TimeZone = 'UTC'")
    outbox.schema(new)
    assert outbox.seed(new, str(pub / "alerts.parquet"), str(pub / "deliveries.parquet")) == (1, 2)
    (body,), = new.execute("SELECT body FROM alerts").fetchall()
    rebuilt = Alert.from_json(body)
    assert (rebuilt.title, rebuilt.severity, rebuilt.dedup_key, rebuilt.lines) == (alert.title, "critical",
                                                                                   alert.dedup_key, ())  # fmt: skip
    assert new.execute("SELECT id, channel, state FROM deliveries ORDER BY id").fetchall() == [
        (41, "slack", "delivered"), (42, "oncall", "pending")]  # fmt: skip
    later = Alert(key="budget:b:2", kind="budget", severity="critical", title="t", created_at=now)
    outbox.record_now(new, [outbox.Record(later, ("slack",))])
    assert new.execute("SELECT max(id) FROM deliveries").fetchall() == [(43,)]
    assert not outbox.is_empty(new)
    with pytest.raises(RuntimeError):
        outbox.seed(new, str(pub / "alerts.parquet"), str(pub / "deliveries.parquet"))
    assert new.execute("SELECT count(*) FROM alerts").fetchall() == [(2,)]


def test_an_unreadable_copy_stops_serve_with_one_line(tmp_path: Path) -> None:
    """Better no start than an empty outbox that pages everyone again."""
    lake = tmp_path / "lake"
    (lake / "_alerts").mkdir(parents=True)
    (lake / "_alerts" / "alerts.parquet").write_bytes(b"not parquet")
    cfg = tmp_path / "spendlake.toml"
    cfg.write_text(f'[lake]\npath = "{lake}"\n[metrics]\nlisten = "127.0.0.1:0"\n')
    r = spendlake("serve", "--config", str(cfg), "--exit-when-idle", "1", timeout=60)
    err = r.stderr.decode()
    assert r.returncode == 1 and "Traceback" not in err, err
    assert f"spendlake: cannot rebuild the alert state from {lake}/_alerts/: " in err
    assert f"move {lake}/_alerts away to start without the alert history" in err
