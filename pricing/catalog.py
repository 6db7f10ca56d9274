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

from pricing.names import canonical_provider, split_model

log = logging.getLogger("spendlake.pricing")

PRICE_FIELDS = (
    "input", "output", "cache_read", "cache_write", "cache_write_1h", "reasoning",
    "batch_input", "batch_output", "batch_cache_read", "batch_cache_write",
    "per_request", "input_per_image", "output_per_image", "input_per_second", "output_per_second",
)  # fmt: skip
# Prices per unit other than a token (USD per request, image or second).
UNIT_FIELDS = ("per_request", "input_per_image", "output_per_image", "input_per_second", "output_per_second")
TIER_FIELDS = ("input", "output", "cache_read", "cache_write", "cache_write_1h", "reasoning")
TIER_KINDS = ("threshold", "range")
BATCH_TIER_FIELDS = ("input", "output", "cache_read", "cache_write")

# LiteLLM files carry no dates; their entries apply from the epoch (i.e. always).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class CatalogError(ValueError):
    """A price file cannot be used at all (unreadable, not JSON, wrong shape, no entries)."""


@dataclass(frozen=True, slots=True)
class Tier:
    """The prices of requests whose input_tokens n satisfy ``above < n <= up_to``.

    Which tier a request falls in depends on its input tokens only (cached and cache-write
    tokens count, as they are part of input), and the whole request is billed at that tier.
    ``None`` means "not in this tier": the engine falls back as the entry's ``tier_kind`` says.
    """

    above: float
    up_to: float = math.inf
    input: float | None = None
    output: float | None = None
    cache_read: float | None = None
    cache_write: float | None = None
    cache_write_1h: float | None = None
    reasoning: float | None = None


@dataclass(frozen=True, slots=True)
class PriceEntry:
    """One version of one model's list prices (USD per token), in force from ``effective_from``.

    ``cache_write`` is the 5-minute cache write, ``cache_write_1h`` the 1-hour one. ``tiers``
    (sorted by ``above``) move a request to other prices by its input size:

    - ``tier_kind="threshold"`` (long-context pricing: Gemini, Claude, GPT above 200k/272k):
      the tier of the highest threshold the request is strictly above applies; a price the tier
      lacks is the entry's own price for that part.
    - ``tier_kind="range"`` (LiteLLM ``tiered_pricing`` range tables, Qwen and others): the
      first tier whose range holds the request applies, the last one beyond every range; cache
      prices the tier lacks are the tier's input price, a missing output price the entry's own.

    Batch prices (``batch_*``) have long-context thresholds of their own (``batch_tiers``, input,
    output, cache_read and cache_write only): each price takes the value of the highest
    threshold the request is above that lists it, else its flat batch price.

    Unit prices: ``per_request`` is added to every request; ``output_per_image`` (image
    generation) or else ``input_per_image`` times the event's ``images``; ``input_per_second``
    (transcription) or else ``output_per_second`` (speech, video) times its ``duration_seconds``.
    """

    def has_token_prices(self) -> bool:
        return self.input is not None or self.output is not None or bool(self.tiers)

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
    batch_cache_read: float | None = None
    batch_cache_write: float | None = None
    per_request: float | None = None
    input_per_image: float | None = None
    output_per_image: float | None = None
    input_per_second: float | None = None
    output_per_second: float | None = None
    tiers: tuple[Tier, ...] = ()
    tier_kind: str = "threshold"
    batch_tiers: tuple[Tier, ...] = ()

    def prices(self) -> tuple[Any, ...]:
        """What makes two entries bill the same (everything but id, names and date)."""
        return (self.tier_kind, self.tiers, self.batch_tiers, *(getattr(self, name) for name in PRICE_FIELDS))


def threshold_tiers(tiers: dict[float, dict[str, float]], inclusive: bool = False) -> tuple[Tier, ...]:
    """Tiers from ``{threshold: {field: price}}``: each runs up to the next threshold.

    ``inclusive`` makes a request of exactly ``threshold`` input tokens part of the tier (xAI
    bills the higher tier once the prompt reaches the threshold); integer token counts make
    that ``above = threshold - 1``.
    """
    starts = sorted(tiers)
    return tuple(
        Tier(
            above=t - 1 if inclusive else t,
            up_to=(starts[i + 1] - 1 if inclusive else starts[i + 1]) if i + 1 < len(starts) else math.inf,
            **tiers[t],
        )
        for i, t in enumerate(starts)
    )


# Providers whose long-context tier starts AT the threshold rather than above it (LiteLLM's
# calculator does the same for these).
INCLUSIVE_THRESHOLD_PROVIDERS = frozenset({"xai"})


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
        self.fallback: Catalog | None = None

    def over(self, fallback: Catalog) -> Catalog:
        """This catalog, asking ``fallback`` for models it does not know or finds ambiguous (an
        imported LiteLLM file over the built-in list)."""
        layered = Catalog([], source=f"{self.source} over {fallback.source}")
        layered._versions, layered.ambiguous = self._versions, self.ambiguous
        layered.fallback = fallback
        return layered

    def __len__(self) -> int:
        return len(self.entries())

    def entries(self) -> list[PriceEntry]:
        """Every entry a lookup can return (not those of ambiguous models)."""
        own = [e for key, versions in self._versions.items() if key not in self.ambiguous for e in versions]
        if self.fallback is None:
            return own
        mine = set(self._versions) - set(self.ambiguous)
        return own + [e for e in self.fallback.entries() if (e.provider, e.model) not in mine]

    def resolve(self, provider: str, model: str) -> list[PriceEntry]:
        """Every version of the model's prices, oldest first; ``[]`` = unknown or ambiguous."""
        hit = self._cache.get((provider, model))
        if hit is None:
            hit = self._resolve(provider, model)
            self._cache[(provider, model)] = hit
        return list(hit)

    def _resolve(self, provider: str, model: str) -> list[PriceEntry]:
        canonical, name_ = split_model(provider, model)
        for name in _lookup_names(canonical, name_):
            key = (canonical, name)
            if key in self.ambiguous:
                break  # never guess between two prices; a fallback catalog may still know it
            if key in self._versions:
                return list(self._versions[key])
        return self.fallback.resolve(provider, model) if self.fallback is not None else []

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
    """``"builtin"`` or a path to a LiteLLM-format file (alone: that file is the catalog).

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
    "cache_read_input_token_cost_batches": "batch_cache_read",
    "cache_creation_input_token_cost_batches": "batch_cache_write",
    "input_cost_per_request": "per_request",
    "input_cost_per_image": "input_per_image",
    "output_cost_per_image": "output_per_image",
    "input_cost_per_second": "input_per_second",
    "output_cost_per_second": "output_per_second",
}
# Image models list their output tokens here instead of output_cost_per_token.
_IMAGE_OUTPUT = "output_cost_per_image_token"
_THRESHOLD_KEY = re.compile(
    r"^(input_cost_per_token|output_cost_per_token|cache_read_input_token_cost"
    r"|cache_creation_input_token_cost(?:_above_1hr)?)_above_(\d+(?:\.\d+)?)(k?)_tokens$"
)
_BATCH_THRESHOLD_KEY = re.compile(
    r"^(input_cost_per_token|output_cost_per_token|cache_read_input_token_cost"
    r"|cache_creation_input_token_cost)_above_(\d+(?:\.\d+)?)(k?)_tokens_batches$"
)
# Keys of a tiered_pricing row (LiteLLM's names) -> ours.
_RANGE_FIELDS = {k: v for k, v in LITELLM_FIELDS.items() if v in TIER_FIELDS}


def _litellm_prices(raw: dict[str, Any], inclusive: bool) -> tuple[dict[str, Any], list[str]]:
    """Our price fields from one LiteLLM entry, and what was wrong with it.

    Read: the per-token prices above, the long-context thresholds
    (``…_above_<N>k_tokens``), a ``tiered_pricing`` range table, the image-output token price
    where no output price is given, and per-request, per-image and per-second prices. Not read
    (they need usage the event does not carry): service tiers (``_priority``, ``_flex``),
    audio/image/video token prices, per-query, per-character and per-pixel prices, image sizes
    and qualities, regional multipliers, off-peak windows.
    """
    out: dict[str, Any] = {}
    bad: list[str] = []
    tiers: dict[float, dict[str, float]] = defaultdict(dict)
    batch_tiers: dict[float, dict[str, float]] = defaultdict(dict)
    for name, value in raw.items():
        tier = _THRESHOLD_KEY.match(name)
        batch_tier = _BATCH_THRESHOLD_KEY.match(name)
        if name not in LITELLM_FIELDS and not tier and not batch_tier and name != _IMAGE_OUTPUT:
            continue
        if value is None:
            continue  # LiteLLM writes null for "no price"; the same as leaving the key out
        if _bad_price(value):
            bad.append(f"{name}: got {_show(value)}, expected a number >= 0 (USD per token)")
        elif tier:
            threshold = float(tier.group(2)) * (1000 if tier.group(3) else 1)
            tiers[threshold][LITELLM_FIELDS[tier.group(1)]] = float(value)
        elif batch_tier:
            threshold = float(batch_tier.group(2)) * (1000 if batch_tier.group(3) else 1)
            batch_tiers[threshold][LITELLM_FIELDS[batch_tier.group(1)]] = float(value)
        elif name == _IMAGE_OUTPUT:
            out.setdefault("_image_output", float(value))
        else:
            out[LITELLM_FIELDS[name]] = float(value)
    image_output = out.pop("_image_output", None)
    if not out.get("output") and image_output is not None:
        out["output"] = image_output  # as LiteLLM: an output price of 0 or none -> image tokens
    # A threshold tier exists where its input price does (LiteLLM keys tiers on that price).
    tiers = {t: p for t, p in tiers.items() if "input" in p}
    if tiers:
        out["tiers"] = threshold_tiers(tiers, inclusive)
    if batch_tiers:
        out["batch_tiers"] = threshold_tiers(batch_tiers, inclusive)
    table = raw.get("tiered_pricing")
    if table is not None:
        ranges, problems = _range_tiers(table)
        bad += problems
        if ranges:
            out["tiers"], out["tier_kind"] = ranges, "range"
    return out, bad


def _range_tiers(table: Any) -> tuple[tuple[Tier, ...], list[str]]:
    if not isinstance(table, list):
        return (), [f"tiered_pricing: got {_show(table)}, expected a list of tiers"]
    tiers: list[Tier] = []
    bad: list[str] = []
    for i, row in enumerate(table):
        if isinstance(row, dict) and not any(k in row for k in _RANGE_FIELDS):
            continue  # a tier of something else (search results per query): not token pricing
        rng = row.get("range") if isinstance(row, dict) else None
        if (
            not isinstance(rng, list) or len(rng) != 2 or any(_bad_price(x) for x in rng)
            or rng[0] > rng[1]
        ):  # fmt: skip
            bad.append(f"tiered_pricing[{i}].range: got {_show(rng)}, expected [start, end]")
            continue
        assert isinstance(row, dict)
        prices = {}
        for key, field in _RANGE_FIELDS.items():
            value = row.get(key)
            if value is not None and _bad_price(value):
                bad.append(f"tiered_pricing[{i}].{key}: got {_show(value)}, expected a number >= 0")
            elif value:  # LiteLLM reads tier prices with `or`: a 0 means "not set" there too
                prices[field] = float(value)
        if "input" in prices:  # LiteLLM ignores a tier without an input price
            tiers.append(Tier(above=float(rng[0]), up_to=float(rng[1]), **prices))
    return tuple(sorted(tiers, key=lambda t: t.above)), bad


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
        provider = raw.get("litellm_provider")
        inclusive = isinstance(provider, str) and canonical_provider(provider) in INCLUSIVE_THRESHOLD_PROVIDERS
        prices, bad = _litellm_prices(raw, inclusive)
        if prices and not isinstance(provider, str):
            bad.append(f"litellm_provider: got {_show(provider)}, expected a provider name")
        if bad:
            problems.append(f"{key}: " + "; ".join(bad))
        elif "input" in prices or "output" in prices or "tiers" in prices or prices.keys() & set(UNIT_FIELDS):
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
    return _prefer_prefixed(entries), problems


def _prefer_prefixed(entries: dict[str, PriceEntry]) -> list[PriceEntry]:
    """One entry per (provider, model) where LiteLLM lists a model twice.

    The file sometimes has both ``deepseek-chat`` and ``deepseek/deepseek-chat``, or
    ``perplexity/sonar`` and ``perplexity/perplexity/sonar``, with different prices. LiteLLM's
    lookup collapses a repeated provider prefix and then tries ``<provider>/<model>`` before
    the bare name, so the key with exactly one provider prefix is what it bills; we keep that
    one. Keys that disagree without such a winner stay ambiguous (and unpriced) in Catalog.
    """
    by_model: dict[tuple[str, str], list[tuple[str, PriceEntry]]] = defaultdict(list)
    for key, entry in entries.items():
        by_model[(entry.provider, entry.model)].append((key, entry))
    kept: list[PriceEntry] = []
    for (provider, model), group in by_model.items():
        if len(group) > 1 and len({e.prices() for _, e in group}) > 1:
            once = [e for key, e in group
                    if key.partition("/")[2] == model and canonical_provider(key.partition("/")[0]) == provider]
            if len(once) == 1:
                group = [("", once[0])]
        kept.extend(e for _, e in group)
    return kept


# ---- spendlake's own format -----------------------------------------------------------------


def _parse_builtin(data: dict[str, Any]) -> tuple[list[PriceEntry], list[str]]:
    """``{"format": "spendlake-prices/1", "models": [{provider, model, effective_from, ...}]}``.

    Each model row holds our field names directly; ``tier`` is an object with
    ``threshold_tokens`` and the long-context tier's prices (TIER_FIELDS), ``batch_tier`` the
    same for batch prices (BATCH_TIER_FIELDS: input, output, cache_read, cache_write).
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
        bad: list[str] = []
        tiers: dict[str, tuple[Tier, ...]] = {}
        for key, allowed in (("tier", TIER_FIELDS), ("batch_tier", BATCH_TIER_FIELDS)):
            tier = row.pop(key, None) or {}
            tier_prices = {k: v for k, v in tier.items() if k != "threshold_tokens"}
            bad += [f"{key}.{k}: got {_show(v)}" for k, v in tier_prices.items()
                    if k not in allowed or _bad_price(v)]  # fmt: skip
            if tier and _bad_price(tier.get("threshold_tokens")):
                bad.append(f"{key}.threshold_tokens: got {_show(tier.get('threshold_tokens'))}")
            elif tier:
                tiers[key] = threshold_tiers(
                    {float(tier["threshold_tokens"]): {k: float(v) for k, v in tier_prices.items()}},
                    inclusive=provider in INCLUSIVE_THRESHOLD_PROVIDERS,
                )
        bad += [f"{k}: got {_show(v)}" for k, v in row.items()
                if k not in PRICE_FIELDS or _bad_price(v)]  # fmt: skip
        if bad or "input" not in row:
            problems.append(f"{name}: " + ("; ".join(bad) or "input: missing"))
            continue
        entries.append(
            PriceEntry(
                id=f"builtin:{name}@{since.date().isoformat()}",
                provider=provider,
                model=model,
                effective_from=since,
                tiers=tiers.get("tier", ()),
                batch_tiers=tiers.get("batch_tier", ()),
                **{k: float(v) for k, v in row.items()},  # type: ignore[arg-type]
            )
        )
    return entries, problems
