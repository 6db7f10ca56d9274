"""Intake: producers that do not speak Kafka hand usage to `spendlake serve` (contract 7).

    http.py   the HTTP edge: POST /v1/traces (OTLP/HTTP), POST /v1/events; auth, limits, gzip
    grpc.py   the OTLP/gRPC edge (optional extra `grpc`)
    core.py   bodies → validated canonical records + per-record rejects; counters
    sink.py   where accepted records go before the 200: Kafka (acks=all) or the local spool
    auth.py   bearer tokens, each with the scope it may act in
"""

from ingest.intake.auth import Principal, Tokens
from ingest.intake.core import Intake, IntakeStats, Result
from ingest.intake.sink import KafkaSink, SpoolSink, Unavailable

__all__ = ["Intake", "IntakeStats", "KafkaSink", "Principal", "Result", "SpoolSink", "Tokens", "Unavailable"]
