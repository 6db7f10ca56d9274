"""A real Prometheus server for tests: it scrapes our /metrics and answers PromQL.

Each server is a throw-away process with its own config and TSDB in a work directory, listening on
127.0.0.1 and a free port (never 9090, so a user's own Prometheus is left alone). Tests get servers
from the ``prometheus_factory`` fixture, which stops every server it started at teardown, also when
the test fails; tests/conftest.py does not provide it, so import it explicitly:

    from prometheus import prometheus_factory  # noqa: F401

The binary is Debian's ``prometheus`` package (``apt-get install prometheus``; ``.ci/run`` installs
it); ``SPENDLAKE_TEST_PROMETHEUS`` may name another one. Without it the tests skip, and in CI (``CI``
set) they fail: a test that needs Prometheus and cannot have it is a failed test.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import pytest
import requests

DEBIAN_BINARY = "/usr/bin/prometheus"
READY_TIMEOUT = 60.0
INSTALL_HINT = "apt-get install prometheus"

Result = list[dict[str, Any]]


class PrometheusQueryError(Exception):
    """Prometheus refused a query; ``error_type`` and ``error`` are its own words."""

    def __init__(self, promql: str, error_type: str, error: str) -> None:
        super().__init__(f"Prometheus rejected {promql!r}: {error_type}: {error}")
        self.promql = promql
        self.error_type = error_type
        self.error = error


def find_prometheus() -> str:
    """The prometheus binary; skips the test without one, and fails it in CI."""
    explicit = os.environ.get("SPENDLAKE_TEST_PROMETHEUS")
    if explicit:
        if not os.access(explicit, os.X_OK):
            pytest.fail(f"SPENDLAKE_TEST_PROMETHEUS: got {explicit!r}, expected the path of an executable")
        return explicit
    found = shutil.which("prometheus") or (DEBIAN_BINARY if os.access(DEBIAN_BINARY, os.X_OK) else None)
    if found:
        return found
    message = f"the prometheus binary is not installed ({INSTALL_HINT}; .ci/run does it)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}, and CI must run the tests that need it")
    pytest.skip(message)


def free_port() -> int:
    """A port nothing listens on right now (bound, then closed: someone may still take it first)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _duration(seconds: float) -> str:
    ms = round(seconds * 1000)
    if ms <= 0:
        raise ValueError(f"interval: got {seconds!r}, expected a positive number of seconds")
    return f"{ms}ms"


def by_label(result: Result, label: str) -> dict[str, float]:
    """An instant vector as {value of ``label``: sample value}, e.g. ``{"a": 1.25, "b": 2.5}``."""
    return {sample["metric"].get(label, ""): float(sample["value"][1]) for sample in result}


def value(result: Result) -> float:
    """The value of a one-sample instant vector, e.g. the result of ``sum(...)``."""
    if len(result) != 1:
        raise AssertionError(f"expected exactly one sample, got {len(result)}: {json.dumps(result)}")
    return float(result[0]["value"][1])


_running: set[Prometheus] = set()


class Prometheus:
    """A throw-away Prometheus server scraping given targets every `interval` seconds.

    ``targets`` are ``host:port`` strings scraped at ``/metrics`` in one job, ``spendlake``;
    ``rule_files`` are recording or alerting rule files, evaluated every ``interval`` too.
    Prometheus' own output goes to ``<workdir>/prometheus.log``.

    Prometheus 2.42 hands even static targets to its scraper on a 5 s tick, so the first scrape
    comes 5-6 s after start whatever the interval: start one server per test, not per assertion.
    """

    def __init__(self, workdir: Path, targets: Sequence[str], interval: float = 1.0, port: int | None = None,
                 rule_files: Sequence[Path] = ()) -> None:  # fmt: skip
        bad = [t for t in targets if "/" in t or ":" not in t]
        if bad:
            raise ValueError(f"targets: got {bad!r}, expected host:port strings (scraped at /metrics)")
        _duration(interval)
        self.workdir = Path(workdir)
        self.targets = list(dict.fromkeys(targets))
        self.interval = interval
        self.port = port
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.log_path = self.workdir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._session = requests.Session()

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("Prometheus has not been started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def config(self) -> dict[str, Any]:
        every = _duration(self.interval)
        jobs = [{"job_name": "spendlake", "static_configs": [{"targets": self.targets}]}] if self.targets else []
        return {
            "global": {"scrape_interval": every, "scrape_timeout": every, "evaluation_interval": every},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": jobs,
        }

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def start(self) -> None:
        """Write the config, start the server and return once it answers /-/ready."""
        if self.running:
            raise RuntimeError("Prometheus is already running")
        binary = find_prometheus()
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(json.dumps(self.config(), indent=2))  # JSON is YAML: nothing to quote wrongly
        chosen = self.port
        # A free port can be taken between our probe and Prometheus' bind: then try another one.
        for attempt in range(1 if chosen else 3):
            self.port = chosen or free_port()
            logged = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._spawn(binary, config)
            problem = self._wait_ready(time.monotonic() + READY_TIMEOUT)
            if problem is None:
                return
            self.stop()
            if b"address already in use" not in self.log_path.read_bytes()[logged:]:
                break
        pytest.fail(f"Prometheus did not become ready on {self.url}: {problem}\n{self.log_tail()}")

    def _spawn(self, binary: str, config: Path) -> None:
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.workdir,
            start_new_session=True,  # its own process group, killed as a whole by stop()
        )  # fmt: skip
        _running.add(self)

    def _wait_ready(self, deadline: float) -> str | None:
        assert self.process is not None
        while True:
            code = self.process.poll()
            if code is not None:
                return f"it exited with code {code}"
            try:
                # Checked alive again after the answer: another server may hold the port we picked.
                if self._session.get(f"{self.url}/-/ready", timeout=0.5).status_code == 200 and self.running:
                    return None
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                return f"not ready after {READY_TIMEOUT:.0f} s"
            time.sleep(0.05)

    def stop(self) -> None:
        """Terminate the server's process group (kill it after 10 s); safe to call twice."""
        _running.discard(self)
        proc = self.process
        if proc is not None and proc.returncode is None:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 30)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._log is not None:
            self._log.close()
            self._log = None
        self._session.close()

    def _get(self, path: str, **params: str) -> requests.Response:
        return self._session.get(f"{self.url}{path}", params=params, timeout=30)

    def query(self, promql: str) -> Result:
        """An instant query at the current time; data.result (for a scalar, ``[time, "value"]``)."""
        r = self._get("/api/v1/query", query=promql)
        try:
            body = r.json()
        except ValueError:
            raise PrometheusQueryError(promql, f"HTTP {r.status_code}", r.text[:1000]) from None
        if body.get("status") != "success":
            raise PrometheusQueryError(promql, body.get("errorType", f"HTTP {r.status_code}"), body.get("error", ""))
        result: Result = body["data"]["result"]
        return result

    def wait_for_targets_up(self, timeout: float = 60) -> None:
        """Return once every configured target has been scraped successfully (health "up")."""
        deadline = time.monotonic() + timeout
        while True:
            active = self._get("/api/v1/targets", state="active").json()["data"]["activeTargets"]
            seen = {t["discoveredLabels"].get("__address__"): t for t in active}
            states = {target: seen.get(target, {"health": "not discovered yet"}) for target in self.targets}
            if all(state["health"] == "up" for state in states.values()):
                return
            if time.monotonic() > deadline:
                lines = "".join(f"\n  {target}: {s['health']} {s.get('lastError', '')}" for target, s in states.items())
                raise AssertionError(f"timed out after {timeout:g} s waiting for targets to be up:{lines}")
            time.sleep(0.1)

    def wait_until(self, promql: str, predicate: Callable[[Result], Any], timeout: float = 60) -> Result:
        """Poll ``promql`` until ``predicate(result)`` is true; return that result."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if predicate(result):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:g} s waiting for {promql!r} to satisfy the predicate;"
                    f" last result: {json.dumps(result)}"
                )
            time.sleep(0.1)

    def __enter__(self) -> Prometheus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@atexit.register
def _stop_leftovers() -> None:
    # Servers started outside the fixture and never stopped must not outlive the test run.
    for prom in list(_running):
        prom.stop()


StartPrometheus = Callable[..., Prometheus]


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[StartPrometheus]:
    """``start(targets, interval=1.0, port=None, rule_files=())`` -> a started Prometheus.

    Every server started through it is stopped at teardown, whatever the test's outcome.
    """
    started: list[Prometheus] = []

    def start(targets: Sequence[str], interval: float = 1.0, port: int | None = None,
              rule_files: Sequence[Path] = ()) -> Prometheus:  # fmt: skip
        prom = Prometheus(tmp_path / f"prometheus-{len(started)}", targets, interval, port, rule_files)
        started.append(prom)
        prom.start()
        return prom

    yield start
    for prom in started:
        prom.stop()
