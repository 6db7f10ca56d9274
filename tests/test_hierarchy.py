"""The budget hierarchy: parsing contract 3's example, descendants, every mistake reported at once,
filling team/customer on Arrow event tables, and the budgets' fingerprint."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest

from aggregator.hierarchy import OWNER_TYPES, Hierarchy, parse_hierarchy
from ingest.schema import EVENT_SCHEMA

EXAMPLE = """
[lake]
timezone = "UTC"

[[customers]]
id = "customer-acme"
name = "Acme Corp"
budgets = [{ max_limit = 10000.0, reset_duration = "1M" }]

[[teams]]
id = "team-engineering"
name = "Engineering"
customer_id = "customer-acme"
budgets = [{ max_limit = 5000.0, reset_duration = "1M" }]

[[teams]]
id = "team-data-science"
name = "Data Science"
customer_id = "customer-acme"
budgets = [{ max_limit = 3000.0, reset_duration = "1M" }]

[[teams]]
id = "team-solo"

[[virtual_keys]]
id = "vk-dev-alice"
name = "Alice"
team_id = "team-engineering"
budgets = [{ max_limit = 500.0, reset_duration = "1M" }, { max_limit = 40.0, reset_duration = "1d" }]

[[virtual_keys]]
id = "vk-dev-bob"
name = "Bob"
team_id = "team-data-science"

[[virtual_keys]]
id = "vk-carol"
team_id = "team-solo"

[[virtual_keys]]
id = "vk-loose"
"""


def parse(text: str) -> Hierarchy:
    hierarchy, problems = parse_hierarchy(tomllib.loads(text))
    assert problems == []
    return hierarchy


def test_the_contract_example() -> None:
    h = parse(EXAMPLE)
    assert h.timezone == "UTC"
    assert h.customers == {"customer-acme": "Acme Corp"}
    assert h.teams == {
        "team-engineering": ("Engineering", "customer-acme"),
        "team-data-science": ("Data Science", "customer-acme"),
        "team-solo": ("team-solo", None),  # name defaults to the id; a team may have no customer
    }
    assert h.virtual_keys == {
        "vk-dev-alice": ("Alice", "team-engineering"),
        "vk-dev-bob": ("Bob", "team-data-science"),
        "vk-carol": ("vk-carol", "team-solo"),
        "vk-loose": ("vk-loose", None),
    }
    assert [(b.id, b.owner_type, b.owner_id, b.owner_name, b.max_limit, b.reset_duration) for b in h.budgets] == [
        ("customer:customer-acme:0", "customer", "customer-acme", "Acme Corp", 10000.0, "1M"),
        ("team:team-engineering:0", "team", "team-engineering", "Engineering", 5000.0, "1M"),
        ("team:team-data-science:0", "team", "team-data-science", "Data Science", 3000.0, "1M"),
        ("virtual_key:vk-dev-alice:0", "virtual_key", "vk-dev-alice", "Alice", 500.0, "1M"),
        ("virtual_key:vk-dev-alice:1", "virtual_key", "vk-dev-alice", "Alice", 40.0, "1d"),
    ]
    daily = h.budgets[-1]
    assert daily.thresholds is None and daily.name is None and daily.period.calendar_aligned
    at = datetime(2026, 2, 14, 15, 30, tzinfo=UTC)
    assert daily.period.start(at) == datetime(2026, 2, 14, tzinfo=UTC)
    assert daily.period.end(at) == datetime(2026, 2, 15, tzinfo=UTC)
    assert h.budgets[0].period.start(at) == datetime(2026, 2, 1, tzinfo=UTC)
    assert h.budgets[0].period.end(at) == datetime(2026, 3, 1, tzinfo=UTC)
    assert h.team_of("vk-dev-alice") == "team-engineering" and h.team_of("vk-loose") is None
    assert h.team_of("vk-nobody") is None
    assert h.customer_of("team-engineering") == "customer-acme" and h.customer_of("team-solo") is None
    assert h.budgets_of("virtual_key", "vk-dev-alice") == h.budgets[3:]


def test_no_budget_sections_is_an_empty_hierarchy() -> None:
    configs: list[dict[str, Any]] = [{}, {"lake": {"path": "./lake"}}, {"customers": [], "teams": [], "virtual_keys": []}]
    for config in configs:
        h, problems = parse_hierarchy(config)
        assert problems == []
        assert h == Hierarchy(timezone="UTC")
        assert h.budgets == () and h.customers == {}


def test_descendants() -> None:
    h = parse(EXAMPLE)
    assert h.descendants("customer", "customer-acme") == (
        ("team", "team-engineering"), ("team", "team-data-science"),
        ("virtual_key", "vk-dev-alice"), ("virtual_key", "vk-dev-bob"),
    )  # fmt: skip
    assert h.descendants("team", "team-solo") == (("virtual_key", "vk-carol"),)
    assert h.descendants("team", "team-engineering") == (("virtual_key", "vk-dev-alice"),)
    assert h.descendants("virtual_key", "vk-dev-alice") == ()
    assert h.descendants("customer", "customer-unknown") == ()
    with pytest.raises(ValueError, match="owner_type"):
        h.descendants("user", "x")
    assert OWNER_TYPES == ("customer", "team", "virtual_key")


def test_budget_options_timezone_and_rolling_starts() -> None:
    h = parse("""
[lake]
timezone = "Europe/Berlin"

[[virtual_keys]]
id = "vk-1"
budgets = [
  { max_limit = 100, reset_duration = "7d", calendar_aligned = false, start = "2026-01-05T09:00:00" },
  { max_limit = 100, reset_duration = "1M", calendar_aligned = false, start = "2026-01-31" },
  { max_limit = 100, reset_duration = "1d", calendar_aligned = false, start = 2026-01-05T09:00:00Z },
  { max_limit = 100, reset_duration = "1w", calendar_aligned = false, start = 2026-01-07 },
  { max_limit = 25.5, reset_duration = "30s", thresholds = [0.5, 0.8, 1.0, 1.5], name = "burst" },
  { max_limit = 1, reset_duration = "1Y", thresholds = [] },
]
""")
    assert h.timezone == "Europe/Berlin"
    b = h.budgets
    berlin = ZoneInfo("Europe/Berlin")
    assert b[0].period.anchor == datetime(2026, 1, 5, 9, tzinfo=berlin)  # local time in the [lake] zone
    assert b[0].period.start(datetime(2026, 1, 13, tzinfo=UTC)) == datetime(2026, 1, 12, 8, tzinfo=UTC)
    assert b[1].period.anchor == datetime(2026, 1, 31, tzinfo=berlin)
    # anchored Jan 31 00:00 CET: the next reset is Feb 28 00:00 CET
    assert b[1].period.end(datetime(2026, 2, 10, tzinfo=UTC)) == datetime(2026, 2, 27, 23, tzinfo=UTC)
    assert b[2].period.anchor == datetime(2026, 1, 5, 9, tzinfo=UTC)
    # 09:00Z is 10:00 CET: the rolling day resets at 10:00 local, which is 08:00Z in summer (CEST)
    assert b[2].period.start(datetime(2026, 7, 1, 6, tzinfo=UTC)) == datetime(2026, 6, 30, 8, tzinfo=UTC)
    assert b[3].period.start(datetime(2026, 1, 20, tzinfo=UTC)) == datetime(2026, 1, 13, 23, tzinfo=UTC)  # Wednesday
    assert (b[4].max_limit, b[4].thresholds, b[4].name) == (25.5, (0.5, 0.8, 1.0, 1.5), "burst")
    assert b[5].max_limit == 1.0 and isinstance(b[5].max_limit, float) and b[5].thresholds == ()
    h2, problems = parse_hierarchy(tomllib.loads("[lake]\ntimezone = 'UTC'\n"), timezone="Asia/Kolkata")
    assert problems == [] and h2.timezone == "Asia/Kolkata"


def test_every_mistake_is_reported_at_once() -> None:
    config: dict[str, Any] = tomllib.loads("""
[lake]
timezone = "Mars/Olympus"

[[customers]]
id = "customer-acme"
budgets = [{ max_limit = 10000.0, reset_duration = "1 month" }]

[[customers]]
id = "customer-acme"
name = "Acme again"

[[customers]]
name = "No id"
budget = { max_limit = 5.0, reset_duration = "1d" }

[[teams]]
id = "team-eng"
customer_id = "customer-acme"
budgets = [{ max_limit = -5, reset_duration = "1M" }, { max_limit = 10, reset_duration = "0d", colour = "red" }]

[[teams]]
id = "team-ops"
customer_id = "customer-nope"
budgets = [
  { max_limit = 10, reset_duration = "1d", start = "2026-01-01" },
  { max_limit = 10, reset_duration = "1D", calendar_aligned = "no" },
  { reset_duration = "1d", thresholds = [0.8, 0.5, 12] },
  { max_limit = true, calendar_aligned = false, start = "last tuesday" },
  "fifty dollars",
]

[[virtual_keys]]
id = "vk-alice"
team_id = "team-eng"
budgets = [{ max_limit = 40.0, reset_duration = "1d" }]

[[virtual_keys]]
id = ""
team_id = "team-eng"

[[virtual_keys]]
id = "vk-bob"
team_id = "team-nope"
budgets = [{ max_limit = 5, reset_duration = "1h", name = "" }]
""")
    config["teams"].append("not a table")
    h, problems = parse_hierarchy(config)
    grammar = "expected <count><unit> with unit s, m, h, d, w, M or Y (e.g. 30s, 1d, 1M)"
    fractions = "expected a list of fractions in (0, 10], ascending, such as [0.5, 0.8, 1.0]"
    assert problems == [
        "[lake] timezone: got 'Mars/Olympus', expected an IANA time zone such as 'UTC' or 'Europe/Berlin'",
        f"[[customers]] #1 (customer-acme) budgets[0].reset_duration: got '1 month', {grammar}; "
        "'month' is not a unit, write 1M",
        "[[customers]] #2 id: got 'customer-acme' again, expected a unique id",
        "[[customers]] #3 id: missing, expected a non-empty string",
        "[[customers]] #3 budget: unknown key (did you mean budgets = [{ ... }]?) (known: budgets, id, name)",
        "[[teams]] #1 (team-eng) budgets[0].max_limit: got -5, expected a number > 0 (USD)",
        "[[teams]] #1 (team-eng) budgets[1].colour: unknown key "
        "(known: max_limit, reset_duration, calendar_aligned, start, thresholds, name)",
        f"[[teams]] #1 (team-eng) budgets[1].reset_duration: got '0d', {grammar}; the count must be at least 1",
        "[[teams]] #2 (team-ops) customer_id: got 'customer-nope', expected the id of a [[customers]] entry",
        "[[teams]] #2 (team-ops) budgets[0].start: got '2026-01-01' on a calendar-aligned budget, expected "
        "calendar_aligned = false with it (a start only anchors a rolling budget)",
        f"[[teams]] #2 (team-ops) budgets[1].reset_duration: got '1D', {grammar}; 'D' is not a unit; "
        "units are case-sensitive (m minute, M month, d day, Y year)",
        "[[teams]] #2 (team-ops) budgets[1].calendar_aligned: got 'no', expected true or false",
        "[[teams]] #2 (team-ops) budgets[2].max_limit: missing, expected a number > 0 (USD)",
        f"[[teams]] #2 (team-ops) budgets[2].thresholds[1]: got 0.5 after 0.8, {fractions}",
        f"[[teams]] #2 (team-ops) budgets[2].thresholds[2]: got 12, {fractions}",
        "[[teams]] #2 (team-ops) budgets[3].max_limit: got True, expected a number > 0 (USD)",
        f"[[teams]] #2 (team-ops) budgets[3].reset_duration: missing, {grammar}",
        "[[teams]] #2 (team-ops) budgets[3].start: got 'last tuesday', expected an RFC 3339 time or a date "
        "such as '2026-01-05T09:00:00Z' or '2026-01-05'",
        "[[teams]] #2 (team-ops) budgets[4]: got 'fifty dollars', expected a table like "
        '{ max_limit = 100.0, reset_duration = "1M" }',
        "[[teams]] #3: got 'not a table', expected a table",
        "[[virtual_keys]] #2 id: got '', expected a non-empty string",
        "[[virtual_keys]] #3 (vk-bob) team_id: got 'team-nope', expected the id of a [[teams]] entry",
        "[[virtual_keys]] #3 (vk-bob) budgets[0].name: got '', expected a non-empty string",
    ]
    # the good parts are kept (a bad time zone falls back to UTC)
    assert h.timezone == "UTC"
    assert h.customers == {"customer-acme": "customer-acme"}
    assert h.teams == {"team-eng": ("team-eng", "customer-acme"), "team-ops": ("team-ops", None)}
    assert h.virtual_keys == {"vk-alice": ("vk-alice", "team-eng"), "vk-bob": ("vk-bob", None)}
    assert [b.id for b in h.budgets] == ["virtual_key:vk-alice:0"]


def test_sections_of_the_wrong_shape() -> None:
    _, problems = parse_hierarchy({"customers": {"id": "c"}, "teams": [{"id": "t", "budgets": {"max_limit": 1}}]})
    assert problems == [
        "[[customers]]: got {'id': 'c'}, expected an array of tables ([[customers]] entries)",
        "[[teams]] #1 (t) budgets: got {'max_limit': 1}, expected a list of tables like "
        '[{ max_limit = 100.0, reset_duration = "1M" }]',
    ]


# --- fill ------------------------------------------------------------------------------------

FILL_COLUMNS = ("event_id", "timestamp", "virtual_key", "team", "customer", "user")
FILL_SCHEMA = pa.schema([EVENT_SCHEMA.field(n) for n in FILL_COLUMNS], metadata={b"k": b"v"})
T0 = datetime(2026, 2, 1, tzinfo=UTC)

FILL_CASES = [
    # (virtual_key, team, customer) -> (team, customer) after fill
    (("vk-dev-alice", None, None), ("team-engineering", "customer-acme")),  # both from the hierarchy
    (("vk-dev-alice", "team-other", None), ("team-other", None)),  # the event's team wins; unknown team
    (("vk-dev-alice", "team-data-science", None), ("team-data-science", "customer-acme")),  # from its own team
    (("vk-dev-alice", None, "customer-globex"), ("team-engineering", "customer-globex")),  # customer kept
    (("vk-unknown", None, None), (None, None)),  # unknown VK: nothing to fill
    ((None, "team-engineering", None), ("team-engineering", "customer-acme")),  # no VK, team known
    (("vk-carol", None, None), ("team-solo", None)),  # the team has no customer
    (("vk-loose", None, None), (None, None)),  # the VK has no team
    ((None, None, None), (None, None)),
    (("vk-dev-bob", None, None), ("team-data-science", "customer-acme")),
]


def events(rows: list[tuple[str | None, str | None, str | None]], schema: pa.Schema = FILL_SCHEMA) -> pa.Table:
    return pa.Table.from_pylist(
        [{"event_id": f"e{i}", "timestamp": T0, "virtual_key": vk, "team": team, "customer": customer,
          "user": f"u{i}"} for i, (vk, team, customer) in enumerate(rows)],
        schema=schema,
    )  # fmt: skip


def test_fill_team_and_customer_from_the_hierarchy() -> None:
    h = parse(EXAMPLE)
    table = events([given for given, _ in FILL_CASES])
    filled = h.fill(table)
    assert filled.schema == table.schema and filled.schema.metadata == {b"k": b"v"}
    assert filled.column("event_id").to_pylist() == [f"e{i}" for i in range(len(FILL_CASES))]
    assert filled.column("user").to_pylist() == table.column("user").to_pylist()
    assert filled.column("virtual_key").to_pylist() == table.column("virtual_key").to_pylist()
    assert list(zip(filled.column("team").to_pylist(), filled.column("customer").to_pylist())) == [
        want for _, want in FILL_CASES
    ]


def test_fill_on_many_chunks_the_full_event_schema_and_dictionaries() -> None:
    h = parse(EXAMPLE)
    given = [g for g, _ in FILL_CASES] * 3
    want = [w for _, w in FILL_CASES] * 3
    chunked = pa.concat_tables([events(given[:7]), events(given[7:8]), events(given[8:])])
    assert chunked.column("team").num_chunks == 3
    filled = h.fill(chunked)
    assert list(zip(filled.column("team").to_pylist(), filled.column("customer").to_pylist())) == want
    # the whole EVENT_SCHEMA, as the pipeline holds it
    full = pa.Table.from_pylist(
        [{"event_id": f"e{i}", "timestamp": T0, "provider": "openai", "model": "gpt-4o", "input_tokens": 1,
          "output_tokens": 1, "cached_input_tokens": 0, "cache_write_tokens": 0, "cache_write_1h_tokens": 0,
          "reasoning_tokens": 0, "virtual_key": vk, "team": team, "customer": customer, "request_type": "chat",
          "batch": False, "status": "success", "cache_hit": False, "input_format": "canonical"}
         for i, (vk, team, customer) in enumerate(given)],
        schema=EVENT_SCHEMA,
    )  # fmt: skip
    filled = h.fill(full)
    assert filled.schema == EVENT_SCHEMA
    assert list(zip(filled.column("team").to_pylist(), filled.column("customer").to_pylist())) == want
    # dictionary-encoded attribution columns stay dictionary-encoded
    dict_schema = pa.schema([
        pa.field(f.name, pa.dictionary(pa.int32(), pa.string())) if f.name in ("team", "customer") else f
        for f in FILL_SCHEMA
    ])  # fmt: skip
    encoded = events(given).cast(dict_schema)
    filled = h.fill(encoded)
    assert filled.schema == dict_schema
    assert list(zip(filled.column("team").to_pylist(), filled.column("customer").to_pylist())) == want


def test_fill_without_links_or_rows_changes_nothing() -> None:
    table = events([g for g, _ in FILL_CASES])
    assert Hierarchy(timezone="UTC").fill(table).equals(table)
    h = parse(EXAMPLE)
    empty = events([])
    assert h.fill(empty).equals(empty)
    only_vk = table.select(["event_id", "virtual_key", "customer"])  # no team column: customer still follows
    assert h.fill(only_vk).column("customer").to_pylist() == [
        "customer-acme", "customer-acme", "customer-acme", "customer-globex", None, None, None, None, None,
        "customer-acme",
    ]  # fmt: skip


# --- fingerprint -----------------------------------------------------------------------------


def fingerprint(text: str) -> str:
    return parse(text).fingerprint()


def test_fingerprint_tracks_what_budgets_count() -> None:
    base = fingerprint(EXAMPLE)
    assert base == fingerprint(EXAMPLE) and len(base) == 16
    # names (of owners and budgets) and alert thresholds do not change what is counted
    assert fingerprint(EXAMPLE.replace('name = "Alice"', 'name = "Alice Liddell"')) == base
    assert fingerprint(EXAMPLE.replace('name = "Acme Corp"', 'name = "ACME"')) == base
    assert fingerprint(EXAMPLE.replace(
        '{ max_limit = 40.0, reset_duration = "1d" }',
        '{ max_limit = 40.0, reset_duration = "1d", name = "daily", thresholds = [0.5] }',
    )) == base  # fmt: skip
    assert fingerprint(EXAMPLE.replace("max_limit = 40.0", "max_limit = 40")) == base  # same number
    changed = {
        "limit": EXAMPLE.replace("max_limit = 40.0", "max_limit = 45.0"),
        "duration": EXAMPLE.replace('40.0, reset_duration = "1d"', '40.0, reset_duration = "1w"'),
        "alignment": EXAMPLE.replace('reset_duration = "1d" }', 'reset_duration = "1d", calendar_aligned = false }'),
        "anchor": EXAMPLE.replace('reset_duration = "1d" }',
                                  'reset_duration = "1d", calendar_aligned = false, start = "2026-01-01T09:00:00Z" }'),
        "timezone": EXAMPLE.replace('timezone = "UTC"', 'timezone = "Europe/Berlin"'),
        "new budget": EXAMPLE.replace('id = "vk-dev-bob"',
                                      'id = "vk-dev-bob"\nbudgets = [{ max_limit = 1.0, reset_duration = "1d" }]'),
        "VK moves team": EXAMPLE.replace('team_id = "team-data-science"', 'team_id = "team-engineering"'),
        "team gets a customer": EXAMPLE.replace('[[teams]]\nid = "team-solo"',
                                               '[[teams]]\nid = "team-solo"\ncustomer_id = "customer-acme"'),
    }  # fmt: skip
    prints = {what: fingerprint(text) for what, text in changed.items()}
    for what, fp in prints.items():
        assert fp != base, what
    assert len(set(prints.values())) == len(prints)
