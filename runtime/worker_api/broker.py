"""Task queues and task tracking for pull workers (worker-protocol.md §3), transport-free.

A dispatched task waits in its queue's FIFO until a worker stream without an unclaimed task can
take it (flow control: a busy worker is not handed more work than it asked for). It is claimed by
its first heartbeat (or completed directly), must keep heartbeating while executing, and ends with
the first result delivered. Timeouts turn into `TIMEOUT` results, which the executor retries with
the same task id and attempt + 1. The gRPC servicer is a thin layer over this class.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import telemetry

log = logging.getLogger("stepflow.workers")

QUEUED, EXECUTING = "queued", "executing"
HEARTBEAT_TIMEOUT_SECS = 5.0
WATCHDOG_INTERVAL_SECS = 0.5
ABORT_MEMORY_SECS = 60.0  # how long a cancelled task keeps answering `should_abort`
# A task forwarded here by another node that no local worker took within this long is dropped:
# its owner times it out and retries it on its own clock.
FOREIGN_QUEUE_SECS = 300.0


class UnknownTask(Exception):
    """The task id is not tracked (never was, already completed, or timed out) → NOT_FOUND."""


class UnknownQueue(Exception):
    """No plugin or route declares this queue → NOT_FOUND."""


class Retired(Exception):
    """The worker was let go (its node is stopping it) and may not reconnect → UNAVAILABLE."""


@dataclass(frozen=True)
class Timeouts:
    queue_secs: float = 30.0
    execution_secs: float | None = None


@dataclass(eq=False)
class TrackedTask:
    task_id: str
    queue: str
    payload: Any  # what the transport sends to the worker (a TaskAssignment)
    timeouts: Timeouts
    result: asyncio.Future[Any]
    run_id: str | None = None
    heartbeats: bool = True  # discovery tasks complete without heartbeats
    phase: str = QUEUED
    worker_id: str | None = None
    stream: WorkerStream | None = None  # delivered to, while unclaimed
    dispatched_at: float = field(default_factory=time.monotonic)
    claimed_at: float | None = None
    last_heartbeat: float | None = None
    abort: bool = False  # the run was cancelled: tell the worker on its next heartbeat
    root_run_id: str | None = None  # whose lease names the owner (relays, forwarding)
    locality: str = "prefer"  # route policy for forwarding: prefer | strict
    forwarded_to: str | None = None  # the node now delivering it to a worker (mesh)
    foreign: bool = False  # forwarded here by the owner node: calls about it are relayed back


@dataclass(eq=False)
class WorkerStream:
    """One open PullTasks stream. `None` in its outbox ends it cleanly (the worker retires)."""

    queue: str
    worker_id: str
    outbox: asyncio.Queue[TrackedTask | None] = field(default_factory=asyncio.Queue)
    unclaimed: set[TrackedTask] = field(default_factory=set)
    opened_at: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class _Queue:
    pending: deque[TrackedTask] = field(default_factory=deque)
    streams: list[WorkerStream] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # streams opened
    turn: itertools.count[int] = field(default_factory=itertools.count)


@dataclass(frozen=True)
class QueueStats:
    depth: int  # tasks not yet claimed by a worker
    workers: int  # open worker streams
    idle_workers: int  # streams without an unclaimed task (could take one now)


class Forwarder(Protocol):
    """Hands tasks no local worker stream can take to another node of the cluster (mesh)."""

    async def forward(self, task: TrackedTask) -> str | None:
        """The id of the node that took the task, or None when none can now."""

    async def capacity_changed(self, queue: str) -> None:
        """Return once the cluster's workers for `queue` may have changed (or after a while)."""


class TaskBroker:
    def __init__(self) -> None:
        self._queues: dict[str, _Queue] = {}
        self._tasks: dict[str, TrackedTask] = {}
        self._watchdog: asyncio.Task[None] | None = None
        # Tasks whose step was cancelled while a worker ran them: heartbeats say `should_abort`.
        self._aborted: dict[str, float] = {}
        self.forwarder: Forwarder | None = None  # set by a cluster node
        self._forwarding: dict[str, asyncio.Task[None]] = {}
        self._retired: set[str] = set()  # worker ids let go: their streams end, none may open
        # Called with the queue name whenever a worker stream opens or closes (the mesh publishes).
        self.on_streams_changed: Callable[[str], None] | None = None
        self.telemetry = telemetry.broker_metrics(self)  # None unless metrics are on

    # -- queues ----------------------------------------------------------------------------------

    def declare_queue(self, name: str) -> None:
        self._queues.setdefault(name, _Queue())

    def has_queue(self, name: str) -> bool:
        return name in self._queues

    def live_streams(self, queue: str) -> int:
        return len(self._queue(queue).streams)

    def task_count(self) -> int:
        """Tasks queued or executing (a node's load)."""
        return len(self._tasks)

    def queue_stats(self) -> dict[str, QueueStats]:
        """Per declared queue: waiting tasks and worker streams (metrics, the mesh directory)."""
        return {
            name: QueueStats(
                depth=len(q.pending) + sum(len(s.unclaimed) for s in q.streams),
                workers=len(q.streams),
                idle_workers=sum(1 for s in q.streams if not s.unclaimed),
            )
            for name, q in self._queues.items()
        }

    def _queue(self, name: str) -> _Queue:
        try:
            return self._queues[name]
        except KeyError:
            raise UnknownQueue(name) from None

    # -- the dispatching side --------------------------------------------------------------------

    async def dispatch(
        self,
        queue: str,
        task_id: str,
        payload: Any,
        timeouts: Timeouts,
        *,
        run_id: str | None = None,
        heartbeats: bool = True,
        root_run_id: str | None = None,
        locality: str = "prefer",
    ) -> Any:
        """Queue a task and wait for its result (whatever the worker's CompleteTask carried).

        Raises TimeoutError with the spec's message when a phase times out.
        """
        self._ensure_watchdog()
        loop = asyncio.get_running_loop()
        task = TrackedTask(task_id, queue, payload, timeouts, loop.create_future(), run_id,
                           heartbeats, root_run_id=root_run_id, locality=locality)  # fmt: skip
        previous = self._tasks.get(task_id)
        if previous is not None:  # a retry of the same task id replaces the old registration
            self._forget(previous)
        self._tasks[task_id] = task
        self._queue(queue).pending.append(task)
        if self.telemetry is not None:
            self.telemetry.task_dispatched(task)
        self._pump(queue)
        try:
            return await task.result
        except asyncio.CancelledError:
            if task.phase == EXECUTING:
                self._aborted[task_id] = time.monotonic()
            raise
        finally:
            if self.telemetry is not None:
                self.telemetry.task_finished(task)
            if self._tasks.get(task_id) is task:
                self._forget(task)

    def abort_run(self, run_id: str) -> None:
        """Cancelled run: executing tasks learn it on their next heartbeat."""
        for task in self._tasks.values():
            if task.run_id == run_id:
                task.abort = True

    # -- tasks forwarded between nodes (mesh) ----------------------------------------------------

    def accept_foreign(self, queue: str, task_id: str, payload: Any, root_run_id: str) -> bool:
        """Queue a task another node dispatched; False when no local worker pulls `queue`."""
        state = self._queues.get(queue)
        if state is None or not state.streams:
            return False
        self._ensure_watchdog()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        task = TrackedTask(task_id, queue, payload, Timeouts(queue_secs=FOREIGN_QUEUE_SECS),
                           future, heartbeats=False, root_run_id=root_run_id,
                           foreign=True)  # fmt: skip
        previous = self._tasks.get(task_id)
        if previous is not None:
            self._forget(previous)
        self._tasks[task_id] = task
        state.pending.append(task)
        self._pump(queue)
        return True

    def foreign_root(self, task_id: str) -> str | None:
        """The root run of a forwarded task this node delivers (its calls go to the owner)."""
        task = self._tasks.get(task_id)
        return task.root_run_id if task is not None and task.foreign else None

    def claim_foreign(self, task_id: str, worker_id: str) -> None:
        """A worker heartbeat for a forwarded task: its stream may take the next task."""
        task = self._tasks.get(task_id)
        if task is not None and task.foreign and task.phase == QUEUED:
            self._claim(task, worker_id, time.monotonic())

    def drop_foreign(self, task_id: str) -> None:
        task = self._tasks.get(task_id)
        if task is not None and task.foreign:
            self._forget(task)

    def _start_forwarding(self, queue: str) -> None:
        if self.forwarder is not None and queue not in self._forwarding:
            self._forwarding[queue] = asyncio.create_task(self._forward_pending(queue))

    async def _forward_pending(self, queue: str) -> None:
        """Offer the queue's waiting tasks to other nodes while no local stream is free."""
        assert self.forwarder is not None
        state = self._queue(queue)
        try:
            while True:
                task = next((t for t in state.pending if not t.foreign), None)
                if task is None or any(not s.unclaimed for s in state.streams):
                    return
                state.pending.remove(task)
                target = await self.forwarder.forward(task)
                if task.result.done() or self._tasks.get(task.task_id) is not task:
                    continue
                if target is not None:
                    task.forwarded_to = target
                    continue
                state.pending.appendleft(task)
                await self.forwarder.capacity_changed(queue)
        except Exception:  # a forwarding bug must not lose tasks: they stay queued here
            log.exception("forwarding tasks of queue %s failed", queue)
        finally:
            del self._forwarding[queue]

    # -- the worker side -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def open_stream(self, queue: str, worker_id: str) -> AsyncIterator[WorkerStream]:
        """A PullTasks stream for its lifetime; its unclaimed tasks go back to the queue head."""
        if worker_id in self._retired:
            raise Retired(f"worker {worker_id} was stopped by its node")
        state = self._queue(queue)
        stream = WorkerStream(queue, worker_id)
        state.streams.append(stream)
        state.changed.set()
        state.changed = asyncio.Event()
        self._pump(queue)
        self._streams_changed(queue)
        try:
            yield stream
        finally:
            state.streams.remove(stream)
            self._streams_changed(queue)
            for task in sorted(stream.unclaimed, key=lambda t: t.dispatched_at, reverse=True):
                task.stream = None
                if not task.result.done() and self._tasks.get(task.task_id) is task:
                    state.pending.appendleft(task)
            stream.unclaimed.clear()
            self._pump(queue)

    def _streams_changed(self, queue: str) -> None:
        if self.on_streams_changed is not None:
            self.on_streams_changed(queue)

    async def wait_for_stream(
        self, queue: str, opened_after: float, timeout: float
    ) -> WorkerStream | None:
        """The first stream opened on the queue after `opened_after` (monotonic), once there is
        one; None after `timeout`."""
        state = self._queue(queue)
        deadline = time.monotonic() + timeout
        while True:
            for stream in state.streams:
                if stream.opened_at > opened_after:
                    return stream
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.changed.wait(), remaining)

    def retire(self, worker_id: str) -> None:
        """End the worker's streams cleanly (status OK) and refuse it from now on: a worker
        its node stops sees the node let it go, not a lost connection (stepflow-py then exits
        quietly instead of warning and retrying). Other workers' streams are left alone."""
        if worker_id in self._retired:
            return
        self._retired.add(worker_id)
        for state in self._queues.values():
            for stream in state.streams:
                if stream.worker_id == worker_id:
                    stream.outbox.put_nowait(None)

    async def wait_for_no_streams(self, queue: str, timeout: float) -> bool:
        """True once no worker stream is open on the queue (shutdown, tests)."""
        state = self._queue(queue)
        deadline = time.monotonic() + timeout
        while state.streams:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def heartbeat(self, task_id: str, worker_id: str) -> tuple[bool, bool]:
        """(should_abort, already_claimed_by_another_worker); claims a queued task."""
        task = self._tasks.get(task_id)
        if task is None and task_id in self._aborted:
            return True, False
        if task is None or task.result.done():
            raise UnknownTask(task_id)
        if task.abort:
            return True, False
        now = time.monotonic()
        if task.phase == QUEUED:
            self._claim(task, worker_id, now)
        elif task.worker_id != worker_id:
            return True, True
        task.last_heartbeat = now
        return False, False

    def complete(self, task_id: str, outcome: Any) -> None:
        """First result wins; later ones (and unknown ids) raise UnknownTask."""
        task = self._tasks.get(task_id)
        if task is None or task.result.done():
            raise UnknownTask(task_id)
        if task.phase == QUEUED:
            self._claim(task, task.worker_id or "", time.monotonic())
        task.result.set_result(outcome)

    # -- internals -------------------------------------------------------------------------------

    def _claim(self, task: TrackedTask, worker_id: str, now: float) -> None:
        task.phase, task.worker_id, task.claimed_at = EXECUTING, worker_id, now
        if task.stream is not None:
            task.stream.unclaimed.discard(task)
            task.stream = None
        elif task in self._queue(task.queue).pending:  # completed before delivery (rare)
            self._queue(task.queue).pending.remove(task)
        self._pump(task.queue)

    def _pump(self, queue: str) -> None:
        """Hand pending tasks to streams that have nothing unclaimed (round robin)."""
        state = self._queues.get(queue)
        if state is None:
            return
        retired = self._retired  # their streams are ending: no more tasks for them
        while state.pending:
            free = [s for s in state.streams if not s.unclaimed and s.worker_id not in retired]
            if not free:
                self._start_forwarding(queue)
                return
            stream = free[next(state.turn) % len(free)]
            task = state.pending.popleft()
            if task.result.done():
                continue
            task.stream = stream
            stream.unclaimed.add(task)
            stream.outbox.put_nowait(task)

    def _forget(self, task: TrackedTask) -> None:
        self._tasks.pop(task.task_id, None)
        state = self._queues.get(task.queue)
        if state is not None and task in state.pending:
            state.pending.remove(task)
        if task.stream is not None:
            task.stream.unclaimed.discard(task)
            task.stream = None
            self._pump(task.queue)
        if not task.result.done():
            task.result.cancel()

    def _ensure_watchdog(self) -> None:
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while self._tasks:
            await asyncio.sleep(WATCHDOG_INTERVAL_SECS)
            now = time.monotonic()
            for task_id, since in list(self._aborted.items()):
                if now - since > ABORT_MEMORY_SECS:
                    del self._aborted[task_id]
            for task in list(self._tasks.values()):
                message = self._expired(task, now)
                if message and task.foreign:
                    self._forget(task)  # its owner times it out itself
                elif message and not task.result.done():
                    log.warning("%s", message)
                    task.result.set_exception(TimeoutError(message))

    @staticmethod
    def _expired(task: TrackedTask, now: float) -> str | None:
        if task.phase == QUEUED:
            if now - task.dispatched_at > task.timeouts.queue_secs:
                return f"task '{task.task_id}' timed out waiting for worker to start"
            return None
        silent_since = task.last_heartbeat or task.claimed_at or now
        if task.heartbeats and now - silent_since > HEARTBEAT_TIMEOUT_SECS:
            return (
                f"task '{task.task_id}' timed out: no heartbeat received (worker presumed crashed)"
            )
        limit = task.timeouts.execution_secs
        if limit is not None and now - (task.claimed_at or now) > limit:
            return f"task '{task.task_id}' exceeded execution timeout"
        return None

    async def close(self) -> None:
        for forwarding in list(self._forwarding.values()):
            forwarding.cancel()
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        for task in list(self._tasks.values()):
            self._forget(task)
