"""Exactly-once ingest against the real broker: crashes, restarts, rebalances, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import AnyLake, Broker, RemoteLake, store_outage, dead_rows, events_bytes, lake_rows, manifest_count, spendlake, spendlake_bg, wait_for

# the whole exactly-once suite runs once per Kafka client (conftest.KAFKA_CLIENTS)
pytestmark = [pytest.mark.kafka, pytest.mark.usefixtures("kafka_client")]


def group_of(topic: str) -> str:
    return f"g-{topic}"  # one group per test: members of other tests' groups never interfere


def ingest_args(kafka: Broker, topic: str, lake: AnyLake, *extra: str) -> list[str]:
    return ["ingest", "--bootstrap-servers", kafka.bootstrap, "--topic", topic, "--group", group_of(topic),
            "--lake", str(lake), *extra]  # fmt: skip


def assert_exactly_once(lake: AnyLake, kafka: Broker, topic: str, context: bytes = b"") -> None:
    """Every produced (partition, offset) is in the lake (events or dead letters) exactly once.
    `context` (the last ingest's stderr) is shown when it is not."""
    ends = kafka.end_offsets(topic)
    positions = [(p, o) for p, o in lake_rows(lake, "select source_partition, source_offset from ev")]
    positions += [(p, o) for p, o in dead_rows(lake, "select source_partition, source_offset from dl")]
    counts = Counter(positions)
    twice = [pos for pos, n in counts.items() if n > 1]
    assert not twice, f"{len(twice)} positions landed more than once, e.g. {twice[:5]}"
    expected = {(p, o) for p, end in ends.items() for o in range(end)}
    missing = sorted(expected - set(counts))
    assert not missing, (
        f"{len(missing)} produced records are missing from the lake, e.g. {missing[:5]}\n"
        + context.decode(errors="replace")[-4000:]
    )
    assert set(counts) == expected


def test_roundtrip_with_kafka_python_producer(kafka: Broker, topic_name: str, tmp_path: Path, any_lake: AnyLake) -> None:
    kafka.create_topic(topic_name, 3)
    values = events_bytes(3000)
    kafka.produce(topic_name, values, keys=[f"vk-{i % 17}".encode() for i in range(len(values))])
    lake = any_lake
    spendlake(*ingest_args(kafka, topic_name, lake, "--exit-when-idle", "2"), check=True)
    assert_exactly_once(lake, kafka, topic_name)
    ids = lake_rows(lake, "select count(distinct event_id), count(*), count(cost_usd) from ev")[0]
    assert ids == (3000, 3000, 3000)
    # offsets were committed after the lake write, as last + 1 per partition
    assert kafka.committed(topic_name, group_of(topic_name)) == kafka.end_offsets(topic_name)


def test_roundtrip_with_kcat_producer(kafka: Broker, topic_name: str, tmp_path: Path) -> None:
    kafka.create_topic(topic_name, 2)
    data = b"\n".join(events_bytes(1500)) + b"\n"
    r = subprocess.run(["kcat", "-b", kafka.bootstrap, "-P", "-t", topic_name, "-K", "\t"],
                       input=b"\n".join(b"vk-%d\t" % (i % 5) + v for i, v in enumerate(data.splitlines())) + b"\n",
                       capture_output=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    lake = tmp_path / "lake"
    spendlake(*ingest_args(kafka, topic_name, lake, "--exit-when-idle", "2"), check=True)
    assert_exactly_once(lake, kafka, topic_name)
    assert lake_rows(lake, "select count(distinct event_id) from ev") == [(1500,)]


def test_sigkill_mid_stream_then_restart(kafka: Broker, topic_name: str, tmp_path: Path, any_lake: AnyLake) -> None:
    """Kill -9 the consumer at several points while it streams; each restart resumes from the
    lake, and at the end every record is there exactly once."""
    kafka.create_topic(topic_name, 3)
    lake = any_lake
    log = tmp_path / "ingest.log"
    total = 0
    for round_no in range(4):
        kafka.produce(topic_name, events_bytes(8000, start=total))
        total += 8000
        proc = spendlake_bg(*ingest_args(kafka, topic_name, lake, "--batch-records", "700", "--quiet"), log=log)
        before = manifest_count(lake)
        # kill at a different depth into the stream each round: after 1, 2, 4, 6 new batches
        wait_for(lambda: manifest_count(lake) >= before + [1, 2, 4, 6][round_no],
                 120, f"round {round_no}: batches landing")  # fmt: skip
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    r = spendlake("-v", *ingest_args(kafka, topic_name, lake, "--exit-when-idle", "3"), check=True)
    assert_exactly_once(lake, kafka, topic_name, r.stderr)
    assert lake_rows(lake, "select count(*), count(distinct event_id) from ev") == [(total, total)]


def test_sigterm_flushes_and_commits(kafka: Broker, topic_name: str, tmp_path: Path, any_lake: AnyLake) -> None:
    kafka.create_topic(topic_name, 1)
    kafka.produce(topic_name, events_bytes(500))
    lake = any_lake
    # a huge batch that only SIGTERM will flush
    proc = spendlake_bg(*ingest_args(kafka, topic_name, lake, "--batch-age", "3600"), log=tmp_path / "log")
    wait_for(lambda: b"resuming" in (tmp_path / "log").read_bytes() or b"earliest" in (tmp_path / "log").read_bytes(),
             60, "the consumer to be assigned")  # fmt: skip
    import time

    time.sleep(2)  # let it poll the records; not a timing assertion, just giving it work to flush
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    assert lake_rows(lake, "select count(*) from ev") == [(500,)]
    assert kafka.committed(topic_name, group_of(topic_name)) == {0: 500}


def test_two_consumers_share_partitions(kafka: Broker, topic_name: str, tmp_path: Path, any_lake: AnyLake) -> None:
    """Two members of one group, joining and leaving while a producer keeps sending: no offset
    is written twice, none is lost."""
    kafka.create_topic(topic_name, 4)
    lake = any_lake
    stop = threading.Event()
    sent = [0]

    def producer() -> None:
        while not stop.is_set() and sent[0] < 40_000:
            kafka.produce(topic_name, events_bytes(2000, start=sent[0]))
            sent[0] += 2000

    t = threading.Thread(target=producer)
    t.start()
    args = ingest_args(kafka, topic_name, lake, "--batch-records", "500", "--batch-age", "0.5", "--quiet")
    a = spendlake_bg(*args, log=tmp_path / "a.log")
    wait_for(lambda: manifest_count(lake) > 0, 60, "first batch")
    b = spendlake_bg(*args, log=tmp_path / "b.log")  # joins: rebalance while A is mid-stream
    wait_for(lambda: sent[0] >= 20_000, 120, "half the traffic")
    a.send_signal(signal.SIGTERM)  # leaves: B takes all partitions over
    assert a.wait(60) == 0
    c = spendlake_bg(*args, log=tmp_path / "c.log")  # and another joins
    t.join(180)
    stop.set()
    for p in (b, c):
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) == 0
    r = spendlake("-v", *ingest_args(kafka, topic_name, lake, "--exit-when-idle", "3"), check=True)
    assert_exactly_once(lake, kafka, topic_name, r.stderr)
    assert lake_rows(lake, "select count(distinct event_id) from ev") == [(sent[0],)]


def test_broker_restart_mid_ingest(kafka: Broker, topic_name: str, tmp_path: Path, any_lake: AnyLake) -> None:
    kafka.create_topic(topic_name, 2)
    kafka.produce(topic_name, events_bytes(5000))
    lake = any_lake
    log = tmp_path / "ingest.log"
    proc = spendlake_bg(*ingest_args(kafka, topic_name, lake, "--batch-records", "1000", "--exit-when-idle", "60"), log=log)
    wait_for(lambda: lake_rows(lake, "select count(*) from ev") == [(5000,)], 120, "the first 5000 events")
    kafka.stop()
    kafka.start()
    kafka.produce(topic_name, events_bytes(5000, start=5000))
    wait_for(lambda: lake_rows(lake, "select count(*) from ev") == [(10000,)], 180, "events after the restart")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, log.read_text()
    assert_exactly_once(lake, kafka, topic_name)


BAD_RECORDS: list[tuple[bytes, str]] = [
    (b"\xff\xfe not utf-8", "UTF-8"),
    (b"{not json", "JSON"),
    (b"[1, 2, 3]", "(record)"),
    (orjson.dumps({"event_id": "b1", "timestamp": 1764331200000, "provider": "openai", "model": "gpt-4o",
                   "input_tokens": -5}), "input_tokens: got -5"),
    (orjson.dumps({"event_id": "b2", "timestamp": 1764331200000, "provider": "openai", "model": "gpt-4o",
                   "input_tokens": "12"}), "input_tokens: got '12'"),
    (orjson.dumps({"event_id": "b3", "timestamp": 1764331200000, "provider": "openai", "model": "gpt-4o",
                   "output_tokens": 10**12}), "output_tokens: got 1000000000000"),
    (orjson.dumps({"event_id": "b4", "provider": "openai", "model": "gpt-4o"}), "timestamp: got None"),
    (orjson.dumps({"event_id": "b5", "timestamp": 1764331200, "provider": "openai", "model": "gpt-4o"}),
     "epoch milliseconds, not seconds"),
    (orjson.dumps({"event_id": "b6", "timestamp": 1764331200000, "provider": "openai", "model": "gpt-4o",
                   "input_tokens": 10, "cached_input_tokens": 20}), "cached_input_tokens"),
    (orjson.dumps({"event_id": "b7", "timestamp": 1764331200000, "model": "gpt-4o"}), "provider: got None"),
    (b'{"event_id": "b8", "timestamp": 1764331200000, "provider": "openai", "model": "gpt-4o", "pad": "'
     + b"x" * (1 << 20) + b'"}', "expected at most 1048576 bytes"),
]  # fmt: skip


def test_bad_input_corpus_mixed_into_good_traffic(kafka: Broker, topic_name: str, tmp_path: Path) -> None:
    kafka.create_topic(topic_name, 1)
    good = events_bytes(300)
    values: list[bytes] = []
    for i, v in enumerate(good):
        values.append(v)
        if i % 25 == 0 and i // 25 < len(BAD_RECORDS):
            values.append(BAD_RECORDS[i // 25][0])
    kafka.produce(topic_name, values, partition=0)
    lake = tmp_path / "lake"
    r = spendlake("-v", *ingest_args(kafka, topic_name, lake, "--exit-when-idle", "2",
                                     "--dead-letter-topic", f"{topic_name}-dlq"))  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    assert_exactly_once(lake, kafka, topic_name, r.stderr)
    assert lake_rows(lake, "select count(*) from ev") == [(300,)]
    dead = dead_rows(lake, "select source_offset, error, raw_bytes from dl order by source_offset")
    assert len(dead) == len(BAD_RECORDS)
    for (offset, error, _), (raw, expected) in zip(dead, BAD_RECORDS):
        assert expected in error, f"offset {offset}: {error!r} should mention {expected!r}"
        assert values[offset] == raw
    # each dead letter is logged once, on stderr, with its position
    stderr = r.stderr.decode()
    assert stderr.count("spendlake: dead letter ") == len(BAD_RECORDS), stderr
    # and produced to the dead-letter topic
    assert sum(kafka.end_offsets(f"{topic_name}-dlq").values()) == len(BAD_RECORDS)


def test_unreachable_broker_is_one_clear_error(tmp_path: Path) -> None:
    r = spendlake("ingest", "--bootstrap-servers", "127.0.0.1:1", "--topic", "x", "--lake", str(tmp_path / "l"),
                  "--exit-when-idle", "1", timeout=120)  # fmt: skip
    assert r.returncode == 1
    assert b"cannot reach Kafka at 127.0.0.1:1" in r.stderr
    assert os.path.isdir(tmp_path / "l")  # nothing half-written beyond the empty layout


def test_an_outage_is_not_idleness(kafka: Broker, topic_name: str, tmp_path: Path) -> None:
    """--exit-when-idle counts only time caught up with a reachable broker: with the broker down
    for longer than the idle time, ingest waits, and lands what was produced after it came back."""
    kafka.create_topic(topic_name, 3)
    kafka.produce(topic_name, events_bytes(3000))
    lake = tmp_path / "lake"
    log = tmp_path / "ingest.log"
    # idle time 8 s: longer than the broker takes to stop, so it is the outage that must not count
    proc = spendlake_bg(*ingest_args(kafka, topic_name, lake, "--exit-when-idle", "8", "--quiet"), log=log)
    wait_for(lambda: lake_rows(lake, "select count(*) from ev") == [(3000,)], 120, "the first 3000 events")
    kafka.stop()
    import time

    time.sleep(15)  # > the idle time: the old rule ("no record for 8 s") stopped here, reporting success
    assert proc.poll() is None, "ingest stopped while the broker was down:\n" + log.read_text()
    kafka.start()
    kafka.produce(topic_name, events_bytes(3000, start=3000))
    assert proc.wait(180) == 0, log.read_text()
    assert_exactly_once(lake, kafka, topic_name, log.read_bytes())
    assert lake_rows(lake, "select count(distinct event_id) from ev") == [(6000,)]


def test_the_s3_store_stopped_mid_stream(kafka: Broker, topic_name: str, tmp_path: Path, s3: Any,
                                         s3_lake: RemoteLake) -> None:  # fmt: skip
    """The S3 server is killed while ingest streams a topic into an S3 lake, and started again
    20 s later: ingest waits for it (without exiting, without committing offsets it has not
    landed), resumes by itself, and every record is in the lake exactly once."""
    import time

    kafka.create_topic(topic_name, 3)
    kafka.produce(topic_name, events_bytes(30_000))
    log = tmp_path / "ingest.log"
    proc = spendlake_bg(*ingest_args(kafka, topic_name, s3_lake, "--batch-records", "1000", "--batch-age", "0.5",
                                     "--exit-when-idle", "10", "--quiet"), log=log)  # fmt: skip

    def meanwhile() -> None:
        kafka.produce(topic_name, events_bytes(10_000, start=30_000))
        time.sleep(20)  # longer than the idle time: an outage of the store is not idleness either

    store_outage(s3, s3_lake, proc, log, during=meanwhile)
    assert "answers again" in log.read_text()
    assert_exactly_once(s3_lake, kafka, topic_name, log.read_bytes())
    assert lake_rows(s3_lake, "select count(distinct event_id) from ev") == [(40_000,)]
    assert kafka.committed(topic_name, group_of(topic_name)) == kafka.end_offsets(topic_name)
