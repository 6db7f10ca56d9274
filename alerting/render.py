"""Channel-neutral ``Alert`` → what each receiver expects: Slack Block Kit, a PagerDuty Events API
v2 event, an e-mail, a generic webhook body.

Pure functions (no network, no clock, no secrets except the routing key PagerDuty wants in the
body), so tests check the exact shapes. Each renderer keeps its receiver's documented limits:
a message Slack or PagerDuty would refuse for length is a message lost, so text is cut with "…".
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from alerting.config import Channel
from alerting.records import Alert

ELLIPSIS = "…"

# https://docs.slack.dev/reference/block-kit/blocks — a message refused for size is lost.
SLACK_HEADER_MAX = 150
SLACK_SECTION_TEXT_MAX = 3000
SLACK_FIELD_TEXT_MAX = 2000
SLACK_FIELDS_PER_SECTION = 10
SLACK_BLOCKS_MAX = 50
SLACK_TEXT_MAX = 40000  # Slack truncates the top-level text beyond this
PAGERDUTY_SUMMARY_MAX = 1024

_EMOJI = {"info": "ℹ️", "warning": "⚠️", "critical": "🚨"}
_REPORT_EMOJI = "📊"
# PagerDuty's severities are critical|error|warning|info; ours are a subset. An unknown one pages.
_PD_SEVERITY = {"info": "info", "warning": "warning", "critical": "critical"}


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, the cut marked with "…"."""
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS


def rfc3339(when: datetime) -> str:
    """UTC, with a "Z": the form every receiver parses (naive datetimes are taken as local)."""
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _mrkdwn_escape(text: str) -> str:
    """Slack's mrkdwn treats &, < and > as control characters (links, mentions): escape them so a
    team or model name never pings ``<!channel>``."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- Slack -----------------------------------------------------------------------------------


def slack_payload(alert: Alert) -> dict[str, Any]:
    """An incoming-webhook body: ``text`` (the notification fallback) and Block Kit ``blocks`` —
    header, body section, field sections (10 fields each), context — within Slack's limits."""
    emoji = _REPORT_EMOJI if alert.kind == "report" else _EMOJI.get(alert.severity, _EMOJI["info"])
    header = truncate(f"{emoji} {_one_line(alert.title)}", SLACK_HEADER_MAX)
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}}]
    if alert.lines:  # Slack refuses a section with empty text
        body = truncate(_mrkdwn_escape("\n".join(alert.lines)), SLACK_SECTION_TEXT_MAX)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": body}})
    fields = [_slack_field(label, value) for label, value in alert.fields]
    room = SLACK_BLOCKS_MAX - len(blocks) - 1  # keep one block for the context
    for start in range(0, len(fields), SLACK_FIELDS_PER_SECTION):
        if room == 0:
            break
        blocks.append({"type": "section", "fields": fields[start : start + SLACK_FIELDS_PER_SECTION]})
        room -= 1
    context = f"{alert.kind} · {alert.severity} · {alert.created_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _mrkdwn_escape(context)}]})
    return {"text": truncate(_mrkdwn_escape(alert.text), SLACK_TEXT_MAX), "blocks": blocks}


def _slack_field(label: str, value: str) -> dict[str, str]:
    text = f"*{_mrkdwn_escape(_one_line(label))}*\n{_mrkdwn_escape(value)}"
    return {"type": "mrkdwn", "text": truncate(text, SLACK_FIELD_TEXT_MAX)}


# --- PagerDuty -------------------------------------------------------------------------------


def pagerduty_payload(alert: Alert, routing_key: str) -> dict[str, Any]:
    """An Events API v2 event. A ``resolve`` carries only the key, action and dedup_key: PagerDuty
    ignores a payload there, and the incident is found by dedup_key alone."""
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": alert.action,
        "dedup_key": alert.dedup_key or alert.key,
    }
    if alert.action == "resolve":
        return event
    event["payload"] = {
        "summary": truncate(_one_line(alert.title), PAGERDUTY_SUMMARY_MAX),
        "severity": _PD_SEVERITY.get(alert.severity, "critical"),
        "source": "spendlake",
        "component": alert.kind,
        "group": alert.facts.get("owner_type") or alert.kind,
        "class": alert.kind,
        "timestamp": rfc3339(alert.created_at),
        "custom_details": alert.facts,
    }
    return event


# --- generic webhook -------------------------------------------------------------------------


def webhook_payload(alert: Alert) -> dict[str, Any]:
    """The alert as a JSON object for any receiver (no HTML: a report's page is for e-mail)."""
    return {
        "key": alert.key,
        "kind": alert.kind,
        "severity": alert.severity,
        "title": alert.title,
        "text": alert.text,
        "lines": list(alert.lines),
        "fields": [{"label": label, "value": value} for label, value in alert.fields],
        "facts": alert.facts,
        "action": alert.action,
        "dedup_key": alert.dedup_key,
        "created_at": rfc3339(alert.created_at),
    }


# --- e-mail ----------------------------------------------------------------------------------


def email_message(channel: Channel, alert: Alert) -> EmailMessage:
    """A multipart/alternative mail: the plain text, and HTML — a report's own page when it has
    one, else a small page with the lines and a table of the fields."""
    msg = EmailMessage()
    msg["Subject"] = f"[spendlake] {_one_line(alert.title)}"  # a header must not hold a line break
    msg["From"] = channel.sender or ""
    msg["To"] = ", ".join(channel.to)
    msg["Date"] = format_datetime(alert.created_at.astimezone(UTC))
    msg["Message-ID"] = make_msgid(domain="spendlake")
    msg.set_content(alert.text)
    msg.add_alternative(alert.html if alert.html is not None else _html_page(alert), subtype="html")
    return msg


def _html_page(alert: Alert) -> str:
    esc = html.escape
    lines = "".join(f"<p>{esc(line)}</p>" for line in alert.lines)
    rows = "".join(
        f'<tr><th align="left">{esc(label)}</th><td>{esc(value)}</td></tr>' for label, value in alert.fields
    )
    table = f'<table cellpadding="4">{rows}</table>' if rows else ""
    return f"<!doctype html><html><body><h2>{esc(alert.title)}</h2>{lines}{table}</body></html>"
