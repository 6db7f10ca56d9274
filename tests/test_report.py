"""alerting/report.py, its renderers and `spendlake report`, over a real lake.

The lake is built by the real `spendlake ingest --source` from two JSONL files that share some
events (duplicate event_ids), in America/New_York, across the 2026 DST change (Sunday 8 March):
customers, teams and virtual keys from the config, events without a team or customer, an unpriced
model, and events placed exactly on local midnights. Every expected number is an independent sum in
plain Python over the raw Parquet rows (one row per event_id), with the period boundaries typed in
by hand as UTC instants. The HTML page is opened in real headless Chromium.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import shutil
import subprocess
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from aggregator.rollup import Rollup
from alerting.records import Alert
from alerting.report import Report, build_report
from alerting.report_render import CSV_COLUMNS, to_alert, to_csv, to_html, to_markdown, usd
from conftest import dedup, event, raw_rows, spendlake
from spendlake import settings as settings_mod

CONFIG = """
[lake]
timezone = "America/New_York"

[[customers]]
id = "cust-acme"
name = "Acme Corp"
budgets = [{ max_limit = 40.0, reset_duration = "1M" }]

[[customers]]
id = "cust-globex"
name = "Globex"

[[teams]]
id = "team-search"
name = "Search"
customer_id = "cust-acme"
budgets = [{ max_limit = 0.34, reset_duration = "1w" }]  # about 93% in the reported week

[[teams]]
id = "team-chat"
name = "Chat"
customer_id = "cust-globex"
budgets = [{ max_limit = 1000.0, reset_duration = "1w" }]

[[virtual_keys]]
id = "vk-alice"
name = "Alice"
team_id = "team-search"
budgets = [{ max_limit = 0.03, reset_duration = "1d" }]  # about 86% on its last day

[[virtual_keys]]
id = "vk-bob"
name = "Bob"
team_id = "team-chat"

[[virtual_keys]]
id = "vk-carol"
name = "Carol"
team_id = "team-search"
"""
USD = 100_000  # gpt-4o output tokens per dollar ($10 per M)
N = 430
START = datetime(2026, 1, 26, tzinfo=UTC)
STEP = timedelta(minutes=150)  # N events from 26 January to 11 March
OVERLAP = range(250, 300)  # in both source files: duplicates


def Z(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# Local midnights, typed in as UTC instants (EST is UTC-5, EDT from 8 March 03:00 local is UTC-4).
WEEK = (Z("2026-03-02T05:00:00Z"), Z("2026-03-09T04:00:00Z"))  # Mon 2 March - Sun 8 March (167 hours)
PREV_WEEK = (Z("2026-02-23T05:00:00Z"), Z("2026-03-02T05:00:00Z"))
FEB = (Z("2026-02-01T05:00:00Z"), Z("2026-03-01T05:00:00Z"))
JAN = (Z("2026-01-01T05:00:00Z"), Z("2026-02-01T05:00:00Z"))
SUN_8 = (Z("2026-03-08T05:00:00Z"), Z("2026-03-09T04:00:00Z"))  # 23 hours
SAT_7 = (Z("2026-03-07T05:00:00Z"), Z("2026-03-08T05:00:00Z"))
AT = Z("2026-03-10T16:00:00Z")  # Tuesday 10 March, noon in New York

# Events exactly at (or a second before) local midnights, with costs that show where they went.
EDGES = {
    "edge-prev-week-last": ("2026-03-02T04:59:59Z", 0.37),  # Sun 1 March 23:59:59 EST: previous week, March
    "edge-week-first": ("2026-03-02T05:00:00Z", 0.41),  # Mon 2 March 00:00 EST
    "edge-week-last": ("2026-03-09T03:59:59Z", 0.43),  # Sun 8 March 23:59:59 EDT
    "edge-next-week-first": ("2026-03-09T04:00:00Z", 0.47),  # Mon 9 March 00:00 EDT: not in that week
    "edge-feb-last": ("2026-03-01T04:59:59Z", 0.53),  # Sat 28 February 23:59:59 EST
    "edge-mar-first": ("2026-03-01T05:00:00Z", 0.59),  # Sun 1 March 00:00 EST
}


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def make_event(i: int) -> dict[str, Any]:
    """event(i) with this test's attribution: four keys (one unknown to the config), keyless events
    with a team of their own or none, an unpriced model every 13th event."""
    e = event(i, timestamp=ms(START + i * STEP), event_id=f"r-{i:05d}")
    del e["team"]
    vk = ("vk-alice", "vk-bob", "vk-carol", "vk-stray", None)[i % 5]
    if vk is None:
        del e["virtual_key"]
        if i % 2:
            e["team"] = "team-ops"  # a team the config does not know: no customer
    else:
        e["virtual_key"] = vk
    if i % 13 == 0:
        e["model"] = "no-such-model-9000"
    return e


def edge_events() -> list[dict[str, Any]]:
    return [{"event_id": eid, "timestamp": ms(Z(t)), "provider": "openai", "model": "gpt-4o", "input_tokens": 0,
             "output_tokens": int(round(dollars * USD)), "virtual_key": "vk-bob"}
            for eid, (t, dollars) in EDGES.items()]  # fmt: skip


def write_jsonl(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    return path


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(lake, config): ingested by the real command from two overlapping source files."""
    root = tmp_path_factory.mktemp("report")
    cfg = root / "spendlake.toml"
    cfg.write_text(CONFIG)
    lake = root / "lake"
    a = write_jsonl(root / "a.jsonl", [make_event(i) for i in range(0, OVERLAP.stop)])
    b = write_jsonl(root / "b.jsonl", [make_event(i) for i in range(OVERLAP.start, N)] + edge_events())
    for src in (a, b):
        spendlake("ingest", "--source", str(src), "--lake", str(lake), "--config", str(cfg), "--catalog", "builtin",
                  "--quiet", check=True)  # fmt: skip
    assert not list((lake / "dead_letter").glob("*/*.parquet")), "the test's events must all be valid"
    return lake, cfg


def settings(cfg: Path, lake: Path, timezone: str | None = None) -> settings_mod.Settings:
    return settings_mod.load(str(cfg)).with_overrides({("lake", "path"): str(lake), ("lake", "timezone"): timezone})


# --- the independent truth -----------------------------------------------------------------------

Span = tuple[datetime, datetime]  # [start, end)


class Truth:
    def __init__(self, lake: Path) -> None:
        raw = raw_rows(lake)
        self.rows = dedup(raw)
        assert len(raw) > len(self.rows), "the lake must hold duplicates for the test to mean something"

    def within(self, window: Span) -> list[dict[str, Any]]:
        return [r for r in self.rows if window[0] <= r["timestamp"] < window[1]]

    def total(self, window: Span) -> float:
        return sum(r["cost_usd"] or 0.0 for r in self.within(window))

    def by(self, column: str, window: Span) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for r in self.within(window):
            out[r[column] if r[column] is not None else "(none)"] += r["cost_usd"] or 0.0
        return dict(out)

    def by_model(self, window: Span) -> dict[tuple[str, str], float]:
        out: dict[tuple[str, str], float] = defaultdict(float)
        for r in self.within(window):
            out[(r["provider"], r["model"])] += r["cost_usd"] or 0.0
        return dict(out)

    def ids(self, window: Span) -> set[str]:
        return {r["event_id"] for r in self.within(window)}

    def first_hour(self) -> datetime:
        return min(r["timestamp"] for r in self.rows).replace(minute=0, second=0, microsecond=0)

    def change_pct(self, now: float, before: float, previous: Span) -> float | None:
        """The floor rule typed out: a % only when the lake's first hour starts by the previous
        window's start and the previous spend is at least $1."""
        return (now - before) / before * 100 if before >= 1.0 and self.first_hour() <= previous[0] else None


@pytest.fixture(scope="module")
def truth(lake: tuple[Path, Path]) -> Truth:
    return Truth(lake[0])


@pytest.fixture(scope="module")
def weekly(lake: tuple[Path, Path]) -> Report:
    return build_report(lake[0], settings(lake[1], lake[0]), "weekly", at=AT, top=3)


HALF_MICRO = 5.01e-7  # six decimals read back: within half a millionth of a dollar


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def check_against_truth(r: Report, truth: Truth, window: Span, previous: Span) -> None:
    """Every number of the report against the raw rows: totals, change, customers, teams, models, series."""
    assert (r.start, r.end, r.previous_start, r.previous_end) == (*window, *previous)
    assert close(r.total_cost, truth.total(window)), (r.total_cost, truth.total(window))
    assert close(r.previous_cost, truth.total(previous))
    assert r.requests == len(truth.within(window))
    assert r.unpriced_requests == sum(1 for x in truth.within(window) if x["cost_source"] == "unpriced") > 0
    assert r.previous_complete == (truth.first_hour() <= previous[0])
    assert r.history_start == (None if r.previous_complete else truth.first_hour())
    expected_pct = truth.change_pct(truth.total(window), truth.total(previous), previous)
    assert (r.change_pct is None) == (expected_pct is None)
    if expected_pct is not None:
        assert r.change_pct is not None and math.isclose(r.change_pct, expected_pct, rel_tol=1e-9)
    for rows, column in ((r.customers, "customer"), (r.teams, "team")):
        cur, prev = truth.by(column, window), truth.by(column, previous)
        assert {s.key for s in rows} == set(cur) | set(prev)
        for s in rows:
            assert close(s.cost, cur.get(s.key, 0.0)) and close(s.previous, prev.get(s.key, 0.0)), s
            row_pct = truth.change_pct(cur.get(s.key, 0.0), prev.get(s.key, 0.0), previous)
            assert (s.change_pct is None) == (row_pct is None), s
            assert row_pct is None or math.isclose(s.change_pct or 0.0, row_pct, rel_tol=1e-9), s
    models = truth.by_model(window)
    assert [(m.provider, m.model) for m in r.top_models] == sorted(models, key=lambda k: -models[k])[:len(r.top_models)]
    for m in r.top_models:
        assert close(m.cost, models[(m.provider, m.model)])
    assert close(sum(p.cost for p in r.series), r.total_cost)
    assert close(sum(cost for _, cost in r.by_model), r.total_cost)


# --- the report's numbers ------------------------------------------------------------------------


def test_weekly_report_agrees_with_the_raw_rows(weekly: Report, truth: Truth) -> None:
    r = weekly
    check_against_truth(r, truth, WEEK, PREV_WEEK)
    ids = truth.ids(WEEK)
    assert {"edge-week-first", "edge-week-last"} <= ids and not {"edge-prev-week-last", "edge-next-week-first"} & ids
    assert [p.label for p in r.series] == ["Mon 03-02", "Tue 03-03", "Wed 03-04", "Thu 03-05", "Fri 03-06",
                                           "Sat 03-07", "Sun 03-08"]  # fmt: skip
    assert close(r.series[-1].cost, truth.total(SUN_8))  # the 23-hour DST day
    # names from the hierarchy; labels the events lacked are "(none)"
    names = {s.key: s.name for s in r.customers}
    assert names == {"cust-acme": "Acme Corp", "cust-globex": "Globex", "(none)": "(none)"}
    assert {"team-search", "team-chat", "team-ops", "(none)"} == {s.key for s in r.teams}
    # top keys, biggest first, with their names and teams
    by_key = truth.by("virtual_key", WEEK)
    expected = sorted(by_key, key=lambda k: -by_key[k])[:3]
    assert [s.key for s in r.top_keys] == expected
    for s in r.top_keys:
        assert close(s.cost, by_key[s.key])
    alice = next(s for s in r.top_keys if s.key == "vk-alice")
    assert (alice.name, alice.team) == ("Alice", "team-search")
    unpriced: dict[tuple[str, str], int] = defaultdict(int)
    for x in truth.within(WEEK):
        if x["cost_source"] == "unpriced":
            unpriced[(x["provider"], x["model"])] += 1
    assert {(u.provider, u.model): u.requests for u in r.unpriced} == unpriced
    assert {m for _, m in unpriced} == {"no-such-model-9000"} and len(unpriced) == 2  # under two providers


def test_budgets_stand_as_at_the_end_of_the_period(weekly: Report, truth: Truth) -> None:
    budgets = {(b.type, b.id, b.reset_duration): b for b in weekly.budgets}
    assert set(budgets) == {("customer", "cust-acme", "1M"), ("team", "team-search", "1w"),
                            ("team", "team-chat", "1w"), ("virtual_key", "vk-alice", "1d")}  # fmt: skip
    search = budgets[("team", "team-search", "1w")]
    assert close(search.usage, truth.by("team", WEEK)["team-search"])
    assert close(search.utilization, search.usage / 0.34) and search.reset_at == WEEK[1]
    alice = budgets[("virtual_key", "vk-alice", "1d")]
    assert close(alice.usage, truth.by("virtual_key", SUN_8)["vk-alice"])  # the period's last day
    acme = budgets[("customer", "cust-acme", "1M")]
    march = (Z("2026-03-01T05:00:00Z"), Z("2026-04-01T04:00:00Z"))  # the period containing the week's end...
    # ...as it stood when the week closed: its events before the week's end, none of 9-11 March
    assert close(acme.usage, truth.by("customer", (march[0], WEEK[1]))["cust-acme"]) and acme.reset_at == march[1]
    assert acme.usage < truth.by("customer", (march[0], AT))["cust-acme"]  # the lake holds later March events
    assert [b.utilization >= 0.9 for b in (search, alice)] == [True, False] and 0.8 <= alice.utilization


def test_monthly_report_in_new_york(lake: tuple[Path, Path], truth: Truth) -> None:
    r = build_report(lake[0], settings(lake[1], lake[0]), "monthly", at=AT)
    check_against_truth(r, truth, FEB, JAN)
    assert r.change_pct is None  # the lake began on 26 January: no full January to compare with
    assert "no full previous month in the lake, its history starts 2026-01-25 19:00)" in to_markdown(r)
    assert "edge-feb-last" in truth.ids(FEB) and "edge-mar-first" not in truth.ids(FEB)
    assert len(r.series) == 28 and r.series[0].label == "Sun 02-01"


def test_daily_report_of_the_dst_day_has_23_hours(lake: tuple[Path, Path], truth: Truth) -> None:
    r = build_report(lake[0], settings(lake[1], lake[0]), "daily", at=Z("2026-03-09T16:00:00Z"))
    check_against_truth(r, truth, SUN_8, SAT_7)
    assert r.series_unit == "hour" and len(r.series) == 23
    assert [p.label for p in r.series[:4]] == ["00:00", "01:00", "03:00", "04:00"]  # 02:00 did not happen


def test_week_to_date_runs_to_at_itself(lake: tuple[Path, Path], truth: Truth) -> None:
    at = Z("2026-03-10T15:15:00Z")
    r = build_report(lake[0], settings(lake[1], lake[0]), "weekly", at=at, to_date=True)
    window = (Z("2026-03-09T04:00:00Z"), at)  # the events before `at`, not the rest of its hour
    assert truth.within((at, Z("2026-03-10T16:00:00Z"))), "an event after `at` in its hour, for this to mean something"
    check_against_truth(r, truth, window, (PREV_WEEK[1], PREV_WEEK[1] + (window[1] - window[0])))
    assert "edge-next-week-first" in truth.ids(window)
    # the header says when the report stands (11:15 EDT), not where the hourly rollups end (12:00)
    assert to_markdown(r).startswith("# Weekly LLM spend report: 2026-03-09 to 2026-03-10 11:15 (so far)\n")


def test_weekly_report_in_utc_uses_utc_midnights(lake: tuple[Path, Path], truth: Truth) -> None:
    r = build_report(lake[0], settings(lake[1], lake[0], timezone="UTC"), "weekly", at=AT)
    check_against_truth(r, truth, (Z("2026-03-02T00:00:00Z"), Z("2026-03-09T00:00:00Z")),
                        (Z("2026-02-23T00:00:00Z"), Z("2026-03-02T00:00:00Z")))  # fmt: skip


# --- renderings ----------------------------------------------------------------------------------


def test_csv_reads_back_to_the_reports_numbers(weekly: Report, truth: Truth) -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv(weekly))))
    assert tuple(rows[0]) == CSV_COLUMNS
    got = {(x["section"], x["key"]): x for x in rows}
    assert len(got) == len(rows), "one row per (section, key)"
    total = got[("total", "total")]
    assert abs(float(total["cost_usd"]) - weekly.total_cost) <= HALF_MICRO
    assert abs(float(total["cost_usd"]) - truth.total(WEEK)) <= HALF_MICRO
    assert abs(float(total["previous_cost_usd"]) - weekly.previous_cost) <= HALF_MICRO
    assert weekly.change_pct is not None and float(total["change_pct"]) == round(weekly.change_pct, 4)
    assert int(total["requests"]) == weekly.requests
    for section, column in (("customer", "customer"), ("team", "team")):
        expected = truth.by(column, WEEK)
        for key, cost in expected.items():
            assert abs(float(got[(section, key)]["cost_usd"]) - cost) <= HALF_MICRO
    for s in weekly.top_keys:
        assert abs(float(got[("virtual_key", s.key)]["cost_usd"]) - s.cost) <= HALF_MICRO
    series = [float(x["cost_usd"]) for x in rows if x["section"] == "time"]
    assert len(series) == 7 and sum(series) == pytest.approx(weekly.total_cost, abs=1e-5)
    for b in weekly.budgets:
        x = got[("budget", b.budget_id)]
        assert abs(float(x["cost_usd"]) - b.usage) <= HALF_MICRO and float(x["limit_usd"]) == b.limit
    assert sum(int(x["requests"]) for x in rows if x["section"] == "unpriced") == weekly.unpriced_requests


def test_markdown_has_the_totals_and_every_section(weekly: Report) -> None:
    md = to_markdown(weekly)
    assert md.startswith("# Weekly LLM spend report: 2026-03-02 to 2026-03-08\n")
    assert f"**Total: {usd(weekly.total_cost)}**" in md and usd(weekly.previous_cost) in md
    headings = ("Spend over time", "By customer", "By team", "Top virtual keys", "Top models", "Budgets", "Unpriced usage")
    for heading in headings:
        assert f"\n## {heading}\n" in md
    assert "| Acme Corp | cust-acme |" in md and "no-such-model-9000" in md
    assert re.search(r"`[█░]{10} \d+%`", md)


def test_alert_round_trips_and_fits_slack(weekly: Report) -> None:
    a = to_alert(weekly)
    assert (a.kind, a.severity, a.key) == ("report", "info", "report:weekly:2026-03-02")
    assert re.fullmatch(r"Weekly LLM spend: \$[\d,]+\.\d\d \([+-]\d+\.\d% vs previous week\)", a.title), a.title
    assert a.title.startswith(f"Weekly LLM spend: {usd(weekly.total_cost)} (")
    assert 1 <= len(a.fields) <= 10 and a.fields[0] == ("Total", usd(weekly.total_cost))
    assert a.facts["total_usd"] == round(weekly.total_cost, 6) and a.facts["start"] == WEEK[0].isoformat()
    assert any(re.search(r"[█░]{10} \d+%", line) for line in a.lines)
    assert any("no-such-model-9000" in line for line in a.lines)
    assert a.html is not None and a.html.startswith("<!DOCTYPE html>")
    assert Alert.from_json(a.to_json()) == a


# --- the command line ----------------------------------------------------------------------------


def report_cmd(lake: Path, cfg: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return spendlake("report", "--config", str(cfg), "--lake", str(lake), "--at", "2026-03-10T12:00:00-04:00", *args)


def test_cli_prints_the_same_report(lake: tuple[Path, Path], weekly: Report, tmp_path: Path) -> None:
    r = report_cmd(*lake, "--format", "csv", "--top", "3")
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode() == to_csv(weekly)
    md = report_cmd(*lake, "--top", "3")  # defaults: weekly, Markdown
    assert md.returncode == 0 and md.stdout.decode().startswith("# Weekly LLM spend report: 2026-03-02 to 2026-03-08")
    out = tmp_path / "reports" / "week.html"
    h = report_cmd(*lake, "--format", "html", "--out", str(out))
    assert h.returncode == 0, h.stderr.decode()
    assert h.stdout.decode().count("\n") == 1 and str(out) in h.stdout.decode()
    assert out.read_text().startswith("<!DOCTYPE html>") and [p.name for p in out.parent.iterdir()] == ["week.html"]


def test_cli_works_while_another_process_holds_the_state(lake: tuple[Path, Path], weekly: Report) -> None:
    """As while `spendlake serve` runs: the DuckDB state is locked, the published rollups are read."""
    build_report(lake[0], settings(lake[1], lake[0]), "weekly", at=AT)  # everything published
    with Rollup(lake[0]):
        r = report_cmd(*lake, "--format", "csv", "--top", "3")
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode() == to_csv(weekly)


def test_cli_refuses_bad_input(lake: tuple[Path, Path], tmp_path: Path) -> None:
    r = spendlake("report", "--config", str(lake[1]), "--lake", str(lake[0]), "--at", "last tuesday")
    assert r.returncode == 2 and "--at" in r.stderr.decode() and "'last tuesday'" in r.stderr.decode()
    empty = tmp_path / "not-a-lake"
    empty.mkdir()
    r = spendlake("report", "--lake", str(empty))
    assert r.returncode == 2 and f"--lake: {empty}" in r.stderr.decode(), r.stderr.decode()
    r = spendlake("report", "--lake", str(lake[0]), "--period", "hourly")
    assert r.returncode == 2 and "--period" in r.stderr.decode()


# --- the HTML page in a real browser ------------------------------------------------------------

CONSOLE = re.compile(r"CONSOLE[(:]")  # chromium's console lines on stderr: INFO:CONSOLE:12] or INFO:CONSOLE(12)


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed, and CI must run the HTML report's browser test")
        pytest.skip("chromium not installed (Debian: apt-get install chromium)")
    return path


def render(page: Path, profile: Path) -> tuple[str, list[str]]:
    """(the DOM after scripts ran, the console lines) of one page in headless Chromium."""
    r = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=2000", f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout, [line for line in r.stderr.splitlines() if CONSOLE.search(line)]


def charts_rendered(dom: str) -> int:
    m = re.search(r'<body[^>]*\bdata-charts="(\d+)"', dom)
    assert m, "the page's script did not run: " + dom[:500]
    return int(m.group(1))


def test_html_renders_its_charts_in_chromium_without_console_errors(weekly: Report, tmp_path: Path) -> None:
    html = to_html(weekly)
    assert not re.search(r"""(?:src|href)\s*=|<link|@import|url\(""", html), "no external resources"
    expected = html.count('<svg class="chart"')
    assert expected == 4  # over time, by model, by team, budgets
    page = tmp_path / "report.html"
    page.write_text(html)
    dom, console = render(page, tmp_path / "profile")
    assert console == []
    assert charts_rendered(dom) == expected
    for colour in ("#2e7d32", "#f59e0b", "#c62828"):  # budgets below 80%, below 90%, from 90%
        assert f'fill="{colour}"' in html


def test_the_browser_checks_can_fail(weekly: Report, tmp_path: Path) -> None:
    """Controls: a console error is seen, a request the page may not make is seen, a chart without
    a size is not counted."""
    boom = tmp_path / "boom.html"
    boom.write_text('<!DOCTYPE html><html><body><script>console.error("boom")</script></body></html>')
    _, console = render(boom, tmp_path / "p1")
    assert any('"boom"' in line for line in console), console
    html = to_html(weekly)
    leaky = tmp_path / "leaky.html"
    leaky.write_text(html.replace("<main>", '<main><img src="https://example.invalid/pixel.png" alt="">', 1))
    _, console = render(leaky, tmp_path / "p2")
    assert any("example.invalid" in line for line in console), console
    broken = tmp_path / "broken.html"
    broken.write_text(re.sub(r'(<svg class="chart"[^>]*?) width="\d+"', r'\1 width="0"', html, count=1))
    dom, console = render(broken, tmp_path / "p3")
    assert console == [] and charts_rendered(dom) == html.count('<svg class="chart"') - 1
