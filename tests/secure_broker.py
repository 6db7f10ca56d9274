"""A real Kafka broker whose clients must authenticate, for tests/test_kafka_security.py.

ingest/broker/kafka-secure.sh runs one KRaft node with SASL_SSL (SCRAM-SHA-512, SCRAM-SHA-256,
PLAIN) on port P, mutual TLS on P+1 and a PLAINTEXT listener on P+2 (used here only to create
topics and read offsets, so checking what landed does not depend on the code under test). Its CA,
certificates, users and passwords are made at start, in its run dir under /var/tmp.

The fixture FAILS when the broker cannot start. The one exception: outside CI (CI unset), a
machine without java, openssl or keytool skips these tests with the reason; with CI=true that is
a failure too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT, Broker

SCRIPT = ROOT / "ingest" / "broker" / "kafka-secure.sh"
DEFAULT_PORT = 19392  # .. 19395: SASL_SSL, mTLS, PLAINTEXT, controller


@dataclass
class SecureBroker:
    port: int
    home: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KAFKA_PORT": str(self.port), "KAFKA_HOME": str(self.home)}

    def script(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(SCRIPT), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip

    def start(self) -> None:
        r = self.script("start")
        if r.returncode != 0:
            pytest.fail(f"the secured Kafka broker did not start:\n{r.stderr[-3000:]}")
        r = self.script("env")
        assert r.returncode == 0, r.stderr
        self.info = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)

    def stop(self) -> None:
        self.script("stop")

    @property
    def sasl_ssl(self) -> str:
        return self.info["SASL_SSL_BOOTSTRAP"]

    @property
    def mtls(self) -> str:
        return self.info["MTLS_BOOTSTRAP"]

    @property
    def plaintext(self) -> Broker:
        """conftest's Broker on the PLAINTEXT listener: only its client helpers (create_topic,
        end_offsets, committed) are used; kafka-secure.sh starts and stops the broker."""
        return Broker(self.port + 2, self.home)

    def __getitem__(self, key: str) -> str:
        """SCRAM_USER, SCRAM_PASSWORD, PLAIN_USER, PLAIN_PASSWORD, CLIENT_KEY_PASSWORD, CA,
        CLIENT_CERT, CLIENT_KEY, CLIENT_ENC_KEY, ROGUE_CA, ROGUE_CLIENT_CERT, ROGUE_CLIENT_KEY"""
        return self.info[key]


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def secure_kafka() -> Iterator[SecureBroker]:
    missing = [tool for tool in ("java", "openssl", "keytool") if shutil.which(tool) is None]
    if missing and not _ci():
        pytest.skip(f"the secured test broker needs {', '.join(missing)} (CI=true makes this a failure)")
    port = int(os.environ.get("SPENDLAKE_TEST_KAFKA_SECURE_PORT", str(DEFAULT_PORT)))
    broker = SecureBroker(port, Path(f"/var/tmp/spendlake-test-kafka-secure-{port}"))
    broker.script("remove")  # a fresh run dir: new certificates, new passwords, no data
    shutil.rmtree(broker.home, ignore_errors=True)
    broker.start()
    yield broker
    broker.script("remove")
    shutil.rmtree(broker.home, ignore_errors=True)
