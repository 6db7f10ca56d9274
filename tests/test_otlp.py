"""OTLP spans → usage events (ingest/otlp.py): the mapping table, both encodings, and OTLP
records on the usage topic (the Collector's Kafka exporter: otlp_proto and otlp_json)."""

from __future__ import annotations

import orjson
import pytest

from conftest import Broker, dead_rows, event, lake_rows, spendlake
from ingest import otlp
from ingest.decode import ROW_FIELDS, decode_record
from ingest.fastdecode import BatchDecoder
from intake_env import COMPLETION, PROMPT, bifrost_span, kv, otlp_json, plain_span, request


def genai_span(i: int, attrs: list, **kw: int) -> object:
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    return Span(trace_id=(0xA0 + i).to_bytes(16, "big"), span_id=(0xB0 + i).to_bytes(8, "big"), name="chat gpt-4o",
                start_time_unix_nano=kw.get("start", 1764331200000000000),
                end_time_unix_nano=kw.get("end", 1764331202000000000), attributes=attrs)  # fmt: skip


def rows(req: object) -> list[dict]:
    got, bad = decode_record(req.SerializeToString())  # type: ignore[attr-defined]
    assert not bad, bad
    return [dict(zip(ROW_FIELDS, r)) for r in got]


def test_bifrost_span_maps_older_names_virtual_key_and_cost() -> None:
    [r] = rows(request([bifrost_span(1, cost=0.0071, vk="vk-7")]))
    assert r["event_id"] == f"{(0xB1F1).to_bytes(16, 'big').hex()}-{(0x5B).to_bytes(8, 'big').hex()}"
    assert (r["provider"], r["model"], r["input_tokens"], r["output_tokens"]) == ("openai", "gpt-4o", 1200, 300)
    assert r["virtual_key"] == "vk-7" and r["reported_cost_usd"] == 0.0071
    assert r["timestamp"] == 1764331200000 and r["latency_ms"] == 812.0
    assert r["tags"] == [("service.name", "bifrost")] and r["input_format"] == "otlp"
    assert r["status"] == "success" and r["request_type"] == "chat"
    assert PROMPT not in repr(r) and COMPLETION not in repr(r)


def test_current_semconv_names_cache_and_reasoning_response_model() -> None:
    attrs = [kv("gen_ai.provider.name", "anthropic"), kv("gen_ai.request.model", "claude-sonnet-4-5"),
             kv("gen_ai.response.model", "claude-sonnet-4-5-20250929"), kv("gen_ai.operation.name", "chat"),
             kv("gen_ai.usage.input_tokens", 5000), kv("gen_ai.usage.output_tokens", 700),
             kv("gen_ai.usage.cache_read.input_tokens", 4000), kv("gen_ai.usage.cache_creation.input_tokens", 600),
             kv("gen_ai.usage.reasoning.output_tokens", 200), kv("spendlake.team", "team-x")]  # fmt: skip
    [r] = rows(request([genai_span(1, attrs)], service="checkout"))
    assert r["model"] == "claude-sonnet-4-5-20250929"  # billed: the response model
    assert (r["input_tokens"], r["cached_input_tokens"], r["cache_write_tokens"]) == (5000, 4000, 600)
    assert (r["output_tokens"], r["reasoning_tokens"]) == (700, 200)
    assert r["team"] == "team-x" and r["tags"] == [("service.name", "checkout")]


def test_deprecated_spellings_and_cache_exclusive_input_is_normalised() -> None:
    attrs = [kv("gen_ai.system", "anthropic"), kv("gen_ai.request.model", "claude-haiku-4-5"),
             kv("gen_ai.usage.input_tokens", 100), kv("gen_ai.usage.output_tokens", 10),
             kv("gen_ai.usage.cache_read_input_tokens", 3000), kv("gen_ai.usage.cache_creation_input_tokens", 50)]  # fmt: skip
    [r] = rows(request([genai_span(2, attrs)]))
    # 3050 cache tokens cannot be inside 100 input tokens: the emitter used Anthropic's shape
    assert (r["provider"], r["input_tokens"], r["cached_input_tokens"], r["cache_write_tokens"]) == (
        "anthropic", 3150, 3000, 50)


def test_otel_provider_names_are_ours() -> None:
    attrs = [kv("gen_ai.provider.name", "aws.bedrock"), kv("gen_ai.request.model", "anthropic.claude-3-haiku"),
             kv("gen_ai.usage.input_tokens", 1)]  # fmt: skip
    assert rows(request([genai_span(3, attrs)]))[0]["provider"] == "bedrock"


def test_attribution_span_then_resource_and_configurable_names() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

    attrs = [kv("gen_ai.provider.name", "openai"), kv("gen_ai.request.model", "gpt-4o"),
             kv("gen_ai.usage.input_tokens", 10), kv("spendlake.virtual_key", "vk-span"), kv("tenant", "acme")]  # fmt: skip
    res = Resource(attributes=[kv("spendlake.virtual_key", "vk-resource"), kv("spendlake.team", "team-res"),
                               kv("app.customer", "cust-res")])  # fmt: skip
    req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(resource=res, scope_spans=[
        ScopeSpans(spans=[genai_span(4, attrs)])])])  # fmt: skip
    [ev] = otlp.from_proto(req).events
    assert (ev["virtual_key"], ev["team"], ev.get("customer")) == ("vk-span", "team-res", None)
    names = otlp.AttributeNames(customer=("tenant", "app.customer"))
    assert otlp.from_proto(req, names).events[0]["customer"] == "acme"  # span before resource


def test_non_llm_and_agent_spans_are_skipped_not_rejected() -> None:
    agent = [kv("gen_ai.operation.name", "invoke_agent"), kv("gen_ai.provider.name", "openai"),
             kv("gen_ai.request.model", "gpt-4o"), kv("gen_ai.usage.input_tokens", 9000)]  # fmt: skip
    spans = otlp.from_proto(request([plain_span(1), genai_span(5, agent), bifrost_span(2)]))
    assert (len(spans.events), spans.skipped, spans.rejected) == (1, 2, [])


def test_bad_spans_are_rejected_with_the_attribute_and_no_content() -> None:
    no_model = [kv("gen_ai.provider.name", "openai"), kv("gen_ai.usage.input_tokens", 5),
                kv("gen_ai.input.messages", PROMPT)]  # fmt: skip
    text_tokens = [kv("gen_ai.provider.name", "openai"), kv("gen_ai.request.model", "gpt-4o"),
                   kv("gen_ai.usage.input_tokens", "lots")]  # fmt: skip
    spans = otlp.from_proto(request([genai_span(6, no_model), genai_span(7, text_tokens), bifrost_span(3)]))
    assert len(spans.events) == 1
    (i1, e1), (i2, e2) = spans.rejected
    assert (i1, e1.field) == (0, "gen_ai.request.model") and "the model" in str(e1)
    assert (i2, e2.field, e2.value) == (1, "gen_ai.usage.input_tokens", "lots")
    assert PROMPT.encode() not in (e1.evidence or b"") and otlp.sniff(e1.evidence or b"") == "otlp_json"
    # the evidence is an OTLP request of that span alone: decoding it again gives the same error
    again = otlp.from_json(orjson.loads(e2.evidence or b""))
    assert [str(e) for _, e in again.rejected] == [str(e2)]


def test_json_and_protobuf_encodings_give_the_same_events() -> None:
    req = request([bifrost_span(i, cost=0.001 * i, error=i % 2 == 1) for i in range(5)] + [plain_span(9)])
    by_proto = otlp.decode_traces(req.SerializeToString(), "protobuf")
    by_json = otlp.decode_traces(otlp_json(req), "json")
    assert by_proto.events == by_json.events and by_proto.skipped == by_json.skipped == 1
    assert [e["status"] for e in by_json.events] == ["success", "error"] * 2 + ["success"]
    # protobuf's generic JSON mapping (base64 ids) is accepted too
    from google.protobuf.json_format import MessageToJson

    assert otlp.decode_traces(MessageToJson(req).encode(), "json").events == by_proto.events


def test_malformed_bodies_name_what_is_wrong() -> None:
    with pytest.raises(Exception, match="OTLP ExportTraceServiceRequest"):
        otlp.decode_traces(b"\x0a\xff\xff\xff", "protobuf")
    with pytest.raises(Exception, match="resourceSpans"):
        otlp.decode_traces(b'{"spans": []}', "json")
    wrong_types = b'{"resourceSpans": [{"resource": [1], "scopeSpans": [{"spans": [{"status": "x"}]}]}]}'
    with pytest.raises(Exception, match=r"\(body\).*AttributeError"):
        otlp.decode_traces(wrong_types, "json")


@pytest.mark.parametrize("count", ["\u00b2", "1" * 5000, "-3", "12.5"])
def test_token_strings_that_are_no_count_reject_the_span_only(count: str) -> None:
    odd = [kv("gen_ai.provider.name", "openai"), kv("gen_ai.request.model", "gpt-4o"),
           kv("gen_ai.usage.input_tokens", count)]  # fmt: skip
    spans = otlp.from_proto(request([genai_span(9, odd), bifrost_span(1)]))
    assert len(spans.events) == 1 and [e.field for _, e in spans.rejected] == ["gen_ai.usage.input_tokens"]


def test_one_kafka_record_many_events_and_a_bad_record_in_a_batch() -> None:
    req = request([bifrost_span(i) for i in range(3)] + [plain_span(1)])
    values = [orjson.dumps(event(1)), req.SerializeToString(), b"\x0a\x05junk!", otlp_json(request([bifrost_span(7)]))]
    table, at, bad = BatchDecoder().decode(values)
    assert at == [0, 1, 1, 1, 3]
    assert table.column("input_format").to_pylist() == ["spendlake.v1"] + ["otlp"] * 4
    [(i, exc)] = bad
    assert i == 2 and exc.evidence == b""  # undecodable protobuf may hold text: none of it is kept


@pytest.mark.kafka
def test_collector_kafka_exporter_records_land_exactly_once(kafka: Broker, topic_name: str, tmp_path) -> None:
    """Records as the OpenTelemetry Collector's Kafka exporter writes them (otlp_proto, its
    default, and otlp_json), mixed with canonical events: one record, many events; a resent
    record adds rows at new offsets but every total counts its event_ids once."""
    kafka.create_topic(topic_name, 1)
    proto = request([bifrost_span(i, vk=f"vk-{i % 2}") for i in range(40)] + [plain_span(2)]).SerializeToString()
    as_json = otlp_json(request([bifrost_span(i) for i in range(40, 50)]))
    bad = request([genai_span(8, [kv("gen_ai.provider.name", "openai"), kv("gen_ai.usage.input_tokens", 3),
                                  kv("gen_ai.input.messages", PROMPT)])]).SerializeToString()  # fmt: skip
    kafka.produce(topic_name, [proto, as_json, orjson.dumps(event(1)), bad, proto])
    lake = tmp_path / "lake"
    spendlake("ingest", "--bootstrap-servers", kafka.bootstrap, "--topic", topic_name, "--group", topic_name,
              "--lake", str(lake), "--exit-when-idle", "3", check=True)  # fmt: skip
    assert lake_rows(lake, "select count(*), count(distinct event_id) from ev") == [(91, 51)]
    assert lake_rows(lake, "select source_offset, count(*) from ev group by 1 order by 1") == [
        (0, 40), (1, 10), (2, 1), (4, 40)]
    [(offset, field, raw)] = dead_rows(lake, "select source_offset, field, raw from dl")
    assert (offset, field) == (3, "gen_ai.request.model") and PROMPT.encode() not in raw
    priced = lake_rows(lake, "select count(*) from ev where input_format = 'otlp' and cost_usd > 0")
    assert priced == [(90,)]
