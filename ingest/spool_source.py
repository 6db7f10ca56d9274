"""The spool source: lands what the HTTP intake spooled, exactly once, like a Kafka partition.

Order of effects (the Kafka consumer's, with the spool as the partition):

1. On start the reader seeks to what the lake holds of stream `spool-<id>` + 1 (the lake is the
   truth; the spool keeps every record the lake does not hold yet).
2. Records are buffered and cut into batches by the pipeline's limits; `Pipeline.write` makes a
   batch visible atomically and refuses a range the lake already holds. As in the Kafka consumer,
   one batch is written on a writer thread while the next is read.
3. Only then are the spool segments the lake now holds deleted (`Spool.release`).

A SIGKILL anywhere leaves either records in the spool that the lake lacks (landed at the next
start) or records in both (skipped at the next start): never a loss, never a double.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from ingest.pipeline import Committed, Pipeline
from ingest.spool import Spool

log = logging.getLogger("spendlake.ingest")

READ_RECORDS = 10_000


class SpoolIngestor:
    """Runs the read → flush → release loop until stopped or idle."""

    def __init__(
        self,
        spool: Spool,
        pipeline: Pipeline,
        *,
        exit_when_idle_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        progress: Callable[[Pipeline, float], None] | None = None,
    ) -> None:
        self.spool = spool
        self.pipeline = pipeline
        self.exit_when_idle_s = exit_when_idle_s
        self.clock = clock
        self.progress = progress
        self.stop = threading.Event()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lake-writer")
        self._inflight: Future[list[Committed]] | None = None

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())

    def run(self) -> None:
        lake, stream = self.pipeline.lake, self.spool.stream
        lake.recover()
        held = lake.next_offset(stream, 0)
        start = held if held is not None else 0
        if held is not None:
            self.spool.release(held)
        reader = self.spool.reader(start)
        log.info("spool %s: landing from record %d (%d spooled so far)", self.spool.root, reader.next,
                 self.spool.next_seq)  # fmt: skip
        last_record = self.clock()
        add = self.pipeline.add
        while not self.stop.is_set():
            got = reader.read(min(READ_RECORDS, max(1, self.pipeline.limits.max_records - self.pipeline.pending())))
            for seq, value in got:
                add(stream, stream, 0, seq, None, value)
            if got:
                last_record = self.clock()
            if self._inflight is not None and self._inflight.done():
                self._finish()
            if self.pipeline.should_flush():
                self._flush_async()
            if self.progress is not None:
                self.progress(self.pipeline, self.clock())
            if not got:
                if self.exit_when_idle_s is not None and self.clock() - last_record >= self.exit_when_idle_s:
                    log.info("no new record for %.0f s: stopping", self.exit_when_idle_s)
                    break
                # wake at once for a new record; otherwise in time to cut a batch by age
                self.spool.wait(reader.next, 0.05 if self.pipeline.pending() or self._inflight else 0.2)
        self._flush_async()
        self._finish()
        self._writer.shutdown(wait=True)

    def _flush_async(self) -> None:
        """Hand the buffered batch to the writer thread, after the one before it is visible
        (one batch in flight: that wait is the backpressure), and go on reading meanwhile."""
        self._finish()
        buffers = self.pipeline.detach()
        if buffers:
            self._inflight = self._writer.submit(self.pipeline.write, buffers)

    def _finish(self) -> None:
        """Wait for the batch in flight; the spool keeps only what the lake does not hold yet."""
        if self._inflight is None:
            return
        done, self._inflight = self._inflight.result(), None
        if done:
            self.spool.release(max(c.next_offset for c in done))


__all__ = ["SpoolIngestor"]
