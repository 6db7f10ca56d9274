"""With the LiteLLM catalog loaded, spendlake bills what LiteLLM's own formula bills.

The reference is ``litellm_formula.py``: an independent scalar restatement of LiteLLM's
published formula working on the raw JSON entries (spendlake's engine never sees it). Every case
is (provider = the entry's ``litellm_provider``, model = the entry's key, a usage shape), priced
with the entry LiteLLM's own lookup would pick, under spendlake's missing-price rule
(``fill_missing=True``: a missing cache price bills at input, a missing input or output price
makes the row unpriced instead of $0).

Entries left out, and why (``skip_reason``): non-token modes; aliases (``alias_of``: how LiteLLM
expands them is not something this oracle restates); lemonade (LiteLLM bills it $0 whatever the
file says); per-second prices (the Azure path bills those first); range tables on a provider
LiteLLM reaches through its catch-all branch without a flat price (it would bill per second
there); Azure's model router (a flat routing fee on top); keys LiteLLM's lookup never reaches
(``perplexity/perplexity/...``: it collapses a repeated provider prefix first). perplexity,
fireworks_ai, databricks (and cerebras, see RESTRICTED) have calculators of their own that
ignore cache prices and tiers, which spendlake does not model, so they get only the shapes where
their numbers and the generic formula's coincide: no cache tokens (batch aside: the batch rule
is the same for every provider), no tier.

Every case carries the timestamp TIMESTAMP, at which no ``off_peak_pricing`` window is open.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest

from conftest import litellm_catalog_path, pricing_schema, spendlake
from litellm_formula import (
    DISPATCHED,
    OWN_CALCULATOR,
    Usage,
    litellm_cost,
    price,
    range_tier,
    rates,
    resolve_key,
    routed_provider,
)
from pricing import Catalog, price_table, split_model

# A Wednesday at 02:00 UTC: peak time in every off_peak_pricing block of the file, so LiteLLM
# bills its standard prices (checked by test_case_time_is_peak_for_every_off_peak_entry).
TIMESTAMP = "2025-03-05T02:00:00Z"
MODES = {"chat", "completion", "responses", "embedding"}
REL_TOL = 1e-9


def litellm_path() -> Path:
    return litellm_catalog_path()


@functools.cache
def _raw(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text("utf-8"))


def raw() -> dict[str, Any]:
    return _raw(litellm_path())


@functools.cache
def _spendlake_catalog(path: Path) -> Catalog:
    return Catalog.from_litellm(path)[0]


# ---- which entries, which shapes ----------------------------------------------------------------


def skip_reason(key: str, entry: Any) -> str | None:
    """Why an entry is not compared (None: it is)."""
    if not isinstance(entry, dict) or key == "sample_spec":
        return "not a model entry"
    if "alias_of" in entry:
        return "alias"
    if entry.get("mode") not in MODES:
        return "not a token-priced mode"
    provider = entry.get("litellm_provider")
    if not isinstance(provider, str):
        return "no litellm_provider"
    routed = routed_provider(provider)
    if routed == "lemonade":
        return f"lemonade: {OWN_CALCULATOR['lemonade']}"
    tiered = isinstance(entry.get("tiered_pricing"), list)
    if price(entry, "input_cost_per_token") is None and price(entry, "output_cost_per_token") is None:
        if not tiered:
            return "no per-token price"
        if routed not in DISPATCHED:
            return "range table only, on LiteLLM's catch-all branch (billed per second there)"
    if any(price(entry, k) is not None for k in ("input_cost_per_second", "output_cost_per_second")):
        return "priced per second"
    if "model-router" in key or "model_router" in key:
        return "Azure model router: flat routing fee"
    return None


def thresholds(entry: dict[str, Any]) -> list[int]:
    """The entry's long-context thresholds in tokens (plain keys only, not ``..._priority``)."""
    found = set()
    for k in entry:
        m = re.fullmatch(r"input_cost_per_token_above_(\d+)(k?)_tokens", k)
        if m and price(entry, k) is not None:
            found.add(int(m.group(1)) * (1000 if m.group(2) else 1))
    return sorted(found)


# Shapes on which a provider's own calculator and the generic formula give the same number.
SAME_AS_GENERIC = {"plain", "input_only", "reasoning", "batch", "batch_mixed"}
# Providers limited to those shapes: OWN_CALCULATOR, and cerebras, which the newest LiteLLM
# names among the calculators that bypass the generic formula (utils.py,
# get_token_type_cost_breakdown) in a version whose source we could not read.
RESTRICTED = {*OWN_CALCULATOR, "cerebras"}


def shapes(entry: dict[str, Any]) -> list[tuple[str, Usage]]:
    """The usage shapes that apply to an entry: (shape name, usage)."""
    if routed_provider(entry["litellm_provider"]) in RESTRICTED:
        return [(name, u) for name, u in _shapes(entry) if name in SAME_AS_GENERIC]
    return _shapes(entry)


def _shapes(entry: dict[str, Any]) -> list[tuple[str, Usage]]:
    if entry.get("mode") == "embedding":
        out = [("plain", Usage(1234)), ("batch", Usage(10_000, batch=True))]
    else:
        out = [
            ("plain", Usage(1234, 567)),
            ("input_only", Usage(4321)),
            ("cache_read", Usage(5000, 200, cached_input_tokens=3000)),
            ("cache_write_5m", Usage(6000, 300, cache_write_tokens=2500)),
            ("cache_write_1h", Usage(6000, 300, cache_write_tokens=2500, cache_write_1h_tokens=2500)),
            ("reasoning", Usage(800, 3000, reasoning_tokens=2400)),
            ("mixed", Usage(9000, 700, 1000, 3000, 1200, 500)),
            ("batch", Usage(10_000, 1000, batch=True)),
            ("batch_mixed", Usage(10_000, 1000, 4000, reasoning_tokens=300, batch=True)),
        ]
    chat = entry.get("mode") != "embedding"
    for n in thresholds(entry):  # cached tokens count toward the threshold
        out.append((f"threshold_at:{n}", Usage(n, 1000 * chat, cached_input_tokens=n // 4)))
        out.append((f"threshold_above:{n}", Usage(n + 1, 1000 * chat, cached_input_tokens=n // 4)))
        if chat:
            out.append((f"threshold_mixed:{n}", Usage(n + 1, 2000, n // 4, n // 8, n // 16, 500)))
            out.append((f"threshold_batch:{n}", Usage(n + 1, 1000, n // 4, batch=True)))
    tiers = entry.get("tiered_pricing")
    if isinstance(tiers, list):
        for tier in tiers:
            end = int(tier.get("range", [0, 0])[-1])
            out.append((f"range_at_end:{end}", Usage(end, 800, cached_input_tokens=end // 5)))
            out.append((f"range_above_end:{end}", Usage(end + 1, 800, cached_input_tokens=end // 5)))
            out.append((f"range_mixed:{end}", Usage(end + 1, 1500, end // 5, end // 10, end // 20, 700)))
    return out


def family(shape: str) -> str:
    return shape.split(":")[0]


def expected(catalog: dict[str, Any], provider: str, model: str, usage: Usage) -> tuple[float | None, str]:
    """LiteLLM's figure under spendlake's missing-price rule, and the key LiteLLM prices with."""
    key = resolve_key(catalog, provider, model)
    assert key is not None, f"LiteLLM would not find {provider}/{model}"
    cost = litellm_cost(catalog[key], usage, provider, fill_missing=True)
    fee = price(catalog[key], "input_cost_per_request")
    if cost is not None and fee is not None:
        # spendlake's one addition to LiteLLM's token formula: the catalog's per-request price
        # (Perplexity's online models: $5 per 1,000 requests), which LiteLLM's token
        # calculators leave out.
        cost += fee
    return cost, key


def lookup_problem(catalog: dict[str, Any], provider: str, model: str) -> str | None:
    key = resolve_key(catalog, provider, model)
    if key is None:
        return "LiteLLM's lookup cannot reach this key (a repeated provider prefix)"
    if "alias_of" in catalog[key]:
        return "LiteLLM's lookup lands on an alias"
    return None


@functools.cache
def _cases(path: Path) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Every comparison case, deterministic (file order), and the count of skipped entries by reason."""
    catalog = _raw(path)
    cases: list[dict[str, Any]] = []
    skipped: dict[str, int] = {}
    for key, entry in catalog.items():
        reason = skip_reason(key, entry) or lookup_problem(catalog, entry["litellm_provider"], key)
        if reason is not None:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        provider = entry["litellm_provider"]
        for shape, usage in shapes(entry):
            cost, priced_with = expected(catalog, provider, key, usage)
            cases.append({"provider": provider, "model": key, "shape": shape, "usage": usage,
                          "expected": cost, "priced_with": priced_with})  # fmt: skip
    return cases, skipped


def cases() -> list[dict[str, Any]]:
    return _cases(litellm_path())[0]


def agrees(expected_cost: float | None, got: float | None) -> bool:
    if expected_cost is None or got is None:
        return expected_cost is None and got is None
    if expected_cost == 0:
        return abs(got) <= 1e-12
    return abs(got - expected_cost) <= REL_TOL * abs(expected_cost)


def report(mismatches: list[dict[str, Any]], total: int) -> str:
    by_family: dict[str, int] = {}
    for m in mismatches:
        by_family[family(m["shape"])] = by_family.get(family(m["shape"]), 0) + 1
    lines = [f"{len(mismatches)} of {total} cases disagree; by shape: {by_family}"]
    for m in mismatches[:10]:
        lines.append(f"  {m['provider']}/{m['model']} [{m['shape']}] expected {m['expected']!r} "
                     f"(LiteLLM key {m['priced_with']}), got {m['got']!r} ({m['source']})")  # fmt: skip
    return "\n".join(lines)


# ---- the end-to-end comparison -------------------------------------------------------------------


def test_every_case_agrees_through_spendlake_price() -> None:
    path = litellm_path()
    all_cases = cases()
    models = {(c["provider"], c["model"]) for c in all_cases}
    assert len(models) >= 200, f"only {len(models)} distinct models compared"
    lines = []
    for i, c in enumerate(all_cases):
        event = {"event_id": f"case-{i}", "timestamp": TIMESTAMP, "provider": c["provider"],
                 "model": c["model"], **asdict(c["usage"])}  # fmt: skip
        lines.append(json.dumps(event))
    r = spendlake("price", "--catalog", str(path), input="\n".join(lines).encode() + b"\n", timeout=600)
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert [row["event_id"] for row in rows] == [f"case-{i}" for i in range(len(all_cases))]
    mismatches = []
    for c, row in zip(all_cases, rows, strict=True):
        if not agrees(c["expected"], row["cost_usd"]):
            mismatches.append({**c, "got": row["cost_usd"], "source": row["cost_source"]})
    assert not mismatches, report(mismatches, len(all_cases))


def test_the_comparison_covers_every_shape_and_many_providers() -> None:
    all_cases = cases()
    families = {family(c["shape"]) for c in all_cases}
    assert families >= {
        "plain", "input_only", "cache_read", "cache_write_5m", "cache_write_1h", "reasoning", "mixed",
        "batch", "batch_mixed", "threshold_at", "threshold_above", "threshold_mixed",
        "threshold_batch", "range_at_end", "range_above_end", "range_mixed",
    }  # fmt: skip
    providers = {c["provider"] for c in all_cases}
    assert len(providers) >= 40 and {"openai", "anthropic", "gemini", "xai", "dashscope"} <= providers
    assert len(all_cases) >= 5 * len({(c["provider"], c["model"]) for c in all_cases})


def test_fill_only_changes_what_litellm_would_bill_at_zero() -> None:
    """Where the entry publishes every price a case uses, spendlake's rule is LiteLLM's number."""
    catalog = raw()
    same = 0
    for c in cases():
        entry = catalog[c["priced_with"]]
        if uses_only_published_prices(entry, c["usage"], c["provider"]):
            pure = litellm_cost(entry, c["usage"], c["provider"], fill_missing=False)
            pure += price(entry, "input_cost_per_request") or 0.0  # see expected()
            assert c["expected"] == pure, (c["model"], c["shape"], c["expected"], pure)
            same += 1
    assert same >= len(cases()) // 3


def uses_only_published_prices(entry: dict[str, Any], u: Usage, provider: str) -> bool:
    if u.batch:
        has_in = bool(price(entry, "input_cost_per_token_batches") or price(entry, "input_cost_per_token"))
        cached_ok = bool(price(entry, "input_cost_per_token_batches")) or u.cached_input_tokens == 0 or (
            price(entry, "cache_read_input_token_cost") is not None
        )
        outs = ("output_cost_per_token_batches", "output_cost_per_token")
        has_out = any(price(entry, k) is not None for k in outs)
        return (u.input_tokens == 0 or (has_in and cached_ok)) and (u.output_tokens == 0 or has_out)
    r = rates(entry, u.input_tokens, provider)
    needs = [
        (u.input_tokens - u.cached_input_tokens - u.cache_write_tokens, r.input),
        (u.cached_input_tokens, r.cache_read),
        (u.cache_write_tokens - u.cache_write_1h_tokens, r.cache_write),
        (u.cache_write_1h_tokens, r.cache_write_1h),
        (u.output_tokens, r.output),
    ]
    return all(tokens <= 0 or value is not None for tokens, value in needs)


def test_case_time_is_peak_for_every_off_peak_entry() -> None:
    """off_peak_pricing (DeepSeek, Tencent) is time-of-day pricing that spendlake does not model;
    the cases stay comparable because at TIMESTAMP no entry's off-peak window is open."""
    at = datetime.fromisoformat(TIMESTAMP)
    minute = at.hour * 60 + at.minute  # windows are in UTC; weekdays in weekday_timezone
    blocks = [e["off_peak_pricing"] for e in raw().values() if "off_peak_pricing" in e]
    assert blocks
    for block in blocks:
        day = at.astimezone(ZoneInfo(block.get("weekday_timezone", "UTC"))).isoweekday()
        for rule in block.get("windows", []) + [block]:
            if "weekdays" in rule and day not in rule["weekdays"]:
                continue
            hours = rule.get("hours_utc", [])
            for window in [hours] if isinstance(hours, str) else hours:
                start, end = (int(t[:2]) * 60 + int(t[3:]) for t in window.split("-"))
                inside = start <= minute < end if start < end else minute >= start or minute < end
                assert not inside, (window, block)


def test_skipped_entries_are_few_and_named() -> None:
    _, skipped = _cases(litellm_path())
    not_tokens = ("not a model entry", "alias", "not a token-priced mode", "no per-token price")
    token_priced = sum(n for reason, n in skipped.items() if reason not in not_tokens)
    assert token_priced < 40, skipped
    assert "LiteLLM's lookup lands on an alias" not in skipped, skipped


# ---- one rule at a time, in process --------------------------------------------------------------

SCHEMA = pricing_schema("request_type")


def spendlake_cost(provider: str, model: str, usage: Usage) -> tuple[float | None, str]:
    canonical, name = split_model(provider, model)
    row = {"provider": canonical, "model": name, "timestamp": datetime(2025, 3, 5, 2, tzinfo=UTC),
           "cache_hit": False, "reported_cost_usd": None, "request_type": "chat",
           **asdict(usage)}  # fmt: skip
    got = price_table(pa.Table.from_pylist([row], schema=SCHEMA), _spendlake_catalog(litellm_path()))
    out = got.to_pylist()[0]
    return out["cost_usd"], out["cost_source"]


RULES = [
    # (id, provider, model, usage)
    ("plain", "openai", "gpt-4o", Usage(1234, 567)),
    ("cache_read", "openai", "gpt-4o", Usage(5000, 200, cached_input_tokens=3000)),
    ("cache_write_5m", "anthropic", "claude-sonnet-4-5-20250929", Usage(6000, 300, cache_write_tokens=2500)),
    ("cache_write_1h", "anthropic", "claude-sonnet-4-5-20250929", Usage(6000, 300, 0, 2500, 2500)),
    ("reasoning_own_price", "dashscope", "dashscope/qwen-turbo", Usage(800, 3000, reasoning_tokens=2400)),
    ("reasoning_at_output_price", "openai", "o3", Usage(800, 3000, reasoning_tokens=2400)),
    ("missing_cache_read_bills_input", "openai", "gpt-4", Usage(5000, 200, cached_input_tokens=3000)),
    ("missing_cache_write_bills_input", "openai", "gpt-4o", Usage(6000, 300, 0, 2500, 1000)),
    ("missing_input_price_is_unpriced", "bedrock", "twelvelabs.pegasus-1-2-v1:0", Usage(1000, 100)),
    ("threshold_at_200k", "gemini", "gemini/gemini-2.5-pro", Usage(200_000, 1000, 50_000)),
    ("threshold_above_200k", "gemini", "gemini/gemini-2.5-pro", Usage(200_001, 1000, 50_000)),
    ("threshold_cache_write_1h_keys", "bedrock_converse", "anthropic.claude-sonnet-4-5-20250929-v1:0",
     Usage(250_000, 1000, 50_000, 30_000, 10_000)),
    ("threshold_xai_reaches_at_n", "xai", "xai/grok-4.3", Usage(200_000, 1000, 50_000)),
    ("threshold_highest_crossed_wins", "kyma", "kyma/qwen3.7-flash", Usage(256_001, 1000, 10_000)),
    ("threshold_between_two", "kyma", "kyma/qwen3.7-flash", Usage(100_000, 1000)),
    ("range_at_end_stays", "dashscope", "dashscope/qwen3-coder-plus", Usage(32_000, 1000, 2_000)),
    ("range_above_end_moves", "dashscope", "dashscope/qwen3-coder-plus", Usage(32_001, 1000, 2_001)),
    ("range_tier_cache_write_at_tier_input", "dashscope", "dashscope/qwen3-coder-plus",
     Usage(40_000, 10, 0, 5_000)),
    ("range_beyond_last_takes_last", "dashscope", "dashscope/qwen3-max", Usage(300_000, 1000)),
    ("range_with_flat_prices", "opencode_go", "opencode_go/claude-haiku-5-5",
     Usage(100_001, 1000, 20_000, 5_000)),
    ("range_tier_reasoning_price", "dashscope", "dashscope/qwen-plus-latest",
     Usage(300_000, 2000, reasoning_tokens=1500)),
    ("batch_prices", "openai", "gpt-4o", Usage(10_000, 1000, 4000, batch=True)),
    ("batch_half_list_price", "mistral", "mistral/mistral-large-latest",
     Usage(10_000, 1000, 4000, batch=True)),
    ("batch_threshold_prices", "gemini", "gemini/gemini-2.5-pro", Usage(300_000, 1000, 50_000, batch=True)),
    ("batch_cache_prices", "anthropic", "claude-sonnet-4-5-20250929",
     Usage(10_000, 1000, 4000, 2000, batch=True)),
    ("batch_reasoning_at_batch_output", "gemini", "gemini/gemini-2.5-flash",
     Usage(1000, 3000, reasoning_tokens=2000, batch=True)),
    ("missing_cache_write_1h_bills_5m_price", "openai", "gpt-6-astra", Usage(6000, 300, 0, 2500, 1000)),
    ("threshold_without_tier_cache_prices_uses_flat_cache_prices", "azure", "azure/gpt-5.4",
     Usage(272_001, 2000, 68_000, 34_000, 17_000, 500)),
    ("lookup_prefixed_key_wins", "deepseek", "deepseek-chat", Usage(6000, 300, 1000, 2000)),
    ("own_calculator_plain", "fireworks_ai", "fireworks_ai/deepseek-v4-pro-0813",
     Usage(1234, 567, reasoning_tokens=100)),
    ("own_calculator_batch", "databricks", "databricks/databricks-claude-haiku-4-5",
     Usage(10_000, 1000, 4000, batch=True)),
    ("per_request_fee_added", "perplexity", "perplexity/pplx-70b-online", Usage(1234, 567)),
    ("threshold_cache_read_without_any_price_bills_tier_input", "gemini",
     "gemini/gemini-2.5-computer-use-preview-10-2025", Usage(250_000, 1000, 100_000)),
    ("key_with_provider_name_inside", "together_ai", "together_ai/together/Tev1-4B-experimental",
     Usage(1234, 567)),
]  # fmt: skip


@pytest.mark.parametrize(("provider", "model", "usage"), [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_one_rule(provider: str, model: str, usage: Usage) -> None:
    catalog = raw()
    assert model in catalog, f"{model} is no longer in the LiteLLM file; pick another example"
    want, key = expected(catalog, provider, model, usage)
    got, source = spendlake_cost(provider, model, usage)
    assert agrees(want, got), f"LiteLLM ({key}): {want!r}; spendlake: {got!r} ({source})"
    assert source == ("unpriced" if want is None else "catalog")


# ---- the oracle itself, on numbers worked out by hand ---------------------------------------------


def _cost(model: str, usage: Usage, provider: str, fill: bool = True) -> float | None:
    return litellm_cost(raw()[model], usage, provider, fill_missing=fill)


def test_oracle_claude_5_minute_and_1_hour_cache_writes() -> None:
    # $3 in, $0.30 cache read, $3.75 5-minute write, $6 1-hour write, $15 out (per million)
    # 5,000 fresh x 3 + 2,000 x 0.30 + 2,000 x 3.75 + 1,000 x 6 + 500 x 15 = $0.0366
    u = Usage(10_000, 500, cached_input_tokens=2000, cache_write_tokens=3000, cache_write_1h_tokens=1000)
    assert _cost("claude-sonnet-4-5-20250929", u, "anthropic") == pytest.approx(0.0366, rel=1e-12)


def test_oracle_gemini_200k_threshold() -> None:
    # <= 200k: $1.25 in, $0.125 cached, $10 out. Above: $2.50, $0.25, $15 for the whole request.
    at = Usage(200_000, 1000, cached_input_tokens=100_000)
    assert _cost("gemini/gemini-2.5-pro", at, "gemini") == pytest.approx(0.1475, rel=1e-12)
    above = replace(at, input_tokens=200_001)  # 100,001 x 2.5 + 100,000 x 0.25 + 1,000 x 15
    assert _cost("gemini/gemini-2.5-pro", above, "gemini") == pytest.approx(0.2900025, rel=1e-12)


def test_oracle_xai_tier_starts_at_the_threshold() -> None:
    entry = raw()["xai/grok-4.3"]
    n = 200_000
    at_n = litellm_cost(entry, Usage(n, 100), "xai")
    tier_in = entry["input_cost_per_token_above_200k_tokens"]
    tier_out = entry["output_cost_per_token_above_200k_tokens"]
    assert at_n == pytest.approx(n * tier_in + 100 * tier_out, rel=1e-12)
    assert entry["input_cost_per_token_above_200k_tokens"] != entry["input_cost_per_token"]


def test_oracle_gpt4o_batch() -> None:
    # batch prices $1.25 in / $5 out bill every prompt token, cached included: 0.0125 + 0.005
    u = Usage(10_000, 1000, cached_input_tokens=4000, batch=True)
    assert _cost("gpt-4o", u, "openai") == pytest.approx(0.0175, rel=1e-12)
    # no batch prices: half of list. (6,000 x 0.50 + 4,000 x 0.05 + 1,000 x 1.50) / 2 = $0.00235
    assert _cost("mistral/mistral-large-latest", u, "mistral") == pytest.approx(0.00235, rel=1e-12)


def test_oracle_dashscope_range_table() -> None:
    # 32,000 is the end of the first range ($1 in, $0.10 cached, $5 out): 30,000 + 2,000 cached
    first = Usage(32_000, 1000, cached_input_tokens=2000)
    assert _cost("dashscope/qwen3-coder-plus", first, "dashscope") == pytest.approx(0.0352, rel=1e-12)
    # one token more moves the whole request to the second ($1.80, $0.18, $9):
    # 30,000 x 1.8 + 2,001 x 0.18 + 1,000 x 9 = 0.054 + 0.00036018 + 0.009
    second = Usage(32_001, 1000, cached_input_tokens=2001)
    assert _cost("dashscope/qwen3-coder-plus", second, "dashscope") == pytest.approx(0.06336018, rel=1e-12)


def test_oracle_missing_prices_pure_and_filled() -> None:
    # gpt-4 publishes no cache-read price: LiteLLM bills cached tokens at $0, spendlake at input
    # ($30/M): pure 2,000 x 30 + 200 x 60 = $0.072; filled adds 3,000 x 30 = $0.09 more.
    u = Usage(5000, 200, cached_input_tokens=3000)
    assert _cost("gpt-4", u, "openai", fill=False) == pytest.approx(0.072, rel=1e-12)
    assert _cost("gpt-4", u, "openai") == pytest.approx(0.162, rel=1e-12)
    # no input price: LiteLLM bills the prompt at $0, spendlake leaves the row unpriced
    pegasus = raw()["twelvelabs.pegasus-1-2-v1:0"]
    assert litellm_cost(pegasus, Usage(1000, 100), "bedrock", fill_missing=False) == pytest.approx(
        100 * pegasus["output_cost_per_token"], rel=1e-12
    )
    assert litellm_cost(pegasus, Usage(1000, 100), "bedrock", fill_missing=True) is None


def test_oracle_batch_cache_and_threshold_prices() -> None:
    # Sonnet 4.5 batch: $1.50 in, $0.15 cache read, $1.875 cache write, $7.50 out (per million):
    # 4,000 x 1.50 + 4,000 x 0.15 + 2,000 x 1.875 + 1,000 x 7.50 = $0.01785
    u = Usage(10_000, 1000, cached_input_tokens=4000, cache_write_tokens=2000, batch=True)
    assert _cost("claude-sonnet-4-5-20250929", u, "anthropic") == pytest.approx(0.01785, rel=1e-12)
    # Gemini 2.5 Pro batch above 200k: $1.25 in, $0.25 cached, $7.50 out:
    # 250,000 x 1.25 + 50,000 x 0.25 + 1,000 x 7.50 = $0.3325 (at 200k: 0.625 / 0.125 / 5)
    above = Usage(300_000, 1000, cached_input_tokens=50_000, batch=True)
    assert _cost("gemini/gemini-2.5-pro", above, "gemini") == pytest.approx(0.3325, rel=1e-12)
    at = Usage(200_000, 1000, cached_input_tokens=50_000, batch=True)
    assert _cost("gemini/gemini-2.5-pro", at, "gemini") == pytest.approx(
        150_000 * 0.625e-6 + 50_000 * 0.125e-6 + 1000 * 5e-6, rel=1e-12
    )


def test_oracle_tier_cache_fallback_uses_the_tier_input_price() -> None:
    # gemini-2.5-computer-use has a 200k tier ($2.50 in, $15 out) and no cache price at all:
    # above 200k the cached tokens bill at the tier's input price, not the flat $1.25.
    # 150,000 x 2.5 + 100,000 x 2.5 + 1,000 x 15 = $0.64 (pure LiteLLM: cached at $0 -> $0.39)
    u = Usage(250_000, 1000, cached_input_tokens=100_000)
    assert _cost("gemini/gemini-2.5-computer-use-preview-10-2025", u, "gemini") == pytest.approx(0.64, rel=1e-12)
    assert _cost("gemini/gemini-2.5-computer-use-preview-10-2025", u, "gemini", fill=False) == pytest.approx(
        0.39, rel=1e-12
    )


def test_oracle_lookup_prefers_the_provider_prefixed_key() -> None:
    catalog = raw()
    assert resolve_key(catalog, "deepseek", "deepseek-chat") == "deepseek/deepseek-chat"
    assert resolve_key(catalog, "deepseek", "deepseek/deepseek-chat") == "deepseek/deepseek-chat"
    assert resolve_key(catalog, "openai", "gpt-4o") == "gpt-4o"  # no openai/gpt-4o key
    vertex = resolve_key(catalog, "vertex_ai-language-models", "gemini-3.5-flash")
    assert vertex == "vertex_ai/gemini-3.5-flash"  # both keys exist; the routed prefix wins
    assert resolve_key(catalog, "openai", "gemini/gemini-2.5-pro") is None  # wrong provider
    # deepseek/deepseek-chat publishes a $0 cache write, deepseek-chat none: LiteLLM's pick bills
    # 2,000 writes at $0 where the unprefixed entry would fill them at $0.28/M.
    u = Usage(6000, 300, cached_input_tokens=1000, cache_write_tokens=2000)
    assert expected(catalog, "deepseek", "deepseek-chat", u)[0] == pytest.approx(
        3000 * 2.8e-7 + 1000 * 2.8e-8 + 300 * 4.2e-7, rel=1e-12
    )


def test_oracle_threshold_keys_ignore_service_tier_variants() -> None:
    entry = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6,
             "input_cost_per_token_above_100k_tokens_priority": 9e-6,
             "input_cost_per_token_above_200k_tokens_batches": 9e-6}  # fmt: skip
    assert litellm_cost(entry, Usage(300_000), "openai") == pytest.approx(0.3, rel=1e-12)
    multi = {**entry, "input_cost_per_token_above_90k_tokens": 5e-6,
             "input_cost_per_token_above_128k_tokens": 7e-6}  # fmt: skip
    assert litellm_cost(multi, Usage(150_000), "openai") == pytest.approx(150_000 * 7e-6, rel=1e-12)
    assert litellm_cost(multi, Usage(100_000), "openai") == pytest.approx(100_000 * 5e-6, rel=1e-12)
    assert range_tier({"tiered_pricing": [{"range": [0, 10], "input_cost_per_token": 1.0}]}, 0) is None


def test_oracle_own_calculators_ignore_cache_prices() -> None:
    entry = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6, "cache_read_input_token_cost": 1e-7,
             "output_cost_per_reasoning_token": 5e-6}  # fmt: skip
    u = Usage(1000, 100, cached_input_tokens=600, reasoning_tokens=40)
    # cached tokens at the full input price; reasoning at its own price only for perplexity
    assert litellm_cost(entry, u, "fireworks_ai") == pytest.approx(1000 * 1e-6 + 100 * 2e-6, rel=1e-12)
    out = 60 * 2e-6 + 40 * 5e-6
    assert litellm_cost(entry, u, "perplexity") == pytest.approx(1000 * 1e-6 + out, rel=1e-12)
    assert litellm_cost(entry, u, "openai") == pytest.approx(400e-6 + 600 * 1e-7 + out, rel=1e-12)
    assert litellm_cost(entry, u, "lemonade") == 0.0
