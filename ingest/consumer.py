"""The Kafka source: a consumer-group member that lands its partitions in the lake exactly once.

Order of effects, which is the whole exactly-once argument (contract 2):

1. On every assignment, each partition is sought to what the lake holds + 1 (`Lake.next_offset`);
   the group's committed offset is only a hint. A partition the lake has never seen starts at
   the earliest retained offset.
2. Records are buffered per partition as raw bytes; a batch is cut by count, bytes or age, and
   decoded, priced and written as a whole.
3. `Pipeline.write` makes the batch visible in the lake atomically, refusing any range the lake
   already holds (so a zombie member after a rebalance cannot double-write).
4. Only then are offsets committed to Kafka, explicitly, as `last + 1`. A failed commit is logged
   and retried with the next flush: the lake, not the group, is the truth.

Writing overlaps polling: a full batch is handed to one writer thread (Arrow parsing, pricing
and Parquet compression mostly run outside the GIL) while this thread goes on fetching the next
one. At most one batch is in flight: before handing over the next, we wait for the last — that
wait is the backpressure. All Kafka calls (poll, seek, commit) stay on this thread.

On revocation the in-flight batch and the pending buffers of the revoked partitions are written
first, so the member that gets them next finds them in the lake.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from ingest.pipeline import Committed, Pipeline

log = logging.getLogger("spendlake.ingest")

# A fetch response is held as bytes and then as Python records (~2x): these caps keep the
# consumer's memory bounded however fast the topic is. bench/ingest.py's bare loop uses them too.
FETCH = {
    "max_poll_records": 10_000,
    "fetch_max_bytes": 16 * 1024 * 1024,
    "max_partition_fetch_bytes": 4 * 1024 * 1024,
    "fetch_max_wait_ms": 200,
}
UNASSIGNED_GRACE_S = 45.0  # > 2 x session timeout: long enough for a dead member to be evicted
SETTLE_S = 15.0  # session timeout + a heartbeat + margin: a dead member's partitions move by then
REJOIN_AFTER_S = 15.0  # > session timeout: an empty assignment this long is kafka-python's race


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
            **FETCH,
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
        self._last_record = self._unassigned_since = clock()
        self._ever_assigned = False
        self._assigned_at = clock()
        self._rebalancing = False
        self._rejoin_after = REJOIN_AFTER_S
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lake-writer")
        self._inflight: Future[list[Committed]] | None = None

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())

    def run(self) -> bool:
        """Consume until stopped or idle. Returns False when the group never assigned us a
        partition (the caller reports that as a failure: nothing was read)."""
        self.pipeline.lake.recover()
        self.consumer.subscribe([self.topic], listener=_SeekFromLake(self))
        # Metadata before the first join (which happens in poll): otherwise kafka-python can
        # assign from metadata it has not seen yet and either get nothing (rarely never
        # rejoining: seen in CI and the bench) or rebalance again at its next metadata update.
        self.consumer.partitions_for_topic(self.topic)
        self._last_record = self._unassigned_since = self.clock()
        try:
            while not self.stop.is_set():
                # never take more than fits in the current batch, so batches keep their size
                room = max(1, self.pipeline.limits.max_records - self.pipeline.pending())
                polled = self.consumer.poll(timeout_ms=200, max_records=min(room, FETCH["max_poll_records"]))
                if not polled and not self.consumer.assignment():
                    self._while_unassigned()
                for tp, records in polled.items():
                    add = self.pipeline.add
                    for r in records:
                        add(tp.topic, tp.topic, tp.partition, r.offset, r.key, r.value)
                    self._last_record = self.clock()
                if self._inflight is not None and self._inflight.done():
                    self._wait()
                if self.pipeline.should_flush():
                    self._flush_async()
                elif self._uncommitted:
                    self._commit()  # retry a commit that failed earlier (broker was away)
                if self.progress is not None:
                    self.progress(self.pipeline, self.clock())
                if self._idle():
                    log.info("no new record for %.0f s: stopping", self.exit_when_idle_s)
                    break
            self._flush()
            self._final_commit()
        finally:
            self._writer.shutdown(wait=True)
            self.consumer.close(autocommit=False)
        return self._ever_assigned

    # --- internals -------------------------------------------------------------------------

    def _while_unassigned(self) -> None:
        """No partitions: don't spin (poll returns at once). If we never got any while the topic
        has partitions for longer than a dead member's eviction takes, rejoin, backing off (a
        group with more members than partitions legitimately leaves some with none)."""
        self.stop.wait(0.1)
        if self._ever_assigned or self.clock() - self._unassigned_since < self._rejoin_after:
            return
        self._unassigned_since = self.clock()
        self._rejoin_after = min(self._rejoin_after * 2, 300.0)
        if self.consumer.partitions_for_topic(self.topic):
            log.warning("%s has partitions but none was assigned to us: rejoining the group", self.topic)
            self.consumer.unsubscribe()
            self.consumer.subscribe([self.topic], listener=_SeekFromLake(self))

    def _idle(self) -> bool:
        """Idle means: partitions assigned, and none of them gave a record for the idle time.
        Waiting to join the group (a killed member's session must expire first) is not idle —
        up to UNASSIGNED_GRACE_S more, after which an unassigned consumer gives up too."""
        if self.exit_when_idle_s is None:
            return False
        quiet = self.clock() - self._last_record
        assigned = self.consumer.assignment()
        if self._rebalancing:
            # Between revocation and the new assignment no record can arrive, and assignment()
            # still shows the old set: that is waiting, not idleness.
            assigned = set()
        if assigned:
            if quiet < self.exit_when_idle_s:
                return False
            # Holding only some partitions, others may sit with a member that died before we
            # joined; the group hands them over once its session expires. Stay that long.
            partial = len(assigned) < len(self.consumer.partitions_for_topic(self.topic))
            return not partial or self.clock() - self._assigned_at >= SETTLE_S
        if quiet >= self.exit_when_idle_s + UNASSIGNED_GRACE_S:
            log.warning("no partition of %s was assigned within %.0f s: stopping", self.topic, quiet)
            return True
        return False

    def _flush_async(self) -> None:
        self._wait()  # backpressure: one batch in flight at most
        self._inflight = self._writer.submit(self.pipeline.write, self.pipeline.detach())

    def _wait(self, commit: bool = True) -> None:
        """Wait for the in-flight batch, then act on its result on this side of the writer.
        A writer failure (the lake is not writable) is re-raised here and stops ingest."""
        if self._inflight is None:
            return
        done, self._inflight = self._inflight.result(), None
        for c in done:
            self._after_commit(c)
        if commit:
            self._commit()

    def _flush(self, only: set[tuple[str, int]] | None = None) -> None:
        """Write synchronously: the in-flight batch, then what is buffered (or just `only`)."""
        self._wait()
        for c in self.pipeline.flush(only):
            self._after_commit(c)
        self._commit()

    def _after_commit(self, c: Committed) -> None:
        tp = TopicPartition(self.topic, c.partition)
        if c.manifest is None:
            # The lake already held this range (another member wrote it): resume after it, and
            # forget what was buffered behind the stale batch.
            self.pipeline.drop(c.stream, c.partition)
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

    def _final_commit(self, attempts: int = 5) -> None:
        """Before leaving, get the group's offsets to what the lake holds. A commit refused
        during a rebalance is retried after letting the rebalance finish (poll); whatever a
        poll returns now is not buffered, so nothing is committed that is not in the lake."""
        for _ in range(attempts):
            if not self._uncommitted:
                return
            self.consumer.poll(timeout_ms=200, max_records=1)
            self._commit()

    def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Land what we hold of the revoked partitions before the group moves them on.

        kafka-python 3 calls this on its IO thread, where blocking Kafka calls (commit) are
        refused; writing the lake is allowed, and it is all that matters: the next owner seeks
        from the lake. Offsets of revoked partitions are not committed here — the next owner
        commits them after its first batch."""
        self._rebalancing = True
        self._last_record = self.clock()  # idle time restarts after the rebalance
        self._wait(commit=False)
        keys = {(tp.topic, tp.partition) for tp in revoked}
        if keys:
            for c in self.pipeline.flush(keys):
                self._after_commit(c)
        for tp in revoked:
            self._uncommitted.pop(tp, None)

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        lake = self.pipeline.lake
        self._last_record = self._unassigned_since = self.clock()
        self._ever_assigned = self._ever_assigned or bool(assigned)
        self._assigned_at = self.clock()
        self._rebalancing = False
        for tp in assigned:
            self.pipeline.drop(tp.topic, tp.partition)  # anything buffered predates this seek
            nxt = lake.next_offset(tp.topic, tp.partition)
            if nxt is None:
                self.consumer.seek_to_beginning(tp)
                log.info("%s[%d]: the lake holds nothing yet, starting at the earliest offset", tp.topic, tp.partition)
            else:
                self.consumer.seek(tp, nxt)
                # Let the group's offset catch up with the lake (it may lag after a revocation,
                # which cannot commit); sent from the poll loop, not from this IO-thread callback.
                self._uncommitted[tp] = nxt
                log.info("%s[%d]: the lake holds up to %d, resuming at %d", tp.topic, tp.partition, nxt - 1, nxt)
