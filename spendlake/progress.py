"""What `spendlake ingest` (and the demo) say on stderr while and after they land events."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any


class Progress:
    """A progress callback for the ingest sources (``progress(pipeline, now)``): one status line
    every ``every_s`` seconds on stderr with the counts and the rate.

    The rate is events landed per second of **working** time, not of wall time, so that a consumer
    that idled 15 s before a batch arrived does not report a fraction of its real speed. The
    sources call this after every poll (Kafka, spool) or every flush (files), and working time is
    measured between consecutive calls: the interval from one call to the next counts as working
    when, at its start, the pipeline held buffered records (``pipeline.pending() > 0``) or a batch
    was being written (records had left the buffer, ``pending()`` fell, and no batch has landed
    since), or when a batch landed during it (``stats.batches`` or ``stats.conflicts`` moved).
    Every other interval is idle and not counted: a poll that returned nothing while nothing was
    buffered or being written, the wait before the first record, the group join. Working time is
    therefore the time from the call that first sees a batch's records buffered to the call that
    sees it landed, summed over batches (overlapping batches counted once), at the granularity of
    the calls (about one poll, ≤ 0.2 s for Kafka).

    The file source calls only after each flush, so all of its time counts (reading a slow stdin
    included). A batch that fills and leaves the buffer within a single poll (``--batch-records``
    at most one poll's worth) is seen only when it lands, so the time to write it counts only from
    the call before its landing. Records dropped at a rebalance look like a batch being written
    until the next batch lands: both err towards a lower rate, never a higher one.
    """

    def __init__(self, every_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self.started = clock()
        self.last = self.started  # the last status line
        self.working_s = 0.0
        self._sampled = self.started  # the last call
        self._held = 0  # records buffered at the last call
        self._landed = (0, 0)  # (batches, conflicts) at the last call
        self._writing = False  # records left the buffer and have not landed yet

    def __call__(self, pipeline: Any, now: float) -> None:
        held = pipeline.pending()
        s = pipeline.stats
        landed = (s.batches, s.conflicts)
        moved = landed != self._landed
        if self._held or self._writing or moved:
            self.working_s += max(0.0, now - self._sampled)
        self._writing = held < self._held or (self._writing and not moved)
        self._held, self._landed, self._sampled = held, landed, now
        if now - self.last < self.every_s:
            return
        self.last = now
        sys.stderr.write(self.line(pipeline) + "\n")

    def rate(self, events: int) -> float:
        """Events per second of working time (0 before any work)."""
        return events / self.working_s if self.working_s > 0 else 0.0

    def line(self, pipeline: Any) -> str:
        s = pipeline.stats
        return (
            f"spendlake: {s.events:,} events in {s.batches:,} batches ({self.rate(s.events):,.0f}/s over "
            f"{self.working_s:,.1f} s of work), {s.dead_letters:,} dead letters, "
            f"{s.unpriced:,} of these events unpriced"
        )


def summary(pipeline: Any, what: str) -> None:
    """The closing line of an ingest: the totals (the progress lines before it are samples)."""
    s = pipeline.stats
    sys.stderr.write(
        f"spendlake: done ({what}): {s.events:,} events landed in {s.batches:,} batches, "
        f"{s.dead_letters:,} dead letters, {s.unpriced:,} of these events unpriced (no price for their model: "
        "cost NULL, not $0; `spendlake pricing unpriced` lists them)"
        + (f", {s.conflicts} stale batches discarded" if s.conflicts else "")
        + f"; lake {pipeline.lake.root}"
        + _store_requests(pipeline.lake)
        + "\n"
    )


def _store_requests(lake: Any) -> str:
    """For an object-store lake: the requests made, by kind (what the store bills)."""
    store = getattr(lake, "store", None)
    if store is None:
        return ""
    kinds = ", ".join(f"{n:,} {k}" for k, n in sorted(store.requests.items()))
    return f" ({kinds or 'no'} requests to the store)"
