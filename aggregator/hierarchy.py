"""The budget hierarchy of ``spendlake.toml`` (contract 3): customers, teams, virtual keys, budgets.

```toml
[lake]
timezone = "UTC"                  # budget periods are in this zone (IANA name)

[[customers]]
id = "customer-acme"
name = "Acme Corp"                # optional, default: the id
budgets = [{ max_limit = 10000.0, reset_duration = "1M" }]

[[teams]]
id = "team-engineering"
customer_id = "customer-acme"     # optional: a team may have no customer
budgets = [{ max_limit = 5000.0, reset_duration = "1M" }]

[[virtual_keys]]
id = "vk-dev-alice"
team_id = "team-engineering"      # optional
budgets = [
  { max_limit = 500.0, reset_duration = "1M" },
  { max_limit = 40.0, reset_duration = "1d", thresholds = [0.5, 0.8, 1.0], name = "daily cap" },
  { max_limit = 100.0, reset_duration = "7d", calendar_aligned = false, start = "2026-01-05T09:00:00" },
]
```

Budget keys: ``max_limit`` (USD, > 0), ``reset_duration`` (see `aggregator.periods`), and optional
``calendar_aligned`` (default true), ``start`` (the anchor of a rolling budget: an RFC 3339 time, a
local date-time or a date, local ones read in the ``[lake]`` zone; TOML dates work unquoted too;
only with ``calendar_aligned = false``), ``thresholds`` (alert fractions in (0, 10], strictly
ascending; ``[]`` means no alerts for this budget, absent means the ``[alerts]`` defaults) and
``name``. Anything else is a mistake, reported.

`parse_hierarchy` reports every problem at once, one line each, naming the entry (``#n`` counts
entries of a kind from 1, as they appear in the file; ``budgets[i]`` counts from 0) and the bad
value. A budget's id is ``"<owner_type>:<owner_id>:<i>"``, stable as long as the owner's list keeps
its order. A virtual key's spend also counts toward its team's and customer's budgets; `fill` puts
the team and customer on events that lack them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pyarrow as pa
import pyarrow.compute as pc

from aggregator.periods import DURATION_GRAMMAR, Period, duration_problem, parse_duration

OWNER_TYPES = ("customer", "team", "virtual_key")
SECTIONS = {"customer": "customers", "team": "teams", "virtual_key": "virtual_keys"}
PARENT_KEY = {"team": ("customer_id", "customer"), "virtual_key": ("team_id", "team")}
OWNER_KEYS = {
    "customer": {"id", "name", "budgets"},
    "team": {"id", "name", "customer_id", "budgets"},
    "virtual_key": {"id", "name", "team_id", "budgets"},
}
BUDGET_KEYS = ("max_limit", "reset_duration", "calendar_aligned", "start", "thresholds", "name")
MAX_THRESHOLD = 10.0


@dataclass(frozen=True)
class Budget:
    id: str  # f"{owner_type}:{owner_id}:{index}"
    owner_type: str
    owner_id: str
    owner_name: str
    max_limit: float
    reset_duration: str  # normalised, str(Duration)
    period: Period
    thresholds: tuple[float, ...] | None  # None: the [alerts] defaults; (): no alerts
    name: str | None


@dataclass(frozen=True)
class Hierarchy:
    timezone: str
    customers: dict[str, str] = field(default_factory=dict)  # id -> name
    teams: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # id -> (name, customer_id)
    virtual_keys: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # id -> (name, team_id)
    budgets: tuple[Budget, ...] = ()

    def team_of(self, vk: str) -> str | None:
        entry = self.virtual_keys.get(vk)
        return None if entry is None else entry[1]

    def customer_of(self, team: str) -> str | None:
        entry = self.teams.get(team)
        return None if entry is None else entry[1]

    def name_of(self, owner_type: str, owner_id: str) -> str | None:
        if owner_type == "customer":
            return self.customers.get(owner_id)
        entry = (self.teams if owner_type == "team" else self.virtual_keys).get(owner_id)
        return None if entry is None else entry[0]

    def descendants(self, owner_type: str, owner_id: str) -> tuple[tuple[str, str], ...]:
        """Everything below an owner, as (owner_type, id) in config order: a customer's teams and
        their virtual keys; a team's virtual keys; nothing below a virtual key."""
        if owner_type not in OWNER_TYPES:
            raise ValueError(f"owner_type: got {owner_type!r}, expected one of {OWNER_TYPES}")
        if owner_type == "virtual_key":
            return ()
        teams = [owner_id] if owner_type == "team" else [t for t, (_, c) in self.teams.items() if c == owner_id]
        out = [("team", t) for t in teams] if owner_type == "customer" else []
        wanted = set(teams)
        out += [("virtual_key", vk) for vk, (_, t) in self.virtual_keys.items() if t in wanted]
        return tuple(out)

    def budgets_of(self, owner_type: str, owner_id: str) -> tuple[Budget, ...]:
        return tuple(b for b in self.budgets if b.owner_type == owner_type and b.owner_id == owner_id)

    def fill(self, events: pa.Table) -> pa.Table:
        """Fill a null ``team`` from the virtual key's team_id, then a null ``customer`` from the
        (possibly filled) team's customer_id. Values the events carry are never replaced; unknown
        keys stay null. Same schema and row order; only the team and customer columns change."""
        names = events.schema.names
        if "virtual_key" not in names and "team" not in names:
            return events
        vk_team = {vk: t for vk, (_, t) in self.virtual_keys.items() if t is not None}
        team_customer = {t: c for t, (_, c) in self.teams.items() if c is not None}
        team: pa.ChunkedArray | None = _as_string(events["team"]) if "team" in names else None
        out = events
        if "virtual_key" in names and vk_team:
            looked_up = _lookup(_as_string(events["virtual_key"]), vk_team)
            team = looked_up if team is None else pc.coalesce(team, looked_up)
            if "team" in names:
                out = _replace(out, "team", team)
        if "customer" in names and team is not None and team_customer:
            customer = pc.coalesce(_as_string(events["customer"]), _lookup(team, team_customer))
            out = _replace(out, "customer", customer)
        return out

    def fingerprint(self) -> str:
        """A stable hash of what budgets count and when they reset: the zone, each budget's id,
        limit, duration, alignment and anchor, and the VK -> team -> customer links (which decide
        whose spend a team or customer budget counts). Names and alert thresholds are left out."""
        doc = {
            "timezone": self.timezone,
            "budgets": sorted(
                [
                    b.id,
                    repr(float(b.max_limit)),
                    b.reset_duration,
                    b.period.calendar_aligned,
                    None if b.period.anchor is None else int(b.period.anchor.timestamp()),
                ]
                for b in self.budgets
            ),
            "teams": sorted([t, c] for t, (_, c) in self.teams.items() if c is not None),
            "virtual_keys": sorted([vk, t] for vk, (_, t) in self.virtual_keys.items() if t is not None),
        }
        return hashlib.sha256(json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()).hexdigest()[:16]


def _as_string(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if not pa.types.is_string(col.type):
        col = col.cast(pa.string())
    return col


def _lookup(keys: pa.ChunkedArray, mapping: Mapping[str, str]) -> pa.ChunkedArray:
    """mapping[key] per row (null where the key is null or unknown), vectorised."""
    index = pc.index_in(keys, value_set=pa.array(list(mapping), pa.string()))
    values = pa.array(list(mapping.values()), pa.string())
    return pa.chunked_array([values.take(chunk) for chunk in index.chunks], pa.string())


def _replace(table: pa.Table, name: str, values: pa.ChunkedArray) -> pa.Table:
    i = table.schema.get_field_index(name)
    f = table.schema.field(i)
    if values.type != f.type:
        values = values.cast(f.type)  # back to large_string or dictionary<string> when the table had one
    return table.set_column(i, f, values)


# ---------------------------------------------------------------------------------------------
# parsing


def _zone(config: Mapping[str, Any], problems: list[str], override: str | None) -> tuple[str, ZoneInfo]:
    lake = config.get("lake")
    name = lake.get("timezone", "UTC") if isinstance(lake, Mapping) else "UTC"
    if override is not None:
        name = override
    expected = "expected an IANA time zone such as 'UTC' or 'Europe/Berlin'"
    if not isinstance(name, str) or not name:
        problems.append(f"[lake] timezone: got {name!r}, {expected}")
        return "UTC", ZoneInfo("UTC")
    try:
        return name, ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        problems.append(f"[lake] timezone: got {name!r}, {expected}")
        return "UTC", ZoneInfo("UTC")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _anchor(value: Any, tz: ZoneInfo) -> datetime | None:
    """A rolling budget's start: aware datetimes as they are; local date-times and dates in tz."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None and value.utcoffset() is not None else value.replace(tzinfo=tz)
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=tz)
    return None


def _budget(
    raw: Any, where: str, index: int, owner: tuple[str, str, str] | None, tz: ZoneInfo, problems: list[str]
) -> Budget | None:
    """Budget ``index`` of an owner; its problems appended; None when it has any (or no valid owner)."""
    if not isinstance(raw, Mapping):
        problems.append(
            f"{where}: got {raw!r}, expected a table like {{ max_limit = 100.0, reset_duration = \"1M\" }}"
        )
        return None
    before = len(problems)
    for key in raw:
        if key not in BUDGET_KEYS:
            problems.append(f"{where}.{key}: unknown key (known: {', '.join(BUDGET_KEYS)})")
    limit: Any = raw.get("max_limit")
    if "max_limit" not in raw:
        problems.append(f"{where}.max_limit: missing, expected a number > 0 (USD)")
    elif not _number(limit) or limit <= 0:
        problems.append(f"{where}.max_limit: got {limit!r}, expected a number > 0 (USD)")
    text: Any = raw.get("reset_duration")
    if "reset_duration" not in raw:
        problems.append(f"{where}.reset_duration: missing, expected {DURATION_GRAMMAR}")
    elif (problem := duration_problem(text)) is not None:
        problems.append(f"{where}.reset_duration: {problem}")
    aligned = raw.get("calendar_aligned", True)
    if not isinstance(aligned, bool):
        problems.append(f"{where}.calendar_aligned: got {aligned!r}, expected true or false")
        aligned = True
    anchor = None
    if "start" in raw:
        anchor = _anchor(raw["start"], tz)
        if anchor is None:
            problems.append(
                f"{where}.start: got {raw['start']!r}, expected an RFC 3339 time or a date such as "
                "'2026-01-05T09:00:00Z' or '2026-01-05'"
            )
        elif aligned:
            problems.append(
                f"{where}.start: got {raw['start']!r} on a calendar-aligned budget, expected "
                "calendar_aligned = false with it (a start only anchors a rolling budget)"
            )
    thresholds = raw.get("thresholds")
    if thresholds is not None:
        expected = "expected a list of fractions in (0, 10], ascending, such as [0.5, 0.8, 1.0]"
        if not isinstance(thresholds, list):
            problems.append(f"{where}.thresholds: got {thresholds!r}, {expected}")
        else:
            for i, x in enumerate(thresholds):
                if not _number(x) or not 0 < x <= MAX_THRESHOLD:
                    problems.append(f"{where}.thresholds[{i}]: got {x!r}, {expected}")
                elif i and _number(thresholds[i - 1]) and x <= thresholds[i - 1]:
                    problems.append(f"{where}.thresholds[{i}]: got {x!r} after {thresholds[i - 1]!r}, {expected}")
    name = raw.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        problems.append(f"{where}.name: got {name!r}, expected a non-empty string")
    if len(problems) > before or owner is None:
        return None
    duration = parse_duration(text)
    owner_type, owner_id, owner_name = owner
    return Budget(
        id=f"{owner_type}:{owner_id}:{index}",
        owner_type=owner_type,
        owner_id=owner_id,
        owner_name=owner_name,
        max_limit=float(limit),
        reset_duration=str(duration),
        period=Period(duration, tz, aligned, None if aligned else anchor),
        thresholds=None if thresholds is None else tuple(float(x) for x in thresholds),
        name=name,
    )


def parse_hierarchy(config: Mapping[str, Any], timezone: str | None = None) -> tuple[Hierarchy, list[str]]:
    """The budget hierarchy of a parsed config, and every problem found (one readable line each).
    With problems, the Hierarchy holds the good parts; callers raise on problems. ``timezone``,
    when given (e.g. SPENDLAKE_LAKE_TIMEZONE), replaces ``[lake] timezone``."""
    problems: list[str] = []
    tz_name, tz = _zone(config, problems, timezone)
    owners: dict[str, dict[str, tuple[str, str | None]]] = {t: {} for t in OWNER_TYPES}
    budgets: list[Budget] = []
    for owner_type in OWNER_TYPES:  # parents first, so references can be checked in one pass
        section = SECTIONS[owner_type]
        entries = config.get(section, [])
        if not isinstance(entries, list):
            problems.append(f"[[{section}]]: got {entries!r}, expected an array of tables ([[{section}]] entries)")
            continue
        for n, entry in enumerate(entries, start=1):
            where = f"[[{section}]] #{n}"
            if not isinstance(entry, Mapping):
                problems.append(f"{where}: got {entry!r}, expected a table")
                continue
            oid: Any = entry.get("id")
            good_id = isinstance(oid, str) and bool(oid.strip())
            if "id" not in entry:
                problems.append(f"{where} id: missing, expected a non-empty string")
            elif not good_id:
                problems.append(f"{where} id: got {oid!r}, expected a non-empty string")
            elif oid in owners[owner_type]:
                problems.append(f"{where} id: got {oid!r} again, expected a unique id")
                good_id = False
            if good_id:
                where = f"{where} ({oid})"
            for key in entry:
                if key not in OWNER_KEYS[owner_type]:
                    hint = " (did you mean budgets = [{ ... }]?)" if key == "budget" else ""
                    known = ", ".join(sorted(OWNER_KEYS[owner_type]))
                    problems.append(f"{where} {key}: unknown key{hint} (known: {known})")
            name = entry.get("name", oid)
            if "name" in entry and (not isinstance(name, str) or not name.strip()):
                problems.append(f"{where} name: got {name!r}, expected a non-empty string")
                name = oid
            parent: str | None = None
            if owner_type in PARENT_KEY:
                key, parent_type = PARENT_KEY[owner_type]
                value = entry.get(key)
                if value is not None:
                    if isinstance(value, str) and value in owners[parent_type]:
                        parent = value
                    else:
                        problems.append(
                            f"{where} {key}: got {value!r}, expected the id of a [[{SECTIONS[parent_type]}]] entry"
                        )
            owner = (owner_type, str(oid), str(name)) if good_id else None
            if good_id:
                owners[owner_type][oid] = (name, parent)
            raw_budgets = entry.get("budgets", [])
            if not isinstance(raw_budgets, list):
                problems.append(
                    f"{where} budgets: got {raw_budgets!r}, expected a list of tables like "
                    "[{ max_limit = 100.0, reset_duration = \"1M\" }]"
                )
                continue
            for i, raw in enumerate(raw_budgets):
                budget = _budget(raw, f"{where} budgets[{i}]", i, owner, tz, problems)
                if budget is not None:
                    budgets.append(budget)
    hierarchy = Hierarchy(
        timezone=tz_name,
        customers={k: name for k, (name, _) in owners["customer"].items()},
        teams=owners["team"],
        virtual_keys=owners["virtual_key"],
        budgets=tuple(budgets),
    )
    return hierarchy, problems
