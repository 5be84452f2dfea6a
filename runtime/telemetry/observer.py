"""The executor observer behind traces, step/workflow metrics and the log context of a run.

`run_execution` is one span per executor (root run with its sub-runs); `step` is one span per task
attempt, a child of `run_execution`, current in the step's task while its plugin runs (so the grpc
plugin can hand its ids to the worker and log records carry them). Hooks never suspend.
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
    from .tracing import Tracing


@dataclass
class _Run:
    span: Any  # the tree's `run_execution` span (None without tracing)
    started: float  # wall clock, for workflow_duration_seconds
    trace_id: str | None  # hex, for log records when tracing is off
    previous_span: Any = None
    previous_log: LogContext | None = None


@dataclass(slots=True)
class _Attempt:
    span: Any
    started: float  # perf counter
    previous_span: Any
    step_log: LogContext


@dataclass
class _SubRun:
    previous_log: LogContext | None


@dataclass
class TelemetryObserver(RunObserver):
    tracing: Tracing | None
    metrics: Metrics | None
    owner: Telemetry | None = None  # node id and region, known once the node has started
    _runs: weakref.WeakKeyDictionary[RunExecution, _Run] = field(
        default_factory=weakref.WeakKeyDictionary
    )
    _sub_runs: weakref.WeakKeyDictionary[RunExecution, _SubRun] = field(
        default_factory=weakref.WeakKeyDictionary
    )
    _attempts: dict[int, _Attempt] = field(default_factory=dict)

    # -- runs --------------------------------------------------------------------------------------

    async def run_started(self, run: RunExecution) -> None:
        if run.parent is not None:
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
        trace_id = _trace_hex(span, traceparent, run.run_id)
        started = time.time()
        if recovered is not None and recovered.created_at:
            started = _epoch(recovered.created_at) or started
        elif self.metrics is not None:
            self.metrics.workflow_started.add(1)
        info = _Run(span, started, trace_id, current_span.get(), log_context.get())
        self._runs[run] = info
        current_span.set(span)
        span_hex = f"{span.get_span_context().span_id:016x}" if span is not None else None
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

    async def attempt_started(self, run: RunExecution, call: StepCall) -> None:
        root = self._runs.get(run.root)
        span = None
        if self.tracing is not None:
            span = self.tracing.start_child(
                "step",
                root.span if root is not None else None,
                {
                    "step_id": call.step_id,
                    "component": _component(run, call),
                    "run_id": call.run_id,
                    "stepflow.task_id": call.task_id,
                    "stepflow.attempt": call.attempt,
                },
            )
        previous_log = log_context.get()
        outer = previous_log or LogContext(run.run_id, run.flow_id)
        # The step's ids for log records; while the step span is current the log filter takes the
        # span id from it, and after the attempt (a retry notice) the run's span id applies.
        step_log = LogContext(
            call.run_id, call.flow_id, call.step_id, outer.trace_id, outer.span_id
        )
        self._attempts[id(call)] = _Attempt(span, time.perf_counter(), current_span.get(), step_log)
        log_context.set(step_log)
        if span is not None:
            current_span.set(span)

    async def attempt_finished(
        self, run: RunExecution, call: StepCall, result: FlowResult | None
    ) -> None:
        attempt = self._attempts.pop(id(call), None)
        if attempt is None:
            return
        seconds = time.perf_counter() - attempt.started
        if attempt.span is not None:
            outcome = "cancelled" if result is None else "success" if result.ok else "failed"
            attempt.span.set_attribute("stepflow.outcome", outcome)
            if result is not None and result.error is not None:
                attempt.span.set_attribute("stepflow.error_code", result.error.code)
                attempt.span.set_error(result.error.message[:200])
            attempt.span.end()
        if self.metrics is not None and result is not None:
            self.metrics.attempt_finished(_component(run, call), result.ok, seconds)
        current_span.set(attempt.previous_span)
        log_context.set(attempt.step_log)  # the step's task: later records keep its ids

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


def _component(run: RunExecution, call: StepCall) -> str:
    """The step's component as the flow names it (`/python/shout`): one label across plugins."""
    step = run.flow.steps_by_id.get(call.step_id)
    return step.component if step is not None else call.component


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
