"""The test S3 server (tests/s3server.py, ingest/broker/s3-local.sh) behaves as the lake needs:
objects round-trip, a conditional create refuses an existing key, objects survive a stop and a
crash, and listings are in key order. The lake's S3 tests rest on these, so they are checked
against the server itself, with boto3 as the client (the lake's own S3 code is not involved).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from typing import Any

import pytest
from botocore.exceptions import ClientError

from s3server import S3Server


def body(c: Any, s3: S3Server, key: str) -> bytes:
    return c.get_object(Bucket=s3.bucket, Key=key)["Body"].read()


def test_put_get_roundtrip(s3: S3Server) -> None:
    c, p = s3.client(), s3.new_prefix()
    data = random.Random(1).randbytes(6 << 20)  # above the filer's 4 MB chunk size: several chunks
    c.put_object(Bucket=s3.bucket, Key=f"{p}/big.bin", Body=data)
    c.put_object(Bucket=s3.bucket, Key=f"{p}/empty", Body=b"")
    assert body(c, s3, f"{p}/big.bin") == data
    assert body(c, s3, f"{p}/empty") == b""
    assert c.head_object(Bucket=s3.bucket, Key=f"{p}/big.bin")["ContentLength"] == len(data)
    got = c.get_object(Bucket=s3.bucket, Key=f"{p}/big.bin", Range="bytes=4194300-4194310")["Body"].read()
    assert got == data[4194300:4194311]  # a range across the chunk boundary
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=s3.bucket, Key=f"{p}/missing")
    assert e.value.response["Error"]["Code"] == "NoSuchKey"


def test_conditional_create_refuses_an_existing_key(s3: S3Server) -> None:
    c, key = s3.client(), f"{s3.new_prefix()}/manifest.json"
    c.put_object(Bucket=s3.bucket, Key=key, Body=b"first", IfNoneMatch="*")  # a new key: created
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=s3.bucket, Key=key, Body=b"second", IfNoneMatch="*")
    assert e.value.response["Error"]["Code"] == "PreconditionFailed"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert body(c, s3, key) == b"first"


def test_objects_survive_stop_and_kill(s3: S3Server) -> None:
    c, p = s3.client(), s3.new_prefix()
    c.put_object(Bucket=s3.bucket, Key=f"{p}/a", Body=b"before stop")
    s3.restart()  # SIGTERM, then start on the same data
    c.put_object(Bucket=s3.bucket, Key=f"{p}/b", Body=b"before kill")
    s3.kill()  # SIGKILL: nothing flushed on the way out
    s3.start()
    c = s3.client()
    assert body(c, s3, f"{p}/a") == b"before stop"
    assert body(c, s3, f"{p}/b") == b"before kill"
    assert [o["Key"] for o in c.list_objects_v2(Bucket=s3.bucket, Prefix=p)["Contents"]] == [f"{p}/a", f"{p}/b"]
    with pytest.raises(ClientError):  # and a conditional create still sees what is there
        c.put_object(Bucket=s3.bucket, Key=f"{p}/a", Body=b"x", IfNoneMatch="*")


def test_listing_is_in_key_order(s3: S3Server) -> None:
    c, p = s3.client(), s3.new_prefix()
    # SeaweedFS keeps keys as a directory tree; "a/x" is below directory "a" and "a-", "a0" are its
    # neighbours, so a listing by tree walk would get these wrong. S3 orders by UTF-8 bytes.
    names = ["b", "a", "a-", "a/x", "a/y/z", "a0", "B", "é", "z", "date=2026-01-02/1", "date=2026-01-10/1"]
    for name in random.Random(2).sample(names, len(names)):
        c.put_object(Bucket=s3.bucket, Key=f"{p}/{name}", Body=name.encode())
    want = sorted(f"{p}/{n}" for n in names)
    assert want == sorted(want, key=lambda k: k.encode())  # str order is byte order for these

    def listing(**kw: str) -> list[str]:
        keys: list[str] = []
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, PaginationConfig={"PageSize": 3},
                                                                **kw):  # fmt: skip
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys

    assert listing(Prefix=f"{p}/") == want
    assert listing(Prefix=f"{p}/", StartAfter=f"{p}/a") == [k for k in want if k > f"{p}/a"]
    assert listing(Prefix=f"{p}/a") == [k for k in want if k.startswith(f"{p}/a")]
    assert listing(Prefix=f"{p}/date=2026-01-") == [f"{p}/date=2026-01-02/1", f"{p}/date=2026-01-10/1"]


def test_env_reaches_the_server_from_a_subprocess(s3: S3Server) -> None:
    c, key = s3.client(), f"{s3.new_prefix()}/from-env"
    c.put_object(Bucket=s3.bucket, Key=key, Body=b"hello")
    code = f"import boto3; print(boto3.client('s3').get_object(Bucket={s3.bucket!r}, Key={key!r})['Body'].read())"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | s3.env()
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "b'hello'"
