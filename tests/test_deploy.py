"""The compose stack (compose.yaml, Dockerfile, .dockerignore, deploy/), checked without Docker.

No Docker engine runs here, so every file is checked against the code it configures and by the
programs that read it in the stack:

- compose.yaml: five services with healthchecks and `depends_on` conditions, a lake volume, every
  mounted or built file present, container paths that meet (config paths, rule globs, the Slack
  secret file), ports and environment names that match deploy/spendlake.toml and the settings
  code, and no secret values anywhere in the stack's files.
- Dockerfile and .dockerignore: a slim Python 3.11 image, non-root, `pip install .` of exactly
  what pyproject.toml packages, nothing of it ignored, no lakes or secrets in the context.
- deploy/spendlake.toml loads with spendlake.settings.load; `spendlake budgets` runs on it, and
  `spendlake serve` refuses it without the Slack variable, as compose.yaml's header says.
- Prometheus: `promtool check config`, `check rules` and `test rules` (every rule fires in one
  case and stays quiet in another); the rules' thresholds follow the config's [alerts].
- Alertmanager: `amtool check-config` and routing by severity; then a real Alertmanager started
  with compose.yaml's own entrypoint script (container paths mapped to temporary ones) turns the
  Slack URL from the environment into its secret file and posts an alert to a local Slack
  look-alike, the warning of the same budget inhibited.
- Grafana: dashboard structure (panels, titles, layout, the provisioned datasource uid) and every
  expression of the dashboard, the rules and the README's PromQL table uses only series that
  /metrics really exposes, rendered from a real lake (ingested with `spendlake ingest`, rolled up,
  with budgets, consumer health and an alert outbox); then a real Prometheus scrapes that
  /metrics with our rules loaded: every dashboard query returns data and the budget alerts fire.

promtool comes from Debian's `prometheus` package, amtool and the Alertmanager binary from
`prometheus-alertmanager`; without them these tests skip, and in CI (``CI`` set) they fail.

Mutations tried (each made a test here fail): `le="10"` instead of the regex in ExpensiveQuery
(the Prometheus 3 `le="10.0"` case stops firing); the token_type filter removed from
UnusualTokenUsage; `sum` dropped from CostSpike; owner_type dropped from UserBudgetWarning;
`spendlake_budget_utilisation_ratio` in a panel; le="10.0" only (the live-exposition check of the
bound); metrics listen 127.0.0.1:9464 in deploy/spendlake.toml; the Prometheus target
spendlake:9465; an `api_url: https://hooks.slack.com/services/T…` in alertmanager.yml; a
`*lake*` line in .dockerignore (it ignored the spendlake package); no `umask 077` in the
Alertmanager entrypoint (the secret file readable by all); the Kafka healthcheck creating topic
`llm_usage`; the datasource uid changed; the lake volume mounted at /data.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import spendlake
from intake_env import intake_counters
from prometheus import StartPrometheus
from prometheus import prometheus_factory  # noqa: F401
from receivers import HttpReceiver

try:
    import yaml
except ImportError:  # PyYAML is a test dependency; in CI its absence is a failure
    if os.environ.get("CI"):
        raise
    pytest.skip("PyYAML is not installed (pip install pyyaml)", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SPENDLAKE_TOML = DEPLOY / "spendlake.toml"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
RULES_YML = DEPLOY / "prometheus" / "rules" / "spendlake.yml"
RULES_TEST_YML = DEPLOY / "prometheus" / "tests" / "spendlake_test.yml"
ALERTMANAGER_YML = DEPLOY / "alertmanager" / "alertmanager.yml"
DATASOURCE_YML = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARDS_YML = DEPLOY / "grafana" / "provisioning" / "dashboards" / "spendlake.yml"
DASHBOARD_JSON = DEPLOY / "grafana" / "dashboards" / "spendlake.json"

SERVICES = {"kafka", "spendlake", "prometheus", "alertmanager", "grafana"}
OFFICIAL_IMAGES = {"kafka": "apache/kafka", "prometheus": "prom/prometheus", "alertmanager": "prom/alertmanager",
                   "grafana": "grafana/grafana"}  # fmt: skip
METRIC = re.compile(r"\bspendlake_[a-z0-9_]*[a-z0-9]\b")
# Grafana's own variables the dashboard may use, and what the live check puts in their place
GRAFANA_VARIABLES = {"$__rate_interval": "1m"}


# --- helpers -----------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@functools.cache
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = load_yaml(COMPOSE)
    return doc


@functools.cache
def deploy_config() -> Any:
    from spendlake import settings

    return settings.load(str(SPENDLAKE_TOML), env={})


def tool(name: str, package: str, *alternatives: str) -> str:
    """A Debian-packaged binary; skips the test without it, and fails it in CI."""
    for candidate in (name, *alternatives):
        found = shutil.which(candidate) or (candidate if os.path.isabs(candidate) and os.access(candidate, os.X_OK) else None)
        if found:
            return found
    message = f"{name} is not installed (apt-get install --no-install-recommends {package}; .ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}, and CI must run the tests that need it")
    pytest.skip(message)


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


# Compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err},
# ${VAR:+alt}, ${VAR+alt}, $VAR; "$$" is a literal "$".
_INTERPOLATION = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(1):
            return "$"
        name, op, arg = m.group(2) or m.group(5), m.group(3), m.group(4) or ""
        got = env.get(name)
        if op == ":-":
            return got if got else arg
        if op == "-":
            return got if got is not None else arg
        if op in (":?", "?"):
            missing = not got if op == ":?" else got is None
            if missing:
                raise KeyError(f"{name}: {arg}")
            return got or ""
        if op == ":+":
            return arg if got else ""
        if op == "+":
            return arg if got is not None else ""
        return got or ""

    return _INTERPOLATION.sub(sub, value)


def strings(node: Any) -> Iterator[str]:
    """Every string of a parsed YAML document, keys included."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)


def referenced_variables(node: Any) -> set[str]:
    names = set()
    for s in strings(node):
        for m in _INTERPOLATION.finditer(s):
            if not m.group(1):
                names.add(m.group(2) or m.group(5))
    return names


@dataclass(frozen=True)
class Mount:
    source: str  # "./relative/path" (bind) or a volume name
    target: str
    bind: bool


def mounts(service: str) -> list[Mount]:
    out = []
    for spec in compose()["services"][service].get("volumes", []):
        assert isinstance(spec, str), f"{service}: volumes in the short syntax, got {spec!r}"
        source, target, *_ = spec.split(":")
        out.append(Mount(source, target, source.startswith((".", "/"))))
    return out


def container_to_host(service: str, path: str, volumes: Mapping[str, Path] | None = None,
                      tmpfs: Mapping[str, Path] | None = None) -> Path | None:  # fmt: skip
    """Where a path inside a service's container comes from on the host: a bind mount (the longest
    target that contains it), else a named volume or tmpfs if mapped; None when only the image has it."""
    best: tuple[str, Path] | None = None
    candidates: list[tuple[str, Path]] = []
    for m in mounts(service):
        if m.bind:
            candidates.append((m.target, (ROOT / m.source).resolve()))
        elif volumes and m.source in volumes:
            candidates.append((m.target, volumes[m.source]))
    for target, host in (tmpfs or {}).items():
        candidates.append((target, host))
    for target, host in candidates:
        if (path == target or path.startswith(target.rstrip("/") + "/")) and (best is None or len(target) > len(best[0])):
            best = (target, host)
    if best is None:
        return None
    rest = path[len(best[0]):].lstrip("/")
    return best[1] / rest if rest else best[1]


def flag(args: list[str], name: str) -> str:
    """The value of `--name=value` in a command list."""
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    assert len(values) == 1, f"--{name}: expected once in {args}"
    return values[0]


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD_JSON.read_text(encoding="utf-8"))
    return doc


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) of every target of the dashboard."""
    return [(p["title"], t["expr"]) for p in dashboard()["panels"] if p.get("type") != "row" for t in p["targets"]]


def rules() -> list[dict[str, Any]]:
    return [r for g in load_yaml(RULES_YML)["groups"] for r in g["rules"]]


def rule(name: str) -> dict[str, Any]:
    (found,) = [r for r in rules() if r.get("alert") == name]
    return found


def metric_names(text: str) -> set[str]:
    return set(METRIC.findall(text))


# --- 1. compose.yaml ---------------------------------------------------------------------------


def test_compose_has_the_five_services_with_healthchecks_and_ordered_starts() -> None:
    doc = compose()
    services = doc["services"]
    assert set(services) == SERVICES
    for name, svc in services.items():
        check = svc.get("healthcheck")
        assert check and check.get("test"), f"{name}: no healthcheck"
        test = check["test"]
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, f"{name}: {test!r}"
        assert svc.get("restart") == "unless-stopped", name
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert cond.get("condition") in ("service_healthy", "service_started"), f"{name} → {dep}: {cond}"
        if name in OFFICIAL_IMAGES:
            image, _, tag = svc["image"].partition(":")
            assert image == OFFICIAL_IMAGES[name], f"{name}: {svc['image']}"
            assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: pin a release, got {svc['image']!r}"
    # who waits for whom (and no cycle)
    assert services["spendlake"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["prometheus"]["depends_on"]["alertmanager"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"depends_on cycle: {' → '.join((*path, name))}"
        for dep in services[name].get("depends_on") or {}:
            visit(dep, (*path, name))

    for name in services:
        visit(name, ())
    # every published port is for this machine only
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port!r} is published on every interface"
    # named volumes, the lake's among them
    declared = set(doc.get("volumes") or {})
    used = {m.source for s in services for m in mounts(s) if not m.bind}
    assert used <= declared, f"volumes used but not declared: {used - declared}"
    assert "lake" in declared


def test_compose_mounts_and_builds_only_files_that_exist() -> None:
    svc = compose()["services"]
    build = svc["spendlake"]["build"]
    assert (ROOT / build["context"]).resolve() == ROOT
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    for name in SERVICES:
        for m in mounts(name):
            if m.bind:
                assert (ROOT / m.source).exists(), f"{name}: mounts {m.source}, which does not exist"
                assert m.source.startswith("./deploy/"), f"{name}: mount {m.source} from deploy/ only"


def test_compose_container_paths_meet() -> None:
    """Each path a service is told about inside its container is one a mount provides."""
    services = compose()["services"]
    cfg = deploy_config()

    # spendlake: its --config is deploy/spendlake.toml, its lake is on the `lake` volume
    command = services["spendlake"]["command"]
    config_path = command[command.index("--config") + 1]
    assert container_to_host("spendlake", config_path) == SPENDLAKE_TOML.resolve()
    lake_mount = [m for m in mounts("spendlake") if m.source == "lake"]
    assert len(lake_mount) == 1
    lake_path = cfg.get("lake", "path")
    assert lake_path == lake_mount[0].target or lake_path.startswith(lake_mount[0].target + "/"), (
        f"[lake] path {lake_path} is not on the lake volume ({lake_mount[0].target})"
    )

    # prometheus: its config, and the rule files its config names, relative to the config
    args = services["prometheus"]["command"]
    prom_config = flag(args, "config.file")
    assert container_to_host("prometheus", prom_config) == PROMETHEUS_YML.resolve()
    assert container_to_host("prometheus", flag(args, "storage.tsdb.path")) is None  # a named volume
    assert any(m.target == flag(args, "storage.tsdb.path") and not m.bind for m in mounts("prometheus"))
    for pattern in load_yaml(PROMETHEUS_YML)["rule_files"]:
        inside = str(Path(prom_config).parent / pattern)
        host_dir = container_to_host("prometheus", str(Path(inside).parent))
        assert host_dir is not None, f"rule_files {pattern}: {inside} is not mounted"
        assert sorted(host_dir.glob(Path(inside).name)) == [RULES_YML.resolve()]

    # alertmanager: its config
    am = services["alertmanager"]
    assert container_to_host("alertmanager", flag(am["command"], "config.file")) == ALERTMANAGER_YML.resolve()

    # grafana: provisioning, the dashboard folder the provider reads, the home dashboard
    provisioning = container_to_host("grafana", "/etc/grafana/provisioning")
    assert provisioning == (DEPLOY / "grafana" / "provisioning").resolve()
    (provider,) = load_yaml(DASHBOARDS_YML)["providers"]
    assert container_to_host("grafana", provider["options"]["path"]) == DASHBOARD_JSON.parent.resolve()
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert container_to_host("grafana", home) == DASHBOARD_JSON.resolve(), home


def test_no_secret_values_in_the_stack() -> None:
    files = [COMPOSE, DOCKERFILE, DOCKERIGNORE, *sorted(p for p in DEPLOY.rglob("*") if p.is_file())]
    leaks = {
        "a Slack webhook": re.compile(r"hooks\.slack\.com/services/[A-Z0-9]+/"),
        "a Slack token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]+"),
        "a 32-character key (PagerDuty routing key?)": re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9]{32}(?![A-Za-z0-9])"),
        # a value after password= / password: that is not ${VAR...} or a placeholder (…)
        "a password": re.compile(r"(?i)password\s*[=:]\s*['\"]?(?!\$\{|…|\.\.\.)[^\s'\"$]+"),
    }
    for path in files:
        # compose interpolations are the user's values, not the file's: ${GRAFANA_ADMIN_PASSWORD:-} → ${}
        text = re.sub(r"\$\{[^}]*\}", "${}", path.read_text(encoding="utf-8"))
        for what, pattern in leaks.items():
            m = pattern.search(text)
            assert m is None, f"{path.relative_to(ROOT)}: {what}: {m.group(0)!r}"
    # environment values that look like secrets only come from the user's environment
    secretish = re.compile(r"PASSWORD|SECRET|TOKEN|WEBHOOK|ROUTING_KEY|API_KEY")
    for name, svc in compose()["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if secretish.search(key):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+(:-)?\}", str(value)), f"{name}: {key}={value!r}"
    # Alertmanager reads the Slack URL from a file; no inline URL, key or password
    inline = {"api_url", "slack_api_url", "routing_key", "service_key", "auth_password", "password", "bot_token",
              "pagerduty_url", "opsgenie_api_key", "webhook_url", "url"}  # fmt: skip

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                assert k not in inline, f"alertmanager.yml {where}{k}: a secret inline (use the *_file form)"
                walk(v, f"{where}{k}.")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}{i}.")

    walk(load_yaml(ALERTMANAGER_YML), "")
    # spendlake.toml names its secrets (*_env / *_file), as settings require
    raw = tomllib.loads(SPENDLAKE_TOML.read_text(encoding="utf-8"))
    for channel in raw.get("channels", []):
        for key in channel:
            assert not re.search(r"password$|routing_key$|token$", key), f"[[channels]] {channel['name']}: {key}"
        if channel["type"] == "slack":
            assert "url" not in channel


def toml_env_names() -> set[str]:
    names = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k.endswith("_env") and isinstance(v, str):
                    names.add(v)
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(tomllib.loads(SPENDLAKE_TOML.read_text(encoding="utf-8")))
    return names


def test_environment_names_match_the_code() -> None:
    from spendlake.settings import SCALARS

    services = compose()["services"]
    secrets = toml_env_names()
    assert "SPENDLAKE_SLACK_WEBHOOK_URL" in secrets
    overrides = {f"SPENDLAKE_{s.upper()}_{k.upper()}" for s, k in SCALARS}
    env = services["spendlake"]["environment"]
    for key, value in env.items():
        assert key in secrets or key in overrides, f"spendlake: {key} is neither a *_env of spendlake.toml nor a setting"
        if key in secrets:  # passed through under the same name
            assert referenced_variables(value) == {key}, f"{key}: {value!r}"
    assert secrets <= set(env), f"serve needs {secrets - set(env)} (it refuses to start without them)"
    # every variable the file reads from the user's environment is spendlake's or documented in its header
    header = "".join(line for line in COMPOSE.read_text().splitlines(keepends=True) if line.startswith("#"))
    for name in referenced_variables(compose()):
        assert name in secrets or name in overrides or name in header, f"${{{name}}} is neither spendlake's nor documented"
    # Alertmanager: the variable its entrypoint writes to the file its config reads
    am = services["alertmanager"]
    script = interpolate(am["entrypoint"][2], {})
    (var,) = [k for k, v in am["environment"].items() if referenced_variables(v) == {"SPENDLAKE_SLACK_WEBHOOK_URL"}]
    assert f"${{{var}}}" in script or f"${var}" in script
    written = re.search(r">\s*(\S+)", script)
    assert written, script
    url_file = load_yaml(ALERTMANAGER_YML)["global"]["slack_api_url_file"]
    assert written.group(1) == url_file
    assert any(url_file.startswith(t.rstrip("/") + "/") for t in am["tmpfs"]), "the secret file is not on a tmpfs"
    for receiver in load_yaml(ALERTMANAGER_YML)["receivers"]:
        for sc in receiver.get("slack_configs", []):
            assert sc.get("api_url_file", url_file) == url_file


def test_ports_and_addresses_match() -> None:
    services = compose()["services"]
    cfg = deploy_config()
    # /metrics: the config's listen address, published, probed, exposed and scraped
    host, _, port = cfg.get("metrics", "listen").rpartition(":")
    assert host == "0.0.0.0", "inside the container /metrics must listen on every interface, or Prometheus cannot reach it"
    assert f"127.0.0.1:{port}:{port}" in services["spendlake"]["ports"]
    assert f"http://127.0.0.1:{port}/metrics" in " ".join(services["spendlake"]["healthcheck"]["test"])
    assert re.search(rf"^EXPOSE {port}$", DOCKERFILE.read_text(), re.M)
    # the intake: listening on every interface inside the container, published on the host's loopback
    ihost, _, iport = cfg.get("intake", "listen").rpartition(":")
    assert ihost == "0.0.0.0" and f"127.0.0.1:{iport}:{iport}" in services["spendlake"]["ports"]
    assert re.search(rf"^EXPOSE {iport}$", DOCKERFILE.read_text(), re.M)
    prom = load_yaml(PROMETHEUS_YML)
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert jobs["spendlake"]["static_configs"] == [{"targets": [f"spendlake:{port}"]}]
    # the rules' up{job="spendlake"} is this job
    assert 'up{job="spendlake"}' in RULES_YML.read_text()
    # Alertmanager
    am_port = flag(services["alertmanager"]["command"], "web.listen-address").rpartition(":")[2]
    assert prom["alerting"]["alertmanagers"] == [{"static_configs": [{"targets": [f"alertmanager:{am_port}"]}]}]
    assert f"127.0.0.1:{am_port}:{am_port}" in services["alertmanager"]["ports"]
    # Grafana's datasource is the prometheus service, at the scrape interval
    (ds,) = load_yaml(DATASOURCE_YML)["datasources"]
    assert ds["url"] == "http://prometheus:9090" and "127.0.0.1:9090:9090" in services["prometheus"]["ports"]
    assert ds["jsonData"]["timeInterval"] == prom["global"]["scrape_interval"]
    # Kafka: spendlake's bootstrap server is the containers' advertised listener; the topic it
    # consumes is the one the healthcheck creates
    kafka_env = services["kafka"]["environment"]
    advertised = dict(reversed(x.split("://")) for x in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    bootstrap = cfg.get("kafka", "bootstrap_servers")
    assert bootstrap in advertised and bootstrap.startswith("kafka:"), (bootstrap, advertised)
    assert advertised.get("127.0.0.1:9092") and "127.0.0.1:9092:9092" in services["kafka"]["ports"]
    check = " ".join(services["kafka"]["healthcheck"]["test"])
    assert f"--bootstrap-server {bootstrap}" in check and f"--topic {cfg.get('kafka', 'topic')} " in check
    cluster_id = str(kafka_env["CLUSTER_ID"])
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16, "CLUSTER_ID: a base64 UUID"


def test_dockerfile_builds_the_package_as_a_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    lines = [line.strip() for line in re.sub(r"\\\n", " ", text).splitlines() if line.strip() and not line.startswith("#")]
    (base,) = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base
    # the package with its librdkafka client (the 'fast' extra): a container ingests at full speed;
    # and boto3 (the 's3' extra): a container's lake may live on object storage
    assert any(line.startswith('RUN pip install ".[fast,s3]"') for line in lines)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    assert 'ENTRYPOINT ["spendlake"]' in lines
    (cmd,) = [json.loads(line[4:]) for line in lines if line.startswith("CMD ")]
    assert cmd == compose()["services"]["spendlake"]["command"]
    # the lake directory exists in the image, owned by the user (a new named volume copies that)
    lake_target = next(m.target for m in mounts("spendlake") if m.source == "lake")
    assert re.search(rf"mkdir -p [^&]*{re.escape(lake_target)}", text)
    assert re.search(r"chown -R \S+ /var/lib/spendlake", text) and lake_target.startswith("/var/lib/spendlake/")

    # what COPY brings in is what pyproject.toml packages, and .dockerignore ignores none of it
    ignored = dockerignore()
    copied = [src for line in lines if line.startswith("COPY ") for src in line.split()[1:-1] if not src.startswith("--")]
    for src in copied:
        assert (ROOT / src).exists(), f"COPY {src}: no such file"
        assert not ignored(src), f"COPY {src}: .dockerignore excludes it"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", project["project"]["readme"], *project["tool"]["setuptools"]["packages"]}
    assert needed <= set(copied), f"not copied: {needed - set(copied)}"
    for package, globs in project["tool"]["setuptools"]["package-data"].items():
        for pattern in globs:
            files = [p for p in (ROOT / package).glob(pattern) if p.is_file()]
            assert files, f"{package}/{pattern}: matches nothing"
            for f in files:
                rel = f.relative_to(ROOT).as_posix()
                assert not ignored(rel), f"{rel} (package data) is excluded by .dockerignore"
    for package in project["tool"]["setuptools"]["packages"]:
        for f in (ROOT / package).rglob("*.py"):
            rel = f.relative_to(ROOT).as_posix()
            assert not ignored(rel), f"{rel} is excluded by .dockerignore"
    # ...and it keeps history, secrets, lakes, caches and tests out of the context
    for path in (".git/config", ".env", "lake/events/date=2026-01-01/x.parquet", "demo-lake/_state/spendlake.duckdb",
                 "spendlake/__pycache__/cli.cpython-311.pyc", "tests/test_deploy.py", "x/lake/_state/spendlake.duckdb"):
        assert ignored(path), f"{path} would be sent to the Docker daemon"


def dockerignore() -> Callable[[str], bool]:
    """A matcher with Docker's .dockerignore rules (Go filepath.Match per path element, `**` any
    number of directories, a pattern also excluding everything under a matching directory)."""
    patterns = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("!"), "exceptions are not supported by this check"
        pattern = os.path.normpath(line.strip("/"))
        regex = ""
        for part in re.split(r"(\*\*/?|\*|\?)", pattern):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
        patterns.append(re.compile(regex + "(?:/.*)?"))

    def ignored(path: str) -> bool:
        return any(p.fullmatch(path) for p in patterns)

    return ignored


# --- 2. deploy/spendlake.toml --------------------------------------------------------------------


def test_deploy_config_loads_and_serve_needs_its_secret(tmp_path: Path) -> None:
    from alerting.config import check_secrets

    cfg = deploy_config()  # raises ConfigError listing every problem
    assert {b.owner_type for b in cfg.hierarchy.budgets} == {"customer", "team", "virtual_key"}
    assert [c.url_env for c in cfg.alerting.channels if c.type == "slack"] == ["SPENDLAKE_SLACK_WEBHOOK_URL"]
    # the secret is looked up where it is used: present → no problem, absent → serve says which
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPENDLAKE_SLACK_WEBHOOK_URL", "http://127.0.0.1:9/services/x")
        assert check_secrets(cfg.alerting) == []
        mp.delenv("SPENDLAKE_SLACK_WEBHOOK_URL")
        assert check_secrets(cfg.alerting) == [
            "channel 'finops-slack': environment variable SPENDLAKE_SLACK_WEBHOOK_URL (url_env) is not set"]

    # the commands compose.yaml's header shows, on this config (a local lake instead of the volume)
    lake = tmp_path / "lake"
    (lake / "events").mkdir(parents=True)  # an empty lake, as serve leaves the volume when it starts
    r = spendlake("budgets", "--config", str(SPENDLAKE_TOML), "--lake", str(lake), "--format", "json", check=True)
    budgets = json.loads(r.stdout)
    assert {(b["type"], b["id"]) for b in budgets} >= {("customer", "customer-acme"), ("team", "team-engineering"),
                                                       ("virtual_key", "vk-dev-alice")}  # fmt: skip
    assert len(budgets) == len(cfg.hierarchy.budgets)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDLAKE_")}
    r2 = subprocess.run([sys.executable, "-m", "spendlake", "serve", "--config", str(SPENDLAKE_TOML), "--lake",
                         str(lake), "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=60, cwd=ROOT,
                        env=env)  # fmt: skip
    assert r2.returncode == 2, r2.stderr
    assert "SPENDLAKE_SLACK_WEBHOOK_URL (url_env) is not set" in r2.stderr
    assert "the variable SPENDLAKE_INTAKE_TOKENS is not set" in r2.stderr  # in the same one message


def test_rule_thresholds_follow_the_config_alerts(exposition: Exposition) -> None:
    from aggregator.rollup import COST_BUCKETS

    alerts = deploy_config().alerting.rules
    window = f"[{int(alerts.spike_window_s // 60)}m]"
    # ExpensiveQuery: the bucket bound is [alerts] expensive_request_usd, as the exporter writes it
    # and as Prometheus 3 stores it (le normalised to a float: "10" → "10.0")
    expr = rule("ExpensiveQuery")["expr"]
    bounds = set(re.findall(r'le=~"([^"]+)"', expr))
    assert len(bounds) == 1 and f"{window}))" in expr
    le = re.compile(bounds.pop().replace("\\\\", "\\"))
    assert alerts.expensive_request_usd in COST_BUCKETS
    exported = set(re.findall(r'spendlake_request_cost_usd_bucket\{[^}]*le="([^"]+)"', exposition.text))
    matching = {v for v in exported if le.fullmatch(v)}
    assert len(matching) == 1 and float(matching.pop()) == alerts.expensive_request_usd, exported
    assert le.fullmatch(repr(float(alerts.expensive_request_usd)))  # Prometheus 3
    # CostSpike and UnusualTokenUsage: the seed's numbers, which are spendlake's defaults
    spike = rule("CostSpike")["expr"]
    assert f"{window})) > {alerts.spike_floor_usd:g}" in spike
    tokens = rule("UnusualTokenUsage")["expr"]
    assert f"{window})) > {alerts.token_rate_limit / alerts.spike_window_s:g}" in tokens
    # the budget rules' thresholds are among [alerts] budget_thresholds
    for name in ("UserBudgetWarning", "UserBudgetCritical", "TeamBudgetCritical", "CustomerBudgetCritical"):
        threshold = float(rule(name)["expr"].rsplit(">", 1)[1])
        assert threshold in alerts.budget_thresholds, (name, threshold)


# --- 3. Prometheus: promtool ---------------------------------------------------------------------


def promtool() -> str:
    return tool("promtool", "prometheus", "/usr/bin/promtool")


def test_promtool_checks_the_config_and_the_rules() -> None:
    binary = promtool()
    r = run(binary, "check", "config", str(PROMETHEUS_YML))
    assert r.returncode == 0 and "SUCCESS: 1 rule files found" in r.stdout, r.stdout + r.stderr
    r = run(binary, "check", "rules", str(RULES_YML))
    assert r.returncode == 0 and f"SUCCESS: {len(rules())} rules found" in r.stdout, r.stdout + r.stderr


def test_promtool_unit_tests_pass_and_cover_every_rule() -> None:
    r = run(promtool(), "test", "rules", str(RULES_TEST_YML))
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
    cases = [c for t in load_yaml(RULES_TEST_YML)["tests"] for c in t["alert_rule_test"]]
    for name in (r["alert"] for r in rules()):
        fires = [c for c in cases if c["alertname"] == name and c.get("exp_alerts")]
        quiet = [c for c in cases if c["alertname"] == name and not c.get("exp_alerts")]
        assert fires and quiet, f"{name}: needs a case where it fires and one where it does not"


def test_every_rule_has_a_severity_alertmanager_routes_and_a_summary() -> None:
    am = load_yaml(ALERTMANAGER_YML)
    receivers = {r["name"] for r in am["receivers"]}
    routes = {m: r["receiver"] for r in am["route"]["routes"] for m in r["matchers"]}
    for r in rules():
        severity = r["labels"]["severity"]
        assert severity in ("warning", "critical"), r["alert"]
        receiver = routes.get(f'severity="{severity}"', am["route"]["receiver"])
        assert receiver in receivers
        assert r["annotations"].get("summary"), r["alert"]


# --- 4. Alertmanager -------------------------------------------------------------------------------


def amtool() -> str:
    return tool("amtool", "prometheus-alertmanager", "/usr/bin/amtool")


def test_amtool_checks_the_config_and_routes_by_severity() -> None:
    binary = amtool()
    r = run(binary, "check-config", str(ALERTMANAGER_YML))
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
    for labels, receiver in ((["severity=critical", "alertname=TeamBudgetCritical"], "slack-critical"),
                             (["severity=warning", "alertname=UserBudgetWarning"], "slack"),
                             (["alertname=Unlabelled"], "slack")):  # fmt: skip
        r = run(binary, "config", "routes", "test", f"--config.file={ALERTMANAGER_YML}", *labels)
        assert r.returncode == 0 and r.stdout.split() == [receiver], (labels, r.stdout, r.stderr)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_alertmanager_gets_the_slack_url_from_the_environment_and_posts_to_slack(tmp_path: Path) -> None:
    """compose.yaml's Alertmanager entrypoint and command, run with Debian's Alertmanager: container
    paths (mounts, the tmpfs, the image's binary) mapped to temporary ones, nothing else changed."""
    binary = tool("prometheus-alertmanager", "prometheus-alertmanager", "alertmanager")
    am = compose()["services"]["alertmanager"]
    tmpfs = {t: tmp_path / "tmpfs" / t.strip("/").replace("/", "_") for t in am["tmpfs"]}
    volumes = {m.source: tmp_path / "volumes" / m.source for m in mounts("alertmanager") if not m.bind}
    for d in (*tmpfs.values(), *volumes.values()):
        d.mkdir(parents=True)
    # the config, with its container paths mapped too
    paths = {m.target: container_to_host("alertmanager", m.target, volumes, tmpfs) for m in mounts("alertmanager")}
    paths.update(tmpfs)
    paths["/bin/alertmanager"] = Path(binary)

    def host(text: str) -> str:
        # one pass, whole paths only: /alertmanager must not match inside /etc/alertmanager/...
        alternatives = "|".join(re.escape(t) for t in sorted(paths, key=len, reverse=True))
        return re.sub(rf"(?<![\w./-])({alternatives})(?![\w.-])", lambda m: str(paths[m.group(1)]), text)

    config = tmp_path / "alertmanager.yml"
    config.write_text(host(ALERTMANAGER_YML.read_text()))
    paths[flag(am["command"], "config.file")] = config
    port = _free_port()
    args = [host(interpolate(a, {})) for a in am["command"]]
    args = [f"--web.listen-address=127.0.0.1:{port}" if a.startswith("--web.listen-address=") else a for a in args]
    entrypoint = [interpolate(a, {}) for a in am["entrypoint"]]
    entrypoint[2] = host(entrypoint[2])

    with HttpReceiver("/services/TEST/HOOK/secretpath") as slack:
        env = {k: interpolate(str(v), {"SPENDLAKE_SLACK_WEBHOOK_URL": slack.url}) for k, v in am["environment"].items()}
        log = open(tmp_path / "alertmanager.log", "wb")
        proc = subprocess.Popen([*entrypoint, *args], env={"PATH": os.environ["PATH"], **env}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, (tmp_path / "alertmanager.log").read_text()[-3000:]
                try:
                    if requests.get(f"{base}/-/ready", timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                assert time.monotonic() < deadline, "Alertmanager did not become ready"
                time.sleep(0.1)
            # the secret went to the file the config reads, readable by Alertmanager's user only
            secret = Path(host(load_yaml(ALERTMANAGER_YML)["global"]["slack_api_url_file"]))
            assert secret.read_text() == slack.url
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600
            assert slack.url not in config.read_text()

            budget = {"budget_id": "virtual_key:vk-dev-alice:0", "owner_type": "virtual_key",
                      "owner_id": "vk-dev-alice", "owner_name": "Alice", "reset_duration": "1M"}  # fmt: skip
            alerts = [
                {"labels": {"alertname": "UserBudgetCritical", "severity": "critical", **budget},
                 "annotations": {"summary": "User Alice (vk-dev-alice) at 90% of budget",
                                 "description": "Current: $475.00 / $500.00 (95%) of the 1M budget"}},
                {"labels": {"alertname": "UserBudgetWarning", "severity": "warning", **budget},
                 "annotations": {"summary": "User Alice (vk-dev-alice) at 80% of budget"}},
            ]  # fmt: skip
            posted = requests.post(f"{base}/api/v2/alerts", json=alerts, timeout=10)
            assert posted.status_code == 200, posted.text
            (request,) = slack.wait_for(1, timeout=30)  # group_wait 10s
            body = request.json
            assert body["channel"] == "#llm-alerts"
            (attachment,) = body["attachments"]
            assert attachment["title"] == "🚨 Critical: UserBudgetCritical" and attachment["color"] == "danger"
            assert attachment["text"].splitlines()[:2] == ["User Alice (vk-dev-alice) at 90% of budget",
                                                           "Current: $475.00 / $500.00 (95%) of the 1M budget"]  # fmt: skip
            time.sleep(2)  # the warning's group was due at the same time: inhibited, it sends nothing
            assert len(slack.requests) == 1, [r.json for r in slack.requests]
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            log.close()


# --- 5. Grafana and every expression against a real /metrics ---------------------------------------


def test_grafana_provisioning_and_dashboard_structure() -> None:
    (ds,) = load_yaml(DATASOURCE_YML)["datasources"]
    assert ds["type"] == "prometheus" and ds["isDefault"] is True
    (provider,) = load_yaml(DASHBOARDS_YML)["providers"]
    assert provider["type"] == "file"
    dash = dashboard()
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    assert dash["templating"]["list"] == []  # the datasource is fixed by uid, nothing to choose
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]
        if p["type"] == "row":
            continue
        assert p["type"] in ("stat", "bargauge", "timeseries", "table", "piechart", "gauge"), p["type"]
        assert p["title"].strip() and p["datasource"] == {"type": "prometheus", "uid": ds["uid"]}, p["title"]
        assert p["targets"], p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"])
        for t in p["targets"]:
            assert t["expr"].strip() and t["datasource"]["uid"] == ds["uid"], p["title"]
            for var in re.findall(r"\$\w+", t["expr"]):
                assert var in GRAFANA_VARIABLES, f"{p['title']}: {var} (no dashboard variables are defined)"
    titles = " | ".join(p["title"].lower() for p in panels)
    for wanted in ("total cost by team", "budget utilization by user", "cost per model", "top 10 users",
                   "daily cost trend", "tokens by type", "provider cost comparison", "cost per request by model",
                   "unpriced usage", "events by result", "consumer lag", "last flush age", "alerts sent by result"):  # fmt: skip
        assert wanted in titles, wanted


@dataclass
class Exposition:
    url: str  # http://127.0.0.1:port/metrics
    target: str  # 127.0.0.1:port
    text: str  # as the deploy config renders it (budget_details etc. as configured)
    samples: set[str]  # sample names in it (histograms as _bucket, _sum, _count)
    all_samples: set[str]  # the same with every optional family on (budget_details = true)
    all_families: set[str]  # and their family names (# TYPE), the histogram's bare name among them


LIVE_CONFIG = """
[[customers]]
id = "customer-acme"
name = "Acme Corp"
budgets = [{ max_limit = 1000.0, reset_duration = "1M" }]

[[teams]]
id = "team-eng"
name = "Engineering"
customer_id = "customer-acme"
budgets = [{ max_limit = LIMIT, reset_duration = "1M" }]

[[teams]]
id = "team-ds"
name = "Data Science"
customer_id = "customer-acme"

[[virtual_keys]]
id = "vk-alice"
name = "Alice"
team_id = "team-eng"
budgets = [{ max_limit = LIMIT, reset_duration = "1M" }]

[[virtual_keys]]
id = "vk-bob"
name = "Bob"
team_id = "team-ds"
budgets = [{ max_limit = 100.0, reset_duration = "1M" }]
"""


@pytest.fixture(scope="module")
def exposition(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exposition]:
    """A real /metrics: a lake built by `spendlake ingest`, rolled up with a budget hierarchy in
    which Alice and her team are at 94%, consumer health set, and an alert outbox with
    delivered, failed and pending deliveries (so every family has samples)."""
    import duckdb

    from aggregator.budgets import BudgetUsage
    from aggregator.metrics import Exporter, Health, serve_metrics
    from aggregator.rollup import Rollup
    from alerting import outbox
    from spendlake import settings

    work = tmp_path_factory.mktemp("live")
    lake = work / "lake"
    now = datetime.now(UTC)
    since_midnight = (now - now.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds()
    ts = int((now.timestamp() - min(120.0, since_midnight / 2)) * 1000)  # this month, this day
    events = [
        {"event_id": "e-alice-big", "provider": "openai", "model": "gpt-4o", "input_tokens": 6_000_000,
         "output_tokens": 100_000, "virtual_key": "vk-alice"},
        {"event_id": "e-alice-small", "provider": "anthropic", "model": "claude-sonnet-4-5", "input_tokens": 1200,
         "cached_input_tokens": 1000, "cache_write_tokens": 100, "cache_write_1h_tokens": 50, "output_tokens": 300,
         "reasoning_tokens": 100, "virtual_key": "vk-alice"},
        {"event_id": "e-bob", "provider": "openai", "model": "gpt-4o-mini", "input_tokens": 2000, "output_tokens": 500,
         "virtual_key": "vk-bob", "status": "error"},
        {"event_id": "e-unpriced", "provider": "openai", "model": "gpt-unknown-preview", "input_tokens": 100,
         "output_tokens": 10, "virtual_key": "vk-bob"},
    ]  # fmt: skip
    lines = [json.dumps({"timestamp": ts, **e}) for e in events] + ['{"event_id": "bad", "timestamp": "yesterday"}']
    source = work / "events.jsonl"
    source.write_text("\n".join(lines) + "\n")
    spendlake("ingest", "--source", str(source), "--lake", str(lake), "--quiet", check=True)
    (alice,) = duckdb.connect().execute(f"SELECT sum(cost_usd) FROM read_parquet('{lake}/events/*/*.parquet') "
                                        "WHERE virtual_key = 'vk-alice'").fetchall()[0]  # fmt: skip
    config = work / "spendlake.toml"
    config.write_text(LIVE_CONFIG.replace("LIMIT", repr(round(alice / 0.94, 4))))  # Alice and her team at 94%
    hierarchy = settings.load(str(config), env={}).hierarchy
    assert hierarchy is not None
    deploy = deploy_config()

    rollup = Rollup(lake, budget_hook=BudgetUsage(hierarchy))
    server = None
    try:
        rollup.update()
        con = rollup.con
        outbox.schema(con)
        con.execute("""INSERT INTO alerts (key, kind, severity, title, created_at) VALUES
                       ('a1', 'budget', 'critical', 'Alice at 90%', now()), ('a2', 'expensive_request', 'warning', 'x', now())""")
        con.execute("""INSERT INTO deliveries (alert_key, channel, state, attempts, created_at) VALUES
                       ('a1', 'finops-slack', 'delivered', 1, now()), ('a2', 'finops-slack', 'failed', 3, now()),
                       ('a1', 'oncall', 'pending', 2, now())""")  # fmt: skip
        health = Health(last_flush_at=time.time(), lag={("llm-usage", 0): 0, ("llm-usage", 1): 7}, rollup_at=time.time())
        health.intake = intake_counters(work)
        exporter = Exporter(lambda: con.cursor(), hierarchy, health,
                            top_virtual_keys=deploy.get("metrics", "top_virtual_keys"),
                            budget_details=deploy.get("metrics", "budget_details"))  # fmt: skip
        everything = Exporter(lambda: con.cursor(), hierarchy, health, budget_details=True)
        server = serve_metrics(exporter, "127.0.0.1", 0)
        port = server.server_address[1]
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        full = everything.render().decode()

        def sample_names(exposition_text: str) -> set[str]:
            names = {line.split("{")[0].split()[0] for line in exposition_text.splitlines() if line and line[0] != "#"}
            families = set(re.findall(r"^# TYPE (\S+) ", exposition_text, re.M))
            empty = {f for f in families if not any(n == f or n.startswith(f + "_") for n in names)}
            assert not empty, f"the fixture leaves these families without samples: {empty}"
            return names

        yield Exposition(f"http://127.0.0.1:{port}/metrics", f"127.0.0.1:{port}", text, sample_names(text),
                         sample_names(full), set(re.findall(r"^# TYPE (\S+) ", full, re.M)))  # fmt: skip
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        rollup.close()


def test_every_expression_uses_only_exported_series(exposition: Exposition) -> None:
    assert "spendlake_request_cost_usd_bucket" in exposition.samples  # histograms as their samples
    unknown = {}
    for title, expr in dashboard_exprs():
        for name in metric_names(expr) - exposition.samples:
            unknown[name] = f"dashboard panel {title!r}"
    for r in rules():
        text = json.dumps({"expr": r["expr"], "annotations": r.get("annotations", {})})
        for name in metric_names(text) - exposition.samples:
            unknown[name] = f"rule {r['alert']}"
    assert not unknown, f"not exported by /metrics: {unknown}"
    # the bare histogram name is no series: a query must name _bucket, _sum or _count
    assert "spendlake_request_cost_usd" not in exposition.samples


def test_readme_promql_uses_only_exported_series(exposition: Exposition) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Metrics and PromQL\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) >= 15, "the README's PromQL table"
    names = {n for span in re.findall(r"`([^`]+)`", section) for n in metric_names(span)}
    assert len(names) >= 10
    # prose may name a histogram by its family (`spendlake_request_cost_usd`); queries use its samples
    assert names - exposition.all_samples - exposition.all_families == set(), "README names what /metrics lacks"


def test_the_stack_shows_data_and_fires_on_a_real_prometheus(exposition: Exposition,
                                                             prometheus_factory: StartPrometheus) -> None:  # fmt: skip
    """Prometheus scrapes the real /metrics (job "spendlake", as in deploy/prometheus/prometheus.yml)
    with our rule file loaded: every dashboard query has data, and the budget rules fire for Alice
    and her team (94%) but not for Bob or the customer."""
    # compose.yaml's healthcheck command, pointed at this /metrics, then at nothing
    check = compose()["services"]["spendlake"]["healthcheck"]["test"][1:]
    assert check[0] == "python"
    port = exposition.target.rpartition(":")[2]
    ok = subprocess.run([sys.executable, *check[1:-1], check[-1].replace(":9464/", f":{port}/")], timeout=30)
    assert ok.returncode == 0
    dead = subprocess.run([sys.executable, *check[1:-1], check[-1].replace(":9464/", f":{_free_port()}/")],
                          capture_output=True, timeout=30)  # fmt: skip
    assert dead.returncode != 0

    prom = prometheus_factory([exposition.target], interval=1.0, rule_files=[RULES_YML])
    prom.wait_for_targets_up(timeout=30)
    for title, expr in dashboard_exprs():
        for var, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(var, value)
        prom.wait_until(expr, lambda r: len(r) > 0, timeout=20)
    firing = 'ALERTS{alertstate="firing"}'
    result = prom.wait_until(firing, lambda r: {"UserBudgetCritical", "TeamBudgetCritical"} <= {
        s["metric"]["alertname"] for s in r}, timeout=20)  # fmt: skip
    got = {(s["metric"]["alertname"], s["metric"].get("owner_id", "")) for s in result}
    budget_alerts = {a for a in got if "Budget" in a[0]}
    assert budget_alerts == {("UserBudgetWarning", "vk-alice"), ("UserBudgetCritical", "vk-alice"),
                             ("TeamBudgetCritical", "team-eng")}, got  # fmt: skip
