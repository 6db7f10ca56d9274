"""Real local servers that stand in for Slack, PagerDuty, a webhook and an SMTP relay.

They are someone else's services; a server on 127.0.0.1 that answers like them is the honest test
of our sending code (real sockets, real timeouts, real dropped connections — no mocks). Each one
records what arrived and answers from a script: a queue of responses used one per request, then a
default. Importable as ``tests.receivers`` (repo root on sys.path, e.g. ``bench/freshness.py``) or
as ``receivers`` from the tests; nothing here imports pytest, DuckDB or Kafka.

    with slack_receiver() as slack:
        slack.script((429, "rate_limited", {"Retry-After": "7"}), "close")
        ...  # first request → 429, second → connection dropped, then Slack's own answers
        slack.wait_for(2)
"""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Union

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

SLACK_PATH = "/services/T000/B000/secretpath"
PAGERDUTY_PATH = "/v2/enqueue"

# A response: (status, body) or (status, body, headers) — a str body is sent as text/plain, a
# dict or list as JSON, bytes as they are; "close" drops the connection without answering;
# "hang" never answers (until the receiver closes); ("slow", seconds) or ("slow", seconds,
# response) waits, then answers (200 "ok" by default); a callable gets the Request and returns
# one of these.
Response = Union[tuple[Any, ...], str, Callable[["Request"], Any]]


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    json: Any  # the parsed body, None when it is not JSON
    received_at: float  # time.time() when the request line and body had arrived


class HttpReceiver:
    """A ThreadingHTTPServer on 127.0.0.1 and a free port, in a daemon thread."""

    def __init__(self, path: str = "/hook", default: Response = (200, "ok")) -> None:
        self.path = path
        self._default: Response = default
        self._script: deque[Response] = deque()
        self._requests: list[Request] = []
        self._arrived = threading.Condition()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        # a short poll interval: close() returns within 50 ms, not the default 500
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    @property
    def requests(self) -> list[Request]:
        """A copy of what arrived so far, in arrival order."""
        with self._arrived:
            return list(self._requests)

    def script(self, *responses: Response) -> HttpReceiver:
        """Queue responses for the next requests (after those already queued)."""
        with self._arrived:
            self._script.extend(responses)
        return self

    def set_default(self, response: Response) -> HttpReceiver:
        with self._arrived:
            self._default = response
        return self

    def wait_for(self, n: int, timeout: float = 5.0) -> list[Request]:
        """The first ``n`` requests, once they arrived; AssertionError after ``timeout`` seconds."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._requests) >= n, timeout):
                raise AssertionError(f"{self.url}: {len(self._requests)} requests after {timeout} s, expected {n}")
            return list(self._requests[:n])

    def close(self) -> None:
        """Stop serving; slow and hanging handlers are woken and drop their connections."""
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> HttpReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _record(self, request: Request) -> Response:
        with self._arrived:
            self._requests.append(request)
            self._arrived.notify_all()
            return self._script.popleft() if self._script else self._default


def _handler_class(receiver: HttpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
            headers = {k.lower(): v for k, v in self.headers.items()}
            request = Request(self.command, self.path, headers, body, parsed, time.time())
            self._answer(receiver._record(request), request)

        do_GET = do_PUT = do_POST

        def _answer(self, response: Response, request: Request) -> None:
            while callable(response):
                response = response(request)
            if response == "close":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if response == "hang":
                receiver._closing.wait()
                self.close_connection = True
                return
            if isinstance(response, tuple) and response and response[0] == "slow":
                if receiver._closing.wait(float(response[1])):
                    return
                self._answer(response[2] if len(response) > 2 else (200, "ok"), request)
                return
            assert isinstance(response, tuple), f"not a response: {response!r}"
            status, body, headers = (*response, {})[:3]
            self._send(int(status), body, dict(headers))

        def _send(self, status: int, body: Any, headers: dict[str, str]) -> None:
            if isinstance(body, (dict, list)):
                data, ctype = json.dumps(body).encode(), "application/json"
            elif isinstance(body, bytes):
                data, ctype = body, "application/octet-stream"
            else:
                data, ctype = str(body).encode(), "text/plain; charset=utf-8"
            self.send_response(status)
            headers.setdefault("Content-Type", ctype)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler


# --- Slack and PagerDuty look-alikes -----------------------------------------------------------


def slack_answer(request: Request, path: str = SLACK_PATH) -> tuple[int, str]:
    """What a Slack incoming webhook answers, for the checks it makes on a body."""
    if request.path != path:
        return 404, "no_service"
    body = request.json
    if not isinstance(body, dict):
        return 400, "invalid_payload"
    if not body.get("text") and not body.get("blocks"):
        return 400, "no_text"
    blocks = body.get("blocks", [])
    if not isinstance(blocks, list) or len(blocks) > 50 or not all(_slack_block_ok(b) for b in blocks):
        return 400, "invalid_blocks"
    return 200, "ok"


def _slack_block_ok(block: Any) -> bool:
    if not isinstance(block, dict):
        return False
    kind = block.get("type")
    if kind == "header":
        text = block.get("text", {})
        return text.get("type") == "plain_text" and 0 < len(text.get("text", "")) <= 150
    if kind == "section":
        text, fields = block.get("text"), block.get("fields")
        if text is None and not fields:
            return False
        text_ok = text is None or 0 < len(text.get("text", "")) <= 3000
        fields_ok = fields is None or (len(fields) <= 10 and all(0 < len(f.get("text", "")) <= 2000 for f in fields))
        return text_ok and fields_ok
    if kind == "context":
        return 0 < len(block.get("elements", [])) <= 10
    return kind in ("divider", "image", "actions", "rich_text")


def slack_receiver(path: str = SLACK_PATH) -> HttpReceiver:
    """A started Slack look-alike: 200 "ok", or Slack's 400/404 for a body or path it refuses."""
    return HttpReceiver(path, lambda r: slack_answer(r, path))


def pagerduty_answer(request: Request, path: str = PAGERDUTY_PATH) -> tuple[int, Any]:
    """What the Events API v2 answers: 202 with the dedup_key (the sent one, else a new one)."""
    if request.path != path:
        return 404, {"status": "not found", "message": "Not Found"}
    body = request.json
    errors = _pagerduty_errors(body) if isinstance(body, dict) else ["Event object is invalid (not JSON)"]
    if errors:
        return 400, {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
    dedup_key = body.get("dedup_key") or uuid.uuid4().hex
    return 202, {"status": "success", "message": "Event processed", "dedup_key": dedup_key}


def _pagerduty_errors(body: dict[str, Any]) -> list[str]:
    errors = []
    key = body.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    action = body.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        errors.append("'event_action' is invalid (must be one of: trigger, acknowledge, resolve)")
    if action == "trigger":
        payload = body.get("payload")
        payload = payload if isinstance(payload, dict) else {}
        for name in ("summary", "source"):
            if not payload.get(name):
                errors.append(f"'payload.{name}' is missing or blank")
        if payload.get("severity") not in ("critical", "error", "warning", "info"):
            errors.append("'payload.severity' is invalid (must be one of: critical, error, warning, info)")
    elif action in ("acknowledge", "resolve") and not body.get("dedup_key"):
        errors.append("'dedup_key' is missing or blank")
    return errors


def pagerduty_receiver(path: str = PAGERDUTY_PATH) -> HttpReceiver:
    """A started Events API v2 look-alike (202 success, 400 "invalid event")."""
    return HttpReceiver(path, lambda r: pagerduty_answer(r, path))


# --- SMTP ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage  # parsed with email.policy.default
    received_at: float
    login: str | None  # the AUTH user of the session, if it logged in


@dataclass
class _Failure:
    reply: str  # e.g. "451 4.3.0 try later"
    count: int
    stage: str  # "rcpt" | "data"


@dataclass
class _State:
    lock: threading.Condition = field(default_factory=threading.Condition)
    mails: list[Mail] = field(default_factory=list)
    failures: deque[_Failure] = field(default_factory=deque)


class _Handler:
    def __init__(self, state: _State) -> None:
        self.state = state

    def _fail(self, stage: str) -> str | None:
        with self.state.lock:
            head = self.state.failures[0] if self.state.failures else None
            if head is None or head.stage != stage:
                return None
            head.count -= 1
            if head.count <= 0:
                self.state.failures.popleft()
            return head.reply

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:  # fmt: skip
        reply = self._fail("rcpt")
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = self._fail("data")
        if reply:
            return reply
        raw = envelope.original_content or envelope.content or b""
        message = email.message_from_bytes(raw if isinstance(raw, bytes) else raw.encode(), policy=email.policy.default)
        login = session.auth_data.decode() if isinstance(session.auth_data, bytes) else None
        rcpt_tos = tuple(envelope.rcpt_tos)
        mail = Mail(envelope.mail_from or "", rcpt_tos, message, time.time(), login)
        with self.state.lock:
            self.state.mails.append(mail)
            self.state.lock.notify_all()
        return "250 Message accepted for delivery"


class _BoundController(Controller):
    """aiosmtpd's Controller on a socket bound here to port 0: a free port with no race."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        super().__init__(handler, hostname="127.0.0.1", port=self._sock.getsockname()[1], **kwargs)

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self._sock)


class SmtpReceiver:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 recording every mail it accepts. With
    ``credentials`` it offers AUTH (PLAIN, LOGIN) over plain text and answers 535 to others."""

    def __init__(self, credentials: dict[str, str] | None = None) -> None:
        self._state = _State()
        kwargs: dict[str, Any] = {"server_hostname": "localhost", "ready_timeout": 10.0}
        if credentials is not None:
            kwargs.update(authenticator=_authenticator(credentials), auth_require_tls=False)
        self._controller = _BoundController(_Handler(self._state), **kwargs)
        self._controller.start()
        self.host = "127.0.0.1"
        self.port: int = self._controller.port

    @property
    def mails(self) -> list[Mail]:
        with self._state.lock:
            return list(self._state.mails)

    def fail_next(self, reply: str, count: int = 1, stage: str = "data") -> SmtpReceiver:
        """Answer ``reply`` (e.g. "451 4.3.0 try later", "550 5.1.1 no such user") at ``stage``
        ("rcpt": to each RCPT TO, "data": after the message) for the next ``count`` times."""
        if stage not in ("rcpt", "data"):
            raise ValueError(f"stage: got {stage!r}, expected 'rcpt' or 'data'")
        with self._state.lock:
            self._state.failures.append(_Failure(reply, count, stage))
        return self

    def wait_for(self, n: int, timeout: float = 5.0) -> list[Mail]:
        with self._state.lock:
            if not self._state.lock.wait_for(lambda: len(self._state.mails) >= n, timeout):
                got = len(self._state.mails)
                raise AssertionError(f"SMTP :{self.port}: {got} mails after {timeout} s, expected {n}")
            return list(self._state.mails[:n])

    def close(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _authenticator(credentials: dict[str, str]) -> Callable[..., AuthResult]:
    def check(server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            user, password = auth_data.login.decode(), auth_data.password.decode()
            if credentials.get(user) == password:
                return AuthResult(success=True, auth_data=auth_data.login)
        return AuthResult(success=False, handled=False)

    return check


def free_port() -> int:
    """A port nobody listens on (bound then released): for "connection refused" tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


__all__ = [
    "HttpReceiver", "Request", "Response", "SmtpReceiver", "Mail", "slack_receiver", "pagerduty_receiver",
    "slack_answer", "pagerduty_answer", "free_port", "SLACK_PATH", "PAGERDUTY_PATH",
]  # fmt: skip
