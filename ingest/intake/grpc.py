"""The OTLP/gRPC edge of intake: `TraceService/Export` (contract 7; the optional extra `grpc`).

The same intake as `POST /v1/traces`, over gRPC, answered per the OTLP/gRPC specification:

- OK: every accepted span is durable (sink.py); the ExportTraceServiceResponse carries
  `partial_success` (rejected span count and the message http.py gives) when spans were rejected.
- UNAUTHENTICATED without a valid `authorization: Bearer <token>` metadata entry.
- INVALID_ARGUMENT when the request cannot be read as spans (`BadRecord`).
- UNAVAILABLE (the retryable code) when the records could not be made durable now, with a
  `google.rpc.RetryInfo` in the trailing metadata so exporters wait `retry_after_s`.
- INTERNAL for a bug of ours: logged here, never sent to the client as a traceback.
- RESOURCE_EXHAUSTED (by grpc itself) over `max_message_bytes`; gzip requests are decompressed
  by grpc.

Requests are counted as on HTTP, endpoint "grpc", with the HTTP-like code of the answer
(200/400/401/503/500) and the request's (decompressed) protobuf size. Tokens and requests are
never logged.
"""

from __future__ import annotations

import logging
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from ingest.errors import BadRecord
from ingest.intake.auth import Tokens
from ingest.intake.core import Intake, Result, rejected_message, varint
from ingest.intake.sink import Unavailable

log = logging.getLogger("spendlake.intake")

WORKERS = 16
RETRY_INFO_KEY = "google.rpc.retryinfo-bin"


def retry_info(seconds: int) -> bytes:
    """A google.rpc.RetryInfo protobuf: retry_delay (a Duration of `seconds`), no library needed."""
    duration = b"\x08" + varint(seconds)
    return b"\x0a" + varint(len(duration)) + duration


def export_response(result: Result) -> trace_service_pb2.ExportTraceServiceResponse:
    """The answer to an Export: partial_success when spans were rejected (http.py's message)."""
    response = trace_service_pb2.ExportTraceServiceResponse()
    if result.rejected:
        response.partial_success.rejected_spans = len(result.rejected)
        response.partial_success.error_message = rejected_message(result)
    return response


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, intake: Intake, tokens: Tokens) -> None:
        self.intake = intake
        self.tokens = tokens

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        size = request.ByteSize()
        authorization = next((str(v) for k, v in context.invocation_metadata() if k == "authorization"), None)
        if self.tokens.check(authorization) is None:
            self.intake.stats.request("grpc", 401, size)
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid 'authorization: Bearer <token>' is required")
        try:
            result = self.intake.trace_request(request)
        except BadRecord as exc:
            code, status, message = 400, grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        except Unavailable as exc:
            code, status, message = 503, grpc.StatusCode.UNAVAILABLE, str(exc)
            context.set_trailing_metadata(((RETRY_INFO_KEY, retry_info(exc.retry_after_s)),))
        except Exception:  # a bug of ours: log it, answer plainly, keep serving
            log.exception("intake: gRPC Export failed")
            code, status, message = 500, grpc.StatusCode.INTERNAL, "internal error (logged by spendlake)"
        else:
            self.intake.stats.request("grpc", 200, size)
            return export_response(result)
        self.intake.stats.request("grpc", code, size)
        context.abort(status, message)  # raises: grpc answers `status`


def serve_grpc(listen: str, intake: Intake, tokens: Tokens, max_message_bytes: int) -> grpc.Server:
    """Start the OTLP/gRPC receiver on `listen` (HOST:PORT; port 0 picks one, kept as
    `server.spendlake_port`). Raises OSError when the address cannot be bound."""
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),  # else a port another process serves binds "fine"
    ]
    server = grpc.server(futures.ThreadPoolExecutor(WORKERS, thread_name_prefix="intake-grpc"), options=options)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(intake, tokens), server)
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError:  # grpcio >= 1.5x raises where older ones returned 0
        port = 0
    if not port:
        server.stop(None)
        raise OSError(f"[intake] grpc_listen: cannot listen on {listen} (in use, or not an address of this host)")
    server.start()
    server.spendlake_port = port  # type: ignore[attr-defined]
    return server


__all__ = ["TraceService", "export_response", "retry_info", "serve_grpc"]
