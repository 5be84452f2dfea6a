"""Spans over OTLP/gRPC (durability.md §14). Imported only when tracing is enabled.

A run tree's trace is the caller's (W3C traceparent of the creating RPC, journalled so a resumed
tree continues it) or, without one, a trace whose id is the root run id's 128 bits. The SDK's id
generator is asked for that id just before the `run_execution` span is started.
"""

from __future__ import annotations

import os
import random
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import Span, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator

from .context import parse_traceparent, run_trace_id
from .settings import EXPORT_TIMEOUT_SECS, TelemetrySettings

_next_trace_id: ContextVar[int | None] = ContextVar("stepflow_next_trace_id", default=None)

Attributes = dict[str, str | int | float | bool]


class _RunIdGenerator(IdGenerator):
    """Random ids, except a trace id the caller asked for (a run tree's root run id)."""

    def generate_span_id(self) -> int:
        return random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        wanted = _next_trace_id.get()
        return wanted if wanted is not None else (random.getrandbits(128) or 1)


def make_resource(settings: TelemetrySettings) -> Resource:
    """`OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` win over the default service name."""
    attributes: dict[str, str] = {}
    from_env = OTELResourceDetector().detect().attributes
    if not os.environ.get("OTEL_SERVICE_NAME") and "service.name" not in from_env:
        attributes["service.name"] = settings.service_name
    return Resource.create(attributes)


def remote_parent(traceparent: str | None) -> Context | None:
    parsed = parse_traceparent(traceparent)
    if parsed is None:
        return None
    trace_id, span_id, flags = parsed
    parent = trace_api.SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=trace_api.TraceFlags(flags & 0xFF)
    )
    return trace_api.set_span_in_context(trace_api.NonRecordingSpan(parent), Context())


class Tracing:
    def __init__(self, settings: TelemetrySettings) -> None:
        assert settings.otlp_endpoint
        self.provider = TracerProvider(
            resource=make_resource(settings), id_generator=_RunIdGenerator()
        )
        exporter = OTLPSpanExporter(
            endpoint=settings.otlp_endpoint, insecure=True, timeout=int(EXPORT_TIMEOUT_SECS)
        )
        self.provider.add_span_processor(
            BatchSpanProcessor(exporter, schedule_delay_millis=settings.span_delay_secs * 1000)
        )
        self.tracer = self.provider.get_tracer("stepflow")

    def start_run_span(
        self, name: str, root_run_id: str, traceparent: str | None, attributes: Attributes
    ) -> Span:
        """A run tree's span: a child of the caller's span, else a root in the run's trace."""
        parent = remote_parent(traceparent)
        if parent is not None:
            return self._start(name, parent, attributes)
        token = _next_trace_id.set(run_trace_id(root_run_id))
        try:
            return self._start(name, Context(), attributes)
        finally:
            _next_trace_id.reset(token)

    def start_child(self, name: str, parent: Any, attributes: Attributes) -> Span:
        """A span under `parent` (an SDK span or a traceparent string); a root if neither."""
        if isinstance(parent, str):
            context = remote_parent(parent) or Context()
        elif parent is not None:
            context = trace_api.set_span_in_context(parent, Context())
        else:
            context = Context()
        return self._start(name, context, attributes)

    def _start(self, name: str, context: Context, attributes: Attributes) -> Span:
        span = self.tracer.start_span(name, context=context, attributes=attributes)
        assert isinstance(span, Span)
        return span

    def shutdown(self) -> None:
        """Exports what is still queued (bounded by the exporter timeout)."""
        self.provider.shutdown()


def span_ids(span: Any) -> tuple[str, str] | None:
    """(trace id, span id) of a span as lowercase hex, or None for a non-span."""
    if span is None:
        return None
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def traceparent_of(span: Any) -> str | None:
    if span is None:
        return None
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
