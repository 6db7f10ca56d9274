"""How soon a restarted group member lands data again: SIGKILL (or SIGTERM) a running
`spendlake ingest`, start it again at once, and time from the restart to the first new batch in
the lake. Per Kafka client, with static group membership (the default for a long-running member:
`[kafka] group_instance_id = "auto"`) and without it (`group_instance_id = ""`).

A producer thread keeps sending to a 3-partition topic the whole time, so a member that has its
partitions lands a batch within its batch age (here 0.5 s). Without static membership the group
waits for the killed member's session (10 s) to expire before it hands its partitions over;
with it, the restarted member takes its predecessor's place at once.

    python bench/restart.py [--rounds 3] [--clients kafka-python,confluent]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PORT = 29192
BROKER = ["bash", str(ROOT / "ingest" / "broker" / "kafka-local.sh")]
BROKER_ENV = {**os.environ, "KAFKA_PORT": str(PORT), "KAFKA_HOME": f"/var/tmp/spendlake-bench-kafka-{PORT}"}
BOOT = f"127.0.0.1:{PORT}"


def event(i: int) -> bytes:
    import orjson

    return orjson.dumps({"event_id": f"r-{i}", "timestamp": int(time.time() * 1000), "provider": "openai",
                         "model": "gpt-4o-mini", "input_tokens": 1000 + i % 500, "output_tokens": 200,
                         "virtual_key": f"vk-{i % 50}"})  # fmt: skip


def producer(topic: str, stop: threading.Event, rate: int) -> None:
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=BOOT, linger_ms=20)
    i = 0
    while not stop.is_set():
        t0 = time.monotonic()
        for _ in range(rate // 10):
            p.send(topic, value=event(i), key=f"vk-{i % 50}".encode())
            i += 1
        p.flush()
        time.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))
    p.close()


def manifests(lake: Path) -> int:
    root = lake / "_manifests"
    return sum(1 for _ in root.glob("*/*/*.json")) if root.exists() else 0


def start(client: str, static: bool, topic: str, group: str, lake: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SPENDLAKE_KAFKA_GROUP_INSTANCE_ID": "auto" if static else ""}
    return subprocess.Popen(
        [sys.executable, "-m", "spendlake", "ingest", "--bootstrap-servers", BOOT, "--topic", topic, "--group", group,
         "--lake", str(lake), "--kafka-client", client, "--batch-age", "0.5", "--quiet"],
        stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=env, cwd=ROOT,
    )  # fmt: skip


def wait_more(lake: Path, than: int, timeout: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if manifests(lake) > than:
            return time.monotonic()
        time.sleep(0.02)
    return None


def one(client: str, static: bool, how: signal.Signals, rounds: int, workdir: Path) -> list[float]:
    topic = f"restart-{uuid.uuid4().hex[:6]}"
    subprocess.run([*BROKER, "topic", topic, "3"], env=BROKER_ENV, check=True, capture_output=True)
    lake, log = workdir / f"lake-{topic}", workdir / f"{topic}.log"
    stop = threading.Event()
    t = threading.Thread(target=producer, args=(topic, stop, 5000), daemon=True)
    t.start()
    gaps = []
    proc = start(client, static, topic, f"g-{topic}", lake, log)
    try:
        if wait_more(lake, 0, 60) is None:
            raise SystemExit(f"no batch landed within 60 s; see {log}")
        for _ in range(rounds):
            time.sleep(3)  # steady state
            proc.send_signal(how)
            proc.wait(60)
            before = manifests(lake)
            t_restart = time.monotonic()
            proc = start(client, static, topic, f"g-{topic}", lake, log)
            landed = wait_more(lake, before, 60)
            gaps.append((landed - t_restart) if landed else float("inf"))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        stop.set()
        t.join()
    return gaps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="restarts per case (default 3)")
    ap.add_argument("--clients", default="kafka-python,confluent", help="comma-separated (default both)")
    ap.add_argument("--keep-broker", action="store_true", help="leave the broker running at the end")
    args = ap.parse_args()
    subprocess.run([*BROKER, "start"], env=BROKER_ENV, check=True)
    workdir = Path(f"/var/tmp/spendlake-bench-restart-{os.getpid()}")
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores)")
    print(f"{'client':<13} {'membership':<10} {'signal':<8} gaps from restart to the first new batch (s)")
    try:
        for client in args.clients.split(","):
            for static in (True, False):
                for how in (signal.SIGKILL, signal.SIGTERM):
                    gaps = one(client, static, how, args.rounds, workdir)
                    shown = "  ".join(f"{g:.2f}" for g in gaps)
                    print(f"{client:<13} {'static' if static else 'dynamic':<10} {how.name:<8} {shown}   "
                          f"median {statistics.median(gaps):.2f}", flush=True)  # fmt: skip
    finally:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
        if not args.keep_broker:
            subprocess.run([*BROKER, "wipe"], env=BROKER_ENV, check=False)
    print("target: the first new batch within 3 s of the restart (static membership, SIGKILL)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
