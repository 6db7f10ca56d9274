"""Real OpenTelemetry clients against a real `spendlake serve` (embedded mode, `[intake]`; contract 7).

What it shows:

1. The OpenTelemetry Python SDK exporting over OTLP/HTTP, protobuf and gzipped JSON: spans with
   GenAI attributes set by hand land as one event each, `event_id` = trace id + "-" + span id,
   tokens as sent, `cost_usd` the catalog's figure as `spendlake price` computes it; the
   non-GenAI parent span does not land; a wrong token makes the exporter's `export()` return
   FAILURE and nothing of it is stored (no event, no dead letter); prompt text is never stored.
   (JSON goes through otel_clients.json_span_exporter: the official OTLP/JSON exporter when it is
   installed, else the SDK's own protobuf encoder re-spelled as OTLP/JSON.)
2. The official `openai` SDK instrumented by `opentelemetry-instrumentation-openai-v2`, calling a
   local OpenAI stand-in (chat, chat streamed with include_usage, embeddings): each call lands
   with the dated response model, the stand-in's input/output tokens, the catalog's cost and the
   attribution of the Resource; with content capture on, no prompt or reply text is in the lake.
3. A virtual-key budget crossed by instrumented calls reaches a Slack stand-in as an 80% and then
   a 100% alert, each once, with the spend serve priced; the team is filled in from the hierarchy.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conftest import dead_rows, lake_rows, spendlake, wait_for
from intake_env import COMPLETION, PROMPT, TOKEN, lake_text, start_serve
from openai_standin import SNAPSHOTS, OpenAIStandin, Usage
from otel_clients import force_flush, instrumented_openai, make_span_exporter, make_tracer_provider, uninstrument_openai
from receivers import HttpReceiver, slack_receiver

COLUMNS = ("event_id", "provider", "model", "input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens",
           "virtual_key", "team", "request_type", "epoch_ms(timestamp)", "cost_usd")  # fmt: skip
ATTRIBUTION = {"spendlake.virtual_key": "vk-app", "spendlake.team": "team-app"}


@pytest.fixture
def slack() -> Iterator[HttpReceiver]:
    with slack_receiver() as receiver:
        yield receiver


@pytest.fixture(autouse=True)
def _uninstrument() -> Iterator[None]:
    yield
    uninstrument_openai()  # the instrumentation patches the openai classes process-wide


def event_id(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    assert ctx is not None
    return f"{ctx.trace_id:032x}-{ctx.span_id:016x}"


def canonical(span: ReadableSpan, **fields: Any) -> dict[str, Any]:
    """The contract-1 event a span stands for, built client-side from what the client knows."""
    assert span.end_time is not None
    return {"event_id": event_id(span), "timestamp": span.end_time // 1_000_000, **fields}


def catalog_costs(events: list[dict[str, Any]]) -> dict[str, float]:
    """event_id → cost_usd as `spendlake price` (the built-in catalog) computes it."""
    out = spendlake("price", input=b"\n".join(orjson.dumps(e) for e in events) + b"\n", check=True).stdout
    priced = [orjson.loads(line) for line in out.splitlines()]
    assert all(p["cost_source"] == "catalog" for p in priced), priced
    return {p["event_id"]: p["cost_usd"] for p in priced}


def landed(lake: Path) -> dict[str, dict[str, Any]]:
    rows = lake_rows(lake, f"select {', '.join(COLUMNS)} from ev")
    return {r[0]: dict(zip(COLUMNS, r)) for r in rows}


def assert_no_content(lake: Path) -> None:
    """Neither the raw bytes (lake_text: Parquet, manifests, spool, state) nor the decoded rows —
    the Parquet is zstd-compressed, so a stored prompt might not show as plain bytes — hold any of
    the prompt or completion text ("SECRET" starts both)."""
    assert "SECRET" in PROMPT and "SECRET" in COMPLETION
    assert b"SECRET" not in lake_text(lake)
    assert "SECRET" not in repr(lake_rows(lake)) + repr(dead_rows(lake))


def chat_messages(role: str, text: str) -> str:
    """Message content as the GenAI conventions put it on a span (JSON in a string attribute)."""
    return orjson.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}]).decode()


def expected_row(ev: dict[str, Any], cost: float) -> dict[str, Any]:
    return {"event_id": ev["event_id"], "provider": ev["provider"], "model": ev["model"],
            "input_tokens": ev["input_tokens"], "output_tokens": ev.get("output_tokens", 0),
            "cached_input_tokens": ev.get("cached_input_tokens", 0), "reasoning_tokens": ev.get("reasoning_tokens", 0),
            "virtual_key": ev.get("virtual_key"), "team": ev.get("team"), "request_type": ev["request_type"],
            "epoch_ms(timestamp)": ev["timestamp"], "cost_usd": pytest.approx(cost, rel=1e-9, abs=1e-12)}  # fmt: skip


def test_sdk_spans_over_otlp_http_protobuf_and_gzipped_json(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    serve = start_serve(tmp_path, lake)
    cases = [("protobuf", False, "gpt-4o", "gpt-4o-2024-08-06", "vk-proto"),
             ("json", True, "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "vk-json")]  # fmt: skip
    sent: list[dict[str, Any]] = []

    def genai_spans(provider: TracerProvider, request_model: str, model: str, vk: str) -> tuple[Any, Any]:
        tracer = provider.get_tracer("spendlake.test")
        with tracer.start_as_current_span("POST /ask") as handler:  # the app's HTTP span: no usage
            with tracer.start_as_current_span(f"chat {request_model}") as llm:
                llm.set_attributes({
                    "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": request_model, "gen_ai.response.model": model,
                    "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 300,
                    "gen_ai.usage.cache_read.input_tokens": 1000, "gen_ai.usage.reasoning.output_tokens": 100,
                    "gen_ai.input.messages": chat_messages("user", PROMPT),
                    "gen_ai.output.messages": chat_messages("assistant", COMPLETION),
                    "spendlake.virtual_key": vk, "spendlake.team": "team-otel",
                })  # fmt: skip
        return handler, llm

    # a wrong token first: the exporter reports FAILURE, and serve stores nothing of it
    memory = InMemorySpanExporter()
    recorder = TracerProvider()
    recorder.add_span_processor(SimpleSpanProcessor(memory))
    genai_spans(recorder, "gpt-4o", "gpt-4o-2024-08-06", "vk-unauthorized")
    refused = memory.get_finished_spans()
    for protocol, gz, *_ in cases:
        exporter = make_span_exporter(serve.url, "not-the-token", protocol, gzip=gz)  # type: ignore[arg-type]
        assert exporter.export(refused) is SpanExportResult.FAILURE, protocol
        exporter.shutdown()

    for protocol, gz, request_model, model, vk in cases:
        provider = make_tracer_provider(serve.url, TOKEN, protocol, gzip=gz)  # type: ignore[arg-type]
        handler, llm = genai_spans(provider, request_model, model, vk)
        force_flush(provider)
        provider.shutdown()
        assert event_id(handler) != event_id(llm)
        sent.append(canonical(llm, provider="openai", model=model, input_tokens=1200, output_tokens=300,
                              cached_input_tokens=1000, reasoning_tokens=100, virtual_key=vk, team="team-otel",
                              request_type="chat"))  # fmt: skip

    costs = catalog_costs(sent)
    wait_for(lambda: len(landed(lake)) >= len(sent), 60, "the exported GenAI spans to land")
    # exactly the two LLM spans: neither HTTP span, nor anything sent with the wrong token
    assert landed(lake) == {e["event_id"]: expected_row(e, costs[e["event_id"]]) for e in sent}
    # and that figure is OpenAI's list price: 200 fresh input at $2.50/M, 1000 cached at $1.25/M, 300 out at $10/M
    assert costs[sent[0]["event_id"]] == pytest.approx(0.0005 + 0.00125 + 0.003)
    assert dead_rows(lake) == []
    assert_no_content(lake)
    metrics = requests.get(f"http://127.0.0.1:{serve.metrics_port}/metrics", timeout=10).text
    assert "spendlake_intake_spans_skipped_total 2.0" in metrics  # the two HTTP spans: skipped, counted


def test_openai_sdk_traced_by_openai_v2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "span_only")  # read at instrument time
    lake = tmp_path / "lake"
    serve = start_serve(tmp_path, lake)
    provider = make_tracer_provider(serve.url, TOKEN, "protobuf", resource=ATTRIBUTION)
    seen = InMemorySpanExporter()  # the same spans, kept client-side for their ids and attributes
    provider.add_span_processor(SimpleSpanProcessor(seen))
    scripted = [Usage(1200, 300, cached_tokens=1000, reasoning_tokens=100), Usage(800, 150, cached_tokens=512), Usage(42)]
    messages: Any = [{"role": "user", "content": PROMPT}]
    with OpenAIStandin(reply=COMPLETION) as api:
        api.script(*scripted)
        client = instrumented_openai(api, provider)
        client.chat.completions.create(model="gpt-4o", messages=messages)
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True,
                                                stream_options={"include_usage": True})  # fmt: skip
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).strip() == COMPLETION
        client.embeddings.create(model="text-embedding-3-small", input=[PROMPT])
    force_flush(provider)
    provider.shutdown()

    spans = seen.get_finished_spans()
    assert [s.name for s in spans] == ["chat gpt-4o", "chat gpt-4o-mini", "embeddings text-embedding-3-small"]
    assert PROMPT in spans[0].attributes["gen_ai.input.messages"]  # type: ignore[index,operator]  # capture is on
    models = [SNAPSHOTS["gpt-4o"], SNAPSHOTS["gpt-4o-mini"], "text-embedding-3-small"]  # what the stand-in answered
    # openai-v2 2.4b0 exports only gen_ai.usage.input_tokens / output_tokens: not the cached (1000, 512)
    # or reasoning (100) counts the stand-in returned. So spendlake can price only the tokens the span
    # carries, and the expected cost is the catalog's for those (read from the span, 0 when absent).
    sent = []
    for span, usage, model, kind in zip(spans, scripted, models, ["chat", "chat", "embedding"]):
        attrs = span.attributes or {}
        sent.append(canonical(span, provider="openai", model=model, input_tokens=usage.prompt_tokens,
                              output_tokens=usage.completion_tokens, request_type=kind,
                              cached_input_tokens=attrs.get("gen_ai.usage.cache_read.input_tokens", 0),
                              reasoning_tokens=attrs.get("gen_ai.usage.reasoning.output_tokens", 0),
                              virtual_key="vk-app", team="team-app"))  # fmt: skip
    costs = catalog_costs(sent)
    wait_for(lambda: len(landed(lake)) >= 3, 60, "the three instrumented calls to land")
    assert landed(lake) == {e["event_id"]: expected_row(e, costs[e["event_id"]]) for e in sent}
    assert all(c > 0 for c in costs.values()), costs
    assert dead_rows(lake) == []
    assert_no_content(lake)
    serve.proc.terminate()
    assert serve.proc.wait(60) == 0
    assert PROMPT not in serve.log.read_text() and COMPLETION not in serve.log.read_text()


BUDGET_CONFIG = """
[alerts]
evaluation_interval = "1s"
budget_thresholds = [0.8, 1.0]

[[channels]]
name = "finops-slack"
type = "slack"
url_env = "TEST_OTEL_SLACK_URL"
kinds = ["budget"]

[[teams]]
id = "team-app"
name = "App team"
budgets = [{ max_limit = 1000.0, reset_duration = "1M" }]

[[virtual_keys]]
id = "vk-app"
name = "App"
team_id = "team-app"
budgets = [{ max_limit = 1.6, reset_duration = "1d" }]
"""


def test_instrumented_calls_cross_a_virtual_key_budget_and_slack_hears_it(tmp_path: Path, slack: HttpReceiver,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    big = Usage(200_000, 20_000)  # one gpt-4o call: 0.5 + 0.2 = $0.70 at the catalog's $2.50 / $10 per M
    call_cost = catalog_costs([{"event_id": "c", "timestamp": int(time.time() * 1000), "provider": "openai",
                                "model": SNAPSHOTS["gpt-4o"], "input_tokens": 200_000, "output_tokens": 20_000}])["c"]  # fmt: skip
    assert 0.8 * 1.6 < 2 * call_cost < 1.6 < 3 * call_cost  # two calls pass 80% of $1.60, three pass 100%
    monkeypatch.setenv("TEST_OTEL_SLACK_URL", slack.url)
    lake = tmp_path / "lake"
    serve = start_serve(tmp_path, lake, BUDGET_CONFIG)
    provider = make_tracer_provider(serve.url, TOKEN, "json", gzip=True, resource={"spendlake.virtual_key": "vk-app"})

    def titles() -> list[str]:
        return [re.sub(r"^\W+", "", r.json["text"].splitlines()[0]) for r in slack.requests if r.json]

    warning, exceeded = "Warning: App (vk-app) at 80% of budget", "Exceeded: App (vk-app) at 100% of budget"
    with OpenAIStandin(default=big) as api:
        client = instrumented_openai(api, provider)
        for _ in range(2):
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "summarise"}])
        wait_for(lambda: warning in titles(), 60, "the 80% alert for vk-app", every=0.25)
        assert titles() == [warning]  # $1.40 of $1.60: not 100% yet, and the team ($1000) is far off
        assert f"Current: ${2 * call_cost:,.2f} / $1.60" in slack.requests[0].json["text"]
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "summarise"}])
        wait_for(lambda: exceeded in titles(), 60, "the 100% alert for vk-app", every=0.25)
    force_flush(provider)
    provider.shutdown()
    assert f"Current: ${3 * call_cost:,.2f} / $1.60" in slack.requests[-1].json["text"]
    assert lake_rows(lake, "select count(*), sum(input_tokens), any_value(team) from ev") == [(3, 600_000, "team-app")]
    time.sleep(2)  # two more evaluations: a repeated alert would arrive now
    assert titles() == [warning, exceeded]  # each threshold once
