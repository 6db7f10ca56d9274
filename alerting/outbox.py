"""The alert outbox in the lake's DuckDB state (contract 6): recorded first, then sent.

Tables (beside the rollups in ``<lake>/_state/spendlake.duckdb``):

- ``alerts``: one row per alert key, ever. The key is the once-only identity (budget × period ×
  limit × threshold, an event id, a window). A rule's alert is inserted in the same transaction
  as the deliveries it routes to, so after a crash either both exist or neither.
- ``deliveries``: one row per (alert, channel): ``pending`` with its next attempt, ``delivered``
  with the receiver's status, or ``failed`` with the reason (a terminal 4xx, a missing secret, or
  still failing after ``give_up_after``).

Delivery: one worker thread per channel sends that channel's due rows in order, paced
(``min_interval``: Slack's one message a second per webhook). A transient failure (5xx, 429,
timeout, refused or dropped connection) pauses the channel with exponential backoff (1 s, 2 s,
4 s, ... up to ``retry_max_interval``) or for exactly the receiver's ``Retry-After``; the row keeps
its place, so order is kept and a dead receiver is not hammered once per alert. A row is marked
delivered right after the receiver's answer; a restart resumes every pending row. The one window
left is a crash between the receiver's 2xx and that commit (milliseconds): that message would be
sent again, which PagerDuty folds by ``dedup_key``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from alerting.config import Channel, Rules
from alerting.records import Alert, Delivered, TerminalError, TransientError

log = logging.getLogger("spendlake.alerts")

Sender = Callable[[Channel, Alert], Delivered]
BACKOFF_BASE_S = 1.0
RETRY_AFTER_CAP_S = 3600.0


def schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """CREATE TABLE IF NOT EXISTS alerts (
               key VARCHAR PRIMARY KEY, kind VARCHAR, severity VARCHAR, title VARCHAR, created_at TIMESTAMPTZ,
               subject VARCHAR, period_start TIMESTAMPTZ, max_limit DOUBLE, dedup_key VARCHAR, action VARCHAR,
               note VARCHAR, body VARCHAR)"""
    )
    # No index on deliveries: worker threads update their own channel's rows concurrently.
    con.execute("CREATE SEQUENCE IF NOT EXISTS delivery_seq")
    con.execute(
        """CREATE TABLE IF NOT EXISTS deliveries (
               id BIGINT DEFAULT nextval('delivery_seq'), alert_key VARCHAR, channel VARCHAR, state VARCHAR,
               attempts INTEGER, created_at TIMESTAMPTZ, next_attempt_at TIMESTAMPTZ, delivered_at TIMESTAMPTZ,
               status INTEGER, last_error VARCHAR)"""
    )


def known(con: duckdb.DuckDBPyConnection, keys: Sequence[str]) -> set[str]:
    """Which of these alert keys were recorded before."""
    if not keys:
        return set()
    return {k for (k,) in con.execute("SELECT key FROM alerts WHERE key IN (SELECT unnest(?::VARCHAR[]))",
                                       [list(keys)]).fetchall()}  # fmt: skip


@dataclass(frozen=True)
class Record:
    """An alert to record, the channels it goes to (empty: recorded, not sent — e.g. a lower
    threshold passed in the same step as a higher one) and the columns the rules query later."""

    alert: Alert
    channels: tuple[str, ...]
    subject: str | None = None
    period_start: datetime | None = None
    max_limit: float | None = None
    note: str | None = None


def record(con: duckdb.DuckDBPyConnection, records: Iterable[Record], now: datetime | None = None) -> list[Record]:
    """Insert alerts not recorded before, with their pending deliveries; returns the new ones.
    The caller owns the transaction (a rollup date's, or ``record_now``'s)."""
    todo = list(records)
    seen = known(con, [r.alert.key for r in todo])
    now = now or datetime.now(UTC)
    new = []
    for r in todo:
        if r.alert.key in seen:
            continue
        seen.add(r.alert.key)
        a = r.alert
        con.execute("INSERT INTO alerts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [a.key, a.kind, a.severity, a.title, a.created_at, r.subject, r.period_start, r.max_limit,
                     a.dedup_key, a.action, r.note, a.to_json()])  # fmt: skip
        for ch in r.channels:
            con.execute("INSERT INTO deliveries (alert_key, channel, state, attempts, created_at, next_attempt_at) "
                        "VALUES (?, ?, 'pending', 0, ?, ?)", [a.key, ch, now, now])  # fmt: skip
        new.append(r)
    return new


def record_now(con: duckdb.DuckDBPyConnection, records: Iterable[Record]) -> list[Record]:
    """``record`` in a transaction of its own."""
    con.execute("BEGIN TRANSACTION")
    try:
        new = record(con, records)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return new


def route(channels: Sequence[Channel], alert: Alert) -> tuple[str, ...]:
    """The channels whose kinds and min_severity take this alert."""
    return tuple(c.name for c in channels if c.wants(alert.kind, alert.severity))


def backoff_s(failures: int, cap_s: float, rng: random.Random | None = None) -> float:
    """1 s, 2 s, 4 s, ... up to ``cap_s``, with ±20% jitter so channels do not retry in step."""
    base = min(cap_s, BACKOFF_BASE_S * 2 ** max(failures - 1, 0))
    return base * (0.8 + 0.4 * (rng or random).random())


class Dispatcher:
    """One delivery worker thread per channel, each with a DuckDB cursor of its own."""

    def __init__(self, cursor: Callable[[], duckdb.DuckDBPyConnection], channels: Sequence[Channel], rules: Rules,
                 sender: Sender, clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.cursor = cursor
        self.channels = list(channels)
        self.rules = rules
        self.sender = sender
        self.clock = clock
        self._stop = threading.Event()
        self._wake = {c.name: threading.Event() for c in self.channels}
        self._threads: list[threading.Thread] = []
        self.changes = 0  # bumped on every state change (the publisher's cue)

    def start(self) -> None:
        for c in self.channels:
            t = threading.Thread(target=self._run, args=(c,), name=f"deliver-{c.name}", daemon=True)
            t.start()
            self._threads.append(t)

    def wake(self) -> None:
        for e in self._wake.values():
            e.set()

    def drain(self, timeout: float) -> int:
        """Give due deliveries up to ``timeout`` seconds to go out (at shutdown, so the alerts
        of the last flush are not left for the next start); returns how many are still due."""
        con = self.cursor()
        deadline = time.monotonic() + timeout
        self.wake()
        while True:
            due = con.execute("SELECT count(*) FROM deliveries WHERE state = 'pending' AND next_attempt_at <= ?",
                              [datetime.fromtimestamp(self.clock(), UTC)]).fetchall()[0][0]  # fmt: skip
            if not due or time.monotonic() >= deadline:
                con.close()
                return int(due)
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.wake()
        for t in self._threads:
            t.join(timeout)

    def _run(self, channel: Channel) -> None:
        """The worker loop; it never dies of an error (logged, then a second's pause)."""
        while not self._stop.is_set():
            try:
                self._loop(channel)
            except Exception:
                log.exception("channel %s: delivery worker error; continuing", channel.name)
                self._stop.wait(1.0)

    def _loop(self, channel: Channel) -> None:
        con = self.cursor()
        failures = 0  # consecutive transient failures of this channel
        paused_until = 0.0
        last_send = 0.0
        wake = self._wake[channel.name]
        while not self._stop.is_set():
            now = self.clock()
            wait = 1.0
            if now >= paused_until:
                try:
                    row = self._next_due(con, channel.name, now)
                except duckdb.Error:
                    log.exception("channel %s: reading the outbox failed", channel.name)
                    row = None
                if row is not None:
                    pace = last_send + channel.min_interval_s - now
                    if pace > 0:
                        self._stop.wait(pace)
                        continue
                    last_send = self.clock()
                    outcome = self._attempt(con, channel, row)
                    if outcome is None:
                        failures = 0
                        continue
                    failures += 1
                    paused_until = self.clock() + (outcome if outcome >= 0 else
                                                   backoff_s(failures, self.rules.retry_max_interval_s))  # fmt: skip
                    continue
                nxt = self._next_time(con, channel.name)
                wait = 1.0 if nxt is None else min(max(nxt - now, 0.01), 1.0)
            else:
                wait = min(paused_until - now, 1.0)
            wake.wait(wait)
            wake.clear()

    @staticmethod
    def _next_due(con: duckdb.DuckDBPyConnection, channel: str, now: float) -> tuple[Any, ...] | None:
        rows = con.execute(
            """SELECT d.id, d.attempts, d.created_at, a.body FROM deliveries d JOIN alerts a ON a.key = d.alert_key
               WHERE d.channel = ? AND d.state = 'pending' AND d.next_attempt_at <= ? ORDER BY d.id LIMIT 1""",
            [channel, datetime.fromtimestamp(now, UTC)],
        ).fetchall()
        return rows[0] if rows else None

    @staticmethod
    def _next_time(con: duckdb.DuckDBPyConnection, channel: str) -> float | None:
        got = con.execute("SELECT min(next_attempt_at) FROM deliveries WHERE channel = ? AND state = 'pending'",
                          [channel]).fetchall()[0][0]  # fmt: skip
        return None if got is None else got.timestamp()

    def _attempt(self, con: duckdb.DuckDBPyConnection, channel: Channel, row: tuple[Any, ...]) -> float | None:
        """Send one delivery and record the outcome. None: done (delivered or failed for good);
        otherwise the seconds to pause the channel (-1: use the backoff)."""
        did, attempts, created_at, body = row
        alert = Alert.from_json(body)
        attempts += 1
        try:
            got = self.sender(channel, alert)
        except TransientError as exc:
            now = self.clock()
            waited = now - created_at.timestamp()
            if waited >= self.rules.give_up_after_s:
                self._finish(con, did, attempts, "failed", None, f"gave up after {attempts} attempts: {exc.reason}")
                log.error("channel %s: %s failed for good after %d attempts: %s", channel.name, alert.key, attempts,
                          exc.reason)  # fmt: skip
                return None
            pause = (min(exc.retry_after, RETRY_AFTER_CAP_S) if exc.retry_after is not None
                     else backoff_s(attempts, self.rules.retry_max_interval_s))  # fmt: skip
            con.execute("UPDATE deliveries SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ?",
                        [attempts, datetime.fromtimestamp(now + pause, UTC), exc.reason, did])  # fmt: skip
            self.changes += 1
            log.warning("channel %s: %s not delivered (%s); retrying in %.1f s", channel.name, alert.kind,
                        exc.reason, pause)  # fmt: skip
            return pause if exc.retry_after is not None else -1.0
        except TerminalError as exc:
            self._finish(con, did, attempts, "failed", None, exc.reason)
            log.error("channel %s: %s refused for good: %s", channel.name, alert.kind, exc.reason)
            return None
        except Exception as exc:  # a bug in rendering: record it, do not loop on it
            reason = f"internal error: {type(exc).__name__}"
            self._finish(con, did, attempts, "failed", None, reason)
            log.exception("channel %s: %s could not be sent", channel.name, alert.key)
            return None
        self._finish(con, did, attempts, "delivered", got.status, None)
        log.info("channel %s: delivered %s %s", channel.name, alert.kind, alert.title)
        return None

    def _finish(self, con: duckdb.DuckDBPyConnection, did: int, attempts: int, state: str, status: int | None,
                error: str | None) -> None:  # fmt: skip
        now = datetime.fromtimestamp(self.clock(), UTC)
        for attempt in range(5):  # a message already sent must be recorded, or it goes out again
            try:
                con.execute("UPDATE deliveries SET state = ?, attempts = ?, delivered_at = ?, status = ?, "
                            "last_error = coalesce(?, last_error) WHERE id = ?",
                            [state, attempts, now if state == "delivered" else None, status, error, did])  # fmt: skip
                break
            except duckdb.Error:
                if attempt == 4:
                    raise
                time.sleep(0.05 * (attempt + 1))
        self.changes += 1


def resume_note(con: duckdb.DuckDBPyConnection) -> str | None:
    """A log line about pending deliveries found at start, or None."""
    n, oldest = con.execute("SELECT count(*), min(created_at) FROM deliveries WHERE state = 'pending'").fetchall()[0]
    if not n:
        return None
    age = datetime.now(UTC) - oldest
    return f"resuming {n} pending alert deliveries (oldest {_human(age)} old)"


def _human(d: timedelta) -> str:
    s = int(d.total_seconds())
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s // 3600} h"
