"""OTLP traces → usage events: the OpenTelemetry GenAI adapter (contract 7).

One `ExportTraceServiceRequest` — an OTLP/HTTP body (protobuf or JSON), an OTLP/gRPC call, or a
Kafka record written by the OpenTelemetry Collector's Kafka exporter (`otlp_proto`, `otlp_json`)
— becomes one canonical contract-1 event per span that carries GenAI usage. The rules:

- A span is an LLM call when it carries a token count or a cost under one of the `USAGE` names.
  Any other span is *skipped* and counted, never dead-lettered. Agent and tool spans
  (`gen_ai.operation.name` in `AGGREGATE_OPERATIONS`) are skipped too even when they carry usage:
  the semantic conventions let them sum their child calls, and counting both would bill twice.
- `event_id` = hex trace id + "-" + hex span id, so a resent span (HTTP retry, a Kafka record
  produced twice, the same span over HTTP and Kafka) is the same event.
- Each canonical field is read from an ordered list of attribute names (first present wins); the
  lists hold the current semantic-convention names, their deprecated spellings, and Bifrost's.
  Attribution is looked up on the span, then on its resource, by configurable lists
  (`AttributeNames`, `[intake.attributes]`).
- Only the attributes named in those lists are ever read. Prompt and completion attributes
  (`gen_ai.input.messages`, `gen_ai.*.output_messages`, events) are never decoded, so they cannot
  reach the lake, a dead letter or a log line.
- Token counts follow the conventions: cache reads and writes are *included* in input tokens.
  When an emitter evidently excluded them (cache read + write > input, the Anthropic API's own
  shape), they are added to the input instead of rejecting the span.

Values pass through to `decode.validate`, which names the field and the bad value as for any
record; a span that fails becomes a rejected span carrying its mapped attributes as evidence.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from ingest.errors import BadRecord

# canonical field → attribute names, first present wins (docs/events.md shows this table)
USAGE: dict[str, tuple[str, ...]] = {
    "input_tokens": ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
    "output_tokens": ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
    "cached_input_tokens": ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens",
                            "gen_ai.usage.input_token_details.cached_tokens"),
    "cache_write_tokens": ("gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_write.input_tokens",
                           "gen_ai.usage.cache_creation_input_tokens"),
    "reasoning_tokens": ("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens",
                         "gen_ai.usage.output_token_details.reasoning_tokens"),
    "cost_usd": ("gen_ai.usage.cost",),
}  # fmt: skip
PROVIDER = ("gen_ai.provider.name", "gen_ai.system")
# the response model is what was billed; Bifrost puts it under gen_ai.<kind>.model
MODEL = ("gen_ai.response.model", "gen_ai.chat.model", "gen_ai.text.model", "gen_ai.request.model")
OPERATION = "gen_ai.operation.name"
HTTP_STATUS = ("http.response.status_code", "http.status_code")
SERVICE_NAME = "service.name"
AGGREGATE_OPERATIONS = frozenset(("invoke_agent", "create_agent", "execute_tool", "invoke_workflow"))
REQUEST_TYPES = {
    "chat": "chat", "text_completion": "chat", "generate_content": "chat", "responses": "chat",
    "embeddings": "embedding", "embedding": "embedding", "create_image": "image", "image_generation": "image",
    "speech": "audio", "transcription": "audio", "rerank": "rerank",
}  # fmt: skip
# OpenTelemetry's provider names that differ from ours (pricing/names.py takes it from there)
PROVIDERS = {"aws.bedrock": "bedrock", "gcp.vertex_ai": "vertex", "gcp.gemini": "gemini", "gcp.gen_ai": "vertex",
             "azure.ai.openai": "azure", "azure.ai.inference": "azure_ai", "az.ai.openai": "azure",
             "az.ai.inference": "azure_ai", "mistral_ai": "mistral", "x_ai": "xai", "ibm.watsonx.ai": "watsonx"}  # fmt: skip
USAGE_NAMES = frozenset(n for ns in USAGE.values() for n in ns)  # any of them makes a span an LLM call
STATUS_ERROR = 2  # Status.StatusCode.STATUS_CODE_ERROR


@dataclass(frozen=True)
class AttributeNames:
    """Where attribution comes from: attribute names per field, looked up on the span first,
    then on its resource (`[intake.attributes]` replaces a list)."""

    virtual_key: tuple[str, ...] = ("spendlake.virtual_key", "gen_ai.virtual_key_id", "virtual_key")
    team: tuple[str, ...] = ("spendlake.team", "gen_ai.team_id", "team")
    customer: tuple[str, ...] = ("spendlake.customer", "gen_ai.customer_id", "customer")
    user: tuple[str, ...] = ("spendlake.user", "enduser.id", "user.id", "gen_ai.request.user")
    project: tuple[str, ...] = ("spendlake.project", "project")

    def fields(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return (("virtual_key", self.virtual_key), ("team", self.team), ("customer", self.customer),
                ("user", self.user), ("project", self.project))  # fmt: skip

    def wanted(self) -> frozenset[str]:
        names = {n for _, ns in self.fields() for n in ns}
        names |= {n for ns in USAGE.values() for n in ns}
        return frozenset(names | set(PROVIDER) | set(MODEL) | set(HTTP_STATUS) | {OPERATION, SERVICE_NAME})


DEFAULT_NAMES = AttributeNames()


@dataclass
class Spans:
    """What one request yielded: events in span order, rejected spans, skipped spans."""

    events: list[dict[str, Any]] = field(default_factory=list)
    event_index: list[int] = field(default_factory=list)  # each event's span index
    rejected: list[tuple[int, BadRecord]] = field(default_factory=list)  # (span index, error)
    skipped: int = 0
    spans: int = 0


@dataclass(frozen=True)
class _Span:
    """The parts of one span the mapping reads, whatever the encoding."""

    trace_id: str
    span_id: str
    name: str
    start_ns: int
    end_ns: int
    error: bool
    attrs: dict[str, Any]
    resource: dict[str, Any]


# --- decoding the request --------------------------------------------------------------------


def decode_traces(body: bytes, encoding: str, names: AttributeNames = DEFAULT_NAMES) -> Spans:
    """An ExportTraceServiceRequest as `protobuf` or `json` bytes → Spans. Raises BadRecord
    (field "(body)") when the body is not one."""
    if encoding == "protobuf":
        return from_proto(parse_proto(body), names)
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRecord("(body)", body[:40], f"an OTLP/JSON ExportTraceServiceRequest ({exc})") from None
    return from_json(obj, names)


def parse_proto(body: bytes) -> Any:
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    try:
        req.ParseFromString(body)
    except DecodeError as exc:
        raise BadRecord("(body)", f"{len(body)} bytes of protobuf",
                        f"an OTLP ExportTraceServiceRequest ({exc})") from None  # fmt: skip
    return req


def from_proto(req: Any, names: AttributeNames = DEFAULT_NAMES) -> Spans:
    return _map(_proto_spans(req, names.wanted()), names)


def from_json(obj: Any, names: AttributeNames = DEFAULT_NAMES) -> Spans:
    if not isinstance(obj, dict) or (obj and "resourceSpans" not in obj) or not isinstance(
            obj.get("resourceSpans", []), list):
        shown = sorted(obj)[:8] if isinstance(obj, dict) else obj
        raise BadRecord("(body)", shown, "an OTLP/JSON ExportTraceServiceRequest ({\"resourceSpans\": [...]})")
    try:
        return _map(_json_spans(obj, names.wanted()), names)
    except (AttributeError, TypeError, ValueError, OverflowError) as exc:  # a member of the wrong JSON type
        raise BadRecord("(body)", type(exc).__name__, f"an OTLP/JSON ExportTraceServiceRequest ({exc})") from None


def sniff(raw: bytes) -> str | None:
    """'otlp_proto' for bytes that can only be protobuf (field 1, length-delimited, first),
    'otlp_json' for a JSON object with resourceSpans; None for anything else."""
    if raw[:1] == b"\x0a":
        return "otlp_proto"
    if raw[:1] == b"{" and b'"resourceSpans"' in raw[:64]:
        return "otlp_json"
    return None


def _proto_value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind is None or kind in ("array_value", "kvlist_value", "bytes_value"):
        return None  # no usage or attribution field is structured; content may be, never read
    return getattr(v, kind)


def _proto_attrs(kvs: Iterable[Any], wanted: frozenset[str]) -> dict[str, Any]:
    return {kv.key: _proto_value(kv.value) for kv in kvs if kv.key in wanted}


def _proto_spans(req: Any, wanted: frozenset[str]) -> Iterator[_Span]:
    for rs in req.resource_spans:
        resource = _proto_attrs(rs.resource.attributes, wanted)
        for ss in rs.scope_spans:
            for s in ss.spans:
                yield _Span(s.trace_id.hex(), s.span_id.hex(), s.name, s.start_time_unix_nano, s.end_time_unix_nano,
                            s.status.code == STATUS_ERROR, _proto_attrs(s.attributes, wanted), resource)  # fmt: skip


_JSON_KINDS = ("stringValue", "intValue", "doubleValue", "boolValue")


def _json_value(v: Any) -> Any:
    if not isinstance(v, dict):
        return None
    for kind in _JSON_KINDS:
        if kind in v:
            x = v[kind]
            if kind == "intValue" and isinstance(x, str):  # 64-bit integers travel as strings
                try:
                    return int(x)
                except ValueError:
                    return x
            return x
    return None


def _json_attrs(kvs: Any, wanted: frozenset[str]) -> dict[str, Any]:
    if not isinstance(kvs, list):
        return {}
    return {kv["key"]: _json_value(kv.get("value")) for kv in kvs
            if isinstance(kv, dict) and kv.get("key") in wanted}  # fmt: skip


def _json_id(value: Any, size: int) -> str:
    """OTLP/JSON ids are hex; protobuf's generic JSON mapping writes base64. Accept both."""
    if not isinstance(value, str) or not value:
        return ""
    if len(value) == size * 2:
        try:
            bytes.fromhex(value)
            return value.lower()
        except ValueError:
            pass
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return ""
    return raw.hex() if len(raw) == size else ""


def _json_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return 0


def _json_spans(obj: dict[str, Any], wanted: frozenset[str]) -> Iterator[_Span]:
    for rs in obj.get("resourceSpans") or ():
        if not isinstance(rs, dict):
            continue
        resource = _json_attrs((rs.get("resource") or {}).get("attributes"), wanted)
        for ss in rs.get("scopeSpans") or ():
            if not isinstance(ss, dict):
                continue
            for s in ss.get("spans") or ():
                if not isinstance(s, dict):
                    continue
                code = (s.get("status") or {}).get("code")
                yield _Span(_json_id(s.get("traceId"), 16), _json_id(s.get("spanId"), 8), str(s.get("name", "")),
                            _json_int(s.get("startTimeUnixNano")), _json_int(s.get("endTimeUnixNano")),
                            code in (STATUS_ERROR, "STATUS_CODE_ERROR"), _json_attrs(s.get("attributes"), wanted),
                            resource)  # fmt: skip


# --- the mapping -----------------------------------------------------------------------------


def _first(attrs: dict[str, Any], names: tuple[str, ...]) -> tuple[str, Any]:
    for n in names:
        v = attrs.get(n)
        if v is not None and v != "":
            return n, v
    return "", None


def _count(name: str, value: Any) -> int:
    """Token counts as ints: integral doubles and digit strings are accepted (SDKs differ)."""
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    if type(value) is str and value.isascii() and value.isdigit() and len(value) <= 12:
        return int(value)
    raise BadRecord(name, value, "an integer token count")


def _map(spans: Iterable[_Span], names: AttributeNames) -> Spans:
    out = Spans()
    attribution = names.fields()
    for index, sp in enumerate(spans):
        out.spans += 1
        attrs = sp.attrs
        if USAGE_NAMES.isdisjoint(attrs) or attrs.get(OPERATION) in AGGREGATE_OPERATIONS:
            out.skipped += 1
            continue
        ev: dict[str, Any] = {}
        try:
            _fill(ev, sp, attribution)
        except BadRecord as exc:
            exc.evidence = _evidence(sp)
            out.rejected.append((index, exc))
            continue
        out.events.append(ev)
        out.event_index.append(index)
    return out


def _fill(ev: dict[str, Any], sp: _Span, attribution: tuple[tuple[str, tuple[str, ...]], ...]) -> None:
    attrs = sp.attrs
    if not sp.trace_id or not sp.span_id:
        raise BadRecord("traceId/spanId", (sp.trace_id, sp.span_id), "a 16-byte trace id and an 8-byte span id")
    ev["event_id"] = f"{sp.trace_id}-{sp.span_id}"
    end = sp.end_ns or sp.start_ns
    if not end:
        raise BadRecord("endTimeUnixNano", end, "the span's end time (nanoseconds since the epoch)")
    ev["timestamp"] = end // 1_000_000
    if sp.start_ns and sp.end_ns >= sp.start_ns:
        ev["latency_ms"] = (sp.end_ns - sp.start_ns) / 1e6
    provider = _first(attrs, PROVIDER)[1]
    if provider is None:
        provider = _first(sp.resource, PROVIDER)[1]
    if provider is None:
        raise BadRecord(PROVIDER[0], None, f"the provider ({' or '.join(PROVIDER)}, on the span or its resource)")
    ev["provider"] = PROVIDERS.get(provider, provider) if isinstance(provider, str) else provider
    ev["model"] = _first(attrs, MODEL)[1]
    if ev["model"] is None:
        raise BadRecord(MODEL[-1], None, f"the model ({' or '.join(MODEL)})")
    for fld, ns in USAGE.items():
        n, v = _first(attrs, ns)
        if v is not None:
            ev[fld] = v if fld == "cost_usd" else _count(n, v)
    if "input_tokens" not in ev and "output_tokens" not in ev:
        raise BadRecord(USAGE["input_tokens"][0], None, "input and/or output token counts on a span with GenAI usage")
    inp = ev.get("input_tokens", 0)
    cache = ev.get("cached_input_tokens", 0) + ev.get("cache_write_tokens", 0)
    if cache > inp:
        ev["input_tokens"] = inp + cache  # the emitter counted input without the cache (Anthropic's shape)
    for fld, ns in attribution:
        v = _first(attrs, ns)[1]
        if v is None:
            v = _first(sp.resource, ns)[1]
        if v is not None:
            ev[fld] = v if isinstance(v, str) else str(v)
    op = attrs.get(OPERATION)
    ev["request_type"] = REQUEST_TYPES.get(op, "") if isinstance(op, str) else ""
    if not ev["request_type"]:
        ev["request_type"] = _type_from_name(sp.name)
    ev["status"] = "error" if sp.error else "success"
    code = _first(attrs, HTTP_STATUS)[1]
    if type(code) is int and 100 <= code <= 599:
        ev["status_code"] = code
    service = sp.resource.get(SERVICE_NAME)
    if isinstance(service, str) and service:
        ev["tags"] = {SERVICE_NAME: service}


def _type_from_name(name: str) -> str:
    """Bifrost names spans gen_ai.chat, gen_ai.embedding, gen_ai.speech, ..."""
    low = name.lower()
    if "embed" in low:
        return "embedding"
    if "speech" in low or "transcri" in low:
        return "audio"
    if "image" in low:
        return "image"
    return "chat"


def _evidence(sp: _Span) -> bytes:
    """What a rejected span keeps: an OTLP/JSON request holding just that span, with its ids,
    times and the mapped attributes — never content. Decoding it again gives the same error."""
    span = {"traceId": sp.trace_id, "spanId": sp.span_id, "name": sp.name,
            "startTimeUnixNano": str(sp.start_ns), "endTimeUnixNano": str(sp.end_ns),
            "attributes": _json_kvs(sp.attrs), "status": {"code": STATUS_ERROR if sp.error else 0}}  # fmt: skip
    return orjson.dumps({"resourceSpans": [{"resource": {"attributes": _json_kvs(sp.resource)},
                                            "scopeSpans": [{"spans": [span]}]}]})  # fmt: skip


def _json_kvs(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for k, v in attrs.items():
        if v is None:
            continue
        if type(v) is bool:
            value: dict[str, Any] = {"boolValue": v}
        elif type(v) is int:
            value = {"intValue": str(v)}
        elif type(v) is float:
            value = {"doubleValue": v}
        else:
            value = {"stringValue": str(v)}
        out.append({"key": k, "value": value})
    return out


__all__ = ["AttributeNames", "DEFAULT_NAMES", "Spans", "USAGE", "decode_traces", "from_json", "from_proto",
           "parse_proto", "sniff"]  # fmt: skip
