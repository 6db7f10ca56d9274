"""Where accepted records go before the intake answers 200: acknowledged means durable.

- `KafkaSink`: produced to the usage topic, keyed by virtual key, with an idempotent producer and
  acks=all (kafka-python's or librdkafka's, ingest/clients); `write` returns only when the broker acknowledged every record.
- `SpoolSink`: appended to the local spool and fsynced (ingest/spool.py); serve's spool source
  lands it exactly once.

Either raises `Unavailable` when it cannot make the records durable now (broker down, disk
full): the intake answers 503 with Retry-After and the producer sends again. A resend after a
partial success is harmless: totals count an `event_id` once (contract 2, rule 4).
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from ingest.clients import KafkaSettings, Producer
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
    """One idempotent producer (acks=all) shared by every request thread, from the configured
    client (ingest/clients: kafka-python or confluent-kafka; both are thread-safe).

    It is created on first use and again after a failure, so `serve` starts while the broker is
    down and intake recovers by itself when it is back."""

    def __init__(self, settings: KafkaSettings, ack_timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.bootstrap_servers = settings.bootstrap_servers
        self.topic = settings.topic
        self.ack_timeout_s = ack_timeout_s
        self._producer: Producer | None = None
        self._lock = threading.Lock()

    def _get(self) -> Producer:
        with self._lock:
            if self._producer is None:
                self._producer = self.settings.producer(client_id="spendlake-intake", timeout_s=self.ack_timeout_s)
            return self._producer

    def write(self, records: list[Record]) -> None:
        if not records:
            return
        try:
            self._get().send_batch(self.topic, [(k, v, None) for k, v in records], self.ack_timeout_s)
        except Exception as exc:  # every kind means "not acknowledged"
            log.warning("Kafka did not acknowledge %d records: %s", len(records), type(exc).__name__)
            self._reset()
            raise Unavailable(f"Kafka at {self.bootstrap_servers} did not acknowledge the records "
                              f"({type(exc).__name__})") from None  # fmt: skip

    def _reset(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(0)
            except Exception:
                pass

    def close(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(5)


__all__ = ["KafkaSink", "Record", "Sink", "SpoolSink", "Unavailable"]
