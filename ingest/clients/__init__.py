"""The Kafka clients spendlake can use, behind one small interface.

`ingest/consumer.py` holds the exactly-once logic (seek from the lake on assignment, commit after
visibility, flush on revocation) once; it talks to Kafka only through `Consumer` below. Two
implementations:

- `kafka_python.py`: kafka-python, pure Python, always installed (the default dependency);
- `confluent.py`: confluent-kafka (librdkafka, C), `pip install 'spendlake[fast]'`; about 20x
  faster at fetching, which is what caps ingest with kafka-python.

`[kafka] client = "auto"` picks confluent when it is importable. Everything is per partition of
the one topic a consumer subscribes to, so partitions are plain ints here.

The dead-letter producer and the HTTP intake's producer sit behind `Producer` the same way.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Protocol

from ingest.clients.security import KafkaSecurity

CLIENTS = ("auto", "kafka-python", "confluent")
SESSION_TIMEOUT_S = 10.0  # how long the group waits for a silent member (a crashed one) before moving on


class KafkaFailure(Exception):
    """Kafka refused us for a reason retrying will not fix (credentials, TLS trust, a fenced
    static member). The message is one readable line; the CLI prints it and exits 2."""


class Unreachable(Exception):
    """No broker answered at the start (exit 1: the same command works once Kafka is up)."""


class CommitFailed(Exception):
    """An offset commit the broker refused or did not answer; retried with the next flush."""


@dataclass
class Fetched:
    """What one poll returned for one partition, in offset order."""

    partition: int
    offsets: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]


class Listener(Protocol):
    def on_assigned(self, partitions: list[int]) -> None: ...
    def on_revoked(self, partitions: list[int]) -> None: ...


class Consumer(Protocol):
    name: str
    topic: str

    def subscribe(self, listener: Listener) -> None:
        """Join the group for the topic; callbacks run inside `poll`, on the caller's thread
        (kafka-python: its IO thread — see consumer.py for what may happen there)."""

    def poll(self, max_records: int, timeout_s: float) -> list[Fetched]: ...
    def assignment(self) -> set[int]: ...
    def seek(self, partition: int, offset: int) -> None: ...
    def seek_to_beginning(self, partition: int) -> None: ...
    def position(self, partition: int) -> int | None:
        """The offset the next record of this partition will have, when known."""

    def commit(self, offsets: dict[int, int]) -> None:
        """Commit `next offset` per partition, synchronously. Raises CommitFailed."""

    def partition_count(self) -> int:
        """Partitions of the topic per the latest metadata (0 when not known yet)."""

    def watermarks(self, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        """Ask the broker for each partition's (first, end) offsets. Raises CommitFailed when
        it can't answer."""

    def lag(self) -> dict[int, int]:
        """Records behind the end per assigned partition, from what the last fetches said (no
        request): for the lag gauge. Partitions without a figure yet are left out."""

    def rejoin(self) -> None: ...
    def close(self) -> None:
        """Leave (or, as a static member, step out until the same instance returns) and close."""


# (key, value, headers): what a producer sends
Record = tuple[bytes | None, bytes, list[tuple[str, bytes]] | None]


class Producer(Protocol):
    name: str

    def send_batch(self, topic: str, records: Sequence[Record], timeout_s: float) -> None:
        """Produce records, keyed records to the partition Java's default partitioner picks
        (murmur2), and wait until every one is acknowledged (acks=all, idempotent). Raises
        KafkaFailure (no retry helps) or TimeoutError, naming the reason, never a secret."""

    def close(self, timeout_s: float = 5.0) -> None: ...


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "llm-usage"
    group_id: str = "spendlake"
    client_id: str = "spendlake-ingest"
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    client: str = "auto"  # auto | kafka-python | confluent
    # "auto": a static member named after this host and a slot (see StaticSlot) when the process
    # runs until stopped; "" : always dynamic; anything else: that name.
    group_instance_id: str = "auto"

    def client_name(self) -> str:
        return resolve_client(self.client)

    def consumer(self, *, long_running: bool = True) -> Consumer:
        """A group member for `topic`. `long_running` (not --exit-when-idle) enables the auto
        static membership: a job that ends on its own should leave the group at once instead."""
        instance = instance_id(self, long_running)
        if self.client_name() == "confluent":
            from ingest.clients.confluent import ConfluentConsumer

            return ConfluentConsumer(self, instance)
        from ingest.clients.kafka_python import KafkaPythonConsumer

        return KafkaPythonConsumer(self, instance)

    def producer(self, *, client_id: str = "spendlake", timeout_s: float = 10.0) -> Producer:
        """`timeout_s` bounds how long a send may block and wait for its acknowledgement."""
        if self.client_name() == "confluent":
            from ingest.clients.confluent import ConfluentProducer

            return ConfluentProducer(self, client_id, timeout_s)
        from ingest.clients.kafka_python import KafkaPythonProducer

        return KafkaPythonProducer(self, client_id, timeout_s)


def confluent_available() -> bool:
    return importlib.util.find_spec("confluent_kafka") is not None


def resolve_client(name: str) -> str:
    """auto → confluent when installed, else kafka-python. Asking for confluent without it
    installed is a KafkaFailure with the install hint."""
    if name == "auto":
        return "confluent" if confluent_available() else "kafka-python"
    if name == "confluent" and not confluent_available():
        raise KafkaFailure("[kafka] client = \"confluent\" needs confluent-kafka: pip install 'spendlake[fast]'")
    if name not in CLIENTS:
        raise KafkaFailure(f"[kafka] client: got {name!r}, expected one of {CLIENTS}")
    return name


class StaticSlot:
    """A stable name for this process among the group's members on this host.

    Static membership (KIP-345) lets a member that restarts within the session timeout get its
    partitions back at once, without a rebalance — but two live members must never share a name
    (the broker fences the older one). So the name is `<client>-<host>-<slot>`, where the slot is
    the lowest number whose lock file this process can hold (flock, released by the kernel when
    the process dies, even by SIGKILL): a restart takes the slot its predecessor held, and two
    workers on one host get 0 and 1."""

    _held: list[IO[bytes]] = []  # kept open for the process's life

    @classmethod
    def claim(cls, settings: KafkaSettings) -> str:
        import fcntl

        scope = hashlib.sha1(f"{settings.bootstrap_servers}\0{settings.group_id}".encode()).hexdigest()[:16]
        base = os.path.join(tempfile.gettempdir(), f"spendlake-members-{os.getuid()}", scope)
        os.makedirs(base, exist_ok=True)
        for slot in range(1024):
            f = open(os.path.join(base, f"slot-{slot}.lock"), "wb")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue
            cls._held.append(f)
            return f"{settings.client_id}-{socket.gethostname()}-{slot}"
        raise KafkaFailure(f"no free static-member slot under {base}")


def instance_id(settings: KafkaSettings, long_running: bool) -> str | None:
    value = settings.group_instance_id
    if value == "auto":
        return StaticSlot.claim(settings) if long_running else None
    return value or None


def recognised(exc: BaseException | str) -> str | None:
    """The security layer's one-line reading of an authentication or TLS failure, else None."""
    from ingest.clients.security import describe_failure

    return describe_failure(exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}")


def describe(exc: BaseException | str, settings: KafkaSettings) -> str:
    """One line for an error from a client: the security layer's reading when it recognises an
    authentication or TLS failure, else the error's own text."""
    text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    return recognised(text) or f"Kafka at {settings.bootstrap_servers}: {text}"


__all__ = ["CLIENTS", "CommitFailed", "Consumer", "Fetched", "KafkaFailure", "KafkaSettings", "Listener",
           "Producer", "Record", "StaticSlot", "Unreachable",
           "confluent_available", "describe", "recognised", "resolve_client"]
