"""The shipped LiteLLM callback, driven by real LiteLLM calls (``mock_response``: no network).

Its peer is a real local HTTP server that answers like spendlake's intake (POST /v1/events:
200 with accepted/rejected, 503 with Retry-After, 401, 413), and a real Kafka broker for the
Kafka transport. What must hold: no prompt or response text in any byte sent, one record per
call, a retry delivers exactly once, a full queue drops and counts without blocking, and the
LLM call returns normally whatever the intake does.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of the price map at import

import litellm  # noqa: E402

import ingest.litellm_callback as cb  # noqa: E402
from conftest import ROOT, lake_rows, wait_for  # noqa: E402
from ingest.adapters import normalize  # noqa: E402
from ingest.litellm_callback import SpendlakeLogger  # noqa: E402

PROMPT = "Tell me the launch codes, SECRET-PROMPT-7f3a"
ANSWER = "They are 0000, SECRET-ANSWER-91bc"
# LiteLLM's pydantic models warn about ReadOnly TypedDict items when first built: not ours.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydantic.*")

VK = "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"


class Intake:
    """A stand-in for spendlake's POST /v1/events: records every request, answers from `script`
    (a list of (status, headers, JSON body or None) used first), then 200 with every record
    accepted. `hang` holds each answer until released; `max_records` answers 413 above it."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str], Any]] = []
        self.requests: list[tuple[float, dict[str, str], bytes]] = []
        self.accepted: list[dict[str, Any]] = []
        self.hang = False
        self.release = threading.Event()
        self.max_records: int | None = None
        self.lock = threading.Lock()
        intake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with intake.lock:
                    intake.requests.append((time.monotonic(), dict(self.headers), body))
                    status, headers, answer = intake.script.pop(0) if intake.script else (200, {}, None)
                if intake.hang:
                    intake.release.wait(60)
                records = json.loads(body)
                if status == 200 and intake.max_records is not None and len(records) > intake.max_records:
                    status = 413
                if status == 200 and answer is None:
                    with intake.lock:
                        intake.accepted += records
                    answer = {"accepted": len(records), "rejected": []}
                out = json.dumps(answer if answer is not None else {"error": "scripted"}).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/events"

    def all_bytes(self) -> bytes:
        """Everything the intake received, headers and bodies."""
        return b"".join(json.dumps(headers).encode() + body for _, headers, body in self.requests)


@pytest.fixture
def intake() -> Iterator[Intake]:
    it = Intake()
    thread = threading.Thread(target=it.server.serve_forever, daemon=True)
    thread.start()
    yield it
    it.release.set()
    it.server.shutdown()
    it.server.server_close()


@pytest.fixture
def install() -> Iterator[Any]:
    """Install a logger as the SDK user would (litellm.callbacks); uninstall and close after."""
    loggers: list[SpendlakeLogger] = []

    def _install(logger: SpendlakeLogger) -> SpendlakeLogger:
        litellm.logging_callback_manager._reset_all_callbacks()
        litellm.callbacks = [logger]
        loggers.append(logger)
        return logger

    yield _install
    litellm.logging_callback_manager._reset_all_callbacks()
    for logger in loggers:
        logger.close(timeout=1)


def complete(content: str = PROMPT, answer: Any = ANSWER, vk: str | None = VK) -> Any:
    metadata = {"user_api_key_hash": vk, "user_api_key_team_id": "team-engineering"} if vk else {}
    return litellm.completion(model="gpt-4o", messages=[{"role": "user", "content": content}],
                              mock_response=answer, metadata=metadata)  # fmt: skip


def hook(logger: SpendlakeLogger, i: int) -> None:
    """What LiteLLM does per call, without LiteLLM: for timing and batching tests."""
    payload = {"id": f"call-{i}", "call_type": "completion", "model": "gpt-4o", "custom_llm_provider": "openai",
               "endTime": 1764324902.12, "prompt_tokens": 10, "completion_tokens": 5,
               "messages": [{"role": "user", "content": PROMPT}]}  # fmt: skip
    logger.log_success_event(kwargs={"standard_logging_object": payload}, response_obj=None, start_time=0, end_time=0)


def test_importing_ingest_never_imports_litellm() -> None:
    code = "import sys, ingest, ingest.adapters, ingest.pipeline; print('litellm' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_records_arrive_once_per_call_without_text(intake: Intake, install: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("SPENDLAKE_INTAKE_TOKEN", "tok-from-env")
    logger = install(SpendlakeLogger(intake.url, flush_interval=0.05))
    responses = [complete(f"{PROMPT} #{i}") for i in range(3)]
    assert [r.choices[0].message.content for r in responses] == [ANSWER] * 3
    with pytest.raises(litellm.exceptions.InternalServerError):
        complete("a failing call SECRET-PROMPT-fail", answer=Exception("provider exploded"))

    async def two_async_calls() -> list[Any]:
        out = [await litellm.acompletion(model="gpt-4o", messages=[{"role": "user", "content": f"{PROMPT} async"}],
                                         mock_response=ANSWER, metadata={"user_api_key_hash": VK})
               for _ in range(2)]  # fmt: skip
        # LiteLLM runs async success hooks as tasks on this loop: keep it alive as a server would
        for _ in range(300):
            if len(intake.accepted) >= 6:
                break
            await asyncio.sleep(0.1)
        return out

    responses += asyncio.run(two_async_calls())
    wait_for(lambda: len(intake.accepted) >= 6, 30, "6 records at the intake")
    time.sleep(0.5)  # a duplicate (sync and async hook both firing) would arrive by now
    assert len(intake.accepted) == 6 and logger.sent == 6 and logger.failed == logger.dropped == 0

    raw = intake.all_bytes()
    for secret in (b"SECRET-PROMPT", b"SECRET-ANSWER", b"launch codes", b"They are 0000"):
        assert secret not in raw
    assert all(h["Authorization"] == "Bearer tok-from-env" for _, h, _ in intake.requests)

    events = [normalize(r) for r in intake.accepted]
    assert {fmt for fmt, _ in events} == {"litellm"}
    by_id = {e["event_id"]: e for _, e in events}
    assert len(by_id) == 6 and {r.id for r in responses} <= set(by_id)
    ok = [by_id[r.id] for r in responses]
    assert all(e["status"] == "success" and e["model"] == "gpt-4o" and e["virtual_key"] == VK for e in ok)
    assert all(e["input_tokens"] > 0 and e["output_tokens"] > 0 for e in ok)
    failed = [e for e in by_id.values() if e["status"] == "error"]
    assert len(failed) == 1 and failed[0]["status_code"] == 500
    assert all("model_map_information" not in r for r in intake.accepted)


def test_retry_after_503_delivers_exactly_once(intake: Intake, install: Any) -> None:
    intake.script = [(503, {"Retry-After": "1"}, {"error": "broker down"})]
    logger = install(SpendlakeLogger(intake.url, flush_interval=0.05, max_backoff=0.05))
    assert complete().choices[0].message.content == ANSWER
    wait_for(lambda: logger.sent == 1, 30, "the retried batch to be accepted")
    time.sleep(0.3)
    assert len(intake.requests) == 2 and len(intake.accepted) == 1
    assert intake.requests[0][2] == intake.requests[1][2]  # the same batch, kept
    assert intake.requests[1][0] - intake.requests[0][0] >= 0.95  # Retry-After honoured
    assert logger.failed == 0 and logger.flush(1)


def test_bad_token_logged_once_dropped_and_never_shown(intake: Intake, caplog: pytest.LogCaptureFixture) -> None:
    token = "tok-SECRET-5e1d"
    intake.script = [(401, {}, {"error": "bad token"})] * 2
    logger = SpendlakeLogger(intake.url, token=token, flush_interval=0.05)
    with caplog.at_level(logging.DEBUG, logger="ingest.litellm_callback"):
        hook(logger, 1)
        assert logger.flush(10)
        hook(logger, 2)
        assert logger.flush(10)
        logger.close()
    assert logger.failed == 2 and logger.sent == 0 and len(intake.requests) == 2
    assert intake.requests[0][1]["Authorization"] == f"Bearer {token}"
    assert sum("refused the token" in r.getMessage() for r in caplog.records) == 1
    assert token not in caplog.text and token not in repr(logger)


def test_rejects_400_and_413_are_counted(intake: Intake, caplog: pytest.LogCaptureFixture) -> None:
    reject = {"index": 1, "field": "timestamp", "value": "yesterday", "error": "not RFC 3339"}
    intake.script = [(200, {}, {"accepted": 1, "rejected": [reject], "rejected_count": 1}),
                     (400, {}, {"error": "(body): got b'[' expected JSON"}),  # a bad request: failed
                     (400, {}, {"accepted": 0, "rejected": [{**reject, "index": 0}], "rejected_count": 1})]  # fmt: skip
    logger = SpendlakeLogger(intake.url, flush_interval=0.3)
    with caplog.at_level(logging.WARNING, logger="ingest.litellm_callback"):
        hook(logger, 1)
        hook(logger, 2)
        assert logger.flush(10)
        for i in (3, 4):
            hook(logger, i)
            assert logger.flush(10)
    assert (logger.sent, logger.rejected, logger.failed) == (1, 2, 1)
    assert "timestamp" in caplog.text and "HTTP 400" in caplog.text

    intake.max_records = 2  # a batch of 5 is too large: halves until each fits, all delivered
    for i in range(5):
        hook(logger, 10 + i)
    assert logger.flush(10)
    assert logger.sent == 6 and logger.failed == 1
    assert sorted(r["id"] for r in intake.accepted) == [f"call-{10 + i}" for i in range(5)]
    logger.close()


def test_full_queue_drops_counts_and_never_blocks(intake: Intake, install: Any,
                                                  caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    intake.hang = True  # the intake takes the first request and never answers (until teardown)
    logger = install(SpendlakeLogger(intake.url, max_queue=2, batch_size=1, flush_interval=0.05, timeout=60))
    with caplog.at_level(logging.WARNING, logger="ingest.litellm_callback"):
        start = time.monotonic()
        for _ in range(10):
            assert complete().choices[0].message.content == ANSWER
        wait_for(lambda: logger.dropped >= 7, 30, "the full queue to drop records")
        took = time.monotonic()
        for i in range(2000):
            hook(logger, i)
        took = time.monotonic() - took
    assert time.monotonic() - start < 20
    assert took < 2.0, f"2000 callbacks against a hung intake took {took:.2f} s"
    # the sender holds one record (batch_size=1), the queue two: every other one is dropped
    assert logger.dropped in (2007, 2008)
    wait_for(lambda: len(intake.requests) == 1, 10, "the sender's one request to the hung intake")
    assert len(intake.requests) == 1 and logger.sent == 0
    assert sum("queue full" in r.getMessage() for r in caplog.records) == 1
    assert not logger.flush(0.2)


def test_llm_call_returns_when_the_intake_is_unreachable(install: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    logger = install(SpendlakeLogger(f"http://127.0.0.1:{port}/v1/events", flush_interval=0.05,
                                     max_retries=2, max_backoff=0.05, timeout=2))  # fmt: skip
    assert complete().choices[0].message.content == ANSWER
    with pytest.raises(litellm.exceptions.InternalServerError):
        complete(answer=Exception("provider exploded"))
    wait_for(lambda: logger.failed == 2, 30, "both records given up")
    assert logger.sent == 0 and logger.flush(1)


def test_an_exception_in_the_callback_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    class Exploding(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            raise RuntimeError("payload exploded")

    logger = SpendlakeLogger("http://127.0.0.1:9/v1/events")
    with caplog.at_level(logging.ERROR, logger="ingest.litellm_callback"):
        logger.log_failure_event(kwargs={"standard_logging_object": Exploding(a=1)}, response_obj=None,
                                 start_time=0, end_time=0)  # fmt: skip
        asyncio.run(logger.async_log_success_event(kwargs=None, response_obj=None, start_time=0, end_time=0))
    assert "could not queue" in caplog.text and logger.flush(0)
    logger.close()


def test_proxy_instance_is_built_lazily_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from litellm.proxy.common_utils.callback_utils import _LOADED_CALLBACK, _loaded_callback_or_raise
    from litellm.proxy.types_utils.utils import get_instance_fn

    monkeypatch.setenv("SPENDLAKE_INTAKE_URL", "http://intake.internal:4318/v1/events")
    monkeypatch.setenv("SPENDLAKE_INTAKE_TOKEN", "tok-proxy")
    monkeypatch.delenv("SPENDLAKE_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delitem(vars(cb), "proxy_handler_instance", raising=False)
    assert "proxy_handler_instance" not in vars(cb)
    entry = "ingest.litellm_callback.proxy_handler_instance"  # what config.yaml names
    handler = _loaded_callback_or_raise(entry, _LOADED_CALLBACK.validate_python(get_instance_fn(entry)))
    assert isinstance(handler, SpendlakeLogger) and handler is cb.proxy_handler_instance
    assert handler.url == "http://intake.internal:4318/v1/events" and handler._token == "tok-proxy"
    assert handler._thread is None  # nothing starts before the first record
    monkeypatch.delitem(vars(cb), "proxy_handler_instance")

    kafka = cb.from_env({"SPENDLAKE_KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092", "SPENDLAKE_KAFKA_TOPIC": "usage"})
    assert kafka.bootstrap_servers == ["k1:9092", "k2:9092"] and kafka.topic == "usage"
    assert cb.from_env({}).url == cb.DEFAULT_URL


@pytest.mark.kafka
def test_kafka_transport_keys_by_virtual_key(kafka: Any, topic_name: str, install: Any) -> None:
    from kafka import KafkaConsumer

    topic = kafka.create_topic(topic_name)
    logger = install(SpendlakeLogger(bootstrap_servers=kafka.bootstrap, topic=topic, flush_interval=0.05))
    ids = [complete().id, complete().id, complete(vk=None).id]
    wait_for(lambda: logger.sent == 3, 60, "3 records acknowledged by Kafka")
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=10000)  # fmt: skip
    try:
        messages = list(itertools.islice(consumer, 3))
    finally:
        consumer.close()
    assert len(messages) == 3
    for m in messages:
        assert b"SECRET-PROMPT" not in m.value and b"SECRET-ANSWER" not in m.value
    events = {e["event_id"]: (m.key, e) for m in messages for _, e in [normalize(json.loads(m.value))]}
    assert set(events) == set(ids)
    assert [events[i][0] for i in ids] == [VK.encode(), VK.encode(), None]
    assert all(e.get("virtual_key") == (k.decode() if k else None) for k, e in events.values())


def test_through_a_real_spendlake_serve(tmp_path: Path, install: Any) -> None:
    from intake_env import TOKEN, lake_text, start_serve

    lake = tmp_path / "lake"
    serve = start_serve(tmp_path, lake)
    logger = install(SpendlakeLogger(f"{serve.url}/v1/events", token=TOKEN, flush_interval=0.05))
    ids = [complete(f"{PROMPT} #{i}").id for i in range(3)]
    with pytest.raises(litellm.exceptions.InternalServerError):
        complete("a failing call SECRET-PROMPT-fail", answer=Exception("provider exploded"))
    wait_for(lambda: logger.sent == 4, 60, "serve to accept the 4 records")
    assert logger.rejected == logger.failed == logger.dropped == 0
    wait_for(lambda: lake_rows(lake, "select count(*) from ev") == [(4,)], 60, "the 4 records in the lake")
    rows = lake_rows(lake, "select event_id, virtual_key, team, status, provider, model, cost_usd from ev")
    ok = {r[0]: r for r in rows if r[3] == "success"}
    assert set(ok) == set(ids) and len(rows) == 4
    assert all(r[1:3] == (VK, "team-engineering") and r[4:6] == ("openai", "gpt-4o") and r[6] > 0
               for r in ok.values())  # fmt: skip
    stored = lake_text(lake) + serve.log.read_bytes()
    for secret in (b"SECRET-PROMPT", b"SECRET-ANSWER", TOKEN.encode()):
        assert secret not in stored


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "gemini/gemini-2.5-flash"])
def test_lake_costs_equal_litellms_response_cost(tmp_path: Path, install: Any, model: str) -> None:
    """Real litellm calls (mock_response, no network) through the shipped callback and a real
    serve: the cost spendlake stores per call is LiteLLM's own `response_cost`, to the cent and
    then some (both price the same tokens from the same published per-token prices)."""
    from intake_env import TOKEN, start_serve

    lake = tmp_path / "lake"
    serve = start_serve(tmp_path, lake)
    logger = install(SpendlakeLogger(f"{serve.url}/v1/events", token=TOKEN, flush_interval=0.05))
    answers = ["short", "a somewhat longer answer " * 20, "x " * 900]
    expected = {}
    for i, answer in enumerate(answers):
        r = litellm.completion(model=model, messages=[{"role": "user", "content": f"question {i} " * (50 + 400 * i)}],
                               mock_response=answer, metadata={"user_api_key_hash": VK})  # fmt: skip
        expected[r.id] = r._hidden_params["response_cost"]
    assert all(c and c > 0 for c in expected.values()), expected
    wait_for(lambda: logger.sent == len(answers), 60, "serve to accept the records")
    wait_for(lambda: lake_rows(lake, "select count(*) from ev") == [(len(answers),)], 60, "the records in the lake")
    got = dict(lake_rows(lake, "select event_id, cost_usd from ev"))
    assert got.keys() == expected.keys()
    for event_id, cost in expected.items():
        assert got[event_id] == pytest.approx(cost, rel=1e-9, abs=1e-12), (model, event_id)
