"""The README's first command runs end to end (through the real broker, and without one)."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import Broker, lake_rows, spendlake


def check_story(stdout: str, lake: Path, events: int) -> None:
    m = re.search(r"November 2025: ([\d,]+) requests, \$([\d,.]+) spent", stdout)
    assert m, stdout
    assert int(m.group(1).replace(",", "")) == events
    [(total,)] = lake_rows(lake, "select round(sum(cost_usd), 2) from ev")
    assert f"{total:,.2f}" == m.group(2)  # the printed total is the lake's, to the cent
    top = stdout.split("Top virtual keys")[1].splitlines()[1]
    assert "vk-runaway-agent" in top  # the story: the runaway agent tops the list


def test_demo_without_kafka(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    r = spendlake("demo", "--no-kafka", "--events", "4000", "--lake", str(lake), check=True)
    check_story(r.stdout.decode(), lake, 4000)


def test_demo_through_kafka(kafka: Broker, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    r = spendlake("demo", "--bootstrap-servers", kafka.bootstrap, "--events", "6000", "--lake", str(lake), check=True)
    check_story(r.stdout.decode(), lake, 6000)
    assert b"ingesting (exactly once" in r.stderr
