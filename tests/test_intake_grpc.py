"""OTLP/gRPC intake (contract 7): a real `spendlake serve` (embedded: no [kafka], the intake spools
locally) fed by the real OpenTelemetry SDK and its OTLP/gRPC exporter, then the lake and /metrics
checked; plus the receiver's error answers in-process (UNAVAILABLE, INTERNAL, limits, bind).

grpcio and the OTLP/gRPC exporter are test extras: they are imported, never skipped.
"""

from __future__ import annotations

import os
import re
import socket
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

from conftest import raw_rows, spendlake, spendlake_bg, wait_for
from intake_env import BASE_CONFIG
from ingest.intake import Intake, Tokens, Unavailable
from ingest.intake.grpc import serve_grpc

TOKEN = "grpc-test-token-7c1f"
TOKENS_ENV = "SPENDLAKE_TEST_INTAKE_TOKENS"
SECRET = "SECRET PROMPT TEXT"

CONFIG = BASE_CONFIG + 'grpc_listen = "127.0.0.1:0"\n'  # the intake tests' serve, plus gRPC


def _ports(log: Path) -> dict[str, int]:
    # serve's logger also says "OTLP/gRPC intake on 127.0.0.1:0" (the configured address): port 0 is skipped
    patterns = {"metrics": r"serving /metrics on http://127\.0\.0\.1:(\d+)/metrics",
                "http": r"intake on http://127\.0\.0\.1:(\d+)", "grpc": r"OTLP/gRPC intake on 127\.0\.0\.1:([1-9]\d*)"}
    found: dict[str, int] = {}

    def ready() -> bool:
        text = log.read_text(errors="replace")
        found.update({k: int(m.group(1)) for k, p in patterns.items() if (m := re.search(p, text))})
        return len(found) == len(patterns)

    wait_for(ready, 120, f"serve to log its three ports (log: {log})")
    return found


def _provider(port: int, token: str, gzip: bool = False) -> tuple[TracerProvider, OTLPSpanExporter]:
    exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=10,
                                headers=(("authorization", f"Bearer {token}"),),
                                compression=grpc.Compression.Gzip if gzip else grpc.Compression.NoCompression)
    provider = TracerProvider(resource=Resource.create({"service.name": "grpc-test-client"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _llm_span(provider: TracerProvider, input_tokens: int, output_tokens: int, cached: int) -> ReadableSpan:
    span = provider.get_tracer("test").start_span("chat gpt-4o", attributes={
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": input_tokens, "gen_ai.usage.output_tokens": output_tokens,
        "gen_ai.usage.cache_read.input_tokens": cached, "spendlake.virtual_key": "vk-grpc",
        "gen_ai.input.messages": SECRET,
    })  # fmt: skip
    span.end()  # SimpleSpanProcessor: exported (synchronously) here
    assert isinstance(span, ReadableSpan)
    return span


def _event_id(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    assert ctx is not None
    return f"{ctx.trace_id:032x}-{ctx.span_id:016x}"


def _query(lake: Path, sql: str) -> list[dict[str, Any]]:
    r = spendlake("query", "--lake", str(lake), sql, "--format", "json", check=True)
    return orjson.loads(r.stdout)  # type: ignore[no-any-return]


def _request(input_tokens: int) -> trace_service_pb2.ExportTraceServiceRequest:
    """One GenAI span, built by hand (for calls straight through the stub)."""
    req = trace_service_pb2.ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add(
        trace_id=os.urandom(16), span_id=os.urandom(8), name="chat", start_time_unix_nano=1_760_000_000_000_000_000,
        end_time_unix_nano=1_760_000_001_000_000_000)  # fmt: skip
    for key, value in (("gen_ai.provider.name", common_pb2.AnyValue(string_value="openai")),
                       ("gen_ai.request.model", common_pb2.AnyValue(string_value="gpt-4o")),
                       ("gen_ai.usage.input_tokens", common_pb2.AnyValue(int_value=input_tokens))):  # fmt: skip
        span.attributes.add(key=key, value=value)
    return req


def _export(port: int, req: Any, token: str | None, gzip: bool = False) -> Any:
    compression = grpc.Compression.Gzip if gzip else grpc.Compression.NoCompression
    with grpc.insecure_channel(f"127.0.0.1:{port}", compression=compression) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
        return stub.Export(req, metadata=metadata, timeout=10)


def test_sdk_spans_over_grpc_land_priced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lake = tmp_path / "lake"
    cfg = tmp_path / "spendlake.toml"
    cfg.write_text(CONFIG.format(lake=lake))
    monkeypatch.setenv(TOKENS_ENV, f"other-token,{TOKEN}")
    log = tmp_path / "serve.log"
    proc = spendlake_bg("serve", "--config", str(cfg), log=log)
    ports = _ports(log)

    plain, plain_exp = _provider(ports["grpc"], TOKEN)
    zipped, zipped_exp = _provider(ports["grpc"], TOKEN, gzip=True)
    spans = [_llm_span(plain, 1200, 300, 200), _llm_span(zipped, 5000, 800, 4096)]
    other = plain.get_tracer("test").start_span("GET /healthz", attributes={"http.request.method": "GET"})
    other.end()
    assert isinstance(other, ReadableSpan)

    # a wrong token: the exporter reports the failure (UNAUTHENTICATED is not retried)
    wrong, wrong_exp = _provider(ports["grpc"], "not-a-token")
    assert wrong_exp.export([spans[0]]) is SpanExportResult.FAILURE
    assert plain_exp.export([spans[0]]) is SpanExportResult.SUCCESS  # a resend is the same event
    for token in ("not-a-token", None):
        with pytest.raises(grpc.RpcError) as info:
            _export(ports["grpc"], _request(10), token)
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    # a span that cannot become an event: answered as a partial success, the rest is kept
    answer = _export(ports["grpc"], _request(-5), TOKEN)
    assert answer.partial_success.rejected_spans == 1
    assert "input_tokens" in answer.partial_success.error_message
    assert not _export(ports["grpc"], _request(7), TOKEN).HasField("partial_success")

    ids = [_event_id(s) for s in spans]
    in_list = ", ".join(f"'{i}'" for i in ids)
    sql = f"select * from request_log where event_id in ({in_list}) order by input_tokens"  # one row per event
    wait_for(lambda: len(_query(lake, sql)) == 2, 60, "the two GenAI spans in the lake")
    rows = _query(lake, sql)
    assert [r["event_id"] for r in rows] == ids
    for span, row in zip(spans, rows):
        assert (row["provider"], row["model"], row["virtual_key"]) == ("openai", "gpt-4o", "vk-grpc")
        attrs = span.attributes or {}
        assert row["input_tokens"] == attrs["gen_ai.usage.input_tokens"]
        assert row["output_tokens"] == attrs["gen_ai.usage.output_tokens"]
        assert row["cached_input_tokens"] == attrs["gen_ai.usage.cache_read.input_tokens"]
        assert span.end_time is not None
        canonical = {"event_id": row["event_id"], "timestamp": span.end_time // 1_000_000, "provider": "openai",
                     "model": "gpt-4o", "input_tokens": row["input_tokens"], "output_tokens": row["output_tokens"],
                     "cached_input_tokens": row["cached_input_tokens"], "virtual_key": "vk-grpc"}  # fmt: skip
        priced = orjson.loads(spendlake("price", input=orjson.dumps(canonical) + b"\n", check=True).stdout)
        assert priced["cost_source"] == "catalog" and priced["cost_usd"] > 0
        assert row["cost_usd"] == pytest.approx(priced["cost_usd"], rel=1e-9)
        assert (row["cost_source"], row["price_id"]) == ("catalog", priced["price_id"])

    other_id = _event_id(other)
    assert _query(lake, f"select count(*) as n from events where event_id = '{other_id}'") == [{"n": 0}]
    # prompt text: in no row of the lake, and in no byte of any file under it (spool included)
    assert all(SECRET not in orjson.dumps(r, default=str).decode() for r in raw_rows(lake))
    for f in lake.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f

    with urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    requests = dict(re.findall(r'spendlake_intake_requests_total\{endpoint="grpc",code="(\d+)"\} (\S+)', metrics))
    assert (float(requests["200"]), float(requests["401"])) == (6, 3), requests  # 4 SDK exports + 2 stub calls
    assert TOKEN not in log.read_text(errors="replace") and "not-a-token" not in log.read_text(errors="replace")
    for provider in (plain, zipped, wrong):
        provider.shutdown()
    proc.terminate()
    assert proc.wait(60) == 0, log.read_text(errors="replace")[-3000:]


class _Sink:
    def __init__(self, exc: Exception | None = None) -> None:
        self.exc = exc
        self.records: list[Any] = []

    def write(self, records: list[Any]) -> None:
        if self.exc is not None:
            raise self.exc
        self.records += records

    def close(self) -> None:
        pass


@pytest.fixture
def receiver() -> Any:
    servers: list[grpc.Server] = []

    def start(sink: _Sink, max_bytes: int = 1 << 20) -> tuple[int, Intake]:
        intake = Intake(sink)
        server = serve_grpc("127.0.0.1:0", intake, Tokens([TOKEN]), max_bytes)
        servers.append(server)
        return server.spendlake_port, intake  # type: ignore[attr-defined]

    yield start
    for s in servers:
        s.stop(None)


def test_error_answers(receiver: Any, caplog: pytest.LogCaptureFixture) -> None:
    port, intake = receiver(_Sink(Unavailable("the spool cannot be written (No space left on device)", 7)))
    with pytest.raises(grpc.RpcError) as info:
        _export(port, _request(10), TOKEN)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE and "No space left" in info.value.details()
    retry = dict(info.value.trailing_metadata())["google.rpc.retryinfo-bin"]
    from google.rpc.error_details_pb2 import RetryInfo  # googleapis-common-protos, the exporter's dependency

    assert RetryInfo.FromString(retry).retry_delay.seconds == 7
    assert intake.stats.requests == {("grpc", 503): 1}

    port, intake = receiver(_Sink(RuntimeError("a bug with a secret in it")))
    with pytest.raises(grpc.RpcError) as info:
        _export(port, _request(10), TOKEN)
    assert info.value.code() is grpc.StatusCode.INTERNAL
    assert "secret" not in info.value.details() and "Traceback" not in info.value.details()
    assert "gRPC Export failed" in caplog.text and TOKEN not in caplog.text
    assert intake.stats.requests == {("grpc", 500): 1}

    sink = _Sink()
    port, intake = receiver(sink, max_bytes=2000)
    big = _request(10)
    big.resource_spans[0].scope_spans[0].spans[0].attributes.add(
        key="gen_ai.input.messages", value=common_pb2.AnyValue(string_value="x" * 5000))
    for gzip in (False, True):  # the limit holds for the decompressed size too (5 kB gzip to ~0.2 kB)
        with pytest.raises(grpc.RpcError) as info:
            _export(port, big, TOKEN, gzip=gzip)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, gzip
    assert sink.records == []
    assert not _export(port, _request(10), TOKEN).HasField("partial_success")
    assert len(sink.records) == 1 and intake.stats.requests == {("grpc", 200): 1}


def test_bind_failure_is_an_oserror(receiver: Any) -> None:
    port, intake = receiver(_Sink())
    with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
        serve_grpc(f"127.0.0.1:{port}", intake, Tokens([TOKEN]), 1 << 20)  # a gRPC server holds it
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        with pytest.raises(OSError, match="cannot listen"):
            serve_grpc(f"127.0.0.1:{taken}", intake, Tokens([TOKEN]), 1 << 20)


def test_serve_refuses_a_taken_grpc_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKENS_ENV, TOKEN)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        cfg = tmp_path / "spendlake.toml"
        cfg.write_text(CONFIG.format(lake=tmp_path / "lake", env=TOKENS_ENV).replace(
            'grpc_listen = "127.0.0.1:0"', f'grpc_listen = "127.0.0.1:{taken}"'))  # fmt: skip
        r = spendlake("serve", "--config", str(cfg), timeout=120)
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert f"cannot start the intake: [intake] grpc_listen: cannot listen on 127.0.0.1:{taken}" in err
    assert "Traceback" not in err
