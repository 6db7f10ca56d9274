"""Shared fixtures: a real Kafka broker (our own ingest/broker/kafka-local.sh), real lakes.

The broker fixture FAILS (never skips) when the broker cannot start: a test that needs Kafka and
cannot have it is a failed test. It listens on SPENDLAKE_TEST_KAFKA_PORT (default 19092) so a
user's own broker or demo on 9092 is left alone, and its data lives in a fresh directory.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

ROOT = Path(__file__).resolve().parents[1]
BROKER_SCRIPT = ROOT / "ingest" / "broker" / "kafka-local.sh"


def litellm_file(name: str) -> Path:
    """A file the installed litellm wheel ships, ``name`` relative to the package folder.

    litellm is a pinned test extra, so this never skips: a missing package, a missing file or
    another version than the pin (tests state numbers of the pinned file) is a failure.
    """
    import importlib.metadata
    import importlib.util
    import tomllib

    spec = importlib.util.find_spec("litellm")  # finds the package without importing it
    if spec is None or spec.origin is None:
        pytest.fail("litellm is not installed; it is a pinned test extra: pip install -e '.[test]'")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["optional-dependencies"]
    pin = next(r.split("==")[1] for r in extras["test"] if r.startswith("litellm=="))
    if (version := importlib.metadata.version("litellm")) != pin:
        pytest.fail(f"litellm {version} is installed, the tests are written for the pinned {pin}: "
                    "pip install -e '.[test]'")
    path = Path(spec.origin).parent / name
    if not path.is_file():
        pytest.fail(f"litellm {version} does not ship {name}")
    return path


def litellm_catalog_path() -> Path:
    """LiteLLM's price catalog as the pinned wheel ships it (model_prices_and_context_window.json)."""
    return litellm_file("model_prices_and_context_window_backup.json")


def litellm_logging_example_path() -> Path:
    """A StandardLoggingPayload example the pinned wheel ships (its Azure Sentinel sample)."""
    return litellm_file("integrations/azure_sentinel/example_standard_logging_payload.json")


class Broker:
    def __init__(self, port: int, home: Path) -> None:
        self.port = port
        self.home = home
        self.bootstrap = f"127.0.0.1:{port}"
        self.env = {**os.environ, "KAFKA_PORT": str(port), "KAFKA_HOME": str(home)}

    def script(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(BROKER_SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def start(self) -> None:
        r = self.script("start")
        if r.returncode != 0:
            pytest.fail(f"the Kafka broker did not start (is Java 17 installed?):\n{r.stderr[-3000:]}")

    def stop(self) -> None:
        self.script("stop")

    def create_topic(self, name: str, partitions: int = 1) -> str:
        from kafka.admin import KafkaAdminClient, NewTopic

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            admin.create_topics([NewTopic(name, partitions, 1)])
        finally:
            admin.close()
        return name

    def produce(self, topic: str, values: list[bytes], keys: list[bytes | None] | None = None,
                partition: int | None = None) -> None:  # fmt: skip
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, max_request_size=4 << 20, acks="all")
        try:
            for i, value in enumerate(values):
                producer.send(topic, value=value, key=None if keys is None else keys[i], partition=partition)
            producer.flush()
        finally:
            producer.close()

    def end_offsets(self, topic: str) -> dict[int, int]:
        from kafka import KafkaConsumer, TopicPartition

        c = KafkaConsumer(bootstrap_servers=self.bootstrap)
        try:
            parts = c.partitions_for_topic(topic) or set()
            ends = c.end_offsets([TopicPartition(topic, p) for p in parts])
            return {tp.partition: off for tp, off in ends.items()}
        finally:
            c.close()

    def committed(self, topic: str, group: str) -> dict[int, int | None]:
        from kafka import KafkaConsumer, TopicPartition

        c = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=group, enable_auto_commit=False)
        try:
            parts = c.partitions_for_topic(topic) or set()
            return {p: c.committed(TopicPartition(topic, p)) for p in parts}
        finally:
            c.close()


@pytest.fixture(scope="session")
def kafka() -> Iterator[Broker]:
    port = int(os.environ.get("SPENDLAKE_TEST_KAFKA_PORT", "19092"))
    home = Path(f"/var/tmp/spendlake-test-kafka-{port}")
    broker = Broker(port, home)
    broker.stop()
    shutil.rmtree(home, ignore_errors=True)
    broker.start()
    yield broker
    broker.stop()
    shutil.rmtree(home, ignore_errors=True)


# Every Kafka client spendlake can use ([kafka] client): tests that take `kafka_client` run once per
# client, through SPENDLAKE_KAFKA_CLIENT (the spendlake processes they start inherit it).
KAFKA_CLIENTS = ["kafka-python", "confluent"]


@pytest.fixture(params=KAFKA_CLIENTS)
def kafka_client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SPENDLAKE_KAFKA_CLIENT", request.param)
    return str(request.param)


_counter = itertools.count()


@pytest.fixture
def topic_name() -> str:
    return f"t-{uuid.uuid4().hex[:8]}-{next(_counter)}"


def event(i: int, **over: Any) -> dict[str, Any]:
    """A realistic canonical event, deterministic in i."""
    models = [("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5"), ("openai", "gpt-4o-mini")]
    provider, model = models[i % len(models)]
    inp = 500 + (i * 37) % 9000
    e: dict[str, Any] = {
        "event_id": f"evt-{i:09d}",
        "timestamp": 1764331200000 + i * 1000,
        "provider": provider,
        "model": model,
        "input_tokens": inp,
        "output_tokens": 50 + (i * 13) % 900,
        "cached_input_tokens": inp // 4,
        "virtual_key": f"vk-{i % 17}",
        "team": f"team-{i % 5}",
        "latency_ms": 100.0 + i % 700,
    }
    e.update(over)
    return e


# The EVENT_SCHEMA columns the pricing engine reads, for tests that build event tables directly.
PRICING_COLUMNS = (
    "provider", "model", "timestamp", "input_tokens", "output_tokens", "cached_input_tokens",
    "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens", "batch", "cache_hit",
    "reported_cost_usd",
)  # fmt: skip


def pricing_schema(*extra: str) -> Any:
    """An Arrow schema of PRICING_COLUMNS plus ``extra`` EVENT_SCHEMA columns."""
    import pyarrow as pa

    from ingest.schema import EVENT_SCHEMA

    return pa.schema([EVENT_SCHEMA.field(name) for name in (*PRICING_COLUMNS, *extra)])


def events_bytes(n: int, start: int = 0) -> list[bytes]:
    return [orjson.dumps(event(i)) for i in range(start, start + n)]


def raw_rows(lake: AnyLake) -> list[dict[str, Any]]:
    """Every event row of the lake, read with pyarrow (an independent truth for DuckDB code)."""
    import pyarrow.parquet as pq

    lake = local_lake(lake)

    rows: list[dict[str, Any]] = []
    for f in sorted((lake / "events").glob("date=*/*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return rows


def dedup(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per event_id: the earliest ingested copy (ingested_at, then source position)."""
    best: dict[str, dict[str, Any]] = {}

    def order(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["ingested_at"], r["source_topic"], r["source_partition"], r["source_offset"])

    for r in rows:
        cur = best.get(r["event_id"])
        if cur is None or order(r) < order(cur):
            best[r["event_id"]] = r
    return list(best.values())


class RemoteLake:
    """An `s3://` lake on the test S3 server. `str()` gives its URL (for --lake); `local()`
    pulls a mirror of it (following its manifests, as every reader does) into a directory of its
    own and returns that, so the helpers below read it like a local lake."""

    def __init__(self, server: Any, url: str, mirror_dir: Path) -> None:
        self.server, self.url, self.mirror_dir = server, url, mirror_dir

    def __str__(self) -> str:
        return self.url

    def store(self) -> Any:
        from ingest.objectstore import ObjectStore, parse_lake

        where = parse_lake(self.url)
        assert not isinstance(where, str)
        return ObjectStore(where, self.server.endpoint)

    def local(self) -> Path:
        from ingest.mirror import Mirror

        Mirror(self.store(), self.mirror_dir).pull()
        return self.mirror_dir

    def manifests(self) -> int:
        return sum(1 for _ in self.store().list("_manifests/"))

    def exists(self) -> bool:
        return bool(self.store().exists())


AnyLake = Path | RemoteLake


def local_lake(lake: AnyLake) -> Path:
    return lake.local() if isinstance(lake, RemoteLake) else lake


def manifest_count(lake: AnyLake) -> int:
    """How many batches the lake has committed (its manifests)."""
    if isinstance(lake, RemoteLake):
        return lake.manifests()
    return sum(1 for _ in (lake / "_manifests").glob("*/*/*.json")) if (lake / "_manifests").exists() else 0


def store_outage(s3: Any, lake: RemoteLake, proc: subprocess.Popen[bytes], log: Path,
                 during: Any = None) -> None:  # fmt: skip
    """Kill the S3 server once `lake` has three batches, wait until the ingest `proc` says the
    store does not answer (it must still run), call `during()`, start the server again, and wait
    for the ingest to end with exit 0. The server is running again whatever happens."""
    try:
        wait_for(lambda: lake.manifests() >= 3, 120, "the first batches")
        s3.kill()
        wait_for(lambda: b"does not answer" in log.read_bytes(), 60, "ingest to notice the outage")
        if during is not None:
            during()
        assert proc.poll() is None, log.read_text()
        s3.start()
        assert proc.wait(300) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        if not s3.running():
            s3.start()


@pytest.fixture(scope="session")
def s3() -> Iterator[Any]:
    """The real S3 server (SeaweedFS, ingest/broker/s3-local.sh) on SPENDLAKE_TEST_S3_PORT. Fails
    when it cannot start; skips (fails in CI) only where it cannot even be built (no Go)."""
    from s3server import S3Server

    why = S3Server.missing()
    if why is not None:  # a user's machine without Go: say what is missing (in CI: fail)
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    port = int(os.environ.get("SPENDLAKE_TEST_S3_PORT", "18433"))
    server = S3Server(port, Path(f"/var/tmp/spendlake-test-s3-{port}"))
    server.remove()  # a fresh data directory for every session
    server.start()
    yield server
    server.remove()


@pytest.fixture
def s3_lake(s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RemoteLake:
    """A fresh `s3://` lake (a new prefix in the test bucket), with the AWS variables set for the
    spendlake processes a test starts, and their mirrors under the test's own directory."""
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("SPENDLAKE_LAKE_CACHE_DIR", str(tmp_path / "host-cache"))
    return RemoteLake(s3, f"s3://{s3.bucket}/{s3.new_prefix()}", tmp_path / "check-mirror")


@pytest.fixture(params=["local", "s3"])
def any_lake(request: pytest.FixtureRequest, tmp_path: Path) -> AnyLake:
    """The lake a test writes: a local directory, and the same test again on the S3 server."""
    if request.param == "s3":
        return request.getfixturevalue("s3_lake")  # type: ignore[no-any-return]
    return tmp_path / "lake"


def lake_rows(lake: AnyLake, sql: str = "select * from ev") -> list[tuple[Any, ...]]:
    lake = local_lake(lake)
    files = list((lake / "events").glob("date=*/*.parquet"))
    con = duckdb.connect()
    if not files:
        return []
    con.execute(f"create view ev as select * from read_parquet('{lake}/events/*/*.parquet', hive_partitioning=true)")
    return con.execute(sql).fetchall()


def dead_rows(lake: AnyLake, sql: str = "select * from dl") -> list[tuple[Any, ...]]:
    lake = local_lake(lake)
    if not list((lake / "dead_letter").glob("date=*/*.parquet")):
        return []
    con = duckdb.connect()
    con.execute(f"create view dl as select * from read_parquet('{lake}/dead_letter/*/*.parquet')")
    return con.execute(sql).fetchall()


def spendlake(*args: str, input: bytes | None = None, timeout: float = 300, check: bool = False
              ) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    r = subprocess.run(
        [sys.executable, "-m", "spendlake", *args], input=input, capture_output=True, timeout=timeout, cwd=ROOT
    )
    if check and r.returncode != 0:
        raise AssertionError(f"spendlake {' '.join(args)} exited {r.returncode}:\n{r.stderr.decode()[-3000:]}")
    return r


_background: list[subprocess.Popen[bytes]] = []


def spendlake_bg(*args: str, log: Path) -> subprocess.Popen[bytes]:
    """A spendlake process in the background; killed at the end of the test if still running."""
    fh = open(log, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "spendlake", *args], stdout=fh, stderr=fh, cwd=ROOT)
    _background.append(proc)
    return proc


@pytest.fixture(autouse=True)
def _reap_background() -> Iterator[None]:
    yield
    while _background:
        proc = _background.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def wait_for(pred: Any, timeout: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
