"""Channel-neutral ``Alert`` → what each receiver expects: Slack Block Kit, a PagerDuty Events API
v2 event, an e-mail, a generic webhook body — and, for Slack and the webhook, one message carrying
several alerts (the outbox groups the alerts due together on a paced channel; most urgent first).

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
from alerting.records import Alert, by_urgency

ELLIPSIS = "…"

# https://docs.slack.dev/reference/block-kit/blocks — a message refused for size is lost.
SLACK_HEADER_MAX = 150
SLACK_SECTION_TEXT_MAX = 3000
SLACK_FIELD_TEXT_MAX = 2000
SLACK_FIELDS_PER_SECTION = 10
SLACK_BLOCKS_MAX = 50
SLACK_TEXT_MAX = 40000  # Slack truncates the top-level text beyond this
PAGERDUTY_SUMMARY_MAX = 1024

# Receivers that take several alerts in one message. PagerDuty never: each alert is its own event
# with its own dedup_key (incident), and its rate limits are per routing key and far higher than
# Slack's. E-mail never: a mail per alert keeps its subject searchable and threadable.
GROUPED_TYPES = ("slack", "webhook")

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
    header = truncate(f"{_slack_emoji(alert)} {_one_line(alert.title)}", SLACK_HEADER_MAX)
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
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _mrkdwn_escape(_context(alert))}]})
    return {"text": truncate(_mrkdwn_escape(alert.text), SLACK_TEXT_MAX), "blocks": blocks}


def _slack_emoji(alert: Alert) -> str:
    return _REPORT_EMOJI if alert.kind == "report" else _EMOJI.get(alert.severity, _EMOJI["info"])


def slack_group_payload(alerts: list[Alert] | tuple[Alert, ...]) -> dict[str, Any]:
    """Several alerts as one incoming-webhook message, most urgent first (``by_urgency``): a header
    "🚨 3 alerts"; per alert a section (emoji, bold title, the lines), its fields and a context
    line, dividers between alerts; ``text`` (the notification) one title a line. Within Slack's
    50 blocks: dividers, then fields, then context lines are left out when they would not fit.
    One alert is ``slack_payload``'s message."""
    if len(alerts) == 1:
        return slack_payload(alerts[0])
    ordered = by_urgency(alerts)
    if not ordered or 1 + len(ordered) > SLACK_BLOCKS_MAX:
        raise ValueError(f"a grouped Slack message takes 2 to {SLACK_BLOCKS_MAX - 1} alerts, got {len(ordered)}")
    header = truncate(f"{_slack_emoji(ordered[0])} {len(ordered)} alerts", SLACK_HEADER_MAX)
    n = len(ordered)
    with_fields = sum(1 for a in ordered if a.fields)
    for dividers, fields, context in ((True, True, True), (False, True, True), (False, False, True),
                                      (False, False, False)):  # fmt: skip
        if 1 + n + (n - 1) * dividers + with_fields * fields + n * context <= SLACK_BLOCKS_MAX:
            break
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}}]
    for i, a in enumerate(ordered):
        if i and dividers:
            blocks.append({"type": "divider"})
        title = f"{_slack_emoji(a)} *{_mrkdwn_escape(_one_line(a.title))}*"
        body = "\n".join((title, *(_mrkdwn_escape(line) for line in a.lines)))
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": truncate(body, SLACK_SECTION_TEXT_MAX)}})
        if fields and a.fields:
            shown = [_slack_field(label, value) for label, value in a.fields[:SLACK_FIELDS_PER_SECTION]]
            blocks.append({"type": "section", "fields": shown})
        if context:
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _mrkdwn_escape(_context(a))}]})
    text = "\n".join(f"{_slack_emoji(a)} {_one_line(a.title)}" for a in ordered)
    return {"text": truncate(_mrkdwn_escape(text), SLACK_TEXT_MAX), "blocks": blocks}


def _context(alert: Alert) -> str:
    return f"{alert.kind} · {alert.severity} · {alert.created_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


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


def webhook_group_payload(alerts: list[Alert] | tuple[Alert, ...]) -> dict[str, Any]:
    """Several alerts as one JSON object, most urgent first: ``alerts`` holds each one exactly as
    ``webhook_payload`` shapes it, ``count`` how many, ``title`` "3 alerts" and ``text`` one title a
    line (for chat receivers that show ``text``). One alert is ``webhook_payload``'s object, so a
    receiver tells the two apart by the ``alerts`` key."""
    if len(alerts) == 1:
        return webhook_payload(alerts[0])
    ordered = by_urgency(alerts)
    return {
        "count": len(ordered),
        "title": f"{len(ordered)} alerts",
        "text": "\n".join(_one_line(a.title) for a in ordered),
        "alerts": [webhook_payload(a) for a in ordered],
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
