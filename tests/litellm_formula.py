"""An independent oracle: LiteLLM's published token cost formula, restated on raw catalog entries.

This is our own scalar re-statement of the rules LiteLLM applies to one entry of its
``model_prices_and_context_window.json`` (our code and words; the facts come from reading
LiteLLM's source, cited per rule below as ``file::function``). It exists to check spendlake's
vectorised engine against something written differently; it is never used to price anything.

Token conventions are spendlake's contract 1, which are also LiteLLM's ``Usage``:
``input_tokens`` is LiteLLM's ``prompt_tokens`` (cached and cache-write tokens included),
``output_tokens`` is ``completion_tokens`` (reasoning included).

``fill_missing=False`` is LiteLLM as published in ``llm_cost_calc/utils.py`` of the versions we
could read: a price the entry lacks bills at $0. ``fill_missing=True`` is spendlake's rule (and,
by its tests, the newest LiteLLM's): once the prices in force are known (a long-context tier's,
above a threshold), a missing cache read or cache write price is the input price in force and a
missing 1-hour write price the cache write price; tokens that need an input or output price the
entry does not publish make the whole request unpriced (``None``), never $0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

Entry = Mapping[str, Any]

# Providers whose token usage LiteLLM prices with a calculator of their own instead of the
# generic formula (cost_calculator.py::cost_per_token dispatch, and each provider's
# cost_calculator.py). Restated in :func:`own_calculator_cost`.
OWN_CALCULATOR = {
    "perplexity": "input_tokens x input (cached at full price, no tiers), reasoning at its own price",
    "fireworks_ai": "input_tokens x input + output_tokens x output, nothing else",
    "databricks": "input_tokens x input + output_tokens x output, nothing else",
    "lemonade": "always $0 (self-hosted)",
}
# Alibaba's routes all use llms/dashscope/cost_calculator.py::cost_per_token.
DASHSCOPE = {"dashscope", "qwencloud", "qwen_ai_platform"}
# Providers cost_per_token sends to a calculator by name; every other provider reaches the
# generic formula only when the entry has a positive flat input or output price.
DISPATCHED = {
    "vertex_ai", "anthropic", "bedrock", "bedrock_converse", "openai", "azure", "azure_ai",
    "gemini", "deepseek", "xai", *DASHSCOPE, *OWN_CALCULATOR,
}  # fmt: skip

_THRESHOLD = re.compile(r"^input_cost_per_token_above_(\d+)(k?)_tokens$")
_FLAT = ("input_cost_per_token", "output_cost_per_token", "cache_read_input_token_cost",
         "cache_creation_input_token_cost", "cache_creation_input_token_cost_above_1hr")  # fmt: skip
_LOWER: dict[int, dict[str, str]] = {}  # catalog id -> lower-cased key -> key


@dataclass(frozen=True)
class Usage:
    """One request's token counts, named as in spendlake's canonical event (contract 1)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    batch: bool = False


@dataclass(frozen=True)
class Rates:
    """Per-token prices in force for one request; ``None`` = the entry does not publish it."""

    input: float | None
    output: float | None
    cache_read: float | None
    cache_write: float | None
    cache_write_1h: float | None
    reasoning: float | None


def routed_provider(litellm_provider: str) -> str:
    """The ``custom_llm_provider`` a LiteLLM caller has for an entry's ``litellm_provider``.

    Vertex sub-catalogues (``vertex_ai-language-models``, ...) and Fireworks' embedding list are
    all reached as ``vertex_ai`` / ``fireworks_ai`` (utils.py::_check_provider_match)."""
    for family in ("vertex_ai", "fireworks_ai"):
        if litellm_provider.startswith(family):
            return family
    return litellm_provider


def price(entry: Entry, key: str) -> float | None:
    """A number in the entry, or None (LiteLLM's ``_get_cost_per_unit`` returns its default)."""
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _provider_matches(entry_provider: str, provider: str) -> bool:
    """utils.py::_check_provider_match: same provider, or one of its listed families."""
    if entry_provider == provider:
        return True
    if provider in ("vertex_ai", "fireworks_ai") and entry_provider.startswith(provider):
        return True
    if provider.startswith("bedrock") and entry_provider.startswith("bedrock"):
        return True
    return provider == "azure_ai" and entry_provider in ("azure", "openai")


def resolve_key(catalog: Mapping[str, Entry], provider: str, model: str) -> str | None:
    """The catalog key LiteLLM prices ``(provider, model)`` with.

    cost_calculator.py::cost_per_token tries ``provider/model`` first, then ``model`` as given,
    then ``model`` minus its first ``provider/`` segment; utils.py::_get_model_info_helper does
    the same (exact key, then case-insensitively) and skips a key whose ``litellm_provider``
    does not match. So ``deepseek-chat`` logged by a deepseek caller is priced with the entry
    ``deepseek/deepseek-chat`` whenever both exist. A repeated prefix is collapsed first
    (``perplexity/perplexity/sonar`` -> ``perplexity/sonar``), so such a key is never reached."""
    provider = routed_provider(provider)
    prefix = provider + "/"
    while model.startswith(prefix + prefix):
        model = model[len(prefix):]
    names = [model if model.startswith(prefix) else prefix + model, model]
    names.append(model[len(prefix):] if model.startswith(prefix) else model.split("/", 1)[-1])
    lower = _LOWER.get(id(catalog))
    if lower is None:
        lower = _LOWER[id(catalog)] = {k.lower(): k for k in catalog}
    for name in names:
        key = name if name in catalog else lower.get(name.lower())
        if key is not None:
            owner = catalog[key].get("litellm_provider")
            if not isinstance(owner, str) or _provider_matches(owner, provider):
                return key
    return None


def range_tier(entry: Entry, prompt_tokens: int) -> Mapping[str, Any] | None:
    """tiered_pricing.py::select_tier_for_input: all-or-nothing tier by total prompt tokens.

    Tiers sort by range start; the first with ``start < prompt_tokens <= end`` wins, a request
    above every range takes the last tier, and an empty prompt takes none. A tier without an
    input price is not a priced tier (LiteLLM's test_llm_cost_calc_utils.py,
    test_generic_cost_per_token_tier_without_an_input_rate_is_not_a_priced_tier)."""
    tiers = entry.get("tiered_pricing")
    if not isinstance(tiers, list) or prompt_tokens <= 0:
        return None
    valid = sorted((t for t in tiers if len(t.get("range", [])) == 2), key=lambda t: t["range"][0])
    if not valid:
        return None
    tier = next((t for t in valid if t["range"][0] < prompt_tokens <= t["range"][1]), valid[-1])
    return tier if price(tier, "input_cost_per_token") is not None else None


def threshold(entry: Entry, prompt_tokens: int, inclusive: bool) -> str | None:
    """utils.py::_get_token_base_cost: the highest ``_above_<N>[k]_tokens`` the prompt crosses.

    Only plain keys count: service-tier variants (``..._tokens_priority``, ``_flex``,
    ``_batches``) are other products. Crossing is ``prompt_tokens > N``; xAI bills the tier
    from N itself (``>=``). Returns the ``<N>[k]`` text, or None."""
    crossed = []
    for key in entry:
        m = _THRESHOLD.match(key)
        if m and price(entry, key) is not None:
            n = int(m.group(1)) * (1000 if m.group(2) else 1)
            if prompt_tokens > n or (inclusive and prompt_tokens == n):
                crossed.append((n, m.group(1) + m.group(2)))
    return max(crossed)[1] if crossed else None


def rates(entry: Entry, prompt_tokens: int, provider: str) -> Rates:
    """The prices in force for a request of ``prompt_tokens`` (before any missing-price fill).

    Range tier (tiered_pricing): the tier's prices; its missing cache prices bill at the tier's
    input price and a missing 1-hour price at its cache-write price, a missing output price at
    the model's, and reasoning at the tier's reasoning price, else the tier's output price when
    it has one, else the model's reasoning price (dashscope/cost_calculator.py::_tier_rates).
    Otherwise the flat prices, with a 0 or missing output price replaced by
    ``output_cost_per_image_token``; then, above a threshold, each price takes its
    ``_above_<N>_tokens`` variant when the entry has one (utils.py::_get_token_base_cost)."""
    provider = routed_provider(provider)
    tier = range_tier(entry, prompt_tokens)
    if tier is not None:
        inp = price(tier, "input_cost_per_token")
        write = price(tier, "cache_creation_input_token_cost")
        write = inp if write is None else write
        write_1h = price(tier, "cache_creation_input_token_cost_above_1hr") or write
        has_out = "output_cost_per_token" in tier
        out = price(tier if has_out else entry, "output_cost_per_token")
        reasoning = price(tier, "output_cost_per_reasoning_token")
        if reasoning is None and not has_out:
            reasoning = price(entry, "output_cost_per_reasoning_token")
        read = price(tier, "cache_read_input_token_cost")
        return Rates(inp, out, inp if read is None else read, write, write_1h, reasoning)
    out = price(entry, "output_cost_per_token")
    if not out and price(entry, "output_cost_per_image_token") is not None:
        out = price(entry, "output_cost_per_image_token")
    r = {key: price(entry, key) for key in _FLAT}
    r["output_cost_per_token"] = out
    above = None if provider in DASHSCOPE else threshold(entry, prompt_tokens, provider == "xai")
    if above is not None:
        for key, value in r.items():
            tiered = price(entry, f"{key}_above_{above}_tokens")
            r[key] = value if tiered is None else tiered
    read, write = r["cache_read_input_token_cost"], r["cache_creation_input_token_cost"]
    write_1h = r["cache_creation_input_token_cost_above_1hr"]
    if provider in DASHSCOPE:  # its own calculator: cache prices default to input, no 1h price
        inp = r["input_cost_per_token"]
        read, write = (inp if read is None else read), (inp if write is None else write)
        write_1h = write
    return Rates(r["input_cost_per_token"], r["output_cost_per_token"], read, write, write_1h,
                 price(entry, "output_cost_per_reasoning_token"))  # fmt: skip


def _unpriced(inp: float | None, out: float | None, usage: Usage) -> bool:
    """spendlake's rule: tokens whose price is not published make the request unpriced."""
    return (inp is None and usage.input_tokens > 0) or (out is None and usage.output_tokens > 0)


def litellm_cost(
    entry: Entry, usage: Usage, provider: str, *, fill_missing: bool = False
) -> float | None:
    """USD LiteLLM bills ``usage`` on ``entry`` (``None``: unpriced, only with fill_missing).

    utils.py::generic_cost_per_token: text input = max(input - cached - cache writes, 0) at
    the input price, cached at the cache-read price, cache writes split into 5-minute (at the
    cache-write price) and 1-hour (at ``cache_creation_input_token_cost_above_1hr``)
    (calculate_cache_writing_cost); output: with reasoning tokens, (output - reasoning) at the
    output price and reasoning at ``output_cost_per_reasoning_token``, else at the output price.
    xAI folds reasoning into plain output (xai/cost_calculator.py). A provider outside
    cost_per_token's named dispatch whose entry has no positive flat input or output price
    is billed per second, i.e. $0 here. ``usage.batch`` uses :func:`batch_cost` (whatever the
    provider); the providers of ``OWN_CALCULATOR`` use :func:`own_calculator_cost`."""
    provider = routed_provider(provider)
    if usage.batch:
        return batch_cost(entry, usage, provider, fill_missing=fill_missing)
    if provider in OWN_CALCULATOR:
        return own_calculator_cost(entry, usage, provider, fill_missing=fill_missing)
    r = rates(entry, usage.input_tokens, provider)
    inp, out, read, write, write_1h = r.input, r.output, r.cache_read, r.cache_write, r.cache_write_1h
    if fill_missing:  # spendlake's fills, on the prices in force (a tier's, above a threshold)
        read = inp if read is None else read
        write = inp if write is None else write
        write_1h = write if write_1h is None else write_1h
    if fill_missing and _unpriced(inp, out, usage):
        return None
    if provider not in DISPATCHED and not (
        (price(entry, "input_cost_per_token") or 0) > 0 or (price(entry, "output_cost_per_token") or 0) > 0
    ):
        return 0.0
    u = usage
    text = max(u.input_tokens - u.cached_input_tokens - u.cache_write_tokens, 0)
    cost = (
        text * (inp or 0.0)
        + u.cached_input_tokens * (read or 0.0)
        + (u.cache_write_tokens - u.cache_write_1h_tokens) * (write or 0.0)
        + u.cache_write_1h_tokens * (write_1h or 0.0)
    )
    reasoning = 0 if provider == "xai" else u.reasoning_tokens
    if reasoning > 0:
        rate = out if r.reasoning is None else r.reasoning
        cost += max(u.output_tokens - reasoning, 0) * (out or 0.0) + reasoning * (rate or 0.0)
    else:
        cost += u.output_tokens * (out or 0.0)
    return cost


def batch_rate(entry: Entry, base_key: str, prompt_tokens: int, inclusive: bool) -> float | None:
    """The newest batch calculator's rate lookup (utils.py::get_batch_cost_rates): the
    ``<base_key>_above_<N>[k]_tokens_batches`` price of the highest threshold the prompt
    crosses (``>=`` for xAI) among those the entry lists, else ``<base_key>_batches``."""
    best: tuple[int, float] | None = None
    pattern = re.compile(re.escape(base_key) + r"_above_(\d+)(k?)_tokens_batches")
    for key in entry:
        m = pattern.fullmatch(key)
        value = price(entry, key) if m else None
        if m and value is not None:
            n = int(m.group(1)) * (1000 if m.group(2) else 1)
            if (prompt_tokens > n or (inclusive and prompt_tokens == n)) and (best is None or n > best[0]):
                best = (n, value)
    return best[1] if best is not None else price(entry, f"{base_key}_batches")


def batch_cost(entry: Entry, usage: Usage, provider: str = "", *, fill_missing: bool = False) -> float | None:
    """cost_calculator.py::batch_cost_calculator, newest version (no regular tiers, no
    reasoning or 1-hour price).

    With a batch input price (0 counts): uncached, unwritten input at it; cached tokens at the
    batch cache-read price and cache writes at the batch cache-write price where the entry lists
    them, otherwise they stay in the input and bill at the batch input price. Without one, and a
    non-zero regular input price: half of (input - cached - written) x input + cached x
    cache-read (0 if unlisted) + written x cache-write (the input price where that is 0 or
    unlisted). Output: every completion token at the batch output price, else half the regular
    output price."""
    u = usage
    inclusive = routed_provider(provider) == "xai"
    inp_b = batch_rate(entry, "input_cost_per_token", u.input_tokens, inclusive)
    out_b = batch_rate(entry, "output_cost_per_token", u.input_tokens, inclusive)
    read_b = batch_rate(entry, "cache_read_input_token_cost", u.input_tokens, inclusive)
    write_b = batch_rate(entry, "cache_creation_input_token_cost", u.input_tokens, inclusive)
    inp, out = price(entry, "input_cost_per_token"), price(entry, "output_cost_per_token")
    read, write = price(entry, "cache_read_input_token_cost"), price(entry, "cache_creation_input_token_cost")
    if fill_missing:
        if _unpriced(inp if inp_b is None else inp_b, out if out_b is None else out_b, u):
            return None
        read = inp if read is None else read
    if inp_b is not None:
        cached = u.cached_input_tokens if read_b is not None else 0
        written = u.cache_write_tokens if write_b is not None else 0
        cost = (u.input_tokens - cached - written) * inp_b + cached * (read_b or 0.0) + written * (write_b or 0.0)
    elif inp:
        write_rate = write or inp
        cost = ((u.input_tokens - u.cached_input_tokens - u.cache_write_tokens) * inp
                + u.cached_input_tokens * (read or 0.0) + u.cache_write_tokens * write_rate) / 2  # fmt: skip
    else:
        cost = 0.0
    if out_b is not None:
        return cost + u.output_tokens * out_b
    return cost + (u.output_tokens * out / 2 if out else 0.0)


def own_calculator_cost(
    entry: Entry, usage: Usage, provider: str, *, fill_missing: bool = False
) -> float | None:
    """The non-generic calculators of ``OWN_CALCULATOR``, for a non-batch request.

    fireworks_ai and databricks: input_tokens x input + output_tokens x output, cache and tiers
    ignored. perplexity: the same, except that reasoning tokens bill at
    ``output_cost_per_reasoning_token`` when the entry has one (perplexity/cost_calculator.py).
    lemonade: $0. Only shapes without cache tokens or tiers match the generic formula."""
    provider = routed_provider(provider)
    if provider == "lemonade":
        return 0.0
    inp, out = price(entry, "input_cost_per_token"), price(entry, "output_cost_per_token")
    if fill_missing and _unpriced(inp, out, usage):
        return None
    cost = usage.input_tokens * (inp or 0.0)
    reasoning = price(entry, "output_cost_per_reasoning_token") if provider == "perplexity" else None
    if usage.reasoning_tokens > 0 and reasoning is not None:
        plain = max(usage.output_tokens - usage.reasoning_tokens, 0)
        return cost + plain * (out or 0.0) + usage.reasoning_tokens * reasoning
    return cost + usage.output_tokens * (out or 0.0)
