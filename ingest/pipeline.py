"""batch → decode → price → write Parquet: the part of ingest both sources share.

A source (Kafka or files) hands records to `Pipeline.add` with their position; `add` only keeps
the raw bytes, one buffer per (stream, partition). `flush()` turns each buffer into one lake
batch: decoded and validated as a batch (`fastdecode`), priced once, committed atomically by
`Lake.commit`. `flush()` returns the committed positions; only then may a source commit offsets.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from ingest.adapters import redact_bytes
from ingest.decode import MAX_RECORD_BYTES
from ingest.errors import LakeConflict
from ingest.fastdecode import BatchDecoder
from ingest.lake import Lake, Manifest
from ingest.otlp import DEFAULT_NAMES, AttributeNames
from ingest.schema import DEAD_LETTER_SCHEMA, LAKE_SCHEMA, TS
from pricing import Catalog, Override, price_table

log = logging.getLogger("spendlake.ingest")

DEAD_RAW_KEEP = 65_536  # an oversized record keeps its first 64 KiB as evidence
DEAD_LOG_PER_FLUSH = 20  # each dead letter is logged once; past this, a count per flush


@dataclass(frozen=True)
class BatchLimits:
    """When a micro-batch is cut: whichever comes first."""

    max_records: int = 50_000
    max_bytes: int = 32 * 1024 * 1024
    max_age_s: float = 1.0


@dataclass
class Stats:
    events: int = 0
    dead_letters: int = 0
    unpriced: int = 0
    batches: int = 0
    conflicts: int = 0


@dataclass
class _Buffer:
    stream: str
    topic: str  # the label stored in rows: Kafka topic or "file:<name>"
    partition: int
    values: list[bytes] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    first: int = -1
    last: int = -1


@dataclass
class _Prepared:
    """A batch decoded and priced, ready for the lake."""

    buf: _Buffer
    events: pa.Table
    dates: pa.Array | None
    dead: pa.Table | None
    dead_letters: list[tuple[int, bytes | None, bytes, str, str]]
    now: float


@dataclass(frozen=True)
class Committed:
    stream: str
    partition: int
    next_offset: int  # what a Kafka commit should say: last offset + 1
    manifest: Manifest | None  # None when the batch conflicted and was discarded


class Pipeline:
    """Buffers records per partition and writes them to the lake in batches."""

    def __init__(
        self,
        lake: Lake,
        catalog: Catalog,
        *,
        limits: BatchLimits = BatchLimits(),
        pricing_policy: str = "catalog_first",
        overrides: Sequence[Override] = (),
        clock: Callable[[], float] = time.time,
        on_dead_letter: Callable[[pa.Table], None] | None = None,
        enrich: Callable[[pa.Table], pa.Table] | None = None,
        on_written: Callable[[list[Committed]], None] | None = None,
        otlp_names: AttributeNames = DEFAULT_NAMES,
    ) -> None:
        """``enrich`` runs on each decoded batch before pricing (serve fills team and customer
        from the budget hierarchy there); ``on_written`` after each write, on the writer's
        thread, once the batches are visible in the lake."""
        self.lake = lake
        self.catalog = catalog
        self.limits = limits
        self.pricing_policy = pricing_policy
        self.overrides = tuple(overrides)
        self.clock = clock
        self.on_dead_letter = on_dead_letter
        self.enrich = enrich
        self.on_written = on_written
        self.stats = Stats()
        self._buffers: dict[tuple[str, int], _Buffer] = {}
        self._records = 0
        self._bytes = 0
        self._opened_at: float | None = None
        self._decoder = BatchDecoder(otlp_names)

    # --- intake ----------------------------------------------------------------------------

    def add(
        self, stream: str, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
    ) -> None:
        """One record at its position. Never raises for bad data: that becomes a dead letter at
        the flush. Kept cheap on purpose: it runs once per record."""
        buf = self._buffers.get((stream, partition))
        if buf is None:
            buf = self._buffers[(stream, partition)] = _Buffer(stream, topic, partition)
        if buf.first < 0:
            buf.first = offset
        buf.last = offset
        raw = value if value is not None else b""
        buf.values.append(raw)
        buf.offsets.append(offset)
        buf.keys.append(key)
        self._records += 1
        self._bytes += len(raw)
        if self._opened_at is None:
            self._opened_at = self.clock()

    def add_many(self, stream: str, topic: str, partition: int, offsets: list[int], keys: list[bytes | None],
                 values: list[bytes | None]) -> None:  # fmt: skip
        """Records of one partition in offset order, as a client's batch hands them over: the
        same as `add` for each, without a Python call per record."""
        if not offsets:
            return
        buf = self._buffers.get((stream, partition))
        if buf is None:
            buf = self._buffers[(stream, partition)] = _Buffer(stream, topic, partition)
        if buf.first < 0:
            buf.first = offsets[0]
        buf.last = offsets[-1]
        if None in values:
            values = [b"" if v is None else v for v in values]
        buf.values.extend(values)  # type: ignore[arg-type]
        buf.offsets.extend(offsets)
        buf.keys.extend(keys)
        self._records += len(offsets)
        self._bytes += sum(map(len, values))  # type: ignore[arg-type]
        if self._opened_at is None:
            self._opened_at = self.clock()

    def should_flush(self) -> bool:
        if not self._records:
            return False
        lim = self.limits
        return (
            self._records >= lim.max_records
            or self._bytes >= lim.max_bytes
            or self.clock() - (self._opened_at or 0.0) >= lim.max_age_s
        )

    def pending(self) -> int:
        return self._records

    def drop(self, stream: str, partition: int) -> None:
        """Forget what is buffered for a partition (it was revoked and not flushed)."""
        if self._buffers.pop((stream, partition), None) is not None:
            self._recount()

    # --- output ----------------------------------------------------------------------------

    def flush(self, only: set[tuple[str, int]] | None = None) -> list[Committed]:
        """Write every buffered partition (or just `only`) to the lake, one batch each."""
        return self.write(self.detach(only))

    def detach(self, only: set[tuple[str, int]] | None = None) -> list[_Buffer]:
        """Take the buffers out (all, or just `only`), so that intake can go on into new ones
        while they are written — possibly on another thread (see consumer.py)."""
        keys = [k for k in self._buffers if only is None or k in only]
        taken = [self._buffers.pop(k) for k in keys]
        self._recount()
        return taken

    def _recount(self) -> None:
        """The batch-cut counters after buffers left (rare: a flush of some, a revocation)."""
        if len(self._buffers) == 0:
            self._records, self._bytes, self._opened_at = 0, 0, None
            return
        self._records = sum(len(b.values) for b in self._buffers.values())
        self._bytes = sum(len(v) for b in self._buffers.values() for v in b.values)

    def write(self, buffers: list[_Buffer]) -> list[Committed]:
        """Decode, price and commit detached buffers, one lake batch each. Touches only the
        buffers given, the lake and the counters: safe to run beside `add` on another thread,
        one `write` at a time."""
        return self.commit(self.prepare(buffers))

    def prepare(self, buffers: list[_Buffer]) -> list[_Prepared]:
        """The first half of `write`: decode, validate and price (mostly Python and Arrow
        compute). One `prepare` at a time (the decoder learns from the chunks it sees)."""
        now = self.clock()
        out = []
        for buf in buffers:
            decoded, rows_at, bad = self._decoder.decode(buf.values)
            events, dates = self._event_table(buf, decoded, rows_at, now)
            dead_letters = [(buf.offsets[i], buf.keys[i], buf.values[i] if e.evidence is None else e.evidence,
                             e.field, str(e)) for i, e in bad]  # fmt: skip
            dead = self._dead_table(buf, dead_letters, now) if dead_letters else None
            out.append(_Prepared(buf, events, dates, dead, dead_letters, now))
        return out

    def commit(self, prepared: list[_Prepared]) -> list[Committed]:
        """The second half of `write`: Parquet, fsync, the manifest (mostly outside the GIL), in
        the order given. One `commit` at a time; it may run beside the next batch's `prepare`
        (consumer.py does), since it touches only its own batches, the lake and the counters."""
        done: list[Committed] = []
        logged = 0
        for p in prepared:
            buf, events, dead, dead_letters = p.buf, p.events, p.dead, p.dead_letters
            stream, partition = buf.stream, buf.partition
            try:
                manifest = self.lake.commit(
                    stream, partition, buf.first, buf.last, events, p.dates, dead,
                    _utc_date(p.now),
                )  # fmt: skip
            except LakeConflict as exc:
                log.warning("%s", exc)
                self.stats.conflicts += 1
                done.append(Committed(stream, partition, buf.last + 1, None))
                continue
            self.stats.batches += 1
            self.stats.events += events.num_rows
            self.stats.unpriced += pc.sum(pc.equal(events["cost_source"], "unpriced")).as_py() or 0
            self.stats.dead_letters += len(dead_letters)
            for offset, _, _, _, error in dead_letters:
                if logged < DEAD_LOG_PER_FLUSH:
                    log.warning("dead letter %s[%d]@%d: %s", buf.topic, partition, offset, error)
                logged += 1
            if dead is not None and self.on_dead_letter is not None:
                self.on_dead_letter(dead)
            done.append(Committed(stream, partition, buf.last + 1, manifest))
        if logged > DEAD_LOG_PER_FLUSH:
            log.warning("... and %d more dead letters in this flush", logged - DEAD_LOG_PER_FLUSH)
        prepared.clear()  # the batches' buffers die here, before the collection below
        if not gc.isenabled():
            gc.collect()  # the process runs with automatic GC off (see cli); buffers just died
        if self.on_written is not None and done:
            self.on_written(done)
        return done

    def _event_table(
        self, buf: _Buffer, events: pa.Table, rows_at: list[int], now: float
    ) -> tuple[pa.Table, pa.Array | None]:
        n = events.num_rows
        if not n:
            return LAKE_SCHEMA.empty_table(), None
        if self.enrich is not None:
            events = self.enrich(events)
        costs = price_table(events, self.catalog, policy=self.pricing_policy, overrides=self.overrides)
        # each row's own offset: dead letters leave gaps, an OTLP record's rows repeat its offset
        offsets = pa.array(buf.offsets, pa.int64()).take(pa.array(rows_at, pa.int64()))
        source = [
            pa.repeat(pa.scalar(buf.topic, pa.string()), n),
            pa.repeat(pa.scalar(buf.partition, pa.int32()), n),
            offsets,
            pa.repeat(pa.scalar(int(now * 1000), TS), n),
        ]
        table = pa.Table.from_arrays(events.columns + costs.columns + source, schema=LAKE_SCHEMA)
        dates = pc.strftime(events["timestamp"], format="%Y-%m-%d")
        return table, dates

    def _dead_table(self, buf: _Buffer, dead: list[tuple[int, bytes | None, bytes, str, str]], now: float) -> pa.Table:
        return pa.Table.from_pydict(
            {
                "source_topic": [buf.topic] * len(dead),
                "source_partition": [buf.partition] * len(dead),
                "source_offset": [d[0] for d in dead],
                "key": [d[1] for d in dead],
                "raw": [_evidence(d[2]) for d in dead],
                "raw_bytes": [len(d[2]) for d in dead],
                "field": [d[3] for d in dead],
                "error": [d[4] for d in dead],
                "failed_at": [int(now * 1000)] * len(dead),
            },
            schema=DEAD_LETTER_SCHEMA,
        )


def _evidence(raw: bytes) -> bytes:
    """What a dead letter keeps of the record: its bytes, minus prompt and response text."""
    if len(raw) > MAX_RECORD_BYTES:
        return raw[:DEAD_RAW_KEEP]
    return redact_bytes(raw)


def _utc_date(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch_s))


__all__ = ["BatchLimits", "Committed", "Pipeline", "Stats"]
