"""``[alerts]``, ``[[channels]]`` and ``[[reports]]`` of spendlake.toml (contract 3), validated.

```toml
[alerts]
budget_thresholds = [0.8, 0.9, 1.0]   # 0.8 warning, 0.9 critical, 1.0 exceeded (critical)
expensive_request_usd = 10.0          # one alert per request above this; 0 turns it off
evaluation_interval = "5s"            # rules also run right after each ingest flush
forecast = true                       # warn when the burn rate runs a budget out before reset
forecast_min_utilization = 0.25       # ...once this much of it is used (early noise stays quiet)
spike_window = "5m"                   # cost spike: spend in the last window
spike_floor_usd = 100.0               #   above this floor
spike_multiple = 3.0                  #   and this multiple of the average window of the baseline
spike_baseline = "1h"                 #   (the hour before the window)
token_rate_limit = 30000000           # tokens per spike_window (the seed's 100k/s over 5 min); 0 off
unpriced = true                       # alert on usage of a model without a price, once a model a day
cooldown = "1h"                       # a spike or token-rate alert repeats at most this often
max_event_age = "1h"                  # per-event alerts ignore events older than this (backfills)
retry_max_interval = "5m"             # the longest wait between delivery attempts
give_up_after = "24h"                 # a delivery still failing after this is recorded as failed

[[channels]]
name = "finops-slack"
type = "slack"                        # slack | pagerduty | email | webhook
url_env = "SPENDLAKE_SLACK_WEBHOOK_URL"   # or url_file; a Slack URL is a secret, never inline
kinds = ["budget", "cost_spike"]      # default: every kind
min_severity = "warning"              # info | warning | critical (default info)
min_interval = "1s"                   # pacing (Slack default 1s, others 0s)
timeout = "10s"

[[channels]]
name = "oncall"
type = "pagerduty"
routing_key_env = "SPENDLAKE_PAGERDUTY_ROUTING_KEY"   # or routing_key_file
url = "https://events.pagerduty.com/v2/enqueue"
min_severity = "critical"

[[channels]]
name = "finance-mail"
type = "email"
smtp_host = "smtp.example.com"
smtp_port = 587
security = "starttls"                 # none | starttls | ssl
username = "spendlake"
password_env = "SPENDLAKE_SMTP_PASSWORD"
from = "spendlake@example.com"
to = ["finops@example.com"]

[[channels]]
name = "audit"
type = "webhook"
url = "https://hooks.internal/spend"  # or url_env / url_file when the URL holds a token

[[reports]]
period = "weekly"                     # daily | weekly | monthly
channels = ["finops-slack", "finance-mail"]
at = "09:00"                          # local time ([lake] timezone); weekly on Monday, monthly on the 1st
```

Every problem is reported at once, naming the entry and the value. Secrets are checked where
they are used (``check_secrets``), so ``spendlake budgets`` runs without them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alerting.records import KINDS, SEVERITIES

CHANNEL_TYPES = ("slack", "pagerduty", "email", "webhook")
REPORT_PERIODS = ("daily", "weekly", "monthly")
PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_interval(text: str) -> float:
    """'5s', '500ms', '1m', '1h', '1d' → seconds (> 0)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text.strip()) if isinstance(text, str) else None
    if m is None or float(m.group(1)) <= 0:
        raise ValueError(f"got {text!r}, expected a duration such as '5s', '500ms', '5m' or '1h'")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True)
class Rules:
    budget_thresholds: tuple[float, ...] = (0.8, 0.9, 1.0)
    expensive_request_usd: float = 10.0
    evaluation_interval_s: float = 5.0
    forecast: bool = True
    forecast_min_utilization: float = 0.25
    spike_window_s: float = 300.0
    spike_floor_usd: float = 100.0
    spike_multiple: float = 3.0
    spike_baseline_s: float = 3600.0
    token_rate_limit: int = 30_000_000
    unpriced: bool = True
    cooldown_s: float = 3600.0
    max_event_age_s: float = 3600.0
    retry_max_interval_s: float = 300.0
    give_up_after_s: float = 86400.0


# [alerts] key → (Rules field, kind of value)
_ALERT_KEYS: dict[str, tuple[str, str]] = {
    "budget_thresholds": ("budget_thresholds", "thresholds"),
    "expensive_request_usd": ("expensive_request_usd", "usd"),
    "evaluation_interval": ("evaluation_interval_s", "interval"),
    "forecast": ("forecast", "bool"),
    "forecast_min_utilization": ("forecast_min_utilization", "fraction"),
    "spike_window": ("spike_window_s", "interval"),
    "spike_floor_usd": ("spike_floor_usd", "usd"),
    "spike_multiple": ("spike_multiple", "multiple"),
    "spike_baseline": ("spike_baseline_s", "interval"),
    "token_rate_limit": ("token_rate_limit", "count"),
    "unpriced": ("unpriced", "bool"),
    "cooldown": ("cooldown_s", "interval"),
    "max_event_age": ("max_event_age_s", "interval"),
    "retry_max_interval": ("retry_max_interval_s", "interval"),
    "give_up_after": ("give_up_after_s", "interval"),
}


@dataclass(frozen=True)
class Channel:
    name: str
    type: str  # one of CHANNEL_TYPES
    kinds: tuple[str, ...] | None = None  # None: every kind
    min_severity: str = "info"
    min_interval_s: float = 0.0  # pacing between two sends on this channel
    timeout_s: float = 10.0
    url: str | None = None  # not secret (PagerDuty endpoint, a plain webhook)
    url_env: str | None = None
    url_file: str | None = None
    routing_key_env: str | None = None
    routing_key_file: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 25
    security: str = "none"  # none | starttls | ssl
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    sender: str | None = None  # `from`
    to: tuple[str, ...] = ()

    def wants(self, kind: str, severity: str) -> bool:
        """Whether this channel routes an alert of this kind and severity (reports and tests are
        addressed to channels by name and bypass this)."""
        if self.kinds is not None and kind not in self.kinds:
            return False
        return SEVERITIES.index(severity) >= SEVERITIES.index(self.min_severity)

    def endpoint(self) -> str:
        """The URL to POST to (read now, from the environment or a file for secrets). Raises
        LookupError naming the variable or file, never showing a value."""
        if self.type == "pagerduty":
            return self.url or PAGERDUTY_URL
        return _secret(self.name, "url", self.url, self.url_env, self.url_file)

    def routing_key(self) -> str:
        return _secret(self.name, "routing_key", None, self.routing_key_env, self.routing_key_file)

    def password(self) -> str | None:
        if not (self.password_env or self.password_file):
            return None
        return _secret(self.name, "password", None, self.password_env, self.password_file)


def _secret(channel: str, what: str, inline: str | None, env: str | None, path: str | None) -> str:
    if inline:
        return inline
    if env:
        value = os.environ.get(env, "").strip()
        if not value:
            raise LookupError(f"channel {channel!r}: environment variable {env} ({what}_env) is not set")
        return value
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise LookupError(f"channel {channel!r}: cannot read {what}_file {path}: {exc.strerror}") from None
        if not value:
            raise LookupError(f"channel {channel!r}: {what}_file {path} is empty")
        return value
    raise LookupError(f"channel {channel!r}: no {what} configured")


@dataclass(frozen=True)
class ReportSchedule:
    period: str  # daily | weekly | monthly
    channels: tuple[str, ...]
    at: tuple[int, int] = (9, 0)  # local hour, minute


@dataclass(frozen=True)
class Alerting:
    rules: Rules = field(default_factory=Rules)
    channels: tuple[Channel, ...] = ()
    reports: tuple[ReportSchedule, ...] = ()

    def channel(self, name: str) -> Channel:
        for c in self.channels:
            if c.name == name:
                return c
        known = ", ".join(c.name for c in self.channels) or "none configured"
        raise KeyError(f"no channel named {name!r} (channels: {known})")


def check_secrets(alerting: Alerting) -> list[str]:
    """Problems with the secrets the channels need (a variable not set, a file not readable)."""
    problems = []
    for c in alerting.channels:
        try:
            if c.type == "pagerduty":
                c.routing_key()
            elif c.type == "email":
                c.password()
            else:
                c.endpoint()
        except LookupError as exc:
            problems.append(str(exc))
    return problems


# --- parsing -------------------------------------------------------------------------------

_CHANNEL_KEYS = {
    "slack": {"url_env", "url_file"},
    "pagerduty": {"routing_key_env", "routing_key_file", "url"},
    "email": {"smtp_host", "smtp_port", "security", "username", "password_env", "password_file", "from", "to"},
    "webhook": {"url", "url_env", "url_file"},
}
_COMMON_KEYS = {"name", "type", "kinds", "min_severity", "min_interval", "timeout"}


def parse_alerting(raw: dict[str, Any]) -> tuple[Alerting, list[str]]:
    """The alerting part of a parsed TOML document, and every problem found in it."""
    problems: list[str] = []
    rules = _parse_rules(raw.get("alerts", {}), problems)
    channels = _parse_channels(raw.get("channels", []), problems)
    names = {c.name for c in channels}
    reports = _parse_reports(raw.get("reports", []), names, problems)
    return Alerting(rules, tuple(channels), tuple(reports)), problems


def _parse_rules(section: Any, problems: list[str]) -> Rules:
    if not isinstance(section, dict):
        problems.append(f"[alerts]: expected a table, got {section!r}")
        return Rules()
    values: dict[str, Any] = {}
    for key, value in section.items():
        if key not in _ALERT_KEYS:
            problems.append(f"[alerts] {key}: unknown key (known: {', '.join(_ALERT_KEYS)})")
            continue
        attr, kind = _ALERT_KEYS[key]
        where = f"[alerts] {key}"
        got = _value(where, value, kind, problems)
        if got is not None:
            values[attr] = got
    return Rules(**values)


def _value(where: str, value: Any, kind: str, problems: list[str]) -> Any:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "interval":
        try:
            return parse_interval(value)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    elif kind == "bool":
        if isinstance(value, bool):
            return value
        problems.append(f"{where}: got {value!r}, expected true or false")
    elif kind == "usd":
        if number and value >= 0:
            return float(value)
        problems.append(f"{where}: got {value!r}, expected an amount in USD >= 0 (0 turns it off)")
    elif kind == "fraction":
        if number and 0 <= value <= 1:
            return float(value)
        problems.append(f"{where}: got {value!r}, expected a fraction between 0 and 1")
    elif kind == "multiple":
        if number and value >= 1:
            return float(value)
        problems.append(f"{where}: got {value!r}, expected a number >= 1")
    elif kind == "count":
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        problems.append(f"{where}: got {value!r}, expected an integer >= 0 (0 turns it off)")
    elif kind == "thresholds":
        ok = isinstance(value, list) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x <= 10 for x in value
        )
        if ok and all(a < b for a, b in zip(value, value[1:], strict=False)):
            return tuple(float(x) for x in value)
        problems.append(f"{where}: got {value!r}, expected fractions in (0, 10], strictly ascending")
    return None


def _parse_channels(entries: Any, problems: list[str]) -> list[Channel]:
    if not isinstance(entries, list):
        problems.append(f"[[channels]]: expected an array of tables, got {entries!r}")
        return []
    out: list[Channel] = []
    seen: set[str] = set()
    for i, e in enumerate(entries, 1):
        where = f"[[channels]] #{i}"
        if not isinstance(e, dict):
            problems.append(f"{where}: expected a table, got {e!r}")
            continue
        name = e.get("name")
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{where} name: got {name!r}, expected a non-empty string")
            name = f"#{i}"
        else:
            where = f"[[channels]] {name!r}"
            if name in seen:
                problems.append(f"{where}: the name is used by an earlier channel")
            seen.add(name)
        typ = e.get("type")
        if typ not in CHANNEL_TYPES:
            problems.append(f"{where} type: got {typ!r}, expected one of {', '.join(CHANNEL_TYPES)}")
            continue
        allowed = _COMMON_KEYS | _CHANNEL_KEYS[typ]
        for key in e:
            if key not in allowed:
                hint = " (a Slack URL is a secret: use url_env or url_file)" if typ == "slack" and key == "url" else ""
                problems.append(f"{where} {key}: not a key of a {typ} channel{hint} (known: {', '.join(sorted(allowed))})")
        kw: dict[str, Any] = {"name": name, "type": typ}
        kinds = e.get("kinds")
        if kinds is not None:
            if not isinstance(kinds, list) or any(k not in KINDS for k in kinds):
                problems.append(f"{where} kinds: got {kinds!r}, expected a list of {', '.join(KINDS)}")
            else:
                kw["kinds"] = tuple(kinds)
        sev = e.get("min_severity", "info")
        if sev not in SEVERITIES:
            problems.append(f"{where} min_severity: got {sev!r}, expected one of {', '.join(SEVERITIES)}")
        else:
            kw["min_severity"] = sev
        for key, attr, default in (("min_interval", "min_interval_s", "1s" if typ == "slack" else None),
                                   ("timeout", "timeout_s", None)):  # fmt: skip
            value = e.get(key, default)
            if value is None:
                continue
            if value in ("0", "0s"):
                kw[attr] = 0.0
                continue
            try:
                kw[attr] = parse_interval(value)
            except ValueError as exc:
                problems.append(f"{where} {key}: {exc}")
        for key in ("url", "url_env", "url_file", "routing_key_env", "routing_key_file", "smtp_host",
                    "username", "password_env", "password_file"):  # fmt: skip
            if key in e and key in allowed:
                if not isinstance(e[key], str) or not e[key].strip():
                    problems.append(f"{where} {key}: got {e[key]!r}, expected a non-empty string")
                else:
                    kw[key] = e[key].strip()
        if "url" in kw and not re.match(r"https?://", kw["url"]):
            problems.append(f"{where} url: got {kw['url']!r}, expected an http:// or https:// URL")
        if typ == "slack" and not ({"url_env", "url_file"} & set(kw)):
            problems.append(f"{where}: needs url_env or url_file (the webhook URL)")
        if typ == "webhook" and not ({"url", "url_env", "url_file"} & set(kw)):
            problems.append(f"{where}: needs url, url_env or url_file")
        if typ == "pagerduty" and not ({"routing_key_env", "routing_key_file"} & set(kw)):
            problems.append(f"{where}: needs routing_key_env or routing_key_file")
        if typ == "email":
            _parse_email(e, where, kw, problems)
        out.append(Channel(**kw))
    return out


def _parse_email(e: dict[str, Any], where: str, kw: dict[str, Any], problems: list[str]) -> None:
    if "smtp_host" not in kw:
        problems.append(f"{where}: needs smtp_host")
    port = e.get("smtp_port", 25)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        problems.append(f"{where} smtp_port: got {port!r}, expected a port number")
    else:
        kw["smtp_port"] = port
    security = e.get("security", "none")
    if security not in ("none", "starttls", "ssl"):
        problems.append(f"{where} security: got {security!r}, expected none, starttls or ssl")
    else:
        kw["security"] = security
    sender = e.get("from")
    if not isinstance(sender, str) or "@" not in sender:
        problems.append(f"{where} from: got {sender!r}, expected an e-mail address")
    else:
        kw["sender"] = sender
    to = e.get("to")
    if isinstance(to, str):
        to = [to]
    if not isinstance(to, list) or not to or any(not isinstance(a, str) or "@" not in a for a in to):
        problems.append(f"{where} to: got {e.get('to')!r}, expected a list of e-mail addresses")
    else:
        kw["to"] = tuple(to)


def _parse_reports(entries: Any, channels: set[str], problems: list[str]) -> list[ReportSchedule]:
    if not isinstance(entries, list):
        problems.append(f"[[reports]]: expected an array of tables, got {entries!r}")
        return []
    out = []
    for i, e in enumerate(entries, 1):
        where = f"[[reports]] #{i}"
        if not isinstance(e, dict):
            problems.append(f"{where}: expected a table, got {e!r}")
            continue
        for key in e:
            if key not in ("period", "channels", "at"):
                problems.append(f"{where} {key}: unknown key (known: period, channels, at)")
        period = e.get("period")
        if period not in REPORT_PERIODS:
            problems.append(f"{where} period: got {period!r}, expected one of {', '.join(REPORT_PERIODS)}")
        names = e.get("channels")
        if not isinstance(names, list) or not names or any(not isinstance(n, str) for n in names):
            problems.append(f"{where} channels: got {names!r}, expected a list of channel names")
            names = []
        for n in names:
            if n not in channels:
                problems.append(f"{where} channels: no channel named {n!r}")
        at = e.get("at", "09:00")
        m = re.fullmatch(r"(\d{1,2}):(\d{2})", at) if isinstance(at, str) else None
        if m is None or int(m.group(1)) > 23 or int(m.group(2)) > 59:
            problems.append(f"{where} at: got {at!r}, expected a local time HH:MM")
            m = None
        if period in REPORT_PERIODS and names:
            out.append(ReportSchedule(period, tuple(names), (int(m.group(1)), int(m.group(2))) if m else (9, 0)))
    return out
