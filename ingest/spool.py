"""The local spool: records `spendlake serve` acknowledged over HTTP when it runs without Kafka.

It plays the part of one Kafka partition on local disk, so the lake's exactly-once rules apply
to it unchanged (contract 2): records get consecutive sequence numbers (their offsets), the
pipeline lands them as stream `spool-<id>` partition 0, and on start the reader seeks to what the
lake holds + 1. The rules this module keeps:

1. `append()` returns only after the records' bytes are written and fsynced: an acknowledged
   record survives SIGKILL and power loss.
2. A record is framed as length + CRC32C + bytes. A frame cut short by a crash (never
   acknowledged) is cut off at the next open; nothing after a bad frame is ever read.
3. Sequence numbers never repeat: the spool's id (a random name kept in `id`) makes a new spool
   directory a new stream, so it cannot collide with what an older spool landed.
4. Segments are deleted only once the lake holds every record in them (`release`).

Layout: `<dir>/id`, `<dir>/<first seq, 20 digits>.seg`. One process owns a spool (a lock file).
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import crc32c

from ingest.errors import PipelineFailure
from ingest.lake import _fsync_dir

log = logging.getLogger("spendlake.spool")

FRAME = struct.Struct("<II")  # payload length, CRC32C of the payload
SEGMENT_BYTES = 64 * 1024 * 1024
MAX_RECORD = 16 * 1024 * 1024


class Spool:
    """An append-only, fsynced log of records, read back in order by one reader."""

    def __init__(self, root: str | os.PathLike[str], segment_bytes: int = SEGMENT_BYTES) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self._lockfile = open(self.root / ".lock", "a+b")  # noqa: SIM115 (held for the process's life)
        try:
            fcntl.flock(self._lockfile.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PipelineFailure(f"the spool {self.root} is in use by another spendlake serve") from None
        self.stream = f"spool-{self._id()}"
        self._cond = threading.Condition()
        self._queue: list[_Ticket] = []
        self._writing = False
        segs = self.segments()
        self._seg_first = segs[-1] if segs else 0
        count, good = _scan(self._path(self._seg_first)) if segs else (0, 0)
        self._fh = open(self._path(self._seg_first), "ab")  # noqa: SIM115
        if self._fh.tell() != good:
            log.warning("spool %s: cutting a torn record off the end of %s (it was never acknowledged)",
                        self.root, self._path(self._seg_first).name)  # fmt: skip
            self._fh.truncate(good)
            os.fsync(self._fh.fileno())
        self._fh.seek(good)
        self._seg_size = good
        self._next = self._seg_first + count  # the next record's sequence number
        _fsync_dir(self.root)

    def _id(self) -> str:
        path = self.root / "id"
        if not path.exists():
            tmp = self.root / f".id.{os.getpid()}.tmp"
            tmp.write_text(uuid.uuid4().hex[:12] + "\n")
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            _fsync_dir(self.root)
        return path.read_text().strip()

    def _path(self, first: int) -> Path:
        return self.root / f"{first:020d}.seg"

    def segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.root.glob("*.seg"))

    @property
    def next_seq(self) -> int:
        """The sequence number the next appended record gets (= records durable so far)."""
        with self._cond:
            return self._next

    def append(self, records: list[bytes]) -> None:
        """Write and fsync `records`; returns once they are durable. Raises OSError when the disk
        refuses (the caller answers 503: nothing of these records was acknowledged).

        Group commit: concurrent appends queue their frames; whoever finds no write under way
        writes and fsyncs everything queued at once, outside the lock, and wakes the others. A
        request never waits for more than the write in progress plus its own."""
        if not records:
            raise ValueError("append() needs at least one record")
        ticket = _Ticket(b"".join(FRAME.pack(len(r), crc32c.crc32c(r)) + r for r in records), len(records))
        with self._cond:
            self._queue.append(ticket)
            while not ticket.done:
                if self._writing:
                    self._cond.wait()
                    continue
                self._write_queued()
        if ticket.error is not None:
            raise ticket.error

    def _write_queued(self) -> None:
        """Called with the lock held and no write under way; releases it while writing."""
        batch, self._queue = self._queue, []
        data = b"".join(t.frames for t in batch)
        if self._seg_size and self._seg_size + len(data) > self.segment_bytes:
            self._roll()
        self._writing = True
        self._cond.release()
        error: OSError | None = None
        try:
            self._fh.write(data)
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            error = exc
            try:
                self._fh.truncate(self._seg_size)  # a partial write must never be read back
                self._fh.seek(self._seg_size)
            except OSError:
                pass
        finally:
            self._cond.acquire()
            self._writing = False
        if error is None:
            self._seg_size += len(data)
            self._next += sum(t.count for t in batch)
        for t in batch:
            t.done, t.error = True, error
        self._cond.notify_all()

    def _roll(self) -> None:
        self._fh.close()
        self._seg_first, self._seg_size = self._next, 0
        self._fh = open(self._path(self._seg_first), "ab")  # noqa: SIM115
        _fsync_dir(self.root)

    def wait(self, seq: int, timeout: float) -> bool:
        """Block until record `seq` exists (or `timeout`); True when it does."""
        with self._cond:
            return self._cond.wait_for(lambda: self._next > seq, timeout)

    def release(self, upto: int) -> None:
        """The lake holds every record below `upto`: delete the segments wholly below it."""
        with self._cond:
            current = self._seg_first
        segs = self.segments()
        for first, nxt in zip(segs, segs[1:] + [None]):
            if first == current or nxt is None or nxt > upto:
                break
            self._path(first).unlink(missing_ok=True)

    def reader(self, start: int) -> SpoolReader:
        return SpoolReader(self, start)

    def close(self) -> None:
        with self._cond:
            self._fh.close()
        self._lockfile.close()


@dataclass
class _Ticket:
    """One append waiting to be made durable."""

    frames: bytes
    count: int
    done: bool = False
    error: OSError | None = None


class SpoolReader:
    """Reads records from `start` on, in order; only what `append` has made durable."""

    def __init__(self, spool: Spool, start: int) -> None:
        self.spool = spool
        segs = spool.segments()
        first = max([s for s in segs if s <= start], default=segs[0] if segs else 0)
        self.next = max(start, first)
        self._seg = first
        self._pos = 0
        self._skip = self.next - first  # records of this segment below `start`

    def read(self, max_records: int = 10_000) -> list[tuple[int, bytes]]:
        """Up to `max_records` (sequence number, record) pairs; [] when none is durable yet."""
        limit = self.spool.next_seq
        out: list[tuple[int, bytes]] = []
        while self.next < limit and len(out) < max_records:
            path = self.spool._path(self._seg)
            with open(path, "rb") as fh:
                fh.seek(self._pos)
                while self.next < limit and len(out) < max_records:
                    head = fh.read(FRAME.size)
                    if len(head) < FRAME.size:
                        break
                    size, crc = FRAME.unpack(head)
                    body = fh.read(size)
                    if len(body) != size or crc32c.crc32c(body) != crc:
                        raise PipelineFailure(f"spool {path}: a damaged record at byte {self._pos} (record {self.next})")
                    self._pos += FRAME.size + size
                    if self._skip:
                        self._skip -= 1
                        continue
                    out.append((self.next, body))
                    self.next += 1
            if self.next < limit and len(out) < max_records:  # this segment is done: the next one
                later = [s for s in self.spool.segments() if s > self._seg]
                if not later:
                    break
                self._seg, self._pos, self._skip = later[0], 0, 0
        return out


def _scan(path: Path) -> tuple[int, int]:
    """(records, bytes) of the intact frames at the start of a segment."""
    count = good = 0
    with open(path, "rb") as fh:
        while True:
            head = fh.read(FRAME.size)
            if len(head) < FRAME.size:
                break
            size, crc = FRAME.unpack(head)
            if size > MAX_RECORD:
                break
            body = fh.read(size)
            if len(body) != size or crc32c.crc32c(body) != crc:
                break
            count += 1
            good += FRAME.size + size
    return count, good


__all__ = ["Spool", "SpoolReader"]
