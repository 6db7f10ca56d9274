"""Helpers for the intake tests: a real `spendlake serve` with an [intake], and OTLP requests
shaped like the ones real emitters send (Bifrost's otel plugin: ../shared/reference/bifrost-otel.md)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from conftest import spendlake_bg, wait_for

TOKEN = "intake-test-token-7f3a9c"  # the value of SPENDLAKE_TEST_INTAKE_TOKENS in these tests
PROMPT = "SECRET PROMPT TEXT: the quarterly numbers are"
COMPLETION = "SECRET COMPLETION TEXT: revenue grew"

BASE_CONFIG = """
[lake]
path = "{lake}"

[metrics]
listen = "127.0.0.1:0"

[ingest]
batch_max_age = 0.3

[intake]
listen = "127.0.0.1:0"
tokens_env = "SPENDLAKE_TEST_INTAKE_TOKENS"
ack_timeout = 3.0
"""


class Serve:
    """A running `spendlake serve` and the addresses it printed."""

    def __init__(self, proc: Any, log: Path, intake_port: int, metrics_port: int) -> None:
        self.proc, self.log, self.intake_port, self.metrics_port = proc, log, intake_port, metrics_port
        self.url = f"http://127.0.0.1:{intake_port}"


def start_serve(tmp_path: Path, lake: Path, extra: str = "", name: str = "serve") -> Serve:
    cfg = tmp_path / f"{name}.toml"
    if not cfg.exists():
        cfg.write_text(BASE_CONFIG.format(lake=lake) + extra)
    os.environ["SPENDLAKE_TEST_INTAKE_TOKENS"] = f"old-rotated-token,{TOKEN}"
    log = tmp_path / f"{name}.log"
    start = log.stat().st_size if log.exists() else 0
    proc = spendlake_bg("serve", "--config", str(cfg), log=log)
    found: dict[str, int] = {}

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        text = log.read_text(errors="replace")[start:]
        m1 = re.search(r"intake on http://127\.0\.0\.1:(\d+)", text)
        m2 = re.search(r"serving /metrics on http://127\.0\.0\.1:(\d+)/metrics", text)
        if m1 and m2:
            found["intake"], found["metrics"] = int(m1.group(1)), int(m2.group(1))
        return len(found) == 2

    wait_for(ready, 120, "serve to start its intake")
    return Serve(proc, log, found["intake"], found["metrics"])


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- OTLP requests built with the protobuf classes every OTLP exporter uses -----------------------


def kv(key: str, value: Any) -> Any:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    v = AnyValue()
    if isinstance(value, bool):
        v.bool_value = value
    elif isinstance(value, int):
        v.int_value = value
    elif isinstance(value, float):
        v.double_value = value
    else:
        v.string_value = value
    return KeyValue(key=key, value=v)


def bifrost_span(i: int, *, model: str = "gpt-4o", prompt: int = 1200, completion: int = 300,
                 vk: str | None = "vk-bifrost-1", cost: float | None = None, error: bool = False,
                 end_ms: int = 1764331200000) -> Any:  # fmt: skip
    """One span as Bifrost's otel plugin writes it: older usage names, the virtual key id,
    Bifrost's own cost, the prompt and output as attributes (which must never be stored)."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    attrs = [
        kv("gen_ai.provider.name", "openai"), kv("gen_ai.request.model", model), kv("gen_ai.chat.model", model),
        kv("gen_ai.usage.prompt_tokens", prompt), kv("gen_ai.usage.completion_tokens", completion),
        kv("gen_ai.usage.total_tokens", prompt + completion), kv("gen_ai.number_of_retries", 0),
        kv("gen_ai.fallback_index", 0), kv("gen_ai.selected_key_id", "pk-openai-1"),
        kv("gen_ai.input.messages", f'[{{"role":"user","content":"{PROMPT}"}}]'),
        kv("gen_ai.chat.output_messages", f'[{{"role":"assistant","content":"{COMPLETION}"}}]'),
    ]  # fmt: skip
    if vk is not None:
        attrs += [kv("gen_ai.virtual_key_id", vk), kv("gen_ai.virtual_key_name", f"name of {vk}")]
    if cost is not None:
        attrs.append(kv("gen_ai.usage.cost", cost))
    end_ns = end_ms * 1_000_000
    return Span(trace_id=(0xB1F0 + i).to_bytes(16, "big"), span_id=(0x5A + i).to_bytes(8, "big"),
                name="gen_ai.chat", kind=Span.SPAN_KIND_SERVER, start_time_unix_nano=end_ns - 812_000_000,
                end_time_unix_nano=end_ns, attributes=attrs,
                status=Status(code=Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_OK))  # fmt: skip


def plain_span(i: int) -> Any:
    """A span that is not an LLM call (an HTTP handler): skipped, never dead-lettered."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    return Span(trace_id=(0xC0DE + i).to_bytes(16, "big"), span_id=(0x77 + i).to_bytes(8, "big"), name="GET /health",
                start_time_unix_nano=1764331200000000000, end_time_unix_nano=1764331200100000000,
                attributes=[kv("http.response.status_code", 200)])  # fmt: skip


def request(spans: list[Any], service: str = "bifrost") -> Any:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=[kv("service.name", service), kv("service.version", "1.3.0")]),
        scope_spans=[ScopeSpans(scope=InstrumentationScope(name="bifrost-otel-plugin"), spans=spans)])])  # fmt: skip


def otlp_json(req: Any) -> bytes:
    """OTLP/JSON as the specification writes it: lowerCamelCase, hex ids, int64 as strings."""
    import orjson
    from google.protobuf.json_format import MessageToDict

    d = MessageToDict(req)  # ids come out base64: OTLP/JSON wants hex
    for rs in d.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for s in ss.get("spans", []):
                for k in ("traceId", "spanId", "parentSpanId"):
                    if k in s:
                        import base64

                        s[k] = base64.b64decode(s[k]).hex()
    return orjson.dumps(d)


def lake_text(lake: Path) -> bytes:
    """Every byte under the lake (Parquet, manifests, state, spool) for a secrets/text scan."""
    out = []
    for p in lake.rglob("*"):
        if p.is_file():
            out.append(p.read_bytes())
    return b"\n".join(out)


def intake_counters(work: Path) -> Any:
    """The intake's counters after real requests through its core: an accepted and a rejected
    event, a span that is no LLM call (onto a throwaway spool), and a refused request."""
    from ingest.intake import Intake, IntakeStats, SpoolSink
    from ingest.spool import Spool

    stats = IntakeStats()
    spool = Spool(work / "spool")
    intake = Intake(SpoolSink(spool), stats=stats)
    body = b'[{"event_id": "i1", "timestamp": 1764331200000, "provider": "openai", "model": "gpt-4o"}, {"event_id": "i2"}]'
    intake.events(body)
    stats.request("/v1/events", 200, len(body))
    span = (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "0af7651916cd43dd8448eb211c80319c", '
            b'"spanId": "b7ad6b7169203331", "name": "GET /"}]}]}]}')  # fmt: skip
    intake.traces(span, "json")
    stats.request("/v1/traces", 200, len(span))
    stats.request("/v1/events", 401, 0)
    spool.close()
    return stats
