"""The Prometheus harness against a real Prometheus scraping a real exporter on a local port."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry, Counter, start_http_server

import prometheus
from prometheus import Prometheus, PrometheusQueryError, StartPrometheus, by_label, free_port, value
from prometheus import prometheus_factory  # noqa: F401


@pytest.fixture
def exporter() -> Iterator[tuple[str, Counter]]:
    """A /metrics endpoint on a free port serving ``demo_cost_usd_total{team}``; (target, counter)."""
    registry = CollectorRegistry()
    cost = Counter("demo_cost_usd", "Demo spend in USD.", ["team"], registry=registry)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    yield f"127.0.0.1:{server.server_port}", cost
    server.shutdown()
    server.server_close()
    thread.join(10)


RULES = """\
groups:
  - name: demo
    rules:
      - record: team:demo_cost_usd:sum
        expr: sum by (team) (demo_cost_usd_total)
      - alert: DemoSpendHigh
        expr: sum(demo_cost_usd_total) > 4
"""


def test_scrapes_sums_exactly_and_follows_changes(prometheus_factory: StartPrometheus, exporter: tuple[str, Counter],
                                                  tmp_path: Path) -> None:  # fmt: skip
    target, cost = exporter
    cost.labels(team="a").inc(1.25)
    cost.labels(team="b").inc(2.5)
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    prom = prometheus_factory([target], interval=1.0, rule_files=[rules])
    prom.wait_for_targets_up(timeout=30)

    by_team = prom.wait_until("sum by (team) (demo_cost_usd_total)", lambda r: len(r) == 2, timeout=15)
    assert by_label(by_team, "team") == {"a": 1.25, "b": 2.5}
    assert value(prom.query("sum(demo_cost_usd_total)")) == 3.75
    assert prom.query('ALERTS{alertname="DemoSpendHigh"}') == []

    cost.labels(team="a").inc(0.5)
    prom.wait_until("sum(demo_cost_usd_total)", lambda r: r and value(r) == 4.25, timeout=15)
    assert by_label(prom.query("sum by (team) (demo_cost_usd_total)"), "team") == {"a": 1.75, "b": 2.5}

    # The rule files are loaded and evaluated every interval too.
    recorded = prom.wait_until("team:demo_cost_usd:sum", lambda r: by_label(r, "team").get("a") == 1.75, timeout=15)
    assert by_label(recorded, "team") == {"a": 1.75, "b": 2.5}
    prom.wait_until('ALERTS{alertname="DemoSpendHigh", alertstate="firing"}', lambda r: len(r) == 1, timeout=15)


def test_errors_carry_prometheus_words(prometheus_factory: StartPrometheus) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    prom = prometheus_factory([dead])

    with pytest.raises(PrometheusQueryError, match="parse error") as err:
        prom.query("sum(demo_cost_usd_total")
    assert err.value.error_type == "bad_data"

    with pytest.raises(AssertionError, match=r'last result: \[\{"metric": \{\}, "value": \[[0-9.]+, "1"\]\}\]'):
        prom.wait_until("vector(1)", lambda r: False, timeout=0.3)

    prom.wait_until("up == 0", lambda r: len(r) == 1, timeout=30)  # scraped once, and failed
    with pytest.raises(AssertionError, match=rf"{dead}: down .*connection refused"):
        prom.wait_for_targets_up(timeout=0.5)


def test_start_failure_shows_the_log_and_leaves_nothing_running(tmp_path: Path) -> None:
    bad_rules = tmp_path / "bad.yml"
    bad_rules.write_text("groups:\n  - name: x\n    rules:\n      - record: r\n        expr: sum(\n")
    prom = Prometheus(tmp_path / "p", [], rule_files=[bad_rules])
    with pytest.raises(pytest.fail.Exception, match=r"(?s)did not become ready.*bad\.yml"):
        prom.start()
    assert prom.process is not None and prom.process.returncode is not None


def test_a_port_taken_meanwhile_is_replaced(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        ports = iter([taken, free_port()])
        monkeypatch.setattr(prometheus, "free_port", lambda: next(ports))
        with Prometheus(tmp_path / "p", []) as prom:
            assert prom.port != taken
            assert value(prom.query("vector(1)")) == 1
        assert "address already in use" in prom.log_path.read_text()


def test_stop_ends_the_process_even_when_the_test_fails(tmp_path: Path) -> None:
    prom = Prometheus(tmp_path / "p", [])
    with pytest.raises(RuntimeError, match="boom"), prom:
        assert requests.get(f"{prom.url}/-/ready", timeout=5).status_code == 200
        pid = prom.process.pid if prom.process else -1
        raise RuntimeError("boom")
    assert prom.process is not None and prom.process.returncode is not None
    assert not Path(f"/proc/{pid}").exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{prom.url}/-/ready", timeout=5)


def test_a_missing_binary_skips_outside_ci_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SPENDLAKE_TEST_PROMETHEUS", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(prometheus, "DEBIAN_BINARY", str(tmp_path / "prometheus"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install prometheus"):
        prometheus.find_prometheus()
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="apt-get install prometheus"):
        prometheus.find_prometheus()
