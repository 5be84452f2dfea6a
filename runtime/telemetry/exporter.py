"""The one thread that sends telemetry: span batches and metric snapshots over OTLP/gRPC.

Spans arrive already encoded (tracing.py); a batch leaves every `span_delay_secs` or as soon as
`OTEL_BSP_MAX_EXPORT_BATCH_SIZE` spans wait, at most `OTEL_BSP_MAX_QUEUE_SIZE` are held (more are
dropped and counted, so a dead collector cannot grow the node's memory). Metrics are collected
from their source every `metrics_interval_secs`. A failed export is logged once per outage and its
spans are kept for the next attempt while they fit. `shutdown()` sends what is left (SIGTERM).

Standard exporter variables honoured: `OTEL_EXPORTER_OTLP_HEADERS` (and the `_TRACES_` / `_METRICS_`
forms), `OTEL_EXPORTER_OTLP_COMPRESSION=gzip`, `OTEL_EXPORTER_OTLP_CERTIFICATE` for https endpoints.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc

from .settings import EXPORT_TIMEOUT_SECS, TelemetrySettings

log = logging.getLogger("stepflow.telemetry")
if TYPE_CHECKING:  # generic only in the type stubs
    Export = grpc.UnaryUnaryMultiCallable[bytes, bytes]

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
METRICS_EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


def _env_int(name: str, default: int) -> int:
    try:
        value = int(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


def _headers(signal: str) -> tuple[tuple[str, str], ...]:
    text = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_HEADERS") or os.environ.get(
        "OTEL_EXPORTER_OTLP_HEADERS", ""
    )
    pairs = []
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            pairs.append((urllib.parse.unquote(key.strip()).lower(), urllib.parse.unquote(value)))
    return tuple(pairs)


def open_channel(endpoint: str) -> grpc.Channel:
    """`http://host:port` or `host:port` → plaintext; `https://` → TLS."""
    parsed = urllib.parse.urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
    target = parsed.netloc or parsed.path
    compression = (
        grpc.Compression.Gzip
        if os.environ.get("OTEL_EXPORTER_OTLP_COMPRESSION", "").lower() == "gzip"
        else None
    )
    if parsed.scheme == "https":
        certificate = os.environ.get("OTEL_EXPORTER_OTLP_CERTIFICATE")
        roots = open(certificate, "rb").read() if certificate else None  # noqa: SIM115
        credentials = grpc.ssl_channel_credentials(root_certificates=roots)
        return grpc.secure_channel(target, credentials, compression=compression)
    return grpc.insecure_channel(target, compression=compression)


class OtlpExporter:
    def __init__(self, settings: TelemetrySettings) -> None:
        assert settings.otlp_endpoint
        self.endpoint = settings.otlp_endpoint
        self.span_delay = settings.span_delay_secs
        self.metrics_interval = settings.metrics_interval_secs
        self.max_queue = _env_int("OTEL_BSP_MAX_QUEUE_SIZE", 2048)
        self.max_batch = min(self.max_queue, _env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512))
        self.dropped_spans = 0
        self.metrics_source: Callable[[], bytes | None] | None = None
        self._trace_header: tuple[bytes, bytes] | None = None
        self._spans: collections.deque[bytes] = collections.deque()  # appends are thread-safe
        self._wake = threading.Event()
        self._stopping = False
        self._failing: set[str] = set()  # signals whose last export failed (logged once)
        self._channel = open_channel(self.endpoint)
        # No (de)serializers: requests are already encoded and replies are not read.
        self._send_traces: Export = self._channel.unary_unary(TRACE_EXPORT)
        self._send_metrics: Export = self._channel.unary_unary(METRICS_EXPORT)
        self._trace_metadata = _headers("TRACES")
        self._metrics_metadata = _headers("METRICS")
        self._thread = threading.Thread(target=self._run, name="stepflow-otlp", daemon=True)
        self._thread.start()

    def set_trace_header(self, header: tuple[bytes, bytes]) -> None:
        self._trace_header = header

    def add_span(self, encoded: bytes) -> None:
        """Called on the event loop for every ended span: a deque append, no lock."""
        spans = self._spans
        if len(spans) >= self.max_queue:
            self.dropped_spans += 1
            return
        spans.append(encoded)
        if len(spans) == self.max_batch:
            self._wake.set()

    def shutdown(self) -> None:
        """Send what is left (each call bounded by the export timeout), then stop the thread."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=3 * EXPORT_TIMEOUT_SECS)
        self._channel.close()

    # -- the thread --------------------------------------------------------------------------------

    def _run(self) -> None:
        next_metrics = time.monotonic() + self.metrics_interval
        while not self._stopping:
            self._wake.wait(timeout=max(0.0, min(self.span_delay, next_metrics - time.monotonic())))
            self._wake.clear()
            self._export_spans()
            if time.monotonic() >= next_metrics:
                next_metrics = time.monotonic() + self.metrics_interval
                self._export_metrics()
        self._export_spans()
        self._export_metrics()

    def _export_spans(self) -> None:
        spans = self._spans
        batch = [spans.popleft() for _ in range(len(spans))]  # what has arrived so far
        header = self._trace_header
        if header is None:
            return
        from . import otlp_wire

        for start in range(0, len(batch), self.max_batch):
            chunk = batch[start : start + self.max_batch]
            request = otlp_wire.export_trace_request(header, chunk)
            if not self._send("traces", self._send_traces, request, self._trace_metadata):
                self._keep(batch[start:])
                return

    def _keep(self, unsent: list[bytes]) -> None:
        """Spans of a failed export go back in front while the queue has room."""
        room = max(0, self.max_queue - len(self._spans))
        self.dropped_spans += max(0, len(unsent) - room)
        self._spans.extendleft(reversed(unsent[:room]))

    def _export_metrics(self) -> None:
        source = self.metrics_source
        request = source() if source is not None else None
        if request is not None:
            self._send("metrics", self._send_metrics, request, self._metrics_metadata)

    def _send(
        self,
        signal: str,
        call: Export,
        request: bytes,
        metadata: tuple[tuple[str, str], ...],
    ) -> bool:
        try:
            call(request, timeout=EXPORT_TIMEOUT_SECS, metadata=metadata or None)
        except grpc.RpcError as exc:
            if signal not in self._failing:
                self._failing.add(signal)
                code = exc.code() if isinstance(exc, grpc.Call) else exc
                log.warning("exporting %s to %s failed: %s", signal, self.endpoint, code)
            return False
        if signal in self._failing:
            self._failing.discard(signal)
            log.info("exporting %s to %s works again", signal, self.endpoint)
        return True
