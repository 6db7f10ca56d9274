"""The HTTP intake of a real `spendlake serve` (contract 7), with plain HTTP clients.

What it shows: partial rejects name index, field and value and the good records land; gzip,
NDJSON, arrays and single events; 401 / 413 / 415 / 411 / 400 / 404 / 405 and a stalled client
are answered without a traceback; OTLP/HTTP traces from Bifrost's span shape land with
`partial_success` for bad spans; nothing of the prompt or the token is stored or logged; a 200
is durable in both modes — SIGKILL mid-stream and a broker outage (503 + Retry-After) lose
nothing, and every acknowledged event is in the lake and counted once.
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from conftest import Broker, dead_rows, event, lake_rows, spendlake, wait_for
from intake_env import (
    COMPLETION, PROMPT, TOKEN, Serve, auth, bifrost_span, lake_text, otlp_json, plain_span, request, start_serve,
)  # fmt: skip

EVENTS_URL = "/v1/events"


def post(serve: Serve, body: bytes, headers: dict[str, str] | None = None, path: str = EVENTS_URL) -> requests.Response:
    return requests.post(serve.url + path, data=body, headers={**auth(), **(headers or {})}, timeout=30)


def openai_shaped(i: int) -> dict[str, Any]:
    return {"event_id": f"oa-{i}", "timestamp": "2025-11-28T10:00:00Z", "provider": "openai", "model": "gpt-4o-mini",
            "virtual_key": "vk-oa", "usage": {"prompt_tokens": 900, "completion_tokens": 100,
                                              "prompt_tokens_details": {"cached_tokens": 512}},
            "messages": [{"role": "user", "content": PROMPT}]}  # fmt: skip


def test_events_and_traces_contract(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    serve = start_serve(tmp_path, lake, "max_body_bytes = 65536\nread_timeout = 1.0\n")

    # an array: good records of three shapes land, bad ones are answered AND kept as dead letters
    body = [event(1), openai_shaped(2), {**event(3), "input_tokens": -5, "messages": PROMPT},
            {**event(4), "timestamp": "yesterday"}, event(5, virtual_key="vk-x", tags={"feature": "search"})]  # fmt: skip
    r = post(serve, orjson.dumps(body))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["accepted"] == 3 and answer["rejected_count"] == 2
    assert [(x["index"], x["field"], x["value"]) for x in answer["rejected"]] == [
        (2, "input_tokens", -5), (3, "timestamp", "yesterday")]
    assert answer["rejected"][0]["error"] == "input_tokens: got -5, expected an integer from 0 to 100,000,000"

    # NDJSON, gzip; a single object; the rotated-out token still works; everything bad → 400
    nd = b"\n".join(orjson.dumps(event(i)) for i in range(10, 20)) + b"\n{not json\n"
    r = post(serve, gzip.compress(nd), {"Content-Encoding": "gzip"})
    assert (r.status_code, r.json()["accepted"], r.json()["rejected"][0]["index"]) == (200, 10, 10)
    assert post(serve, orjson.dumps(event(20)), auth("old-rotated-token")).json()["accepted"] == 1
    r = post(serve, orjson.dumps([{"event_id": "x"}, 5]))
    assert r.status_code == 400 and [x["field"] for x in r.json()["rejected"]] == ["timestamp", "(record)"]

    # refused requests: each one readable line, never a traceback, never a 500
    assert requests.post(serve.url + EVENTS_URL, data=b"{}", timeout=10).status_code == 401
    r = post(serve, b"{}", {"Authorization": "Bearer wrong-token"})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    r = post(serve, b"x" * 70000)
    assert r.status_code == 413 and "65536" in r.json()["error"]
    bomb = gzip.compress(b" " * 5_000_000)
    assert post(serve, bomb, {"Content-Encoding": "gzip"}).status_code == 413
    assert post(serve, b"\x1f\x8bnot-gzip", {"Content-Encoding": "gzip"}).status_code == 400
    assert post(serve, zlib.compress(b"{}"), {"Content-Encoding": "br"}).status_code == 415
    r = post(serve, b"nonsense", path=EVENTS_URL)
    assert r.status_code == 400 and r.json()["error"].startswith("(body): got b'nonsense'")
    r = post(serve, b"{}", {"Content-Type": "text/plain"}, path="/v1/traces")
    assert r.status_code == 415 and "application/x-protobuf" in r.json()["error"]
    assert post(serve, b"{}", path="/v1/metrics").status_code == 404
    assert requests.get(serve.url + EVENTS_URL, timeout=10).status_code == 405
    assert _raw_http(serve, b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                     + b"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n").startswith(b"HTTP/1.1 411")  # fmt: skip
    # a client that stops mid-body is cut off after read_timeout; serve keeps answering others
    stalled = socket.create_connection(("127.0.0.1", serve.intake_port))
    stalled.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                    + b"\r\nContent-Length: 1000\r\n\r\n{\"event_id\"")  # fmt: skip
    stalled.settimeout(10)
    assert stalled.recv(100) == b""  # closed by serve, not by us
    stalled.close()

    # OTLP/HTTP, protobuf and JSON: Bifrost-shaped spans, one bad, one not an LLM call
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    spans = [bifrost_span(i, cost=0.01) for i in range(4)] + [bifrost_span(4, model=""), plain_span(1)]
    r = post(serve, request(spans).SerializeToString(), {"Content-Type": "application/x-protobuf"}, "/v1/traces")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/x-protobuf"
    resp = ExportTraceServiceResponse.FromString(r.content)
    assert resp.partial_success.rejected_spans == 1 and "span 4: gen_ai.request.model" in resp.partial_success.error_message
    r = post(serve, otlp_json(request([bifrost_span(i) for i in range(10, 13)])), {"Content-Type": "application/json"},
             "/v1/traces")  # fmt: skip
    assert (r.status_code, r.json()) == (200, {})
    r = post(serve, b"\x0a\xff\xff", {"Content-Type": "application/x-protobuf"}, "/v1/traces")
    assert r.status_code == 400 and b"OTLP ExportTraceServiceRequest" in r.content  # a google.rpc.Status

    wait_for(lambda: lake_rows(lake, "select count(*) from ev") == [(21,)], 60, "the accepted records to land")
    kinds = lake_rows(lake, "select count(*) filter (where event_id like 'evt-%'), count(*) filter (where "
                            "event_id = 'oa-2' and cached_input_tokens = 512), count(*) filter (where cost_usd > 0) from ev")  # fmt: skip
    assert kinds == [(13, 1, 21)]
    wait_for(lambda: len(dead_rows(lake)) == 6, 30, "the rejected records as dead letters")
    assert sorted(f for (f,) in dead_rows(lake, "select field from dl")) == [
        "(record)", "(record)", "gen_ai.request.model", "input_tokens", "timestamp", "timestamp"]
    assert PROMPT.encode() not in lake_text(lake) and COMPLETION.encode() not in lake_text(lake)

    metrics = requests.get(f"http://127.0.0.1:{serve.metrics_port}/metrics", timeout=10).text
    assert 'spendlake_intake_records_total{endpoint="/v1/events",result="accepted"} 14.0' in metrics
    assert 'spendlake_intake_records_total{endpoint="/v1/traces",result="accepted"} 7.0' in metrics
    assert 'spendlake_intake_requests_total{endpoint="/v1/events",code="401"} 2.0' in metrics
    assert "spendlake_intake_spans_skipped_total 1.0" in metrics
    serve.proc.terminate()
    assert serve.proc.wait(60) == 0
    log = serve.log.read_text()
    assert TOKEN not in log and "Traceback" not in log and PROMPT not in log


def _raw_http(serve: Serve, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", serve.intake_port), timeout=10) as s:
        s.sendall(data)
        return s.recv(4096)


class Sender(threading.Thread):
    """Sends batches of unique events until told to stop, resending a batch until it gets 200
    (as a producer with retries does). Records which event ids were acknowledged."""

    def __init__(self, get_url: Any, batches: int, size: int = 200) -> None:
        super().__init__(daemon=True)
        self.get_url, self.batches, self.size = get_url, batches, size
        self.acked: list[str] = []
        self.sends = 0
        self.refused: list[int] = []

    def run(self) -> None:
        for b in range(self.batches):
            body = [event(b * self.size + i, event_id=f"k-{b:04d}-{i:03d}") for i in range(self.size)]
            data = orjson.dumps(body)
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                self.sends += 1
                try:
                    r = requests.post(self.get_url() + EVENTS_URL, data=data, headers=auth(), timeout=15)
                except requests.RequestException:
                    time.sleep(0.2)
                    continue
                if r.status_code == 200:
                    self.acked += [e["event_id"] for e in body]
                    break
                self.refused.append(r.status_code)
                time.sleep(float(r.headers.get("Retry-After", "0.5")) if r.status_code == 503 else 0.5)
            else:
                return


def _assert_acknowledged_once(lake: Path, sender: Sender) -> None:
    n = len(sender.acked)
    wait_for(lambda: lake_rows(lake, "select count(distinct event_id) from ev") == [(n,)], 120,
             f"all {n} acknowledged events in the lake")  # fmt: skip
    in_lake = {e for (e,) in lake_rows(lake, "select distinct event_id from ev")}
    assert set(sender.acked) == in_lake
    # each durable record landed once: no (stream, partition, offset) twice; only a resend repeats an id
    assert lake_rows(lake, "select count(*) from (select source_topic, source_partition, source_offset from ev "
                           "group by all having count(*) > 1)") == [(0,)]  # fmt: skip

    # and the totals serve publishes count each event once, however often it was sent
    def rolled_up() -> bool:
        out = spendlake("query", "--lake", str(lake), "select sum(requests) as n from rollup_labels", "--format", "json")
        return out.returncode == 0 and orjson.loads(out.stdout)[0]["n"] == n

    wait_for(rolled_up, 60, f"the published rollups to count {n} requests")


def test_sigkill_mid_stream_spool_mode_loses_and_doubles_nothing(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    serve = start_serve(tmp_path, lake)
    current = {"url": serve.url}
    sender = Sender(lambda: current["url"], batches=40)
    sender.start()
    wait_for(lambda: len(sender.acked) >= 2000, 60, "some acknowledged batches")
    serve.proc.kill()  # SIGKILL while the sender streams: acknowledged-but-unlanded records sit in the spool
    serve.proc.wait(30)
    time.sleep(0.5)
    serve = start_serve(tmp_path, lake)
    current["url"] = serve.url
    sender.join(300)
    assert not sender.is_alive() and len(sender.acked) == 8000
    _assert_acknowledged_once(lake, sender)
    serve.proc.terminate()
    assert serve.proc.wait(60) == 0
    assert len(list((lake / "_spool").glob("*.seg"))) == 1  # landed segments are released


@pytest.mark.kafka
def test_kafka_mode_outage_answers_503_then_sigkill_loses_nothing(kafka: Broker, topic_name: str,
                                                                   tmp_path: Path) -> None:  # fmt: skip
    kafka.create_topic(topic_name, 3)
    lake = tmp_path / "lake"
    kafka_cfg = f'[kafka]\nbootstrap_servers = "{kafka.bootstrap}"\ntopic = "{topic_name}"\ngroup_id = "{topic_name}"\n'
    serve = start_serve(tmp_path, lake, kafka_cfg)
    r = post(serve, orjson.dumps([event(i, event_id=f"pre-{i}") for i in range(50)]))
    assert r.status_code == 200
    try:
        kafka.stop()
        t0 = time.monotonic()
        r = post(serve, orjson.dumps([event(i, event_id=f"outage-{i}") for i in range(50)]))
        assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0, r.text
        assert "did not acknowledge" in r.json()["error"] and time.monotonic() - t0 < 20
    finally:
        kafka.start()
    current = {"url": serve.url}
    sender = Sender(lambda: current["url"], batches=30)
    sender.start()
    wait_for(lambda: len(sender.acked) >= 1000, 120, "acknowledged batches after the outage")
    serve.proc.kill()
    serve.proc.wait(30)
    serve = start_serve(tmp_path, lake)
    current["url"] = serve.url
    sender.join(300)
    assert not sender.is_alive() and len(sender.acked) == 6000
    sender.acked += [f"pre-{i}" for i in range(50)]
    _assert_acknowledged_once(lake, sender)
    # on the topic: keyed by virtual key, canonical JSON without any extra text
    from kafka import KafkaConsumer

    c = KafkaConsumer(topic_name, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest",
                      consumer_timeout_ms=3000)  # fmt: skip
    first = next(iter(c))
    c.close()
    assert first.key == orjson.loads(first.value)["virtual_key"].encode()
    serve.proc.terminate()
    assert serve.proc.wait(60) == 0


def test_intake_config_mistakes_are_one_message_listing_all(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f'[lake]\npath = "{tmp_path / "lake"}"\n[intake]\nlisten = "0.0.0.0:4318"\n'
                   'allow_unauthenticated = true\nmax_body_bytes = 0\n[intake.attributes]\nteam = []\nowner = ["x"]\n')  # fmt: skip
    r = spendlake("serve", "--config", str(cfg), timeout=60)
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert "4 problems" in err and "allow_unauthenticated = true is refused on '0.0.0.0:4318'" in err
    assert "[intake] max_body_bytes: got 0" in err and "[intake.attributes] team: got []" in err
    assert "[intake.attributes] owner: unknown field" in err and "Traceback" not in err
    cfg.write_text(f'[lake]\npath = "{tmp_path / "lake"}"\n[intake]\nlisten = "127.0.0.1:0"\n')
    r = spendlake("serve", "--config", str(cfg), timeout=60)
    assert r.returncode == 2 and b"say who may send: tokens_env or tokens_file" in r.stderr
    cfg.write_text(f'[lake]\npath = "{tmp_path / "lake"}"\n[metrics]\nlisten = "127.0.0.1:0"\n'
                   '[intake]\nlisten = "127.0.0.1:0"\ntokens_env = "SPENDLAKE_TEST_NO_SUCH_VARIABLE"\n')  # fmt: skip
    r = spendlake("serve", "--config", str(cfg), timeout=120)
    assert r.returncode == 2, r.stderr
    assert b"the variable SPENDLAKE_TEST_NO_SUCH_VARIABLE is not set" in r.stderr and b"Traceback" not in r.stderr


def test_curl_posts_ndjson_and_gzip(tmp_path: Path) -> None:
    """A shell producer: curl with NDJSON from a file, gzipped, with the token from the environment."""
    import subprocess

    lake = tmp_path / "lake"
    serve = start_serve(tmp_path, lake)
    nd = tmp_path / "batch.ndjson.gz"
    nd.write_bytes(gzip.compress(b"\n".join(orjson.dumps(event(i, event_id=f"curl-{i}")) for i in range(50))))
    out = subprocess.run(["curl", "-sS", "--fail-with-body", f"{serve.url}/v1/events", "-H", f"Authorization: Bearer {TOKEN}",
                          "-H", "Content-Type: application/x-ndjson", "-H", "Content-Encoding: gzip",
                          "--data-binary", f"@{nd}"], capture_output=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert orjson.loads(out.stdout) == {"accepted": 50, "rejected": [], "rejected_count": 0}
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"{serve.url}/v1/events",
                          "--data-binary", "{}"], capture_output=True, timeout=60)  # fmt: skip
    assert out.stdout == b"401"
    wait_for(lambda: lake_rows(lake, "select count(*) from ev where event_id like 'curl-%'") == [(50,)], 60,
             "curl's events in the lake")  # fmt: skip
