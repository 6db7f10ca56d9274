"""Object storage for the lake: `s3://bucket/prefix` URLs and the few S3 calls the lake makes.

Why boto3 (the `s3` extra) and not pyarrow's S3FileSystem or fsspec: the lake's commit point is a
*conditional* create (`If-None-Match: *`, answered 412 when the key exists), which boto3 sends
as `put_object(IfNoneMatch="*")` and pyarrow's filesystem cannot express; boto3 also gives the
standard AWS credential chain (environment, shared config and profiles, SSO, instance and pod
roles), the `AWS_ENDPOINT_URL` convention for S3-compatible stores, and retries with backoff
("standard" mode). Speed matters less than correctness here: a committed batch is three
requests (events, dead letters, manifest), each of a few MB at most, so a single PUT per object
is used (S3 takes up to 5 GB in one PUT; multipart would only add requests).

An outage of the store (connection refused, timeouts, 5xx after botocore's own retries) raises
StoreUnavailable; the lake writer waits and retries on it, it does not stop ingest. Any other
error (no such bucket, access denied) is a PipelineFailure with one readable line. Credentials
never appear in a message: only the bucket, the key and the endpoint do.
"""

from __future__ import annotations

import builtins  # `list` is also a method of ObjectStore
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ingest.errors import PipelineFailure

log = logging.getLogger("spendlake.lake")

SCHEMES_LOCAL = ("file://",)
SCHEMES_UNSUPPORTED = ("gs://", "gcs://", "az://", "abfs://", "abfss://", "hdfs://", "http://", "https://")


class StoreUnavailable(PipelineFailure):
    """The object store does not answer (transient: wait and retry)."""


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or "a/b/" (always ending in "/")

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, rel: str) -> str:
        return self.prefix + rel


def parse_lake(path: str) -> S3Location | str:
    """`[lake] path` → an S3Location for `s3://…`, or a local path (with `file://` stripped).
    Raises ValueError with one line for a URL scheme spendlake cannot write."""
    p = str(path)
    if p.startswith("s3://"):
        rest = p[len("s3://"):]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ValueError(f"[lake] path: got {p!r}, expected s3://BUCKET[/PREFIX]")
        prefix = prefix.strip("/")
        return S3Location(bucket, prefix + "/" if prefix else "")
    for scheme in SCHEMES_LOCAL:
        if p.startswith(scheme):
            return p[len(scheme):]
    for scheme in SCHEMES_UNSUPPORTED:
        if p.startswith(scheme):
            raise ValueError(
                f"[lake] path: got {p!r}; spendlake writes a lake on a local disk or on S3 and "
                f"S3-compatible stores (s3://BUCKET/PREFIX, with [lake] endpoint_url or AWS_ENDPOINT_URL "
                f"for a store other than AWS)")
    return p


@dataclass(frozen=True)
class Entry:
    rel: str  # key relative to the lake prefix
    size: int
    etag: str


class ObjectStore:
    """The lake's S3 calls, with keys relative to the lake's prefix. Thread-safe (one boto3
    client, which is). `requests` counts calls by kind, for bench/ingest.py."""

    def __init__(self, where: S3Location, endpoint_url: str | None = None) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:  # pragma: no cover - the message is the point
            raise PipelineFailure(f"a lake on {where.url} needs boto3: pip install 'spendlake[s3]'") from None
        self.where = where
        self.endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        config = Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=5, read_timeout=30,
                        max_pool_connections=16, s3={"addressing_style": "path"} if self.endpoint else None)  # fmt: skip
        session = boto3.session.Session()
        region = session.region_name or "us-east-1"
        self.client: Any = session.client("s3", endpoint_url=self.endpoint, region_name=region, config=config)
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()

    def describe(self) -> str:
        return self.where.url + (f" at {self.endpoint}" if self.endpoint else "")

    def _count(self, kind: str) -> None:
        with self._lock:
            self.requests[kind] += 1

    # --- the calls -----------------------------------------------------------------------------

    def put(self, rel: str, data: bytes) -> str:
        """Write (or replace) an object; returns its ETag."""
        self._count("PUT")
        out = self._call("put", rel, lambda: self.client.put_object(Bucket=self.where.bucket, Key=self.where.key(rel), Body=data))
        return str(out.get("ETag", ""))

    def create(self, rel: str, data: bytes) -> bool:
        """Create an object only if no object has that key (`If-None-Match: *`). False when
        the store refused because the key exists (412); a concurrent conditional write on the
        same key (409) is retried, as AWS asks."""
        from botocore.exceptions import ClientError

        for _ in range(10):
            self._count("PUT")
            try:
                self._call("create", rel, lambda: self.client.put_object(
                    Bucket=self.where.bucket, Key=self.where.key(rel), Body=data, IfNoneMatch="*"))
                return True
            except ClientError as exc:
                code = _code(exc)
                if code in ("PreconditionFailed", "412"):
                    return False
                if code in ("ConditionalRequestConflict", "409"):
                    continue
                raise
        return False

    def get(self, rel: str) -> bytes | None:
        """An object's bytes, or None when there is no such key."""
        from botocore.exceptions import ClientError

        self._count("GET")
        try:
            out = self._call("get", rel, lambda: self.client.get_object(Bucket=self.where.bucket, Key=self.where.key(rel)))
            return bytes(out["Body"].read())
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise

    def list(self, rel_prefix: str, start_after: str | None = None) -> Iterator[Entry]:
        """Objects under a relative prefix, in key order, from after `start_after` (relative)."""
        kwargs: dict[str, Any] = {"Bucket": self.where.bucket, "Prefix": self.where.key(rel_prefix)}
        if start_after:
            kwargs["StartAfter"] = self.where.key(start_after)
        n = len(self.where.prefix)
        while True:
            self._count("LIST")
            out = self._call("list", rel_prefix, lambda: self.client.list_objects_v2(**kwargs))
            for o in out.get("Contents", []):
                yield Entry(o["Key"][n:], int(o["Size"]), str(o.get("ETag", "")))
            if not out.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = out["NextContinuationToken"]
            kwargs.pop("StartAfter", None)

    def folders(self, rel_prefix: str) -> builtins.list[str]:
        """The immediate "sub-folders" of a relative prefix (names, without slashes)."""
        kwargs: dict[str, Any] = {"Bucket": self.where.bucket, "Prefix": self.where.key(rel_prefix), "Delimiter": "/"}
        n = len(self.where.key(rel_prefix))
        names: builtins.list[str] = []
        while True:
            self._count("LIST")
            out = self._call("list", rel_prefix, lambda: self.client.list_objects_v2(**kwargs))
            names += [p["Prefix"][n:].rstrip("/") for p in out.get("CommonPrefixes", [])]
            if not out.get("IsTruncated"):
                return names
            kwargs["ContinuationToken"] = out["NextContinuationToken"]

    def delete(self, rels: builtins.list[str]) -> None:
        for i in range(0, len(rels), 1000):
            chunk = rels[i:i + 1000]
            self._count("DELETE")
            self._call("delete", chunk[0], lambda: self.client.delete_objects(
                Bucket=self.where.bucket, Delete={"Objects": [{"Key": self.where.key(r)} for r in chunk], "Quiet": True}))

    def exists(self) -> bool:
        """Whether the lake holds anything (one LIST of at most one key)."""
        self._count("LIST")
        out = self._call("list", "", lambda: self.client.list_objects_v2(
            Bucket=self.where.bucket, Prefix=self.where.prefix, MaxKeys=1))
        return bool(out.get("KeyCount") or out.get("Contents"))

    # --- errors ------------------------------------------------------------------------------

    def _call(self, what: str, rel: str, fn: Any) -> Any:
        from botocore.exceptions import (BotoCoreError, ClientError, ConnectionError as BotoConnectionError,
                                         NoCredentialsError)

        try:
            return fn()
        except ClientError as exc:
            code = _code(exc)
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"):
                raise StoreUnavailable(f"{self.describe()}: {code} to a {what} of {rel}") from None
            if code in ("NoSuchBucket",):
                raise PipelineFailure(f"[lake] path {self.where.url}: the bucket {self.where.bucket!r} does not exist"
                                      + (f" at {self.endpoint}" if self.endpoint else "")) from None
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
                raise PipelineFailure(f"{self.describe()} refused a {what} of {rel} ({code}): check the AWS "
                                      f"credentials (environment, shared config or instance role)") from None
            raise
        except NoCredentialsError:
            raise PipelineFailure(f"no AWS credentials for {self.where.url}: set AWS_ACCESS_KEY_ID and "
                                  f"AWS_SECRET_ACCESS_KEY, a profile, or an instance role") from None
        except (BotoConnectionError, BotoCoreError, OSError) as exc:
            raise StoreUnavailable(f"{self.describe()}: {type(exc).__name__}") from None


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
