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

Grouping: on a paced channel (``min_interval`` > 0) of a type that takes grouped messages (Slack,
the webhook: ``render.GROUPED_TYPES``), a worker about to send takes every due row, not only the
oldest: the alerts that came due within one pacing interval go out as ONE message (up to
``GROUP_MAX``), most urgent first (``records.urgency``: budget exceeded, critical, warning,
forecast, info; oldest first within a rank), so the third alert of a burst does not wait two more
intervals behind the first. Reports and test messages always go alone. The outcome of a grouped
send is recorded for each of its rows in one transaction: all delivered, or all retried (a retry
resends the group, with whatever else came due meanwhile — never a row already delivered), or,
when the receiver refuses the group for good, each row is tried on its own next, so one bad alert
cannot fail the others. PagerDuty and e-mail are never grouped (one event or mail per alert).

A new state: serve started without ``_state/`` (moved to another machine, or the state lost) on a
lake whose ``_alerts/`` holds the copy another serve published (alerting/engine.py) seeds its
empty outbox from that copy before the first evaluation (``seed``): the published alerts are the
record, so the rules' once-only checks find them and nothing already sent is sent again;
deliveries keep their state, and the pending ones are sent (at least once: the copy is at most one
evaluation older than the state it came from).
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
from alerting.records import Alert, Delivered, TerminalError, TransientError, by_urgency, urgency
from alerting.render import GROUPED_TYPES

log = logging.getLogger("spendlake.alerts")

# A sender takes one alert, or (on a channel for which ``groups`` holds) a tuple of several to send
# as one message, most urgent first.
Sender = Callable[[Channel, "Alert | tuple[Alert, ...]"], Delivered]
BACKOFF_BASE_S = 1.0
RETRY_AFTER_CAP_S = 3600.0
GROUP_MAX = 10  # alerts in one grouped message (Slack: a header and at most 4 blocks each, of its 50)
GROUP_SCAN = 200  # due rows looked at to pick a group's most urgent alerts (the oldest ones)
ALONE_KINDS = ("report", "test")  # a report is a message of its own


def groups(channel: Channel) -> bool:
    """Whether this channel sends the alerts due together as one message: paced, and a type that
    renders a group. An unpaced channel sends each alert as soon as it is due; nothing waits."""
    return channel.type in GROUPED_TYPES and channel.min_interval_s > 0


def groupable(alert: Alert) -> bool:
    return alert.kind not in ALONE_KINDS and alert.html is None



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
        self._alone: set[int] = set()  # delivery ids whose group was refused for good: each is tried alone
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
                    batch = self._next_due(con, channel, now)
                except duckdb.Error:
                    log.exception("channel %s: reading the outbox failed", channel.name)
                    batch = []
                if batch:
                    pace = last_send + channel.min_interval_s - now
                    if pace > 0:  # wait, then look again: whatever came due meanwhile joins the group
                        self._stop.wait(pace)
                        continue
                    last_send = self.clock()
                    outcome = self._attempt(con, channel, batch)
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

    def _next_due(self, con: duckdb.DuckDBPyConnection, channel: Channel, now: float) -> list[tuple[Any, Alert]]:
        """What to send now: [] when nothing is due; else the oldest due row, or on a grouping
        channel the most urgent due rows (up to GROUP_MAX, most urgent first) — each as
        ((id, attempts, created_at), alert)."""
        limit = GROUP_SCAN if groups(channel) else 1
        rows = con.execute(
            """SELECT d.id, d.attempts, d.created_at, a.body FROM deliveries d JOIN alerts a ON a.key = d.alert_key
               WHERE d.channel = ? AND d.state = 'pending' AND d.next_attempt_at <= ? ORDER BY d.id LIMIT ?""",
            [channel.name, datetime.fromtimestamp(now, UTC), limit],
        ).fetchall()
        due = [((did, attempts, created_at), Alert.from_json(body)) for did, attempts, created_at, body in rows]
        if len(due) <= 1:
            return due
        ranked = sorted(due, key=lambda d: -urgency(d[1]))  # stable: oldest first within a rank
        first = ranked[0]
        if first[0][0] in self._alone or not groupable(first[1]):
            return [first]
        return [d for d in ranked if d[0][0] not in self._alone and groupable(d[1])][:GROUP_MAX]

    @staticmethod
    def _next_time(con: duckdb.DuckDBPyConnection, channel: str) -> float | None:
        got = con.execute("SELECT min(next_attempt_at) FROM deliveries WHERE channel = ? AND state = 'pending'",
                          [channel]).fetchall()[0][0]  # fmt: skip
        return None if got is None else got.timestamp()

    def _attempt(self, con: duckdb.DuckDBPyConnection, channel: Channel,
                 batch: list[tuple[Any, Alert]]) -> float | None:  # fmt: skip
        """Send one message — one alert, or a group of them — and record the outcome of each of
        its rows in one transaction. None: done (delivered, failed for good, or split up);
        otherwise the seconds to pause the channel (-1: use the backoff)."""
        ids = [row[0] for row, _ in batch]
        alerts = by_urgency(a for _, a in batch)
        what = alerts[0].kind if len(alerts) == 1 else f"a group of {len(alerts)} alerts"
        try:
            got = self.sender(channel, alerts[0] if len(alerts) == 1 else tuple(alerts))
        except TransientError as exc:
            now = self.clock()
            gave_up = [row for row, _ in batch if now - row[2].timestamp() >= self.rules.give_up_after_s]
            retry = [row[0] for row, _ in batch if row not in gave_up]
            tries = max(row[1] for row, _ in batch) + 1
            pause = (min(exc.retry_after, RETRY_AFTER_CAP_S) if exc.retry_after is not None
                     else backoff_s(tries, self.rules.retry_max_interval_s))  # fmt: skip
            self._record(con, [
                ("UPDATE deliveries SET state = 'failed', attempts = attempts + 1, "
                 "last_error = 'gave up after ' || (attempts + 1) || ' attempts: ' || ? WHERE id IN ({ids})",
                 [exc.reason], [row[0] for row in gave_up]),
                ("UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE id IN ({ids})",
                 [datetime.fromtimestamp(now + pause, UTC), exc.reason], retry),
            ])  # fmt: skip
            self._alone.difference_update(row[0] for row in gave_up)
            for row, a in batch:
                if row in gave_up:
                    log.error("channel %s: %s failed for good after %d attempts: %s", channel.name, a.key, row[1] + 1,
                              exc.reason)  # fmt: skip
            if not retry:
                return None
            log.warning("channel %s: %s not delivered (%s); retrying in %.1f s", channel.name, what, exc.reason,
                        pause)  # fmt: skip
            return pause if exc.retry_after is not None else -1.0
        except TerminalError as exc:
            self._refused(con, channel, ids, what, exc.reason)
            return None
        except Exception as exc:  # a bug in rendering: record it, do not loop on it
            log.exception("channel %s: %s could not be sent", channel.name, what)
            self._refused(con, channel, ids, what, f"internal error: {type(exc).__name__}")
            return None
        self._record(con, [("UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, delivered_at = ?, "
                            "status = ? WHERE id IN ({ids})", [datetime.fromtimestamp(self.clock(), UTC), got.status],
                            ids)])  # fmt: skip
        self._alone.difference_update(ids)
        for a in alerts:
            log.info("channel %s: delivered %s %s%s", channel.name, a.kind, a.title,
                     f" (one message of {len(alerts)})" if len(alerts) > 1 else "")  # fmt: skip
        return None

    def _refused(self, con: duckdb.DuckDBPyConnection, channel: Channel, ids: list[int], what: str,
                 reason: str) -> None:  # fmt: skip
        """A refusal for good: the one alert fails with the reason; a group is split up instead —
        each of its alerts is tried on its own next, so one bad alert cannot fail the others."""
        if len(ids) == 1:
            self._record(con, [("UPDATE deliveries SET state = 'failed', attempts = attempts + 1, "
                                "last_error = ? WHERE id IN ({ids})", [reason], ids)])  # fmt: skip
            self._alone.difference_update(ids)
            log.error("channel %s: %s refused for good: %s", channel.name, what, reason)
            return
        self._record(con, [("UPDATE deliveries SET attempts = attempts + 1, last_error = ? WHERE id IN ({ids})",
                            [f"{reason} (as {what}; each is tried alone next)"], ids)])  # fmt: skip
        self._alone.update(ids)
        log.warning("channel %s: %s refused (%s); sending each alone", channel.name, what, reason)

    def _record(self, con: duckdb.DuckDBPyConnection, updates: list[tuple[str, list[Any], list[int]]]) -> None:
        """Apply ``(sql, params, ids)`` updates (``{ids}`` in the SQL: the ids; none: skipped) in one
        transaction, retried: a message already sent must be recorded, or it goes out again."""
        updates = [(sql.replace("{ids}", "SELECT unnest(?::BIGINT[])"), [*params, ids], ids)
                   for sql, params, ids in updates if ids]  # fmt: skip
        for attempt in range(5):
            try:
                con.execute("BEGIN TRANSACTION")
                for sql, params, _ in updates:
                    con.execute(sql, params)
                con.execute("COMMIT")
                break
            except duckdb.Error:
                try:
                    con.execute("ROLLBACK")
                except duckdb.Error:
                    pass  # the failed COMMIT ended the transaction already
                if attempt == 4:
                    raise
                time.sleep(0.05 * (attempt + 1))
        self.changes += 1


# The outbox's columns as `serve` publishes them (alerting/engine.py PUBLISHED) and as ``seed``
# reads them back. ``body`` is the alert as JSON: what a delivery still pending is sent from.
ALERT_COLUMNS = ("key", "kind", "severity", "title", "created_at", "subject", "period_start", "max_limit", "dedup_key",
                 "action", "note", "body")  # fmt: skip
DELIVERY_COLUMNS = ("id", "alert_key", "channel", "state", "attempts", "created_at", "next_attempt_at", "delivered_at",
                    "status", "last_error")  # fmt: skip


def is_empty(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the outbox holds nothing (a new state)."""
    return not con.execute("SELECT (SELECT count(*) FROM alerts) + (SELECT count(*) FROM deliveries)").fetchall()[0][0]


def seed(con: duckdb.DuckDBPyConnection, alerts_file: str, deliveries_file: str | None) -> tuple[int, int]:
    """Fill an EMPTY outbox from the Parquet copies another serve published (the record when
    serve moves to a machine without its state); returns (alerts, deliveries) seeded.

    Every published alert is recorded again as it was (its key is what the rules' once-only
    checks look up, so none fires again), and every delivery with its state, attempts, times and
    id: delivered and failed stay so, pending ones are resumed by the workers (at least once:
    the published copy may be older than the receiver's answer). A delivery whose alert is not in
    the published alerts is dropped (a copy published between the two files' replacement; the
    rule fires that alert again). A copy published before ``body`` was: the alert's columns
    rebuild a message with its title (no detail lines). One transaction: all or nothing."""
    from aggregator.rollup import sql_string

    src = f"read_parquet({sql_string(alerts_file)})"
    have = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
    missing = [c for c in ALERT_COLUMNS if c not in have and c != "body"]
    if missing:
        raise ValueError(f"{alerts_file} lacks the column(s) {', '.join(missing)}")
    con.execute("BEGIN TRANSACTION")
    try:
        if not is_empty(con):
            raise RuntimeError("the outbox is not empty: it is never seeded twice")
        cols = ", ".join(ALERT_COLUMNS)
        body = "body" if "body" in have else "NULL AS body"
        con.execute(f"INSERT INTO alerts ({cols}) SELECT {', '.join(ALERT_COLUMNS[:-1])}, {body} FROM {src}")
        if "body" not in have:
            rows = con.execute("SELECT key, kind, severity, title, created_at, action, dedup_key FROM alerts").fetchall()
            for key, kind, severity, title, created_at, action, dedup_key in rows:
                a = Alert(key=key, kind=kind, severity=severity, title=title, created_at=created_at,
                          action=action or "trigger", dedup_key=dedup_key)  # fmt: skip
                con.execute("UPDATE alerts SET body = ? WHERE key = ?", [a.to_json(), key])
        n_alerts = con.execute("SELECT count(*) FROM alerts").fetchall()[0][0]
        n_deliveries = 0
        if deliveries_file is not None:
            cols = ", ".join(DELIVERY_COLUMNS)
            con.execute(f"INSERT INTO deliveries ({cols}) SELECT {cols} FROM read_parquet({sql_string(deliveries_file)}) "
                        "WHERE alert_key IN (SELECT key FROM alerts) ORDER BY id")  # fmt: skip
            n_deliveries, top = con.execute("SELECT count(*), max(id) FROM deliveries").fetchall()[0]
            if top:  # new deliveries continue after the published ids (DuckDB has no setval)
                first = con.execute("SELECT nextval('delivery_seq')").fetchall()[0][0]
                if first < top:
                    con.execute("SELECT max(nextval('delivery_seq')) FROM range(?)", [int(top - first)]).fetchall()
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return int(n_alerts), int(n_deliveries)


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
