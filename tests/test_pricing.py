"""pricing/: worked examples computed by hand, properties, and the LiteLLM loader on the real file."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import litellm_catalog_path, pricing_schema
from ingest.schema import COST_SCHEMA
from pricing import (
    Catalog,
    CatalogError,
    PriceEntry,
    canonical_provider,
    load_catalog,
    price_table,
    split_model,
)

BUILTIN = Catalog.builtin()
JAN_2025 = datetime(2025, 1, 1, tzinfo=UTC)
SCHEMA = pricing_schema("request_type")


def event(**fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "provider": "openai", "model": "gpt-4o", "timestamp": JAN_2025, "input_tokens": 0,
        "output_tokens": 0, "cached_input_tokens": 0, "cache_write_tokens": 0,
        "cache_write_1h_tokens": 0, "reasoning_tokens": 0, "batch": False, "cache_hit": False,
        "reported_cost_usd": None, "request_type": "chat",
    }  # fmt: skip
    row.update(fields)
    return row


def price(rows: list[dict[str, Any]], catalog: Catalog = BUILTIN, **kw: Any) -> list[dict]:
    return price_table(pa.Table.from_pylist(rows, schema=SCHEMA), catalog, **kw).to_pylist()


def price_one(catalog: Catalog = BUILTIN, policy: str = "catalog_first", **fields: Any) -> dict:
    return price([event(**fields)], catalog, policy=policy)[0]


# ---- worked examples (prices from builtin_catalog.json, arithmetic by hand) -------------------


def test_gpt4o_with_cached_tokens() -> None:
    got = price_one(input_tokens=10_000, cached_input_tokens=4_000, output_tokens=1_000)
    # 6,000 fresh x $2.50/M + 4,000 cached x $1.25/M + 1,000 out x $10/M
    assert got["cost_input_usd"] == pytest.approx(0.015)
    assert got["cost_cached_input_usd"] == pytest.approx(0.005)
    assert got["cost_output_usd"] == pytest.approx(0.010)
    assert got["cost_cache_write_usd"] == 0.0 and got["cost_reasoning_usd"] == 0.0
    assert got["cost_usd"] == pytest.approx(0.030)
    assert got["cost_source"] == "catalog"
    assert got["price_id"] == "builtin:openai/gpt-4o@2024-10-02"


def test_price_in_force_follows_the_event_time() -> None:
    # Before 2024-10-02 gpt-4o was $5/$15 with no cache discount: cached tokens bill as input.
    got = price_one(
        timestamp=datetime(2024, 6, 1, tzinfo=UTC),
        input_tokens=10_000, cached_input_tokens=4_000, output_tokens=1_000,
    )  # fmt: skip
    assert got["cost_usd"] == pytest.approx(6_000 * 5e-6 + 4_000 * 5e-6 + 1_000 * 15e-6)
    assert got["price_id"] == "builtin:openai/gpt-4o@2024-05-13"
    older = price_one(timestamp=datetime(2023, 1, 1, tzinfo=UTC), input_tokens=1)
    assert older["price_id"] == "builtin:openai/gpt-4o@2024-05-13"  # earliest version


def test_anthropic_5_minute_and_1_hour_cache_writes() -> None:
    got = price_one(
        provider="anthropic", model="claude-sonnet-4-5-20250929",
        input_tokens=10_000, cached_input_tokens=2_000, cache_write_tokens=3_000,
        cache_write_1h_tokens=1_000, output_tokens=500,
    )  # fmt: skip
    assert got["cost_input_usd"] == pytest.approx(5_000 * 3e-6)  # 0.015
    assert got["cost_cached_input_usd"] == pytest.approx(2_000 * 0.3e-6)  # 0.0006
    assert got["cost_cache_write_usd"] == pytest.approx(2_000 * 3.75e-6 + 1_000 * 6e-6)  # 0.0135
    assert got["cost_output_usd"] == pytest.approx(500 * 15e-6)  # 0.0075
    assert got["cost_usd"] == pytest.approx(0.0366)
    assert got["price_id"] == "builtin:anthropic/claude-sonnet-4-5@2025-09-29"


def test_reasoning_model_bills_reasoning_at_output_price_when_none_is_listed() -> None:
    got = price_one(model="o4-mini", input_tokens=100, output_tokens=1_000, reasoning_tokens=800)
    assert got["cost_output_usd"] == pytest.approx(200 * 4.4e-6)
    assert got["cost_reasoning_usd"] == pytest.approx(800 * 4.4e-6)
    assert got["cost_usd"] == pytest.approx(100 * 1.1e-6 + 1_000 * 4.4e-6)  # 0.00451


NOV_2026 = datetime(2026, 11, 1, tzinfo=UTC)
# One worked example per provider family: (id, event fields, expected cost), arithmetic by hand
# from builtin_catalog.json (USD per million tokens in the comments).
WORKED = [
    ("bedrock-us-region-cache", dict(
        provider="bedrock", model="us.anthropic.claude-sonnet-4-5-20250929-v1:0", input_tokens=10_000,
        cached_input_tokens=2_000, cache_write_tokens=3_000, cache_write_1h_tokens=1_000, output_tokens=500),
     # us. is +10%: 5,000 x 3.30 + 2,000 x 0.33 + 2,000 x 4.125 + 1,000 x 6.60 + 500 x 16.50
     0.0165 + 0.00066 + 0.00825 + 0.0066 + 0.00825),
    ("bedrock-eu-falls-back-to-base-id", dict(
        provider="bedrock", model="eu.anthropic.claude-sonnet-4-5-20250929-v1:0", input_tokens=1_000),
     1_000 * 3e-6),
    ("xai-tier-starts-at-the-threshold", dict(provider="xai", model="grok-4.3", input_tokens=200_000,
                                              output_tokens=1_000),  # 200,000 x 2.50 + 1,000 x 5
     0.5 + 0.005),
    ("xai-one-below-the-threshold", dict(provider="xai", model="grok-4.3", input_tokens=199_999,
                                         output_tokens=1_000),  # 199,999 x 1.25 + 1,000 x 2.50
     0.24999875 + 0.0025),
    ("vertex-claude-at-the-threshold", dict(provider="vertex_ai", model="claude-sonnet-4-5",
                                            input_tokens=200_000), 200_000 * 3e-6),
    ("vertex-claude-above-with-cache", dict(provider="vertex_ai", model="claude-sonnet-4-5",
                                            input_tokens=200_001, cached_input_tokens=50_000),
     150_001 * 6e-6 + 50_000 * 0.6e-6),  # the whole request at the tier: $6 in, $0.60 cached
    ("azure-batch-covers-cached", dict(provider="azure", model="gpt-4.1", input_tokens=10_000,
                                       cached_input_tokens=4_000, output_tokens=1_000, batch=True),
     10_000 * 1e-6 + 1_000 * 4e-6),
    ("deepseek-early-2025-price", dict(
        provider="deepseek", model="deepseek-reasoner", timestamp=datetime(2025, 3, 1, tzinfo=UTC),
        input_tokens=10_000, cached_input_tokens=6_000, output_tokens=2_000, reasoning_tokens=1_500),
     4_000 * 0.55e-6 + 6_000 * 0.14e-6 + 2_000 * 2.19e-6),
    ("deepseek-after-the-cut", dict(
        provider="deepseek", model="deepseek-reasoner", timestamp=datetime(2025, 10, 1, tzinfo=UTC),
        input_tokens=10_000, cached_input_tokens=6_000, output_tokens=2_000, reasoning_tokens=1_500),
     4_000 * 0.28e-6 + 6_000 * 0.028e-6 + 2_000 * 0.42e-6),
    ("groq-hosted-openai-model", dict(provider="groq", model="openai/gpt-oss-120b", input_tokens=1_000,
                                      output_tokens=1_000), 1_000 * 0.15e-6 + 1_000 * 0.6e-6),
    ("together-alias-and-prefix", dict(provider="together_ai",
                                       model="together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo",
                                       input_tokens=2_000, output_tokens=500), 2_500 * 1.04e-6),
    ("mistral-no-cache-price-bills-input", dict(
        provider="mistral", model="mistral-small-latest", timestamp=datetime(2025, 6, 1, tzinfo=UTC),
        input_tokens=1_000, cached_input_tokens=400, output_tokens=100), 1_000 * 0.1e-6 + 100 * 0.3e-6),
    ("anthropic-batch-cache-prices", dict(provider="anthropic", model="claude-opus-4-6", input_tokens=10_000,
                                          cached_input_tokens=2_000, cache_write_tokens=1_000,
                                          output_tokens=1_000, batch=True),
     # batch: $2.50 in, $0.25 cache read, $3.125 cache write, $12.50 out
     7_000 * 2.5e-6 + 2_000 * 0.25e-6 + 1_000 * 3.125e-6 + 1_000 * 12.5e-6),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "expected"), [w[1:] for w in WORKED], ids=[w[0] for w in WORKED])
def test_worked_example_per_provider_family(fields: dict[str, Any], expected: float) -> None:
    got = price_one(**{"timestamp": NOV_2026, **fields})
    assert got["cost_source"] == "catalog"
    assert got["cost_usd"] == pytest.approx(expected, rel=1e-12)
    parts = ("cost_input_usd", "cost_cached_input_usd", "cost_cache_write_usd", "cost_output_usd", "cost_reasoning_usd")
    assert sum(got[p] for p in parts) == pytest.approx(got["cost_usd"], rel=1e-12)


def custom(**prices: Any) -> Catalog:
    entry = PriceEntry("test:acme/m1", "acme", "m1", JAN_2025, **prices)
    return Catalog([entry])


def test_explicit_reasoning_and_cache_fallbacks() -> None:
    cat = custom(input=1e-6, output=2e-6, reasoning=5e-6)
    got = price_one(
        cat, provider="acme", model="m1", input_tokens=1_000, cached_input_tokens=100,
        cache_write_tokens=200, cache_write_1h_tokens=50, output_tokens=300, reasoning_tokens=100,
    )  # fmt: skip
    assert got["cost_cached_input_usd"] == pytest.approx(100 * 1e-6)  # cache_read -> input
    assert got["cost_cache_write_usd"] == pytest.approx(200 * 1e-6)  # 5m and 1h -> input
    assert got["cost_reasoning_usd"] == pytest.approx(100 * 5e-6)
    assert got["cost_output_usd"] == pytest.approx(200 * 2e-6)


@pytest.mark.parametrize(
    ("input_tokens", "cached", "expected", "expected_output"),
    [
        (200_000, 0, 200_000 * 1.25e-6, 1_000 * 10e-6),  # at the threshold: normal prices
        (200_001, 0, 200_001 * 2.5e-6, 1_000 * 15e-6),  # one above: the whole request tiered
        # cached tokens are part of the input, so they push the request over too
        (200_001, 100_000, 100_001 * 2.5e-6 + 100_000 * 0.25e-6, 1_000 * 15e-6),
    ],
)
def test_long_context_tier(input_tokens: int, cached: int, expected: float, expected_output: float) -> None:
    got = price_one(
        provider="gemini", model="gemini-2.5-pro", input_tokens=input_tokens,
        cached_input_tokens=cached, output_tokens=1_000,
    )  # fmt: skip
    assert got["cost_input_usd"] + got["cost_cached_input_usd"] == pytest.approx(expected)
    assert got["cost_output_usd"] == pytest.approx(expected_output)


def test_batch_prices() -> None:
    got = price_one(input_tokens=10_000, output_tokens=1_000, batch=True)
    assert got["cost_usd"] == pytest.approx(10_000 * 1.25e-6 + 1_000 * 5e-6)  # 0.0175
    # the batch input price covers cached tokens too, and batch_output covers reasoning
    cached = price_one(model="o4-mini", input_tokens=10_000, cached_input_tokens=4_000,
                       output_tokens=1_000, reasoning_tokens=600, batch=True)  # fmt: skip
    assert cached["cost_input_usd"] + cached["cost_cached_input_usd"] == pytest.approx(10_000 * 0.55e-6)
    assert cached["cost_output_usd"] + cached["cost_reasoning_usd"] == pytest.approx(1_000 * 2.2e-6)
    # no batch prices in the entry: half the list price (cached at half the cache-read price)
    mistral = price_one(provider="mistral", model="mistral-large-latest", input_tokens=1_000,
                        output_tokens=1_000, batch=True, timestamp=datetime(2026, 1, 1, tzinfo=UTC))  # fmt: skip
    assert mistral["cost_usd"] == pytest.approx(1_000 * 0.5e-6 / 2 + 1_000 * 1.5e-6 / 2)
    # batch prices have long-context thresholds of their own ($0.625 up to 200k, then $1.25)
    tiered = price_one(provider="gemini", model="gemini-2.5-pro", input_tokens=300_000, batch=True)
    assert tiered["cost_usd"] == pytest.approx(300_000 * 1.25e-6)
    at = price_one(provider="gemini", model="gemini-2.5-pro", input_tokens=200_000, batch=True)
    assert at["cost_usd"] == pytest.approx(200_000 * 0.625e-6)


UNITS = Catalog([
    PriceEntry("t:img", "acme", "painter", JAN_2025, output_per_image=0.04),
    PriceEntry("t:ear", "acme", "listener", JAN_2025, input_per_second=1e-4, output_per_second=5e-4),
    PriceEntry("t:voice", "acme", "speaker", JAN_2025, input=1e-6, output_per_second=2e-3),
    PriceEntry("t:web", "acme", "searcher", JAN_2025, input=0.0, output=2.8e-6, per_request=0.005),
    PriceEntry("t:vision", "acme", "looker", JAN_2025, input=1e-6, output=2e-6, input_per_image=0.002),
])  # fmt: skip


def price_units(model: str, **fields: Any) -> dict[str, Any]:
    rows = [event(provider="acme", model=model, **fields)]
    extra = SCHEMA.append(pa.field("images", pa.int64())).append(pa.field("duration_seconds", pa.float64()))
    full = [{**r, "images": r.get("images"), "duration_seconds": r.get("duration_seconds")} for r in rows]
    return price_table(pa.Table.from_pylist(full, schema=extra), UNITS).to_pylist()[0]


def test_per_image_per_second_and_per_request_prices() -> None:
    # image generation: images x output price; prompt tokens of a unit-only entry are not billed
    img = price_units("painter", images=3, input_tokens=50)
    assert img["cost_usd"] == pytest.approx(0.12) and img["cost_output_usd"] == pytest.approx(0.12)
    # transcription: seconds x the input per-second price when the entry has one
    ear = price_units("listener", duration_seconds=90.0)
    assert ear["cost_usd"] == pytest.approx(90 * 1e-4) and ear["cost_input_usd"] == pytest.approx(90 * 1e-4)
    # speech: input tokens at the token price, seconds produced at the output per-second price
    voice = price_units("speaker", input_tokens=1_000, duration_seconds=10.0)
    assert voice["cost_input_usd"] == pytest.approx(1e-3) and voice["cost_output_usd"] == pytest.approx(0.02)
    # a fee per request on top of the tokens (Perplexity's online models)
    web = price_units("searcher", input_tokens=100, output_tokens=1_000)
    assert web["cost_usd"] == pytest.approx(0.005 + 1_000 * 2.8e-6)
    # images sent to a model with a per-image input price
    vision = price_units("looker", input_tokens=1_000, output_tokens=10, images=2)
    assert vision["cost_input_usd"] == pytest.approx(1_000 * 1e-6 + 2 * 0.002)
    # no images or seconds recorded: a unit-only entry has nothing to bill but tokens it cannot price
    assert price_units("painter", input_tokens=50)["cost_source"] == "unpriced"
    # older lake files have no unit columns at all: priced as zero units
    old = price_table(pa.Table.from_pylist([event(provider="acme", model="speaker", input_tokens=10)], schema=SCHEMA),
                      UNITS).to_pylist()[0]  # fmt: skip
    assert old["cost_usd"] == pytest.approx(1e-5)


def test_unknown_model_is_null_and_unpriced_never_zero() -> None:
    got = price_one(model="gpt-unreleased", input_tokens=1_000, output_tokens=10)
    assert got["cost_usd"] is None and got["cost_source"] == "unpriced"
    assert got["price_id"] is None
    assert all(got[f"cost_{p}_usd"] is None for p in ("input", "cached_input", "output"))


def test_missing_price_for_tokens_present_makes_the_row_unpriced() -> None:
    cat = custom(input=1e-6)  # no output price published
    assert price_one(cat, provider="acme", model="m1", input_tokens=10)["cost_usd"] == pytest.approx(1e-5)
    got = price_one(cat, provider="acme", model="m1", input_tokens=10, output_tokens=5)
    assert got["cost_usd"] is None and got["cost_source"] == "unpriced"


def test_reported_cost_policies() -> None:
    unknown = {"model": "gpt-unreleased", "input_tokens": 10, "reported_cost_usd": 0.42}
    known = {"input_tokens": 1_000, "reported_cost_usd": 0.42}
    got = price_one(**unknown)
    assert (got["cost_usd"], got["cost_source"], got["cost_input_usd"]) == (0.42, "reported", None)
    assert price_one(**known)["cost_source"] == "catalog"
    first = price_one(policy="reported_first", **known)
    assert (first["cost_usd"], first["cost_source"], first["price_id"]) == (0.42, "reported", None)
    assert price_one(policy="reported_first", input_tokens=1_000)["cost_source"] == "catalog"
    with pytest.raises(ValueError, match="policy: got 'cheapest'"):
        price_one(policy="cheapest")


def test_gateway_cache_hit_costs_nothing() -> None:
    for model in ("gpt-4o", "gpt-unreleased"):
        got = price_one(model=model, input_tokens=5_000, output_tokens=500, cache_hit=True,
                        reported_cost_usd=0.3)  # fmt: skip
        assert got["cost_usd"] == 0.0 and got["cost_source"] == "cache_hit"
        assert got["cost_input_usd"] == 0.0 and got["cost_output_usd"] == 0.0


def test_output_schema_and_empty_batch() -> None:
    empty = price_table(pa.Table.from_pylist([], schema=SCHEMA), BUILTIN)
    assert empty.schema == COST_SCHEMA and empty.num_rows == 0


# ---- names and resolution ---------------------------------------------------------------------


def test_provider_aliases_and_model_prefix() -> None:
    assert canonical_provider("Vertex_AI") == "vertex"
    assert canonical_provider("vertex_ai-anthropic_models") == "vertex"
    assert canonical_provider("bedrock_converse") == "bedrock"
    assert canonical_provider("x-ai") == "xai" and canonical_provider("together_ai") == "together"
    assert canonical_provider("google_ai_studio") == "gemini"
    assert split_model("vertex_ai", "vertex_ai/gemini-2.5-pro") == ("vertex", "gemini-2.5-pro")
    assert split_model("openrouter", "anthropic/claude-x") == ("openrouter", "anthropic/claude-x")
    assert split_model("together_ai", "together/meta-llama/Llama-3") == ("together", "meta-llama/Llama-3")


def test_resolution_order() -> None:
    assert BUILTIN.resolve("openai", "gpt-4o-2024-08-06")[-1].model == "gpt-4o"
    assert BUILTIN.resolve("vertex", "claude-sonnet-4-5@20250929")[0].provider == "vertex"
    eu = BUILTIN.resolve("bedrock", "eu.anthropic.claude-haiku-4-5-20251001-v1:0")
    assert eu[0].model == "anthropic.claude-haiku-4-5-20251001-v1:0"
    us = BUILTIN.resolve("bedrock", "us.anthropic.claude-haiku-4-5-20251001-v1:0")
    assert us[0].input == 1.1e-06  # the cross-region profile's own price wins over the fallback
    assert BUILTIN.resolve("openai", "gpt-9") == [] and BUILTIN.resolve("nobody", "gpt-4o") == []
    snapshot = PriceEntry("t:a", "openai", "gpt-x-2024-01-01", JAN_2025, input=9e-6)
    cat = Catalog([PriceEntry("t:b", "openai", "gpt-x", JAN_2025, input=1e-6), snapshot])
    assert cat.resolve("openai", "gpt-x-2024-01-01") == [snapshot]  # exact beats stripped
    clash = Catalog([PriceEntry("t:1", "a", "m", JAN_2025, input=1e-6),
                     PriceEntry("t:2", "a", "m", JAN_2025, input=2e-6)])  # fmt: skip
    assert clash.resolve("a", "m") == [] and ("a", "m") in clash.ambiguous
    # layered: the top catalog first; what it lacks or finds ambiguous comes from the one below
    top = Catalog([PriceEntry("t:3", "openai", "gpt-4o", JAN_2025, input=1e-6),
                   PriceEntry("t:4", "openai", "gpt-4o", JAN_2025, input=2e-6),
                   PriceEntry("t:5", "openai", "gpt-x", JAN_2025, input=3e-6)]).over(BUILTIN)  # fmt: skip
    assert top.resolve("openai", "gpt-4o") == BUILTIN.resolve("openai", "gpt-4o")
    assert top.resolve("openai", "gpt-x")[0].id == "t:5"
    assert top.resolve("anthropic", "claude-sonnet-4-5") == BUILTIN.resolve("anthropic", "claude-sonnet-4-5")
    assert len(top) == len(BUILTIN) + 1


# ---- properties ---------------------------------------------------------------------------------

# Every model of the built-in catalog (tiers, batch tiers, batch cache prices, price histories)
# and one it does not know.
MODELS = sorted({(e.provider, e.model) for e in BUILTIN.entries()}) + [("acme", "unknown")]
counts = st.integers(0, 150_000)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    fresh, cached, write5, write1h, plain_out, reasoning = (draw(counts) for _ in range(6))
    provider, model = draw(st.sampled_from(MODELS))
    return event(
        provider=provider, model=model,
        timestamp=draw(st.datetimes(datetime(2023, 1, 1), datetime(2026, 12, 1), timezones=st.just(UTC))),
        input_tokens=fresh + cached + write5 + write1h, cached_input_tokens=cached,
        cache_write_tokens=write5 + write1h, cache_write_1h_tokens=write1h,
        output_tokens=plain_out + reasoning, reasoning_tokens=reasoning,
        batch=draw(st.booleans()), cache_hit=draw(st.booleans()),
        reported_cost_usd=draw(st.none() | st.floats(0, 100)),
    )  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(events(), min_size=1, max_size=20))
def test_cost_is_never_negative(rows: list[dict[str, Any]]) -> None:
    for got in price(rows):
        values = [got["cost_usd"]] + [got[f.name] for f in COST_SCHEMA if f.name.endswith("_usd")]
        assert all(v is None or v >= 0 for v in values)


TOKEN_STEPS = [
    {"input_tokens": 1},
    {"input_tokens": 1, "cached_input_tokens": 1},
    {"input_tokens": 1, "cache_write_tokens": 1},
    {"input_tokens": 1, "cache_write_tokens": 1, "cache_write_1h_tokens": 1},
    {"output_tokens": 1},
    {"output_tokens": 1, "reasoning_tokens": 1},
]


@settings(max_examples=200, deadline=None)
@given(events(), st.sampled_from(TOKEN_STEPS), st.integers(1, 100_000))
def test_adding_tokens_never_lowers_cost(row: dict[str, Any], step: dict, k: int) -> None:
    row.update(cache_hit=False, reported_cost_usd=None)
    more = {**row, **{name: row[name] + k * d for name, d in step.items()}}
    before, after = price([row, more])
    if before["cost_source"] == "catalog":
        assert after["cost_source"] == "catalog"
        assert after["cost_usd"] >= before["cost_usd"]


@settings(max_examples=100, deadline=None)
@given(st.lists(events(), min_size=1, max_size=30), st.sampled_from(["catalog_first", "reported_first"]))
def test_pricing_a_table_equals_pricing_each_row(rows: list[dict[str, Any]], policy: str) -> None:
    assert price(rows, policy=policy) == [price([r], policy=policy)[0] for r in rows]


# ---- catalogs -----------------------------------------------------------------------------------


def test_builtin_catalog_covers_the_major_providers() -> None:
    assert 120 <= len(BUILTIN) <= 400
    providers = {e.provider for e in BUILTIN.entries()}
    assert {"openai", "anthropic", "gemini", "vertex", "bedrock", "azure", "mistral",
            "deepseek", "xai", "groq", "together"} <= providers  # fmt: skip
    assert load_catalog("builtin").resolve("openai", "gpt-4o")[-1].input == 2.5e-06


def test_litellm_loader_reports_bad_entries_and_keeps_good_ones(tmp_path: Path) -> None:
    good = {"litellm_provider": "openai", "mode": "chat",
            "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}  # fmt: skip
    data = {
        "sample_spec": {"input_cost_per_token": 0.0, "litellm_provider": "x"},
        "good-model": good,
        "anthropic/good-claude": {
            "litellm_provider": "anthropic", "mode": "chat", "input_cost_per_token": 3e-6,
            "output_cost_per_token": 1.5e-5, "input_cost_per_token_above_200k_tokens": 6e-6,
            "cache_creation_input_token_cost_above_1hr_above_200k_tokens": 1.2e-5,
        },
        "good-alias": {"alias_of": "good-model"},
        "some-image-model": {"litellm_provider": "openai", "mode": "image_generation",
                             "output_cost_per_image": 0.04},
        "bad-string": {**good, "input_cost_per_token": "0.000001"},
        "bad-negative": {**good, "output_cost_per_token": -2e-6},
        "bad-alias": {"alias_of": "no-such-model"},
    }  # fmt: skip
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(data))
    catalog, problems = Catalog.from_litellm(path)
    assert len(problems) == 3, problems
    by_key = {p.split(":")[0]: p for p in problems}
    assert "input_cost_per_token: got '0.000001'" in by_key["bad-string"]
    assert "output_cost_per_token: got -2e-06" in by_key["bad-negative"]
    assert "alias_of: got 'no-such-model'" in by_key["bad-alias"]
    assert len(catalog) == 4
    assert catalog.resolve("openai", "some-image-model")[0].output_per_image == 0.04
    claude = catalog.resolve("anthropic", "good-claude")[0]
    (tier,) = claude.tiers
    assert (tier.above, tier.input, tier.cache_write_1h, tier.output) == (200_000, 6e-6, 1.2e-5, None)
    assert catalog.resolve("openai", "good-alias")[0].output == 2e-6
    assert catalog.resolve("openai", "bad-string") == []
    assert load_catalog(str(path)).resolve("openai", "good-model")[0].id == "litellm:good-model"
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(str(tmp_path / "missing.json"))


def test_litellm_real_file_loads() -> None:
    catalog, problems = Catalog.from_litellm(litellm_catalog_path())
    assert len(catalog) >= 4000
    # The file has no wrong-typed prices. Four models are listed twice with different prices
    # (deepseek-chat and deepseek/deepseek-chat, ...); the provider-prefixed key wins, as in
    # LiteLLM's own lookup, so nothing is ambiguous.
    assert problems == []
    assert catalog.resolve("deepseek", "deepseek-chat")[0].id == "litellm:deepseek/deepseek-chat"
    gpt4o = catalog.resolve("openai", "gpt-4o")[0]
    assert (gpt4o.input, gpt4o.output, gpt4o.cache_read, gpt4o.batch_input) == (2.5e-6, 1e-5, 1.25e-6, 1.25e-6)
    sonnet = catalog.resolve("anthropic", "claude-sonnet-4-5-20250929")[0]
    assert (sonnet.cache_write, sonnet.cache_write_1h) == (3.75e-6, 6e-6)
    pro = catalog.resolve("gemini", "gemini-2.5-pro")[0]
    assert [(t.above, t.input, t.output) for t in pro.tiers] == [(200_000, 2.5e-6, 1.5e-5)]
    assert catalog.resolve("vertex", "gemini-2.5-pro")[0].id == "litellm:gemini-2.5-pro"
    assert catalog.resolve("bedrock", "anthropic.claude-3-5-sonnet-20241022-v2:0")[0].input == 3e-6
    alias = catalog.resolve("bedrock", "claude-opus-latest")[0]
    target = catalog.resolve("bedrock", "global.anthropic.claude-opus-5-5")[0]
    assert alias.prices() == target.prices()
    got = price([event(input_tokens=10_000, cached_input_tokens=4_000, output_tokens=1_000)], catalog)
    assert got[0]["cost_usd"] == pytest.approx(0.030)
    assert got[0]["price_id"] == "litellm:gpt-4o"
