"""The executor observer behind traces, step/workflow metrics and the log context of a run.

`run_execution` is one span per executor (root run with its sub-runs); `step` is one span per task
attempt, a child of `run_execution` (a sub-run's steps: of the step that started the sub-run),
current in the step's task while its plugin runs (so the grpc plugin can hand its ids to the worker
and log records carry them). Hooks never suspend.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..errors import FlowResult
from ..executor import INTERRUPTED, RunExecution, RunObserver, TaskStart
from ..model import Step
from ..plugins.base import StepCall
from .context import LogContext, current_span, incoming_traceparent, log_context, run_trace_id
from .context import parse_traceparent as _parse

if TYPE_CHECKING:
    from . import Telemetry
    from .metrics import Metrics
    from .otlp_wire import AttributeValue
    from .tracing import Tracing


@dataclass
class _Run:
    span: Any  # the tree's `run_execution` span (None without tracing)
    started: float  # wall clock, for workflow_duration_seconds
    previous_span: Any = None
    previous_log: LogContext | None = None


# What `attempt_finished` gets back from `attempt_started`: the step span (None without tracing),
# the span current before it, the perf counter at the start, and the component as the flow names
# it (`/python/shout`: one label across plugins). A plain tuple: one is made per step attempt.
_Attempt = tuple[Any, Any, float, str]


@dataclass
class _SubRun:
    previous_log: LogContext | None


@dataclass
class TelemetryObserver(RunObserver):
    tracing: Tracing | None
    metrics: Metrics | None
    owner: Telemetry | None = None  # node id and region, known once the node has started
    # Whether anything reads the run's ids off log records (JSON or OTLP logs); plain text logs
    # do not, and then no LogContext is made per run and per step attempt.
    log_ids: bool = True
    _runs: weakref.WeakKeyDictionary[RunExecution, _Run] = field(
        default_factory=weakref.WeakKeyDictionary
    )
    _sub_runs: weakref.WeakKeyDictionary[RunExecution, _SubRun] = field(
        default_factory=weakref.WeakKeyDictionary
    )

    # -- runs --------------------------------------------------------------------------------------

    async def run_started(self, run: RunExecution) -> None:
        if run.parent is not None:
            if not self.log_ids:
                return
            self._sub_runs[run] = _SubRun(log_context.get())
            outer = log_context.get() or LogContext()
            log_context.set(
                LogContext(run.run_id, run.flow_id, None, outer.trace_id, outer.span_id)
            )
            return
        recovered = run.tree.recovered
        traceparent = recovered.root.traceparent if recovered else incoming_traceparent.get()
        span = None
        if self.tracing is not None:
            attributes: dict[str, str | int | float | bool] = {
                "run_id": run.run_id,
                "max_in_flight": run.tree.max_concurrency,
                "flow_id": run.flow_id or "",
                "stepflow.recovered": recovered is not None,
            }
            owner = self.owner
            if owner is not None and owner.node_id:
                attributes["stepflow.node_id"] = owner.node_id
            if owner is not None and owner.region:
                attributes["stepflow.region"] = owner.region
            span = self.tracing.start_run_span("run_execution", run.run_id, traceparent, attributes)
        started = time.time()
        if recovered is not None and recovered.created_at:
            started = _epoch(recovered.created_at) or started
        elif self.metrics is not None:
            self.metrics.workflow_started.add(1)
        self._runs[run] = _Run(span, started, current_span.get(), log_context.get())
        current_span.set(span)
        if self.log_ids:
            trace_id = _trace_hex(span, traceparent, run.run_id)
            span_hex = f"{span.span_id:016x}" if span is not None else None
            log_context.set(LogContext(run.run_id, run.flow_id, None, trace_id, span_hex))

    async def tasks_started(self, run: RunExecution, tasks: Sequence[TaskStart]) -> None:
        """A recovered tree re-dispatching a journalled in-flight task: a recovery retry."""
        recovered = run.recovered
        if self.metrics is None or recovered is None:
            return
        for task in tasks:
            key = (task.item_index, task.step_index)
            if (
                recovered.in_flight.get(key) == task.task_id
                and task.attempt == recovered.attempts.get(key, 0) + 1
            ):
                component = run.flow.steps[task.step_index].component
                self.metrics.step_retries.add(
                    1, {"reason": "orchestrator_recovery", "component": component}
                )

    async def run_interrupted(self, run: RunExecution) -> None:
        await self.run_completed(run, INTERRUPTED)

    async def run_completed(self, run: RunExecution, status: str) -> None:
        if run.parent is not None:
            sub = self._sub_runs.pop(run, None)
            if sub is not None:
                log_context.set(sub.previous_log)
            return
        info = self._runs.pop(run, None)
        if info is None:
            return
        terminal = status != INTERRUPTED and not run.tree.draining
        if info.span is not None:
            info.span.set_attribute("stepflow.outcome", status if terminal else INTERRUPTED)
            if status == "failed":
                info.span.set_error("run failed")
            info.span.end()
        if terminal and self.metrics is not None:
            attributes = {"outcome": status}
            self.metrics.workflow_executions.add(1, attributes)
            self.metrics.workflow_duration.record(max(0.0, time.time() - info.started), attributes)
        current_span.set(info.previous_span)
        log_context.set(info.previous_log)

    # -- attempts ----------------------------------------------------------------------------------

    def attempt_started(self, run: RunExecution, call: StepCall) -> _Attempt:
        """Runs for every step attempt, as does `attempt_finished`: kept to a few dict and
        attribute operations."""
        step = run.flow.steps_by_id.get(call.step_id)
        component = step.component if step is not None else call.component
        parent = current_span.get()  # the run's span (a sub-run's: the step that started it)
        span = None
        if self.tracing is not None:
            attributes: dict[str, AttributeValue] = {
                "step_id": call.step_id,
                "component": component,
                "run_id": call.run_id,
                "stepflow.task_id": call.task_id,
                "stepflow.attempt": call.attempt,
            }
            span = self.tracing.start_child("step", parent, attributes)
            current_span.set(span)
        if self.log_ids:  # the step's ids for log records (the span id comes from the span)
            outer = log_context.get() or LogContext(run.run_id, run.flow_id)
            log_context.set(
                LogContext(call.run_id, call.flow_id, call.step_id, outer.trace_id, outer.span_id)
            )
        return span, parent, time.perf_counter(), component

    def attempt_finished(
        self, run: RunExecution, call: StepCall, result: FlowResult | None, started: _Attempt
    ) -> None:
        span, parent, perf_start, component = started
        if span is not None:
            attributes = span.attributes  # not ended yet: still only this thread's
            if result is None:
                attributes["stepflow.outcome"] = "cancelled"
            elif result.error is None:
                attributes["stepflow.outcome"] = "success"
            else:
                attributes["stepflow.outcome"] = "failed"
                attributes["stepflow.error_code"] = result.error.code
                span.set_error(result.error.message[:200])
            span.end()
            current_span.set(parent)  # a retry's span is the run's child too, not this one's
        if self.metrics is not None and result is not None:
            seconds = time.perf_counter() - perf_start
            self.metrics.attempt_finished(component, result.error is None, seconds)

    # -- retries -----------------------------------------------------------------------------------

    async def retry_scheduled(
        self, run: RunExecution, step: Step, component: str, reason: str
    ) -> None:
        if self.metrics is not None:
            attributes = {"component": step.component}
            self.metrics.step_retries.add(1, {"reason": reason, **attributes})
            self.metrics.pending_executions.add(1, attributes)

    async def retry_resumed(self, run: RunExecution, step: Step, component: str) -> None:
        if self.metrics is not None:
            self.metrics.pending_executions.add(-1, {"component": step.component})

    async def retries_exhausted(
        self, run: RunExecution, step: Step, component: str, reason: str
    ) -> None:
        if self.metrics is not None:
            attributes = {"reason": reason, "component": step.component}
            self.metrics.step_retries_exhausted.add(1, attributes)


def _trace_hex(span: Any, traceparent: str | None, run_id: str) -> str | None:
    if span is not None:
        return f"{span.get_span_context().trace_id:032x}"
    parsed = _parse(traceparent)
    trace_id = parsed[0] if parsed else run_trace_id(run_id)
    return f"{trace_id:032x}" if trace_id else None


def _epoch(timestamp: str) -> float | None:
    try:
        return datetime.fromisoformat(timestamp).timestamp()
    except ValueError:
        return None
