"""LiteLLM → spendlake: a CustomLogger that ships every call's usage to spendlake's intake or Kafka.

SDK: ``litellm.callbacks = [SpendlakeLogger()]``. Proxy config.yaml:
``litellm_settings: {callbacks: ingest.litellm_callback.proxy_handler_instance}``.

The rules it keeps:

- **It never blocks or fails the LLM call.** A callback only redacts the payload and puts it on a
  bounded queue without waiting; a full queue drops the record, counts it in ``dropped`` and logs
  one warning (then at most one a minute). Exceptions are logged, never raised into LiteLLM.
- **No prompt or response text leaves the process.** The record is LiteLLM's
  ``standard_logging_object`` through ``ingest.adapters.redact`` (every TEXT_KEYS key at any
  depth goes; ``response.usage`` stays), minus ``model_map_information`` (a copy of LiteLLM's
  price table, 70 % of the bytes, which spendlake does not read). Success and failure alike:
  a failed call that consumed tokens was billed.
- **One sender thread** (a daemon, started on the first record and again after a fork) sends
  batches of up to ``batch_size`` records, or what arrived within ``flush_interval`` seconds.
  HTTP: ``POST url`` with a JSON array (``Authorization: Bearer`` when a token is set; the token
  is never logged). Kafka: kafka-python, ``acks="all"``, key = the virtual key (LiteLLM's key
  hash, else its alias), the same one the adapter reads.
- **Delivery is at least once, within bounds.** 503/429/408/other 5xx, connection errors and
  failed Kafka sends are retried with exponential backoff, never sooner than ``Retry-After``, up
  to ``max_retries`` times; a retry can duplicate a record and spendlake dedupes on
  ``event_id``. 401/403 (logged once), 400 and other 4xx are dropped; a 413 batch is split in
  halves, and a single record that is still too large is dropped. Everything given up is
  counted in ``failed``; the intake's per-record rejects (in a 200, or a 400 listing them) in
  ``rejected``; accepted records in ``sent``.
- ``flush(timeout)`` waits for everything queued so far; ``close()`` flushes, then stops the
  thread (registered with atexit). Records arriving after ``close()`` count as dropped.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from collections.abc import Mapping
from typing import Any

import orjson
import requests
from litellm.integrations.custom_logger import CustomLogger

from ingest.adapters import redact

__all__ = ["DEFAULT_URL", "SpendlakeLogger", "from_env"]

log = logging.getLogger(__name__)
DEFAULT_URL = "http://127.0.0.1:4318/v1/events"
_DROPPED_KEYS = ("model_map_information",)
_Item = tuple[bytes | None, dict[str, Any]]  # (Kafka key, redacted record)


def _json(obj: Any) -> bytes:
    return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS)


class SpendlakeLogger(CustomLogger):
    """Sends LiteLLM usage records to spendlake over HTTP (default) or Kafka (``bootstrap_servers``)."""

    def __init__(self, url: str = DEFAULT_URL, *, token: str | None = None,
                 token_env: str = "SPENDLAKE_INTAKE_TOKEN", bootstrap_servers: str | list[str] | None = None,
                 topic: str = "llm-usage", max_queue: int = 10000, batch_size: int = 500,
                 flush_interval: float = 0.5, timeout: float = 10.0, max_retries: int = 8,
                 max_backoff: float = 30.0, session: requests.Session | None = None,
                 producer: Any = None, producer_config: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        super().__init__()
        self.url, self.topic = url, topic
        self.bootstrap_servers = bootstrap_servers.split(",") if isinstance(bootstrap_servers, str) else bootstrap_servers
        self.max_queue, self.batch_size, self.flush_interval = max_queue, batch_size, flush_interval
        self.timeout, self.max_retries, self.max_backoff = timeout, max_retries, max_backoff
        self._token = token if token is not None else os.environ.get(token_env) or None
        self._session, self._producer, self._producer_config = session, producer, dict(producer_config or {})
        self.sent = self.failed = self.rejected = self.dropped = 0
        self._cond = threading.Condition()
        self._pending = 0  # records queued or in flight; flush() waits for 0
        self._queue: queue.Queue[_Item] = queue.Queue(max_queue)
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stop = threading.Event()
        self._closed = self._warned_auth = False
        self._last_drop_warning = -1e9

    def __repr__(self) -> str:  # never the token
        where = f"kafka {self.bootstrap_servers} {self.topic}" if self.bootstrap_servers else self.url
        return f"SpendlakeLogger({where}, sent={self.sent}, dropped={self.dropped}, failed={self.failed})"

    # --- LiteLLM's hooks: redact and enqueue, nothing else -------------------------------------
    def log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._record(kwargs)

    def log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._record(kwargs)

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._record(kwargs)

    async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._record(kwargs)

    def _record(self, kwargs: Any) -> None:
        try:
            payload = kwargs.get("standard_logging_object") if isinstance(kwargs, dict) else None
            if not isinstance(payload, dict):
                return
            record = redact(payload)
            for key in _DROPPED_KEYS:
                record.pop(key, None)
            meta = record.get("metadata")
            vk = (meta.get("user_api_key_hash") or meta.get("user_api_key_alias")) if isinstance(meta, dict) else None
            self._enqueue((str(vk).encode() if vk else None, record))
        except Exception:
            log.exception("spendlake: could not queue a LiteLLM usage record")

    def _enqueue(self, item: _Item) -> None:
        with self._cond:
            if self._closed:
                self.dropped += 1
                return
            if self._thread is None or self._pid != os.getpid():  # first record, or a forked child
                self._start()
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self.dropped += 1
                now = time.monotonic()
                if now - self._last_drop_warning >= 60.0:
                    self._last_drop_warning = now
                    log.warning("spendlake: send queue full (%d records); dropping usage records, "
                                "%d dropped so far", self.max_queue, self.dropped)  # fmt: skip
                return
            self._pending += 1

    def _start(self) -> None:
        if self._pid and self._pid != os.getpid():  # the parent's thread and queue did not survive the fork
            self._queue, self._pending, self._session, self._producer = queue.Queue(self.max_queue), 0, None, None
        else:
            atexit.register(self.close)
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="spendlake-litellm-sender", daemon=True)
        self._thread.start()

    # --- shutdown ---------------------------------------------------------------------------------
    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record queued so far is sent or given up; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Flush for up to `timeout` seconds, then stop the sender; later records are dropped."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
        self.flush(timeout)
        self._stop.set()
        atexit.unregister(self.close)
        if self._thread is not None and self._pid == os.getpid():
            self._thread.join(1.0)
        if self._pending:
            log.warning("spendlake: closing with %d usage records not delivered", self._pending)
        for client in (self._producer, self._session):
            if client is not None:
                try:
                    client.close()
                except Exception:
                    log.debug("spendlake: closing %r failed", client, exc_info=True)

    # --- the sender thread ------------------------------------------------------------------------
    def _run(self) -> None:
        q = self._queue
        while not self._stop.is_set():
            try:
                batch = [q.get(timeout=self.flush_interval)]
            except queue.Empty:
                continue
            deadline = time.monotonic() + self.flush_interval
            while len(batch) < self.batch_size:
                left = deadline - time.monotonic()
                try:
                    batch.append(q.get(timeout=left) if left > 0 else q.get_nowait())
                except queue.Empty:
                    break
            try:
                self._deliver(batch)
            except Exception:  # a bug must not kill the thread and strand the queue
                log.exception("spendlake: sending %d usage records failed", len(batch))
                self._done(len(batch), failed=len(batch))

    def _deliver(self, batch: list[_Item]) -> None:
        n, send = len(batch), (self._send_kafka if self.bootstrap_servers else self._send_http)
        for attempt in range(self.max_retries + 1):
            try:
                batch, retry_after, why = send(batch)
            except Exception as exc:  # connection refused, timeout, no broker: all transient
                retry_after, why = 0.0, f"{type(exc).__name__}: {exc}"
            if not batch:
                self._done(n)
                return
            if attempt == 0:
                log.warning("spendlake: %s unavailable (%s); retrying %d records", self._where(), why, len(batch))
            delay = min(max(retry_after, min(self.max_backoff, 0.5 * 2.0**attempt)), 300.0)
            if attempt == self.max_retries or self._stop.wait(delay):
                break
        log.error("spendlake: gave up on %d usage records after %d attempts (%s)", len(batch), attempt + 1, why)
        self._done(n, failed=len(batch))

    def _done(self, n: int, failed: int = 0) -> None:
        with self._cond:
            self.failed += failed
            self._pending -= n
            self._cond.notify_all()

    def _where(self) -> str:
        return f"Kafka {','.join(self.bootstrap_servers or [])}" if self.bootstrap_servers else f"intake {self.url}"

    def _send_http(self, batch: list[_Item]) -> tuple[list[_Item], float, str]:
        """POST one batch. Returns (what is left to retry, seconds to wait at least, why)."""
        if self._session is None:
            self._session = requests.Session()
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        body = _json([record for _, record in batch])
        r = self._session.post(self.url, data=body, headers=headers, timeout=self.timeout)
        if 200 <= r.status_code < 300:
            self.sent += self._rejects(r, len(batch))
            return [], 0.0, ""
        if r.status_code in (408, 429) or r.status_code >= 500:
            try:
                retry_after = float(r.headers.get("Retry-After", 0))
            except ValueError:  # an HTTP date: our own backoff instead
                retry_after = 0.0
            return batch, retry_after, f"HTTP {r.status_code}"
        if r.status_code == 413 and len(batch) > 1:  # too large together: send the halves
            half = len(batch) // 2
            left, retry_after, why = self._send_http(batch[:half])
            return (left + batch[half:], retry_after, why) if left else self._send_http(batch[half:])
        if r.status_code in (401, 403):
            if not self._warned_auth:
                self._warned_auth = True
                log.error("spendlake: intake %s refused the token (HTTP %d); dropping usage records until "
                          "it accepts it", self.url, r.status_code)  # fmt: skip
        elif r.status_code == 400 and (accepted := self._rejects(r, len(batch))) >= 0:
            self.sent += accepted  # the intake's "every record is bad": counted as rejected
            return [], 0.0, ""
        else:
            log.error("spendlake: intake %s answered HTTP %d to %d usage records, dropped: %s",
                      self.url, r.status_code, len(batch), r.text[:300])  # fmt: skip
        self.failed += len(batch)
        return [], 0.0, ""

    def _rejects(self, r: requests.Response, n: int) -> int:
        """Count and log the per-record rejects of an intake answer; returns how many it accepted.
        A 400 that lists no rejects returns -1 (a bad request, not bad records)."""
        try:
            answer = r.json()
            listed = answer.get("rejected") or []
            rejected = int(answer.get("rejected_count", len(listed)))  # the list stops at 100
            accepted = int(answer.get("accepted", n - rejected))
        except (ValueError, TypeError, AttributeError):
            listed, rejected, accepted = [], 0, n
        if r.status_code == 400 and not rejected:
            return -1
        self.rejected += rejected
        if rejected:
            log.warning("spendlake: intake rejected %d of %d usage records; first: %s",
                        rejected, n, str(listed[0])[:300] if listed else "?")  # fmt: skip
        return accepted

    def _send_kafka(self, batch: list[_Item]) -> tuple[list[_Item], float, str]:
        if self._producer is None:
            from kafka import KafkaProducer

            config = {"linger_ms": 20, **self._producer_config, "acks": "all"}
            self._producer = KafkaProducer(bootstrap_servers=self.bootstrap_servers, **config)
        sends = [(item, self._producer.send(self.topic, key=item[0], value=_json(item[1])))
                 for item in batch]  # fmt: skip
        try:
            self._producer.flush(self.timeout)
        except Exception:
            log.debug("spendlake: Kafka flush did not finish", exc_info=True)  # the futures tell what
        left, why = [], ""
        for item, future in sends:
            try:
                future.get(timeout=0)
            except Exception as exc:
                left.append(item)
                why = f"{type(exc).__name__}: {exc}"
        self.sent += len(batch) - len(left)
        return left, 0.0, why


def from_env(environ: Mapping[str, str] | None = None) -> SpendlakeLogger:
    """A logger configured from SPENDLAKE_* variables: Kafka when SPENDLAKE_KAFKA_BOOTSTRAP_SERVERS
    is set (topic SPENDLAKE_KAFKA_TOPIC, default llm-usage), else HTTP to SPENDLAKE_INTAKE_URL
    (default DEFAULT_URL) with the token in SPENDLAKE_INTAKE_TOKEN."""
    env = os.environ if environ is None else environ
    if env.get("SPENDLAKE_KAFKA_BOOTSTRAP_SERVERS"):
        return SpendlakeLogger(bootstrap_servers=env["SPENDLAKE_KAFKA_BOOTSTRAP_SERVERS"],
                               topic=env.get("SPENDLAKE_KAFKA_TOPIC") or "llm-usage")  # fmt: skip
    return SpendlakeLogger(env.get("SPENDLAKE_INTAKE_URL") or DEFAULT_URL, token=env.get("SPENDLAKE_INTAKE_TOKEN") or "")


_instance_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    """``proxy_handler_instance`` is built from the environment on first access (PEP 562), so
    importing this module reads no variable and starts nothing; the sender thread itself starts
    only with the first record."""
    if name != "proxy_handler_instance":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _instance_lock:
        if name not in globals():
            globals()[name] = from_env()
        return globals()[name]
