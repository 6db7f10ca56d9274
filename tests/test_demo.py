"""The README's first command runs end to end (through the real broker, and without one).

What it shows: the month of history lands once (the printed request count is the lake's), the
month-to-date spend printed is the lake's to the cent, the runaway agent's live burst reaches the
Slack stand-in as a 100%-of-budget alert and a cost spike, the budget table shows the agent over
its limit, and the HTML report with charts is written.
"""

from __future__ import annotations

import re
from pathlib import Path

from conftest import Broker, lake_rows, spendlake

LIVE = 150  # spendlake.demo.LIVE_EVENTS


def check_story(stdout: str, lake: Path, events: int) -> None:
    m = re.search(r"Last 30 days: ([\d,]+) requests; this month so far \$([\d,.]+)", stdout)
    assert m, stdout
    [(distinct,)] = lake_rows(lake, "select count(distinct event_id) from ev")
    assert int(m.group(1).replace(",", "")) == distinct == events + LIVE
    [(month,)] = lake_rows(
        lake,
        """select round(sum(cost_usd), 2) from (select * from ev qualify row_number() over
           (partition by event_id order by ingested_at) = 1) where "timestamp" >= date_trunc('month', now())""",
    )
    assert f"{month:,.2f}" == m.group(2)  # the printed total is the lake's, to the cent
    slack = [line for line in stdout.splitlines() if line.startswith("  Slack ")]
    assert any("Exceeded: vk-runaway-agent at 100% of budget" in line for line in slack), stdout
    assert any("Cost spike detected" in line for line in slack), stdout
    agent = [line for line in stdout.splitlines() if "virtual_key vk-runaway-agent" in line]
    assert agent and agent[0].rstrip().endswith("EXCEEDED"), stdout
    html = (lake / "_demo" / "report.html").read_text()
    assert html.count("<svg") >= 3
    assert "spendlake query --lake" in stdout and "spendlake alerts --config" in stdout


def test_demo_without_kafka(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    r = spendlake("demo", "--no-kafka", "--events", "4000", "--lake", str(lake), check=True)
    check_story(r.stdout.decode(), lake, 4000)


def test_demo_through_kafka(kafka: Broker, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    r = spendlake("demo", "--bootstrap-servers", kafka.bootstrap, "--events", "6000", "--lake", str(lake), check=True)
    check_story(r.stdout.decode(), lake, 6000)
    assert b"ingesting (exactly once" in r.stderr and b"spendlake serve is running: http://127.0.0.1:" in r.stderr
