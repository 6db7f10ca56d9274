"""Real OpenTelemetry producers for the OTLP intake tests: the SDK, its OTLP/HTTP exporters, and
the official OpenAI instrumentation driving the ``openai`` SDK against ``openai_standin``.

Nothing here fakes the wire: spans are encoded by the SDK's own encoders and POSTed by the real
exporters, so a test of ``POST /v1/traces`` sees what a user's application sends.

- protobuf: ``opentelemetry.exporter.otlp.proto.http.OTLPSpanExporter`` (Content-Type
  ``application/x-protobuf``).
- json: the official ``opentelemetry-exporter-otlp-json-http`` exporter when it is installed;
  otherwise ``_ProtoJsonSpanExporter`` below, which encodes with the SDK's protobuf encoder and
  re-spells the message as OTLP/JSON (hex trace and span ids, integer enums, lowerCamelCase names)
  — the same document the official exporter produces.

    with OpenAIStandin() as api:
        provider = make_tracer_provider(intake_url, token="t0ken", protocol="json", gzip=True)
        client = instrumented_openai(api, provider)
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        force_flush(provider)

The instrumentation is process-global (it patches the ``openai`` classes): each
``instrumented_openai`` call re-instruments with its provider, and ``uninstrument_openai`` undoes
it. Message content capture follows ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``
(``span_only`` puts prompts on spans as ``gen_ai.input.messages``), read when instrumenting.
"""

from __future__ import annotations

import base64
import gzip as _gzip
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import requests
from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as ProtoSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult

if TYPE_CHECKING:
    import openai

    from openai_standin import OpenAIStandin

_ID_FIELDS = frozenset({"traceId", "spanId", "parentSpanId"})


def traces_url(endpoint: str) -> str:
    """``endpoint`` as the exporter wants it: a bare ``http://host:port`` gets ``/v1/traces``."""
    return endpoint.rstrip("/") + "/v1/traces" if urlsplit(endpoint).path in ("", "/") else endpoint


def make_tracer_provider(endpoint: str, token: str | None, protocol: Literal["protobuf", "json"] = "protobuf",
                         gzip: bool = False, resource: Mapping[str, Any] | None = None, batch: bool = False,
                         timeout: float = 5.0) -> TracerProvider:  # fmt: skip
    """An SDK TracerProvider exporting every span to ``endpoint`` over OTLP/HTTP.

    ``token`` becomes ``Authorization: Bearer <token>`` (None: no header). A SimpleSpanProcessor
    (the default) exports each span synchronously when it ends, one request per span; ``batch``
    uses a BatchSpanProcessor instead, whose spans leave on ``force_flush``. Passing compression
    and headers explicitly means ``OTEL_EXPORTER_OTLP_*`` variables cannot change them (an
    ``OTEL_EXPORTER_OTLP_HEADERS`` in the environment still adds headers with other names).
    """
    exporter = make_span_exporter(endpoint, token, protocol, gzip, timeout)
    attrs = {"service.name": "spendlake-test-client", **(resource or {})}
    provider = TracerProvider(resource=Resource.create(attrs))
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    return provider


def make_span_exporter(endpoint: str, token: str | None, protocol: Literal["protobuf", "json"] = "protobuf",
                       gzip: bool = False, timeout: float = 5.0) -> SpanExporter:  # fmt: skip
    """The OTLP/HTTP exporter ``make_tracer_provider`` uses, on its own: a test calling its
    ``export(spans)`` sees the SpanExportResult that a span processor would only log."""
    url = traces_url(endpoint)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    if protocol == "protobuf":
        return ProtoSpanExporter(endpoint=url, headers=headers, timeout=timeout,
                                 compression=Compression.Gzip if gzip else Compression.NoCompression)  # fmt: skip
    if protocol == "json":
        return json_span_exporter(url, headers, gzip, timeout)
    raise ValueError(f"protocol {protocol!r} is not one of 'protobuf', 'json'")


def json_span_exporter(url: str, headers: Mapping[str, str], gzip: bool, timeout: float) -> SpanExporter:
    """The official OTLP/JSON exporter if installed, else the SDK-encoder-based one below."""
    try:
        from opentelemetry.exporter.otlp.common.http import Compression as HttpCompression
        from opentelemetry.exporter.otlp.json.http import OTLPSpanExporter as JsonSpanExporter
    except ImportError:
        return _ProtoJsonSpanExporter(url, headers, gzip, timeout)
    compression = HttpCompression.GZIP if gzip else HttpCompression.NONE
    return JsonSpanExporter(endpoint=url, headers=headers, timeout=timeout, compression=compression)  # type: ignore[no-any-return]


def otlp_json(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """An ExportTraceServiceRequest as OTLP/JSON (the spec's rules, not plain proto3 JSON).

    protobuf's JSON mapping writes ``bytes`` as base64 and enums by name; OTLP/JSON wants trace
    and span ids as lower-case hex and enums (``kind``, ``status.code``) as integers.
    """
    doc = MessageToDict(encode_spans(spans), use_integers_for_enums=True)

    def fix(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _ID_FIELDS and isinstance(value, str):
                    node[key] = _b64_to_hex(value)
                else:
                    fix(value)
        elif isinstance(node, list):
            for item in node:
                fix(item)

    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            fix(ss.get("spans", []))  # ids live only in spans and their links, never in attributes
    return doc


def _b64_to_hex(value: str) -> str:
    return base64.b64decode(value).hex()


class _ProtoJsonSpanExporter(SpanExporter):
    """OTLP/HTTP JSON without the optional package: one POST per export, no retries."""

    def __init__(self, url: str, headers: Mapping[str, str], gzip: bool, timeout: float) -> None:
        self._url, self._gzip, self._timeout = url, gzip, timeout
        self._headers = {"Content-Type": "application/json", **headers}
        if gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._session = requests.Session()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        body = json.dumps(otlp_json(spans), separators=(",", ":")).encode()
        try:
            r = self._session.post(self._url, data=_gzip.compress(body) if self._gzip else body,
                                   headers=self._headers, timeout=self._timeout, allow_redirects=False)  # fmt: skip
        except requests.RequestException:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS if 200 <= r.status_code < 300 else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self._session.close()


def force_flush(provider: TracerProvider, timeout_s: float = 10.0) -> None:
    """Push every ended span out; AssertionError if the processors did not finish in time."""
    if not provider.force_flush(int(timeout_s * 1000)):
        raise AssertionError(f"spans were not flushed within {timeout_s} s")


def instrumented_openai(standin: OpenAIStandin, tracer_provider: TracerProvider,
                        api_key: str = "sk-standin") -> openai.OpenAI:  # fmt: skip
    """An ``openai.OpenAI`` client for ``standin``, traced by the official instrumentation.

    ``max_retries=0`` so a scripted error status reaches the span instead of being retried.
    """
    import openai

    try:
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    except ModuleNotFoundError as e:  # 2.4b0 imports util.genai.instruments, renamed in util-genai 1.2
        raise RuntimeError(f"the official OpenAI instrumentation does not import ({e}); "
                           "opentelemetry-instrumentation-openai-v2 2.4b0 needs opentelemetry-util-genai<1.2") from e  # fmt: skip
    instrumentor = OpenAIInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()  # a second instrument() would be ignored, keeping the old provider
    instrumentor.instrument(tracer_provider=tracer_provider)
    return openai.OpenAI(base_url=standin.base_url, api_key=api_key, max_retries=0, timeout=10.0)


def uninstrument_openai() -> None:
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    instrumentor = OpenAIInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
