"""docs/ kept honest: the examples run, and the configuration reference matches the code.

1. Every ```toml block of docs/config.md and docs/operations.md loads with `settings.load` (and
   its channels' secrets resolve once the variables it names are set).
2. Every ```sql recipe of docs/sql-cookbook.md runs with `spendlake query` (exit 0, JSON out)
   against a lake built by `spendlake ingest --source`; a recipe that does not depend on today's
   date must return rows.
3. The ```json examples of docs/events.md: the canonical event validates against
   ingest/event.schema.json, and every example lands in a lake (no dead letter) through the
   adapter its `<!-- input_format: ... -->` marker names.
4. The key tables of docs/config.md name only keys the code knows, and every key the code knows
   is in them (types and defaults of the scalar keys and of [alerts] checked too).
Plus: the retention procedure of docs/operations.md works on a real lake, every ```python block
parses, and every SPENDLAKE_* variable the docs name is an override or a secret they configure.
"""

from __future__ import annotations

import ast
import json
import re
import time
import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest

from alerting import config as alerting_config
from aggregator import hierarchy
from conftest import ROOT, dead_rows, event, lake_rows, spendlake
from pricing import overrides
from spendlake import settings

DOCS = ROOT / "docs"
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
MARKER = re.compile(r"<!--\s*input_format:\s*([\w.]+)\s*-->\s*$")


def read(name: str) -> str:
    path = DOCS / name
    assert path.is_file(), f"docs/{name} is missing"
    return path.read_text(encoding="utf-8")


def blocks(name: str, lang: str) -> list[tuple[int, str | None, str]]:
    """(line number, marker on the line before, code) of every fenced block of `lang`."""
    text = read(name)
    out = []
    for m in FENCE.finditer(text):
        if m.group("lang") != lang:
            continue
        line = text.count("\n", 0, m.start()) + 1
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        indent = m.group("indent")
        code = "".join(row[len(indent):] if row.startswith(indent) else row
                       for row in m.group("body").splitlines(keepends=True))  # fmt: skip
        out.append((line, marker.group(1) if marker else None, code))
    return out


def params(name: str, lang: str) -> list[Any]:
    return [pytest.param(code, id=f"{name}:{line}") for line, _, code in blocks(name, lang)]


# --- 1. TOML examples --------------------------------------------------------------------------

TOML_BLOCKS = params("config.md", "toml") + params("operations.md", "toml")
ENV_KEY = re.compile(r"\b\w+_env\s*=\s*\"([^\"]+)\"")


def env_names(code: str) -> set[str]:
    """The variables a config names for its secrets (`url_env = "..."`, `sasl_password_env`, ...)."""
    return set(ENV_KEY.findall(code))


def test_the_docs_have_toml_examples() -> None:
    assert len(blocks("config.md", "toml")) >= 4
    assert len(blocks("operations.md", "toml")) >= 1


@pytest.mark.parametrize("code", TOML_BLOCKS)
def test_toml_example_loads(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "spendlake.toml"
    path.write_text(code, encoding="utf-8")
    dummy = {name: "https://example.invalid/dummy-secret" for name in env_names(code)}
    try:
        cfg = settings.load(str(path), env=dummy)  # only these variables: no SPENDLAKE_* of the caller
    except settings.ConfigError as exc:
        pytest.fail(f"the example does not load:\n{exc}\n---\n{code}")
    for name, value in dummy.items():
        monkeypatch.setenv(name, value)
    assert alerting_config.check_secrets(cfg.alerting) == []


# --- 2. SQL cookbook ---------------------------------------------------------------------------

RECIPES = params("sql-cookbook.md", "sql")
DATED = re.compile(r"current_date|now\(\)|current_timestamp", re.I)
HOUR_MS = 3_600_000


def cookbook_events(now_ms: int) -> list[bytes]:
    """Two weeks up to now: three models and an unknown one, emitter costs, errors, tags,
    customers; plus a producer's resend and a bad record."""
    lines = []
    for i in range(300):
        over: dict[str, Any] = {
            "timestamp": now_ms - 60_000 - (i * 67 * 60_000) % (14 * 24 * HOUR_MS),
            "customer": "customer-acme" if i % 3 else "customer-globex",
            "status": "error" if i % 19 == 0 else "success",
        }
        if i % 23 == 0:
            over["model"] = "no-such-model-9000"  # unpriced
        if i % 5 == 0:
            over["cost_usd"] = 0.004  # the emitter's own figure
        if i % 13 == 0:
            over["tags"] = {"feature": "search"}
        lines.append(orjson.dumps(event(i, **over)))
    lines.append(lines[7])  # a resend of the same event
    lines.append(b'{"event_id": "bad-1", "timestamp": 1764331200000, "provider": "openai", "model": "gpt-4o", "input_tokens": -1}')
    return lines


BUDGETS_TOML = """
[[teams]]
id = "team-{n}"
budgets = [{{ max_limit = 0.01, reset_duration = "1Y", calendar_aligned = false, start = "{start}" }}]
"""


@pytest.fixture(scope="module")
def cookbook_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cookbook")
    lake = root / "lake"
    src = root / "events.jsonl"
    src.write_bytes(b"\n".join(cookbook_events(int(time.time() * 1000))) + b"\n")
    spendlake("ingest", "--source", str(src), "--lake", str(lake), "--catalog", "builtin", "--quiet", check=True)
    # rolling budgets that began 30 days ago: every team is far over its limit, whatever today is
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 30 * 86400))
    cfg = root / "budgets.toml"
    cfg.write_text("".join(BUDGETS_TOML.format(n=n, start=start) for n in range(5)), encoding="utf-8")
    spendlake("rollup", "--lake", str(lake), "--config", str(cfg), check=True)
    assert len(dead_rows(lake)) == 1
    return lake


def test_the_cookbook_has_10_to_15_recipes() -> None:
    assert 10 <= len(RECIPES) <= 15


@pytest.mark.parametrize("sql", RECIPES)
def test_recipe_runs(sql: str, cookbook_lake: Path) -> None:
    r = spendlake("query", "--lake", str(cookbook_lake), "--format", "json", sql, timeout=120)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr.decode()}\n---\n{sql}"
    rows = json.loads(r.stdout)
    assert isinstance(rows, list)
    if not DATED.search(sql):  # independent of today's date: the lake has what it asks for
        assert rows, f"no rows:\n{sql}"


def test_a_broken_recipe_would_fail(cookbook_lake: Path) -> None:
    """The check above can fail: a wrong column is exit 2."""
    r = spendlake("query", "--lake", str(cookbook_lake), "--format", "json", "SELECT nosuch FROM request_log")
    assert r.returncode == 2


# --- 3. events.md examples ---------------------------------------------------------------------


def test_event_examples_validate_and_land(tmp_path: Path) -> None:
    import jsonschema

    examples = blocks("events.md", "json")
    assert examples, "docs/events.md has no ```json example"
    unmarked = [line for line, marker, _ in examples if marker is None]
    assert not unmarked, f"```json blocks without an <!-- input_format: ... --> marker at lines {unmarked}"
    assert any(marker == "spendlake.v1" for _, marker, _ in examples), "no canonical event example"

    schema = json.loads((ROOT / "ingest" / "event.schema.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    expected: dict[str, str] = {}
    lines = []
    for line, marker, code in examples:
        obj = json.loads(code)
        if marker == "spendlake.v1":
            errors = [e.message for e in validator.iter_errors(obj)]
            assert not errors, f"events.md:{line} does not match the schema: {errors}"
            # a full example: every field of the contract except the unit counts
            missing = set(schema["properties"]) - set(obj) - {"images", "duration_seconds"}
            assert not missing, f"events.md:{line} leaves out {sorted(missing)}"
        event_id = obj.get("event_id") or obj.get("id")
        assert event_id and event_id not in expected
        expected[event_id] = marker  # type: ignore[assignment]
        lines.append(orjson.dumps(obj))
    src = tmp_path / "examples.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    lake = tmp_path / "lake"
    spendlake("ingest", "--source", str(src), "--lake", str(lake), "--catalog", "builtin", "--quiet", check=True)
    assert dead_rows(lake) == []
    landed = dict(lake_rows(lake, "select event_id, input_format from ev"))
    assert landed == expected
    priced = lake_rows(lake, "select event_id from ev where cost_usd is null")
    assert priced == [], f"examples without a price: {priced}"


# --- 4. the configuration reference against the code ------------------------------------------

TYPE_NAMES = {str: "string", int: "integer", float: "float", bool: "boolean"}


def tables(name: str) -> list[tuple[list[str], list[list[str]]]]:
    """(header cells, rows) of every Markdown table."""
    out: list[tuple[list[str], list[list[str]]]] = []
    current: list[list[str]] = []
    for line in read(name).splitlines() + [""]:
        if line.startswith("|"):
            current.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if len(current) >= 2 and set("".join(current[1])) <= set("-: "):
            out.append((current[0], current[2:]))
        current = []
    return out


def plain(cell: str) -> str:
    return cell.replace("`", "").strip()


def literal(cell: str) -> Any:
    """The first `...` of a cell, read as a TOML value."""
    m = re.search(r"`([^`]+)`", cell)
    assert m, f"no `literal` in {cell!r}"
    return tomllib.loads(f"v = {m.group(1)}")["v"]


def known_keys() -> dict[str, set[str]]:
    """Scope of a key table ("[kafka]", "[[channels]]", "budget", ...) → the keys the code accepts."""
    keys: dict[str, set[str]] = {}
    for section, key in settings.SCALARS:
        keys.setdefault(f"[{section}]", set()).add(key)
    keys["[alerts]"] = set(alerting_config._ALERT_KEYS)
    keys["[[channels]]"] = set(alerting_config._COMMON_KEYS).union(*alerting_config._CHANNEL_KEYS.values())
    _, problems = alerting_config.parse_alerting({"reports": [{"no-such-key": 1}]})
    found = [re.search(r"unknown key \(known: ([^)]*)\)", p) for p in problems]
    keys["[[reports]]"] = {k.strip() for m in found if m for k in m.group(1).split(",")}
    assert keys["[[reports]]"], problems
    for owner_type, section in hierarchy.SECTIONS.items():
        keys[f"[[{section}]]"] = set(hierarchy.OWNER_KEYS[owner_type])
    keys["budget"] = set(hierarchy.BUDGET_KEYS)
    keys["[[pricing.overrides]]"] = set(overrides.KEYS)
    return keys


def documented() -> dict[str, list[list[str]]]:
    """Scope → rows of its key table in docs/config.md (the header's first cell is "<scope> key")."""
    out: dict[str, list[list[str]]] = {}
    for header, rows in tables("config.md"):
        first = plain(header[0])
        if not first.endswith(" key"):
            continue
        scope = first[: -len(" key")].strip()
        assert scope not in out, f"two tables for {scope}"
        out[scope] = rows
    return out


def test_every_config_table_names_only_known_keys_and_all_of_them() -> None:
    known, docs = known_keys(), documented()
    assert set(docs) == set(known), f"tables for unknown scopes {set(docs) - set(known)}, missing {set(known) - set(docs)}"
    optional = {f"[{s}]": {k} for s, k in settings.TABLES}  # [pricing] overrides: a link, not required
    for scope, rows in docs.items():
        keys = [plain(r[0]) for r in rows]
        assert len(keys) == len(set(keys)), f"{scope}: a key listed twice"
        unknown = set(keys) - known[scope] - optional.get(scope, set())
        assert not unknown, f"docs/config.md documents {scope} keys the code does not know: {sorted(unknown)}"
        missing = known[scope] - set(keys)
        assert not missing, f"docs/config.md leaves out {scope} keys: {sorted(missing)}"


def test_scalar_types_and_defaults_match_settings() -> None:
    docs = documented()
    for (section, key), (typ, default) in settings.SCALARS.items():
        row = next(r for r in docs[f"[{section}]"] if plain(r[0]) == key)
        assert row[1] == TYPE_NAMES[typ], f"[{section}] {key}: documented as {row[1]!r}, is {TYPE_NAMES[typ]}"
        value = literal(row[2])
        assert type(value) is typ and value == default, f"[{section}] {key}: documented default {row[2]}, is {default!r}"


def test_alert_defaults_match_the_rules() -> None:
    defaults = alerting_config.Rules()
    for row in documented()["[alerts]"]:
        key = plain(row[0])
        rules, problems = alerting_config.parse_alerting({"alerts": {key: literal(row[2])}})
        assert not problems, problems
        attr = alerting_config._ALERT_KEYS[key][0]
        assert getattr(rules.rules, attr) == getattr(defaults, attr), f"[alerts] {key}: documented default {row[2]}"


def test_channel_keys_apply_to_the_documented_types() -> None:
    types = alerting_config.CHANNEL_TYPES
    for row in documented()["[[channels]]"]:
        key, cell = plain(row[0]), plain(row[1])
        said = set(types) if cell == "all" else {t.strip() for t in cell.split(",")}
        accepting = {t for t in types if key in alerting_config._COMMON_KEYS | alerting_config._CHANNEL_KEYS[t]}
        assert said == accepting, f"[[channels]] {key}: documented for {sorted(said)}, accepted by {sorted(accepting)}"


def test_named_environment_variables_exist() -> None:
    """A SPENDLAKE_* name in the docs is a scalar override or a secret variable a TOML example names."""
    overrides_ = {f"SPENDLAKE_{s.upper()}_{k.upper()}" for s, k in settings.SCALARS}
    secrets = set().union(*(env_names(p.values[0]) for p in TOML_BLOCKS))
    for name in ("config.md", "operations.md"):
        for var in set(re.findall(r"\bSPENDLAKE_[A-Z0-9_]+\b", read(name))):
            assert var in overrides_ or var in secrets, f"docs/{name} names {var}: neither an override nor a configured secret"


# --- operations.md: the retention procedure, and the code blocks parse -------------------------


def test_python_blocks_parse() -> None:
    found = 0
    for name in ("events.md", "operations.md", "config.md", "sql-cookbook.md"):
        for line, _, code in blocks(name, "python"):
            found += 1
            try:
                ast.parse(code)
            except SyntaxError as exc:
                pytest.fail(f"docs/{name}:{line}: {exc}")
    assert found >= 2


def test_retention_procedure(tmp_path: Path) -> None:
    """The documented retention command, as written in operations.md: the old day's files go,
    ingest starts again on the trimmed lake, and the rollups keep the deleted day."""
    lake = tmp_path / "lake"
    old = [orjson.dumps(event(i, timestamp=1763640000000 + i * 1000)) for i in range(20)]  # 2025-11-20
    new = [orjson.dumps(event(i)) for i in range(20, 40)]  # 2025-11-28
    src = tmp_path / "a.jsonl"
    src.write_bytes(b"\n".join(old + new) + b"\n")
    spendlake("ingest", "--source", str(src), "--lake", str(lake), "--catalog", "builtin", "--quiet", check=True)
    spendlake("rollup", "--lake", str(lake), check=True)
    assert (lake / "events" / "date=2025-11-20").is_dir()

    (command,) = [line for _, _, code in blocks("operations.md", "bash") for line in code.splitlines()
                  if line.startswith("spendlake retention ")]  # fmt: skip
    args = command.split("#")[0].split()[1:]
    args[args.index("--before") + 1] = "2025-11-25"
    args[args.index("--config"):args.index("--config") + 2] = ["--lake", str(lake)]
    spendlake(*args, check=True)
    assert not (lake / "events" / "date=2025-11-20").exists()

    more = tmp_path / "b.jsonl"
    more.write_bytes(orjson.dumps(event(99)) + b"\n")
    spendlake("ingest", "--source", str(more), "--lake", str(lake), "--catalog", "builtin", "--quiet", check=True)
    r = spendlake("query", "--lake", str(lake), "--format", "json",
                  "SELECT day::VARCHAR AS day, sum(requests) AS requests FROM daily_cost_by_model GROUP BY 1 ORDER BY 1",
                  check=True)  # fmt: skip
    assert json.loads(r.stdout) == [{"day": "2025-11-20", "requests": 20}, {"day": "2025-11-28", "requests": 21}]
