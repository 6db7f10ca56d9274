"""Several hosts on one S3 lake, simulated: each "host" is a process with its own working
directory, temp directory, mirror and state, sharing nothing but Kafka and the S3 server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import ROOT, Broker, RemoteLake, events_bytes, lake_rows, wait_for
from test_serve import metrics_port, sample_sum, scrape

pytestmark = pytest.mark.kafka

SERVE_CONFIG = """
[lake]
path = "{lake}"

[metrics]
listen = "127.0.0.1:0"

[intake]
listen = "127.0.0.1:0"
allow_unauthenticated = true

[alerts]
evaluation_interval = "1s"

[[teams]]
id = "team-1"
budgets = [{{ max_limit = 100000.0, reset_duration = "1M" }}]
"""


class Host:
    """A machine of its own: its own directories and name; only the network is shared."""

    def __init__(self, name: str, base: Path) -> None:
        self.name = name
        self.home = base / name
        for d in ("tmp", "cache", "work"):
            (self.home / d).mkdir(parents=True, exist_ok=True)

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "TMPDIR": str(self.home / "tmp"), "SPENDLAKE_LAKE_CACHE_DIR": str(self.home / "cache"),
                "PYTHONPATH": str(ROOT), **extra}  # fmt: skip

    def start(self, *args: str, **extra: str) -> subprocess.Popen[bytes]:
        log = open(self.home / "log", "ab")
        return subprocess.Popen([sys.executable, "-m", "spendlake", *args], stdout=log, stderr=subprocess.STDOUT,
                                cwd=self.home / "work", env=self.env(**extra))  # fmt: skip

    def log(self) -> str:
        return (self.home / "log").read_text(errors="replace")


def test_two_ingest_hosts_and_serve_on_a_third(kafka: Broker, topic_name: str, s3_lake: RemoteLake,
                                               tmp_path: Path) -> None:  # fmt: skip
    kafka.create_topic(topic_name, 4)
    sent = [0]
    stop = threading.Event()

    def producer() -> None:
        while not stop.is_set() and sent[0] < 30_000:
            kafka.produce(topic_name, events_bytes(2000, start=sent[0]))
            sent[0] += 2000

    serve_host = Host("serve-host", tmp_path)
    (serve_host.home / "spendlake.toml").write_text(SERVE_CONFIG.format(lake=s3_lake))
    serve = serve_host.start("serve", "--config", str(serve_host.home / "spendlake.toml"))
    procs: list[subprocess.Popen[bytes]] = [serve]
    try:
        port = metrics_port(serve_host.home / "log")
        hosts = [Host(f"ingest-{i}", tmp_path) for i in range(2)]
        args = ["ingest", "--bootstrap-servers", kafka.bootstrap, "--topic", topic_name, "--group", f"g-{topic_name}",
                "--lake", str(s3_lake), "--batch-records", "1000", "--batch-age", "0.5", "--quiet"]  # fmt: skip
        workers = [h.start(*args, SPENDLAKE_KAFKA_GROUP_INSTANCE_ID=f"{h.name}-0") for h in hosts]
        procs += workers
        # Both members hold partitions before the traffic starts: otherwise the first to join
        # may land all 30k events before the second's join has rebalanced the group, and the
        # test would not show two hosts sharing the lake.
        for h in hosts:
            wait_for(lambda h=h: "resuming" in h.log() or "earliest" in h.log(), 120, f"{h.name} to be assigned")
        t = threading.Thread(target=producer)
        t.start()
        t.join(300)
        stop.set()
        total = sent[0]
        wait_for(lambda: lake_rows(s3_lake, "select count(*) from ev") == [(total,)], 180,
                 "both hosts to land everything")  # fmt: skip
        for w in workers:
            w.send_signal(signal.SIGTERM)
            assert w.wait(60) == 0
        landed = [re.search(r"done \(.*\): ([\d,]+) events landed in ([\d,]+) batches", h.log()) for h in hosts]
        assert all(landed), [h.log() for h in hosts]
        counts = [(int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))) for m in landed if m]
        assert all(batches > 0 for _, batches in counts), counts  # both hosts took part
        assert sum(events for events, _ in counts) == total  # and none landed an event the other did
        truth = lake_rows(s3_lake, "select count(*), count(distinct event_id), sum(cost_usd) from ev")[0]
        assert truth[:2] == (total, total)
        # serve, on its own host, sees what the others landed (its mirror follows the manifests)
        wait_for(lambda: sample_sum(scrape(port), "spendlake_requests_total") == total, 120,
                 "serve's /metrics to count every event")  # fmt: skip
        # to a millionth of a dollar (the two sums add the same costs in a different order)
        assert sample_sum(scrape(port), "spendlake_cost_usd_total") == pytest.approx(truth[2], abs=1e-6)
        # what it publishes reaches the store, for readers on any host
        wait_for(lambda: any(e.rel == "_rollups/status.json" for e in s3_lake.store().list("_rollups/")), 60,
                 "serve to push its published rollups")  # fmt: skip
        reader = Host("analyst", tmp_path)
        r = subprocess.run([sys.executable, "-m", "spendlake", "query", "--lake", str(s3_lake),
                            "select sum(requests) from rollup_daily", "--format", "csv"],
                           capture_output=True, cwd=reader.home / "work", env=reader.env(), timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stderr.decode()
        assert r.stdout.decode().split()[-1] == str(total)
    finally:
        stop.set()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(30)

