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

Writing overlaps polling, in two stages: a full batch is decoded and priced on one thread
(`Pipeline.prepare`) while the batch before it is written to the lake on another
(`Pipeline.commit`: Parquet, fsync, manifest, mostly outside the GIL), and this thread goes on
fetching the next. At most two batches are with the writers; before handing over a third, we
wait for the oldest — that wait is the backpressure. Results are acted on oldest first, so
offsets are committed in order. All Kafka calls (poll, seek, commit) stay on this thread. A
batch whose range the lake already holds (another member wrote it) is discarded and the
partition sought past it; a batch after it that was already in flight is refused the same way
if its range is held too, or lands if it directly follows what is held — never twice.

On revocation the in-flight batches and the pending buffers of the revoked partitions are written
first, so the member that gets them next finds them in the lake.

Kafka is reached only through `ingest.clients.Consumer` (kafka-python or confluent-kafka), so
this logic is written once for both.

`--exit-when-idle N` means caught up: idle time counts only while every assigned partition's
position is at the broker's high watermark, checked with the broker (so an outage, where the
check fails, is never idleness).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from ingest.clients import CommitFailed, Consumer, KafkaSettings
from ingest.pipeline import Committed, Pipeline

log = logging.getLogger("spendlake.ingest")

MAX_POLL_RECORDS = 10_000
UNASSIGNED_GRACE_S = 45.0  # > 2 x session timeout: long enough for a dead member to be evicted
SETTLE_S = 15.0  # session timeout + a heartbeat + margin: a dead member's partitions move by then
REJOIN_AFTER_S = 15.0  # > session timeout: an empty assignment this long is kafka-python's race
CAUGHT_UP_EVERY_S = 0.5  # how often a quiet consumer asks the broker where the partitions end
MAX_INFLIGHT = 2  # batches with the writers: one being decoded and priced, one being written


class KafkaIngestor:
    """Runs the consume → flush → commit loop until stopped, idle, or failed."""

    def __init__(
        self,
        consumer: Consumer,
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
        self._uncommitted: dict[int, int] = {}
        self._next: dict[int, int | None] = {}
        self._last_record = self._unassigned_since = clock()
        self._caught_up_since: float | None = None
        self._checked_at = -1e9
        self._unreachable = False
        self._ever_assigned = False
        self._assigned_at = clock()
        self._rebalancing = False
        self._rejoin_after = REJOIN_AFTER_S
        self._preparer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lake-prepare")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lake-writer")
        self._inflight: deque[Future[list[Committed]]] = deque()  # oldest first

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())

    def run(self) -> bool:
        """Consume until stopped or idle. Returns False when the group never assigned us a
        partition (the caller reports that as a failure: nothing was read)."""
        self.pipeline.lake.recover()
        self.consumer.subscribe(self)
        self._last_record = self._unassigned_since = self.clock()
        topic, add_many = self.topic, self.pipeline.add_many
        try:
            while not self.stop.is_set():
                # never take more than fits in the current batch, so batches keep their size
                room = max(1, self.pipeline.limits.max_records - self.pipeline.pending())
                polled = self.consumer.poll(min(room, MAX_POLL_RECORDS), 0.2)
                if not polled and not self.consumer.assignment():
                    self._while_unassigned()
                for f in polled:
                    add_many(topic, topic, f.partition, f.offsets, f.keys, f.values)
                    self._next[f.partition] = f.offsets[-1] + 1
                if polled:
                    self._last_record = self.clock()
                    self._caught_up_since = None
                while self._inflight and self._inflight[0].done():
                    self._wait_one()
                if self.pipeline.should_flush():
                    self._flush_async()
                elif self._uncommitted:
                    self._commit()  # retry a commit that failed earlier (broker was away)
                if self.progress is not None:
                    self.progress(self.pipeline, self.clock())
                if self._idle():
                    log.info("caught up with every partition for %.0f s: stopping", self.exit_when_idle_s)
                    break
            self._flush()
            self._final_commit()
        finally:
            self._preparer.shutdown(wait=True)
            self._writer.shutdown(wait=True)
            self.consumer.close()
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
        if self.consumer.partition_count():
            log.warning("%s has partitions but none was assigned to us: rejoining the group", self.topic)
            self.consumer.rejoin()

    def _caught_up(self, assigned: set[int]) -> bool:
        """Every assigned partition's next offset is its high watermark, per the broker now.
        Asked at most every CAUGHT_UP_EVERY_S; a broker that does not answer is not caught up."""
        now = self.clock()
        if now - self._checked_at < CAUGHT_UP_EVERY_S:
            return self._caught_up_since is not None
        self._checked_at = now
        try:
            ends = self.consumer.watermarks(sorted(assigned))
        except CommitFailed as exc:
            self._caught_up_since = None
            if not self._unreachable:
                log.warning("Kafka does not answer (%s); waiting for it", exc)
                self._unreachable = True
            return False
        if self._unreachable:
            log.info("Kafka answers again")
            self._unreachable = False
        behind = [p for p, (low, high) in ends.items() if max(self._position(p), low) < high]
        if behind or self.pipeline.pending() or self._inflight:
            self._caught_up_since = None
            return False
        if self._caught_up_since is None:
            self._caught_up_since = now
        return True

    def _position(self, p: int) -> int:
        """The next offset this member will read of `p`: what it has seen (the lake's next
        offset at assignment, then each fetched record), or the client's own position (which
        also steps over transaction markers), whichever is further."""
        return max(self._next.get(p) or 0, self.consumer.position(p) or 0)

    def _idle(self) -> bool:
        """Idle means caught up: partitions assigned, each at its high watermark per the broker,
        for the idle time. Waiting to join the group (a killed member's session must expire
        first) is not idle — up to UNASSIGNED_GRACE_S more, after which an unassigned consumer
        gives up too."""
        if self.exit_when_idle_s is None:
            return False
        quiet = self.clock() - self._last_record
        assigned = self.consumer.assignment()
        if self._rebalancing:
            # Between revocation and the new assignment no record can arrive, and assignment()
            # still shows the old set: that is waiting, not idleness.
            assigned = set()
        if assigned:
            if quiet < CAUGHT_UP_EVERY_S or not self._caught_up(assigned):
                return False
            assert self._caught_up_since is not None
            if self.clock() - self._caught_up_since < self.exit_when_idle_s:
                return False
            # Holding only some partitions, others may sit with a member that died before we
            # joined; the group hands them over once its session expires. Stay that long.
            partial = len(assigned) < self.consumer.partition_count()
            return not partial or self.clock() - self._assigned_at >= SETTLE_S
        if quiet >= self.exit_when_idle_s + UNASSIGNED_GRACE_S:
            log.warning("no partition of %s was assigned within %.0f s: stopping", self.topic, quiet)
            return True
        return False

    def _flush_async(self) -> None:
        """Hand the buffered batch to the writers: one thread decodes and prices it while the
        other writes the previous one to the lake (Parquet, fsync, manifest: mostly outside the
        GIL), in order. At most MAX_INFLIGHT batches are with them; past that, this thread
        waits for the oldest — that wait is the backpressure."""
        while len(self._inflight) >= MAX_INFLIGHT:
            self._wait_one()
        prepared = self._preparer.submit(self.pipeline.prepare, self.pipeline.detach())
        self._inflight.append(self._writer.submit(lambda: self.pipeline.commit(prepared.result())))

    def _wait_one(self) -> None:
        """Act on the oldest in-flight batch's result, on this side of the writers. A writer
        failure (the lake is not writable) is re-raised here and stops ingest."""
        for c in self._inflight.popleft().result():
            self._after_commit(c)

    def _wait(self, commit: bool = True) -> None:
        """Wait for every in-flight batch, oldest first, then commit their offsets."""
        while self._inflight:
            self._wait_one()
        if commit:
            self._commit()

    def _flush(self, only: set[tuple[str, int]] | None = None) -> None:
        """Write synchronously: the in-flight batch, then what is buffered (or just `only`)."""
        self._wait()
        for c in self.pipeline.flush(only):
            self._after_commit(c)
        self._commit()

    def _after_commit(self, c: Committed) -> None:
        if c.manifest is None:
            # The lake already held this range (another member wrote it): resume after it, and
            # forget what was buffered behind the stale batch.
            self.pipeline.drop(c.stream, c.partition)
            nxt = self.pipeline.lake.next_offset(c.stream, c.partition)
            if nxt is not None and c.partition in self.consumer.assignment():
                self.consumer.seek(c.partition, nxt)
                self._next[c.partition] = nxt
            return
        self._uncommitted[c.partition] = c.next_offset

    def _commit(self) -> None:
        if not self._uncommitted:
            return
        try:
            self.consumer.commit(dict(self._uncommitted))
            self._uncommitted.clear()
        except CommitFailed as exc:  # includes a commit refused after a rebalance
            log.warning("offset commit failed (%s); the lake holds the data, will retry", exc)

    def _final_commit(self, attempts: int = 5) -> None:
        """Before leaving, get the group's offsets to what the lake holds. A commit refused
        during a rebalance is retried after letting the rebalance finish (poll); whatever a
        poll returns now is not buffered, so nothing is committed that is not in the lake."""
        for _ in range(attempts):
            if not self._uncommitted:
                return
            self.consumer.poll(1, 0.2)
            self._commit()

    # --- the clients' rebalance callbacks ---------------------------------------------------

    def on_revoked(self, revoked: list[int]) -> None:
        """Land what we hold of the revoked partitions before the group moves them on.

        kafka-python 3 calls this on its IO thread, where blocking Kafka calls (commit) are
        refused; writing the lake is allowed, and it is all that matters: the next owner seeks
        from the lake. Offsets of revoked partitions are not committed here — the next owner
        commits them after its first batch."""
        self._rebalancing = True
        self._last_record = self.clock()  # idle time restarts after the rebalance
        self._caught_up_since = None
        self._wait(commit=False)
        keys = {(self.topic, p) for p in revoked}
        if keys:
            for c in self.pipeline.flush(keys):
                self._after_commit(c)
        for p in revoked:
            self._uncommitted.pop(p, None)

    def on_assigned(self, assigned: list[int]) -> None:
        lake, topic = self.pipeline.lake, self.topic
        self._last_record = self._unassigned_since = self.clock()
        self._caught_up_since = None
        self._ever_assigned = self._ever_assigned or bool(assigned)
        self._assigned_at = self.clock()
        self._rebalancing = False
        for p in assigned:
            self.pipeline.drop(topic, p)  # anything buffered predates this seek
            nxt = self._next[p] = lake.next_offset(topic, p)
            if nxt is None:
                self.consumer.seek_to_beginning(p)
                log.info("%s[%d]: the lake holds nothing yet, starting at the earliest offset", topic, p)
            else:
                self.consumer.seek(p, nxt)
                # Let the group's offset catch up with the lake (it may lag after a revocation,
                # which cannot commit); sent from the poll loop, not from this callback.
                self._uncommitted[p] = nxt
                log.info("%s[%d]: the lake holds up to %d, resuming at %d", topic, p, nxt - 1, nxt)


__all__ = ["KafkaIngestor", "KafkaSettings"]
