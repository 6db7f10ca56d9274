"""Send one alert (or, on Slack and the webhook, one grouped message of several) to one channel,
and sort every failure into "retry later" or "give up".

The rule ``send`` keeps: it returns ``Delivered`` or raises ``TransientError`` (5xx, 429, 408,
timeouts, refused or dropped connections, SMTP 4xx; ``retry_after`` when the receiver said when)
or ``TerminalError`` (any other refusal, a missing secret) — nothing else escapes, so the outbox
needs no other ``except``. A reason, a log line and an exception's chain never hold the URL, its
path, the routing key or the password: requests' own messages name the URL, so reasons are built
here, receiver bodies are scrubbed of the secrets, and errors are raised outside ``except`` blocks
so no library exception rides along as ``__context__``.
"""

from __future__ import annotations

import json
import logging
import math
import smtplib
import ssl
import time
from collections.abc import Iterator, Sequence
from datetime import UTC
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3.exceptions

from alerting.config import CHANNEL_TYPES, Channel
from alerting.records import Alert, Delivered, DeliveryError, TerminalError, TransientError
from alerting.render import (
    GROUPED_TYPES,
    email_message,
    pagerduty_payload,
    slack_group_payload,
    slack_payload,
    webhook_group_payload,
    webhook_payload,
)

__all__ = [
    "send", "slack_payload", "slack_group_payload", "pagerduty_payload", "email_message", "webhook_payload",
    "webhook_group_payload", "parse_retry_after", "GROUPED_TYPES",
]  # fmt: skip

log = logging.getLogger(__name__)

SHORT_BODY = 200  # characters of a receiver's answer kept in a reason
_TOKEN_SEGMENT_MIN = 8  # a URL's last path segment this long is taken for a token (Slack's are 24)


def send(channel: Channel, alert: Alert | Sequence[Alert], *, session: requests.Session | None = None) -> Delivered:
    """Deliver ``alert`` on ``channel`` once (no retries here: the outbox owns retrying). A sequence
    of several alerts goes out as one grouped message on a channel type in ``GROUPED_TYPES``; other
    types take one alert per message and refuse a group (terminal, so the outbox sends each alone)."""
    alerts = (alert,) if isinstance(alert, Alert) else tuple(alert)
    what = alerts[0].key if len(alerts) == 1 else f"{len(alerts)} alerts ({', '.join(a.key for a in alerts)})"
    try:
        if not alerts:
            raise TerminalError("no alert to send")
        if len(alerts) > 1 and channel.type not in GROUPED_TYPES:
            raise TerminalError(f"a {channel.type} channel takes one alert per message, got {len(alerts)}")
        if channel.type == "email":
            delivered = _send_email(channel, alerts[0])
        elif channel.type in CHANNEL_TYPES:
            delivered = _send_http(channel, alerts, session)
        else:
            known = ", ".join(CHANNEL_TYPES)
            raise TerminalError(f"type {channel.type!r}, expected one of {known}")
    except DeliveryError as exc:
        log.debug("channel %r (%s): %s %s: %s", channel.name, channel.type, what, type(exc).__name__, exc)
        raise
    log.debug("channel %r (%s): %s delivered, status %s", channel.name, channel.type, what, delivered.status)
    return delivered


def _unnamed(channel: Channel, exc: LookupError) -> str:
    """A secret lookup's message without its "channel 'x': " prefix: whoever shows a delivery
    error (the outbox's table, `alerts test`) names the channel already."""
    text = str(exc)
    prefix = f"channel {channel.name!r}: "
    return text[len(prefix):] if text.startswith(prefix) else text


# --- HTTP: Slack, PagerDuty, webhook -----------------------------------------------------------


def _send_http(channel: Channel, alerts: tuple[Alert, ...], session: requests.Session | None) -> Delivered:
    failure: DeliveryError
    try:
        url = channel.endpoint()
        routing_key = channel.routing_key() if channel.type == "pagerduty" else None
    except LookupError as exc:
        failure = TerminalError(_unnamed(channel, exc))  # names the variable or file, never a value
    else:
        secrets = [*url_secrets(url), *([routing_key] if routing_key else [])]
        if routing_key is not None:
            body = pagerduty_payload(alerts[0], routing_key)  # one alert: send() refuses a group
        else:
            body = slack_group_payload(alerts) if channel.type == "slack" else webhook_group_payload(alerts)
        response = _post(session, url, body, channel.timeout_s)
        text = response.content.decode("utf-8", "replace")
        retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
        status = classify_http(response.status_code, text, retry_after, secrets)
        return Delivered(status, _pagerduty_dedup_key(text) if routing_key is not None else short(text, secrets))
    raise failure


def _post(session: requests.Session | None, url: str, body: dict[str, Any], timeout: float) -> requests.Response:
    """One POST, no redirects: a webhook that redirects is misconfigured, and following it would
    re-send the alert to a place nobody configured."""
    data = json.dumps(body, ensure_ascii=False, default=str).encode()
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "spendlake-alerts"}
    failure: DeliveryError
    own = session is None
    s = requests.Session() if session is None else session
    try:
        return s.post(url, data=data, headers=headers, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        failure = request_failure(exc, timeout)
    finally:
        if own:
            s.close()
    raise failure  # outside the except: the requests exception (with its URL) is not chained


def classify_http(status: int, body: str, retry_after: float | None, secrets: Sequence[str]) -> int:
    """``status`` when 2xx; else raises: 408, 429 and 5xx are transient, any other code terminal."""
    if 200 <= status < 300:
        return status
    answer = short(body, secrets)
    reason = f"HTTP {status}: {answer}" if answer else f"HTTP {status}"
    if status in (408, 429) or 500 <= status < 600:
        raise TransientError(reason, retry_after)
    raise TerminalError(reason)


def request_failure(exc: requests.RequestException, timeout: float) -> DeliveryError:
    """A requests exception as a delivery error whose reason is ours (``str(exc)`` names the URL)."""
    chain = list(_causes(exc))
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in chain):
        return TerminalError("TLS certificate verification failed")
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return TransientError("connection refused")
    # Not urllib3's TimeoutError: its NewConnectionError (refused, unreachable) is one of those.
    if isinstance(exc, requests.Timeout) or any(
        isinstance(e, (TimeoutError, urllib3.exceptions.ReadTimeoutError)) for e in chain
    ):
        return TransientError(f"timed out after {timeout:g}s")
    if isinstance(exc, (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        return TransientError(f"connection failed: {type(chain[-1]).__name__}")
    return TerminalError(f"request not sent: {type(exc).__name__} (check the channel's URL)")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps (args, urllib3's ``reason``, cause, context), depth first: the
    last one is the root, e.g. ``RemoteDisconnected`` under three wrappers."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        inner = [a for a in e.args if isinstance(a, BaseException)]
        inner += [x for x in (getattr(e, "reason", None), e.__cause__, e.__context__) if isinstance(x, BaseException)]
        stack.extend(reversed(inner))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` in seconds from ``now``: delta-seconds or an HTTP-date (a past date is 0).
    None when absent or unreadable — the caller then backs off on its own schedule."""
    if not value or not value.strip():
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - now)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _pagerduty_dedup_key(text: str) -> str:
    try:
        answer = json.loads(text)
    except ValueError:
        return ""
    key = answer.get("dedup_key") if isinstance(answer, dict) else None
    return key if isinstance(key, str) else ""


def url_secrets(url: str) -> list[str]:
    """The parts of a URL that may be a credential: the whole URL, its path and query, the last
    path segment (where Slack and most webhooks put the token) and a userinfo password."""
    parts = urlsplit(url)
    found = [url]
    if parts.path not in ("", "/"):
        found.append(parts.path)
        last = parts.path.rstrip("/").rsplit("/", 1)[-1]
        if len(last) >= _TOKEN_SEGMENT_MIN:
            found.append(last)
    found += [p for p in (parts.query, parts.password) if p]
    return found


def scrub(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret replaced by "***", longest first (a URL before its path)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def short(text: str, secrets: Sequence[str]) -> str:
    """A receiver's answer fit for a reason: scrubbed (before cutting, so no secret is left half
    visible), whitespace collapsed, at most SHORT_BODY characters."""
    return " ".join(scrub(text, secrets).split())[:SHORT_BODY]


# --- e-mail ----------------------------------------------------------------------------------


def _send_email(channel: Channel, alert: Alert) -> Delivered:
    failure: DeliveryError
    try:
        password = channel.password()
    except LookupError as exc:
        failure = TerminalError(_unnamed(channel, exc))
    else:
        if not channel.smtp_host or not channel.sender or not channel.to:
            raise TerminalError("needs smtp_host, from and to")
        secrets = [password] if password else []
        try:
            refused = _smtp_send(channel, email_message(channel, alert), password)
        except (smtplib.SMTPException, OSError) as exc:
            failure = smtp_failure(exc, channel.timeout_s, secrets)
        else:
            # Some recipients took it: a retry would mail them twice, so this counts as delivered.
            detail = "; ".join(f"refused {addr}: {code}" for addr, (code, _) in sorted(refused.items()))
            return Delivered(250, detail)
    raise failure


def _smtp_send(channel: Channel, msg: EmailMessage, password: str | None) -> dict[str, tuple[int, bytes]]:
    host, port, timeout = channel.smtp_host or "", channel.smtp_port, channel.timeout_s
    smtp = (
        smtplib.SMTP_SSL(host, port, timeout=timeout, context=ssl.create_default_context())
        if channel.security == "ssl"
        else smtplib.SMTP(host, port, timeout=timeout)
    )
    try:
        if channel.security == "starttls":
            smtp.starttls(context=ssl.create_default_context())
        if channel.username:
            smtp.login(channel.username, password or "")
        return smtp.send_message(msg, from_addr=channel.sender, to_addrs=list(channel.to))
    finally:
        _quit(smtp)


def _quit(smtp: smtplib.SMTP) -> None:
    """QUIT, ignoring its answer: the mail is already accepted (or already failed), and an odd
    reply to QUIT must not turn a delivered mail into a retried one (``with SMTP`` would raise)."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def smtp_failure(exc: OSError, timeout: float, secrets: Sequence[str]) -> DeliveryError:
    """An smtplib or socket error as a delivery error: reply codes 4xx and network trouble are
    transient, 5xx and a server lacking what the channel needs (STARTTLS, AUTH) terminal."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = {addr: code for addr, (code, _) in exc.recipients.items()}
        answers = "; ".join(f"{addr}: {code} {_text(msg, secrets)}" for addr, (code, msg) in exc.recipients.items())
        reason = f"SMTP recipients refused: {answers}"
        return TransientError(reason) if any(400 <= c < 500 for c in codes.values()) else TerminalError(reason)
    if isinstance(exc, smtplib.SMTPResponseException):
        code = exc.smtp_code
        reason = f"SMTP {code} ({type(exc).__name__}): {_text(exc.smtp_error, secrets)}"
        return TerminalError(reason) if 500 <= code < 600 else TransientError(reason)
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return TransientError("SMTP connection closed by the server")
    if isinstance(exc, smtplib.SMTPException):  # STARTTLS or AUTH not offered: a config matter
        return TerminalError(f"SMTP: {_text(str(exc), secrets)}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TerminalError("TLS certificate verification failed")
    if isinstance(exc, TimeoutError):
        return TransientError(f"timed out after {timeout:g}s")
    if isinstance(exc, ConnectionRefusedError):
        return TransientError("connection refused")
    return TransientError(f"connection failed: {type(exc).__name__}")


def _text(value: bytes | str, secrets: Sequence[str]) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return short(text, secrets)


# --- urllib3's debug log names request paths: for Slack the path is the secret ---------------


class _HideRequestTargets(logging.Filter):
    """Rewrites urllib3 log records so a path or URL argument shows only scheme and host
    (``"POST /*** HTTP/1.1" 200``); everything else in the record is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_hide_target(a) for a in record.args)
        return True


def _hide_target(arg: object) -> object:
    if not isinstance(arg, str):
        return arg
    if arg.startswith("/"):
        return "/***"
    if "://" in arg:
        parts = urlsplit(arg)
        return f"{parts.scheme}://{parts.hostname or ''}/***"
    return arg


def _install_log_filter() -> None:
    """Once per process, on every urllib3 logger that formats a request path or URL."""
    for name in ("urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry", "urllib3.poolmanager"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _HideRequestTargets) for f in logger.filters):
            logger.addFilter(_HideRequestTargets())


_install_log_filter()
