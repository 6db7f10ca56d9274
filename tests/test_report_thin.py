"""The report on little history (issue 15): what a new user sees after `spendlake demo`.

A real lake, ingested by the real `spendlake ingest --source`, that begins on Wednesday 4 November
2026 10:00 UTC and runs to Friday 4 December 13:22 (the report's ``at``), like the demo's 30 days.
Two keys spend every hour ($0.50 and $0.25); a few events are placed to show one rule each. 60
virtual keys have budgets, most of them barely touched. Every expected amount is worked out here
from the events as written, not read back from the report.

The rules under test:
- a change is a percentage only when the previous window is wholly in the lake and its spend is
  at least $1.00; otherwise "new" (nothing before) or "from $X" (the previous amount), in every
  rendering (Markdown, CSV with an empty change_pct, HTML, the Slack message);
- a to-date report's header states the as-of time, not the end of the hour;
- budget bars for every customer and team and for virtual keys at 50% or more; one line for the rest;
- an unpriced count says its scope; CSV costs are printed at 12 significant digits, no float noise.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from alerting.report import Report, build_report
from alerting.report_render import to_alert, to_csv, to_html, to_markdown
from conftest import spendlake
from pricing.money import cost_text
from spendlake import settings as settings_mod

HISTORY_START = datetime(2026, 11, 4, 10, 0, tzinfo=UTC)  # a Wednesday
AT = datetime(2026, 12, 4, 13, 22, tzinfo=UTC)  # a Friday, 13:22
HOT = {"vk-00": 0.50, "vk-01": 0.25}  # every hour, at :05 and :35
N_KEYS = 60
TOKENS_PER_USD = 100_000  # gpt-4o output tokens ($10 per M)


def _key_budget(i: int) -> float:
    """vk-00 and vk-01 run hot, vk-04 ($4 of $10) stays just under the 50% line, vk-05 ($6) is over
    it; the other 56 keys have $1,000 a month and spend next to nothing."""
    return {0: 60.0, 1: 40.0, 4: 10.0, 5: 10.0}.get(i, 1000.0)


def _team_of(i: int) -> str:
    return "team-lab" if i == 2 else "team-core"


CONFIG = """
[lake]
timezone = "UTC"

[[customers]]
id = "cust-a"
name = "Acme"
budgets = [{ max_limit = 10000.0, reset_duration = "1M" }]

[[customers]]
id = "cust-b"
name = "Beta"

[[teams]]
id = "team-core"
name = "Core"
customer_id = "cust-a"
budgets = [{ max_limit = 5000.0, reset_duration = "1M" }]

[[teams]]
id = "team-lab"
name = "Lab"
customer_id = "cust-a"
budgets = [{ max_limit = 1000.0, reset_duration = "1M" }]

[[teams]]
id = "team-web"
name = "Web"
customer_id = "cust-b"
budgets = [{ max_limit = 100.0, reset_duration = "1w" }]

[[virtual_keys]]
id = "vk-web"
name = "Web key"
team_id = "team-web"
""" + "".join(
    f'\n[[virtual_keys]]\nid = "vk-{i:02d}"\nteam_id = "{_team_of(i)}"\n'
    f'budgets = [{{ max_limit = {_key_budget(i)}, reset_duration = "1M" }}]\n'
    for i in range(N_KEYS)
)


def Z(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def spend(eid: str, at: datetime, vk: str, usd: float, model: str = "gpt-4o") -> dict[str, Any]:
    return {"event_id": eid, "timestamp": int(at.timestamp() * 1000), "provider": "openai", "model": model,
            "input_tokens": 0, "output_tokens": int(round(usd * TOKENS_PER_USD)), "virtual_key": vk}  # fmt: skip


# One event each, to show one rule each.
EXTRA = [
    spend("lab-prev-week", Z("2026-11-18T12:00:00Z"), "vk-02", 0.25),  # team-lab: $0.25 the week before...
    *(spend(f"lab-week-{h}", Z(f"2026-11-24T{h:02d}:00:00Z"), "vk-02", 1.0) for h in (9, 10, 11)),  # ...then $3
    spend("web-week", Z("2026-11-25T12:00:00Z"), "vk-web", 2.0),  # team-web, customer Beta: new that week
    spend("noise-a", Z("2026-11-26T15:10:00Z"), "vk-03", 0.1),  # 0.1 + 0.2 in one New York day
    spend("noise-b", Z("2026-11-26T16:10:00Z"), "vk-03", 0.2),
    spend("under-line", Z("2026-12-03T09:00:00Z"), "vk-04", 4.0),  # 40%: no bar
    spend("over-line", Z("2026-12-03T09:30:00Z"), "vk-05", 6.0),  # 60%: a bar
    *(spend(f"unpriced-{i}", Z(f"2026-12-02T10:1{i}:00Z"), "vk-00", 1.0, "no-such-model-9000") for i in range(3)),
]


def hot_events() -> list[dict[str, Any]]:
    out, t = [], HISTORY_START
    while t < AT:
        for minute, (vk, usd) in zip((5, 35), HOT.items()):
            if (when := t + timedelta(minutes=minute)) < AT:
                out.append(spend(f"{vk}-{when:%Y%m%d%H%M}", when, vk, usd))
        t += timedelta(hours=1)
    return out


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("thin")
    cfg = root / "spendlake.toml"
    cfg.write_text(CONFIG)
    src = root / "events.jsonl"
    src.write_bytes(b"\n".join(orjson.dumps(e) for e in hot_events() + EXTRA) + b"\n")
    spendlake("ingest", "--source", str(src), "--lake", str(root / "lake"), "--config", str(cfg), "--catalog",
              "builtin", "--quiet", check=True)  # fmt: skip
    return root / "lake", cfg


def report(lake: tuple[Path, Path], period: str, at: datetime = AT, to_date: bool = False,
           timezone: str | None = None) -> Report:  # fmt: skip
    s = settings_mod.load(str(lake[1])).with_overrides({("lake", "path"): str(lake[0]), ("lake", "timezone"): timezone})
    return build_report(lake[0], s, period, at=at, to_date=to_date)


def hot_spend(start: datetime, end: datetime) -> float:
    """What the two hot keys spent in [start, end), from the events as written."""
    return sum(e["output_tokens"] / TOKENS_PER_USD for e in hot_events()
               if start.timestamp() * 1000 <= e["timestamp"] < end.timestamp() * 1000)  # fmt: skip


PCT = re.compile(r"[+-]\d+\.\d%")


def section(md: str, heading: str) -> str:
    return md.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def change_cells(md: str, heading: str) -> dict[str, str]:
    """ID → the Change cell of a Markdown spend table."""
    rows = [line.split(" | ") for line in section(md, heading).splitlines() if line.startswith("| ")][1:]
    return {cells[1]: cells[4] for cells in rows}


def csv_rows(r: Report) -> dict[tuple[str, str], dict[str, str]]:
    return {(x["section"], x["key"]): x for x in csv.DictReader(io.StringIO(to_csv(r)))}


# --- thin history: no percentage ------------------------------------------------------------------


@pytest.mark.parametrize(("period", "at", "to_date", "label"), [
    ("monthly", AT, True, "month"),  # 1-4 December against 1-4 November: the lake began 4 November 10:00
    ("weekly", Z("2026-11-16T12:00:00Z"), False, "week"),  # 9-15 November against 2-8 November
])  # fmt: skip
def test_previous_window_only_partly_in_the_lake_shows_amounts_not_percentages(
        lake: tuple[Path, Path], period: str, at: datetime, to_date: bool, label: str) -> None:  # fmt: skip
    r = report(lake, period, at, to_date)
    previous = hot_spend(r.previous_start, r.previous_end)
    assert previous >= 1.0, "over the $1 floor: it is the history rule that holds the % back"
    assert r.history_start == HISTORY_START and not r.previous_complete
    assert r.previous_cost == pytest.approx(previous, abs=1e-9) and r.change_pct is None
    assert all(s.change_pct is None for s in (*r.customers, *r.teams, *r.top_keys))
    expected = f"from ${previous:,.2f}: no full previous {label} in the lake, its history starts 2026-11-04 10:00"
    md = to_markdown(r)
    assert f"**Total: ${r.total_cost:,.2f}** ({expected})" in md
    for heading in ("By customer", "By team", "Top virtual keys"):
        cells = change_cells(md, heading)
        assert cells and not any(PCT.search(c) for c in cells.values()), (heading, cells)
    assert change_cells(md, "By team")["team-core"] == f"from ${previous:,.2f}"
    html = to_html(r)
    assert f"<b>from ${previous:,.2f}</b>" in html and "no full previous" in html
    assert not re.findall(r'<td class="n[^"]*">[+-]\d+\.\d%</td>', html)
    alert = to_alert(r)
    assert alert.title.endswith(f"(from ${previous:,.2f}: no full previous {label} in the lake)"), alert.title
    assert not PCT.search(alert.title) and not any(PCT.search(line) for line in alert.lines if "Top" in line)
    assert alert.facts["change_pct"] is None and alert.facts["previous_complete"] is False
    rows = csv_rows(r)
    for key in (("total", "total"), ("team", "team-core"), ("customer", "cust-a"), ("virtual_key", "vk-00")):
        assert rows[key]["change_pct"] == "" and float(rows[key]["previous_cost_usd"]) > 0, rows[key]


def test_previous_window_before_the_lake_shows_new(lake: tuple[Path, Path]) -> None:
    """November against October: the lake holds nothing of October."""
    r = report(lake, "monthly")
    assert (r.previous_cost, r.change_pct, r.history_start) == (0.0, None, HISTORY_START)
    md = to_markdown(r)
    assert "(new: no previous month in the lake, its history starts 2026-11-04 10:00)" in md
    for heading in ("By customer", "By team", "Top virtual keys"):
        assert set(change_cells(md, heading).values()) == {"new"}, heading
    assert to_alert(r).title == f"Monthly LLM spend: ${r.total_cost:,.2f} (new: no previous month in the lake)"
    assert '<td class="n up">new</td>' in to_html(r)
    for x in csv_rows(r).values():
        if x["section"] in ("total", "customer", "team", "virtual_key"):
            assert (x["change_pct"], x["previous_cost_usd"]) == ("", "0.0"), x


# --- full history: percentages, and the $1 floor per row -----------------------------------------


def test_full_history_shows_percentages_above_the_floor(lake: tuple[Path, Path]) -> None:
    """23-29 November against 16-22 November: both wholly in the lake."""
    r = report(lake, "weekly")
    week, before = (Z("2026-11-23T00:00:00Z"), Z("2026-11-30T00:00:00Z")), (Z("2026-11-16T00:00:00Z"), Z("2026-11-23T00:00:00Z"))
    assert (r.start, r.end, r.previous_start, r.previous_end) == (*week, *before) and r.previous_complete
    def pct(now: float, before: float) -> float:
        return (now - before) / before * 100

    core = hot_spend(*week) + 0.3, hot_spend(*before)  # vk-03's 0.1 + 0.2 are team-core's too
    now, prev = core[0] + 3 + 2, core[1] + 0.25  # + team-lab and team-web
    assert r.change_pct == pytest.approx(pct(now, prev), rel=1e-9)
    md = to_markdown(r)
    assert f"**Total: ${now:,.2f}** ({pct(now, prev):+.1f}% vs previous week: ${prev:,.2f})" in md
    assert change_cells(md, "By team") == {"team-core": f"{pct(*core):+.1f}%",
                                           "team-lab": "from $0.25",  # $0.25 before: under the $1 floor
                                           "team-web": "new"}  # fmt: skip
    assert change_cells(md, "By customer") == {"cust-a": f"{pct(core[0] + 3, core[1] + 0.25):+.1f}%", "cust-b": "new"}
    keys = change_cells(md, "Top virtual keys")
    assert PCT.fullmatch(keys["vk-00"]) and keys["vk-02"] == "from $0.25" and keys["vk-web"] == "new"
    assert re.fullmatch(r"Weekly LLM spend: \$[\d,.]+ \([+-]\d+\.\d% vs previous week\)", to_alert(r).title)
    rows = csv_rows(r)
    assert float(rows[("total", "total")]["change_pct"]) == round(pct(now, prev), 4)
    assert rows[("team", "team-lab")]["change_pct"] == "" and rows[("team", "team-lab")]["previous_cost_usd"] == "0.25"
    html = to_html(r)
    assert f"<b>{pct(now, prev):+.1f}%</b><span>vs previous week: ${prev:,.2f}</span>" in html
    assert ">from $0.25</td>" in html


# --- the as-of time -----------------------------------------------------------------------------


def test_a_to_date_report_states_its_as_of_time(lake: tuple[Path, Path]) -> None:
    r = report(lake, "monthly", to_date=True)
    assert r.as_of == AT and r.end == AT  # to date: the events before the as-of time, not the rest of its hour
    header = "2026-12-01 to 2026-12-04 13:22 (so far)"
    assert to_markdown(r).startswith(f"# Monthly LLM spend report: {header}\n")
    html = to_html(r)
    assert f"<h1>Monthly LLM spend: {header}</h1>" in html
    alert = to_alert(r)
    assert ("Period", header) in alert.fields and alert.lines[0].startswith(header)
    for text in (to_markdown(r), html, alert.text):
        assert "14:00 (so far)" not in text
    ny = report(lake, "monthly", to_date=True, timezone="America/New_York")
    assert to_markdown(ny).startswith("# Monthly LLM spend report: 2026-12-01 to 2026-12-04 08:22 (so far)\n")


# --- budget bars --------------------------------------------------------------------------------


SHOWN = {"cust-a", "team-core", "team-lab", "team-web", "vk-00", "vk-01", "vk-05"}


def test_budget_bars_show_the_owners_that_matter_and_one_line_for_the_rest(lake: tuple[Path, Path]) -> None:
    r = report(lake, "monthly", to_date=True)
    assert len(r.budgets) == 4 + N_KEYS
    util = {b.id: b.utilization for b in r.budgets}
    assert util["vk-04"] == pytest.approx(0.4) and util["vk-05"] == pytest.approx(0.6) and util["team-web"] == 0.0
    assert {b.id for b in r.budgets if b.type != "virtual_key" or b.utilization >= 0.5} == SHOWN
    rest = "… and 57 more virtual key budgets under 50% (highest 40%)"
    budgets = section(to_markdown(r), "Budgets")
    bars = [line for line in budgets.splitlines() if "`" in line]
    assert sorted(re.match(r"\| (?:[^(|]*\()?([\w-]+)\)?, ", line)[1] for line in bars) == sorted(SHOWN)  # type: ignore[index]
    assert budgets.count(rest) == 1 and "vk-04" not in budgets and "vk-59" not in budgets
    html = to_html(r)
    chart = html.split("<h2>Budgets</h2>", 1)[1].split("</section>", 1)[0]
    assert chart.count('text-anchor="end"') == len(SHOWN) and f"<p>{rest}</p>" in chart  # one label per bar
    assert "vk-04" not in chart and "vk-59" not in chart
    lines = to_alert(r).lines
    budget_lines = lines[lines.index("Budgets:") + 1:]
    assert budget_lines[5] == "  … and 2 more customer, team or key budgets below these"
    assert budget_lines[6] == f"  {rest}"
    assert len(csv_rows(r)) and sum(1 for k in csv_rows(r) if k[0] == "budget") == 4 + N_KEYS  # CSV: all of them


# --- unpriced scope, CSV precision ----------------------------------------------------------------


def test_unpriced_counts_say_their_scope(lake: tuple[Path, Path]) -> None:
    r = report(lake, "monthly", to_date=True)
    assert r.unpriced_requests == 3
    said = "3 unpriced requests in this period (no price known: cost NULL, not $0)"
    assert said in to_markdown(r)
    assert "<b>3</b><span>unpriced requests in this period (no price known: cost NULL, not $0)</span>" in to_html(r)
    alert = to_alert(r)
    assert any(said in line for line in alert.lines)
    assert ("Unpriced requests in this period", "3 (no price known: cost NULL, not $0)") in alert.fields
    assert "| openai | no-such-model-9000 | unpriced |" in to_markdown(r)  # not "$0.00"


def test_csv_costs_have_no_float_noise(lake: tuple[Path, Path]) -> None:
    """In New York the days are cut from hour buckets and added up in Python, where 0.1 + 0.2 is
    0.30000000000000004: the CSV prints every cost at 12 significant digits."""
    r = report(lake, "weekly", timezone="America/New_York")
    noisy = [p.cost for p in r.series if repr(p.cost) != cost_text(p.cost)]
    assert noisy, "the lake must give a sum with float noise for this test to mean something"
    rows = list(csv.DictReader(io.StringIO(to_csv(r))))
    cells = [x[c] for x in rows for c in ("cost_usd", "previous_cost_usd", "limit_usd") if x[c]]
    assert len(cells) > 20
    for cell in cells:
        assert cell == cost_text(float(cell)), cell  # the canonical text: no noise, no padding to six places
    series = [x for x in rows if x["section"] == "time"]
    assert [x["cost_usd"] for x in series] == [cost_text(p.cost) for p in r.series]
    thursday = next(x for x in series if x["name"] == "Thu 11-26")
    assert thursday["cost_usd"] == cost_text(hot_spend(Z("2026-11-26T05:00:00Z"), Z("2026-11-27T05:00:00Z")) + 0.3)
