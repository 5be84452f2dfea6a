"""Runs flows: the lazy scheduler, the concurrency cap, retries and sub-runs (flows.md §4).

Every step attempt goes through `RunTree.dispatch`, the one place where observers (the journal,
tracing, progress display) learn that a task started and how it ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
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

log = logging.getLogger("stepflow.executor")

RUNNING, COMPLETED, FAILED, CANCELLED = "running", "completed", "failed", "cancelled"


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
    """Hooks on the life of a run tree; all no-ops here. Awaited, so a journal can be first."""

    async def run_started(self, run: RunExecution) -> None:
        pass

    async def tasks_started(self, run: RunExecution, tasks: Sequence[TaskStart]) -> None:
        pass

    async def task_completed(
        self, run: RunExecution, item_index: int, step: Step, result: FlowResult
    ) -> None:
        pass

    async def item_completed(self, run: RunExecution, item_index: int, result: FlowResult) -> None:
        pass

    async def run_completed(self, run: RunExecution, status: str) -> None:
        pass


@dataclass
class RunTree:
    """What a root run and its sub-runs share: plugins, blobs, the concurrency cap, observers."""

    router: Router
    blobs: BlobStore
    working_dir: Path
    retry: RetryConfig
    max_concurrency: int
    observers: list[RunObserver] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.limiter = asyncio.Semaphore(max(1, self.max_concurrency))

    async def notify_tasks_started(self, run: RunExecution, tasks: Sequence[TaskStart]) -> None:
        for obs in self.observers:
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
        max_concurrency: int | None = None,
    ) -> None:
        self.tree = tree
        self.flow = flow
        self.inputs = inputs
        self.run_id = run_id or new_id()
        self.flow_id = flow_id
        self.variables = variables or {}
        self.parent = parent
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
        for obs in self.tree.observers:
            await obs.run_started(self)
        try:
            await asyncio.gather(*(self._run_item(i) for i in range(len(self.inputs))))
        except asyncio.CancelledError:
            self.status = CANCELLED
            for obs in self.tree.observers:
                await asyncio.shield(obs.run_completed(self, CANCELLED))
            raise
        results = [r for r in self.results if r is not None]
        self.status = FAILED if any(not r.ok for r in results) else COMPLETED
        for obs in self.tree.observers:
            await obs.run_completed(self, self.status)
        return results

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
        results: dict[str, FlowResult] = {}
        env = Env(
            self.inputs[index], results, self.variables, self._defaults, known_steps=self._known
        )
        running: dict[asyncio.Task[FlowResult], Step] = {}
        states: dict[str, _StepState] = {}
        try:
            while True:
                progressed = await self._start_ready(index, env, running, states)
                if progressed:
                    continue
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    step = running.pop(task)
                    await self._finish_step(index, step, task.result(), results)
        finally:
            for task in running:
                task.cancel()
        result = self._item_result(env)
        self.results[index] = result
        for obs in self.tree.observers:
            await obs.item_completed(self, index, result)

    async def _start_ready(
        self,
        index: int,
        env: Env,
        running: dict[asyncio.Task[FlowResult], Step],
        states: dict[str, _StepState],
    ) -> bool:
        """Start every demanded step whose inputs are ready; True if any step finished at once."""
        active = {s.id for s in running.values()}
        finished_now = False
        starts: list[tuple[Step, Any, _StepState]] = []
        for step in self._demanded(env):
            if step.id in env.results or step.id in active:
                continue
            if step.input.needs(env) & self._known:
                continue
            resolved = step.input.resolve(env)
            if not resolved.ok:
                await self._finish_step(index, step, resolved, env.results)  # type: ignore[arg-type]
                finished_now = True
                continue
            state = states.setdefault(step.id, _StepState(task_id=new_id()))
            state.attempt += 1
            starts.append((step, resolved.value, state))
        if starts:
            await self.tree.notify_tasks_started(
                self, [self._task_start(index, s, st) for s, _, st in starts]
            )
            for step, value, state in starts:
                task = asyncio.create_task(self._run_step(index, step, value, state))
                running[task] = step
        return finished_now

    def _task_start(self, index: int, step: Step, state: _StepState) -> TaskStart:
        return TaskStart(self.run_id, index, step.index, step.id, state.attempt, state.task_id)

    async def _finish_step(
        self, index: int, step: Step, result: FlowResult, results: dict[str, FlowResult]
    ) -> None:
        for obs in self.tree.observers:
            await obs.task_completed(self, index, step, result)
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
                return result
            log.info(
                "retrying step %s (attempt %d) after %s: %s",
                step.id, state.attempt + 1, code, result.error.message,
            )  # fmt: skip
            state.attempt += 1
            await self.tree.notify_tasks_started(self, [self._task_start(index, step, state)])
            await asyncio.sleep(delay)

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
            run_subflow=lambda flow, inputs, limit: self._run_subflow(flow, inputs, limit),
            route_params=route.rule.params,
            path_params=route.path_params,
            plugin_config=route.plugin.config,
        )
        async with self._slot():
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
        self, flow: Flow, inputs: list[Any], max_concurrency: int | None
    ) -> list[FlowResult]:
        """Run a nested flow in this tree; the waiting step gives up its slots meanwhile."""
        child = RunExecution(self.tree, flow, inputs, parent=self, max_concurrency=max_concurrency)
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
