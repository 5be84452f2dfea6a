"""Runs flows: the lazy scheduler, the concurrency cap, retries and sub-runs (flows.md §4).

Every step attempt goes through `RunExecution._attempt`, the one dispatch place; observers (the
journal, tracing, progress display) are awaited before a task is dispatched and before its result
is acted on, so the journal can be first. A tree may start from a replayed journal (`recovered`):
completed steps are not re-run, in-flight ones are re-dispatched with their task id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .blobs import BlobStore
from .config import RetryConfig
from .errors import (
    COMPONENT_ERROR,
    COMPONENT_RETRY_CODES,
    TRANSPORT_CODES,
    FlowResult,
    PluginError,
    plugin_failure,
)
from .expressions import Env
from .ids import new_id
from .model import Flow, Step
from .plugins.base import StepCall
from .routing import Route, Router, RoutingError
from .state.replay import RunState, TreeState
from .subflow_keys import subflow_key

log = logging.getLogger("stepflow.executor")

RUNNING, COMPLETED, FAILED, CANCELLED = "running", "completed", "failed", "cancelled"
INTERRUPTED = "interrupted"  # drained before finishing (Ctrl-C); not terminal, resumable


CANCELLED_RESULT = FlowResult.failure("CANCELLED", "Run cancelled")


class StepInterrupted(Exception):
    """A started step that never got a slot before the tree began draining: left in flight."""


@dataclass(frozen=True)
class SubflowOrigin:
    """Where a sub-run came from: the parent step and its deterministic subflow key."""

    item_index: int
    step_index: int
    subflow_key: str


@dataclass(frozen=True)
class TaskStart:
    """One dispatch of one step of one item (journalled before the component is called)."""

    run_id: str
    item_index: int
    step_index: int
    step_id: str
    attempt: int
    task_id: str


class RunObserver:
    """Hooks on the life of a run tree; all no-ops here. Awaited, so a journal can be first.

    Observers hear of a run's end (`run_completed`, `run_interrupted`) in the reverse order of
    its start, as nested scopes close: telemetry, registered first, ends the run's span after the
    journal's final write, which the span then covers."""

    async def run_started(self, run: RunExecution) -> None:
        pass

    async def steps_needed(
        self, run: RunExecution, item_index: int, step_indices: Sequence[int]
    ) -> None:
        pass

    async def steps_unblocked(
        self, run: RunExecution, item_index: int, step_indices: Sequence[int]
    ) -> None:
        """Steps that became runnable because steps they depend on finished."""

    async def tasks_started(self, run: RunExecution, tasks: Sequence[TaskStart]) -> None:
        pass

    async def tasks_completed(
        self, run: RunExecution, item_index: int, finished: Sequence[tuple[Step, FlowResult]]
    ) -> None:
        """Steps of one item whose final results arrived together (one journal write)."""
        for step, result in finished:
            await self.task_completed(run, item_index, step, result)

    async def task_completed(
        self, run: RunExecution, item_index: int, step: Step, result: FlowResult
    ) -> None:
        pass

    async def item_completed(self, run: RunExecution, item_index: int, result: FlowResult) -> None:
        pass

    async def run_completed(self, run: RunExecution, status: str) -> None:
        pass

    async def run_interrupted(self, run: RunExecution) -> None:
        """The run stopped unfinished (drained); it stays resumable, `run_completed` not called."""

    # Step attempts, called (not awaited) in the step's own task, so they cannot suspend: they run
    # around every component call (telemetry: spans, log context, metrics) and must stay cheap.

    def attempt_started(self, run: RunExecution, call: StepCall) -> Any:
        """An attempt holds its slot and is about to reach its plugin. What this returns is
        handed back to `attempt_finished` (per-attempt state without a lookup table)."""
        return None

    def attempt_finished(
        self, run: RunExecution, call: StepCall, result: FlowResult | None, started: Any
    ) -> None:
        """The attempt's plugin answered; `result` is None when it was interrupted/cancelled."""

    async def retry_scheduled(
        self, run: RunExecution, step: Step, component: str, reason: str
    ) -> None:
        """A failed attempt will be retried after a backoff (`reason`: transport_error or
        component_error); `retry_resumed` follows when the backoff ends."""

    async def retry_resumed(self, run: RunExecution, step: Step, component: str) -> None:
        pass

    async def retries_exhausted(
        self, run: RunExecution, step: Step, component: str, reason: str
    ) -> None:
        """A retryable failure with no retry budget left: the result is final."""


@dataclass
class RunTree:
    """What a root run and its sub-runs share: plugins, blobs, the concurrency cap, observers."""

    router: Router
    blobs: BlobStore
    working_dir: Path
    retry: RetryConfig
    max_concurrency: int
    observers: list[RunObserver] = field(default_factory=list)
    recovered: TreeState | None = None

    def __post_init__(self) -> None:
        self.limiter = asyncio.Semaphore(max(1, self.max_concurrency))
        # Set by `drain()`: start nothing new, let in-flight steps finish, leave the run resumable.
        self.draining = False
        # Set by `cancel()`: start nothing new, stop in-flight steps, end the whole tree cancelled.
        self.cancelled = bool(self.recovered and self.recovered.cancel_requested)
        self.step_tasks: set[asyncio.Task[FlowResult]] = set()
        self._observing: dict[str, list[RunObserver]] = {}

    def observing(self, hook: str) -> list[RunObserver]:
        """The observers that implement `hook`: the base class's no-ops are never called, which
        matters on the per-step path (a coroutine per observer per step otherwise)."""
        found = self._observing.get(hook)
        if found is None:
            found = [o for o in self.observers if _implements(type(o), hook)]
            self._observing[hook] = found
        return found

    def drain(self) -> None:
        self.draining = True

    def cancel(self) -> None:
        """Cancel every run of the tree (the caller journals `run_cancel_requested` first)."""
        self.cancelled = True
        for task in list(self.step_tasks):
            task.cancel()

    @property
    def stopping(self) -> bool:
        return self.draining or self.cancelled

    def recovered_run(self, run_id: str) -> RunState | None:
        return self.recovered.runs.get(run_id) if self.recovered else None

    async def notify_tasks_started(self, run: RunExecution, tasks: Sequence[TaskStart]) -> None:
        for obs in self.observing("tasks_started"):
            await obs.tasks_started(run, tasks)


@dataclass
class _StepState:
    """Per (item, step) bookkeeping that survives across retries."""

    task_id: str
    attempt: int = 0
    transport_retries: int = 0
    component_retries: int = 0
    subflow_counter: int = 0


class RunExecution:
    """One run (root or sub-run) of one flow over one or more inputs."""

    def __init__(
        self,
        tree: RunTree,
        flow: Flow,
        inputs: list[Any],
        *,
        run_id: str | None = None,
        flow_id: str | None = None,
        variables: dict[str, Any] | None = None,
        parent: RunExecution | None = None,
        origin: SubflowOrigin | None = None,
        max_concurrency: int | None = None,
    ) -> None:
        self.tree = tree
        self.flow = flow
        self.inputs = inputs
        self.run_id = run_id or new_id()
        self.flow_id = flow_id
        self.variables = variables or {}
        self.parent = parent
        self.origin = origin
        self.max_concurrency = max_concurrency
        self.recovered = tree.recovered_run(self.run_id)
        self.root: RunExecution = parent.root if parent else self
        own = (asyncio.Semaphore(max_concurrency),) if max_concurrency else ()
        self.limiters: tuple[asyncio.Semaphore, ...] = own + (
            parent.limiters if parent else (tree.limiter,)
        )
        self.results: list[FlowResult | None] = [None] * len(inputs)
        self.status = RUNNING
        self._defaults = {
            name: spec.default for name, spec in flow.variables().items() if spec.has_default
        }
        self._known = frozenset(flow.steps_by_id)
        self._output_refs = _transitive_refs(flow, flow.output.step_refs())

    async def execute(self) -> list[FlowResult]:
        """Run every item concurrently; items are independent."""
        for obs in self.tree.observing("run_started"):
            await obs.run_started(self)
        try:
            await asyncio.gather(*(self._run_item(i) for i in range(len(self.inputs))))
        except asyncio.CancelledError:
            self.status = CANCELLED
            await self._tell_ended(
                "run_completed", lambda obs: asyncio.shield(obs.run_completed(self, CANCELLED))
            )
            raise
        results = [r for r in self.results if r is not None]
        if len(results) < len(self.inputs):
            self.status = INTERRUPTED
            await self._tell_ended("run_interrupted", lambda obs: obs.run_interrupted(self))
            return results
        if self.tree.cancelled:
            self.status = CANCELLED
        else:
            self.status = FAILED if any(not r.ok for r in results) else COMPLETED
        status = self.status
        await self._tell_ended("run_completed", lambda obs: obs.run_completed(self, status))
        return results

    async def _tell_ended(
        self, hook: str, notify: Callable[[RunObserver], Awaitable[None]]
    ) -> None:
        """Notify the observers of `hook` in reverse order (see `RunObserver`). Each hears of
        the end even if one before it failed (a span still ends when the final journal write is
        refused); the first failure is raised afterwards."""
        failure: Exception | None = None
        for obs in reversed(self.tree.observing(hook)):
            try:
                await notify(obs)
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    # -- scheduling ---------------------------------------------------------------------------

    def _demanded(self, env: Env) -> list[Step]:
        """Steps needed now: those the output (lazily) needs, transitively, plus mustExecute."""
        stack = list(self.flow.output.needs(env))
        stack += [s.id for s in self.flow.steps if s.must_execute]
        seen: set[str] = set()
        while stack:
            step_id = stack.pop()
            if step_id in seen or step_id not in self._known:
                continue
            seen.add(step_id)
            if step_id not in env.results:
                stack.extend(self.flow.steps_by_id[step_id].input.needs(env))
        return [s for s in self.flow.steps if s.id in seen]

    async def _run_item(self, index: int) -> None:
        if self.recovered and index in self.recovered.item_results:
            self.results[index] = self.recovered.item_results[index]
            return
        results, states = self._recovered_item(index)
        env = Env(
            self.inputs[index], results, self.variables, self._defaults, known_steps=self._known
        )
        running: dict[asyncio.Task[FlowResult], Step] = {}
        announced: set[int] = set()
        try:
            while True:
                progressed = await self._start_ready(index, env, running, states, announced)
                if progressed:
                    continue
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                finished = [
                    (running[task], CANCELLED_RESULT if task.cancelled() else task.result())
                    for task in done
                    if task.cancelled() or not isinstance(task.exception(), StepInterrupted)
                ]
                for task in done:
                    running.pop(task, None)
                finished.sort(key=lambda pair: pair[0].index)
                await self._finish_steps(index, finished, results)
        finally:
            for task in running:
                task.cancel()
        unfinished = self.tree.stopping and any(s.id not in results for s in self._demanded(env))
        if unfinished and not self.tree.cancelled:
            return  # interrupted: no item result, the journal says what is left to do
        result = CANCELLED_RESULT if unfinished else self._item_result(env)
        self.results[index] = result
        for obs in self.tree.observing("item_completed"):
            await obs.item_completed(self, index, result)

    def _recovered_item(self, index: int) -> tuple[dict[str, FlowResult], dict[str, _StepState]]:
        """Results and attempt counters of one item as the journal left them."""
        results: dict[str, FlowResult] = {}
        states: dict[str, _StepState] = {}
        if self.recovered is None:
            return results, states
        steps = self.flow.steps
        for (item, step_index), result in self.recovered.completed.items():
            if item == index and step_index < len(steps):
                results[steps[step_index].id] = result
        for (item, step_index), attempt in self.recovered.attempts.items():
            if item == index and step_index < len(steps):
                task_id = self.recovered.in_flight.get((item, step_index)) or new_id()
                states[steps[step_index].id] = _StepState(task_id=task_id, attempt=attempt)
        return results, states

    async def _start_ready(
        self,
        index: int,
        env: Env,
        running: dict[asyncio.Task[FlowResult], Step],
        states: dict[str, _StepState],
        announced: set[int],
    ) -> bool:
        """Start every demanded step whose inputs are ready; True if any step finished at once."""
        if self.tree.stopping:
            return False
        active = {s.id for s in running.values()}
        demanded = self._demanded(env)
        fresh = [s.index for s in demanded if s.index not in announced]
        if fresh:
            announced.update(fresh)
            for obs in self.tree.observing("steps_needed"):
                await obs.steps_needed(self, index, fresh)
        failed_inputs: list[tuple[Step, FlowResult]] = []
        starts: list[tuple[Step, Any, _StepState]] = []
        for step in demanded:
            if step.id in env.results or step.id in active:
                continue
            if step.input.needs(env) & self._known:
                continue
            resolved = step.input.resolve(env)
            if not resolved.ok:
                failed_inputs.append((step, resolved))
                continue
            state = states.setdefault(step.id, _StepState(task_id=new_id()))
            state.attempt += 1
            starts.append((step, resolved.value, state))
        if starts:
            unblocked = [s.index for s, _, st in starts if st.attempt == 1 and s.dependencies]
            if unblocked:
                for obs in self.tree.observing("steps_unblocked"):
                    await obs.steps_unblocked(self, index, unblocked)
            await self.tree.notify_tasks_started(
                self, [self._task_start(index, s, st) for s, _, st in starts]
            )
            for step, value, state in starts:
                task = asyncio.create_task(self._run_step(index, step, value, state))
                running[task] = step
                self.tree.step_tasks.add(task)
                task.add_done_callback(self.tree.step_tasks.discard)
        if failed_inputs:
            await self._finish_steps(index, failed_inputs, env.results)  # type: ignore[arg-type]
        return bool(failed_inputs)

    def _task_start(self, index: int, step: Step, state: _StepState) -> TaskStart:
        return TaskStart(self.run_id, index, step.index, step.id, state.attempt, state.task_id)

    async def _finish_steps(
        self,
        index: int,
        finished: Sequence[tuple[Step, FlowResult]],
        results: dict[str, FlowResult],
    ) -> None:
        for obs in self.tree.observing("tasks_completed"):
            await obs.tasks_completed(self, index, finished)
        for step, result in finished:
            results[step.id] = result

    def _item_result(self, env: Env) -> FlowResult:
        result = self.flow.output.resolve(env)
        if not result.ok:
            return result
        for step in self.flow.steps:
            if step.must_execute and step.id not in self._output_refs:
                step_result = env.results.get(step.id)
                if step_result is not None and not step_result.ok:
                    return step_result
        return result

    # -- one step ---------------------------------------------------------------------------

    async def _run_step(self, index: int, step: Step, value: Any, state: _StepState) -> FlowResult:
        """Call the component, applying `onError` and both retry budgets (flows.md §3.2)."""
        try:
            route = self.tree.router.resolve(step.component, value)
        except RoutingError as exc:
            return FlowResult.failure(
                "ORCHESTRATOR_ERROR",
                "error routing component",
                {"stack": [{"error": "error routing component", "attachments": [str(exc)]}]},
            )
        retry = self.tree.retry
        while True:
            result = await self._attempt(index, step, value, state, route)
            if result.ok:
                return result
            assert result.error is not None
            if step.on_error.action == "useDefault":
                return FlowResult.success(step.on_error.default_value)
            code = result.error.code
            if code in TRANSPORT_CODES and state.transport_retries < retry.transport_max_retries:
                state.transport_retries += 1
                delay = retry.backoff.delay_seconds(state.transport_retries)
                await route.plugin.prepare_retry()
            elif (
                step.on_error.action == "retry"
                and code in COMPONENT_RETRY_CODES
                and state.component_retries < step.on_error.max_retries
            ):
                state.component_retries += 1
                delay = retry.backoff.delay_seconds(state.component_retries)
            else:
                await self._notify_exhausted(step, route.component, code)
                return result
            if self.tree.stopping:
                return result
            log.info(
                "retrying step %s (attempt %d) after %s: %s",
                step.id, state.attempt + 1, code, result.error.message,
            )  # fmt: skip
            state.attempt += 1
            await self.tree.notify_tasks_started(self, [self._task_start(index, step, state)])
            reason = "transport_error" if code in TRANSPORT_CODES else "component_error"
            for obs in self.tree.observing("retry_scheduled"):
                await obs.retry_scheduled(self, step, route.component, reason)
            try:
                await asyncio.sleep(delay)
            finally:
                for obs in self.tree.observing("retry_resumed"):
                    await obs.retry_resumed(self, step, route.component)

    async def _notify_exhausted(self, step: Step, component: str, code: str) -> None:
        if code in TRANSPORT_CODES:
            reason = "transport_error"
        elif step.on_error.action == "retry" and code in COMPONENT_RETRY_CODES:
            reason = "component_error"
        else:
            return
        for obs in self.tree.observing("retries_exhausted"):
            await obs.retries_exhausted(self, step, component, reason)

    async def _attempt(
        self, index: int, step: Step, value: Any, state: _StepState, route: Route
    ) -> FlowResult:
        call = StepCall(
            run_id=self.run_id,
            root_run_id=self.root.run_id,
            flow_id=self.flow_id,
            step_id=step.id,
            item_index=index,
            attempt=state.attempt,
            task_id=state.task_id,
            component=route.component,
            input=value,
            blobs=self.tree.blobs,
            working_dir=self.tree.working_dir,
            run_subflow=lambda flow, inputs, limit: self._run_subflow(
                flow, inputs, limit, index, step, state
            ),
            route_params=route.rule.params,
            path_params=route.path_params,
            plugin_config=route.plugin.config,
            component_id=route.component_id,
            locality=route.rule.locality,
        )
        async with self._slot():
            if self.tree.cancelled:
                return CANCELLED_RESULT
            if self.tree.draining:
                raise StepInterrupted(step.id)
            observers = self.tree.observing("attempt_started")
            if not observers:
                return await self._call_plugin(route, step, call)
            started = [obs.attempt_started(self, call) for obs in observers]
            result: FlowResult | None = None
            try:
                result = await self._call_plugin(route, step, call)
                return result
            finally:
                for obs, value in zip(observers, started, strict=True):
                    obs.attempt_finished(self, call, result, value)

    @staticmethod
    async def _call_plugin(route: Route, step: Step, call: StepCall) -> FlowResult:
        try:
            return await route.plugin.execute(call)
        except PluginError as exc:
            return plugin_failure(step.id, route.component, exc.detail, exc.category)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("plugin %s failed on step %s", route.plugin.name, step.id)
            return plugin_failure(step.id, route.component, str(exc), COMPONENT_ERROR)

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """Hold one in-flight slot of this run and every enclosing run (innermost first)."""
        acquired: list[asyncio.Semaphore] = []
        try:
            for limiter in self.limiters:
                await limiter.acquire()
                acquired.append(limiter)
            yield
        finally:
            for limiter in reversed(acquired):
                limiter.release()

    async def _run_subflow(
        self,
        flow: Flow,
        inputs: list[Any],
        max_concurrency: int | None,
        index: int,
        step: Step,
        state: _StepState,
    ) -> list[FlowResult]:
        """Run a nested flow in this tree; the waiting step gives up its slots meanwhile.

        The sub-run's key is deterministic per (run, step, n-th sub-run of this execution), so a
        step re-executed after recovery finds the sub-runs it started before the crash.
        """
        key = subflow_key(self.run_id, state.subflow_counter)
        state.subflow_counter += 1
        existing = None
        if self.tree.recovered is not None:
            existing = self.tree.recovered.subflows.get((self.run_id, index, step.index, key))
        previous = self.tree.recovered_run(existing) if existing else None
        if previous is not None and previous.status is not None:
            return [previous.item_results[i] for i in range(len(inputs))]
        child = RunExecution(
            self.tree,
            flow,
            inputs,
            run_id=existing,
            parent=self,
            origin=SubflowOrigin(index, step.index, key),
            max_concurrency=max_concurrency,
        )
        for limiter in self.limiters:
            limiter.release()
        try:
            return await child.execute()
        finally:
            for limiter in self.limiters:
                await limiter.acquire()


def _transitive_refs(flow: Flow, roots: set[str]) -> set[str]:
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        step_id = stack.pop()
        if step_id in seen or step_id not in flow.steps_by_id:
            continue
        seen.add(step_id)
        stack.extend(flow.steps_by_id[step_id].input.step_refs())
    return seen


_PAIRED_HOOKS = {
    "tasks_completed": ("tasks_completed", "task_completed"),
    "attempt_started": ("attempt_started", "attempt_finished"),
}


# A dict rather than functools.cache: mypy rejects class objects as `Hashable` cache arguments.
_implemented: dict[tuple[type, str], bool] = {}


def _implements(observer_type: type, hook: str) -> bool:
    """Whether the class overrides `hook`. Hooks that go together count together: the base
    class's `tasks_completed` calls `task_completed`, and an attempt's two hooks are a pair."""
    found = _implemented.get((observer_type, hook))
    if found is None:
        hooks = _PAIRED_HOOKS.get(hook, (hook,))
        found = any(getattr(observer_type, h) is not getattr(RunObserver, h) for h in hooks)
        _implemented[(observer_type, hook)] = found
    return found
