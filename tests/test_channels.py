"""alerting.channels against real local receivers (tests/receivers.py): what each receiver got,
how each answer and each network failure is classified, and that no secret leaks into a reason,
an exception chain or a log line."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import pytest
import requests
from receivers import (
    PAGERDUTY_PATH,
    SLACK_PATH,
    HttpReceiver,
    SmtpReceiver,
    free_port,
    pagerduty_receiver,
    slack_receiver,
)

from alerting.channels import email_message, pagerduty_payload, parse_retry_after, send, slack_payload, webhook_payload
from alerting.config import Channel
from alerting.records import Alert, Delivered, TerminalError, TransientError

ROUTING_KEY = "e93facc04764012d7bfb002500d5d1a6"  # PagerDuty keys are 32 characters
PASSWORD = "s3cr3t-smtp-pa55"
SLACK_TOKEN = SLACK_PATH.rsplit("/", 1)[-1]
WEBHOOK_PATH = "/hooks/spend/tok-9f8e7d6c5b4a"
SECRETS = (SLACK_PATH, SLACK_TOKEN, ROUTING_KEY, PASSWORD, WEBHOOK_PATH, "tok-9f8e7d6c5b4a")

SLACK_ENV, PD_ENV, PASSWORD_ENV, WEBHOOK_ENV = (
    "SPENDLAKE_TEST_SLACK_URL", "SPENDLAKE_TEST_PD_KEY", "SPENDLAKE_TEST_SMTP_PASSWORD", "SPENDLAKE_TEST_HOOK_URL",
)  # fmt: skip
SENDER, TO = "spendlake@example.com", ("finops@example.com",)


def make_alert(**over: Any) -> Alert:
    base: dict[str, Any] = {
        "key": "budget:team:team-eng:0:2026-11-01T00:00:00Z:0.9",
        "kind": "budget",
        "severity": "critical",
        "title": "Critical: team-eng at 90% of budget",
        "created_at": datetime(2026, 11, 14, 9, 30, tzinfo=UTC),
        "lines": ("Spent $9,000.00 of $10,000.00 (90%)", "Period: November 2026"),
        "fields": (("Owner", "team-eng"), ("Spent", "$9,000.00"), ("Budget", "$10,000.00")),
        "facts": {"owner_type": "team", "owner": "team-eng", "spent_usd": 9000.0, "budget_usd": 10000.0},
        "dedup_key": "budget:team:team-eng:2026-11",
    }
    return Alert(**{**base, **over})


# --- receivers and channels ------------------------------------------------------------------


@pytest.fixture
def slack() -> Iterator[HttpReceiver]:
    with slack_receiver() as r:
        yield r


@pytest.fixture
def pd() -> Iterator[HttpReceiver]:
    with pagerduty_receiver() as r:
        yield r


@pytest.fixture
def hook() -> Iterator[HttpReceiver]:
    with HttpReceiver(WEBHOOK_PATH) as r:
        yield r


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    with SmtpReceiver({"spendlake": PASSWORD}) as r:
        yield r


def slack_channel(monkeypatch: pytest.MonkeyPatch, url: str, timeout: float = 2.0) -> Channel:
    monkeypatch.setenv(SLACK_ENV, url)
    return Channel(name="finops-slack", type="slack", url_env=SLACK_ENV, timeout_s=timeout)


def pd_channel(monkeypatch: pytest.MonkeyPatch, url: str, key: str = ROUTING_KEY) -> Channel:
    monkeypatch.setenv(PD_ENV, key)
    return Channel(name="oncall", type="pagerduty", url=url, routing_key_env=PD_ENV, timeout_s=2.0)


def hook_channel(monkeypatch: pytest.MonkeyPatch, url: str) -> Channel:
    monkeypatch.setenv(WEBHOOK_ENV, url)
    return Channel(name="audit", type="webhook", url_env=WEBHOOK_ENV, timeout_s=2.0)


def mail_channel(monkeypatch: pytest.MonkeyPatch, port: int, password: str = PASSWORD, **over: Any) -> Channel:
    monkeypatch.setenv(PASSWORD_ENV, password)
    kw: dict[str, Any] = {"name": "finance-mail", "type": "email", "smtp_host": "127.0.0.1", "smtp_port": port,
                          "username": "spendlake", "password_env": PASSWORD_ENV, "sender": SENDER, "to": TO,
                          "timeout_s": 2.0}  # fmt: skip
    return Channel(**{**kw, **over})


def transient(channel: Channel, alert: Alert | None = None) -> TransientError:
    with pytest.raises(TransientError) as info:
        send(channel, alert or make_alert())
    return info.value


def terminal(channel: Channel, alert: Alert | None = None) -> TerminalError:
    with pytest.raises(TerminalError) as info:
        send(channel, alert or make_alert())
    return info.value


# --- Slack -----------------------------------------------------------------------------------


def test_slack_gets_block_kit_and_a_text_fallback(slack: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    alert = make_alert()
    with requests.Session() as session:
        assert send(slack_channel(monkeypatch, slack.url), alert, session=session) == Delivered(200, "ok")
    [req] = slack.wait_for(1)
    assert (req.method, req.path) == ("POST", SLACK_PATH)
    assert req.headers["content-type"] == "application/json; charset=utf-8"
    body = req.json
    assert body["text"] == "\n".join(
        ("Critical: team-eng at 90% of budget", "Spent $9,000.00 of $10,000.00 (90%)", "Period: November 2026")
    )
    assert [b["type"] for b in body["blocks"]] == ["header", "section", "section", "context"]
    header, lines, fields, context = body["blocks"]
    assert header["text"] == {"type": "plain_text", "text": "🚨 Critical: team-eng at 90% of budget", "emoji": True}
    assert lines["text"] == {"type": "mrkdwn", "text": "Spent $9,000.00 of $10,000.00 (90%)\nPeriod: November 2026"}
    assert [f["text"] for f in fields["fields"]] == ["*Owner*\nteam-eng", "*Spent*\n$9,000.00", "*Budget*\n$10,000.00"]
    assert context["elements"] == [{"type": "mrkdwn", "text": "budget · critical · 2026-11-14 09:30:00 UTC"}]


def test_slack_limits_are_kept_and_slack_accepts_them(slack: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    alert = make_alert(
        title="T" * 400,
        lines=("<!channel> & co",) + ("x" * 100,) * 60,
        fields=tuple((f"label {i}", f"value {i}") for i in range(25)),
    )
    assert send(slack_channel(monkeypatch, slack.url), alert).status == 200  # the look-alike checks the limits
    blocks = slack.wait_for(1)[0].json["blocks"]
    header = blocks[0]["text"]["text"]
    assert len(header) == 150 and header.endswith("…")
    body = blocks[1]["text"]["text"]
    assert len(body) == 3000 and body.endswith("…") and body.startswith("&lt;!channel&gt; &amp; co\n")
    assert [len(b["fields"]) for b in blocks[2:-1]] == [10, 10, 5]
    assert blocks[4]["fields"][-1]["text"] == "*label 24*\nvalue 24"


def test_slack_never_exceeds_fifty_blocks() -> None:
    payload = slack_payload(make_alert(fields=tuple((f"k{i}", "v") for i in range(600))))
    assert len(payload["blocks"]) == 50
    assert payload["blocks"][-1]["type"] == "context"
    # header, lines, 47 sections of 10 fields, context
    assert sum(len(b.get("fields", ())) for b in payload["blocks"]) == 470


@pytest.mark.parametrize(("kind", "severity", "emoji"), [
    ("budget", "warning", "⚠️"), ("cost_spike", "critical", "🚨"), ("unpriced", "info", "ℹ️"),
    ("report", "info", "📊"),
])  # fmt: skip
def test_slack_header_emoji(kind: str, severity: str, emoji: str) -> None:
    header = slack_payload(make_alert(kind=kind, severity=severity, title="t\nu"))["blocks"][0]["text"]["text"]
    assert header == f"{emoji} t u"


@pytest.mark.parametrize(("status", "answer"), [
    (400, "invalid_payload"), (400, "no_text"), (403, "invalid_token"), (403, "action_prohibited"),
    (404, "channel_not_found"), (410, "channel_is_archived"),
])  # fmt: skip
def test_slack_refusals_are_terminal(slack: HttpReceiver, monkeypatch: pytest.MonkeyPatch, status: int,
                                     answer: str) -> None:  # fmt: skip
    slack.script((status, answer))
    assert terminal(slack_channel(monkeypatch, slack.url)).reason == f"HTTP {status}: {answer}"
    assert len(slack.wait_for(1)) == 1


def test_slack_wrong_path_is_terminal_no_service(slack: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    err = terminal(slack_channel(monkeypatch, slack.url.replace("secretpath", "revokedpath")))
    assert err.reason == "HTTP 404: no_service"
    assert slack.wait_for(1)[0].path == "/services/T000/B000/revokedpath"


def test_slack_429_retry_after_seconds(slack: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    slack.script((429, "rate_limited", {"Retry-After": "7"}))
    err = transient(slack_channel(monkeypatch, slack.url))
    assert (err.reason, err.retry_after) == ("HTTP 429: rate_limited", 7.0)


def test_slack_503_retry_after_http_date(slack: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    when = datetime.fromtimestamp(int(time.time()) + 120, UTC)
    slack.script((503, "Service Unavailable", {"Retry-After": format_datetime(when, usegmt=True)}))
    err = transient(slack_channel(monkeypatch, slack.url))
    assert err.reason == "HTTP 503: Service Unavailable"
    assert err.retry_after is not None and 110 <= err.retry_after <= 120


@pytest.mark.parametrize(("status", "answer"), [(500, "rollup_error"), (503, ""), (408, "request timeout")])
def test_slack_server_errors_are_transient(slack: HttpReceiver, monkeypatch: pytest.MonkeyPatch, status: int,
                                           answer: str) -> None:  # fmt: skip
    slack.script((status, answer))
    err = transient(slack_channel(monkeypatch, slack.url))
    assert (err.reason, err.retry_after) == (f"HTTP {status}: {answer}" if answer else f"HTTP {status}", None)


def test_retry_after_parsing() -> None:
    now = datetime(2015, 10, 21, 7, 27, 30, tzinfo=UTC).timestamp()
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now) == 0.0  # a past date: now
    assert parse_retry_after(" 120 ", now) == 120.0
    for bad in (None, "", "soon", "-3", "nan", "Wed, 99 Foo 2015"):
        assert parse_retry_after(bad, now) is None, bad


def test_slow_receiver_times_out(slack: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    slack.script(("slow", 3.0))
    started = time.monotonic()
    err = transient(slack_channel(monkeypatch, slack.url, timeout=0.3))
    assert err.reason == "timed out after 0.3s" and err.retry_after is None
    assert time.monotonic() - started < 2.0
    assert slack.wait_for(1)[0].json["text"].startswith("Critical: team-eng")


def test_hanging_receiver_times_out(slack: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    slack.script("hang")
    assert transient(slack_channel(monkeypatch, slack.url, timeout=0.3)).reason == "timed out after 0.3s"
    assert len(slack.wait_for(1)) == 1


def test_dropped_connection_is_transient(slack: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    slack.script("close")
    assert transient(slack_channel(monkeypatch, slack.url)).reason == "connection failed: RemoteDisconnected"
    assert len(slack.wait_for(1)) == 1
    assert send(slack_channel(monkeypatch, slack.url), make_alert()) == Delivered(200, "ok")  # the next one goes


def test_refused_connection_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{free_port()}{SLACK_PATH}"
    assert transient(slack_channel(monkeypatch, url)).reason == "connection refused"


def test_unusable_url_is_terminal_and_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    err = terminal(slack_channel(monkeypatch, f"hooks.slack.com{SLACK_PATH}"))  # no scheme
    assert err.reason == "request not sent: MissingSchema (check the channel's URL)"


@pytest.mark.parametrize("kind", ["slack", "pagerduty", "email"])
def test_missing_secret_is_terminal_and_named(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    env = {"slack": SLACK_ENV, "pagerduty": PD_ENV, "email": PASSWORD_ENV}[kind]
    what = {"slack": "url", "pagerduty": "routing_key", "email": "password"}[kind]
    channel = {"slack": lambda: slack_channel(monkeypatch, "x"), "pagerduty": lambda: pd_channel(monkeypatch, "x"),
               "email": lambda: mail_channel(monkeypatch, 25)}[kind]()  # fmt: skip
    monkeypatch.delenv(env)
    # the reason names the variable, not the channel again: whoever shows it names the channel
    assert terminal(channel).reason == f"environment variable {env} ({what}_env) is not set"


# --- PagerDuty -------------------------------------------------------------------------------


def test_pagerduty_trigger(pd: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    alert = make_alert()
    assert send(pd_channel(monkeypatch, pd.url), alert) == Delivered(202, "budget:team:team-eng:2026-11")
    [req] = pd.wait_for(1)
    assert req.path == PAGERDUTY_PATH
    assert req.json == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "budget:team:team-eng:2026-11",
        "payload": {
            "summary": "Critical: team-eng at 90% of budget",
            "severity": "critical",
            "source": "spendlake",
            "component": "budget",
            "group": "team",
            "class": "budget",
            "timestamp": "2026-11-14T09:30:00Z",
            "custom_details": {"owner_type": "team", "owner": "team-eng", "spent_usd": 9000.0, "budget_usd": 10000.0},
        },
    }


def test_pagerduty_dedup_key_defaults_to_the_alert_key(pd: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    alert = make_alert(dedup_key=None, kind="cost_spike", severity="warning", facts={}, title="S" * 2000)
    assert send(pd_channel(monkeypatch, pd.url), alert) == Delivered(202, alert.key)
    payload = pd.wait_for(1)[0].json["payload"]
    assert (payload["group"], payload["severity"], len(payload["summary"])) == ("cost_spike", "warning", 1024)


def test_pagerduty_resolve_sends_only_the_key(pd: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    assert send(pd_channel(monkeypatch, pd.url), make_alert(action="resolve")).detail == "budget:team:team-eng:2026-11"
    body = pd.wait_for(1)[0].json
    assert body == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "budget:team:team-eng:2026-11"}
    assert pagerduty_payload(make_alert(action="resolve"), "k").keys() == {"routing_key", "event_action", "dedup_key"}


def test_pagerduty_invalid_event_is_terminal(pd: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    short_key = "tooshort-routing-key"
    err = terminal(pd_channel(monkeypatch, pd.url, key=short_key))
    assert err.reason.startswith('HTTP 400: {"status": "invalid event", "message": "Event object is invalid"')
    assert "Length of 'routing_key' is incorrect" in err.reason
    assert pd.wait_for(1)[0].json["routing_key"] == short_key


@pytest.mark.parametrize("answer", [(429, {"status": "throttle event", "message": "Rate limited"}),
                                    (502, "Bad Gateway")])  # fmt: skip
def test_pagerduty_throttle_and_5xx_are_transient(pd: HttpReceiver, monkeypatch: pytest.MonkeyPatch,
                                                  answer: tuple[int, Any]) -> None:  # fmt: skip
    pd.script(answer)
    err = transient(pd_channel(monkeypatch, pd.url))
    assert err.reason.startswith(f"HTTP {answer[0]}: ") and err.retry_after is None


# --- generic webhook -------------------------------------------------------------------------


def test_webhook_body(hook: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    alert = make_alert(html="<html>report</html>")
    assert send(hook_channel(monkeypatch, hook.url), alert) == Delivered(200, "ok")
    assert hook.wait_for(1)[0].json == {
        "key": alert.key, "kind": "budget", "severity": "critical", "title": alert.title, "text": alert.text,
        "lines": list(alert.lines),
        "fields": [{"label": "Owner", "value": "team-eng"}, {"label": "Spent", "value": "$9,000.00"},
                   {"label": "Budget", "value": "$10,000.00"}],
        "facts": alert.facts, "action": "trigger", "dedup_key": "budget:team:team-eng:2026-11",
        "created_at": "2026-11-14T09:30:00Z",
    }  # fmt: skip
    assert webhook_payload(alert) == hook.requests[0].json


def test_webhook_any_2xx_delivers_and_redirects_are_not_followed(hook: HttpReceiver,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    with HttpReceiver("/elsewhere") as elsewhere:
        hook.script((204, ""), (301, "", {"Location": elsewhere.url}))
        channel = hook_channel(monkeypatch, hook.url)
        assert send(channel, make_alert()) == Delivered(204, "")
        assert terminal(channel).reason == "HTTP 301"
        assert len(hook.wait_for(2)) == 2 and elsewhere.requests == []


# --- e-mail ----------------------------------------------------------------------------------


def test_email_plain_and_generated_html(smtp: SmtpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    alert = make_alert(fields=(("Owner", "R&D <eng>"),))
    assert send(mail_channel(monkeypatch, smtp.port), alert) == Delivered(250, "")
    [mail] = smtp.wait_for(1)
    assert (mail.mail_from, mail.rcpt_tos, mail.login) == (SENDER, TO, "spendlake")
    msg = mail.message
    assert msg["Subject"] == "[spendlake] Critical: team-eng at 90% of budget"
    assert (msg["From"], msg["To"]) == (SENDER, TO[0])
    assert msg.get_content_type() == "multipart/alternative"
    assert part(msg, "plain") == alert.text + "\n"
    html = part(msg, "html")
    assert "<th align=\"left\">Owner</th><td>R&amp;D &lt;eng&gt;</td>" in html


def part(msg: EmailMessage, subtype: str) -> str:
    """The text/``subtype`` body of a received mail, with line ends as written (SMTP carries CRLF)."""
    body = msg.get_body((subtype,))
    assert body is not None, f"no text/{subtype} part"
    return str(body.get_content()).replace("\r\n", "\n")


def test_email_report_html_alternative(smtp: SmtpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    page = "<!doctype html><html><body><h1>Weekly spend</h1><table><tr><td>€ 1.234</td></tr></table></body></html>"
    alert = make_alert(kind="report", severity="info", title="Weekly spend report", html=page)
    send(mail_channel(monkeypatch, smtp.port), alert)
    msg = smtp.wait_for(1)[0].message
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert part(msg, "html") == page + "\n"


def test_email_451_is_transient_then_the_retry_goes(smtp: SmtpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    smtp.fail_next("451 4.3.0 try later", stage="data")
    channel = mail_channel(monkeypatch, smtp.port)
    assert transient(channel).reason == "SMTP 451 (SMTPDataError): 4.3.0 try later"
    assert smtp.mails == []
    assert send(channel, make_alert()).status == 250
    assert len(smtp.wait_for(1)) == 1


def test_email_550_recipient_is_terminal(smtp: SmtpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    smtp.fail_next("550 5.1.1 no such user", stage="rcpt")
    assert terminal(mail_channel(monkeypatch, smtp.port)).reason == (
        "SMTP recipients refused: finops@example.com: 550 5.1.1 no such user"
    )
    assert smtp.mails == []


def test_email_one_refused_recipient_of_two_is_delivered(smtp: SmtpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    smtp.fail_next("550 5.1.1 no such user", stage="rcpt")
    channel = mail_channel(monkeypatch, smtp.port, to=("gone@example.com", "finops@example.com"))
    assert send(channel, make_alert()) == Delivered(250, "refused gone@example.com: 550")
    assert smtp.wait_for(1)[0].rcpt_tos == ("finops@example.com",)


def test_email_wrong_password_is_terminal(smtp: SmtpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    err = terminal(mail_channel(monkeypatch, smtp.port, password="wrong-" + PASSWORD))
    assert err.reason.startswith("SMTP 535 (SMTPAuthenticationError): 5.7.8")
    assert PASSWORD not in err.reason and smtp.mails == []


def test_email_starttls_not_offered_is_terminal(smtp: SmtpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    err = terminal(mail_channel(monkeypatch, smtp.port, security="starttls"))
    assert err.reason == "SMTP: STARTTLS extension not supported by server."


def test_email_refused_port_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    assert transient(mail_channel(monkeypatch, free_port())).reason == "connection refused"


def test_email_header_has_no_line_break() -> None:
    channel = Channel(name="m", type="email", sender=SENDER, to=TO)
    assert email_message(channel, make_alert(title="a\r\nBcc: x@evil"))["Subject"] == "[spendlake] a Bcc: x@evil"


# --- secrecy ---------------------------------------------------------------------------------

# Each case: the receiver's script, the channel, and whether an HTTP answer arrived (then urllib3
# logged the request line, and the test checks it was redacted rather than absent).
SECRECY_CASES = [
    ("slack", (400, f"invalid_token for https://hooks.slack.com{SLACK_PATH}"), True),
    ("slack", (403, f"token {SLACK_TOKEN} revoked"), True),
    ("slack", (429, "rate_limited", {"Retry-After": "1"}), True),
    ("slack", (500, "rollup_error"), True),
    ("slack", ("slow", 2.0), False),
    ("slack", "close", False),
    ("slack", "refused", False),
    ("pagerduty", (400, {"status": "invalid event", "errors": [f"routing_key {ROUTING_KEY} unknown"]}), True),
    ("pagerduty", "close", False),
    ("webhook", (401, f"bad token in {WEBHOOK_PATH}"), True),
    ("webhook", "refused", False),
    ("email", "535", False),
    ("email", "550", False),
    ("email", "refused", False),
]


@pytest.mark.parametrize(("kind", "answer", "answered"), SECRECY_CASES, ids=lambda v: str(v)[:20])
def test_no_secret_in_reasons_chains_or_logs(kind: str, answer: Any, answered: bool, caplog: pytest.LogCaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    with slack_receiver() as slack, pagerduty_receiver() as pd, HttpReceiver(WEBHOOK_PATH) as hook, \
            SmtpReceiver({"spendlake": PASSWORD}) as smtp:  # fmt: skip
        http = {"slack": slack, "pagerduty": pd, "webhook": hook}.get(kind)
        port = free_port() if answer == "refused" else None
        if kind == "email":
            if answer == "550":
                smtp.fail_next("550 5.1.1 no such user", stage="rcpt")
            password = "wrong-" + PASSWORD if answer == "535" else PASSWORD
            channel = mail_channel(monkeypatch, port or smtp.port, password=password)
        else:
            assert http is not None
            if port is None:
                http.script(answer)
            url = http.url if port is None else http.url.replace(f":{http.port}/", f":{port}/")
            channel = {"slack": lambda: slack_channel(monkeypatch, url, timeout=0.3),
                       "pagerduty": lambda: pd_channel(monkeypatch, url),
                       "webhook": lambda: hook_channel(monkeypatch, url)}[kind]()  # fmt: skip
        with pytest.raises((TransientError, TerminalError)) as info:
            send(channel, make_alert())
    err = info.value
    assert isinstance(err, (TransientError, TerminalError))
    ours = [r for r in caplog.records if not r.name.startswith("mail.log")]  # not the stand-in SMTP server's own
    seen = "\n".join([str(err), err.reason, "".join(traceback.format_exception(err)), *map(_formatted, ours)])
    for secret in SECRETS + ("wrong-" + PASSWORD,):
        assert secret not in seen, f"{secret!r} leaked: {seen}"
    assert err.__context__ is None and err.__cause__ is None
    assert any(r.name == "alerting.channels" and err.reason in r.getMessage() for r in ours)  # logging did happen
    if any(secret in str(answer) for secret in SECRETS):
        assert "***" in err.reason  # the echo was scrubbed, not cut off
    if answered:
        lines = [r.getMessage() for r in ours if r.name == "urllib3.connectionpool" and '"POST ' in r.getMessage()]
        assert lines and all('"POST /*** HTTP/1.1"' in line for line in lines), lines


def _formatted(record: logging.LogRecord) -> str:
    return f"{record.name} {record.getMessage()} {record.exc_text or ''}"
