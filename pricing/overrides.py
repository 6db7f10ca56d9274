"""Negotiated rates: per customer, team or virtual key, a discount or explicit prices.

In ``spendlake.toml``::

    [[pricing.overrides]]
    scope = "customer"              # customer | team | virtual_key
    id = "customer-acme"
    discount = 0.15                 # 15% off the catalog cost of every model
    effective_from = "2026-01-01"   # optional (UTC day or RFC 3339); until = exclusive end

    [[pricing.overrides]]
    scope = "team"
    id = "team-research"
    provider = "openai"             # a provider alone narrows a discount to it
    model = "gpt-4o"                # explicit prices need provider and model
    input_usd_per_mtok = 2.0        # USD per million tokens, as price lists are written
    output_usd_per_mtok = 8.0       # also: cached_input_, cache_write_, cache_write_1h_,
                                    # reasoning_, batch_input_, batch_output_usd_per_mtok

Rules:
- The most specific override in force wins: a virtual key's over its team's over its
  customer's; among one owner's overrides, the latest effective_from. They match the event's
  own ``virtual_key`` / ``team`` / ``customer`` fields.
- A discount scales every cost part of a catalog-priced row; an unknown model stays unpriced.
- Explicit prices are a complete price list for that model (missing cache prices fall back to
  the override's input price, as in the catalog; no long-context tiers), and they price a
  model the catalog does not know, such as a private fine-tune.
- Priced rows carry ``cost_source = "override"`` and a ``price_id`` naming the override.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pricing.catalog import EPOCH, PriceEntry
from pricing.names import canonical_provider, split_model

SCOPES = ("customer", "team", "virtual_key")
PRICE_KEYS = {
    "input_usd_per_mtok": "input",
    "output_usd_per_mtok": "output",
    "cached_input_usd_per_mtok": "cache_read",
    "cache_write_usd_per_mtok": "cache_write",
    "cache_write_1h_usd_per_mtok": "cache_write_1h",
    "reasoning_usd_per_mtok": "reasoning",
    "batch_input_usd_per_mtok": "batch_input",
    "batch_output_usd_per_mtok": "batch_output",
}
KEYS = {"scope", "id", "provider", "model", "discount", "effective_from", "effective_until", *PRICE_KEYS}
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Override:
    scope: str
    owner: str
    effective_from: datetime = EPOCH
    effective_until: datetime = FAR_FUTURE
    provider: str | None = None
    model: str | None = None
    discount: float | None = None
    entry: PriceEntry | None = None

    @property
    def id(self) -> str:
        what = "" if self.provider is None else f":{self.provider}" + (f"/{self.model}" if self.model else "")
        since = "" if self.effective_from == EPOCH else f"@{self.effective_from.date().isoformat()}"
        return f"override:{self.scope}={self.owner}{what}{since}"

    def always(self) -> bool:
        return self.effective_from == EPOCH and self.effective_until == FAR_FUTURE

    def in_force(self, ts_ms: np.ndarray) -> np.ndarray:
        lo = int(self.effective_from.timestamp() * 1000)
        hi = int(self.effective_until.timestamp() * 1000)
        return (ts_ms >= lo) & (ts_ms < hi)

    def matches(self, provider: str, model: str) -> bool:
        """Whether this override covers (provider, model); model is the catalog's name when
        the event's model resolved to a catalog entry (snapshots and regions stripped)."""
        if self.provider is not None and canonical_provider(provider) != self.provider:
            return False
        return self.model is None or model == self.model


def _when(value: Any, key: str, where: str, problems: list[str]) -> datetime | None:
    if value is None:
        return None
    try:
        if not isinstance(value, (str, datetime)):
            raise TypeError
        dt = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    except (TypeError, ValueError):
        problems.append(f"{where} {key}: got {value!r}, expected a date like 2026-01-01")
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def parse_overrides(raw: Any) -> tuple[list[Override], list[str]]:
    """``[[pricing.overrides]]`` tables → overrides, and every problem found (all at once)."""
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        return [], [f"[pricing] overrides: got {raw!r}, expected [[pricing.overrides]] tables"]
    out: list[Override] = []
    problems: list[str] = []
    for i, item in enumerate(raw):
        where = f"[[pricing.overrides]] #{i + 1}"
        if not isinstance(item, dict):
            problems.append(f"{where}: got {item!r}, expected a table")
            continue
        before = len(problems)
        for key in sorted(set(item) - KEYS):
            problems.append(f"{where} {key}: unknown key (known: {', '.join(sorted(KEYS))})")
        scope, owner = item.get("scope"), item.get("id")
        if scope not in SCOPES:
            problems.append(f"{where} scope: got {scope!r}, expected one of {', '.join(SCOPES)}")
        if not isinstance(owner, str) or not owner:
            problems.append(f"{where} id: got {owner!r}, expected the {scope or 'owner'}'s id")
        provider, model = item.get("provider"), item.get("model")
        for key, value in (("provider", provider), ("model", model)):
            if value is not None and (not isinstance(value, str) or not value):
                problems.append(f"{where} {key}: got {value!r}, expected a name")
        if model is not None and provider is None:
            problems.append(f"{where} model: {model!r} needs a provider too")
        since = _when(item.get("effective_from"), "effective_from", where, problems) or EPOCH
        until = _when(item.get("effective_until"), "effective_until", where, problems) or FAR_FUTURE
        if until <= since:
            problems.append(f"{where} effective_until: got {item.get('effective_until')!r}, "
                            "expected a time after effective_from")  # fmt: skip
        discount = item.get("discount")
        if discount is not None and (
            isinstance(discount, bool) or not isinstance(discount, (int, float)) or not 0 <= discount <= 1
        ):
            problems.append(f"{where} discount: got {discount!r}, expected a fraction from 0 to 1 (0.15 = 15% off)")
        prices: dict[str, float] = {}
        for key, field in PRICE_KEYS.items():
            if key not in item:
                continue
            value = item[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                problems.append(f"{where} {key}: got {value!r}, expected a number >= 0 (USD per million tokens)")
            else:
                prices[field] = float(value) / 1_000_000
        if prices and discount is not None:
            problems.append(f"{where}: give a discount or explicit prices, not both")
        if not prices and discount is None:
            problems.append(f"{where}: expected a discount or explicit prices (input_usd_per_mtok, ...)")
        if prices and (provider is None or model is None):
            problems.append(f"{where}: explicit prices need provider and model")
        if prices and "input" not in prices and "output" not in prices:
            problems.append(f"{where}: explicit prices need input_usd_per_mtok or output_usd_per_mtok")
        if len(problems) > before:
            continue
        assert isinstance(scope, str) and isinstance(owner, str)
        cp = canonical_provider(provider) if provider is not None else None
        cm = split_model(provider, model)[1] if provider is not None and model is not None else None
        override = Override(scope, owner, since, until, cp, cm,
                            float(discount) if discount is not None else None)  # fmt: skip
        if prices:
            assert cp is not None and cm is not None
            entry = PriceEntry(override.id, cp, cm, since, **prices)  # type: ignore[arg-type]
            override = Override(scope, owner, since, until, cp, cm, None, entry)
        out.append(override)
    return out, problems
