"""An OTLP/gRPC receiver for tests: collects exported spans, metric points and log records.

Implements the collector's TraceService, MetricsService and LogsService on a loopback port, with
the servicer bases from the `opentelemetry-proto` package.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

T = TypeVar("T")


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


def _by_service(resources: Any, scopes: str, items: str) -> Iterator[tuple[str, Any]]:
    """(service.name, item) for each span, log record or metric of an OTLP export request."""
    for resource in resources:
        service = str(_attributes(resource.resource.attributes).get("service.name"))
        for scope in getattr(resource, scopes):
            for item in getattr(scope, items):
                yield service, item


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    service: str
    start_ns: int = 0
    end_ns: int = 0


@dataclass(frozen=True)
class ReceivedLog:
    body: str
    severity: str
    severity_number: int
    attributes: dict[str, Any]
    trace_id: str
    span_id: str
    service: str


@dataclass(frozen=True)
class ReceivedPoint:
    metric: str
    kind: str  # sum, histogram, gauge
    monotonic: bool
    attributes: dict[str, Any]
    value: float  # sum/gauge value, or histogram count
    total: float = 0.0  # histogram sum
    service: str = ""


@dataclass
class Receiver:
    port: int = 0
    spans: list[ReceivedSpan] = field(default_factory=list)
    points: list[ReceivedPoint] = field(default_factory=list)
    requests: int = 0
    # False: only count what arrives (a benchmark's collector, which must not eat the CPU the
    # measured node needs); True: keep every span and point for assertions.
    keep: bool = True
    span_count: int = 0
    point_count: int = 0
    trace_metadata: dict[str, str] = field(default_factory=dict)  # of the last trace export
    logs: list[ReceivedLog] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: int = 0) -> Receiver:
        """Serve on `port` (0: a free one; a fixed one brings a stopped collector back)."""
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(self), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(self), server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Logs(self), server)
        self.port = server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0).wait()

    def snapshot_spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)

    def snapshot_logs(self) -> list[ReceivedLog]:
        with self._lock:
            return list(self.logs)

    def snapshot_points(self) -> list[ReceivedPoint]:
        with self._lock:
            return list(self.points)

    def wait_for(self, probe: Callable[[Receiver], T | None], timeout: float = 30.0) -> T:
        """Until `probe` returns something truthy; fails with the last state after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            found = probe(self)
            if found:
                return found
            if time.monotonic() > deadline:
                names = sorted({s.name for s in self.snapshot_spans()})
                metrics = sorted({p.metric for p in self.snapshot_points()})
                raise AssertionError(f"timed out; spans seen {names}, metrics seen {metrics}")
            time.sleep(0.05)

    def _add_spans(self, request: Any) -> None:
        if not self.keep:
            count = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
            with self._lock:
                self.span_count += count
            return
        found = [
            ReceivedSpan(
                name=span.name,
                trace_id=span.trace_id.hex(),
                span_id=span.span_id.hex(),
                parent_span_id=span.parent_span_id.hex(),
                attributes=_attributes(span.attributes),
                service=service,
                start_ns=span.start_time_unix_nano,
                end_ns=span.end_time_unix_nano,
            )
            for service, span in _by_service(request.resource_spans, "scope_spans", "spans")
        ]
        with self._lock:
            self.spans.extend(found)
            self.requests += 1

    def _add_logs(self, request: Any) -> None:
        found = [
            ReceivedLog(
                body=str(_value(record.body)),
                severity=record.severity_text,
                severity_number=record.severity_number,
                attributes=_attributes(record.attributes),
                trace_id=record.trace_id.hex(),
                span_id=record.span_id.hex(),
                service=service,
            )
            for service, record in _by_service(request.resource_logs, "scope_logs", "log_records")
        ]
        with self._lock:
            self.logs.extend(found)

    def _add_metrics(self, request: Any) -> None:
        if not self.keep:
            count = sum(len(s.metrics) for r in request.resource_metrics for s in r.scope_metrics)
            with self._lock:
                self.point_count += count
            return
        found = []
        for service, metric in _by_service(request.resource_metrics, "scope_metrics", "metrics"):
            kind = metric.WhichOneof("data")
            data = getattr(metric, kind)
            for point in data.data_points:
                attributes = _attributes(point.attributes)
                if kind == "histogram":
                    found.append(
                        ReceivedPoint(metric.name, kind, True, attributes,
                                      point.count, point.sum, service)
                    )  # fmt: skip
                else:
                    value = point.as_double if point.HasField("as_double") else point.as_int
                    monotonic = bool(getattr(data, "is_monotonic", False))
                    found.append(
                        ReceivedPoint(metric.name, kind, monotonic, attributes, value,
                                      0.0, service)
                    )  # fmt: skip
        with self._lock:
            self.points.extend(found)
            self.requests += 1


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        self.receiver.trace_metadata = dict(context.invocation_metadata())
        self.receiver._add_spans(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        self.receiver._add_metrics(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        self.receiver._add_logs(request)
        return logs_service_pb2.ExportLogsServiceResponse()
