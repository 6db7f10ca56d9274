"""The Consumer and Producer interfaces (ingest/clients) over confluent-kafka (librdkafka).

librdkafka fetches on its own threads into a bounded local queue; `consume()` hands a batch of
messages to this thread, and the rebalance and error callbacks run inside it too, so every Kafka
call the exactly-once logic makes (seek, commit) happens on one thread, as with kafka-python.

Its own log lines (connection refused, every retry) are routed to the `spendlake.rdkafka` logger,
which is silent unless `-v`; what matters reaches the user through the error callback instead:
an authentication or TLS failure becomes a KafkaFailure (one line, exit 2) at the next poll, and
the broker being away is one warning, not one per retry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from ingest.clients import (
    SESSION_TIMEOUT_S, CommitFailed, Fetched, KafkaFailure, KafkaSettings, Listener, Record, Unreachable, describe,
    recognised,
)  # fmt: skip

log = logging.getLogger("spendlake.ingest")
rdlog = logging.getLogger("spendlake.rdkafka")

# Errors no retry fixes. librdkafka keeps retrying them (a wrong password would look like a hang).
FATAL_CODES = {KafkaError._AUTHENTICATION, KafkaError._SSL, KafkaError.TOPIC_AUTHORIZATION_FAILED,
               KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.SASL_AUTHENTICATION_FAILED,
               KafkaError.FENCED_INSTANCE_ID}  # fmt: skip
DOWN_CODES = {KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE}
CONNECT_TIMEOUT_S = 10.0
METADATA_EVERY_S = 10.0

# Memory: librdkafka prefetches into a local queue; these caps keep RSS bounded whatever the
# topic's rate, like kafka-python's FETCH settings (bench/ingest.py measures both).
FETCH = {
    "fetch.max.bytes": 16 * 1024 * 1024,
    "max.partition.fetch.bytes": 4 * 1024 * 1024,
    "fetch.wait.max.ms": 200,
    "queued.max.messages.kbytes": 16 * 1024,
    # When that queue is full (the writers are busy: backpressure), librdkafka pauses fetching
    # for this long; its default, 1 s, left the queue empty once the writers caught up (ingest
    # ran at 48k events/s with an 8 MiB queue, 80k with 16 MiB; 108k at 10 ms, measured)
    "fetch.queue.backoff.ms": 10,
    # queued.min.messages stays at librdkafka's 100,000: at 50,000 a bare consume loop over 1M
    # events ran at about half the speed (bench/ingest.py's (d), measured)
}


class _Errors:
    """The error callback's findings, read on the polling thread."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self.fatal: str | None = None
        self.down_since: float | None = None
        self._warned = False

    def __call__(self, err: KafkaError) -> None:
        code = err.code()
        # a refused client certificate arrives as a transport error ("alert bad certificate")
        if code in FATAL_CODES or err.fatal() or recognised(err.str()):
            if self.fatal is None:
                self.fatal = describe(err.str(), self.settings)
            return
        if code in DOWN_CODES:
            if self.down_since is None:
                self.down_since = time.monotonic()
            if not self._warned:  # said once per outage (consumer.py says it to the user)
                rdlog.warning("Kafka at %s is unreachable (%s); retrying", self.settings.bootstrap_servers, err.str())
                self._warned = True
            return
        rdlog.info("%s", err.str())

    def up(self) -> None:
        if self.down_since is not None and self._warned:
            rdlog.info("Kafka at %s is reachable again", self.settings.bootstrap_servers)
        self.down_since, self._warned = None, False

    def check(self) -> None:
        if self.fatal is not None:
            raise KafkaFailure(self.fatal)


def _common(settings: KafkaSettings, client_id: str, errors: _Errors) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": client_id,
        "error_cb": errors,
        "logger": rdlog,
        "log.connection.close": False,
        "socket.keepalive.enable": True,
        **settings.security.librdkafka(),
    }


def _build(cls: Any, conf: dict[str, Any], settings: KafkaSettings) -> Any:
    """librdkafka loads certificates and keys when the client is made: a wrong key password is
    an error here, one line, not a traceback."""
    try:
        return cls(conf)
    except KafkaException as exc:
        text = str(exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else exc)
        raise KafkaFailure(describe(text, settings)) from None


class ConfluentConsumer:
    name = "confluent"

    def __init__(self, settings: KafkaSettings, instance_id: str | None) -> None:
        self.settings = settings
        self.topic = settings.topic
        self.instance_id = instance_id
        self._errors = _Errors(settings)
        conf = {
            **_common(settings, settings.client_id, self._errors),
            "group.id": settings.group_id,
            # Our defaults: the lake decides positions, we commit by hand after it holds a batch.
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            # what kafka-python reads (read_uncommitted), so both clients land the same records
            "isolation.level": "read_uncommitted",
            "enable.partition.eof": False,
            "session.timeout.ms": int(SESSION_TIMEOUT_S * 1000),
            "heartbeat.interval.ms": 3_000,
            "max.poll.interval.ms": 300_000,
            "topic.metadata.refresh.interval.ms": 10_000,
            **FETCH,
        }
        if instance_id:
            conf["group.instance.id"] = instance_id
        self._c = _build(Consumer, conf, settings)
        self._listener: Listener | None = None
        self._assigned: set[int] = set()
        self._assigning: dict[int, int] | None = None
        self._partitions = 0
        self._partitions_at = -1e9
        self._wait_for_metadata()

    def _wait_for_metadata(self) -> None:
        """librdkafka's constructor never fails: ask for the topic's metadata until the broker
        answers, so an unreachable broker or refused credentials are an error now, not a hang."""
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                md = self._c.list_topics(self.topic, timeout=1.0)
                self._errors.check()
                self._note_partitions(md)
                self._errors.up()
                return
            except KafkaException as exc:
                last = exc
            self._c.poll(0.1)  # serves the error callback
            self._errors.check()
        self._c.close()
        raise Unreachable(f"{last}" if last else "no answer")

    def _note_partitions(self, md: Any) -> None:
        t = md.topics.get(self.topic)
        self._partitions = len(t.partitions) if t is not None and t.error is None else 0
        self._partitions_at = time.monotonic()

    # --- rebalance callbacks (run inside consume, on this thread) --------------------------

    def _on_assign(self, consumer: Any, parts: list[TopicPartition]) -> None:
        assert self._listener is not None
        self._assigning = {}
        try:
            self._listener.on_assigned(sorted(tp.partition for tp in parts))
            start = self._assigning
        finally:
            self._assigning = None
        consumer.assign([TopicPartition(self.topic, tp.partition, start.get(tp.partition, tp.offset)) for tp in parts])
        self._assigned = {tp.partition for tp in parts}

    def _on_revoke(self, consumer: Any, parts: list[TopicPartition]) -> None:
        assert self._listener is not None
        try:
            self._listener.on_revoked(sorted(tp.partition for tp in parts))
        finally:
            consumer.unassign()
            self._assigned = set()

    # --- Consumer -----------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        self._listener = listener
        self._c.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                          on_lost=self._on_revoke)  # fmt: skip

    def poll(self, max_records: int, timeout_s: float) -> list[Fetched]:
        msgs = self._c.consume(num_messages=max_records, timeout=timeout_s)
        self._errors.check()
        if not msgs:
            return []
        out: dict[int, Fetched] = {}
        part = None
        f: Fetched | None = None
        for m in msgs:
            if m.error() is not None:
                err = m.error()
                if err.code() in FATAL_CODES or err.fatal():
                    raise KafkaFailure(describe(err.str(), self.settings))
                log.warning("Kafka: %s", err.str())
                continue
            p = m.partition()
            if p != part:
                f = out.get(p)
                if f is None:
                    f = out[p] = Fetched(p, [], [], [])
                part = p
            assert f is not None
            f.offsets.append(m.offset())
            f.keys.append(m.key())
            f.values.append(m.value())
        if self._errors.down_since is not None:
            self._errors.up()
        return list(out.values())

    def assignment(self) -> set[int]:
        return set(self._assigned)

    def seek(self, partition: int, offset: int) -> None:
        if self._assigning is not None:
            self._assigning[partition] = offset
            return
        try:
            self._c.seek(TopicPartition(self.topic, partition, offset))
        except KafkaException as exc:
            log.warning("%s[%d]: seek to %d failed (%s); the lake refuses what it holds anyway",
                        self.topic, partition, offset, exc)  # fmt: skip

    def seek_to_beginning(self, partition: int) -> None:
        self.seek(partition, OFFSET_BEGINNING)

    def position(self, partition: int) -> int | None:
        try:
            off = self._c.position([TopicPartition(self.topic, partition)])[0].offset
        except KafkaException:
            return None
        return off if off >= 0 else None

    def commit(self, offsets: dict[int, int]) -> None:
        try:
            done = self._c.commit(offsets=[TopicPartition(self.topic, p, o) for p, o in offsets.items()],
                                  asynchronous=False)  # fmt: skip
        except KafkaException as exc:
            raise CommitFailed(str(exc.args[0] if exc.args else exc)) from None
        bad = [tp for tp in done or () if tp.error is not None]
        if bad:
            raise CommitFailed(f"{self.topic}[{bad[0].partition}]: {bad[0].error}")

    def partition_count(self) -> int:
        if time.monotonic() - self._partitions_at >= METADATA_EVERY_S:
            try:
                self._note_partitions(self._c.list_topics(self.topic, timeout=2.0))
            except KafkaException:
                pass  # keep the last count; the broker is away
        return self._partitions

    def watermarks(self, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        out = {}
        for p in partitions:
            try:
                low, high = self._c.get_watermark_offsets(TopicPartition(self.topic, p), timeout=2.0, cached=False)
            except KafkaException as exc:
                raise CommitFailed(str(exc)) from None
            out[p] = (low, high)
        return out

    def lag(self) -> dict[int, int]:
        out = {}
        for p in self._assigned:
            try:
                _, high = self._c.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
            except KafkaException:
                continue
            pos = self.position(p)
            if high >= 0 and pos is not None:
                out[p] = max(high - pos, 0)
        return out

    def rejoin(self) -> None:
        assert self._listener is not None
        self._c.unsubscribe()
        self.subscribe(self._listener)

    def close(self) -> None:
        try:
            self._c.close()  # a dynamic member leaves the group here
        except (KafkaException, RuntimeError):
            pass


class ConfluentProducer:
    """librdkafka's idempotent producer (acks=all). Thread-safe: each caller waits for its own
    records' delivery reports, serving the callbacks of whoever else is waiting too. Keyed
    records go where Java's default partitioner puts them (murmur2_random)."""

    name = "confluent"

    def __init__(self, settings: KafkaSettings, client_id: str, timeout_s: float = 10.0) -> None:
        self.settings = settings
        self._errors = _Errors(settings)
        self._p = _build(Producer, {
            **_common(settings, client_id, self._errors),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 2,  # concurrent requests share produce calls; a request waits at most this
            "partitioner": "murmur2_random",
            "message.max.bytes": 4 * 1024 * 1024,
            "message.timeout.ms": int(timeout_s * 1000),
            "request.timeout.ms": max(int(timeout_s * 500), 1000),
        }, settings)  # fmt: skip

    def send_batch(self, topic: str, records: Sequence[Record], timeout_s: float) -> None:
        if not records:
            return
        lock = threading.Lock()
        pending = [len(records)]
        errors: list[KafkaError] = []
        done = threading.Event()

        def report(err: KafkaError | None, _msg: Any) -> None:
            with lock:
                if err is not None:
                    errors.append(err)
                pending[0] -= 1
                if pending[0] == 0 or err is not None:
                    done.set()

        deadline = time.monotonic() + timeout_s
        produce = self._p.produce
        for k, v, h in records:
            while True:
                try:
                    produce(topic, value=v, key=k, headers=h, on_delivery=report)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"no acknowledgement within {timeout_s:g} s") from None
                    self._p.poll(0.05)
        while not done.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no acknowledgement within {timeout_s:g} s")
            self._p.poll(0.02)
            self._errors.check()
        if errors:
            err = errors[0]
            if err.code() in FATAL_CODES or err.fatal():
                raise KafkaFailure(describe(err.str(), self.settings))
            if err.code() == KafkaError._MSG_TIMED_OUT:
                raise TimeoutError(f"no acknowledgement within {timeout_s:g} s")
            raise TimeoutError(f"not acknowledged: {err.name()}")

    def close(self, timeout_s: float = 5.0) -> None:
        self._p.flush(timeout_s)


__all__ = ["ConfluentConsumer", "ConfluentProducer"]
