"""The README's first command runs end to end (through the real broker, and without one).

What it shows: the month of history lands once (the printed request count is the lake's), the
month-to-date spend printed is the lake's to the cent, the runaway agent's live burst reaches the
Slack stand-in as a 100%-of-budget alert and a cost spike, the budget table shows the agent over
its limit, and the HTML report with charts is written. Run twice in one directory it tells the
same story from a reset lake; with its own broker it leaves nothing under /var/tmp.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, lake_rows

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


def alert_story(stdout: str) -> list[str]:
    """The alerts serve recorded, as the demo lists them, with what differs between two runs by
    design (clock times, the projected exhaustion time, the spike's amount) taken out."""
    lines = stdout.split("\nAlerts: ", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    out = []
    for line in lines:
        text = re.sub(r"^\s+\d\d:\d\d:\d\d\s+", "", line)
        text = re.sub(r" on \d{4}-\d\d-\d\d \d\d:\d\d UTC", " on <time>", text)
        out.append(re.sub(r"\$[\d,.]+", "$<amount>", text))
    return sorted(out)


def run_demo(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "spendlake", "demo", *args], cwd=cwd, capture_output=True, text=True,
                       timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_demo_without_kafka_twice_in_one_directory_tells_the_same_story(tmp_path: Path) -> None:
    """The README's no-broker demo, run twice where a user would run it (a git clone): the second
    run resets the demo lake, both tell the same story (the agent's 80%, 90% and 100% alerts each
    its own moment, the spike, the forecasts), and git sees nothing new."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    lake = tmp_path / "demo-lake"
    first = run_demo(tmp_path, "--no-kafka", "--events", "4000")
    assert f"the demo lake is {lake}\n" in first.stderr
    check_story(first.stdout, lake, 4000)
    second = run_demo(tmp_path, "--no-kafka", "--events", "4000")
    assert f"the demo lake is {lake}: reset" in second.stderr
    check_story(second.stdout, lake, 4000)  # one history, not two: the request count is the lake's and 4,150
    story = alert_story(first.stdout)
    assert story == alert_story(second.stdout)
    for pct, label in ((80, "Warning"), (90, "Critical"), (100, "Exceeded")):
        # each threshold its own alert, sent (a superseded one would say so on its line)
        assert f"{label}: vk-runaway-agent at {pct}% of budget" in story, story
    assert not [line for line in story if "passed in the same batch" in line and "vk-runaway-agent" in line], story
    assert "Cost spike detected: $<amount> in the last 5 min" in story
    assert git_status(tmp_path) == ""
    # a directory that is not a demo lake is never deleted
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    r = subprocess.run([sys.executable, "-m", "spendlake", "demo", "--no-kafka", "--lake", str(mine)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert r.returncode == 2 and "not a lake an earlier demo made" in r.stderr
    assert (mine / "keep.txt").read_text() == "mine"


def git_status(repo: Path) -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True).stdout


def test_demo_with_its_own_broker_leaves_nothing_behind(tmp_path: Path) -> None:
    """The README's first command: the demo starts its own broker (jars already cached by
    .ci/run, so it does not say it fetches them), lands the history from every partition, and
    removes the broker's data from /var/tmp when it ends."""
    port = free_port()
    home = Path(f"/var/tmp/spendlake-demo-kafka-{port}")
    lake = tmp_path / "lake"
    r = run_demo(tmp_path, "--events", "6000", "--lake", str(lake), env={"SPENDLAKE_DEMO_KAFKA_PORT": str(port)})
    check_story(r.stdout, lake, 6000)
    assert "ingesting (exactly once" in r.stderr and "spendlake serve is running: http://127.0.0.1:" in r.stderr
    assert "fetches its jars" not in r.stderr  # .ci/run cached them: said only when it happens
    m = re.search(r"done \(all 3 partitions of [\w-]+\): ([\d,]+) events landed", r.stderr)
    assert m and int(m.group(1).replace(",", "")) == 6000, r.stderr  # the total, not the last progress sample
    assert not home.exists(), sorted(p.name for p in home.iterdir())
    assert not _port_open(port)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0
