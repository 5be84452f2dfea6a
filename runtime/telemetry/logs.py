"""Run context on log records: trace_id, span_id, run_id, flow_id, step_id, node_id.

A filter on the process's log handler copies the task's LogContext (context.py) onto every record,
so the JSON formatter can emit the ids without each call site passing them.
"""

from __future__ import annotations

import logging

from .context import current_span, log_context

CONTEXT_KEYS = ("trace_id", "span_id", "run_id", "flow_id", "step_id", "node_id")

node_id: str | None = None  # set once the node knows its id


class RunContextFilter(logging.Filter):
    """Adds the run's ids to a record (values a call site passed in `extra` win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if node_id is not None and not hasattr(record, "node_id"):
            record.node_id = node_id
        context = log_context.get()
        if context is None:
            return True
        values = {
            "trace_id": context.trace_id,
            "span_id": context.span_id,
            "run_id": context.run_id,
            "flow_id": context.flow_id,
            "step_id": context.step_id,
        }
        span = current_span.get()
        if span is not None:
            span_context = span.get_span_context()
            values["span_id"] = f"{span_context.span_id:016x}"
            values["trace_id"] = f"{span_context.trace_id:032x}"
        for key, value in values.items():
            if value is not None and not hasattr(record, key):
                setattr(record, key, value)
        return True
