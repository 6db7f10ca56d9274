"""Where accepted records go before the intake answers 200: acknowledged means durable.

- `KafkaSink`: produced to the usage topic, keyed by virtual key, with kafka-python's idempotent
  producer and acks=all; `write` returns only when the broker acknowledged every record.
- `SpoolSink`: appended to the local spool and fsynced (ingest/spool.py); serve's spool source
  lands it exactly once.

Either raises `Unavailable` when it cannot make the records durable now (broker down, disk
full): the intake answers 503 with Retry-After and the producer sends again. A resend after a
partial success is harmless: totals count an `event_id` once (contract 2, rule 4).
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import Any, Protocol

from kafka.partitioner.default import murmur2

from ingest.errors import SpendlakeError
from ingest.spool import Spool

log = logging.getLogger("spendlake.intake")

Record = tuple[bytes | None, bytes]  # (key, value)


class Unavailable(SpendlakeError):
    """The records could not be made durable now; nothing was acknowledged."""

    def __init__(self, reason: str, retry_after_s: int = 5) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(reason)


class Sink(Protocol):
    def write(self, records: list[Record]) -> None: ...

    def close(self) -> None: ...


class SpoolSink:
    def __init__(self, spool: Spool) -> None:
        self.spool = spool

    def write(self, records: list[Record]) -> None:
        if not records:
            return
        try:
            self.spool.append([v for _, v in records])
        except OSError as exc:
            raise Unavailable(f"the spool cannot be written ({exc.strerror})", 10) from None

    def close(self) -> None:
        pass


class KafkaSink:
    """One idempotent producer shared by every request thread (kafka-python's is thread-safe).

    It is created on first use and again after a failure, so `serve` starts while the broker is
    down and intake recovers by itself when it is back."""

    def __init__(self, bootstrap_servers: str, topic: str, security: tuple[tuple[str, str], ...] = (),
                 ack_timeout_s: float = 10.0) -> None:  # fmt: skip
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.security = security
        self.ack_timeout_s = ack_timeout_s
        self._producer: Any = None
        self._lock = threading.Lock()
        self._partitions = 0
        self._by_key: dict[bytes, int] = {}
        self._round_robin = itertools.count()

    def _get(self) -> Any:
        with self._lock:
            if self._producer is None:
                from kafka import KafkaProducer

                timeout_ms = int(self.ack_timeout_s * 1000)
                self._producer = KafkaProducer(
                    bootstrap_servers=self.bootstrap_servers.split(","),
                    client_id="spendlake-intake",
                    acks="all",
                    enable_idempotence=True,
                    linger_ms=2,  # concurrent requests share produce calls; a request waits at most this
                    compression_type=None,
                    batch_size=256 * 1024,
                    max_request_size=4 * 1024 * 1024,
                    max_block_ms=timeout_ms,
                    request_timeout_ms=max(timeout_ms // 2, 1000),
                    delivery_timeout_ms=timeout_ms,
                    **dict(self.security),
                )
            return self._producer

    def write(self, records: list[Record]) -> None:
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

        try:
            producer = self._get()
            partition_of = self._partitioner(producer)
            send = producer.send
            for k, v in records:
                send(self.topic, key=k, value=v, partition=partition_of(k)).add_callback(acked).add_errback(failed)
            if not done.wait(self.ack_timeout_s) or errors:
                raise errors[0] if errors else TimeoutError(f"no acknowledgement within {self.ack_timeout_s} s")
        except Exception as exc:  # kafka-python raises many kinds; every one means "not acknowledged"
            log.warning("Kafka did not acknowledge %d records: %s", len(records), type(exc).__name__)
            self._reset()
            raise Unavailable(f"Kafka at {self.bootstrap_servers} did not acknowledge the records "
                              f"({type(exc).__name__})") from None  # fmt: skip

    def _partitioner(self, producer: Any) -> Any:
        """key → partition as kafka-python's (and Java's) default partitioner picks it (murmur2),
        remembered per key: virtual keys repeat, and the hash was a tenth of the send cost."""
        parts = producer.partitions_for(self.topic)
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

    def _reset(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=0)
            except Exception:
                pass

    def close(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=5)


__all__ = ["KafkaSink", "Record", "Sink", "SpoolSink", "Unavailable"]
