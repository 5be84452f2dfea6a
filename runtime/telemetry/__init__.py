"""Observability: OpenTelemetry traces and metrics over OTLP/gRPC, and run context on logs.

Off by default. `init()` with traces or metrics enabled creates the recorders and the exporter
thread (tracing.py, instruments.py, exporter.py); until then every
hook below is one global read (`active is None`) and returns. The mesh and other callers use:

- `record_failover(from_node, to_node)` — a run tree taken over from another node;
- `record_step_forwarded(queue_name, target_region)` — a task forwarded to another node;
- `forward_span(target_node, queue_name)` — the `mesh.forward` span around a forward or relay;
- `span(name, attributes)` — any other span around a block (the CLI's `stepflow.submit`);
- `lease_acquired()` / `lease_released()` — the `leases.held` gauge;
- `aio_client_interceptors()` — W3C traceparent on a grpc.aio channel's calls;
- `server_interceptors()` — honour incoming traceparent on a grpc.aio server.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import logs, metrics
from .context import current_parent, current_span, incoming_traceparent, parse_traceparent
from .settings import TelemetrySettings

if TYPE_CHECKING:
    import grpc

    from ..executor import RunObserver
    from ..state.base import StateStore
    from ..state.events import Event
    from ..worker_api.broker import TaskBroker
    from .exporter import OtlpExporter
    from .otlp_wire import AttributeValue
    from .tracing import Tracing

log = logging.getLogger("stepflow.telemetry")

__all__ = [
    "Telemetry",
    "TelemetrySettings",
    "active",
    "aio_client_interceptors",
    "broker_metrics",
    "current_span_ids",
    "current_traceparent",
    "forward_span",
    "init",
    "lease_acquired",
    "lease_released",
    "otlp_log_handler",
    "record_failover",
    "record_step_forwarded",
    "run_observers",
    "server_interceptors",
    "set_node",
    "shutdown",
    "span",
    "sync_client_interceptors",
    "worker_env",
]


class Telemetry:
    """What is switched on in this process."""

    def __init__(self, settings: TelemetrySettings, *, log_context: bool = False) -> None:
        self.settings = settings
        self.log_context = log_context
        self.node_id = settings.node_id
        self.region = settings.region
        self.tracing: Tracing | None = None
        self.metrics: metrics.Metrics | None = None
        self.exporter: OtlpExporter | None = None
        self.log_handler: logging.Handler | None = None
        if not settings.active:
            return
        from ..version import VERSION
        from . import otlp_wire
        from .exporter import OtlpExporter
        from .resource import SCOPE_NAME, make_resource

        resource = make_resource(settings)
        self.exporter = OtlpExporter(settings)
        header = otlp_wire.resource_header(resource, SCOPE_NAME, VERSION)
        if settings.tracing:
            from .tracing import Tracing

            self.tracing = Tracing(self.exporter, header)
        if settings.logs:
            from .log_export import OtlpLogHandler

            self.log_handler = OtlpLogHandler(self.exporter, header)
        if settings.metrics:
            from .instruments import Meter

            meter = Meter(resource, SCOPE_NAME, VERSION)
            self.metrics = metrics.Metrics(settings, meter)
            self.exporter.metrics_source = meter.export_request

    def shutdown(self) -> None:
        """Send what is still queued (SIGTERM, end of a CLI command)."""
        if self.exporter is not None:
            self.exporter.shutdown()

    async def journal_append(
        self, store: StateStore, root_run_id: str, batch: Sequence[Event], owner: str | None
    ) -> list[int]:
        """`store.append` inside a `journal.append` span, timed for the journal.* metrics."""
        span = None
        # Outside a run's span (the write that creates a root run) the caller's span is the parent;
        # without either there is no trace to join yet and the write is not traced.
        parent = current_parent()
        if self.tracing is not None and parent is not None:
            backend = metrics.backend_name(type(store))
            attributes: dict[str, AttributeValue] = {
                "stepflow.events": len(batch),
                "stepflow.backend": backend,
            }
            span = self.tracing.start_child("journal.append", parent, attributes)
        started = time.perf_counter()
        try:
            return await store.append(root_run_id, batch, owner=owner)
        finally:
            if span is not None:
                span.end()
            if self.metrics is not None:
                self.metrics.journal_appended(
                    type(store), time.perf_counter() - started, len(batch)
                )


active: Telemetry | None = None
_settings = TelemetrySettings()  # the last `init`, also when everything is off


def init(settings: TelemetrySettings, *, log_context: bool = False) -> Telemetry | None:
    """Switch telemetry on as `settings` say (replacing an earlier set-up); None when all off.

    `log_context`: keep run ids on log records even without traces or metrics (JSON logs).
    """
    global active, _settings
    shutdown()
    _settings = settings
    logs.node_id = settings.node_id
    if (settings.trace_enabled or settings.metrics_enabled) and not settings.otlp_endpoint:
        log.warning("traces and metrics need --otlp-endpoint; nothing will be exported")
    if settings.logs_otlp and not settings.otlp_endpoint:
        log.warning("--log-destination otlp needs --otlp-endpoint; logging to stderr")
    if not settings.active and not log_context:
        return None
    active = Telemetry(settings, log_context=log_context)
    metrics.current = active.metrics
    return active


def shutdown() -> None:
    """Flush and stop exporting (graceful stop, end of a CLI command)."""
    global active
    current, active = active, None
    metrics.current = None
    if current is not None:
        if current.log_handler is not None:
            logging.getLogger().removeHandler(current.log_handler)
        current.shutdown()


def otlp_log_handler() -> logging.Handler | None:
    """The handler for `--log-destination otlp` (None without an endpoint)."""
    return active.log_handler if active is not None else None


def set_node(node_id: str | None, region: str | None = None) -> None:
    """The node's id (and region) for log records, span and metric attributes."""
    logs.node_id = node_id
    if active is not None:
        active.node_id = node_id
        if region is not None:
            active.region = region
        if active.metrics is not None:
            active.metrics.node_id = node_id or ""


def run_observers() -> list[RunObserver]:
    """Executor observers for a new Runtime (none when everything is off)."""
    if active is None:
        return []
    from .observer import TelemetryObserver

    log_ids = active.log_context or active.log_handler is not None
    return [TelemetryObserver(active.tracing, active.metrics, active, log_ids)]


def broker_metrics(broker: TaskBroker) -> metrics.Metrics | None:
    """The task.*/queue.* recorder for a new broker (None when metrics are off)."""
    if active is None or active.metrics is None:
        return None
    active.metrics.watch_broker(broker)
    return active.metrics


def current_span_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the current `step` (or run) span, for ObservabilityContext."""
    if active is None or active.tracing is None:
        return None
    span = current_span.get()
    if span is None:
        return None
    context = span.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def current_traceparent() -> str | None:
    """The caller's W3C trace context, to journal with a new root run (None when tracing is off)."""
    if active is None or active.tracing is None:
        return None
    return incoming_traceparent.get()


def worker_env() -> dict[str, str]:
    """Env that lets a launched worker export to the same collector (or not, when tracing is
    off here although an endpoint is configured)."""
    return _settings.worker_env()


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    if active is None or active.tracing is None:
        return []
    from .grpc_context import TraceparentServerInterceptor

    return [TraceparentServerInterceptor()]


def aio_client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    if active is None or active.tracing is None:
        return []
    from .grpc_context import aio_client_interceptors as make

    return make()


def sync_client_interceptors() -> list[Any]:
    if active is None or active.tracing is None:
        return []
    from .grpc_context import SyncTraceparentInterceptor

    return [SyncTraceparentInterceptor()]


def adopt_traceparent(header: str | None) -> None:
    """A W3C traceparent that came with a request other than gRPC (REST): the run joins it."""
    if header and parse_traceparent(header) is not None:
        incoming_traceparent.set(header.strip().lower())


def lease_acquired() -> None:
    if active is not None and active.metrics is not None:
        active.metrics.leases_held.add(1, {"node_id": active.metrics.node_id})


def lease_released() -> None:
    if active is not None and active.metrics is not None:
        active.metrics.leases_held.add(-1, {"node_id": active.metrics.node_id})


def record_failover(from_node: str, to_node: str) -> None:
    """A run tree owned by `from_node` was taken over by `to_node` (counted by the new owner)."""
    if active is not None and active.metrics is not None:
        active.metrics.failovers.add(1, {"from_node": from_node, "to_node": to_node})


def record_step_forwarded(queue_name: str, target_region: str) -> None:
    """A task was forwarded to a worker stream on another node."""
    if active is not None and active.metrics is not None:
        active.metrics.steps_forwarded.add(
            1, {"queue_name": queue_name, "target_region": target_region}
        )


@contextlib.contextmanager
def span(
    name: str, attributes: Mapping[str, str | int | float | bool], parent: Any = None
) -> Iterator[None]:
    """A span around the block, current inside it (so `*_client_interceptors()` send its
    traceparent): a child of `parent` (a traceparent), else of the current step span or the
    incoming traceparent, else a new trace. Nothing when tracing is off."""
    if active is None or active.tracing is None:
        yield
        return
    parent = parent or current_parent()
    opened = active.tracing.start_child(name, parent, dict(attributes))
    previous = current_span.get()
    current_span.set(opened)
    try:
        yield
    except BaseException as exc:
        opened.record_exception(exc)
        raise
    finally:
        current_span.set(previous)
        opened.end()


def forward_span(
    target_node: str, queue_name: str, parent_traceparent: str | None = None
) -> contextlib.AbstractContextManager[None]:
    """`mesh.forward` around forwarding a task or relaying a worker call to another node, a child
    of `parent_traceparent` (the forwarded task's step) when given."""
    attributes = {"stepflow.target_node": target_node, "stepflow.queue_name": queue_name}
    return span("mesh.forward", attributes, parent_traceparent)
