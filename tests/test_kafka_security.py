"""SASL_SSL (SCRAM, PLAIN) and mutual TLS against a real broker configured for them, with both
Kafka clients: every record produced over the secured listener lands exactly once; a wrong
password or an untrusted certificate is one readable line and exit 2, never a hang, a traceback
or a password on the screen."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import events_bytes, lake_rows, spendlake
from ingest.clients.security import KafkaSecurity, describe_failure
from secure_broker import SecureBroker, secure_kafka  # noqa: F401  (the session fixture)
from test_kafka import assert_exactly_once

kafka = pytest.mark.kafka  # the tests that need the secured broker (the describe_failure ones do not)
CLIENTS = ["kafka-python", "confluent"]
PASSWORD_ENV = "SPENDLAKE_TEST_KAFKA_PASSWORD"  # what sasl_password_env names
KEY_PASSWORD_ENV = "SPENDLAKE_TEST_KAFKA_KEY_PASSWORD"  # what ssl_key_password_env names
HANG_S = 60  # liveness bound for one ingest run (kafka-python gives up on bootstrap after 30 s)
N = 600

# stderr lines that are not the failure: progress samples, the closing summary, the start line
PROGRESS = re.compile(r"^spendlake: ([\d,]+ events in |done \(|consuming )")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ingest processes read only the config file: no SPENDLAKE_KAFKA_* override leaks in."""
    for name in list(os.environ):
        if name.startswith("SPENDLAKE_KAFKA_"):
            monkeypatch.delenv(name)


def security(broker: SecureBroker, case: str) -> tuple[dict[str, str], KafkaSecurity, dict[str, str]]:
    """(the [kafka] keys, the same as a KafkaSecurity, the secret variables) for one case."""
    b = broker
    sasl = lambda mech, user, pw, ca: (  # noqa: E731
        {"bootstrap_servers": b.sasl_ssl, "security_protocol": "SASL_SSL", "sasl_mechanism": mech,
         "sasl_username": user, "sasl_password_env": PASSWORD_ENV, "ssl_cafile": ca},
        KafkaSecurity("SASL_SSL", mech, user, pw, ca), {PASSWORD_ENV: pw})  # fmt: skip
    mtls = lambda cert, key, key_pw: (  # noqa: E731
        {"bootstrap_servers": b.mtls, "security_protocol": "SSL", "ssl_cafile": b["CA"], "ssl_certfile": cert,
         "ssl_keyfile": key, **({"ssl_key_password_env": KEY_PASSWORD_ENV} if key_pw else {})},
        KafkaSecurity("SSL", ssl_cafile=b["CA"], ssl_certfile=cert, ssl_keyfile=key, ssl_key_password=key_pw),
        {KEY_PASSWORD_ENV: key_pw} if key_pw else {})  # fmt: skip
    cases = {
        "scram-sha-512": lambda: sasl("SCRAM-SHA-512", b["SCRAM_USER"], b["SCRAM_PASSWORD"], b["CA"]),
        "scram-sha-256": lambda: sasl("SCRAM-SHA-256", b["SCRAM_USER"], b["SCRAM_PASSWORD"], b["CA"]),
        "plain": lambda: sasl("PLAIN", b["PLAIN_USER"], b["PLAIN_PASSWORD"], b["CA"]),
        "mtls-encrypted-key": lambda: mtls(b["CLIENT_CERT"], b["CLIENT_ENC_KEY"], b["CLIENT_KEY_PASSWORD"]),
        "mtls": lambda: mtls(b["CLIENT_CERT"], b["CLIENT_KEY"], ""),
    }
    return cases[case]()


def write_config(path: Path, kafka: dict[str, str], topic: str, client: str, lake: Path) -> Path:
    kafka = {**kafka, "topic": topic, "group_id": f"g-{topic}", "client": client}
    lines = ["[kafka]", *(f'{k} = "{v}"' for k, v in kafka.items()), "", "[lake]", f'path = "{lake}"', ""]
    path.write_text("\n".join(lines))
    return path


def produce(client: str, bootstrap: str, sec: KafkaSecurity, topic: str, values: list[bytes]) -> None:
    """Produce over the secured listener with the same client library the ingest will use,
    configured by the same translation (security.py)."""
    keys = [f"vk-{i % 17}".encode() for i in range(len(values))]
    if client == "kafka-python":
        from kafka import KafkaProducer

        p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **sec.kafka_python())
        try:
            for k, v in zip(keys, values):
                p.send(topic, key=k, value=v)
            p.flush(timeout=60)
        finally:
            p.close()
        return
    from confluent_kafka import Producer

    errors: list[Any] = []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "error_cb": errors.append, **sec.librdkafka()})  # fmt: skip

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    for k, v in zip(keys, values):
        p.produce(topic, key=k, value=v, on_delivery=delivered)
    left = p.flush(60)
    assert left == 0 and not errors, f"{left} records not delivered: {errors[:3]}"


def ingest(cfg: Path, client: str, lake: Path) -> subprocess.CompletedProcess[bytes]:
    return spendlake("ingest", "--config", str(cfg), "--kafka-client", client, "--exit-when-idle", "2",
                     "--lake", str(lake), timeout=HANG_S)  # fmt: skip


def failure_lines(stderr: bytes) -> list[str]:
    return [line for line in stderr.decode(errors="replace").splitlines() if line.strip() and not PROGRESS.match(line)]


@kafka
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("case", ["scram-sha-512", "plain", "mtls-encrypted-key", "scram-sha-256"])
def test_secured_roundtrip_exactly_once(secure_kafka: SecureBroker, client: str, case: str, topic_name: str,
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    keys, sec, secrets = security(secure_kafka, case)
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    plain = secure_kafka.plaintext
    plain.create_topic(topic_name, 3)
    produce(client, keys["bootstrap_servers"], sec, topic_name, events_bytes(N))
    assert sum(plain.end_offsets(topic_name).values()) == N
    lake = tmp_path / "lake"
    cfg = write_config(tmp_path / "spendlake.toml", keys, topic_name, client, lake)
    r = ingest(cfg, client, lake)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-3000:]
    assert_exactly_once(lake, plain, topic_name, r.stderr)
    assert lake_rows(lake, "select count(distinct event_id), count(*) from ev") == [(N, N)]
    # offsets committed over the secured connection, after the lake write
    assert plain.committed(topic_name, f"g-{topic_name}") == plain.end_offsets(topic_name)
    for secret in secrets.values():
        assert secret.encode() not in r.stdout + r.stderr


def assert_one_line(r: subprocess.CompletedProcess[bytes], *must: str, secrets: tuple[str, ...] = ()) -> str:
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 2, f"exit {r.returncode}, expected 2:\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    lines = failure_lines(r.stderr)
    assert len(lines) == 1, f"expected one line saying what failed, got {len(lines)}:\n{err[-3000:]}"
    line = lines[0]
    for word in must:
        assert word.lower() in line.lower(), f"{word!r} not in {line!r}"
    for secret in secrets:
        assert secret and secret not in err + r.stdout.decode(errors="replace")
    return line


@kafka
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("case", ["scram-sha-512", "plain"])
def test_wrong_sasl_password_is_one_line_and_exit_2(secure_kafka: SecureBroker, client: str, case: str,
                                                     topic_name: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    keys, sec, secrets = security(secure_kafka, case)
    wrong = "wrong-" + secrets[PASSWORD_ENV][::-1]
    monkeypatch.setenv(PASSWORD_ENV, wrong)
    secure_kafka.plaintext.create_topic(topic_name, 1)
    lake = tmp_path / "lake"
    r = ingest(write_config(tmp_path / "c.toml", keys, topic_name, client, lake), client, lake)
    assert_one_line(r, sec.sasl_username, sec.sasl_mechanism, "sasl_password_env",
                    secrets=(wrong, secrets[PASSWORD_ENV]))  # fmt: skip
    assert lake_rows(lake) == []


@kafka
@pytest.mark.parametrize("client", CLIENTS)
def test_broker_certificate_not_trusted(secure_kafka: SecureBroker, client: str, topic_name: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """ssl_cafile is a CA that did not sign the broker's certificate."""
    keys, _sec, secrets = security(secure_kafka, "scram-sha-512")
    monkeypatch.setenv(PASSWORD_ENV, secrets[PASSWORD_ENV])
    keys["ssl_cafile"] = secure_kafka["ROGUE_CA"]
    secure_kafka.plaintext.create_topic(topic_name, 1)
    lake = tmp_path / "lake"
    r = ingest(write_config(tmp_path / "c.toml", keys, topic_name, client, lake), client, lake)
    assert_one_line(r, "certificate", "not trusted", "ssl_cafile", secrets=(secrets[PASSWORD_ENV],))


@kafka
@pytest.mark.parametrize("client", CLIENTS)
def test_client_certificate_from_untrusted_ca(secure_kafka: SecureBroker, client: str, topic_name: str,
                                              tmp_path: Path) -> None:  # fmt: skip
    """Mutual TLS with a client certificate the broker's truststore does not vouch for."""
    keys, _sec, _ = security(secure_kafka, "mtls")
    keys.update(ssl_certfile=secure_kafka["ROGUE_CLIENT_CERT"], ssl_keyfile=secure_kafka["ROGUE_CLIENT_KEY"])
    secure_kafka.plaintext.create_topic(topic_name, 1)
    lake = tmp_path / "lake"
    r = ingest(write_config(tmp_path / "c.toml", keys, topic_name, client, lake), client, lake)
    assert_one_line(r, "certificate", "ssl_certfile")


@kafka
@pytest.mark.parametrize("client", CLIENTS)
def test_wrong_key_password(secure_kafka: SecureBroker, client: str, topic_name: str, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The encrypted client key with the wrong password from ssl_key_password_env."""
    keys, _sec, secrets = security(secure_kafka, "mtls-encrypted-key")
    monkeypatch.setenv(KEY_PASSWORD_ENV, "not-" + secrets[KEY_PASSWORD_ENV])
    secure_kafka.plaintext.create_topic(topic_name, 1)
    lake = tmp_path / "lake"
    r = ingest(write_config(tmp_path / "c.toml", keys, topic_name, client, lake), client, lake)
    assert_one_line(r, "key", "ssl_key_password_env",
                    secrets=("not-" + secrets[KEY_PASSWORD_ENV], secrets[KEY_PASSWORD_ENV]))  # fmt: skip


# --- describe_failure on the texts the two clients really give (seen against this broker) -------

SCRAM = KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "alice", "hunter2-secret", "/etc/kafka/ca.pem")


@pytest.mark.parametrize("text, words", [
    ("SaslAuthenticationFailedError: [Error 58] SaslAuthenticationFailedError: Authentication failed during "
     "authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512", ["'alice'", "SCRAM-SHA-512"]),
    ("sasl_ssl://127.0.0.1:19392/bootstrap: SASL authentication error: Authentication failed during authentication "
     "due to invalid credentials with SASL mechanism SCRAM-SHA-512 (after 7ms in state AUTH_REQ)",
     ["'alice'", "SCRAM-SHA-512", "sasl_password_env"]),
    ("sasl_ssl://127.0.0.1:19392/bootstrap: SASL authentication error: Authentication failed: Invalid username or "
     "password (after 0ms in state AUTH_REQ)", ["'alice'", "sasl_username"]),
    ("KafkaConnectionError: Handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
     "self-signed certificate in certificate chain (_ssl.c:1006)", ["not trusted", "/etc/kafka/ca.pem"]),
    ("sasl_ssl://127.0.0.1:19392/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify "
     "failed: broker certificate could not be verified, verify that ssl.ca.location is correctly configured or root "
     "CA certificates are installed (after 2ms in state SSL_HANDSHAKE)", ["not trusted", "ssl_cafile"]),
    ("KafkaConnectionError: Handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
     "IP address mismatch, certificate is not valid for '10.0.0.9'. (_ssl.c:1006)", ["10.0.0.9", "subjectAltName"]),
])  # fmt: skip
def test_describe_failure_texts(text: str, words: list[str]) -> None:
    line = describe_failure(text, SCRAM)
    assert line is not None and "\n" not in line
    for w in words:
        assert w in line, (w, line)
    assert "hunter2" not in line


def test_describe_failure_mtls_texts() -> None:
    sec = KafkaSecurity("SSL", ssl_cafile=__file__, ssl_certfile=__file__, ssl_keyfile=__file__, ssl_key_password="pw9")
    for text in ("KafkaConnectionError: [SSL: SSLV3_ALERT_CERTIFICATE_UNKNOWN] sslv3 alert certificate unknown",
                 "ssl://127.0.0.1:19393/bootstrap: Receive failed: error:0A000412:SSL routines::ssl/tls alert bad "
                 "certificate: SSL alert number 42 (after 0ms in state APIVERSION_QUERY)"):  # fmt: skip
        line = describe_failure(text, sec)
        assert line is not None and "ssl_certfile" in line and __file__ in line
    for text in ("[SSL] PEM lib (_ssl.c:3926)",
                 "Failed to create consumer: ssl.key.location failed: error:0A080009:SSL routines::PEM lib"):
        line = describe_failure(text, sec)
        assert line is not None and "ssl_key_password_env" in line and "pw9" not in line
    no_cert = describe_failure("[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required",
                               KafkaSecurity("SSL", ssl_cafile=__file__))  # fmt: skip
    assert no_cert is not None and "none was given" in no_cert
    assert describe_failure("KafkaError{code=_TRANSPORT,val=-195,str=\"Connection refused\"}", sec) is None
    assert describe_failure("CommitFailedError: the group rebalanced", sec) is None
