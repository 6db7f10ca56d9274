"""Negotiated rates: discounts and explicit prices per customer, team or virtual key."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import pricing_schema
from pricing import Catalog, parse_overrides, price_table
from spendlake import settings as spendlake_settings

BUILTIN = Catalog.builtin()
JAN = datetime(2026, 1, 15, tzinfo=UTC)
SCHEMA = pricing_schema("virtual_key", "team", "customer")
# gpt-4o (builtin, since 2024-10-02): $2.50 in, $1.25 cached, $10 out per million tokens.
GPT4O = 10_000 * 2.5e-6 + 1_000 * 10e-6  # 0.035


def row(**fields: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "provider": "openai", "model": "gpt-4o", "timestamp": JAN, "input_tokens": 10_000,
        "output_tokens": 1_000, "cached_input_tokens": 0, "cache_write_tokens": 0,
        "cache_write_1h_tokens": 0, "reasoning_tokens": 0, "batch": False, "cache_hit": False,
        "reported_cost_usd": None, "virtual_key": "vk-1", "team": "team-a", "customer": "cust-x",
    }  # fmt: skip
    r.update(fields)
    return r


def overrides(*items: dict[str, Any]) -> list[Any]:
    parsed, problems = parse_overrides(list(items))
    assert problems == []
    return parsed


def price(rows: list[dict[str, Any]], ovr: list[Any]) -> list[dict[str, Any]]:
    return price_table(pa.Table.from_pylist(rows, schema=SCHEMA), BUILTIN, overrides=ovr).to_pylist()


def test_customer_discount_scales_every_part() -> None:
    ovr = overrides({"scope": "customer", "id": "cust-x", "discount": 0.2})
    got, other = price([row(cached_input_tokens=4_000), row(customer="cust-y")], ovr)
    assert got["cost_source"] == "override"
    assert got["cost_input_usd"] == pytest.approx(6_000 * 2.5e-6 * 0.8)
    assert got["cost_cached_input_usd"] == pytest.approx(4_000 * 1.25e-6 * 0.8)
    assert got["cost_usd"] == pytest.approx((6_000 * 2.5e-6 + 4_000 * 1.25e-6 + 1_000 * 10e-6) * 0.8)
    assert got["price_id"] == "override:customer=cust-x|builtin:openai/gpt-4o@2024-10-02"
    assert other["cost_source"] == "catalog" and other["cost_usd"] == pytest.approx(GPT4O)


def test_most_specific_override_wins_and_dates_bound_it() -> None:
    ovr = overrides(
        {"scope": "virtual_key", "id": "vk-1", "discount": 0.5, "effective_from": "2026-02-01"},
        {"scope": "customer", "id": "cust-x", "discount": 0.1},
        {"scope": "team", "id": "team-a", "discount": 0.3, "effective_until": "2026-03-01"},
    )
    jan, feb, mar = price(
        [row(), row(timestamp=datetime(2026, 2, 1, tzinfo=UTC)), row(timestamp=datetime(2026, 3, 1, tzinfo=UTC))],
        ovr,
    )
    assert jan["cost_usd"] == pytest.approx(GPT4O * 0.7)  # team beats customer; VK not yet
    assert feb["cost_usd"] == pytest.approx(GPT4O * 0.5)  # VK in force from Feb 1
    assert mar["cost_usd"] == pytest.approx(GPT4O * 0.5)
    assert jan["price_id"].startswith("override:team=team-a|")


def test_explicit_prices_replace_the_catalog_and_price_unknown_models() -> None:
    ovr = overrides(
        {"scope": "team", "id": "team-a", "provider": "openai", "model": "gpt-4o",
         "input_usd_per_mtok": 2.0, "output_usd_per_mtok": 8.0},
        {"scope": "customer", "id": "cust-x", "provider": "acme", "model": "private-ft",
         "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 3.0},
    )  # fmt: skip
    gpt, snapshot, private, not_covered = price(
        [row(cached_input_tokens=4_000), row(model="gpt-4o-2024-11-20"),
         row(provider="acme", model="private-ft"), row(model="gpt-4o-mini")],
        ovr,
    )  # fmt: skip
    # the override has no cached price: cached tokens bill at its input price
    assert gpt["cost_usd"] == pytest.approx(10_000 * 2e-6 + 1_000 * 8e-6)
    assert gpt["price_id"] == "override:team=team-a:openai/gpt-4o"
    assert snapshot["cost_usd"] == pytest.approx(10_000 * 2e-6 + 1_000 * 8e-6)  # resolves to gpt-4o
    assert private["cost_source"] == "override" and private["cost_usd"] == pytest.approx(0.013)
    assert not_covered["cost_source"] == "catalog"


def test_discount_never_prices_an_unknown_model() -> None:
    ovr = overrides({"scope": "customer", "id": "cust-x", "discount": 0.5})
    (got,) = price([row(model="gpt-unreleased")], ovr)
    assert got["cost_usd"] is None and got["cost_source"] == "unpriced"


def test_provider_wide_discount() -> None:
    ovr = overrides({"scope": "customer", "id": "cust-x", "provider": "anthropic", "discount": 0.25})
    claude, gpt = price([row(provider="anthropic", model="claude-sonnet-4-5", output_tokens=0), row()], ovr)
    assert claude["cost_usd"] == pytest.approx(10_000 * 3e-6 * 0.75)
    assert gpt["cost_source"] == "catalog"


MIXED = overrides(
    {"scope": "customer", "id": "cust-x", "discount": 0.1},
    {"scope": "team", "id": "team-a", "discount": 0.3, "effective_until": "2026-02-01"},
    {"scope": "team", "id": "team-b", "provider": "openai", "model": "gpt-4o",
     "input_usd_per_mtok": 2.0, "output_usd_per_mtok": 8.0},
    {"scope": "virtual_key", "id": "vk-2", "discount": 0.5, "effective_from": "2026-01-20"},
)  # fmt: skip


@st.composite
def attributed(draw: st.DrawFn) -> dict[str, Any]:
    return row(
        model=draw(st.sampled_from(["gpt-4o", "gpt-4o-mini", "gpt-unreleased"])),
        timestamp=datetime(2026, 1, draw(st.integers(1, 31)), tzinfo=UTC),
        virtual_key=draw(st.sampled_from(["vk-1", "vk-2", None])),
        team=draw(st.sampled_from(["team-a", "team-b", "team-c", None])),
        customer=draw(st.sampled_from(["cust-x", "cust-y", None])),
        input_tokens=draw(st.integers(0, 50_000)), output_tokens=draw(st.integers(0, 5_000)),
        batch=draw(st.booleans()),
    )  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(st.lists(attributed(), min_size=1, max_size=40))
def test_overrides_price_a_table_as_they_price_each_row(rows: list[dict[str, Any]]) -> None:
    together = price(rows, MIXED)
    assert together == [price([r], MIXED)[0] for r in rows]
    for r, got in zip(rows, together):
        assert got["cost_usd"] is None or got["cost_usd"] >= 0
        if got["cost_source"] == "override":
            assert r["customer"] == "cust-x" or r["team"] in ("team-a", "team-b") or r["virtual_key"] == "vk-2"


def test_every_mistake_is_reported_at_once(tmp_path: Path) -> None:
    cfg = tmp_path / "spendlake.toml"
    cfg.write_text(
        """
[pricing]
catalog = "builtin"

[[pricing.overrides]]
scope = "division"
id = "x"
discount = 1.5

[[pricing.overrides]]
scope = "team"
id = "team-a"
model = "gpt-4o"
input_usd_per_mtok = -1
colour = "blue"

[[pricing.overrides]]
scope = "customer"
id = "c"
discount = 0.1
effective_from = "someday"
"""
    )
    with pytest.raises(spendlake_settings.ConfigError) as err:
        spendlake_settings.load(str(cfg), env={})
    text = str(err.value)
    for needle in (
        "#1 scope: got 'division'", "#1 discount: got 1.5", "#2 colour: unknown key",
        "#2 model: 'gpt-4o' needs a provider", "#2 input_usd_per_mtok: got -1",
        "#3 effective_from: got 'someday'",
    ):  # fmt: skip
        assert needle in text, text
    good = tmp_path / "good.toml"
    good.write_text('[[pricing.overrides]]\nscope = "team"\nid = "t"\ndiscount = 0.1\n')
    assert len(spendlake_settings.load(str(good), env={}).overrides) == 1
