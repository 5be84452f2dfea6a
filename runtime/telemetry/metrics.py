"""Metrics (meter `stepflow`, durability.md §14) and the cheap hooks that record them.

`current` is None unless metrics are enabled; every hook checks it first, so a disabled process
pays one global read per hook and creates no instrument. Aggregation: instruments.py.
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from .instruments import Attributes, Meter, Series, SeriesKey
from .settings import TelemetrySettings

if TYPE_CHECKING:
    from ..blobs import Blob, BlobStore
    from ..worker_api.broker import TaskBroker, TrackedTask

SECONDS_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
BYTES_BUCKETS = (64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 16777216.0)
BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0)
UNHEALTHY_AFTER = 5  # consecutive failed attempts of one component


class Metrics:
    def __init__(self, settings: TelemetrySettings, meter: Meter) -> None:
        self.node_id = settings.node_id or ""
        self._brokers: weakref.WeakSet[TaskBroker] = weakref.WeakSet()
        self._failures: dict[str, int] = {}  # component → consecutive failed attempts
        # component → its step.duration_seconds series (failed, success), made at first record
        self._attempt_series: dict[str, list[Series | None]] = {}
        self._journal_series: dict[type, tuple[Series, Series]] = {}  # store class → (time, size)
        self._keys: dict[str, dict[str, SeriesKey]] = {}  # attribute name → value → series key
        counter = meter.counter

        def histogram(
            name: str, description: str, unit: str = "s", buckets: Iterable[float] = SECONDS_BUCKETS
        ) -> Any:
            return meter.histogram(name, description, buckets, unit)

        self.workflow_executions = counter(
            "workflow_executions_total", "Root runs that reached a terminal status"
        )
        self.workflow_duration = histogram(
            "workflow_duration_seconds", "Root run duration, creation to completion"
        )
        self.workflow_started = counter("workflow_started_total", "Root runs started")
        self.step_duration = histogram("step.duration_seconds", "Duration of one step attempt")
        meter.count_of(self.step_duration, "step.executions_total", "Step attempts by outcome")
        self.step_retries = counter("step.retries_total", "Step attempts that will be retried")
        self.step_retries_exhausted = counter(
            "step.retries_exhausted_total", "Retryable step failures with no retry budget left"
        )
        self.pending_executions = meter.up_down_counter(
            "stepflow_pending_component_executions", "Component executions waiting for a retry"
        )
        self.task_queue_duration = histogram(
            "task.queue_duration_seconds", "Task wait from dispatch to claim by a worker"
        )
        self.task_execution_duration = histogram(
            "task.execution_duration_seconds", "Task run time from claim to completion"
        )
        self.task_queue_timeouts = counter("task.queue_timeout_total", "Tasks no worker claimed")
        self.task_execution_timeouts = counter(
            "task.execution_timeout_total", "Tasks that timed out while executing"
        )
        self.task_successes = counter("task.success_total", "Tasks completed successfully")
        self.task_failures = counter("task.failure_total", "Tasks completed with an error")
        self.tasks_dispatched = counter("task.dispatched_total", "Tasks put on a queue")
        meter.observed_up_down_counter(
            "queue.depth", "Tasks waiting for a worker to claim them", self._observe_depth
        )
        meter.observed_up_down_counter(
            "queue.connected_workers", "Open PullTasks streams", self._observe_workers
        )
        self.blob_put_bytes = counter("blob_store.put.bytes", "Bytes written", unit="By")
        self.blob_get_bytes = counter("blob_store.get.bytes", "Bytes read", unit="By")
        self.blob_put_duration = histogram("blob_store.put.duration", "Blob write latency")
        self.blob_get_duration = histogram("blob_store.get.duration", "Blob read latency")
        self.blob_size = histogram(
            "blob_store.blob_size", "Size of written blobs", unit="By", buckets=BYTES_BUCKETS
        )
        self.component_unhealthy = counter(
            "component.unhealthy_total", f"Components that failed {UNHEALTHY_AFTER} times in a row"
        )
        self.journal_append_duration = histogram(
            "journal.append_duration_seconds", "Latency of one journal write batch"
        )
        self.journal_batch_size = histogram(
            "journal.append_batch_size", "Events per journal write", unit="1", buckets=BATCH_BUCKETS
        )
        self.leases_held = meter.up_down_counter("leases.held", "Run tree leases held by this node")
        self.failovers = counter("failovers_total", "Run trees taken over from another node")
        self.steps_forwarded = counter(
            "steps.forwarded_total", "Tasks forwarded to another node's workers"
        )

    # -- observable instruments --------------------------------------------------------------------

    def watch_broker(self, broker: TaskBroker) -> None:
        self._brokers.add(broker)

    def _queue_stats(self) -> dict[str, tuple[int, int]]:
        totals: dict[str, tuple[int, int]] = {}
        for broker in list(self._brokers):
            for queue, stats in broker.queue_stats().items():
                d, w = totals.get(queue, (0, 0))
                totals[queue] = (d + stats.depth, w + stats.workers)
        return totals

    def _observe_depth(self) -> list[tuple[float, Attributes]]:
        return [(d, {"queue_name": q}) for q, (d, _) in self._queue_stats().items()]

    def _observe_workers(self) -> list[tuple[float, Attributes]]:
        return [(w, {"queue_name": q}) for q, (_, w) in self._queue_stats().items()]

    # -- steps -------------------------------------------------------------------------------------

    def attempt_finished(self, component: str, ok: bool, seconds: float) -> None:
        """Called for every step attempt: the series is looked up by the component string alone."""
        by_outcome = self._attempt_series.get(component)
        if by_outcome is None:
            by_outcome = self._attempt_series[component] = [None, None]
        series = by_outcome[ok]
        if series is None:
            attributes = (("component", component), ("outcome", "success" if ok else "failed"))
            series = by_outcome[ok] = self.step_duration.series(attributes)
        series.record(seconds)  # also counts step.executions_total
        if ok:
            if self._failures:
                self._failures.pop(component, None)
            return
        count = self._failures.get(component, 0) + 1
        self._failures[component] = count
        if count == UNHEALTHY_AFTER:
            self.component_unhealthy.add(1, {"component": component})

    # -- journal -----------------------------------------------------------------------------------

    def journal_appended(self, store_type: type, seconds: float, events: int) -> None:
        """One journal write (every write of every run): its series are looked up by store class."""
        series = self._journal_series.get(store_type)
        if series is None:
            key = (("backend", backend_name(store_type)),)
            series = self._journal_series[store_type] = (
                self.journal_append_duration.series(key),
                self.journal_batch_size.series(key),
            )
        duration, size = series
        duration.record(seconds)
        size.record(events)

    # -- tasks -------------------------------------------------------------------------------------

    def task_dispatched(self, task: TrackedTask) -> None:
        self.tasks_dispatched.add(1, self._key("queue_name", task.queue))

    def task_finished(self, task: TrackedTask) -> None:
        """Called as `dispatch` returns: result, timeout, or cancelled (not counted)."""
        component = _component(task.payload)
        future = task.result
        if component is None or not future.done() or future.cancelled():
            return
        key = self._key("component", component)
        now = time.monotonic()
        if task.claimed_at is not None:
            self.task_queue_duration.record(task.claimed_at - task.dispatched_at, key)
        error = future.exception()
        if isinstance(error, TimeoutError):
            if task.claimed_at is None:
                self.task_queue_timeouts.add(1, key)
            else:
                self.task_execution_timeouts.add(1, key)
            return
        if error is not None:
            return
        from ..worker_api.outcomes import Success

        if task.claimed_at is not None:
            self.task_execution_duration.record(now - task.claimed_at, key)
        if isinstance(future.result(), Success):
            self.task_successes.add(1, key)
        else:
            self.task_failures.add(1, key)

    def _key(self, name: str, value: str) -> SeriesKey:
        """The series key `{name: value}`, built once per value (a task records several points)."""
        by_value = self._keys.setdefault(name, {})
        key = by_value.get(value)
        if key is None:
            key = by_value[value] = ((name, value),)
        return key

    # -- blobs -------------------------------------------------------------------------------------

    def blob_put(self, size: int, blob_type: str, seconds: float) -> None:
        attributes = {"blob_type": blob_type}
        self.blob_put_bytes.add(size, attributes)
        self.blob_size.record(size, attributes)
        self.blob_put_duration.record(seconds, attributes)

    def blob_get(self, blob: Blob | None, seconds: float) -> None:
        attributes = {"blob_type": blob.blob_type if blob is not None else "unknown"}
        if blob is not None:
            self.blob_get_bytes.add(len(blob.data), attributes)
        self.blob_get_duration.record(seconds, attributes)


@functools.cache
def backend_name(store_type: type) -> str:
    """The journal's `backend` attribute: the store class's name (`sqlite`, `etcd`)."""
    name = store_type.__name__
    return name.removesuffix("StateStore").lower() or name.lower()


def _component(payload: Any) -> str | None:
    """The component of a TaskAssignment that executes one (None for discovery)."""
    try:
        if payload.WhichOneof("task") == "execute":
            return str(payload.execute.component_id)
    except (AttributeError, ValueError):
        pass
    return None


current: Metrics | None = None


def meter_blob_store(cls: type[BlobStore]) -> None:
    """Wraps a BlobStore class's own `put`/`get` with the blob_store.* instruments."""
    put = cls.__dict__.get("put")
    if put is not None and not getattr(put, "_stepflow_metered", False):
        setattr(cls, "put", _metered_put(put))  # noqa: B010 - wraps a method of any store
    get = cls.__dict__.get("get")
    if get is not None and not getattr(get, "_stepflow_metered", False):
        setattr(cls, "get", _metered_get(get))  # noqa: B010


def _metered_put(
    fn: Callable[[Any, bytes, str], Awaitable[str]],
) -> Callable[[Any, bytes, str], Awaitable[str]]:
    @functools.wraps(fn)
    async def put(self: Any, data: bytes, blob_type: str) -> str:
        metrics = current
        if metrics is None:
            return await fn(self, data, blob_type)
        started = time.perf_counter()
        blob_id = await fn(self, data, blob_type)
        metrics.blob_put(len(data), blob_type, time.perf_counter() - started)
        return blob_id

    put._stepflow_metered = True  # type: ignore[attr-defined]
    return put


def _metered_get(
    fn: Callable[[Any, str], Awaitable[Blob | None]],
) -> Callable[[Any, str], Awaitable[Blob | None]]:
    @functools.wraps(fn)
    async def get(self: Any, blob_id: str) -> Blob | None:
        metrics = current
        if metrics is None:
            return await fn(self, blob_id)
        started = time.perf_counter()
        blob = await fn(self, blob_id)
        metrics.blob_get(blob, time.perf_counter() - started)
        return blob

    get._stepflow_metered = True  # type: ignore[attr-defined]
    return get
