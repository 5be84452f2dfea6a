"""Per-task telemetry context (contextvars), free of OpenTelemetry imports.

Each run, step and incoming RPC sets these in its own asyncio task; tasks the executor creates copy
them, so a step sees its run's values and a log record sees both. Nothing is ever reset through a
token (hooks may run in a shielded copy of the context): callers set the previous value back.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from typing import Any, NamedTuple

_TRACEPARENT = re.compile(r"\A00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})\Z")


class LogContext(NamedTuple):
    """The ids a log record inside a run carries (durability.md §14). A named tuple: a few are
    made per step attempt, and a frozen dataclass costs several times more to build."""

    run_id: str | None = None
    flow_id: str | None = None
    step_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None


# The innermost stepflow span of this task (`run_execution` or `step`), an SDK span or None.
current_span: ContextVar[Any] = ContextVar("stepflow_current_span", default=None)
# W3C traceparent of the client RPC this task serves (set by the server interceptor).
incoming_traceparent: ContextVar[str | None] = ContextVar("stepflow_traceparent", default=None)
log_context: ContextVar[LogContext | None] = ContextVar("stepflow_log_context", default=None)


def current_parent() -> Any:
    """The parent of a span started here: the innermost stepflow span, else the caller's
    traceparent (a string), else None."""
    return current_span.get() or incoming_traceparent.get()


def parse_traceparent(text: str | None) -> tuple[int, int, int] | None:
    """(trace id, parent span id, flags) of a version-00 W3C traceparent; None if invalid."""
    if not text:
        return None
    match = _TRACEPARENT.match(text.strip().lower())
    if match is None:
        return None
    trace_id, span_id = int(match.group(1), 16), int(match.group(2), 16)
    if trace_id == 0 or span_id == 0:
        return None
    return trace_id, span_id, int(match.group(3), 16)


def format_traceparent(trace_id: int, span_id: int, flags: int = 1) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"


def run_trace_id(run_id: str) -> int | None:
    """The trace id of a run tree without an incoming trace: the root run id's 128 bits."""
    digits = run_id.replace("-", "")
    if len(digits) != 32:
        return None
    try:
        value = int(digits, 16)
    except ValueError:
        return None
    return value or None
