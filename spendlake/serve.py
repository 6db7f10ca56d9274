"""`spendlake serve`: consume, roll up after each flush, run the scheduler, serve /metrics.

One process owns the DuckDB state (contract 2). Threads:
- main: the Kafka consumer loop (ingest/consumer.py) and its lake writer thread;
- the scheduler (apscheduler): the ``rollup`` job every ``[alerts] evaluation_interval`` and
  right after each flush (the writer thread moves its next run to now); alerting adds its own
  jobs to ``Service.scheduler``;
- the /metrics HTTP server (prometheus-client), reading the rollups at scrape time through a
  cursor of its own.
SIGTERM/SIGINT: the consumer flushes, commits and closes; then a last rollup runs, the
scheduler stops and the process exits 0.
"""

from __future__ import annotations

import logging
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
    _lock: threading.Lock = field(default_factory=threading.Lock)
    metrics_port: int | None = None

    def start(self) -> None:
        self.rollup = Rollup(self.lake, budget_hook=BudgetUsage(self.hierarchy))
        self.roll()  # catch up before serving numbers
        state = self.rollup
        exporter = Exporter(lambda: state.con.cursor(), self.hierarchy, self.health, self.top_virtual_keys,
                            self.budget_details)  # fmt: skip
        host, port = self.listen
        server = serve_metrics(exporter, host, port)
        self.metrics_port = server.server_address[1]
        self._server = server
        log.info("serving /metrics on http://%s:%d/metrics", host, self.metrics_port)
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self.scheduler.add_job(self.roll, "interval", seconds=self.interval_s, id="rollup",
                               max_instances=1, coalesce=True, next_run_time=datetime.now(UTC))  # fmt: skip
        self.scheduler.start()

    def roll(self) -> None:
        """One rollup update (and the jobs that follow it). Never raises: a failure is logged
        and the next tick tries again."""
        assert self.rollup is not None
        with self._lock:
            try:
                stats = self.rollup.update()
                with self.health.lock:
                    self.health.rollup_at = time.time()
                if stats.events_added or stats.days_recomputed:
                    log.info("rolled up %d new events (%d duplicates) in %.2f s",
                             stats.events_added, stats.duplicates, stats.seconds)  # fmt: skip
                for job in self.jobs:
                    job(self.rollup)
            except Exception:
                log.exception("rollup failed; retrying at the next tick")

    def after_flush(self, _: Any = None) -> None:
        """Called on the lake writer's thread once a batch is visible: roll up now."""
        with self.health.lock:
            self.health.last_flush_at = time.time()
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
            lag = {}
            for tp in consumer.assignment():
                try:
                    high, pos = consumer.highwater(tp), consumer.position(tp)
                except Exception:
                    continue
                if high is not None and pos is not None:
                    lag[(tp.topic, tp.partition)] = max(high - pos, 0)
            with self.health.lock:
                self.health.lag = lag

        return probe

    def stop(self) -> None:
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self.rollup is not None:
            self.roll()  # what the last flush landed
            self.rollup.close()
        if getattr(self, "_server", None) is not None:
            self._server.shutdown()
