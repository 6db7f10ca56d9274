"""Input adapters: each shape in, the exact canonical v1 event out; text never comes through."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from conftest import litellm_catalog_path, litellm_logging_example_path
from ingest.adapters import FIELDS, TEXT_KEYS, normalize, redact
from ingest.errors import BadRecord

SCHEMA = Path(__file__).resolve().parents[1] / "ingest" / "event.schema.json"
PROMPT = "Summarise the Q3 board minutes"
ANSWER = "The board approved the budget."


def litellm_example() -> dict:
    """The StandardLoggingPayload example the pinned litellm wheel ships."""
    return orjson.loads(litellm_logging_example_path().read_bytes())


CANONICAL = {
    "event_id": "req-1",
    "timestamp": "2025-03-01T12:00:00Z",
    "provider": "openai",
    "model": "gpt-4o",
    "input_tokens": 1200,
    "output_tokens": 300,
    "cached_input_tokens": 1000,
    "virtual_key": "vk-dev-alice",
    "tags": {"feature": "search"},
    "status": "success",
}


def test_canonical_event_passes_through_without_a_copy() -> None:
    fmt, event = normalize(CANONICAL)
    assert fmt == "spendlake.v1"
    assert event is CANONICAL


def test_canonical_event_loses_unknown_keys_and_text() -> None:
    record = {**CANONICAL, "messages": [{"role": "user", "content": PROMPT}], "extra": 1}
    fmt, event = normalize(record)
    assert fmt == "spendlake.v1"
    assert event == CANONICAL
    assert PROMPT not in repr(event)


def test_openai_chat_completion_usage() -> None:
    record = {
        "event_id": "req-2", "timestamp": 1740830400123, "provider": "openai",
        "model": "o3-mini", "virtual_key": "vk-1", "team": "team-eng", "latency_ms": 812.5,
        "choices": [{"message": {"role": "assistant", "content": ANSWER}}],
        "usage": {
            "prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
            "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 192},
        },
    }
    assert normalize(record) == ("openai", {
        "event_id": "req-2", "timestamp": 1740830400123, "provider": "openai",
        "model": "o3-mini", "virtual_key": "vk-1", "team": "team-eng", "latency_ms": 812.5,
        "input_tokens": 2006, "output_tokens": 300, "cached_input_tokens": 1920,
        "reasoning_tokens": 192,
    })


def test_openai_responses_api_usage_and_bare_response_fields() -> None:
    record = {
        "id": "resp_67ccd2bed1ec8190", "created": 1741476542, "provider": "openai",
        "model": "gpt-4.1", "output": [{"type": "message", "content": [{"text": ANSWER}]}],
        "usage": {
            "input_tokens": 328, "output_tokens": 52, "total_tokens": 380,
            "input_tokens_details": {"cached_tokens": 256},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }
    assert normalize(record) == ("openai", {
        "event_id": "resp_67ccd2bed1ec8190", "timestamp": 1741476542000, "provider": "openai",
        "model": "gpt-4.1", "input_tokens": 328, "output_tokens": 52,
        "cached_input_tokens": 256, "reasoning_tokens": 0,
    })


def test_anthropic_usage_counts_cache_inside_input() -> None:
    record = {
        "event_id": "msg_01", "timestamp": "2025-03-01T12:00:00+01:00",
        "provider": "anthropic", "model": "claude-sonnet-4-20250514", "customer": "acme",
        "content": [{"type": "text", "text": ANSWER}],
        "usage": {
            "input_tokens": 25, "output_tokens": 410,
            "cache_read_input_tokens": 3000, "cache_creation_input_tokens": 1200,
            "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 1000},
        },
    }
    assert normalize(record) == ("anthropic", {
        "event_id": "msg_01", "timestamp": "2025-03-01T12:00:00+01:00",
        "provider": "anthropic", "model": "claude-sonnet-4-20250514", "customer": "acme",
        "input_tokens": 25 + 3000 + 1200, "output_tokens": 410, "cached_input_tokens": 3000,
        "cache_write_tokens": 1200, "cache_write_1h_tokens": 1000,
    })


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        # provider says anthropic, no cache fields: nothing to add
        ({"input_tokens": 10, "output_tokens": 5}, (10, 0, 0, 0)),
        # only the TTL breakdown: the write total is its sum
        ({"input_tokens": 10, "output_tokens": 5, "cache_creation":
          {"ephemeral_5m_input_tokens": 7, "ephemeral_1h_input_tokens": 3}}, (20, 0, 10, 3)),
        # nulls, as the API sends them, count as 0
        ({"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": None,
          "cache_creation_input_tokens": 4}, (14, 0, 4, 0)),
    ],
)
def test_anthropic_arithmetic(usage: dict, expected: tuple[int, int, int, int]) -> None:
    record = {"event_id": "e", "timestamp": 0, "provider": "anthropic", "model": "m",
              "usage": usage}
    fmt, event = normalize(record)
    assert fmt == "anthropic"
    assert (event["input_tokens"], event["cached_input_tokens"], event["cache_write_tokens"],
            event["cache_write_1h_tokens"]) == expected


def test_cache_keys_identify_anthropic_usage_from_any_provider() -> None:
    record = {"event_id": "e", "timestamp": 0, "provider": "bedrock", "model": "claude",
              "usage": {"input_tokens": 5, "output_tokens": 1, "cache_read_input_tokens": 95}}
    fmt, event = normalize(record)
    assert (fmt, event["input_tokens"], event["cached_input_tokens"]) == ("anthropic", 100, 95)


def test_litellm_usage_with_cache_keys_stays_openai_convention() -> None:
    # LiteLLM's Usage has Anthropic's cache names but prompt_tokens already include the cache.
    record = {"event_id": "e", "timestamp": 0, "provider": "anthropic", "model": "claude",
              "usage": {"prompt_tokens": 100, "completion_tokens": 1,
                        "cache_read_input_tokens": 95, "cache_creation_input_tokens": 3}}
    fmt, event = normalize(record)
    assert fmt == "openai"
    assert (event["input_tokens"], event["cached_input_tokens"],
            event["cache_write_tokens"]) == (100, 95, 3)


def test_anthropic_count_that_is_not_an_integer_names_the_field() -> None:
    record = {"event_id": "e", "timestamp": 0, "provider": "anthropic", "model": "m",
              "usage": {"input_tokens": "12", "output_tokens": 1, "cache_read_input_tokens": 3}}
    with pytest.raises(BadRecord, match=r"usage\.input_tokens: got '12'"):
        normalize(record)


def test_litellm_standard_logging_payload() -> None:
    record = {
        "id": "chatcmpl-9", "call_type": "aembedding", "status": "failure",
        "custom_llm_provider": "azure", "model": "text-embedding-3-small",
        "startTime": 1740830399.5, "endTime": 1740830400.25, "response_time": 0.75,
        "prompt_tokens": 64, "completion_tokens": 0, "response_cost": 0.0000013,
        "cache_hit": False, "request_tags": ["prod", "rag"], "end_user": "",
        "messages": [{"role": "user", "content": PROMPT}],
        "response": {"data": [], "usage": {"prompt_tokens": 64,
                                           "prompt_tokens_details": {"cached_tokens": 0}}},
        "metadata": {"user_api_key_hash": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
                     "user_api_key_alias": "alice", "user_api_key_team_id": "team-eng",
                     "user_api_key_user_id": "alice@example.com",
                     "user_api_key_end_user_id": "customer-acme"},
        "error_information": {"error_code": "429", "error_class": "RateLimitError"},
    }
    assert normalize(record) == ("litellm", {
        "event_id": "chatcmpl-9", "timestamp": 1740830400250, "provider": "azure",
        "model": "text-embedding-3-small", "input_tokens": 64, "output_tokens": 0,
        "virtual_key": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
        "team": "team-eng", "customer": "customer-acme", "user": "alice@example.com",
        "cost_usd": 0.0000013, "latency_ms": 750.0, "status_code": 429,
        "cached_input_tokens": 0, "request_type": "embedding", "status": "error",
        "cache_hit": False, "tags": {"prod": "true", "rag": "true"},
    })


def test_litellm_spend_log_row() -> None:
    record = {
        "request_id": "chatcmpl-7", "call_type": "acompletion", "api_key": "hashed-vk",
        "cache_hit": "True", "endTime": "2025-01-24 09:20:46.851954",
        "model": "claude-3-5-sonnet", "custom_llm_provider": "anthropic", "user": "u-1",
        "team_id": "team-eng", "end_user": "acme", "spend": 0.0, "prompt_tokens": 10,
        "completion_tokens": 20, "request_tags": '["batch-job"]', "status": "success",
        "messages": json.dumps([{"role": "user", "content": PROMPT}]), "response": "{}",
        "metadata": json.dumps({"user_api_key_project_id": "proj-7", "usage_object": {
            "prompt_tokens": 10, "cache_read_input_tokens": 4, "cache_creation_input_tokens": 2}}),
    }
    assert normalize(record) == ("litellm_spend_log", {
        "event_id": "chatcmpl-7", "timestamp": "2025-01-24T09:20:46.851954+00:00",
        "provider": "anthropic", "model": "claude-3-5-sonnet", "input_tokens": 10,
        "output_tokens": 20, "virtual_key": "hashed-vk", "team": "team-eng", "customer": "acme",
        "user": "u-1", "project": "proj-7", "cost_usd": 0.0, "cached_input_tokens": 4,
        "cache_write_tokens": 2, "request_type": "chat", "status": "success",
        "cache_hit": True, "tags": {"batch-job": "true"},
    })


def test_bifrost_log_row() -> None:
    record = {
        "id": "0b7c9d2e-5b1a-4f8e-9c51-3f0d2a1e7b44", "provider": "openai",
        "model": "gpt-4o-mini", "object": "chat.completion",
        "timestamp": "2025-03-01T12:00:00.123456789Z", "status": "success",
        "prompt_tokens": 900, "completion_tokens": 120, "total_tokens": 1020,
        "cached_read_tokens": 512, "virtual_key_id": "vk-dev-alice", "team_id": "team-eng",
        "customer_id": "customer-acme", "cost": 0.000207, "latency": 431.0, "stream": False,
        "input_history": [{"role": "user", "content": PROMPT}],
        "output_message": {"role": "assistant", "content": ANSWER},
    }
    assert normalize(record) == ("bifrost", {
        "event_id": "0b7c9d2e-5b1a-4f8e-9c51-3f0d2a1e7b44",
        "timestamp": "2025-03-01T12:00:00.123456789Z", "provider": "openai",
        "model": "gpt-4o-mini", "input_tokens": 900, "output_tokens": 120,
        "cached_input_tokens": 512, "virtual_key": "vk-dev-alice", "team": "team-eng",
        "customer": "customer-acme", "status": "success", "latency_ms": 431.0,
        "cost_usd": 0.000207, "request_type": "chat",
    })


def test_bifrost_log_from_the_logs_api() -> None:
    record = {
        "id": "b-2", "provider": "anthropic", "model": "claude-sonnet-4", "object": "embedding",
        "created_at": "2025-03-01T12:00:01Z", "status": "error", "latency": 12,
        "token_usage": {"prompt_tokens": 50, "completion_tokens": 7, "total_tokens": 57,
                        "prompt_tokens_details": {"cached_read_tokens": 30,
                                                  "cached_write_tokens": 10},
                        "completion_tokens_details": {"reasoning_tokens": 3}},
        "cache_debug": {"cache_hit": True},
    }
    assert normalize(record) == ("bifrost", {
        "event_id": "b-2", "timestamp": "2025-03-01T12:00:01Z", "provider": "anthropic",
        "model": "claude-sonnet-4", "input_tokens": 50, "output_tokens": 7,
        "cached_input_tokens": 30, "cache_write_tokens": 10, "reasoning_tokens": 3,
        "status": "error", "latency_ms": 12, "cache_hit": True, "request_type": "embedding",
    })


def test_unknown_shape_names_what_was_seen() -> None:
    with pytest.raises(BadRecord) as caught:
        normalize({"foo": 1, "bar": {"baz": 2}})
    assert caught.value.field == "(record)"
    assert str(caught.value).startswith("(record): got ['bar', 'foo'], expected a spendlake v1")
    with pytest.raises(BadRecord, match=r"\(record\): got 'list'"):
        normalize([1, 2])  # type: ignore[arg-type]


def test_redact_removes_text_at_any_depth_and_keeps_the_rest() -> None:
    record = {
        "id": "x", "prompt_tokens": 3, "messages": [{"role": "user", "content": PROMPT}],
        "metadata": {"requester_metadata": {"input": PROMPT, "keep": 1}},
        "response": {"usage": {"completion_tokens": 2},
                     "choices": [{"message": {"content": ANSWER}}]},
        "batches": [{"prompt": PROMPT, "n": 1}], "proxy_server_request": json.dumps(PROMPT),
        "spend_metadata": json.dumps({"proxy_server_request": {"body": {"messages": PROMPT}},
                                      "user_api_key_team_id": "team-eng"}),
    }
    clean = redact(record)
    assert clean == {
        "id": "x", "prompt_tokens": 3, "metadata": {"requester_metadata": {"keep": 1}},
        "response": {"usage": {"completion_tokens": 2}}, "batches": [{"n": 1}],
        "spend_metadata": '{"user_api_key_team_id":"team-eng"}',
    }
    assert PROMPT not in repr(clean) and ANSWER not in repr(clean)
    assert record["messages"]  # the input is not modified
    assert not TEXT_KEYS & FIELDS  # no canonical field is ever redacted


def test_real_litellm_standard_logging_payload() -> None:
    fmt, event = normalize(litellm_example())
    assert fmt == "litellm"
    assert event == {
        "event_id": "chatcmpl-2299b6a2-82a3-465a-b47c-04e685a2227f",
        "timestamp": 1766000070079, "provider": "openai",  # endTime 1766000070.07935 (epoch seconds)
        "model": "gpt-4o", "input_tokens": 10, "output_tokens": 20,
        "cost_usd": 0.00022500000000000002, "latency_ms": 1.79468512535095 * 1000,
        "request_type": "chat", "status": "success",
    }
    assert "Hello, world!" not in repr(event)


# The SpendLogs row LiteLLM's proxy writes for the StandardLoggingPayload example its wheel ships,
# built by the pinned litellm's own builder (get_logging_payload, which the proxy's DB writer and
# its GCS Pub/Sub exporter both call) and serialised as that exporter does (json.dumps, default=str).
# The builder's module needs fastapi, backoff and redis (test extras). When called it reads the
# proxy's config.yaml general_settings from litellm.proxy.proxy_server, whose import needs the whole
# proxy (some 15 more packages; litellm[proxy]==1.110.2 itself cannot install: its litellm-proxy
# pin is not on PyPI), so that one module is stood in for by the two names the builder reads, for
# the config general_settings: {store_prompts_in_spend_logs: true}: the row then carries the prompt
# the adapter must not keep. A subprocess, so the stand-in never meets the litellm other tests import.
SPEND_LOG_ROW = """
import json, sys, types
from datetime import datetime, timezone

proxy_server = types.ModuleType("litellm.proxy.proxy_server")
proxy_server.general_settings = {"store_prompts_in_spend_logs": True}
proxy_server.general_settings_view = lambda: proxy_server.general_settings
sys.modules["litellm.proxy.proxy_server"] = proxy_server

from litellm.proxy.spend_tracking.spend_tracking_utils import get_logging_payload

slp = json.loads(open(sys.argv[1], "rb").read())
at = lambda seconds: datetime.fromtimestamp(seconds, timezone.utc)
kwargs = {  # the proxy's model_call_details for that call, as its callbacks get them
    "model": slp["model"], "custom_llm_provider": slp["custom_llm_provider"], "call_type": slp["call_type"],
    "messages": slp["messages"], "response_cost": slp["response_cost"], "cache_hit": slp["cache_hit"],
    "completion_start_time": at(slp["completionStartTime"]), "standard_logging_object": slp,
    "litellm_params": {
        "metadata": dict(slp["metadata"]),
        "proxy_server_request": {"body": {"model": slp["model"], "messages": slp["messages"]}},
    },
}
row = get_logging_payload(kwargs=kwargs, response_obj=slp["response"],
                          start_time=at(slp["startTime"]), end_time=at(slp["endTime"]))
sys.stdout.write(json.dumps(row, default=str))
"""
# What ingest.adapters reads of a SpendLogs row: the builder must still write every one of them.
SPEND_LOG_KEYS = {
    "request_id", "call_type", "endTime", "custom_llm_provider", "model", "prompt_tokens",
    "completion_tokens", "api_key", "team_id", "end_user", "user", "spend", "metadata", "status",
    "cache_hit", "request_tags",
}  # fmt: skip


@pytest.fixture(scope="module")
def litellm_spend_log_row(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The SpendLogs row the pinned litellm builds (SPEND_LOG_ROW); a failure, never a skip."""
    example = litellm_logging_example_path()  # fails unless the pinned litellm is installed
    r = subprocess.run([sys.executable, "-c", SPEND_LOG_ROW, str(example)], capture_output=True, timeout=300,
                       cwd=tmp_path_factory.mktemp("spend_log"),
                       env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})  # fmt: skip
    assert r.returncode == 0, ("litellm's SpendLogs builder failed (its fastapi, backoff and redis are "
                               "test extras: pip install -e '.[test]'):\n" + r.stderr.decode()[-3000:])
    return orjson.loads(r.stdout)


def test_real_litellm_spend_logs_row(litellm_spend_log_row: dict) -> None:
    row = litellm_spend_log_row
    assert SPEND_LOG_KEYS <= row.keys()
    fmt, event = normalize(row)
    assert fmt == "litellm_spend_log"
    assert event == {
        "event_id": row["request_id"], "timestamp": row["endTime"].replace(" ", "T"),
        "provider": row["custom_llm_provider"], "model": row["model"],
        "input_tokens": row["prompt_tokens"], "output_tokens": row["completion_tokens"],
        "cost_usd": row["spend"], "request_type": "chat", "status": row["status"],
    }
    # The values of the shipped example, the same call test_real_litellm_standard_logging_payload reads.
    assert event == {
        "event_id": "chatcmpl-2299b6a2-82a3-465a-b47c-04e685a2227f",
        "timestamp": "2025-12-17T19:34:30.079350+00:00", "provider": "openai",  # endTime 1766000070.07935
        "model": "gpt-4o", "input_tokens": 10, "output_tokens": 20,
        "cost_usd": 0.00022500000000000002, "request_type": "chat", "status": "success",
    }
    assert "Hello, world!" in row["proxy_server_request"]  # the stored prompt
    assert "Hello, world!" not in repr(event)
    assert "Hello, world!" not in repr(redact(row))


def test_real_litellm_payload_redacts_the_prompt() -> None:
    record = litellm_example()
    assert "Hello, world!" in repr(record)
    assert "Hello, world!" not in repr(redact(record))


# The real litellm answers a mock_response without any network and logs the payload its callbacks
# get; LITELLM_LOCAL_MODEL_COST_MAP makes it price with the catalog its wheel ships (no download).
EMIT_PAYLOAD = f"""
import json, sys, time
import litellm
from litellm.integrations.custom_logger import CustomLogger

got = []

class Capture(CustomLogger):
    def log_success_event(self, kwargs, response_obj, start_time, end_time):
        got.append(kwargs["standard_logging_object"])

litellm.callbacks = [Capture()]
litellm.completion(model="gpt-4o", messages=[{{"role": "user", "content": {PROMPT!r}}}], mock_response={ANSWER!r})
deadline = time.monotonic() + 60
while not got and time.monotonic() < deadline:
    time.sleep(0.05)
sys.stdout.write(json.dumps(got[0], default=str))
"""


def test_payload_the_real_litellm_emits(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-c", EMIT_PAYLOAD], capture_output=True, timeout=300, cwd=tmp_path,
                       env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    record = orjson.loads(r.stdout)
    assert PROMPT in repr(record) and ANSWER in repr(record)
    usage = record["response"]["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    gpt4o = orjson.loads(litellm_catalog_path().read_bytes())["gpt-4o"]
    fmt, event = normalize(record)
    assert fmt == "litellm"
    assert event == {
        "event_id": record["id"], "timestamp": round(record["endTime"] * 1000), "provider": "openai",
        "model": "gpt-4o", "input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"],
        "cost_usd": pytest.approx(usage["prompt_tokens"] * gpt4o["input_cost_per_token"]
                                  + usage["completion_tokens"] * gpt4o["output_cost_per_token"], rel=1e-12),
        "latency_ms": pytest.approx(record["response_time"] * 1000), "request_type": "chat", "status": "success",
    }  # fmt: skip
    clean = repr(redact(record))
    assert PROMPT not in clean and ANSWER not in clean


def test_every_adapter_output_matches_the_published_schema() -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    records: list[dict] = [
        CANONICAL,
        {"event_id": "a", "timestamp": 1, "provider": "anthropic", "model": "m",
         "usage": {"input_tokens": 1, "output_tokens": 1, "cache_read_input_tokens": 1}},
        {"id": "b", "provider": "openai", "model": "m", "timestamp": "2025-03-01T12:00:00Z",
         "prompt_tokens": 1, "completion_tokens": 1, "latency": 3.5, "status": "success"},
        {"id": "c", "call_type": "completion", "custom_llm_provider": "openai", "model": "m",
         "endTime": "2025-01-24 09:20:46", "request_tags": ["t"], "status": "success"},
    ]
    for record in records:
        assert list(validator.iter_errors(normalize(record)[1])) == []
