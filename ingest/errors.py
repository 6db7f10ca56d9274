"""The ingest exception tree.

    SpendlakeError
    ├── BadRecord        bad data: the record becomes a dead letter, the pipeline keeps going
    └── PipelineFailure  a broken system: stop, and restart from the last commit
        └── LakeConflict another writer already holds part of this offset range (a zombie
                         consumer after a rebalance): the batch is discarded, never committed

Messages name the field, the bad value and what was allowed, because the person reading a
dead letter has only that line to go on.
"""

from __future__ import annotations

from typing import Any

MAX_VALUE_CHARS = 80


def show(value: Any) -> str:
    """A short, single-line rendering of a bad value for an error message."""
    text = repr(value)
    if len(text) > MAX_VALUE_CHARS:
        text = text[: MAX_VALUE_CHARS - 3] + "..."
    return text


class SpendlakeError(Exception):
    """Base of every error spendlake raises on purpose."""


class BadRecord(SpendlakeError):
    """One input record cannot be used. Carries the field, the bad value and what was allowed."""

    # What a dead letter keeps instead of the whole record, when the record held several events
    # and only this one failed (an OTLP span): never prompt or response text.
    evidence: bytes | None = None

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}: got {show(value)}, expected {allowed}")


class PipelineFailure(SpendlakeError):
    """The pipeline itself cannot go on (lake not writable, broker gone for good, ...)."""


class LakeConflict(PipelineFailure):
    """A batch overlaps offsets the lake already holds; it must not become visible."""
