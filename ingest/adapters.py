"""Input adapters: one parsed JSON object in, one canonical v1 event dict (contract 1) out.

`normalize(obj)` picks the adapter per record from a few key checks, in this order:

1. "spendlake.v1"       has "event_id" and no "usage" object
2. "anthropic"          has a "usage" object without prompt_tokens that holds
                        cache_read_input_tokens, cache_creation_input_tokens or cache_creation,
                        or provider is "anthropic" and usage counts input_tokens
3. "openai"             any other "usage" object: Chat Completions or Responses API names (a
                        LiteLLM Usage, whose prompt_tokens already include cache, lands here)
4. "litellm_spend_log"  has "call_type" and "request_id" (a LiteLLM_SpendLogs row)
5. "litellm"            has "call_type" (a LiteLLM StandardLoggingPayload)
6. "bifrost"            has "id", "provider" and one of token_usage, prompt_tokens,
                        cached_read_tokens, virtual_key_id, latency (a Bifrost logs row)

Anything else raises BadRecord naming the top-level keys it saw.

The output holds only contract-1 field names, so prompt and response text never gets past this
step whatever the input carried. Values pass through as found, because the decode step after this
one validates every field; only a shape's own formats are converted (LiteLLM's naive UTC dates and
epoch seconds, Anthropic's cache-exclusive input count, a null or "" meaning "not known", ...).
"""

from __future__ import annotations

from typing import Any, TypeGuard

import orjson

from .errors import BadRecord

FIELDS = frozenset((
    "event_id", "timestamp", "provider", "model", "input_tokens", "output_tokens",
    "cached_input_tokens", "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens",
    "virtual_key", "team", "customer", "user", "project", "tags", "request_type", "batch",
    "status", "status_code", "latency_ms", "cache_hit", "images", "duration_seconds", "cost_usd",
))
FORMATS = ("spendlake.v1", "openai", "anthropic", "litellm", "litellm_spend_log", "bifrost")
UNKNOWN_SHAPE = "a spendlake v1 event or an OpenAI, Anthropic, LiteLLM or Bifrost usage record"

# Keys whose values are prompt or response text, or containers of it, in any supported shape.
TEXT_KEYS = frozenset((
    "messages", "prompt", "input", "response", "choices", "content", "completion", "system",
    "text", "output", "instructions", "tool_calls", "function_call", "tool_outputs",
    "tool_output", "tool_results", "proxy_server_request", "query", "input_history",
    "responses_input_history", "output_message", "responses_output", "content_summary",
    "raw_request", "raw_response", "passthrough_request_body", "passthrough_response_body",
    "speech_input", "transcription_input", "transcription_output", "embedding_output",
))
# A LiteLLM "response" object also holds the usage that explains a failure: a dict there is
# walked (its choices and content still go); anything else under the key is dropped.
_WALKED_TEXT_KEYS = frozenset(("response",))


def redact(obj: dict) -> dict:
    """A copy of `obj` without any value under a TEXT_KEYS key, at any depth (dicts in lists too).

    For dead letters: a person can see why the record failed, never what was said in it. A
    string holding a JSON object or array (LiteLLM SpendLogs' metadata) is redacted inside and
    stays a string; a text key's string is dropped like any other value.
    """
    return {
        key: _redact_value(value)
        for key, value in obj.items()
        if key not in TEXT_KEYS or (key in _WALKED_TEXT_KEYS and isinstance(value, dict))
    }


def redact_bytes(raw: bytes) -> bytes:
    """`redact` for a record's bytes: the same bytes when they hold no text (or no JSON)."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
    if isinstance(obj, dict):
        cleaned = redact(obj)
        if cleaned != obj:
            return orjson.dumps(cleaned)
    return raw


def _redact_value(value: Any) -> Any:
    if isinstance(value, dict):
        return redact(value)
    if isinstance(value, list):
        return [_redact_value(item) for item in value]
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            nested = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
        return orjson.dumps(_redact_value(nested)).decode()
    return value


def normalize(obj: dict) -> tuple[str, dict]:
    """Return (input_format, canonical event dict) for one parsed record (see the module doc).

    A canonical record holding only contract-1 keys is returned as is, not copied: callers must
    not mutate the result while they still need the input. Raises BadRecord for an unknown shape
    or a value the mapping itself cannot use (e.g. a non-integer Anthropic token count).
    """
    if type(obj) is not dict:
        raise BadRecord("(record)", type(obj).__name__, UNKNOWN_SHAPE)
    usage = obj.get("usage")
    if usage is None:
        if "event_id" in obj:
            # The hot path: one subset test, and a filtered copy only when extra keys came along.
            return "spendlake.v1", obj if FIELDS.issuperset(obj) else _pick(obj)
        if "call_type" in obj:
            if "request_id" in obj:
                return "litellm_spend_log", _litellm_spend_log(obj)
            return "litellm", _litellm(obj)
        if "id" in obj and "provider" in obj and not _BIFROST_KEYS.isdisjoint(obj.keys()):
            return "bifrost", _bifrost(obj)
    elif type(usage) is dict:
        # prompt_tokens means the OpenAI convention (cache inside input) even beside cache_*
        # keys: LiteLLM's Usage carries both.
        if "prompt_tokens" not in usage and (
            not _ANTHROPIC_CACHE_KEYS.isdisjoint(usage.keys())
            or (obj.get("provider") == "anthropic" and "input_tokens" in usage)
        ):
            return "anthropic", _anthropic(obj, usage)
        return "openai", _openai(obj, usage)
    raise BadRecord("(record)", sorted(map(str, obj.keys())), UNKNOWN_SHAPE)


def _pick(obj: dict) -> dict:
    return {key: value for key, value in obj.items() if key in FIELDS}


def _clean(event: dict) -> dict:
    # Gateways write null or "" for "not known"; absent is what the validator defaults.
    return {key: value for key, value in event.items() if value is not None and value != ""}


def _wrapper(obj: dict) -> dict:
    """The contract-1 fields around a `usage` object; a bare provider response gives id/created."""
    event = _pick(obj)
    if "event_id" not in event and "id" in obj:
        event["event_id"] = obj["id"]
    created = obj.get("created")
    if "timestamp" not in event and _is_number(created):
        event["timestamp"] = _epoch_seconds_to_ms(created)
    return event


_CHAT_NAMES = ("prompt_tokens", "completion_tokens", "prompt_tokens_details",
               "completion_tokens_details")
_RESPONSES_NAMES = ("input_tokens", "output_tokens", "input_tokens_details",
                    "output_tokens_details")


def _openai(obj: dict, usage: dict) -> dict:
    """Chat Completions or Responses API usage: cached tokens are already counted in the input
    and reasoning tokens in the output, so the counts map one to one."""
    event = _wrapper(obj)
    chat = "prompt_tokens" in usage or "completion_tokens" in usage
    names = _CHAT_NAMES if chat else _RESPONSES_NAMES
    event["input_tokens"] = usage.get(names[0])
    event["output_tokens"] = usage.get(names[1])
    _usage_details(event, usage, names)
    return _clean(event)


def _usage_details(event: dict, usage: Any, names: tuple[str, ...] = _CHAT_NAMES) -> None:
    """Cache and reasoning counts of an OpenAI-convention usage object. LiteLLM's Usage adds
    Anthropic's cache_* names beside the OpenAI ones, still counted inside prompt_tokens."""
    if not isinstance(usage, dict):
        return
    cached = _sub(usage, names[2], "cached_tokens")
    event["cached_input_tokens"] = (
        cached if cached is not None else usage.get("cache_read_input_tokens"))
    event["cache_write_tokens"] = usage.get("cache_creation_input_tokens")
    event["reasoning_tokens"] = _sub(usage, names[3], "reasoning_tokens")


_ANTHROPIC_CACHE_KEYS = frozenset(
    ("cache_read_input_tokens", "cache_creation_input_tokens", "cache_creation"))


def _anthropic(obj: dict, usage: dict) -> dict:
    """Anthropic Messages usage, whose input_tokens EXCLUDE cache reads and cache writes:

    input_tokens = input_tokens + cache_read_input_tokens + cache_creation_input_tokens
    cached_input_tokens = cache_read_input_tokens
    cache_write_tokens = cache_creation_input_tokens (if absent: the sum of cache_creation's
                         ephemeral_5m_input_tokens and ephemeral_1h_input_tokens)
    cache_write_1h_tokens = cache_creation.ephemeral_1h_input_tokens
    output_tokens already include extended-thinking tokens and pass through.
    Missing or null counts are 0; the arithmetic needs integers, so anything else is a BadRecord.
    """
    event = _wrapper(obj)
    fresh = _count(usage, "input_tokens", "usage")
    read = _count(usage, "cache_read_input_tokens", "usage")
    ttl = usage.get("cache_creation")
    one_hour = _count(ttl, "ephemeral_1h_input_tokens", "usage.cache_creation") if ttl else 0
    if usage.get("cache_creation_input_tokens") is not None:
        write = _count(usage, "cache_creation_input_tokens", "usage")
    elif ttl:
        write = _count(ttl, "ephemeral_5m_input_tokens", "usage.cache_creation") + one_hour
    else:
        write = 0
    event["input_tokens"] = fresh + read + write
    event["output_tokens"] = usage.get("output_tokens")
    event["cached_input_tokens"] = read
    event["cache_write_tokens"] = write
    event["cache_write_1h_tokens"] = one_hour
    return _clean(event)


# LiteLLM CallTypes → request_type; each async "a..." twin maps the same. Others pass through.
_CALL_TYPES = {
    "completion": "chat", "text_completion": "chat", "responses": "chat",
    "anthropic_messages": "chat", "generate_content": "chat", "embedding": "embedding",
    "image_generation": "image", "image_edit": "image", "transcription": "audio",
    "speech": "audio", "rerank": "rerank", "moderation": "moderation",
}
_CALL_TYPES.update({"a" + name: kind for name, kind in list(_CALL_TYPES.items())})
_LITELLM_STATUS = {"success": "success", "failure": "error"}


def _litellm(obj: dict) -> dict:
    """LiteLLM StandardLoggingPayload; its token counts follow the OpenAI convention already.

    Cache and reasoning counts come from response.usage, else metadata.usage_object. The virtual
    key is metadata.user_api_key_hash, else its alias. response_time is in seconds (for streams
    LiteLLM reports the time to first token there). A numeric error_information.error_code
    becomes status_code.
    """
    meta = _json(obj.get("metadata"), "metadata", dict)
    response = obj.get("response")
    code = _sub(obj, "error_information", "error_code")
    seconds = obj.get("response_time")
    event: dict = {
        "event_id": obj.get("id"),
        "timestamp": _litellm_time(obj.get("endTime")),
        "provider": obj.get("custom_llm_provider"),
        "model": obj.get("model") or _sub(obj, "hidden_params", "litellm_model_name"),
        "input_tokens": obj.get("prompt_tokens"),
        "output_tokens": obj.get("completion_tokens"),
        "virtual_key": meta.get("user_api_key_hash") or meta.get("user_api_key_alias"),
        "team": meta.get("user_api_key_team_id"),
        "customer": obj.get("end_user") or meta.get("user_api_key_end_user_id"),
        "user": meta.get("user_api_key_user_id"),
        "project": meta.get("user_api_key_project_id"),
        "cost_usd": obj.get("response_cost"),
        "latency_ms": seconds * 1000.0 if _is_number(seconds) else None,
        "status_code": int(code) if isinstance(code, str) and code.isdigit() else None,
    }
    usage = response.get("usage") if isinstance(response, dict) else None
    _usage_details(event, usage or meta.get("usage_object"))
    _litellm_common(event, obj)
    return _clean(event)


def _litellm_spend_log(obj: dict) -> dict:
    """A LiteLLM_SpendLogs row: metadata and request_tags are JSON strings, api_key is the hashed
    virtual key, spend is the cost, cache_hit is "True"/"False"/"None". It has no latency."""
    meta = _json(obj.get("metadata"), "metadata", dict)
    event: dict = {
        "event_id": obj.get("request_id"),
        "timestamp": _litellm_time(obj.get("endTime")),
        "provider": obj.get("custom_llm_provider"),
        "model": obj.get("model"),
        "input_tokens": obj.get("prompt_tokens"),
        "output_tokens": obj.get("completion_tokens"),
        "virtual_key": obj.get("api_key") or meta.get("user_api_key_alias"),
        "team": obj.get("team_id") or meta.get("user_api_key_team_id"),
        "customer": obj.get("end_user"),
        "user": obj.get("user") or meta.get("user_api_key_user_id"),
        "project": meta.get("user_api_key_project_id"),
        "cost_usd": obj.get("spend"),
    }
    _usage_details(event, meta.get("usage_object"))
    _litellm_common(event, obj)
    return _clean(event)


def _litellm_common(event: dict, obj: dict) -> None:
    """call_type, status, cache_hit and request_tags, spelled alike in both LiteLLM shapes.

    request_tags ["a", "b"] become tags {"a": "true", "b": "true"}: a LiteLLM tag is a flag, and
    splitting "k:v" tags would guess at a meaning the emitter never declared.
    """
    call_type = obj.get("call_type")
    event["request_type"] = _CALL_TYPES.get(call_type, call_type) if isinstance(
        call_type, str) else call_type
    status = obj.get("status")
    event["status"] = _LITELLM_STATUS.get(status, status) if isinstance(status, str) else status
    hit = obj.get("cache_hit")
    if isinstance(hit, str):  # SpendLogs store str(Optional[bool])
        hit = {"true": True, "false": False}.get(hit.lower())
    event["cache_hit"] = hit
    tags = _json(obj.get("request_tags"), "request_tags", list)
    if tags:
        event["tags"] = {str(tag): "true" for tag in tags}


def _litellm_time(value: Any) -> Any:
    """LiteLLM writes naive UTC datetimes ("2025-01-24 09:20:46.851954") or epoch seconds."""
    if isinstance(value, str) and value:
        if len(value) > 10 and value[10] == " ":
            value = value[:10] + "T" + value[11:]
        tail = value[19:]
        if not (value.endswith(("Z", "z")) or "+" in tail or "-" in tail):
            value += "+00:00"
        return value
    if _is_number(value):
        return _epoch_seconds_to_ms(value)
    return value


_BIFROST_KEYS = frozenset(
    ("token_usage", "prompt_tokens", "cached_read_tokens", "virtual_key_id", "latency"))
# Bifrost's "object" names the API called (chat.completion, embedding, audio.speech, ...).
_BIFROST_OBJECTS = (
    ("chat", "chat"), ("text", "chat"), ("response", "chat"), ("embedding", "embedding"),
    ("image", "image"), ("audio", "audio"), ("speech", "audio"), ("transcription", "audio"),
    ("rerank", "rerank"),
)


def _bifrost(obj: dict) -> dict:
    """A Bifrost logs row: flat (the table's prompt_tokens, completion_tokens, cached_read_tokens
    columns) or as the logs API returns it (token_usage = BifrostLLMUsage). Assumed, as Bifrost
    normalises providers to the OpenAI schema: cached tokens are inside prompt_tokens. latency is
    milliseconds; timestamp (else created_at) is RFC 3339 with offset and passes through."""
    usage = obj.get("token_usage")
    usage = usage if isinstance(usage, dict) else obj
    details = usage.get("prompt_tokens_details")
    if not isinstance(details, dict):
        details = usage
    read = details.get("cached_read_tokens")
    kind = obj.get("object")
    event: dict = {
        "event_id": obj.get("id"),
        "timestamp": obj.get("timestamp") or obj.get("created_at"),
        "provider": obj.get("provider"),
        "model": obj.get("model"),
        "input_tokens": usage.get("prompt_tokens"),
        "output_tokens": usage.get("completion_tokens"),
        "cached_input_tokens": read if read is not None else details.get("cached_tokens"),
        "cache_write_tokens": details.get("cached_write_tokens"),
        "reasoning_tokens": _sub(usage, "completion_tokens_details", "reasoning_tokens"),
        "virtual_key": obj.get("virtual_key_id"),
        "team": obj.get("team_id"),
        "customer": obj.get("customer_id"),
        "user": obj.get("user_id"),
        "status": obj.get("status"),
        "latency_ms": obj.get("latency"),
        "cache_hit": _sub(obj, "cache_debug", "cache_hit"),
        "cost_usd": obj.get("cost"),
    }
    if isinstance(kind, str):
        event["request_type"] = next((t for p, t in _BIFROST_OBJECTS if kind.startswith(p)), kind)
    return _clean(event)


def _sub(obj: dict, outer: str, inner: str) -> Any:
    nested = obj.get(outer)
    return nested.get(inner) if isinstance(nested, dict) else None


def _count(obj: Any, key: str, path: str) -> int:
    """A token count the arithmetic needs: missing or null is 0, anything else must be an int."""
    if not isinstance(obj, dict):
        raise BadRecord(path, obj, "an object of token counts")
    value = obj.get(key)
    if value is None:
        return 0
    if type(value) is not int or value < 0:
        raise BadRecord(f"{path}.{key}", value, "an integer >= 0")
    return value


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _epoch_seconds_to_ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def _json(value: Any, field: str, kind: type) -> Any:
    """A nested object LiteLLM may store as a JSON string; null or "" means empty."""
    if isinstance(value, str) and value:
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise BadRecord(field, value, f"JSON holding a {kind.__name__}") from None
    if value is None or value == "":
        return kind()
    if not isinstance(value, kind):
        raise BadRecord(field, value, f"a {kind.__name__}")
    return value
