"""The typed records of alerting: an alert (what the rules say), a delivery outcome (what a
channel answered) and the error tree of delivery.

An ``Alert`` is channel-neutral. Rules fill ``title`` (one plain line), ``lines`` (the body, plain
text, one fact a line), ``fields`` (label/value pairs for Slack Block Kit and e-mail tables) and
``facts`` (JSON values for PagerDuty ``custom_details`` and the generic webhook). Channels render
it; the outbox stores it as JSON (never a secret: URLs and routing keys are read at send time).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

SEVERITIES = ("info", "warning", "critical")
KINDS = (
    "budget",  # a budget threshold crossed (once per budget × period × threshold)
    "budget_forecast",  # at the current burn rate the budget runs out before its period ends
    "expensive_request",  # one request above [alerts] expensive_request_usd (once per event)
    "cost_spike",  # spend in the last window above a floor and a multiple of the baseline
    "token_rate",  # tokens in the last window above a limit
    "unpriced",  # events of a model without a price (once per model per day)
    "report",  # a scheduled or on-demand spend report
    "test",  # `spendlake alerts test`
)
ACTIONS = ("trigger", "resolve")


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


# How urgent an alert is when several go out in one grouped message (most urgent first):
# a budget exceeded (its 100% threshold or above), then critical, warning, a forecast, info.
URGENCY = ("info", "forecast", "warning", "critical", "exceeded")


def urgency(alert: Alert) -> int:
    """The alert's rank in ``URGENCY`` (higher: more urgent)."""
    threshold = alert.facts.get("threshold") if alert.kind == "budget" and alert.action == "trigger" else None
    if isinstance(threshold, (int, float)) and threshold >= 1.0:
        return URGENCY.index("exceeded")
    if alert.severity == "critical":
        return URGENCY.index("critical")
    if alert.kind == "budget_forecast":
        return URGENCY.index("forecast")
    return URGENCY.index("warning") if alert.severity == "warning" else URGENCY.index("info")


def by_urgency(alerts: Iterable[Alert]) -> list[Alert]:
    """Most urgent first; alerts of one rank keep their order (the outbox gives them oldest first)."""
    return sorted(alerts, key=lambda a: -urgency(a))


@dataclass(frozen=True)
class Alert:
    key: str  # the once-only identity, e.g. "budget:team:team-eng:0:2026-11-01T00:00:00Z:0.9"
    kind: str  # one of KINDS
    severity: str  # one of SEVERITIES
    title: str  # one plain line: "Warning: Alice (vk-dev-alice) at 80% of budget"
    created_at: datetime
    lines: tuple[str, ...] = ()  # plain-text body, one fact per line
    fields: tuple[tuple[str, str], ...] = ()  # label → value, for Block Kit fields and tables
    facts: dict[str, Any] = field(default_factory=dict)  # JSON values (custom_details, webhook)
    action: str = "trigger"  # "resolve" closes a PagerDuty incident (dedup_key)
    dedup_key: str | None = None  # PagerDuty incident key: stable per budget and period
    html: str | None = None  # a report's self-contained HTML page (e-mail alternative part)

    def to_json(self) -> str:
        d = asdict(self)
        d["created_at"] = self.created_at.astimezone(UTC).isoformat()
        return json.dumps(d, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Alert:
        d = json.loads(text)
        d["created_at"] = datetime.fromisoformat(d["created_at"])
        d["lines"] = tuple(d.get("lines") or ())
        d["fields"] = tuple(tuple(f) for f in d.get("fields") or ())
        return cls(**d)

    @property
    def text(self) -> str:
        """The plain-text message: title, then the lines."""
        return "\n".join((self.title, *self.lines))


# --- delivery outcomes ---------------------------------------------------------------------


@dataclass(frozen=True)
class Delivered:
    status: int | None = None  # HTTP status or SMTP reply code
    detail: str = ""  # e.g. PagerDuty's dedup_key echo; never a secret


class DeliveryError(Exception):
    """A send that did not go through. Messages never contain a URL, routing key or password."""


class TransientError(DeliveryError):
    """Retry later: 5xx, 429, timeouts, refused or dropped connections, SMTP 4xx.
    ``retry_after`` (seconds) when the receiver said when (``Retry-After``)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class TerminalError(DeliveryError):
    """Do not retry: the receiver refused the message for good (other 4xx, SMTP 5xx, a missing
    secret). Recorded with the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
