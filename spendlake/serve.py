"""`spendlake serve`: consume, roll up after each flush, run the scheduler, serve /metrics.

One process owns the DuckDB state (contract 2). Threads:
- main: the Kafka consumer loop (ingest/consumer.py) and its lake writer thread;
- the scheduler (apscheduler): the ``rollup`` job every ``[alerts] evaluation_interval`` and
  right after each flush (the writer thread moves its next run to now, and a flush that lands
  while the job runs makes it go round once more, so no flush waits for the next tick); after
  each rollup the alert rules run (alerting/engine.py); one cron job per ``[[reports]]``;
- one delivery worker per alert channel (alerting/outbox.py);
- the /metrics HTTP server (aggregator/metrics.py), reading the rollups at scrape time through a
  cursor of its own (the large families written directly), then prometheus-client's collectors on
  the exporter's own registry: ``process_*`` and the pipeline health in ``Health`` (consumer lag,
  last flush, last successful rollup, failed rollups).
SIGTERM/SIGINT: the consumer flushes, commits and closes; then a last rollup runs, the
scheduler stops and the process exits 0.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from aggregator.budgets import BudgetUsage
from aggregator.hierarchy import Hierarchy
from aggregator.metrics import Exporter, Health, serve_metrics
from aggregator.rollup import Rollup

log = logging.getLogger("spendlake.serve")

LAG_EVERY_S = 5.0
PUBLISH_EVERY_S = 5.0  # under continuous flushes, publish at least this often (it pauses rollups)
# ... unless publishing takes long: then at most this share of the time goes to it (a publish
# compacts and rewrites the touched dates, budget usage and the recent events: at ~100k events/s
# it takes seconds; alerts and /metrics read the state, which is updated meanwhile)
PUBLISH_MAX_SHARE = 0.25
SWITCH_INTERVAL_S = 0.001  # under continuous flushes, publish at least this often


@dataclass
class Service:
    lake: str
    hierarchy: Hierarchy
    listen: tuple[str, int]
    interval_s: float = 5.0
    top_virtual_keys: int = 20
    budget_details: bool = False
    health: Health = field(default_factory=Health)
    rollup: Rollup | None = None
    scheduler: BackgroundScheduler | None = None
    jobs: list[Callable[[Rollup], Any]] = field(default_factory=list)  # run after each rollup
    alerts: Any = None  # alerting.engine.AlertEngine
    minute_retention_days: int = 3
    mirror: Any = None  # ingest.mirror.Mirror of an object-store lake: pulled each tick, published pushed
    _pulled_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _dirty: threading.Event = field(default_factory=threading.Event)
    _stopping: threading.Event = field(default_factory=threading.Event)  # roll() ends its round
    _published_at: float = 0.0
    _publish_s: float = 0.0  # how long the last publish took
    metrics_port: int | None = None

    def start(self) -> None:
        hooks = [self.alerts.on_fresh] if self.alerts is not None else []
        self.rollup = Rollup(self.lake, budget_hook=BudgetUsage(self.hierarchy), event_hooks=hooks,
                             minute_retention_days=self.minute_retention_days)  # fmt: skip
        if self.alerts is not None:
            self.alerts.start(self.rollup.con)
            self.jobs.append(self.alerts.after_rollup)
        self.roll()  # catch up before serving numbers
        # The consumer thread is busy Python (decode, price); at the default 5 ms GIL switch
        # interval the rollup and delivery threads wait up to that long for each of their many
        # small steps. 1 ms took the freshness bench's p50 from ~1.65 s to ~1.3 s.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        state = self.rollup
        exporter = Exporter(lambda: state.con.cursor(), self.hierarchy, self.health, self.top_virtual_keys,
                            self.budget_details)  # fmt: skip
        host, port = self.listen
        server = serve_metrics(exporter, host, port)
        self.metrics_port = server.server_address[1]
        self._server = server
        log.debug("serving /metrics on http://%s:%d/metrics", host, self.metrics_port)  # the CLI says it, with the source
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self.scheduler.add_job(self.roll, "interval", seconds=self.interval_s, id="rollup",
                               max_instances=1, coalesce=True, next_run_time=datetime.now(UTC))  # fmt: skip
        if self.alerts is not None:
            self._schedule_reports()
        self.scheduler.start()

    def _schedule_reports(self) -> None:
        """One cron job per [[reports]] entry, in the [lake] timezone: daily at its time, weekly
        on Monday, monthly on the 1st. A report missed while serve was down is sent at the next
        start (its key names the period, so never twice)."""
        assert self.scheduler is not None and self.alerts is not None
        for i, sched in enumerate(self.alerts.cfg.reports):
            hour, minute = sched.at
            when: dict[str, Any] = {}
            if sched.period == "weekly":
                when["day_of_week"] = "mon"
            elif sched.period == "monthly":
                when["day"] = 1
            self.scheduler.add_job(self.alerts.run_report, "cron", args=[sched], id=f"report-{i}", hour=hour,
                                   minute=minute, timezone=self.hierarchy.timezone, misfire_grace_time=3600,
                                   coalesce=True, **when)  # fmt: skip
            self.scheduler.add_job(self.alerts.run_report, args=[sched], id=f"report-{i}-catch-up")

    def roll(self) -> None:
        """Rollup updates (and the jobs that follow each) until nothing new waits: no flush of
        this process landed meanwhile and the lake lists no file not rolled up (other writers, e.g.
        `spendlake ingest` processes, land into the same lake and have no way to call
        after_flush). Under a steady stream that is back to back, and each update takes all that
        landed during the one before (a bigger batch costs less per event). Never raises: a
        failure is logged and the next tick tries again."""
        assert self.rollup is not None
        with self._lock:
            self._pull()
            while not self._stopping.is_set():
                self._dirty.clear()
                if not self._roll_once():  # failed: the next tick tries again
                    break
                if not (self._dirty.is_set() or self.rollup.has_new()):
                    break
                if time.monotonic() - self._published_at >= max(PUBLISH_EVERY_S, self._publish_s / PUBLISH_MAX_SHARE):
                    self._publish()
            self._publish()

    def _publish(self) -> None:
        """The Parquet copies other processes read: after the alert rules, which read the state
        itself, so publishing never delays an alert."""
        assert self.rollup is not None
        try:
            t0 = time.perf_counter()
            days = self.rollup.publish()
            self._published_at = time.monotonic()
            self._publish_s = time.perf_counter() - t0
            if days:
                log.info("published the rollups of %s in %.2f s", ", ".join(days), time.perf_counter() - t0)
        except Exception:
            log.exception("publishing the rollups failed; retrying at the next tick")
        self._push()

    def _push(self) -> None:
        """What this serve published (`_rollups/`, `_alerts/`) to an object-store lake."""
        if self.mirror is None:
            return
        try:
            self.mirror.push(("_rollups", "_alerts"))
        except Exception as exc:  # the store is down: the next publish pushes what changed
            log.warning("pushing the published rollups and alerts to %s failed (%s); retrying at the "
                        "next tick", self.mirror.store.where.url, exc)  # fmt: skip

    def _pull(self) -> None:
        """Other writers' batches of an object-store lake into the mirror, at most once per
        evaluation interval (this process's own batches are copied there as they commit)."""
        if self.mirror is None or time.monotonic() - self._pulled_at < self.interval_s:
            return
        try:
            self.mirror.pull(published=False)
            self._pulled_at = time.monotonic()
        except Exception as exc:
            log.warning("reading new batches from %s failed (%s); retrying at the next tick",
                        self.mirror.store.where.url, exc)  # fmt: skip

    def _roll_once(self) -> bool:
        """One update and the jobs after it; whether they succeeded."""
        assert self.rollup is not None
        try:
            stats = self.rollup.update(publish=False)
            with self.health.lock:
                self.health.rollup_at = time.time()
            t0 = time.perf_counter()
            for job in self.jobs:
                job(self.rollup)
            if stats.events_added or stats.days_recomputed:
                log.info("rolled up %d new events (%d duplicates) in %.2f s, then alert rules in %.2f s",
                         stats.events_added, stats.duplicates, stats.seconds, time.perf_counter() - t0)  # fmt: skip
            return True
        except Exception:
            with self.health.lock:
                self.health.rollup_failures += 1
            log.exception("rollup failed; retrying at the next tick")
            return False

    def after_flush(self, committed: Any = None) -> None:
        """Called on the lake writer's thread once a batch is visible: check its budgets (on
        alerting's own thread) and roll up now."""
        with self.health.lock:
            self.health.last_flush_at = time.time()
        if self.alerts is not None and committed:
            self.alerts.landed(committed)
        self._dirty.set()
        if self.scheduler is not None and self.scheduler.running:
            try:
                self.scheduler.modify_job("rollup", next_run_time=datetime.now(UTC))
            except Exception:  # the job may be running; the interval catches up
                pass

    def lag_probe(self, consumer: Any) -> Callable[[Any, float], None]:
        """A KafkaIngestor progress callback that records consumer lag every few seconds."""
        last = [0.0]

        def probe(_: Any, now: float) -> None:
            if now - last[0] < LAG_EVERY_S:
                return
            last[0] = now
            lag = {(consumer.topic, p): n for p, n in consumer.lag().items()}
            with self.health.lock:
                self.health.lag = lag

        return probe

    def stop(self) -> None:
        self._stopping.set()  # a round under a steady stream of other writers' files ends now
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self.rollup is not None:
            with self._lock:  # what the last flush landed (once: other writers may go on landing)
                self._roll_once()
                self._publish()
            if self.alerts is not None:
                self.alerts.stop()  # publishes the outbox a last time, after draining deliveries
                self._push()
            self.rollup.close()
        if getattr(self, "_server", None) is not None:
            self._server.shutdown()


class RunningIntake:
    """The intake's servers and sink, stopped together (before the consumer's last flush)."""

    def __init__(self, server: Any, sink: Any, grpc: Any = None) -> None:
        self.server, self.sink, self.grpc = server, sink, grpc

    @property
    def server_address(self) -> tuple[str, int]:
        return self.server.server_address[:2]  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.grpc is not None:
            self.grpc.stop(grace=2).wait(5)
        self.server.shutdown()
        self.server.server_close()
        self.sink.close()


def start_intake(cfg: Any, tokens: Any, health: Health, spool: Any, kafka: Any) -> RunningIntake:
    """Start `[intake]`: HTTP (and gRPC when `grpc_listen` is set), writing to Kafka when serve
    consumes Kafka, else to the local spool. Raises ValueError when the gRPC extra is missing and
    OSError when an address cannot be bound."""
    from ingest.intake import Intake, IntakeStats, KafkaSink, SpoolSink
    from ingest.intake.http import IntakeServer

    get = cfg.get
    sink: Any
    if kafka is not None:
        sink = KafkaSink(kafka, get("intake", "ack_timeout"))
    else:
        sink = SpoolSink(spool)
    stats = IntakeStats()
    health.intake = stats
    intake = Intake(sink, cfg.intake_names(), stats)
    host, _, port = get("intake", "listen").rpartition(":")
    server = IntakeServer((host.strip("[]"), int(port)), intake, tokens, max_body_bytes=get("intake", "max_body_bytes"),
                          read_timeout_s=get("intake", "read_timeout"))  # fmt: skip
    server.start()
    grpc = None
    if get("intake", "grpc_listen"):
        try:
            from ingest.intake.grpc import serve_grpc

            grpc = serve_grpc(get("intake", "grpc_listen"), intake, tokens, get("intake", "max_body_bytes"))
        except ImportError:
            server.shutdown()
            raise ValueError("[intake] grpc_listen needs grpcio: pip install 'spendlake[grpc]'") from None
        except OSError:
            server.shutdown()
            raise
    return RunningIntake(server, sink, grpc)
