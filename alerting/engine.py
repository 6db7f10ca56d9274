"""Alerting inside ``spendlake serve``: the rules after each rollup, the delivery workers, the
scheduled reports, and the published copy of the outbox that ``spendlake alerts`` reads.

``serve`` owns the DuckDB state; this engine uses its connection (the rules run on the rollup
thread, under the service's lock) and one cursor per delivery worker. What other processes
read is published under ``<lake>/_alerts/`` as Parquet (temp file, fsync, rename) whenever the
outbox changed, at most once per evaluation. That copy is also the record a serve started with
no state seeds its outbox from (``seed_from_published``; docs/operations.md, "Moving serve to
another machine").
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from aggregator.hierarchy import Hierarchy
from aggregator.rollup import sql_string
from alerting import outbox
from alerting.config import Alerting, ReportSchedule
from alerting.landed import LandedWatch
from alerting.outbox import Dispatcher, Record, Sender
from alerting.rules import Rules
from ingest.errors import PipelineFailure
from ingest.lake import _fsync_dir

log = logging.getLogger("spendlake.alerts")

PUBLISH_DIR = "_alerts"
# What `spendlake alerts` reads while serve runs, and the record a serve started without its state
# seeds its outbox from (``seed_from_published``): every column of both tables, ``body`` (the
# alert as JSON, what a pending delivery is sent from) included. Written deliveries first, from
# one snapshot: a crash between the two renames leaves deliveries newer than alerts, never an
# alert whose deliveries are missing.
PUBLISHED = {
    "deliveries": f"SELECT {', '.join(outbox.DELIVERY_COLUMNS)} FROM deliveries",
    "alerts": f"SELECT {', '.join(outbox.ALERT_COLUMNS)} FROM alerts",
}


def default_sender() -> Sender:
    from alerting.channels import send

    return send


class AlertEngine:
    def __init__(self, lake: str | os.PathLike[str], hierarchy: Hierarchy, alerting: Alerting,
                 sender: Sender | None = None, report: Callable[[ReportSchedule, datetime], Any] | None = None) -> None:  # fmt: skip
        self.root = Path(lake)
        self.h = hierarchy
        self.cfg = alerting
        self.rules = Rules(hierarchy, alerting)
        self.sender = sender or default_sender()
        self.report = report  # (schedule, now) -> Alert of kind "report", or None
        self.dispatcher: Dispatcher | None = None
        self._wake_after_commit = False  # the per-event rule recorded alerts in a rollup transaction
        self.watch: LandedWatch | None = None
        self._published: tuple[int, int] | None = None
        self.con: duckdb.DuckDBPyConnection | None = None

    # the rollup's per-event hook (inside each date's transaction)
    def on_fresh(self, con: duckdb.DuckDBPyConnection, table: str) -> None:
        if self.rules.on_fresh(con, table) and self.dispatcher is not None:
            self._wake_after_commit = True

    def start(self, con: duckdb.DuckDBPyConnection) -> None:
        """Create the outbox tables in the state, start one delivery worker per channel."""
        self.con = con
        outbox.schema(con)
        self.seed_from_published(con)
        note = outbox.resume_note(con)
        if note:
            log.info("%s", note)

        def cursor() -> duckdb.DuckDBPyConnection:
            c = con.cursor()
            c.execute("SET TimeZone = 'UTC'")
            return c

        self.dispatcher = Dispatcher(cursor, self.cfg.channels, self.cfg.rules, self.sender)
        self.dispatcher.start()
        self.watch = LandedWatch(self.root, self.h, self.rules, cursor, self._record_landed)
        self.watch.start()

    def seed_from_published(self, con: duckdb.DuckDBPyConnection) -> tuple[int, int] | None:
        """A new state (empty outbox) on a lake whose ``_alerts/`` holds another serve's copy
        (serve moved to another machine, or ``_state/`` was lost): that copy is the record. Seed
        the outbox from it before the first evaluation, so nothing already sent is sent again and
        what was pending is sent. A state with alerts is never seeded. A copy that cannot be read
        stops the start (better than paging everyone twice); moving ``_alerts/`` away starts
        without history. Returns (alerts, deliveries) seeded, or None."""
        pub = self.root / PUBLISH_DIR
        alerts, deliveries = pub / "alerts.parquet", pub / "deliveries.parquet"
        if not alerts.exists() or not outbox.is_empty(con):
            return None
        try:
            got = outbox.seed(con, str(alerts), str(deliveries) if deliveries.exists() else None)
        except (duckdb.Error, ValueError, OSError) as exc:
            reason = " ".join(str(exc).split("\nLINE ")[0].split())  # one line, without DuckDB's SQL excerpt
            raise PipelineFailure(f"cannot rebuild the alert state from {pub}/: {reason}; move {pub} away to "
                                  "start without the alert history (alerts of the current periods are sent again)"
                                  ) from None  # fmt: skip
        if any(got):  # an empty copy (no alert ever) rebuilds nothing worth a line at every start
            log.info("alert state rebuilt from %s/: %d alerts, %d deliveries", pub, *got)
        return got

    def landed(self, committed: list[Any]) -> None:
        """serve's flush callback (writer thread): check the batch's budgets now, on the watch's
        thread, without waiting for the rollup."""
        if self.watch is not None:
            self.watch.submit([f for c in committed if c.manifest is not None for f in c.manifest.files])

    def _record_landed(self, records: list[Record]) -> list[Record]:
        try:
            return self.record(records)
        except duckdb.Error as exc:  # the rollup path recorded the same key meanwhile
            log.debug("a landed-batch alert was recorded by the rollup path first: %s", exc)
            return []

    def after_rollup(self, rollup: Any) -> None:
        """The service job run after every rollup update: evaluate, wake the workers, publish."""
        con = rollup.con
        new = self.rules.evaluate(con)
        self._announce(new)
        if (new or self._wake_after_commit) and self.dispatcher is not None:
            self._wake_after_commit = False
            self.dispatcher.wake()
        self.publish(con)

    def record(self, records: list[Record]) -> list[Record]:
        """Record alerts from outside the rules (reports), in a transaction of their own."""
        assert self.con is not None
        cur = self.con.cursor()  # another thread than the rollup's: a connection of its own
        try:
            new = outbox.record_now(cur, records)
        finally:
            cur.close()
        self._announce(new)
        if new and self.dispatcher is not None:
            self.dispatcher.wake()
        return new

    @staticmethod
    def _announce(new: list[Record]) -> None:
        for r in new:
            if r.note is None:
                to = ", ".join(r.channels) or "no channel"
                log.info("alert %s [%s]: %s -> %s", r.alert.kind, r.alert.severity, r.alert.title, to)

    def run_report(self, schedule: ReportSchedule, now: datetime | None = None) -> None:
        """A scheduled report: built, recorded once per period (its key names the period)."""
        if self.report is None:
            return
        try:
            alert = self.report(schedule, now or datetime.now(UTC))
        except Exception:
            log.exception("the %s report could not be built", schedule.period)
            return
        if alert is not None:
            self.record([Record(alert, schedule.channels)])

    def publish(self, con: duckdb.DuckDBPyConnection, force: bool = False) -> None:
        n = con.execute("SELECT count(*) FROM alerts").fetchall()[0][0]
        version = (n, self.dispatcher.changes if self.dispatcher is not None else 0)
        if version == self._published and not force:
            return
        out = self.root / PUBLISH_DIR
        out.mkdir(parents=True, exist_ok=True)
        tmps = {name: out / f".{name}-{uuid.uuid4().hex[:8]}.tmp" for name in PUBLISHED}
        try:
            con.execute("BEGIN TRANSACTION")  # one snapshot: no alert without the deliveries it was recorded with
            try:
                for name, select in PUBLISHED.items():
                    con.execute(f"COPY ({select}) TO {sql_string(tmps[name])} (FORMAT parquet)")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            for name in PUBLISHED:  # deliveries first (see PUBLISHED)
                _fsync_dir(tmps[name])
                os.replace(tmps[name], out / f"{name}.parquet")
        finally:
            for tmp in tmps.values():
                tmp.unlink(missing_ok=True)
        _fsync_dir(out)
        self._published = version

    def stop(self, drain_s: float = 5.0) -> None:
        if self.watch is not None:
            self.watch.stop()
        if self.dispatcher is not None:
            left = self.dispatcher.drain(drain_s)
            if left:
                log.info("%d alert deliveries still pending; they resume at the next start", left)
            self.dispatcher.stop()
        if self.con is not None:
            try:
                self.publish(self.con, force=True)
            except duckdb.Error:
                log.exception("publishing the outbox failed")
