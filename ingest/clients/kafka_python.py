"""The Consumer and Producer interfaces (ingest/clients) over kafka-python.

kafka-python 3 runs the group protocol on an IO thread: rebalance callbacks run there, where
blocking Kafka calls (commit) are refused; consumer.py knows (it commits from the poll loop)."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2
from kafka.structs import OffsetAndMetadata

from ingest.clients import (
    SESSION_TIMEOUT_S, CommitFailed, Fetched, KafkaFailure, KafkaSettings, Listener, Record, Unreachable, describe,
    recognised,
)

log = logging.getLogger("spendlake.ingest")

# A fetch response is held as bytes and then as Python records (~2x): these caps keep the
# consumer's memory bounded however fast the topic is. bench/ingest.py's bare loop uses them too.
FETCH = {
    "max_poll_records": 10_000,
    "fetch_max_bytes": 16 * 1024 * 1024,
    "max_partition_fetch_bytes": 4 * 1024 * 1024,
    "fetch_max_wait_ms": 200,
}
# Errors no retry fixes: raised from poll as KafkaFailure (one line, exit 2).
FATAL = ("SaslAuthenticationFailedError", "FencedInstanceIdError", "TopicAuthorizationFailedError",
         "GroupAuthorizationFailedError", "SSLError", "SSLCertVerificationError")  # fmt: skip


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, listener: Listener) -> None:
        self.listener = listener

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.listener.on_revoked(sorted(tp.partition for tp in revoked))

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.listener.on_assigned(sorted(tp.partition for tp in assigned))


class KafkaPythonConsumer:
    name = "kafka-python"

    def __init__(self, settings: KafkaSettings, instance_id: str | None) -> None:
        self.settings = settings
        self.topic = settings.topic
        self.instance_id = instance_id
        extra: dict[str, Any] = {"group_instance_id": instance_id} if instance_id else {}
        try:
            self._c = KafkaConsumer(
                bootstrap_servers=settings.bootstrap_servers.split(","),
                group_id=settings.group_id,
                client_id=settings.client_id,
                # Our defaults, not kafka-python's: the lake decides positions, we commit by hand.
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                **FETCH,
                session_timeout_ms=int(SESSION_TIMEOUT_S * 1000),
                heartbeat_interval_ms=3_000,
                max_poll_interval_ms=300_000,
                # kafka-python otherwise re-reads metadata only every 5 min: a topic that was not
                # yet visible at subscribe time (just created) would leave us unassigned that long.
                metadata_max_age_ms=10_000,
                **extra,
                **settings.security.kafka_python(),
            )
        except Exception as exc:  # NoBrokersAvailable, SSL and SASL failures at bootstrap
            if recognised(exc):
                raise KafkaFailure(describe(exc, settings)) from None
            raise Unreachable(_text(exc)) from None
        self._listener: Listener | None = None

    def _tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self.topic, partition)

    def subscribe(self, listener: Listener) -> None:
        self._listener = listener
        self._c.subscribe([self.topic], listener=_Rebalance(listener))
        # Metadata before the first join (which happens in poll): otherwise kafka-python can
        # assign from metadata it has not seen yet and either get nothing (rarely never
        # rejoining: seen in CI and the bench) or rebalance again at its next metadata update.
        self._c.partitions_for_topic(self.topic)

    def poll(self, max_records: int, timeout_s: float) -> list[Fetched]:
        try:
            polled = self._c.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except KafkaError as exc:
            if type(exc).__name__ in FATAL:
                raise KafkaFailure(describe(exc, self.settings)) from None
            raise
        out = []
        for tp, records in polled.items():
            out.append(Fetched(tp.partition, [r.offset for r in records], [r.key for r in records],
                               [r.value for r in records]))  # fmt: skip
        return out

    def assignment(self) -> set[int]:
        return {tp.partition for tp in self._c.assignment()}

    def seek(self, partition: int, offset: int) -> None:
        self._c.seek(self._tp(partition), offset)

    def seek_to_beginning(self, partition: int) -> None:
        self._c.seek_to_beginning(self._tp(partition))

    def position(self, partition: int) -> int | None:
        try:
            return self._c.position(self._tp(partition), timeout_ms=0)
        except Exception:  # not known yet (a reset pending)
            return None

    def commit(self, offsets: dict[int, int]) -> None:
        try:
            self._c.commit({self._tp(p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()})
        except KafkaError as exc:  # includes CommitFailedError after a rebalance
            raise CommitFailed(str(exc)) from None

    def partition_count(self) -> int:
        return len(self._c.partitions_for_topic(self.topic) or ())

    def watermarks(self, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        tps = [self._tp(p) for p in partitions]
        try:
            lows = self._c.beginning_offsets(tps, timeout_ms=2000)
            ends = self._c.end_offsets(tps, timeout_ms=2000)
        except Exception as exc:  # KafkaTimeoutError while the broker is away
            raise CommitFailed(str(exc)) from None
        return {tp.partition: (lows[tp], ends[tp]) for tp in tps}

    def lag(self) -> dict[int, int]:
        out = {}
        for tp in self._c.assignment():
            high, pos = self._c.highwater(tp), self.position(tp.partition)
            if high is not None and pos is not None:
                out[tp.partition] = max(high - pos, 0)
        return out

    def rejoin(self) -> None:
        assert self._listener is not None
        self._c.unsubscribe()
        self._c.subscribe([self.topic], listener=_Rebalance(self._listener))

    def close(self) -> None:
        self._c.close(autocommit=False)



class KafkaPythonProducer:
    """kafka-python's idempotent producer (acks=all); thread-safe, one per process. Records go
    to the partition Java's default partitioner picks (murmur2 of the key), remembered per key:
    virtual keys repeat, and the hash was a tenth of the send cost."""

    name = "kafka-python"

    def __init__(self, settings: KafkaSettings, client_id: str, timeout_s: float = 10.0) -> None:
        self.settings = settings
        timeout_ms = int(timeout_s * 1000)
        try:
            self._p = KafkaProducer(
                bootstrap_servers=settings.bootstrap_servers.split(","), client_id=client_id,
                acks="all", enable_idempotence=True,
                linger_ms=2,  # concurrent requests share produce calls; a request waits at most this
                compression_type=None, batch_size=256 * 1024, max_request_size=4 * 1024 * 1024,
                max_block_ms=timeout_ms, request_timeout_ms=max(timeout_ms // 2, 1000),
                delivery_timeout_ms=timeout_ms,
                **settings.security.kafka_python(),
            )  # fmt: skip
        except Exception as exc:
            if recognised(exc):
                raise KafkaFailure(describe(exc, settings)) from None
            raise Unreachable(_text(exc)) from None
        self._partitions = 0
        self._by_key: dict[bytes, int] = {}
        self._round_robin = itertools.count()

    def send_batch(self, topic: str, records: Sequence[Record], timeout_s: float) -> None:
        if not records:
            return
        done = threading.Event()
        pending = [len(records)]
        errors: list[BaseException] = []
        lock = threading.Lock()

        def acked(_: Any) -> None:
            with lock:
                pending[0] -= 1
                if pending[0] == 0:
                    done.set()

        def failed(exc: BaseException) -> None:
            errors.append(exc)
            done.set()

        partition_of = self._partitioner(topic)
        send = self._p.send
        for k, v, h in records:
            send(topic, key=k, value=v, headers=h, partition=partition_of(k)).add_callback(acked).add_errback(failed)
        if not done.wait(timeout_s):
            raise TimeoutError(f"no acknowledgement within {timeout_s:g} s")
        if errors:
            exc = errors[0]
            if type(exc).__name__ in FATAL:
                raise KafkaFailure(describe(exc, self.settings))
            raise TimeoutError(f"not acknowledged: {type(exc).__name__}")

    def _partitioner(self, topic: str) -> Callable[[bytes | None], int | None]:
        parts = self._p.partitions_for(topic)
        n = len(parts) if parts else 0
        if n != self._partitions:
            self._partitions, self._by_key = n, {}
        by_key = self._by_key
        if len(by_key) > 100_000:
            by_key.clear()
        rr = self._round_robin

        def partition_of(key: bytes | None) -> int | None:
            if not n:
                return None  # no metadata yet: kafka-python's partitioner decides
            if key is None:
                return next(rr) % n
            p = by_key.get(key)
            if p is None:
                p = by_key[key] = (murmur2(key) & 0x7FFFFFFF) % n
            return p

        return partition_of

    def close(self, timeout_s: float = 5.0) -> None:
        self._p.close(timeout=timeout_s)


def _text(exc: BaseException) -> str:
    """kafka-python's errors already start with their class name; others get it."""
    text, name = str(exc), type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}" if text else name


__all__ = ["FETCH", "KafkaPythonConsumer", "KafkaPythonProducer"]
