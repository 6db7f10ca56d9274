"""Ingest: usage events from Kafka or JSONL files into the Parquet lake, exactly once.

decode (adapters → validate) → price (pricing/) → batch (pipeline) → write (lake) → commit.
"""

from ingest.errors import BadRecord, LakeConflict, PipelineFailure, SpendlakeError
from ingest.lake import Lake, Manifest
from ingest.pipeline import BatchLimits, Committed, Pipeline

__all__ = [
    "BadRecord",
    "BatchLimits",
    "Committed",
    "Lake",
    "LakeConflict",
    "Manifest",
    "Pipeline",
    "PipelineFailure",
    "SpendlakeError",
]
