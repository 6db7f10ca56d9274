"""How spendlake talks to a secured Kafka: one record of the `[kafka]` security settings, its
translation into each client's own configuration (kafka-python keyword arguments, librdkafka
properties), and `describe_failure`, which turns a client's authentication or TLS-trust error
into one readable line. Secrets are read from the environment when the settings are loaded and
never appear in a repr, a log line or an error message.

Hostname verification stays on with both clients: the broker's certificate must name the host of
the bootstrap address (and of every advertised listener) in its subjectAltName.

kafka-python 3 gives up on a broker that refused the handshake or the credentials with only
"Unable to bootstrap from ..." (after bootstrap_timeout_ms, 30 s); the reason is in its log. So
`KafkaSecurity.kafka_python()` also starts listening to kafka-python's connection log (without
changing what is printed), and `describe_failure` reads the reason from there when the error
text it is given is only that generic one.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl_mechanism: str = ""  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_cafile: str = ""
    ssl_certfile: str = ""  # client certificate (PEM) for mutual TLS
    ssl_keyfile: str = ""  # its private key (PEM), encrypted or not
    ssl_key_password: str = field(default="", repr=False)

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL")

    @property
    def tls(self) -> bool:
        return self.protocol.endswith("SSL")

    @property
    def mechanism(self) -> str:
        return self.sasl_mechanism or "PLAIN"

    def kafka_python(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python's KafkaConsumer / KafkaProducer / KafkaAdminClient."""
        _remember(self)
        if self.tls or self.sasl:
            _KafkaPythonLog.install()
        out: dict[str, Any] = {}
        if self.protocol != "PLAINTEXT":
            out["security_protocol"] = self.protocol
        if self.sasl:
            out["sasl_mechanism"] = self.mechanism
            out["sasl_plain_username"] = self.sasl_username
            out["sasl_plain_password"] = self.sasl_password
        if self.tls:
            out["ssl_check_hostname"] = True  # kafka-python's default; said here because it matters
            if self.ssl_cafile:
                out["ssl_cafile"] = self.ssl_cafile
            if self.ssl_certfile:
                out["ssl_certfile"] = self.ssl_certfile
            if self.ssl_keyfile:
                out["ssl_keyfile"] = self.ssl_keyfile
            if self.ssl_key_password:
                out["ssl_password"] = self.ssl_key_password
        return out

    def librdkafka(self) -> dict[str, Any]:
        """Properties for confluent-kafka's Consumer / Producer / AdminClient (librdkafka names)."""
        _remember(self)
        out: dict[str, Any] = {"security.protocol": self.protocol.lower()}
        if self.sasl:
            out["sasl.mechanism"] = self.mechanism
            out["sasl.username"] = self.sasl_username
            out["sasl.password"] = self.sasl_password
        if self.tls:
            out["ssl.endpoint.identification.algorithm"] = "https"  # check the broker's host name
            out["enable.ssl.certificate.verification"] = True
            if self.ssl_cafile:
                out["ssl.ca.location"] = self.ssl_cafile
            if self.ssl_certfile:
                out["ssl.certificate.location"] = self.ssl_certfile
            if self.ssl_keyfile:
                out["ssl.key.location"] = self.ssl_keyfile
            if self.ssl_key_password:
                out["ssl.key.password"] = self.ssl_key_password
        return out


# --- reading failures ----------------------------------------------------------------------

# The settings the process last translated for a client: what describe_failure names (the user,
# the mechanism, the files) when it is not handed them. One process talks to one Kafka.
_current: KafkaSecurity | None = None


def _remember(security: KafkaSecurity) -> None:
    global _current
    _current = security


_SASL_REFUSED = re.compile(
    r"SaslAuthenticationFailed|SASL_AUTHENTICATION_FAILED|SASL authentication error|Authentication failed"
    r"|invalid credentials|Invalid username or password", re.I)  # fmt: skip
_MECH_UNSUPPORTED = re.compile(r"UnsupportedSaslMechanism|Unsupported SASL mechanism|does not support \S+ sasl mechanism"
                               r"|UNSUPPORTED_SASL_MECHANISM", re.I)  # fmt: skip
_HOST_MISMATCH = re.compile(r"(Hostname|IP address) mismatch[^(\n]*|hostname mismatch|certificate is not valid for '[^']*'",
                            re.I)  # fmt: skip
_VERIFY_FAILED = re.compile(r"certificate verify failed|CERTIFICATE_VERIFY_FAILED|broker certificate could not be verified",
                            re.I)  # fmt: skip
# what a client sees when the broker rejected (or was not given) its certificate: TLS alerts
_CLIENT_CERT_REFUSED = re.compile(
    r"alert[ _]bad[ _]certificate|alert[ _]certificate[ _]unknown|alert[ _]unknown[ _]ca"
    r"|alert[ _]certificate[ _]required|SSL alert number (42|46|48|116)\b", re.I)  # fmt: skip
_KEY_UNLOADABLE = re.compile(r"ssl\.key\.location failed|ssl\.certificate\.location failed|PEM lib|bad decrypt"
                             r"|maybe wrong password|KEY_VALUES_MISMATCH|key values mismatch", re.I)  # fmt: skip
_NO_FILE = re.compile(r"No such file or directory|FileNotFoundError", re.I)
# errors that only say the broker could not be used: the reason, if any, is in kafka-python's log
_GENERIC = re.compile(r"Unable to bootstrap|NoBrokersAvailable|KafkaTimeoutError|KafkaConnectionError"
                      r"|socket disconnected|brokers are down|timed out", re.I)  # fmt: skip
_VERIFY_REASON = re.compile(
    r"(self[- ]signed certificate(?: in certificate chain)?|unable to get local issuer certificate"
    r"|certificate has expired|certificate is not yet valid|unable to get issuer certificate"
    r"|certificate signature failure|invalid CA certificate|unsuitable certificate purpose)", re.I)  # fmt: skip
_MECH_IN_TEXT = re.compile(r"(SCRAM-SHA-(?:256|512)|PLAIN|OAUTHBEARER|GSSAPI)")


def describe_failure(text: str, security: KafkaSecurity | None = None) -> str | None:
    """One readable line naming what failed, when `text` (a client's error or exception text)
    shows Kafka refusing our SASL credentials, TLS trust failing either way (the broker's
    certificate, or ours for mutual TLS), or our own TLS key not loading; else None.

    It names the user, the mechanism and the files from `security`, or from the settings this
    process last translated for a client; never a password. When `text` is only a generic "could
    not bootstrap" (kafka-python 3), the reason kafka-python logged in the last two minutes is
    read instead."""
    sec = security if security is not None else _current
    line = _classify(text, sec)
    if line is None and _GENERIC.search(text):
        seen = _KafkaPythonLog.recent()
        if seen is not None:
            line = _classify(seen, sec)
    if line is None:
        return None
    if sec is not None:  # belt and braces: no secret, whatever a client put in its message
        for secret in (sec.sasl_password, sec.ssl_key_password):
            if secret:
                line = line.replace(secret, "***")
    return line


def _classify(text: str, sec: KafkaSecurity | None) -> str | None:
    if _MECH_UNSUPPORTED.search(text):
        mech = sec.mechanism if sec is not None and sec.sasl else _mech_from(text)
        offered = re.search(r"(?:Enabled|supported) mechanisms:?\s*(.+?)(?:\s*\(after|$)", text, re.I)
        return (f"the Kafka broker does not accept SASL mechanism {mech or '(not named)'}"
                + (f" (it offers {offered.group(1).strip()})" if offered else "")
                + ": check sasl_mechanism")  # fmt: skip
    if _SASL_REFUSED.search(text) and not _CLIENT_CERT_REFUSED.search(text):
        mech = sec.mechanism if sec is not None and sec.sasl else _mech_from(text)
        what = " ".join(x for x in ("Kafka refused the SASL credentials",
                                    f"of user {sec.sasl_username!r}" if sec is not None and sec.sasl_username else "",
                                    f"({mech})" if mech else "") if x)  # fmt: skip
        if sec is not None and sec.sasl and not sec.sasl_password:
            return f"{what}: the password is empty; is the variable named by sasl_password_env set?"
        return f"{what}: check sasl_username and the variable named by sasl_password_env"
    if _KEY_UNLOADABLE.search(text):
        missing = _missing_file(sec, ("ssl_certfile", "ssl_keyfile"))
        if missing:
            return missing
        key = f" {sec.ssl_keyfile}" if sec is not None and sec.ssl_keyfile else ""
        cert = f" ({sec.ssl_certfile})" if sec is not None and sec.ssl_certfile else ""
        return (f"cannot load the TLS client key{key}: a wrong key password (the variable named by "
                f"ssl_key_password_env), or not the PEM private key of ssl_certfile{cert}")
    if mismatch := _HOST_MISMATCH.search(text):
        detail = mismatch.group(0).strip().rstrip(",.")
        return (f"the Kafka broker's TLS certificate does not name the host connected to ({detail}): use a "
                "bootstrap address the certificate's subjectAltName holds")
    if _VERIFY_FAILED.search(text):
        reason = _VERIFY_REASON.search(text)
        ca = (f"ssl_cafile {sec.ssl_cafile}" if sec is not None and sec.ssl_cafile
              else "ssl_cafile (not set: the system's CAs were used)")  # fmt: skip
        return ("the Kafka broker's TLS certificate is not trusted"
                + (f" ({reason.group(1).lower()})" if reason else "")
                + f": check {ca}, it must hold the CA that signed the broker's certificate")  # fmt: skip
    if _CLIENT_CERT_REFUSED.search(text):
        if sec is not None and not sec.ssl_certfile:
            return ("Kafka requires a client certificate (mutual TLS) and none was given: set ssl_certfile and "
                    "ssl_keyfile")  # fmt: skip
        cert = f" {sec.ssl_certfile}" if sec is not None and sec.ssl_certfile else ""
        return (f"Kafka refused this client's TLS certificate{cert} (mutual TLS): check ssl_certfile and ssl_keyfile; "
                "the certificate must be signed by a CA the broker trusts")  # fmt: skip
    if _NO_FILE.search(text):
        return _missing_file(sec)
    return None


def _mech_from(text: str) -> str:
    m = (re.search(r"SASL mechanism\s+([A-Z0-9-]+)", text) or re.search(r"support (\S+) sasl mechanism", text)
         or _MECH_IN_TEXT.search(text))
    return m.group(1) if m else ""


def _missing_file(sec: KafkaSecurity | None, keys: tuple[str, ...] = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
                  ) -> str | None:  # fmt: skip
    if sec is None or not sec.tls:
        return None
    for key in keys:
        path = getattr(sec, key)
        if path and not os.path.isfile(path):
            return f"[kafka] {key}: no such file: {path}"
    return None


class _KafkaPythonLog(logging.Handler):
    """Remembers the last authentication or TLS failure kafka-python logged about a connection.

    kafka-python logs them on `kafka.net.*` at WARNING and ERROR; the CLI keeps the `kafka`
    logger at CRITICAL unless -v, which would stop those records from being made at all. So
    `kafka.net` (when nobody set its level) is given WARNING, stops propagating, and this handler
    passes every record on to `kafka` exactly when `kafka`'s own level would have let it through:
    what is printed does not change."""

    _installed: _KafkaPythonLog | None = None
    _lock = threading.Lock()
    KEEP_S = 120.0
    forward = False  # this handler passes kafka.net's records on to `kafka` (install made it so)

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.seen: tuple[float, str] | None = None

    @classmethod
    def install(cls) -> None:
        with cls._lock:
            if cls._installed is None:
                cls._installed = cls()
                net = logging.getLogger("kafka.net")
                net.addHandler(cls._installed)
                if net.level == logging.NOTSET:
                    net.setLevel(min(logging.WARNING, logging.getLogger("kafka").getEffectiveLevel()))
                    net.propagate = False
                    cls._installed.forward = True

    @classmethod
    def recent(cls) -> str | None:
        h = cls._installed
        if h is None or h.seen is None:
            return None
        at, text = h.seen
        return text if time.monotonic() - at <= cls.KEEP_S else None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                text += f" {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
            if record.levelno >= logging.WARNING and _classify(text, None) is not None:
                self.seen = (time.monotonic(), text)
            if self.forward:
                parent = logging.getLogger("kafka")
                if record.levelno >= parent.getEffectiveLevel():
                    parent.handle(record)
        except Exception:  # a logging handler must never raise into the client
            self.handleError(record)


__all__ = ["KafkaSecurity", "describe_failure"]
