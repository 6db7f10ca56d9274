"""A real S3 server for tests and benches: SeaweedFS (`weed mini`, one process) on 127.0.0.1.

ingest/broker/s3-local.sh builds the binary once from the Go module proxy (cached under
~/.cache/spendlake/seaweedfs; .ci/run builds it up front) and starts, stops and kills the server.
It takes ports PORT..PORT+4 and PORT+10000..PORT+10004, so two servers need ports 5 apart. The
data lives in HOME/data and survives stop/start and kill/start, which is what crash tests need.
A start on a fresh data dir takes ~5 s; on existing data ~15 s, because SeaweedFS's master refuses
writes for a 15 s warm-up after it restarts, and start returns only once a PUT goes through.

A server that cannot start raises S3ServerError with the end of its log: a test that needs S3
and cannot have it fails. Tests share one server and one bucket; each takes its own prefix
(new_prefix) so they never see each other's objects.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "ingest" / "broker" / "s3-local.sh"
# Fixed, test-only credentials: the server runs on loopback and holds nothing of value.
ACCESS_KEY = "spendlake-test"
SECRET_KEY = "spendlake-test-secret"
REGION = "us-east-1"
# The first build takes ~8 minutes on 2 cores (the script builds once; later starts take seconds).
START_TIMEOUT = 1800.0


class S3ServerError(RuntimeError):
    """The S3 server did not start (the message ends with its log)."""


class S3Server:
    def __init__(self, port: int, home: Path, bucket: str = "lake") -> None:
        self.port = port
        self.home = home
        self.bucket = bucket
        self.endpoint = f"http://127.0.0.1:{port}"
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY

    def script(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "S3_PORT": str(self.port), "S3_HOME": str(self.home), "S3_BUCKET": self.bucket,
               "S3_ACCESS_KEY": self.access_key, "S3_SECRET_KEY": self.secret_key}  # fmt: skip
        return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip

    @staticmethod
    def missing() -> str | None:
        """Why the server cannot be had on this machine (not built and no Go to build it), or None."""
        if subprocess.run(["bash", str(SCRIPT), "cached"]).returncode == 0 or shutil.which("go"):
            return None
        return "SeaweedFS is not built and Go is not installed to build it (ingest/broker/s3-local.sh build)"

    def start(self) -> None:
        r = self.script("start", timeout=START_TIMEOUT)
        if r.returncode != 0:
            raise S3ServerError(f"the S3 server (SeaweedFS) did not start on {self.endpoint}:\n{r.stderr[-4000:]}")

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 30 s; the data stays for the next start."""
        self.script("stop")

    def kill(self) -> None:
        """SIGKILL: a crash. The data stays for the next start."""
        self.script("kill")

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        """Stop and delete the run dir (data and logs)."""
        self.script("remove")
        shutil.rmtree(self.home, ignore_errors=True)

    def running(self) -> bool:
        return self.script("status").returncode == 0

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for this server; ``config`` goes to botocore's Config (retries, timeouts)."""
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, config=Config(**config))  # fmt: skip

    def new_prefix(self) -> str:
        """A fresh key prefix ("t-" and 16 hex digits, no slash). All have the same length, so none
        is a prefix of another and a Prefix listing never sees another test's keys."""
        return f"t-{uuid.uuid4().hex[:16]}"

    def url(self, prefix: str = "") -> str:
        """s3://BUCKET/PREFIX, a lake path for spendlake."""
        return f"s3://{self.bucket}/{prefix}".rstrip("/")

    def env(self) -> dict[str, str]:
        """What a spendlake subprocess needs to reach this server; merge it over os.environ."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": REGION}  # fmt: skip
