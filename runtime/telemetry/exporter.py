"""The one thread that sends telemetry over OTLP/gRPC: spans, log records and metric snapshots.

Log records arrive encoded (log_export.py); ended spans are encoded here, a batch at a time. A
batch leaves every `span_delay_secs`, or as soon as `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` of them
wait; at most `OTEL_BSP_MAX_QUEUE_SIZE` are held (more are dropped and counted, so a dead
collector cannot grow the node's memory). Metrics are collected from their source every
`metrics_interval_secs`. A failed export is logged once per outage and its items are kept for
the next attempt while they fit. `shutdown()` sends what is left (SIGTERM).

Standard exporter variables honoured: `OTEL_EXPORTER_OTLP_HEADERS` (and the `_TRACES_`,
`_METRICS_`, `_LOGS_` forms), `OTEL_EXPORTER_OTLP_COMPRESSION=gzip`,
`OTEL_EXPORTER_OTLP_CERTIFICATE` for https endpoints.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from .settings import EXPORT_TIMEOUT_SECS, TelemetrySettings

log = logging.getLogger("stepflow.telemetry")
if TYPE_CHECKING:  # generic only in the type stubs
    Export = grpc.UnaryUnaryMultiCallable[bytes, bytes]

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
METRICS_EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


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
        roots = Path(certificate).read_bytes() if certificate else None
        credentials = grpc.ssl_channel_credentials(root_certificates=roots)
        return grpc.secure_channel(target, credentials, compression=compression)
    return grpc.insecure_channel(target, compression=compression)


class Encodable(Protocol):
    def encode(self) -> bytes: ...


class _Batches:
    """Spans (encoded here, at export) or encoded log records waiting for export, with their
    request header."""

    def __init__(
        self,
        signal: str,
        call: Export,
        max_queue: int,
        max_batch: int,
        encode: bool,
        full: threading.Event,
    ) -> None:
        self.signal = signal
        self.call = call
        self.encode = encode
        self.metadata = _headers(signal.upper())
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.header: tuple[bytes, bytes] | None = None
        self.items: collections.deque[Any] = collections.deque()  # appends are thread-safe
        self.dropped = 0
        self._full = full  # set when a whole batch waits: the exporter sends it at once

    def add(self, item: Any) -> None:
        """Queue one item (called on the event loop for every ended span: no lock)."""
        items = self.items
        if len(items) >= self.max_queue:
            self.dropped += 1
            return
        items.append(item)
        if len(items) == self.max_batch:
            self._full.set()

    def take(self) -> list[Any]:
        items = self.items
        return [items.popleft() for _ in range(len(items))]  # what has arrived so far

    def keep(self, unsent: list[Any]) -> None:
        """Items of a failed export go back in front while the queue has room."""
        room = max(0, self.max_queue - len(self.items))
        self.dropped += max(0, len(unsent) - room)
        self.items.extendleft(reversed(unsent[:room]))


class OtlpExporter:
    def __init__(self, settings: TelemetrySettings) -> None:
        assert settings.otlp_endpoint
        self.endpoint = settings.otlp_endpoint
        self.span_delay = settings.span_delay_secs
        self.metrics_interval = settings.metrics_interval_secs
        max_queue = settings.span_queue_size
        max_batch = min(max_queue, settings.span_batch_size)
        self.metrics_source: Callable[[], bytes | None] | None = None
        self._wake = threading.Event()
        self._stopping = False
        self._failing: set[str] = set()  # signals whose last export failed (logged once)
        self._channel = open_channel(self.endpoint)
        # No (de)serializers: requests are already encoded and replies are not read.
        unary = self._channel.unary_unary
        wake = self._wake
        self.spans = _Batches("traces", unary(TRACE_EXPORT), max_queue, max_batch, True, wake)
        self.logs = _Batches("logs", unary(LOGS_EXPORT), max_queue, max_batch, False, wake)
        # Called for every ended span (encoded in this thread, at export) and log record.
        self.add_span: Callable[[Encodable], None] = self.spans.add
        self.add_log: Callable[[bytes], None] = self.logs.add
        self._send_metrics: Export = unary(METRICS_EXPORT)
        self._metrics_metadata = _headers("METRICS")
        self._thread = threading.Thread(target=self._run, name="stepflow-otlp", daemon=True)
        self._thread.start()

    @property
    def dropped_spans(self) -> int:
        return self.spans.dropped

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
            self._export(self.spans)
            self._export(self.logs)
            if time.monotonic() >= next_metrics:
                next_metrics = time.monotonic() + self.metrics_interval
                self._export_metrics()
        self._export(self.spans)
        self._export(self.logs)
        self._export_metrics()

    def _export(self, batches: _Batches) -> None:
        batch = batches.take()
        header = batches.header
        if header is None or not batch:
            return
        from . import otlp_wire

        for start in range(0, len(batch), batches.max_batch):
            chunk = batch[start : start + batches.max_batch]
            encoded = [item.encode() for item in chunk] if batches.encode else chunk
            request = otlp_wire.export_request(header, encoded)
            if not self._send(batches.signal, batches.call, request, batches.metadata):
                batches.keep(batch[start:])
                return

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
