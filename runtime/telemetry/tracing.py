"""Spans (durability.md §14), recorded cheaply and exported over OTLP/gRPC in batches.

A run tree's trace is the caller's (W3C traceparent of the creating RPC, journalled so a resumed
tree continues it) or, without one, a trace whose id is the root run id's 128 bits.

Why not the SDK's tracer: with ~100 µs of CPU per span (creation, then batch encoding in a thread
that holds the GIL) tracing halved a node's throughput on short steps. A `Span` here is a slotted
record; `end()` hands it to the exporter thread, which encodes a batch at a time (otlp_wire.py). The
resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`) still comes from the SDK's detector, and
`OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` are honoured at the run span (children follow
their parent's decision, as W3C sampling flags do).
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from . import otlp_wire
from .context import parse_traceparent, run_trace_id
from .exporter import OtlpExporter
from .otlp_wire import AttributeValue

Attributes = dict[str, AttributeValue]
SAMPLED = 0x01
_random_bits = random.getrandbits  # module globals: a span is made for every step attempt
_time_ns = time.time_ns


class Span:
    """One span. Quacks like the parts of an OpenTelemetry span the runtime uses: its context
    (`get_span_context()` returns the span itself: trace_id, span_id, trace_flags, is_valid),
    `set_attribute`, `record_exception`, `set_error`, `end`."""

    __slots__ = (
        "_sink", "attributes", "end_ns", "error", "events", "name", "parent_id", "span_id",
        "start_ns", "trace_flags", "trace_id",
    )  # fmt: skip
    is_valid = True  # a SpanContext flag; ours always are

    def __init__(
        self,
        sink: OtlpExporter | None,
        name: str,
        trace_id: int,
        parent_id: int,
        flags: int,
        attributes: Attributes,
    ) -> None:
        self._sink = sink if flags & SAMPLED else None  # an unsampled span is never exported
        self.name = name
        self.trace_id = trace_id
        self.span_id = _random_bits(64) or 1
        self.parent_id = parent_id
        self.trace_flags = flags
        self.attributes = attributes
        self.events: list[tuple[int, str, Attributes]] | None = None
        self.error: str | None = None
        self.start_ns = _time_ns()

    def get_span_context(self) -> Span:
        return self

    def set_attribute(self, key: str, value: str | int | float | bool) -> None:
        if self._sink is not None:  # once ended, the exporter thread may be encoding it
            self.attributes[key] = value

    def set_error(self, message: str) -> None:
        """Status ERROR with `message` (the span's outcome, not an exception event)."""
        self.error = message

    def record_exception(self, exc: BaseException) -> None:
        if self.events is None:
            self.events = []
        self.events.append(
            (time.time_ns(), "exception",
             {"exception.type": type(exc).__qualname__, "exception.message": str(exc)[:500]})
        )  # fmt: skip

    def end(self) -> None:
        sink, self._sink = self._sink, None  # a second end() exports nothing
        if sink is None:
            return
        self.end_ns = _time_ns()
        sink.add_span(self)

    def encode(self) -> bytes:
        """The ended span in OTLP wire format (called by the exporter thread, batch by batch:
        encoding in one tight loop there costs about half what it does between steps)."""
        return otlp_wire.span(
            self.trace_id, self.span_id, self.parent_id, self.name, self.start_ns, self.end_ns,
            self.attributes, self.events or (), self.error,
        )  # fmt: skip


class Tracing:
    def __init__(self, exporter: OtlpExporter, header: tuple[bytes, bytes]) -> None:
        """`header`: the encoded resource and scope (otlp_wire.resource_header)."""
        self.exporter = exporter
        self._sample = Sampler()
        exporter.spans.header = header

    def start_run_span(
        self, name: str, root_run_id: str, traceparent: str | None, attributes: Attributes
    ) -> Span:
        """A run tree's span: a child of the caller's span, else a root in the run's trace."""
        parsed = parse_traceparent(traceparent)
        if parsed is not None:
            trace_id, parent_id, flags = parsed
            sampled = self._sample(trace_id, bool(flags & SAMPLED))
        else:
            trace_id = run_trace_id(root_run_id) or (random.getrandbits(128) or 1)
            parent_id, sampled = 0, self._sample(trace_id, None)
        return Span(self.exporter, name, trace_id, parent_id, SAMPLED if sampled else 0, attributes)

    def start_child(self, name: str, parent: Any, attributes: Attributes) -> Span:
        """A span under `parent` (a Span or a traceparent string); a sampled root if neither."""
        if isinstance(parent, str):
            parsed = parse_traceparent(parent)
            if parsed is not None:
                trace_id, parent_id, flags = parsed
                return Span(self.exporter, name, trace_id, parent_id, flags, attributes)
            parent = None
        if parent is None:
            trace_id = random.getrandbits(128) or 1
            flags = SAMPLED if self._sample(trace_id, None) else 0
            return Span(self.exporter, name, trace_id, 0, flags, attributes)
        return Span(
            self.exporter, name, parent.trace_id, parent.span_id, parent.trace_flags, attributes
        )


class Sampler:
    """`OTEL_TRACES_SAMPLER` (+ `_ARG`): always_on, always_off, traceidratio, each optionally
    parentbased_ (the default is parentbased_always_on, as the SDK's)."""

    def __init__(self) -> None:
        name = os.environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
        self.follow_parent = name.startswith("parentbased_")
        self.root = name.removeprefix("parentbased_")
        try:
            ratio = min(1.0, max(0.0, float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))))
        except ValueError:
            ratio = 1.0
        self.bound = int(ratio * (1 << 64))  # compared with the trace id's low 64 bits

    def __call__(self, trace_id: int, parent_sampled: bool | None) -> bool:
        if parent_sampled is not None and self.follow_parent:
            return parent_sampled
        if self.root == "always_off":
            return False
        if self.root == "traceidratio":
            return (trace_id & 0xFFFF_FFFF_FFFF_FFFF) < self.bound
        return True
