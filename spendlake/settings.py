"""The settings object: `spendlake.toml` (contract 3), overridden by SPENDLAKE_* variables,
overridden by command-line flags.

Validation collects every problem and reports them in one `ConfigError`, so a file with five
mistakes is fixed in one round. Secrets are never values here: the config names the variable or
file that holds them (`sasl_password_env`, `url_env`, ...), and they are read only where used.

Sections owned by other parts (budgets, alerts, channels) are kept raw in `Settings.raw` for
their own validators.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ingest.clients.security import KafkaSecurity
from ingest.errors import SpendlakeError
from ingest.otlp import DEFAULT_NAMES, AttributeNames
from aggregator.hierarchy import Hierarchy, parse_hierarchy
from pricing.overrides import Override, parse_overrides
from alerting.config import Alerting, parse_alerting

# (section, key) → (type, default). Env override: SPENDLAKE_<SECTION>_<KEY>, e.g.
# SPENDLAKE_KAFKA_BOOTSTRAP_SERVERS, SPENDLAKE_LAKE_PATH.
SCALARS: dict[tuple[str, str], tuple[type, Any]] = {
    ("kafka", "bootstrap_servers"): (str, "127.0.0.1:9092"),
    ("kafka", "topic"): (str, "llm-usage"),
    ("kafka", "group_id"): (str, "spendlake"),
    ("kafka", "dead_letter_topic"): (str, ""),
    ("kafka", "security_protocol"): (str, "PLAINTEXT"),
    ("kafka", "sasl_mechanism"): (str, ""),
    ("kafka", "sasl_username"): (str, ""),
    ("kafka", "sasl_password_env"): (str, ""),
    ("kafka", "ssl_cafile"): (str, ""),
    ("kafka", "ssl_certfile"): (str, ""),
    ("kafka", "ssl_keyfile"): (str, ""),
    ("kafka", "ssl_key_password_env"): (str, ""),
    ("kafka", "client"): (str, "auto"),
    ("kafka", "group_instance_id"): (str, "auto"),
    ("lake", "path"): (str, "./lake"),
    ("lake", "timezone"): (str, "UTC"),
    ("lake", "endpoint_url"): (str, ""),  # an S3-compatible store's endpoint (else AWS_ENDPOINT_URL, else AWS)
    ("lake", "cache_dir"): (str, ""),  # where an s3:// lake's local mirror lives (default ~/.cache/spendlake/lakes/…)
    ("pricing", "catalog"): (str, "auto"),
    ("pricing", "policy"): (str, "catalog_first"),
    ("ingest", "batch_max_records"): (int, 50_000),
    ("ingest", "batch_max_bytes"): (int, 32 * 1024 * 1024),
    ("ingest", "batch_max_age"): (float, 1.0),
    ("metrics", "listen"): (str, "127.0.0.1:9464"),
    ("metrics", "top_virtual_keys"): (int, 20),
    ("metrics", "budget_details"): (bool, False),
    ("aggregator", "minute_retention_days"): (int, 3),
    ("intake", "listen"): (str, "127.0.0.1:4318"),
    ("intake", "grpc_listen"): (str, ""),
    ("intake", "tokens_env"): (str, ""),
    ("intake", "tokens_file"): (str, ""),
    ("intake", "allow_unauthenticated"): (bool, False),
    ("intake", "max_body_bytes"): (int, 16 * 1024 * 1024),
    ("intake", "read_timeout"): (float, 10.0),
    ("intake", "ack_timeout"): (float, 10.0),
    ("intake", "spool_dir"): (str, ""),
}
# Every top-level section or array of tables a config may have (a misspelt one is a mistake, not
# a silently ignored block).
SECTIONS = ("kafka", "lake", "pricing", "ingest", "metrics", "aggregator", "intake", "alerts", "channels",
            "reports", "customers", "teams", "virtual_keys")  # fmt: skip
# Keys holding arrays of tables, validated by their owners.
TABLES = {("pricing", "overrides"), ("intake", "attributes")}
LOOPBACK = ("127.", "localhost", "::1", "[::1]")
POLICIES = ("catalog_first", "reported_first")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
KAFKA_CLIENTS = ("auto", "kafka-python", "confluent")


class ConfigError(SpendlakeError):
    """Every problem of a configuration, one per line."""

    def __init__(self, problems: list[str], source: str = "configuration") -> None:
        self.problems = problems
        if len(problems) == 1:  # one mistake, one line
            super().__init__(f"{source}: {problems[0]}")
            return
        super().__init__(f"{source}: {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Settings:
    values: dict[tuple[str, str], Any]
    raw: dict[str, Any] = field(default_factory=dict)
    source: str = "defaults"
    overrides: tuple[Override, ...] = ()  # [[pricing.overrides]], validated
    hierarchy: Hierarchy | None = None  # [[customers]], [[teams]], [[virtual_keys]], validated
    alerting: Alerting = field(default_factory=Alerting)  # [alerts], [[channels]], [[reports]]
    kafka_override: bool = False  # SPENDLAKE_KAFKA_BOOTSTRAP_SERVERS is set (serve consumes Kafka)

    def __post_init__(self) -> None:
        # `file:///srv/lake` is the local lake /srv/lake, for every command, from the file, the
        # environment or --lake alike (an s3:// URL stays a URL: spendlake/lakes.py opens it)
        path = self.values.get(("lake", "path"))
        if isinstance(path, str) and path.startswith("file://"):
            self.values[("lake", "path")] = path[len("file://"):]

    @property
    def kafka_configured(self) -> bool:
        """serve consumes Kafka when a [kafka] section or a bootstrap override says so; without
        one it runs embedded (HTTP intake → local spool → lake)."""
        return "kafka" in self.raw or self.kafka_override

    @property
    def intake_configured(self) -> bool:
        return "intake" in self.raw

    def intake_names(self) -> AttributeNames:
        """[intake.attributes]: attribute-name lists replacing the defaults per field."""
        attrs = (self.raw.get("intake") or {}).get("attributes") or {}
        return replace(DEFAULT_NAMES, **{k: tuple(v) for k, v in attrs.items()})

    @property
    def evaluation_interval_s(self) -> float:  # [alerts] evaluation_interval
        return self.alerting.rules.evaluation_interval_s

    def get(self, section: str, key: str) -> Any:
        return self.values[(section, key)]

    def with_overrides(self, overrides: dict[tuple[str, str], Any]) -> Settings:
        merged = dict(self.values)
        merged.update({k: v for k, v in overrides.items() if v is not None})
        return replace(self, values=merged)

    def kafka_security(self) -> KafkaSecurity:
        """The [kafka] SASL/TLS settings; passwords are read from their variables here."""
        get = lambda key: self.get("kafka", key)  # noqa: E731
        secret = lambda key: os.environ.get(get(key), "") if get(key) else ""  # noqa: E731
        return KafkaSecurity(
            protocol=get("security_protocol"), sasl_mechanism=get("sasl_mechanism"),
            sasl_username=get("sasl_username"), sasl_password=secret("sasl_password_env"),
            ssl_cafile=get("ssl_cafile"), ssl_certfile=get("ssl_certfile"), ssl_keyfile=get("ssl_keyfile"),
            ssl_key_password=secret("ssl_key_password_env"),
        )  # fmt: skip


def load(path: str | None, env: dict[str, str] | None = None) -> Settings:
    """Defaults ← TOML file (if given) ← SPENDLAKE_* environment. Raises ConfigError."""
    env = dict(os.environ) if env is None else env
    problems: list[str] = []
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = path
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError([f"file not found: {path}"], "--config") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"not valid TOML: {exc}"], path) from None
    values: dict[tuple[str, str], Any] = {}
    for (section, key), (typ, default) in SCALARS.items():
        value = raw.get(section, {}).get(key, default) if isinstance(raw.get(section), dict) else default
        env_name = f"SPENDLAKE_{section.upper()}_{key.upper()}"
        if env_name in env:
            value = env[env_name]
            if typ is bool:
                if value.lower() not in ("true", "false", "1", "0"):
                    problems.append(f"{env_name}: got {value!r}, expected true or false")
                    continue
                value = value.lower() in ("true", "1")
            elif typ is not str:
                try:
                    value = typ(value)
                except ValueError:
                    problems.append(f"{env_name}: got {value!r}, expected {typ.__name__}")
                    continue
        if typ is float and type(value) is int:
            value = float(value)
        if type(value) is not typ:
            problems.append(f"[{section}] {key}: got {value!r}, expected {typ.__name__}")
            continue
        values[(section, key)] = value
    for section in ("kafka", "lake", "pricing", "ingest", "metrics", "aggregator", "intake"):
        sec = raw.get(section, {})
        if not isinstance(sec, dict):
            problems.append(f"[{section}]: expected a table, got {sec!r}")
            continue
        for key in sec:
            if (section, key) not in SCALARS and (section, key) not in TABLES:
                known = ", ".join(k for s, k in SCALARS if s == section)
                problems.append(f"[{section}] {key}: unknown key (known: {known})")
    for section in raw:
        if section not in SECTIONS:
            problems.append(f"[{section}]: unknown section (known: {', '.join(SECTIONS)})")
    problems += check(values)
    hierarchy, bad = parse_hierarchy(raw, timezone=values.get(("lake", "timezone")))
    problems += bad
    alerting, bad = parse_alerting(raw)
    problems += bad
    pricing = raw.get("pricing")
    overrides, bad = parse_overrides(pricing.get("overrides") if isinstance(pricing, dict) else None)
    problems += bad
    problems += _check_intake(raw.get("intake"))
    if problems:
        raise ConfigError(problems, source)
    return Settings(values, raw, source, tuple(overrides), hierarchy, alerting,
                    kafka_override="SPENDLAKE_KAFKA_BOOTSTRAP_SERVERS" in env)  # fmt: skip


def _check_intake(sec: Any) -> list[str]:
    """[intake.attributes] lists; a listen address; who may send (tokens, or explicitly nobody)."""
    if not isinstance(sec, dict):
        return []
    problems = []
    attrs = sec.get("attributes", {})
    known = [f for f, _ in DEFAULT_NAMES.fields()]
    if not isinstance(attrs, dict):
        problems.append(f"[intake.attributes]: expected a table of field = [attribute names], got {attrs!r}")
        attrs = {}
    for k, v in attrs.items():
        if k not in known:
            problems.append(f"[intake.attributes] {k}: unknown field (known: {', '.join(known)})")
        elif not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
            problems.append(f"[intake.attributes] {k}: got {v!r}, expected a non-empty list of attribute names")
    if not (sec.get("tokens_env") or sec.get("tokens_file") or sec.get("allow_unauthenticated") is True):
        problems.append("[intake]: say who may send: tokens_env or tokens_file (bearer tokens), or "
                        "allow_unauthenticated = true (loopback listen addresses only)")  # fmt: skip
    return problems


def check(values: dict[tuple[str, str], Any]) -> list[str]:
    problems = []
    if values.get(("pricing", "policy"), POLICIES[0]) not in POLICIES:
        problems.append(f"[pricing] policy: got {values[('pricing', 'policy')]!r}, expected one of {POLICIES}")
    proto = values.get(("kafka", "security_protocol"), "PLAINTEXT")
    if proto not in SECURITY_PROTOCOLS:
        problems.append(f"[kafka] security_protocol: got {proto!r}, expected one of {SECURITY_PROTOCOLS}")
    mech = values.get(("kafka", "sasl_mechanism"), "")
    if mech not in SASL_MECHANISMS:
        problems.append(f"[kafka] sasl_mechanism: got {mech!r}, expected one of {SASL_MECHANISMS[1:]}")
    client = values.get(("kafka", "client"), "auto")
    if client not in KAFKA_CLIENTS:
        problems.append(f"[kafka] client: got {client!r}, expected one of {KAFKA_CLIENTS}")
    for key, low in (("top_virtual_keys", 0), ("minute_retention_days", 1)):
        section = "metrics" if key == "top_virtual_keys" else "aggregator"
        v = values.get((section, key))
        if v is not None and v < low:
            problems.append(f"[{section}] {key}: got {v!r}, expected an integer >= {low}")
    for key in ("batch_max_records", "batch_max_bytes", "batch_max_age"):
        v = values.get(("ingest", key))
        if v is not None and v <= 0:
            problems.append(f"[ingest] {key}: got {v!r}, expected a number > 0")
    for key in ("listen", "grpc_listen"):
        hp = values.get(("intake", key), "")
        if not hp:
            continue
        host, _, port = hp.rpartition(":")
        if not host or not port.isdigit():
            problems.append(f"[intake] {key}: got {hp!r}, expected HOST:PORT")
        elif values.get(("intake", "allow_unauthenticated")) and not host.startswith(LOOPBACK):
            problems.append(f"[intake] allow_unauthenticated = true is refused on {hp!r}: only on a loopback "
                            "address (127.0.0.1, ::1); elsewhere give tokens_env or tokens_file")  # fmt: skip
    for key in ("max_body_bytes", "read_timeout", "ack_timeout"):
        v = values.get(("intake", key))
        if v is not None and v <= 0:
            problems.append(f"[intake] {key}: got {v!r}, expected a number > 0")
    servers = values.get(("kafka", "bootstrap_servers"), "")
    for hp in servers.split(","):
        host, _, port = hp.strip().rpartition(":")
        if not host or not port.isdigit():
            problems.append(f"[kafka] bootstrap_servers: got {hp!r}, expected HOST:PORT[,HOST:PORT...]")
    return problems
