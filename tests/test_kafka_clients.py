"""The two Kafka clients behind ingest/clients, against the real broker: the producers put a key
where Java's default partitioner would (so the intake and dead letters keep a virtual key's
events in order on one partition whichever client serve uses), and static member names are
unique among live processes on a host and handed on when one dies."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from kafka.partitioner.default import murmur2

from conftest import Broker
from ingest.clients import KafkaSettings, Unreachable

pytestmark = pytest.mark.kafka


def read_all(kafka: Broker, topic: str, n: int) -> list[tuple[int, bytes | None, bytes, list[tuple[str, bytes]]]]:
    from kafka import KafkaConsumer

    c = KafkaConsumer(topic, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest",
                      enable_auto_commit=False, consumer_timeout_ms=10_000)  # fmt: skip
    out = []
    for r in c:
        out.append((r.partition, r.key, r.value, list(r.headers)))
        if len(out) == n:
            break
    c.close()
    return out


def test_producers_put_keys_where_java_does(kafka: Broker, kafka_client: str, topic_name: str) -> None:
    kafka.create_topic(topic_name, 5)
    settings = KafkaSettings(bootstrap_servers=kafka.bootstrap, topic=topic_name, client=kafka_client)
    producer = settings.producer(client_id="t")
    assert producer.name == kafka_client
    keys = [f"vk-{i}".encode() for i in range(200)]
    producer.send_batch(topic_name, [(k, b"v-" + k, [("error", b"why")]) for k in keys], 30.0)
    producer.close()
    got = read_all(kafka, topic_name, len(keys))
    assert sorted(v for _, _, v, _ in got) == sorted(b"v-" + k for k in keys)
    for partition, key, _, headers in got:
        assert key is not None
        assert partition == (murmur2(key) & 0x7FFFFFFF) % 5, key
        assert headers == [("error", b"why")]


def test_a_send_to_an_unreachable_broker_fails_with_a_reason(kafka_client: str) -> None:
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:1", topic="x", client=kafka_client)
    try:
        producer = settings.producer(client_id="t", timeout_s=2.0)
    except Unreachable as exc:  # kafka-python looks for a broker when it is created
        assert kafka_client == "kafka-python" and "127.0.0.1:1" in str(exc), exc
        return
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="no acknowledgement within 2 s"):
        producer.send_batch("x", [(b"k", b"v", None)], 2.0)
    assert time.monotonic() - t0 < 30, "the send's own timeout bounds it"  # a liveness bound, not a benchmark
    producer.close(0)


CLAIM = textwrap.dedent("""
    import sys, time
    from ingest.clients import KafkaSettings, Unreachable, StaticSlot
    print(StaticSlot.claim(KafkaSettings(bootstrap_servers=sys.argv[1], group_id=sys.argv[2])), flush=True)
    time.sleep(float(sys.argv[3]))
""")


def claim(group: str, hold_s: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CLAIM, "127.0.0.1:9", group, str(hold_s)],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])  # fmt: skip


def test_static_member_names_are_unique_while_alive_and_reused_after_a_kill(topic_name: str) -> None:
    group = f"g-{topic_name}"
    a, b = claim(group, 60), claim(group, 60)
    name_a, name_b = a.stdout.readline().strip(), b.stdout.readline().strip()  # type: ignore[union-attr]
    assert name_a != name_b and {name_a[-2:], name_b[-2:]} == {"-0", "-1"}, (name_a, name_b)
    first = a if name_a.endswith("-0") else b
    first.kill()  # SIGKILL: the kernel releases its lock; a restart takes the same name
    first.wait(10)
    time.sleep(0.2)
    c = claim(group, 0)
    assert c.stdout.readline().strip() == (name_a if first is a else name_b)  # type: ignore[union-attr]
    other = claim(f"{group}-other", 0)  # another group on the same host starts at slot 0 too
    assert other.stdout.readline().strip().endswith("-0")  # type: ignore[union-attr]
    for p in (a, b, c, other):
        p.kill()
        p.wait(10)
