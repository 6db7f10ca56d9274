"""The Kafka source: a consumer-group member that lands its partitions in the lake exactly once.

Order of effects, which is the whole exactly-once argument (contract 2):

1. On every assignment, each partition is sought to what the lake holds + 1 (`Lake.next_offset`);
   the group's committed offset is only a hint. A partition the lake has never seen starts at
   the earliest retained offset.
2. Records are decoded and buffered per partition; a batch is cut by count, bytes or age.
3. `Pipeline.flush` makes the batch visible in the lake atomically, refusing any range the lake
   already holds (so a zombie member after a rebalance cannot double-write).
4. Only then are offsets committed to Kafka, explicitly, as `last + 1`. A failed commit is logged
   and retried with the next flush: the lake, not the group, is the truth.

On revocation the pending buffers of the revoked partitions are flushed first, so the member
that gets them next finds them in the lake.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from ingest.pipeline import Committed, Pipeline

log = logging.getLogger("spendlake.ingest")

UNASSIGNED_GRACE_S = 30.0  # > 2 x session timeout: long enough for a dead member to be evicted


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "llm-usage"
    group_id: str = "spendlake"
    client_id: str = "spendlake-ingest"
    security: tuple[tuple[str, str], ...] = ()  # extra kafka-python config (SASL/SSL)

    def consumer(self) -> KafkaConsumer:
        return KafkaConsumer(
            bootstrap_servers=self.bootstrap_servers.split(","),
            group_id=self.group_id,
            client_id=self.client_id,
            # Our defaults, not kafka-python's: the lake decides positions, we commit by hand.
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=10_000,
            # A fetch response is held as bytes and then as Python records (~2x): these caps
            # keep the consumer's memory bounded however fast the topic is.
            fetch_max_bytes=16 * 1024 * 1024,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=200,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=3_000,
            max_poll_interval_ms=300_000,
            # kafka-python otherwise re-reads metadata only every 5 min: a topic that was not yet
            # visible at subscribe time (just created) would leave us unassigned that long.
            metadata_max_age_ms=10_000,
            **dict(self.security),
        )


class _SeekFromLake(ConsumerRebalanceListener):
    def __init__(self, ingestor: KafkaIngestor) -> None:
        self.ingestor = ingestor

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.ingestor._on_revoked(revoked)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.ingestor._on_assigned(assigned)


class KafkaIngestor:
    """Runs the consume → flush → commit loop until stopped, idle, or failed."""

    def __init__(
        self,
        consumer: KafkaConsumer,
        topic: str,
        pipeline: Pipeline,
        *,
        exit_when_idle_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        progress: Callable[[Pipeline, float], None] | None = None,
    ) -> None:
        self.consumer = consumer
        self.topic = topic
        self.pipeline = pipeline
        self.exit_when_idle_s = exit_when_idle_s
        self.clock = clock
        self.progress = progress
        self.stop = threading.Event()
        self._uncommitted: dict[TopicPartition, int] = {}
        self._last_record = clock()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())

    def run(self) -> None:
        self.pipeline.lake.recover()
        self.consumer.subscribe([self.topic], listener=_SeekFromLake(self))
        self._last_record = self.clock()
        try:
            while not self.stop.is_set():
                # never take more than fits in the current batch, so batches keep their size
                room = max(1, self.pipeline.limits.max_records - self.pipeline.pending())
                polled = self.consumer.poll(timeout_ms=200, max_records=min(room, 10_000))
                if not polled and not self.consumer.assignment():
                    self.stop.wait(0.1)  # poll() returns at once while unassigned: don't spin
                for tp, records in polled.items():
                    add = self.pipeline.add
                    for r in records:
                        add(tp.topic, tp.topic, tp.partition, r.offset, r.key, r.value)
                    self._last_record = self.clock()
                if self.pipeline.should_flush():
                    self._flush()
                elif self._uncommitted:
                    self._commit()  # retry a commit that failed earlier (broker was away)
                if self.progress is not None:
                    self.progress(self.pipeline, self.clock())
                if self._idle():
                    log.info("no new record for %.0f s: stopping", self.exit_when_idle_s)
                    break
            self._flush()
        finally:
            self.consumer.close(autocommit=False)

    # --- internals -------------------------------------------------------------------------

    def _idle(self) -> bool:
        """Idle means: partitions assigned, and none of them gave a record for the idle time.
        Waiting to join the group (a killed member's session must expire first) is not idle —
        up to UNASSIGNED_GRACE_S more, after which an unassigned consumer gives up too."""
        if self.exit_when_idle_s is None:
            return False
        quiet = self.clock() - self._last_record
        if self.consumer.assignment():
            return quiet >= self.exit_when_idle_s
        if quiet >= self.exit_when_idle_s + UNASSIGNED_GRACE_S:
            log.warning("no partition of %s was assigned within %.0f s: stopping", self.topic, quiet)
            return True
        return False

    def _flush(self, only: set[tuple[str, int]] | None = None) -> None:
        for c in self.pipeline.flush(only):
            self._after_commit(c)
        self._commit()

    def _after_commit(self, c: Committed) -> None:
        tp = TopicPartition(self.topic, c.partition)
        if c.manifest is None:
            # The lake already held this range (another member wrote it): resume after it.
            nxt = self.pipeline.lake.next_offset(c.stream, c.partition)
            if nxt is not None and tp in self.consumer.assignment():
                self.consumer.seek(tp, nxt)
            return
        self._uncommitted[tp] = c.next_offset

    def _commit(self) -> None:
        if not self._uncommitted:
            return
        offsets = {tp: OffsetAndMetadata(off, "", -1) for tp, off in self._uncommitted.items()}
        try:
            self.consumer.commit(offsets)
            self._uncommitted.clear()
        except KafkaError as exc:  # includes CommitFailedError after a rebalance
            log.warning("offset commit failed (%s); the lake holds the data, will retry", exc)

    def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        keys = {(tp.topic, tp.partition) for tp in revoked}
        if keys:
            self._flush(keys)
        for tp in revoked:
            self._uncommitted.pop(tp, None)

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        lake = self.pipeline.lake
        self._last_record = self.clock()
        for tp in assigned:
            self.pipeline.drop(tp.topic, tp.partition)  # anything buffered predates this seek
            nxt = lake.next_offset(tp.topic, tp.partition)
            if nxt is None:
                self.consumer.seek_to_beginning(tp)
                log.info("%s[%d]: the lake holds nothing yet, starting at the earliest offset", tp.topic, tp.partition)
            else:
                self.consumer.seek(tp, nxt)
                log.info("%s[%d]: the lake holds up to %d, resuming at %d", tp.topic, tp.partition, nxt - 1, nxt)
