"""aggregator/budgets.py and `spendlake budgets`: budget usage over a real lake.

Lakes are built by the real `spendlake ingest --source ... --catalog builtin`; budgets are read
through the real command (`spendlake budgets --config F --lake D --at T --format json`) or through
`Rollup(lake, budget_hook=BudgetUsage(h))` and `status(con, h, at)`. Every expected usage is an
independent sum over the raw Parquet rows in plain Python (one row per event_id: the earliest
ingested copy), with period boundaries typed in by hand for the test's dates and zone, and the
VK -> team -> customer links typed in by hand too.
"""

from __future__ import annotations

import json
import math
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from aggregator.budgets import BudgetUsage, status
from aggregator.hierarchy import parse_hierarchy
from aggregator.rollup import Rollup
from conftest import dedup, raw_rows, spendlake

CONTRACT_FIELDS = ("type", "id", "max_limit", "reset_duration", "current_usage", "period_start", "reset_at")
USD = 100_000  # gpt-4o output tokens per dollar ($10 per M)


# --- helpers -----------------------------------------------------------------------------------


def Z(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def rfc(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ev(eid: str, at: datetime, dollars: float, **over: Any) -> dict[str, Any]:
    """A gpt-4o event costing `dollars` (output tokens only)."""
    e: dict[str, Any] = {"event_id": eid, "timestamp": ms(at), "provider": "openai", "model": "gpt-4o",
                         "input_tokens": 0, "output_tokens": int(round(dollars * USD))}  # fmt: skip
    e.update(over)
    return e


def ingest(lake: Path, events: list[dict[str, Any]], name: str) -> None:
    src = lake.parent / name
    src.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    spendlake("ingest", "--source", str(src), "--lake", str(lake), "--catalog", "builtin", "--quiet", check=True)
    assert not list((lake / "dead_letter").glob("*/*.parquet")), "the test's events must all be valid"


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    tomllib.loads(text)  # the test's own TOML is valid
    return path


def budgets_cmd(config: Path, lake: Path, at: datetime | str | None, fmt: str = "json") -> Any:
    args = ["budgets", "--config", str(config), "--lake", str(lake), "--format", fmt]
    if at is not None:
        args += ["--at", at if isinstance(at, str) else rfc(at)]
    return spendlake(*args)


def budgets_json(config: Path, lake: Path, at: datetime | str | None) -> dict[tuple[str, str, str], dict[str, Any]]:
    """{(type, id, reset_duration): the JSON object} (each owner here has one budget per duration)."""
    r = budgets_cmd(config, lake, at)
    assert r.returncode == 0, r.stderr.decode()
    objs = json.loads(r.stdout)
    out = {(o["type"], o["id"], o["reset_duration"]): o for o in objs}
    assert len(out) == len(objs)
    return out




class Truth:
    """Usage from the raw lake: owners resolved with the test's own VK -> team -> customer map."""

    def __init__(self, lake: Path, vk_team: dict[str, str] | None = None, team_customer: dict[str, str] | None = None):
        self.rows = dedup(raw_rows(lake))
        self.vk_team = vk_team or {}
        self.team_customer = team_customer or {}

    def owner(self, r: dict[str, Any], owner_type: str) -> str | None:
        vk = r["virtual_key"]
        team = r["team"] or self.vk_team.get(vk)
        customer = r["customer"] or self.team_customer.get(team)  # type: ignore[arg-type]
        return {"virtual_key": vk, "team": team, "customer": customer}[owner_type]

    def priced(self, owner_type: str, owner_id: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["cost_usd"] is not None and self.owner(r, owner_type) == owner_id
                and start <= r["timestamp"] < end]  # fmt: skip

    def usage(self, owner_type: str, owner_id: str, start: datetime, end: datetime) -> float:
        return sum(r["cost_usd"] for r in self.priced(owner_type, owner_id, start, end))


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


# --- 1. a hierarchy in America/New_York --------------------------------------------------------

HIERARCHY = """
[lake]
timezone = "America/New_York"

[[customers]]
id = "cust-acme"
name = "Acme Corp"
budgets = [{ max_limit = 1000.0, reset_duration = "1M" }, { max_limit = 50.0, reset_duration = "1d" }]

[[teams]]
id = "team-eng"
name = "Engineering"
customer_id = "cust-acme"
budgets = [{ max_limit = 500.0, reset_duration = "1M" }, { max_limit = 30.0, reset_duration = "1d" },
           { max_limit = 8.0, reset_duration = "1h" }]

[[teams]]
id = "team-ops"
customer_id = "cust-acme"
budgets = [{ max_limit = 300.0, reset_duration = "1M" }]

[[virtual_keys]]
id = "vk-alice"
team_id = "team-eng"
budgets = [{ max_limit = 100.0, reset_duration = "1M" }, { max_limit = 20.0, reset_duration = "1d" },
           { max_limit = 4.0, reset_duration = "1h" }]

[[virtual_keys]]
id = "vk-bob"
team_id = "team-ops"
budgets = [{ max_limit = 10.0, reset_duration = "1d" }]

[[virtual_keys]]
id = "vk-carol"
team_id = "team-eng"
"""
VK_TEAM = {"vk-alice": "team-eng", "vk-bob": "team-ops", "vk-carol": "team-eng"}
TEAM_CUSTOMER = {"team-eng": "cust-acme", "team-ops": "cust-acme"}
BUDGETS = [  # (type, id, reset_duration, max_limit)
    ("customer", "cust-acme", "1M", 1000.0), ("customer", "cust-acme", "1d", 50.0),
    ("team", "team-eng", "1M", 500.0), ("team", "team-eng", "1d", 30.0), ("team", "team-eng", "1h", 8.0),
    ("team", "team-ops", "1M", 300.0),
    ("virtual_key", "vk-alice", "1M", 100.0), ("virtual_key", "vk-alice", "1d", 20.0),
    ("virtual_key", "vk-alice", "1h", 4.0), ("virtual_key", "vk-bob", "1d", 10.0),
]  # fmt: skip

# New York is on EDT (UTC-4) all June and July 2026: local midnight is 04:00Z.
AT_JUNE = Z("2026-06-15T18:30:00Z")  # 14:30 EDT
AT_JULY = Z("2026-07-02T12:00:00Z")  # 08:00 EDT
PERIODS = {
    AT_JUNE: {"1M": ("2026-06-01T04:00:00Z", "2026-07-01T04:00:00Z"),
              "1d": ("2026-06-15T04:00:00Z", "2026-06-16T04:00:00Z"),
              "1h": ("2026-06-15T18:00:00Z", "2026-06-15T19:00:00Z")},
    AT_JULY: {"1M": ("2026-07-01T04:00:00Z", "2026-08-01T04:00:00Z"),
              "1d": ("2026-07-02T04:00:00Z", "2026-07-03T04:00:00Z"),
              "1h": ("2026-07-02T12:00:00Z", "2026-07-02T13:00:00Z")},
}  # fmt: skip
# Instants around those boundaries; nothing between AT_JUNE and the end of its periods.
TIMES = ["2026-05-31T12:00:00Z", "2026-06-01T03:59:59Z", "2026-06-01T04:00:00Z", "2026-06-10T15:00:00Z",
         "2026-06-15T03:59:59Z", "2026-06-15T04:00:00Z", "2026-06-15T12:00:00Z", "2026-06-15T17:59:59.999Z",
         "2026-06-15T18:00:00Z", "2026-06-15T18:29:59Z", "2026-07-01T04:00:00Z", "2026-07-02T11:59:59Z",
         "2026-07-02T12:30:00Z"]  # fmt: skip
WHO = [
    {"virtual_key": "vk-alice"},  # no team: filled from the hierarchy (team-eng, then cust-acme)
    {"virtual_key": "vk-bob", "team": "team-ops"},  # no customer: filled from the team
    {"virtual_key": "vk-carol"},  # a key without budgets: counts for team-eng and cust-acme
    {"team": "team-ops"},  # a team, no key
    {"virtual_key": "vk-unknown"},  # not in the hierarchy: counts nowhere
    {"customer": "cust-acme"},  # the customer only
    {"virtual_key": "vk-alice", "model": "no-such-model-9000"},  # unpriced: adds nothing
]


def hierarchy_events() -> list[dict[str, Any]]:
    return [ev(f"h-{j:02d}-{k}", Z(t), 1 + (3 * j + k) % 4, **who)
            for j, t in enumerate(TIMES) for k, who in enumerate(WHO)]  # fmt: skip


@pytest.fixture(scope="module")
def hier(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("budgets")
    lake = root / "lake"
    events = hierarchy_events()
    ingest(lake, events, "a.jsonl")
    # retries of every 5th event, with other token counts: the first copy is the event
    ingest(lake, [dict(e, output_tokens=e["output_tokens"] * 7) for e in events[::5]], "b.jsonl")
    config = write_config(root / "spendlake.toml", HIERARCHY)
    june = budgets_json(config, lake, AT_JUNE)
    july = budgets_json(config, lake, AT_JULY)
    return {"lake": lake, "config": config, "june": june, "july": july,
            "truth": Truth(lake, VK_TEAM, TEAM_CUSTOMER)}  # fmt: skip


def test_usage_per_budget_includes_descendants(hier: dict[str, Any]) -> None:
    truth: Truth = hier["truth"]
    assert len(truth.rows) == len(TIMES) * len(WHO)
    for at, key in ((AT_JUNE, "june"), (AT_JULY, "july")):
        got = hier[key]
        assert set(got) == {(t, i, d) for t, i, d, _ in BUDGETS}
        for t, i, d, limit in BUDGETS:
            o = got[(t, i, d)]
            start, end = PERIODS[at][d]
            assert (o["period_start"], o["reset_at"]) == (start, end), (t, i, d)
            want = truth.usage(t, i, Z(start), min(Z(end), at))  # as of `at`: the events before it
            assert close(o["current_usage"], want), (at, t, i, d, o["current_usage"], want)
            assert o["max_limit"] == limit
    # the numbers, by hand: per event $1..$4 (1 + (3j + k) % 4); in June's month, day and hour
    june = hier["june"]
    assert [june[("virtual_key", "vk-alice", d)]["current_usage"] for d in ("1M", "1d", "1h")] == pytest.approx(
        [20.0, 14.0, 5.0], abs=1e-9)  # fmt: skip
    assert june[("team", "team-eng", "1h")]["current_usage"] == pytest.approx(10.0, abs=1e-9)  # alice + carol
    assert june[("customer", "cust-acme", "1M")]["current_usage"] == pytest.approx(100.0, abs=1e-9)
    assert june[("virtual_key", "vk-bob", "1d")]["current_usage"] == pytest.approx(11.0, abs=1e-9)


WORDS = {"1M": "month", "1d": "day", "1h": "hour"}


def test_table_format(hier: dict[str, Any]) -> None:
    r = budgets_cmd(hier["config"], hier["lake"], AT_JUNE, fmt="table")
    assert r.returncode == 0, r.stderr.decode()
    text = r.stdout.decode()
    assert text.startswith("budgets at 2026-06-15T18:30:00Z\n")
    lines = text.splitlines()[1:]
    assert len(lines) == len(BUDGETS)
    for (t, i, d, _), line in zip(BUDGETS, lines):
        # the period in words ("per month", "per 6 hours"), never "per 1M", which reads as a million
        assert f"{t} {i}" in line and f"per {WORDS[d]}," in line and f"per {d}," not in line, line
    # over the limit: cust-acme 1d $61 / $50, team-eng 1h $10 / $8, vk-alice 1h $5 / $4, vk-bob 1d $11 / $10
    exceeded = [line.split()[1] for line in lines if line.endswith("EXCEEDED")]
    assert exceeded == ["cust-acme", "team-eng", "vk-alice", "vk-bob"]
    assert [line.split()[1] for line in lines if line.endswith("!")] == ["team-eng"]  # 1d: $26 / $30


# --- 5. the fields of each status ----------------------------------------------------------------


def test_status_fields_and_their_consistency(hier: dict[str, Any]) -> None:
    for at, key in ((AT_JUNE, "june"), (AT_JULY, "july")):
        for o in hier[key].values():
            for f in CONTRACT_FIELDS:
                assert f in o, f
            assert o["type"] in ("customer", "team", "virtual_key")
            for f in ("period_start", "reset_at"):
                assert o[f].endswith("Z") and Z(o[f]).tzinfo is not None
            start, end = Z(o["period_start"]), Z(o["reset_at"])
            assert start <= at < end
            used, limit = o["current_usage"], o["max_limit"]
            assert close(o["remaining"], limit - used)
            assert close(o["utilization"], used / limit)
            # the spend of the hour before `at` (no minute rollups reach back to 2026-06: cut from the
            # raw files); the period's average while the period is younger than that hour, but at
            # least a minute old (a period just begun has no average: the last hour's rate then)
            hours = (at - start).total_seconds() / 3600
            rate = o["burn_rate_usd_per_hour"]
            last_hour = hier["truth"].usage(o["type"], o["id"], at - timedelta(hours=1), at)
            want_rate = used / hours if 1 / 60 <= hours < 1 else last_hour
            assert close(rate, want_rate), (o, want_rate)
            exhaustion = o["projected_exhaustion_at"]
            if limit - used <= 0:
                assert Z(exhaustion) == at
            elif rate > 0:
                want = at + timedelta(hours=(limit - used) / rate)
                assert abs((Z(exhaustion) - want).total_seconds()) <= 1, o
            else:
                assert exhaustion is None
    june = hier["june"]
    alice_hour = june[("virtual_key", "vk-alice", "1h")]  # $5 of $4
    assert alice_hour["remaining"] == pytest.approx(-1.0) and alice_hour["utilization"] == pytest.approx(1.25)
    assert alice_hour["projected_exhaustion_at"] == "2026-06-15T18:30:00Z"
    cust_day = june[("customer", "cust-acme", "1d")]  # $61 of $50
    assert cust_day["remaining"] == pytest.approx(-11.0) and cust_day["utilization"] == pytest.approx(1.22)
    assert cust_day["projected_exhaustion_at"] == "2026-06-15T18:30:00Z"
    # the team's month: $40 so far, $16 of it in the last hour (17:59:59.999 $2 + $4, 18:00 $1 + $3,
    # 18:29:59 $4 + $2 from alice and carol); $460 left at $16 an hour is 28.75 hours
    eng = june[("team", "team-eng", "1M")]
    assert eng["burn_rate_usd_per_hour"] == pytest.approx(16.0)
    assert Z(eng["projected_exhaustion_at"]) == pytest.approx(AT_JUNE + timedelta(hours=460 / 16),
                                                              abs=timedelta(seconds=1))  # fmt: skip
    # the requests a budget's usage holds (priced requests only)
    assert june[("virtual_key", "vk-alice", "1M")]["requests"] == 8  # 8 June events; its 8 unpriced ones not counted


def recent_lake(tmp_path: Path) -> tuple[Path, Path, datetime]:
    """vk-1 spent $2 two days ago and $3 half an hour ago; vk-2 $4 two days ago only. A rolling
    30-day budget from five days ago each. `at` is now (within the minute rollups)."""
    at = datetime.now(UTC).replace(microsecond=0)
    lake = tmp_path / "lake"
    ingest(lake, [ev("r-1", at - timedelta(days=2), 2.0, virtual_key="vk-1"),
                  ev("r-2", at - timedelta(minutes=30), 3.0, virtual_key="vk-1"),
                  ev("r-3", at - timedelta(days=2), 4.0, virtual_key="vk-2")], "recent.jsonl")  # fmt: skip
    anchor = rfc(at - timedelta(days=5))
    config = write_config(tmp_path / "spendlake.toml", f"""
[[virtual_keys]]
id = "vk-1"
budgets = [{{ max_limit = 20.0, reset_duration = "30d", calendar_aligned = false, start = "{anchor}" }}]

[[virtual_keys]]
id = "vk-2"
budgets = [{{ max_limit = 20.0, reset_duration = "30d", calendar_aligned = false, start = "{anchor}" }}]
""")
    return lake, config, at


@pytest.fixture(scope="module")
def recent(tmp_path_factory: pytest.TempPathFactory) -> tuple[datetime, dict[tuple[str, str, str], dict[str, Any]]]:
    lake, config, at = recent_lake(tmp_path_factory.mktemp("recent"))
    return at, budgets_json(config, lake, at)


def test_burn_rate_over_the_last_hour(recent: tuple[datetime, dict[tuple[str, str, str], dict[str, Any]]]) -> None:
    at, got = recent
    o = got[("virtual_key", "vk-1", "30d")]
    assert o["period_start"] == rfc(at - timedelta(days=5)) and o["reset_at"] == rfc(at + timedelta(days=25))
    assert close(o["current_usage"], 5.0)
    assert close(o["burn_rate_usd_per_hour"], 3.0)  # $3 in the last hour
    want = at + timedelta(hours=(20.0 - 5.0) / 3.0)  # 5 hours
    assert abs((Z(o["projected_exhaustion_at"]) - want).total_seconds()) <= 1


def test_burn_rate_is_zero_without_spend_in_the_last_hour(
    recent: tuple[datetime, dict[tuple[str, str, str], dict[str, Any]]],
) -> None:
    at, got = recent
    o = got[("virtual_key", "vk-2", "30d")]
    assert close(o["current_usage"], 4.0)
    assert o["burn_rate_usd_per_hour"] == 0.0  # nothing spent in the last hour
    assert o["projected_exhaustion_at"] is None  # never, at the current rate


# --- 2. a late event -----------------------------------------------------------------------------

ONE_KEY = """
[lake]
timezone = "America/New_York"

[[teams]]
id = "team-l"

[[virtual_keys]]
id = "vk-l"
team_id = "team-l"
budgets = [{ max_limit = 100.0, reset_duration = "1M" }]
"""
JUNE = (Z("2026-06-01T04:00:00Z"), Z("2026-07-01T04:00:00Z"))
JULY = (Z("2026-07-01T04:00:00Z"), Z("2026-08-01T04:00:00Z"))


def test_late_event_counts_in_its_own_period(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    config = write_config(tmp_path / "spendlake.toml", ONE_KEY)
    ingest(lake, [ev("l-1", Z("2026-06-10T15:00:00Z"), 1.0, virtual_key="vk-l"),
                  ev("l-2", Z("2026-06-20T15:00:00Z"), 2.0, virtual_key="vk-l"),
                  ev("l-3", Z("2026-07-01T05:00:00Z"), 4.0, virtual_key="vk-l"),
                  ev("l-4", Z("2026-07-05T15:00:00Z"), 8.0, virtual_key="vk-l")], "a.jsonl")  # fmt: skip
    key = ("virtual_key", "vk-l", "1M")
    # June 30 23:45 EDT, after every June event (as of a time, only the events before it count)
    at_june, at_july = Z("2026-07-01T03:45:00Z"), Z("2026-07-10T12:00:00Z")
    assert budgets_json(config, lake, at_july)[key]["current_usage"] == pytest.approx(12.0)  # $4 + $8

    # after the month changed: June 30 23:30 EDT (already July 1 in UTC, in July's lake partition)
    # and June 12
    ingest(lake, [ev("l-5", Z("2026-07-01T03:30:00Z"), 16.0, virtual_key="vk-l"),
                  ev("l-6", Z("2026-06-12T15:00:00Z"), 32.0, virtual_key="vk-l")], "late.jsonl")  # fmt: skip
    assert (lake / "events" / "date=2026-07-01").is_dir()
    july = budgets_json(config, lake, at_july)[key]
    june = budgets_json(config, lake, at_june)[key]
    truth = Truth(lake)
    assert close(july["current_usage"], truth.usage("virtual_key", "vk-l", JULY[0], at_july))
    assert july["current_usage"] == pytest.approx(12.0)  # unchanged
    assert close(june["current_usage"], truth.usage("virtual_key", "vk-l", JUNE[0], at_june))
    assert june["current_usage"] == pytest.approx(1.0 + 2.0 + 16.0 + 32.0)
    assert june["period_start"] == "2026-06-01T04:00:00Z" and june["reset_at"] == "2026-07-01T04:00:00Z"


# --- 3. DST --------------------------------------------------------------------------------------

DST = """
[lake]
timezone = "America/New_York"

[[virtual_keys]]
id = "vk-dst"
budgets = [{ max_limit = 100.0, reset_duration = "1d" }, { max_limit = 100.0, reset_duration = "1h" }]
"""


def test_daily_budget_on_dst_days(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    config = write_config(tmp_path / "spendlake.toml", DST)
    # (UTC instant, local time, $)
    events = [
        ("2026-03-08T04:30:00Z", "03-07 23:30 EST", 1.0),  # the day before
        ("2026-03-08T05:30:00Z", "03-08 00:30 EST", 2.0),
        ("2026-03-08T16:00:00Z", "03-08 12:00 EDT", 4.0),
        ("2026-03-09T03:30:00Z", "03-08 23:30 EDT", 8.0),  # UTC date 03-09, local day 03-08
        ("2026-03-09T04:30:00Z", "03-09 00:30 EDT", 16.0),  # the day after
        ("2026-11-01T03:30:00Z", "10-31 23:30 EDT", 1.0),
        ("2026-11-01T04:30:00Z", "11-01 00:30 EDT", 2.0),
        ("2026-11-01T05:30:00Z", "11-01 01:30 EDT (first)", 4.0),
        ("2026-11-01T06:30:00Z", "11-01 01:30 EST (second)", 8.0),
        ("2026-11-01T07:00:00Z", "11-01 02:00 EST", 16.0),
        ("2026-11-02T04:30:00Z", "11-01 23:30 EST", 32.0),  # UTC date 11-02, local day 11-01
        ("2026-11-02T05:30:00Z", "11-02 00:30 EST", 64.0),  # the day after
    ]
    ingest(lake, [ev(f"d-{n}", Z(t), d, virtual_key="vk-dst") for n, (t, _, d) in enumerate(events)], "dst.jsonl")

    # as of the local day's last second: the whole 23-hour day
    spring_at = "2026-03-08T23:59:59-04:00"
    spring = budgets_json(config, lake, spring_at)
    day = spring[("virtual_key", "vk-dst", "1d")]
    assert (day["period_start"], day["reset_at"]) == ("2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z")
    assert Z(day["reset_at"]) - Z(day["period_start"]) == timedelta(hours=23)
    assert day["current_usage"] == pytest.approx(2.0 + 4.0 + 8.0)
    # as of noon: the $4 stamped exactly 12:00 EDT is not before it, the $8 at 23:30 is later
    noon = budgets_json(config, lake, "2026-03-08T12:00:00-04:00")[("virtual_key", "vk-dst", "1d")]
    assert noon["period_start"] == day["period_start"] and noon["current_usage"] == pytest.approx(2.0)

    fall_at = "2026-11-01T23:59:59-05:00"
    fall_day = budgets_json(config, lake, fall_at)[("virtual_key", "vk-dst", "1d")]
    assert (fall_day["period_start"], fall_day["reset_at"]) == ("2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z")
    assert Z(fall_day["reset_at"]) - Z(fall_day["period_start"]) == timedelta(hours=25)
    assert fall_day["current_usage"] == pytest.approx(2.0 + 4.0 + 8.0 + 16.0 + 32.0)
    repeated_at = "2026-11-01T01:45:00-05:00"  # the repeated hour's second pass
    fall = budgets_json(config, lake, repeated_at)
    day = fall[("virtual_key", "vk-dst", "1d")]
    assert day["period_start"] == "2026-11-01T04:00:00Z"
    assert day["current_usage"] == pytest.approx(2.0 + 4.0 + 8.0)  # 02:00 EST and 23:30 EST are later
    # 01:00 EDT to 02:00 EST is one 1h period of two hours: both 01:30s
    hour = fall[("virtual_key", "vk-dst", "1h")]
    assert (hour["period_start"], hour["reset_at"]) == ("2026-11-01T05:00:00Z", "2026-11-01T07:00:00Z")
    assert hour["current_usage"] == pytest.approx(4.0 + 8.0)
    truth = Truth(lake)
    for o, at in ((day, repeated_at), (hour, repeated_at), (fall_day, fall_at), (noon, "2026-03-08T12:00:00-04:00"),
                  (spring[("virtual_key", "vk-dst", "1d")], spring_at)):  # fmt: skip
        assert close(o["current_usage"], truth.usage("virtual_key", "vk-dst", Z(o["period_start"]), Z(at)))


# --- 4. leap day, month end, 30 s and weekly budgets ----------------------------------------------

LEAP = """
[lake]
timezone = "America/New_York"

[[virtual_keys]]
id = "vk-leap"
budgets = [{ max_limit = 100.0, reset_duration = "1M" }, { max_limit = 100.0, reset_duration = "30s" },
           { max_limit = 100.0, reset_duration = "1w" }]
"""


def test_leap_day_month_end_30s_and_weekly(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    config = write_config(tmp_path / "spendlake.toml", LEAP)
    # New York is on EST (UTC-5) until 2028-03-12. 2028-02-28 is a Monday, 02-29 a Tuesday.
    events = [
        ("2028-02-01T04:59:59Z", 1.0),  # 01-31 23:59:59 local: January
        ("2028-02-01T05:00:00Z", 2.0),  # 02-01 00:00 local
        ("2028-02-28T04:59:59Z", 4.0),  # Sunday 02-27 23:59:59: the week before
        ("2028-02-28T05:00:00Z", 8.0),  # Monday 00:00
        ("2028-02-29T17:00:29.999Z", 16.0),  # 12:00:29.999: the 30 s period before
        ("2028-02-29T17:00:30Z", 32.0),  # 12:00:30
        ("2028-02-29T17:00:59.999Z", 64.0),
        ("2028-02-29T17:01:00Z", 128.0),  # 12:01:00: the next 30 s
        ("2028-03-01T04:30:00Z", 256.0),  # 02-29 23:30 local, UTC date 03-01
        ("2028-03-01T05:00:00Z", 512.0),  # 03-01 00:00 local: March (and still the same week)
    ]
    ingest(lake, [ev(f"leap-{n}", Z(t), d, virtual_key="vk-leap") for n, (t, d) in enumerate(events)], "leap.jsonl")
    key = {d: ("virtual_key", "vk-leap", d) for d in ("1M", "30s", "1w")}

    got = budgets_json(config, lake, "2028-02-29T12:00:45-05:00")
    period = {d: (got[k]["period_start"], got[k]["reset_at"]) for d, k in key.items()}
    assert period["30s"] == ("2028-02-29T17:00:30Z", "2028-02-29T17:01:00Z")
    # as of 12:00:45: the $64 at 12:00:59.999 and everything after it are later
    assert got[key["30s"]]["current_usage"] == pytest.approx(32.0)
    assert period["1M"] == ("2028-02-01T05:00:00Z", "2028-03-01T05:00:00Z")
    assert got[key["1M"]]["current_usage"] == pytest.approx(2 + 4 + 8 + 16 + 32)
    assert period["1w"] == ("2028-02-28T05:00:00Z", "2028-03-06T05:00:00Z")
    assert got[key["1w"]]["current_usage"] == pytest.approx(8 + 16 + 32)

    # more instants through the API on the state the command left: the last second of the leap
    # day, the first of March (EDT starts 03-12: April begins at 04:00Z), the last of January
    h, problems = parse_hierarchy(tomllib.loads(LEAP))
    assert problems == []
    truth = Truth(lake)
    cases = {
        "2028-02-29T23:59:59-05:00": {"1M": ("2028-02-01T05:00:00Z", "2028-03-01T05:00:00Z"),
                                      "30s": ("2028-03-01T04:59:30Z", "2028-03-01T05:00:00Z"),
                                      "1w": ("2028-02-28T05:00:00Z", "2028-03-06T05:00:00Z")},
        "2028-03-01T00:00:00-05:00": {"1M": ("2028-03-01T05:00:00Z", "2028-04-01T04:00:00Z"),
                                      "30s": ("2028-03-01T05:00:00Z", "2028-03-01T05:00:30Z"),
                                      "1w": ("2028-02-28T05:00:00Z", "2028-03-06T05:00:00Z")},
        "2028-01-31T23:59:59-05:00": {"1M": ("2028-01-01T05:00:00Z", "2028-02-01T05:00:00Z"),
                                      "30s": ("2028-02-01T04:59:30Z", "2028-02-01T05:00:00Z"),
                                      "1w": ("2028-01-31T05:00:00Z", "2028-02-07T05:00:00Z")},
    }  # fmt: skip
    with Rollup(lake, budget_hook=BudgetUsage(h)) as r:
        for at_text, periods in cases.items():
            at = datetime.fromisoformat(at_text)
            for s in status(r.con, h, at):
                start, end = periods[s.reset_duration]
                assert (s.period_start, s.reset_at) == (start, end), (at_text, s)
                want = truth.usage("virtual_key", "vk-leap", Z(start), min(Z(end), at))
                assert close(s.current_usage, want), (at_text, s, want)
    assert close(truth.usage("virtual_key", "vk-leap", Z("2028-03-01T05:00:00Z"), Z("2028-04-01T04:00:00Z")), 512.0)
    assert close(truth.usage("virtual_key", "vk-leap", Z("2028-01-01T05:00:00Z"), Z("2028-02-01T05:00:00Z")), 1.0)


# --- 6. unpriced events ----------------------------------------------------------------------------

UNPRICED = """
[[teams]]
id = "team-u"

[[virtual_keys]]
id = "vk-p"
team_id = "team-u"
budgets = [{ max_limit = 10.0, reset_duration = "1M" }]

[[virtual_keys]]
id = "vk-u"
team_id = "team-u"
budgets = [{ max_limit = 10.0, reset_duration = "1M" }]
"""


def test_unpriced_events_add_nothing(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    config = write_config(tmp_path / "spendlake.toml", UNPRICED)
    t = Z("2026-09-10T12:00:00Z")
    unknown = {"model": "no-such-model-9000"}
    ingest(lake, [
        ev("p-1", t, 1.0, virtual_key="vk-p"),
        ev("p-2", t + timedelta(hours=1), 2.0, virtual_key="vk-p"),
        ev("p-3", t + timedelta(hours=2), 1.0, virtual_key="vk-p", cache_hit=True),  # $0 (gateway cache)
        ev("p-4", t + timedelta(hours=3), 5.0, virtual_key="vk-p", **unknown),  # unpriced
        ev("p-5", t + timedelta(hours=4), 5.0, virtual_key="vk-p", cost_usd=0.25, **unknown),  # the emitter's figure
        ev("u-1", t, 5.0, virtual_key="vk-u", **unknown),
        ev("u-2", t + timedelta(hours=5), 5.0, virtual_key="vk-u", **unknown),
    ], "a.jsonl")  # fmt: skip
    rows = {r["event_id"]: r for r in raw_rows(lake)}
    sources = {k: (r["cost_source"], r["cost_usd"]) for k, r in rows.items() if k in ("p-3", "p-4", "p-5", "u-1")}
    assert sources == {"p-3": ("cache_hit", 0.0), "p-4": ("unpriced", None), "p-5": ("reported", 0.25),
                       "u-1": ("unpriced", None)}  # fmt: skip

    got = budgets_json(config, lake, Z("2026-09-20T00:00:00Z"))
    p, u = got[("virtual_key", "vk-p", "1M")], got[("virtual_key", "vk-u", "1M")]
    assert close(p["current_usage"], 1.0 + 2.0 + 0.0 + 0.25)
    september = (Z("2026-09-01T00:00:00Z"), Z("2026-10-01T00:00:00Z"))
    assert close(p["current_usage"], Truth(lake).usage("virtual_key", "vk-p", *september))
    assert p["requests"] == 4  # the cache hit and the reported one count; the unpriced one does not
    assert u["current_usage"] == 0 and u["requests"] == 0 and u["utilization"] == 0
    assert u["projected_exhaustion_at"] is None
    # they are counted, separately, as unpriced requests in the rollups
    with Rollup(lake) as r:
        vks = {v: (n, unpriced) for v, n, unpriced in r.con.execute(
            "SELECT virtual_key, sum(requests), sum(unpriced) FROM rollup_virtual_keys GROUP BY 1").fetchall()}  # fmt: skip
    assert vks == {"vk-p": (5, 1), "vk-u": (2, 2)}


# --- 7. a changed budget ---------------------------------------------------------------------------

CHANGE_A = """
[[teams]]
id = "team-c"

[[virtual_keys]]
id = "vk-c"
team_id = "team-c"
budgets = [{ max_limit = 100.0, reset_duration = "1M" }]
"""
CHANGE_B = """
[[teams]]
id = "team-c"
budgets = [{ max_limit = 200.0, reset_duration = "1w" }]

[[virtual_keys]]
id = "vk-c"
team_id = "team-c"
budgets = [{ max_limit = 50.0, reset_duration = "1d" }]
"""
# 2026-10-14 is a Wednesday; its week began on Monday 10-12 (UTC).
AT_CHANGE = Z("2026-10-14T12:00:00Z")
C_MONTH = (Z("2026-10-01T00:00:00Z"), Z("2026-11-01T00:00:00Z"))
C_WEEK = (Z("2026-10-12T00:00:00Z"), Z("2026-10-19T00:00:00Z"))
C_DAY = (Z("2026-10-14T00:00:00Z"), Z("2026-10-15T00:00:00Z"))


def upto(span: tuple[datetime, datetime]) -> tuple[datetime, datetime]:
    """The part of a period before AT_CHANGE: what a status as of AT_CHANGE counts."""
    return span[0], min(span[1], AT_CHANGE)


def change_events(prefix: str, scale: float) -> list[dict[str, Any]]:
    days = ("2026-10-02T10:00:00Z", "2026-10-11T23:59:59Z", "2026-10-12T00:00:00Z", "2026-10-13T10:00:00Z",
            "2026-10-14T00:00:00Z", "2026-10-14T09:00:00Z", "2026-10-14T23:59:59Z", "2026-10-15T00:00:00Z")  # fmt: skip
    return [ev(f"{prefix}-{n}", Z(t), scale * (n + 1), virtual_key="vk-c") for n, t in enumerate(days)]


def test_changed_budgets_are_recomputed_from_the_lake(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    ingest(lake, change_events("c", 1.0), "a.jsonl")
    a = write_config(tmp_path / "a.toml", CHANGE_A)
    b = write_config(tmp_path / "b.toml", CHANGE_B)
    truth = Truth(lake, {"vk-c": "team-c"})

    got = budgets_json(a, lake, AT_CHANGE)
    assert set(got) == {("virtual_key", "vk-c", "1M")}
    month = got[("virtual_key", "vk-c", "1M")]["current_usage"]
    assert close(month, truth.usage("virtual_key", "vk-c", *upto(C_MONTH)))
    assert got[("virtual_key", "vk-c", "1M")]["current_usage"] == pytest.approx(21.0)  # 1 + ... + 6: before 12:00

    got = budgets_json(b, lake, AT_CHANGE)  # another limit and period for vk-c; a new budget for the team
    assert set(got) == {("virtual_key", "vk-c", "1d"), ("team", "team-c", "1w")}
    day, week = got[("virtual_key", "vk-c", "1d")], got[("team", "team-c", "1w")]
    assert day["max_limit"] == 50.0 and (day["period_start"], day["reset_at"]) == (rfc(C_DAY[0]), rfc(C_DAY[1]))
    assert close(day["current_usage"], truth.usage("virtual_key", "vk-c", *upto(C_DAY)))
    assert day["current_usage"] == pytest.approx(5 + 6)  # 10-14 00:00 and 09:00; 23:59:59 is later
    assert close(week["current_usage"], truth.usage("team", "team-c", *upto(C_WEEK)))
    assert week["current_usage"] == pytest.approx(3 + 4 + 5 + 6)
    assert close(day["utilization"], 11 / 50)

    # the state now holds usage for the second config from 10-12 on (the start of its earliest
    # current period): BudgetUsage.ensure has nothing to redo for it; for the first config again it
    # recomputes exactly those dates (10-02 and 10-11 still hold the first config's usage)
    hb, _ = parse_hierarchy(tomllib.loads(CHANGE_B))
    ha, _ = parse_hierarchy(tomllib.loads(CHANGE_A))
    with Rollup(lake) as r:
        assert BudgetUsage(hb).ensure(r.con, lake, AT_CHANGE) == 0
        assert BudgetUsage(ha).ensure(r.con, lake, AT_CHANGE) == 4  # 10-12, 10-13, 10-14, 10-15
        (s,) = status(r.con, ha, AT_CHANGE)
        assert close(s.current_usage, truth.usage("virtual_key", "vk-c", *upto(C_MONTH)))


def test_changed_budgets_with_new_events_in_between(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    ingest(lake, change_events("c", 1.0), "a.jsonl")
    a = write_config(tmp_path / "a.toml", CHANGE_A)
    b = write_config(tmp_path / "b.toml", CHANGE_B)
    budgets_json(a, lake, AT_CHANGE)
    # traffic goes on while the budgets are edited: new events on the same dates
    ingest(lake, change_events("n", 0.5), "b.jsonl")
    got = budgets_json(b, lake, AT_CHANGE)
    truth = Truth(lake, {"vk-c": "team-c"})
    day, week = got[("virtual_key", "vk-c", "1d")], got[("team", "team-c", "1w")]
    assert day["current_usage"] == pytest.approx((5 + 6) * 1.5)
    assert week["current_usage"] == pytest.approx((3 + 4 + 5 + 6) * 1.5)
    assert close(day["current_usage"], truth.usage("virtual_key", "vk-c", *upto(C_DAY)))
    assert close(week["current_usage"], truth.usage("team", "team-c", *upto(C_WEEK)))


# --- 8. a config with several mistakes ------------------------------------------------------------

BAD = """
[lake]
timezone = "Mars/Olympus_Mons"

[[customers]]
id = "cust-1"
budgets = [{ max_limit = -5.0, reset_duration = "1M" }]

[[teams]]
id = "team-1"
customer_id = "cust-nope"
budget = [{ max_limit = 10.0, reset_duration = "1d" }]

[[virtual_keys]]
id = "vk-1"
team_id = "team-1"
budgets = [{ max_limit = 10.0, reset_duration = "1 month" }, { max_limit = 5.0, reset_duration = "30S" },
           { max_limit = 1.0, reset_duration = "1d", thresholds = [0.9, 0.5] }, { reset_duration = "1d" }]

[[virtual_keys]]
id = "vk-1"
"""


def test_config_mistakes_are_all_listed(tmp_path: Path) -> None:
    config = write_config(tmp_path / "bad.toml", BAD)
    (tmp_path / "lake" / "events").mkdir(parents=True)
    r = budgets_cmd(config, tmp_path / "lake", "2026-06-01T00:00:00Z")
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert r.stdout == b"" and "Traceback" not in err
    expected = [
        ("timezone", "Mars/Olympus_Mons"),
        ("[[customers]] #1 (cust-1) budgets[0].max_limit", "-5.0"),
        ("[[teams]] #1 (team-1) customer_id", "cust-nope"),
        ("[[teams]] #1 (team-1) budget", "unknown key"),
        ("[[virtual_keys]] #1 (vk-1) budgets[0].reset_duration", "1 month"),
        ("[[virtual_keys]] #1 (vk-1) budgets[1].reset_duration", "30S"),
        ("[[virtual_keys]] #1 (vk-1) budgets[2].thresholds[1]", "0.5"),
        ("[[virtual_keys]] #1 (vk-1) budgets[3].max_limit", "missing"),
        ("[[virtual_keys]] #2 id", "again"),
    ]
    problems = [line for line in err.splitlines() if line.startswith("  - ")]
    assert len(problems) == len(expected), err
    assert f"{len(expected)} problems" in err.splitlines()[0]
    for where, what in expected:
        assert any(where in line and what in line for line in problems), (where, what, err)


# --- 9. while another process holds the state -------------------------------------------------------


def test_budgets_while_the_state_is_held(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    config = write_config(tmp_path / "spendlake.toml", HIERARCHY)
    other = write_config(tmp_path / "other.toml", HIERARCHY.replace("max_limit = 10.0", "max_limit = 12.0"))
    lo, hi = ms(Z("2026-06-01T04:00:00Z")), ms(Z("2026-06-15T12:00:00Z"))
    first = [e for e in hierarchy_events() if lo <= e["timestamp"] < hi]
    ingest(lake, first, "a.jsonl")
    r = spendlake("rollup", "--config", str(config), "--lake", str(lake))  # what serve would publish
    assert r.returncode == 0, r.stderr.decode()
    published_truth = Truth(lake, VK_TEAM, TEAM_CUSTOMER)
    ingest(lake, [ev(f"x-{n}", Z("2026-06-15T10:00:00Z") + timedelta(minutes=n), 3.0, virtual_key="vk-alice")
                  for n in range(4)], "b.jsonl")  # fmt: skip
    raw_truth = Truth(lake, VK_TEAM, TEAM_CUSTOMER)

    with Rollup(lake):  # serve holds the state
        same = budgets_cmd(config, lake, AT_JUNE)
        assert same.returncode == 0, same.stderr.decode()
        assert same.stderr == b""
        got = {(o["type"], o["id"], o["reset_duration"]): o for o in json.loads(same.stdout)}
        changed = budgets_cmd(other, lake, AT_JUNE)
        assert changed.returncode == 0, changed.stderr.decode()
        note = changed.stderr.decode()
        assert "computing usage from the raw lake" in note and note.count("\n") == 1, note
        raw = {(o["type"], o["id"], o["reset_duration"]): o for o in json.loads(changed.stdout)}

    assert set(got) == set(raw) == {(t, i, d) for t, i, d, _ in BUDGETS}
    for t, i, d, _ in BUDGETS:
        start, end = (Z(x) for x in PERIODS[AT_JUNE][d])
        # the same config: what was published (the events rolled up before b.jsonl)
        assert close(got[(t, i, d)]["current_usage"], published_truth.usage(t, i, start, end)), (t, i, d)
        # another config: from the raw lake, b.jsonl included
        assert close(raw[(t, i, d)]["current_usage"], raw_truth.usage(t, i, start, end)), (t, i, d)
    alice_day = ("virtual_key", "vk-alice", "1d")
    assert raw[alice_day]["current_usage"] == pytest.approx(got[alice_day]["current_usage"] + 12.0)
    bob = ("virtual_key", "vk-bob", "1d")
    assert (got[bob]["max_limit"], raw[bob]["max_limit"]) == (10.0, 12.0)


def test_budgets_while_held_for_an_earlier_period_after_a_budget_change(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    ingest(lake, change_events("c", 1.0), "a.jsonl")
    a = write_config(tmp_path / "a.toml", CHANGE_A)
    b = write_config(tmp_path / "b.toml", CHANGE_B)
    for config in (a, b):  # serve ran with the first config, then restarted with the second
        r = spendlake("rollup", "--config", str(config), "--lake", str(lake))
        assert r.returncode == 0, r.stderr.decode()
    truth = Truth(lake, {"vk-c": "team-c"})
    with Rollup(lake):
        got = budgets_json(b, lake, AT_CHANGE)
    assert close(got[("virtual_key", "vk-c", "1d")]["current_usage"], truth.usage("virtual_key", "vk-c", *upto(C_DAY)))
    assert close(got[("team", "team-c", "1w")]["current_usage"], truth.usage("team", "team-c", *upto(C_WEEK)))
