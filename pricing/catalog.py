"""Price entries, the catalog that holds their versions, and the two loaders (ours, LiteLLM's).

Rules the catalog keeps:
- Prices are USD per token, float64, exactly as providers publish them; ``None`` means "not
  published", never 0. A price the engine needs but the entry lacks makes the row unpriced.
- ``resolve`` returns every version of one (provider, model), oldest first, or ``[]`` when the
  model is unknown or ambiguous (two sources disagree on the same version). Nothing unknown is
  ever priced at $0.
- Lookup order: exact model; dated snapshot stripped (``gpt-4o-2024-08-06`` -> ``gpt-4o``,
  ``claude-…-20241022``, ``…@20241022``); Bedrock region prefix stripped (``us.``, ``eu.``,
  ``apac.``, ``global.``); both. A fallback is used only when the exact name is missing.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import defaultdict
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from pricing.names import split_model

log = logging.getLogger("spendlake.pricing")

PRICE_FIELDS = (
    "input", "output", "cache_read", "cache_write", "cache_write_1h", "reasoning",
    "batch_input", "batch_output",
    "tier_input", "tier_output", "tier_cache_read", "tier_cache_write", "tier_cache_write_1h",
)  # fmt: skip

# LiteLLM files carry no dates; their entries apply from the epoch (i.e. always).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class CatalogError(ValueError):
    """A price file cannot be used at all (unreadable, not JSON, wrong shape, no entries)."""


@dataclass(frozen=True, slots=True)
class PriceEntry:
    """One version of one model's list prices (USD per token), in force from ``effective_from``.

    ``cache_write`` is the 5-minute cache write; ``threshold_tokens`` starts a long-context tier:
    a request whose input_tokens exceed it is priced wholly at the ``tier_*`` prices.
    """

    id: str
    provider: str
    model: str
    effective_from: datetime
    input: float | None = None
    output: float | None = None
    cache_read: float | None = None
    cache_write: float | None = None
    cache_write_1h: float | None = None
    reasoning: float | None = None
    batch_input: float | None = None
    batch_output: float | None = None
    threshold_tokens: int | None = None
    tier_input: float | None = None
    tier_output: float | None = None
    tier_cache_read: float | None = None
    tier_cache_write: float | None = None
    tier_cache_write_1h: float | None = None

    def prices(self) -> tuple[Any, ...]:
        """What makes two entries bill the same (everything but id and source)."""
        return (self.threshold_tokens, *(getattr(self, name) for name in PRICE_FIELDS))


_DATE_SUFFIX = re.compile(r"[-@](\d{4}-\d{2}-\d{2}|20\d{6})$")
_REGION_PREFIX = re.compile(r"^(us|eu|apac|global)\.")


def _lookup_names(provider: str, model: str) -> list[str]:
    names = [model, _DATE_SUFFIX.sub("", model)]
    if provider == "bedrock":
        unregioned = _REGION_PREFIX.sub("", model)
        names += [unregioned, _DATE_SUFFIX.sub("", unregioned)]
    return list(dict.fromkeys(names))  # de-duplicated, order kept


class Catalog:
    """All price entries, grouped into versions per (provider, model). Immutable once built."""

    def __init__(self, entries: Iterable[PriceEntry], source: str = "") -> None:
        self.source = source
        grouped: dict[tuple[str, str], dict[datetime, PriceEntry]] = defaultdict(dict)
        ambiguous: dict[tuple[str, str], list[str]] = {}
        for entry in entries:
            key = (entry.provider, entry.model)
            seen = grouped[key].get(entry.effective_from)
            if seen is None:
                grouped[key][entry.effective_from] = entry
            elif seen.prices() != entry.prices():
                ambiguous.setdefault(key, [seen.id]).append(entry.id)
        self._versions = {
            key: tuple(sorted(v.values(), key=lambda e: e.effective_from))
            for key, v in grouped.items()
        }
        # (provider, model) -> ids of sources that disagree on one version: resolves to [].
        self.ambiguous: dict[tuple[str, str], tuple[str, ...]] = {
            key: tuple(ids) for key, ids in ambiguous.items()
        }
        self._cache: dict[tuple[str, str], list[PriceEntry]] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self._versions.values())

    def entries(self) -> list[PriceEntry]:
        return [e for versions in self._versions.values() for e in versions]

    def resolve(self, provider: str, model: str) -> list[PriceEntry]:
        """Every version of the model's prices, oldest first; ``[]`` = unknown or ambiguous."""
        hit = self._cache.get((provider, model))
        if hit is None:
            hit = self._resolve(provider, model)
            self._cache[(provider, model)] = hit
        return list(hit)

    def _resolve(self, provider: str, model: str) -> list[PriceEntry]:
        provider, model = split_model(provider, model)
        for name in _lookup_names(provider, model):
            key = (provider, name)
            if key in self.ambiguous:
                return []
            if key in self._versions:
                return list(self._versions[key])
        return []

    @classmethod
    def builtin(cls) -> Catalog:
        """spendlake's own catalog (``builtin_catalog.json``); a mistake in it is a bug: raises."""
        text = resources.files("pricing").joinpath("builtin_catalog.json").read_text("utf-8")
        entries, problems = _parse_builtin(json.loads(text))
        if problems:
            raise CatalogError("builtin catalog: " + "; ".join(problems))
        return cls(entries, source="builtin")

    @classmethod
    def from_litellm(cls, path: str | Path) -> tuple[Catalog, list[str]]:
        """Load a LiteLLM ``model_prices_and_context_window.json``.

        Returns the catalog of every good entry and one message per bad entry (naming the key,
        the field and the bad value) or per model two entries disagree on. Entries without any per-token price (images, seconds,
        queries) are skipped silently whatever their mode; ``alias_of`` entries get their
        target's prices under their own name.
        """
        try:
            data = json.loads(Path(path).read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise CatalogError(f"{path}: cannot read a LiteLLM price file: {exc}") from exc
        if not isinstance(data, dict):
            raise CatalogError(f"{path}: expected a JSON object of model entries")
        entries, problems = _parse_litellm(data)
        catalog = cls(entries, source=str(path))
        for (provider, model), ids in catalog.ambiguous.items():
            problems.append(
                f"{provider}/{model}: entries {', '.join(ids)} give different prices for the "
                "same model; it stays unpriced until one is removed"
            )
        return catalog, problems


def load_catalog(spec: str) -> Catalog:
    """``"builtin"`` or a path to a LiteLLM-format file.

    Bad or conflicting entries are logged (one warning listing them) and left out, so one typo
    in a 4,000-entry file does not stop ingest; an unreadable or empty file raises CatalogError.
    """
    if spec == "builtin":
        return Catalog.builtin()
    catalog, problems = Catalog.from_litellm(spec)
    if not len(catalog):
        raise CatalogError(f"{spec}: no usable price entries")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... and {len(problems) - 5} more" * (len(problems) > 5))
        log.warning("%s: %d price entry problems (those models stay unpriced): %s",
                    spec, len(problems), shown)  # fmt: skip
    return catalog


def _bad_price(value: Any) -> bool:
    return (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    )


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---- LiteLLM format -------------------------------------------------------------------------

LITELLM_FIELDS = {
    "input_cost_per_token": "input",
    "output_cost_per_token": "output",
    "cache_read_input_token_cost": "cache_read",
    "cache_creation_input_token_cost": "cache_write",
    "cache_creation_input_token_cost_above_1hr": "cache_write_1h",
    "output_cost_per_reasoning_token": "reasoning",
    "input_cost_per_token_batches": "batch_input",
    "output_cost_per_token_batches": "batch_output",
}
_TIER_KEY = re.compile(
    r"^(input_cost_per_token|output_cost_per_token|cache_read_input_token_cost"
    r"|cache_creation_input_token_cost(?:_above_1hr)?)_above_(\d+)k_tokens$"
)


def _litellm_prices(key: str, raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Our price fields from one LiteLLM entry, and what was wrong with it."""
    out: dict[str, Any] = {}
    bad: list[str] = []
    tiers: dict[int, dict[str, float]] = defaultdict(dict)
    for name, value in raw.items():
        tier = _TIER_KEY.match(name)
        if name not in LITELLM_FIELDS and not tier:
            continue
        if _bad_price(value):
            bad.append(f"{name}: got {_show(value)}, expected a number >= 0 (USD per token)")
        elif tier:
            tiers[int(tier.group(2)) * 1000]["tier_" + LITELLM_FIELDS[tier.group(1)]] = float(value)
        else:
            out[LITELLM_FIELDS[name]] = float(value)
    if tiers:
        # One tier is modelled; with several (5 entries in 2025 files) the lowest one applies.
        threshold = min(tiers)
        out["threshold_tokens"] = threshold
        out.update(tiers[threshold])
    return out, bad


def _parse_litellm(data: dict[str, Any]) -> tuple[list[PriceEntry], list[str]]:
    entries: dict[str, PriceEntry] = {}
    problems: list[str] = []
    aliases: dict[str, Any] = {}
    for key, raw in data.items():
        if key == "sample_spec":
            continue
        if not isinstance(raw, dict):
            problems.append(f"{key}: got {_show(raw)}, expected an object of prices")
            continue
        if "alias_of" in raw:
            aliases[key] = raw["alias_of"]
            continue
        prices, bad = _litellm_prices(key, raw)
        provider = raw.get("litellm_provider")
        if prices and not isinstance(provider, str):
            bad.append(f"litellm_provider: got {_show(provider)}, expected a provider name")
        if bad:
            problems.append(f"{key}: " + "; ".join(bad))
        elif "input" in prices or "output" in prices:
            assert isinstance(provider, str)
            canonical, model = split_model(provider, key)
            entries[key] = PriceEntry(f"litellm:{key}", canonical, model, EPOCH, **prices)
    for key, target in aliases.items():
        seen = {key}
        while isinstance(target, str) and target in aliases and target not in seen:
            seen.add(target)
            target = aliases[target]
        if not isinstance(target, str) or target not in data or target in seen:
            problems.append(f"{key}: alias_of: got {_show(target)}, expected another model's key")
        elif target in entries:  # a target skipped for having no token price is no problem
            base = entries[target]
            _, model = split_model(base.provider, key)
            values = {f.name: getattr(base, f.name) for f in fields(PriceEntry)}
            values.update(id=f"litellm:{key}", model=model)
            entries[key] = PriceEntry(**values)
    return list(entries.values()), problems


# ---- spendlake's own format -----------------------------------------------------------------


def _parse_builtin(data: dict[str, Any]) -> tuple[list[PriceEntry], list[str]]:
    """``{"format": "spendlake-prices/1", "models": [{provider, model, effective_from, ...}]}``.

    Each model row holds our field names directly; ``tier`` is an object with
    ``threshold_tokens`` and the tier's input/output/cache_read/cache_write(_1h) prices.
    """
    entries: list[PriceEntry] = []
    problems: list[str] = []
    if data.get("format") != "spendlake-prices/1":
        return [], [f"format: got {_show(data.get('format'))}, expected 'spendlake-prices/1'"]
    for row in data["models"]:
        row = dict(row)
        provider, model = split_model(row.pop("provider"), row.pop("model"))
        name = f"{provider}/{model}"
        try:
            since = datetime.fromisoformat(row.pop("effective_from")).replace(tzinfo=UTC)
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"{name}: effective_from: {exc}")
            continue
        tier = row.pop("tier", None) or {}
        values = {**row, **{f"tier_{k}": v for k, v in tier.items() if k != "threshold_tokens"}}
        bad = [f"{k}: got {_show(v)}" for k, v in values.items()
               if k not in PRICE_FIELDS or _bad_price(v)]  # fmt: skip
        if bad or "input" not in values:
            problems.append(f"{name}: " + ("; ".join(bad) or "input: missing"))
            continue
        entries.append(
            PriceEntry(
                id=f"builtin:{name}@{since.date().isoformat()}",
                provider=provider,
                model=model,
                effective_from=since,
                threshold_tokens=tier.get("threshold_tokens"),
                **{k: float(v) for k, v in values.items()},
            )
        )
    return entries, problems
