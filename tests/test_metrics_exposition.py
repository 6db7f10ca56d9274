"""/metrics as Prometheus reads it: every family, parsed by prometheus-client's own text parser.

The exposition has two writers (aggregator/metrics.py): the families from the DuckDB state (and
the intake's counters) are written directly, the large ones from Arrow columns, and
prometheus-client's collectors (``process_*``, the pipeline health) are appended with
``generate_latest``. Here the combined text — rendered over a
real lake (``spendlake ingest``), rolled up with a budget hierarchy, an alert outbox, consumer
health and real intake counters, then fetched over HTTP — must parse with
``prometheus_client.parser.text_string_to_metric_families``: every family this module lists
(and no other) with its type, HELP, sample names and label names; no family twice; every line a
sample the parser kept; label values with quotes, backslashes and newlines read back as written;
the numbers those of the lake; ``promtool check metrics`` clean where promtool is installed. The
scrape caches (label sets, budget families) follow a state and a hierarchy that change. Last, a
real ``spendlake serve`` (intake onto its spool, no broker) serves the same families.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from conftest import lake_rows, spendlake, wait_for
from intake_env import intake_counters

LABELS = ("provider", "model", "team", "customer", "status")
PM = ("provider", "model")
BUDGET = ("budget_id", "owner_type", "owner_id", "owner_name", "reset_duration")
VK = ("virtual_key", "team", "customer")
# Every family /metrics writes: name as in `# TYPE` -> (type, HELP, label names of its samples).
# HELP None: prometheus-client's own text (process_*), only checked to be there.
FAMILIES: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    "spendlake_cost_usd_total": ("counter", "Spend in USD, from the lake (each event once)", LABELS),
    "spendlake_requests_total": ("counter", "LLM requests, from the lake (each event once)", LABELS),
    "spendlake_tokens_total": ("counter", "Tokens by type (input and output include their sub-kinds)",
                               (*PM, "token_type")),
    "spendlake_cost_part_usd_total": ("counter", "Spend in USD by cost part", (*PM, "part")),
    "spendlake_unpriced_requests_total": ("counter", "Requests of models with no price (cost unknown)", PM),
    "spendlake_request_cost_usd": ("histogram", "Cost of one request in USD (priced requests)", PM),
    "spendlake_virtual_key_cost_usd_total": ("counter", "Spend in USD per virtual key (keys with a budget, and the top N)",
                                             VK),
    "spendlake_virtual_key_requests_total": ("counter", "Requests per virtual key", VK),
    "spendlake_budget_usage_usd": ("gauge", "Spend in the budget's current period (descendants included)", BUDGET),
    "spendlake_budget_limit_usd": ("gauge", "The budget's limit", BUDGET),
    "spendlake_budget_utilization_ratio": ("gauge", "usage / limit", BUDGET),
    "spendlake_budget_reset_timestamp_seconds": ("gauge", "When the budget resets", BUDGET),
    "spendlake_budget_period_start_timestamp_seconds": ("gauge", "Start of the current period", BUDGET),
    "spendlake_budget_burn_rate_usd_per_hour": ("gauge", "Spend per hour over the last hour", BUDGET),
    "spendlake_budget_projected_exhaustion_timestamp_seconds": (
        "gauge", "When the limit is reached at the current burn rate (absent: not within a century)", BUDGET),
    "spendlake_events_total": ("counter", "Events that reached the lake, by result", ("result",)),
    "spendlake_alerts_total": ("counter", "Alerts fired, by kind and severity", ("kind", "severity")),
    "spendlake_alerts_sent_total": ("counter", "Alert deliveries by channel and result (delivered, failed for good)",
                                    ("channel", "result")),
    "spendlake_alerts_pending": ("gauge", "Alert deliveries waiting to be sent or retried", ("channel",)),
    "spendlake_alert_delivery_attempts_total": ("counter", "Send attempts, successful or not", ("channel",)),
    # pipeline health, through prometheus-client (the intake's counters after it are hand-written)
    "spendlake_consumer_lag_records": ("gauge", "Records not yet consumed", ("topic", "partition")),
    "spendlake_last_flush_timestamp_seconds": ("gauge", "Last batch landed in the lake", ()),
    "spendlake_rollup_last_update_timestamp_seconds": ("gauge", "Last successful rollup update", ()),
    "spendlake_rollup_failures_total": (
        "counter", "Failed rollup rounds (the update or the alert rules after it) since the process started", ()),
    "spendlake_intake_requests_total": ("counter", "Intake requests by endpoint and HTTP status", ("endpoint", "code")),
    "spendlake_intake_records_total": ("counter", "Records received by intake, accepted or rejected",
                                       ("endpoint", "result")),
    "spendlake_intake_rejected_total": ("counter", "Rejected records by the field at fault", ("endpoint", "reason")),
    "spendlake_intake_spans_skipped_total": ("counter", "OTLP spans without GenAI usage (not LLM calls)", ()),
    "spendlake_intake_received_bytes_total": ("counter", "Request body bytes as received (before gzip)", ("endpoint",)),
    # the process, through prometheus-client's process collector
    "process_cpu_seconds_total": ("counter", None, ()),
    "process_virtual_memory_bytes": ("gauge", None, ()),
    "process_resident_memory_bytes": ("gauge", None, ()),
    "process_start_time_seconds": ("gauge", None, ()),
    "process_open_fds": ("gauge", None, ()),
    "process_max_fds": ("gauge", None, ()),
}  # fmt: skip
HEALTH_ONLY = {n for n in FAMILIES if n.startswith(("spendlake_consumer", "spendlake_last_flush", "spendlake_rollup_",
                                                     "spendlake_intake_"))}  # fmt: skip
DETAILS = {"spendlake_budget_period_start_timestamp_seconds", "spendlake_budget_burn_rate_usd_per_hour",
           "spendlake_budget_projected_exhaustion_timestamp_seconds"}  # fmt: skip

ODD_NAME = 'Dana "the boss" \\ ops\nsecond line'  # a budget owner's name: every character the format escapes
ODD_TEAM = 'ops "west" \\ east\nfloor 2'  # a team as events carry it (no budget): the column writer's escaping

CONFIG = """
[[customers]]
id = "customer-acme"
name = "Acme Corp"
budgets = [{ max_limit = 1000.0, reset_duration = "1M" }]

[[teams]]
id = "team-eng"
name = "Engineering"
customer_id = "customer-acme"
budgets = [{ max_limit = 50.0, reset_duration = "1M" }]

[[virtual_keys]]
id = "vk-alice"
name = "Alice"
team_id = "team-eng"
budgets = [{ max_limit = LIMIT, reset_duration = "1M" }, { max_limit = 10.0, reset_duration = "1d" }]

[[virtual_keys]]
id = "vk-dana"
name = ODD_NAME
team_id = "team-eng"
budgets = [{ max_limit = 5.0, reset_duration = "1w" }]
"""


def config_text(limit: float = 40.0, name: str = ODD_NAME) -> str:
    return CONFIG.replace("LIMIT", repr(limit)).replace("ODD_NAME", json.dumps(name))


def recent_ms() -> int:
    """A moment in the last hour and in the current day (every budget period holds it)."""
    now = datetime.now(UTC)
    since_midnight = (now - now.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds()
    return int((now.timestamp() - min(120.0, since_midnight / 2)) * 1000)


def events(prefix: str, ts: int) -> list[dict[str, Any]]:
    return [
        {"event_id": f"{prefix}-alice-1", "provider": "openai", "model": "gpt-4o", "input_tokens": 800_000,
         "output_tokens": 20_000, "virtual_key": "vk-alice"},
        {"event_id": f"{prefix}-alice-2", "provider": "anthropic", "model": "claude-sonnet-4-5", "input_tokens": 1200,
         "cached_input_tokens": 1000, "cache_write_tokens": 100, "cache_write_1h_tokens": 50, "output_tokens": 300,
         "reasoning_tokens": 100, "virtual_key": "vk-alice", "status": "error"},
        {"event_id": f"{prefix}-dana", "provider": "openai", "model": "gpt-4o-mini", "input_tokens": 2000,
         "output_tokens": 500, "virtual_key": "vk-dana"},
        {"event_id": f"{prefix}-big", "provider": "openai", "model": "gpt-4o", "input_tokens": 3_000_000,
         "output_tokens": 1000, "virtual_key": "vk-big", "team": ODD_TEAM},  # no budget; the top key
        {"event_id": f"{prefix}-small", "provider": "openai", "model": "gpt-4o-mini", "input_tokens": 10,
         "output_tokens": 1, "virtual_key": "vk-small", "team": "team-other"},  # no budget, not in the top 1
        {"event_id": f"{prefix}-unpriced", "provider": "openai", "model": "gpt-unknown-preview", "input_tokens": 100,
         "output_tokens": 10, "virtual_key": "vk-alice"},
    ]  # fmt: skip


def ingest(work: Path, lake: Path, rows: list[dict[str, Any]], ts: int, bad_lines: int = 0) -> None:
    source = work / f"events-{time.monotonic_ns()}.jsonl"
    lines = [json.dumps({"timestamp": ts, **e}) for e in rows]
    lines += ['{"event_id": "bad", "timestamp": "yesterday"}'] * bad_lines
    source.write_text("\n".join(lines) + "\n")
    spendlake("ingest", "--source", str(source), "--lake", str(lake), "--quiet", check=True)


def load_hierarchy(work: Path, text: str) -> Any:
    from spendlake import settings

    path = work / f"spendlake-{time.monotonic_ns()}.toml"
    path.write_text(text)
    hierarchy = settings.load(str(path), env={}).hierarchy
    assert hierarchy is not None
    return hierarchy


def parse(text: str) -> dict[str, Any]:
    """The families by exposition name (a counter's `# TYPE` name keeps its `_total`)."""
    out: dict[str, Any] = {}
    for f in text_string_to_metric_families(text):
        name = f.name + "_total" if f.type == "counter" else f.name
        assert name not in out, f"family {name} twice"
        out[name] = f
    return out


def sample_names(name: str, kind: str) -> set[str]:
    if kind == "histogram":
        return {name + "_bucket", name + "_count", name + "_sum"}
    return {name}


def by_labels(family: Any, **match: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples
            if all(s.labels.get(k) == v for k, v in match.items())}  # fmt: skip


def value(family: Any, **match: str) -> float:
    (got,) = by_labels(family, **match).values()
    return got


def check_exposition(text: str, expected: set[str], empty: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Every family of ``expected`` and no other, each with its type, HELP, sample names and label
    names, and samples (those in ``empty`` may have none); no family twice; every line a comment or a sample the
    parser kept."""
    assert text.endswith("\n") and "\n\n" not in text
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert [n for n, k in Counter(types).items() if k > 1] == [], "a family written twice"
    families = parse(text)
    assert set(families) == expected, (sorted(set(families) - expected), sorted(expected - set(families)))
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert sum(len(f.samples) for f in families.values()) == len(lines)
    for name, family in families.items():
        kind, help_, labels = FAMILIES[name]
        assert family.type == kind, name
        assert family.documentation == help_ if help_ is not None else family.documentation.strip(), name
        assert family.samples or name in empty, f"{name}: no samples"
        for s in family.samples:
            assert isinstance(s, Sample) and s.name in sample_names(name, kind), (name, s.name)
            want = set(labels) | ({"le"} if s.name.endswith("_bucket") else set())
            assert set(s.labels) == want, (name, s)
            assert not math.isnan(s.value), (name, s)
    return families


# --- the renderer over a real lake and state ---------------------------------------------------


@dataclass
class State:
    work: Path
    lake: Path
    rollup: Any
    hierarchy: Any
    health: Any
    exporter: Any


def open_state(work: Path, ts: int) -> State:
    from aggregator.budgets import BudgetUsage
    from aggregator.metrics import Exporter, Health
    from aggregator.rollup import Rollup
    from alerting import outbox

    lake = work / "lake"
    ingest(work, lake, events("e", ts), ts, bad_lines=1)
    hierarchy = load_hierarchy(work, config_text())
    rollup = Rollup(lake, budget_hook=BudgetUsage(hierarchy))
    rollup.update()
    con = rollup.con
    outbox.schema(con)
    con.execute("""INSERT INTO alerts (key, kind, severity, title, created_at) VALUES
                   ('a1', 'budget', 'critical', 'Alice at 90%', now()), ('a2', 'expensive_request', 'warning', 'x', now())""")
    con.execute("""INSERT INTO deliveries (alert_key, channel, state, attempts, created_at) VALUES
                   ('a1', 'finops-slack', 'delivered', 1, now()), ('a2', 'finops-slack', 'failed', 3, now()),
                   ('a1', 'oncall', 'pending', 2, now())""")  # fmt: skip
    health = Health(last_flush_at=time.time() - 3, lag={("llm-usage", 0): 0, ("llm-usage", 1): 7},
                    rollup_at=time.time() - 1, rollup_failures=2)  # fmt: skip
    health.intake = intake_counters(work)
    exporter = Exporter(lambda: con.cursor(), hierarchy, health, top_virtual_keys=1, budget_details=True)
    return State(work, lake, rollup, hierarchy, health, exporter)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[State]:
    st = open_state(tmp_path_factory.mktemp("exposition"), recent_ms())
    try:
        yield st
    finally:
        st.rollup.close()


@pytest.fixture(scope="module")
def scraped(state: State) -> str:
    """/metrics over HTTP, as Prometheus gets it."""
    from aggregator.metrics import CONTENT_TYPE, serve_metrics

    server = serve_metrics(state.exporter, "127.0.0.1", 0)
    try:
        r = requests.get(f"http://127.0.0.1:{server.server_address[1]}/metrics", timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert r.status_code == 200 and r.headers["Content-Type"] == CONTENT_TYPE
    assert int(r.headers["Content-Length"]) == len(r.content)
    return r.content.decode()


def test_every_family_parses_with_its_type_help_and_labels(scraped: str) -> None:
    check_exposition(scraped, set(FAMILIES))


def test_the_numbers_are_the_lakes(state: State, scraped: str) -> None:
    f = parse(scraped)
    ((cost, n, unpriced, inp, cached, cw1h, reasoning),) = lake_rows(state.lake, """
        SELECT coalesce(sum(cost_usd), 0), count(*), count(*) FILTER (WHERE cost_source = 'unpriced'),
               sum(input_tokens), sum(cached_input_tokens), sum(cache_write_1h_tokens), sum(reasoning_tokens)
        FROM ev""")
    assert sum(s.value for s in f["spendlake_cost_usd_total"].samples) == pytest.approx(cost, rel=1e-12)
    assert sum(s.value for s in f["spendlake_requests_total"].samples) == n == 6
    assert value(f["spendlake_events_total"], result="landed") == n
    assert value(f["spendlake_events_total"], result="dead_letter") == 1
    assert value(f["spendlake_unpriced_requests_total"], model="gpt-unknown-preview") == unpriced == 1
    tokens = f["spendlake_tokens_total"]
    for token_type, want in (("input", inp), ("cached_input", cached), ("cache_write_1h", cw1h),
                             ("reasoning", reasoning)):  # fmt: skip
        assert sum(by_labels(tokens, token_type=token_type).values()) == want, token_type
    parts = sum(s.value for s in f["spendlake_cost_part_usd_total"].samples)
    assert parts == pytest.approx(cost, rel=1e-9)  # the parts add up to the cost
    # the histogram: buckets cumulative, +Inf = _count = priced requests, _sum = their cost
    h = f["spendlake_request_cost_usd"]
    for model in {s.labels["model"] for s in h.samples}:
        buckets = sorted((float(s.labels["le"]), s.value) for s in h.samples
                         if s.name.endswith("_bucket") and s.labels["model"] == model)  # fmt: skip
        assert [v for _, v in buckets] == sorted(v for _, v in buckets), model
        (count,) = [s.value for s in h.samples if s.name.endswith("_count") and s.labels["model"] == model]
        assert buckets[-1] == (math.inf, count)
    assert sum(s.value for s in h.samples if s.name.endswith("_count")) == n - unpriced
    assert sum(s.value for s in h.samples if s.name.endswith("_sum")) == pytest.approx(cost, rel=1e-12)


def test_label_values_read_back_as_written(scraped: str) -> None:
    f = parse(scraped)
    owners = {s.labels["owner_id"]: s.labels["owner_name"] for s in f["spendlake_budget_limit_usd"].samples}
    assert owners == {"customer-acme": "Acme Corp", "team-eng": "Engineering", "vk-alice": "Alice", "vk-dana": ODD_NAME}
    assert '\\"the boss\\" \\\\ ops\\nsecond line' in scraped  # escaped on the wire, one line per sample
    teams = {s.labels["team"] for s in f["spendlake_cost_usd_total"].samples}
    assert ODD_TEAM in teams
    assert {s.labels["virtual_key"]: s.labels["team"] for s in f["spendlake_virtual_key_cost_usd_total"].samples}[
        "vk-big"] == ODD_TEAM


def test_virtual_keys_budgets_and_health(state: State, scraped: str) -> None:
    f = parse(scraped)
    # keys with a budget, and the top 1 by spend (vk-big); not vk-small
    keys = {s.labels["virtual_key"] for s in f["spendlake_virtual_key_cost_usd_total"].samples}
    assert keys == {"vk-alice", "vk-dana", "vk-big"}
    assert {s.labels["virtual_key"] for s in f["spendlake_virtual_key_requests_total"].samples} == keys
    assert value(f["spendlake_virtual_key_requests_total"], virtual_key="vk-alice") == 3
    # one series per budget: Alice has two
    limits = {s.labels["budget_id"]: s.value for s in f["spendlake_budget_limit_usd"].samples}
    assert limits == {b.id: b.max_limit for b in state.hierarchy.budgets}
    assert len(limits) == 5 and sum(1 for b in limits if b.startswith("virtual_key:vk-alice:")) == 2
    usage = {s.labels["budget_id"]: s.value for s in f["spendlake_budget_usage_usd"].samples}
    ratio = {s.labels["budget_id"]: s.value for s in f["spendlake_budget_utilization_ratio"].samples}
    for b, limit in limits.items():
        assert ratio[b] == pytest.approx(usage[b] / limit, rel=1e-9), b
    ((alice_cost,),) = lake_rows(state.lake, "select sum(cost_usd) from ev where virtual_key = 'vk-alice'")
    assert usage["virtual_key:vk-alice:0"] == pytest.approx(alice_cost, abs=1e-9)
    now = time.time()
    for s in f["spendlake_budget_reset_timestamp_seconds"].samples:
        assert now < s.value < now + 366 * 86400
    for s in f["spendlake_budget_period_start_timestamp_seconds"].samples:
        assert now - 366 * 86400 < s.value <= now
    # pipeline health (prometheus-client)
    assert by_labels(f["spendlake_consumer_lag_records"]) == {
        (("partition", "0"), ("topic", "llm-usage")): 0.0, (("partition", "1"), ("topic", "llm-usage")): 7.0}
    assert value(f["spendlake_last_flush_timestamp_seconds"]) == state.health.last_flush_at
    assert value(f["spendlake_rollup_last_update_timestamp_seconds"]) == state.health.rollup_at
    assert value(f["spendlake_rollup_failures_total"]) == 2
    assert value(f["spendlake_intake_records_total"], endpoint="/v1/events", result="rejected") == 1
    assert value(f["spendlake_intake_requests_total"], endpoint="/v1/events", code="401") == 1
    assert value(f["spendlake_intake_spans_skipped_total"]) == 1
    # the process (prometheus-client's process collector)
    assert now - 86400 < value(f["process_start_time_seconds"]) <= now
    assert value(f["process_resident_memory_bytes"]) > 10_000_000
    assert 0 < value(f["process_open_fds"]) < value(f["process_max_fds"])
    assert value(f["process_cpu_seconds_total"]) > 0
    # alerting's outbox (from the state's tables)
    assert value(f["spendlake_alerts_sent_total"], channel="finops-slack", result="failed") == 1
    assert value(f["spendlake_alerts_pending"], channel="oncall") == 1
    assert value(f["spendlake_alert_delivery_attempts_total"], channel="finops-slack") == 4


def test_promtool_finds_nothing_to_fix(scraped: str) -> None:
    binary = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(binary).exists():
        if __import__("os").environ.get("CI"):
            pytest.fail("promtool is not installed (apt-get install prometheus)")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    r = subprocess.run([binary, "check", "metrics"], input=scraped.encode(), capture_output=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")


def test_without_health_or_budgets_the_families_are_still_valid(state: State) -> None:
    """An exporter over the same state with no service health and no hierarchy (`spendlake`
    tools, the bench): the lake's families and process_* only."""
    from aggregator.metrics import Exporter

    exporter = Exporter(lambda: state.rollup.con.cursor())
    budget = {n for n in FAMILIES if n.startswith("spendlake_budget_")}
    check_exposition(exporter.render().decode(), set(FAMILIES) - HEALTH_ONLY - budget)
    plain = Exporter(lambda: state.rollup.con.cursor(), state.hierarchy, top_virtual_keys=0)
    families = check_exposition(plain.render().decode(), set(FAMILIES) - HEALTH_ONLY - DETAILS)
    keys = {s.labels["virtual_key"] for s in families["spendlake_virtual_key_cost_usd_total"].samples}
    assert keys == {"vk-alice", "vk-dana"}  # top 0: the budgeted keys only


def test_caches_follow_the_state_and_the_hierarchy(tmp_path: Path) -> None:
    """The label sets and budget families kept between scrapes are rebuilt when the state or
    the hierarchy changes: new events (a new label set, more spend), then a new config (another
    limit, another owner name)."""
    ts = recent_ms()
    st = open_state(tmp_path, ts)
    try:
        first = st.exporter.render()
        assert check_exposition(first.decode(), set(FAMILIES))
        again = parse(st.exporter.render().decode())
        before = parse(first.decode())
        for name in ("spendlake_cost_usd_total", "spendlake_virtual_key_cost_usd_total", "spendlake_budget_limit_usd",
                     "spendlake_budget_usage_usd", "spendlake_budget_reset_timestamp_seconds"):  # fmt: skip
            assert by_labels(again[name]) == by_labels(before[name]), name

        more = [{**e, "team": "team-new"} if e["virtual_key"] == "vk-small" else e for e in events("m", ts)]
        ingest(tmp_path, st.lake, more, ts)
        st.rollup.update()
        after = parse(st.exporter.render().decode())
        assert "team-new" in {s.labels["team"] for s in after["spendlake_cost_usd_total"].samples}
        assert sum(s.value for s in after["spendlake_requests_total"].samples) == 12
        assert value(after["spendlake_virtual_key_requests_total"], virtual_key="vk-alice") == 6
        usage = by_labels(after["spendlake_budget_usage_usd"], budget_id="virtual_key:vk-alice:0")
        old_usage = by_labels(before["spendlake_budget_usage_usd"], budget_id="virtual_key:vk-alice:0")
        assert list(usage.values())[0] == pytest.approx(2 * list(old_usage.values())[0], rel=1e-9)

        st.exporter.hierarchy = load_hierarchy(tmp_path, config_text(limit=400.0, name="Dana"))
        changed = parse(st.exporter.render().decode())
        assert value(changed["spendlake_budget_limit_usd"], budget_id="virtual_key:vk-alice:0") == 400.0
        assert value(changed["spendlake_budget_limit_usd"], budget_id="virtual_key:vk-dana:0", owner_name="Dana") == 5.0
        assert ODD_NAME not in {s.labels["owner_name"] for s in changed["spendlake_budget_usage_usd"].samples}
    finally:
        st.rollup.close()


def test_columns_are_written_as_single_values_are() -> None:
    """The column writers agree with the one-value ones: label escaping byte for byte, and
    numbers that read back as the same double (NaN and the infinities spelt as the format says)."""
    from aggregator.metrics import _esc, _escaped, _number_column

    odd = ['plain', 'q"uote', "back\\slash", "new\nline", '\\"\n', "", "ünïcødé ✓", None]
    assert _escaped(pa.array(odd, pa.string())).to_pylist() == [_esc(v) for v in odd]
    numbers = [0.0, -0.0, 1.0, 0.1, 1e-7, 3e-5, 123456789.123, 1764331200.123, 1.2345678901234568e16, 5e-324,
               1.7976931348623157e308, math.nan, math.inf, -math.inf]  # fmt: skip
    text = _number_column(pa.array(numbers, pa.float64())).to_pylist()
    assert text[-3:] == ["NaN", "+Inf", "-Inf"]
    for want, got in zip(numbers, text):
        back = float(got)
        assert back == want or (math.isnan(want) and math.isnan(back)), (want, got)
        assert str(math.copysign(1, back)) == str(math.copysign(1, want)), (want, got)


# --- a real `spendlake serve` --------------------------------------------------------------------


def test_a_running_serve_exposes_every_family(tmp_path: Path) -> None:
    """`spendlake serve` with its HTTP intake onto the spool (no broker): after a few events the
    /metrics it serves parses whole — the lake's families, the budgets, the pipeline health
    (consumer lag empty: no Kafka) and the process'."""
    from intake_env import auth, start_serve

    lake = tmp_path / "lake"
    serve = start_serve(tmp_path, lake, extra=config_text())
    ts = recent_ms()
    body = json.dumps([{"timestamp": ts, **e} for e in events("s", ts)]).encode()
    r = requests.post(serve.url + "/v1/events", data=body, headers=auth(), timeout=30)
    assert r.status_code == 200, r.text
    url = f"http://127.0.0.1:{serve.metrics_port}/metrics"

    def landed() -> bool:
        text = requests.get(url, timeout=30).text
        return 'spendlake_events_total{result="landed"} 6.0' in text

    wait_for(landed, 60, "serve to land and roll up the six events")
    r = requests.get(url, timeout=30)
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    # alerts depend on alerting's rules (the unpriced model raises one), nothing is consumed
    # from Kafka, no record was rejected: those families may be written without samples
    empty = frozenset({"spendlake_alerts_total", "spendlake_alerts_sent_total", "spendlake_alerts_pending",
                       "spendlake_alert_delivery_attempts_total", "spendlake_consumer_lag_records",
                       "spendlake_intake_rejected_total"})  # fmt: skip
    families = check_exposition(r.text, set(FAMILIES) - DETAILS, empty)
    assert families["spendlake_consumer_lag_records"].samples == []
    now = time.time()
    assert now - 300 < value(families["process_start_time_seconds"]) <= now
    assert now - 120 < value(families["spendlake_last_flush_timestamp_seconds"]) <= now
    assert now - 120 < value(families["spendlake_rollup_last_update_timestamp_seconds"]) <= now
    assert value(families["spendlake_rollup_failures_total"]) == 0
    assert value(families["spendlake_intake_records_total"], endpoint="/v1/events", result="accepted") == 6
    assert sum(s.value for s in families["spendlake_requests_total"].samples) == 6
    serve.proc.terminate()
    assert serve.proc.wait(60) == 0
