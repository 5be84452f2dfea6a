"""The bridge worker: a local config's components, served to nodes over the stepflow.v1 protocol.

`stepflow worker --config FILE --orchestrator HOST:PORT` starts the config's plugins (legacy stdio
servers, MCP servers, mocks, builtins) in a `Runtime`, exactly as a node would in-process, and pulls
tasks for them from a node queue (worker-protocol.md §3, seen from the worker):

- `PullTasks{queue, worker_id}` stays open; when it ends (node restart: UNAVAILABLE, or anything
  else) it is reopened with backoff until the worker is stopped. Every new stream makes the node
  ask for discovery.
- Discovery (`list_components`) is answered with `CompleteTask(list_components)` and no heartbeats:
  one entry per routable component of the worker's config (catalog.py has the id/path mapping).
- An execute task waits for one of `max_concurrent` slots, is claimed with a first TaskHeartbeat
  (only then does the node hand this stream another task), runs while heartbeats go out every
  `heartbeat_interval_secs`, and ends with `CompleteTask(response | error)` to the task's
  `context.orchestrator_service_url`. `should_abort` cancels the execution without a report;
  NOT_FOUND on completion means the node already has a result (or gave up on this attempt).
- Executing routes the task's path through the worker's own router (conditions, allow, deny) and
  calls the plugin with a StepCall exactly like the node's executor does; failures that executor
  would shape (routing errors, plugin-level failures via `plugin_failure`) are shaped the same way
  here, so a step's result is the same whether its plugin runs in the node or behind this bridge.
- Blobs go to the node's BlobService (the task's orchestrator URL, or `STEPFLOW_BLOB_URL`); nested
  flows (`run_subflow`: builtin eval/map/iterate, `flows/evaluate` from stdio servers) need the node
  and fail with WORKER_ERROR.
- `stop()` (SIGTERM): stop pulling, let in-flight tasks finish within the grace (still
  heartbeating and reporting), cancel the rest unreported, close the plugins.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from ...runtime._pb.stepflow.v1 import (
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    tasks_pb2,
    tasks_pb2_grpc,
)
from ...runtime.builtins.base import BuiltinError
from ...runtime.config import Config
from ...runtime.engine import Runtime
from ...runtime.errors import (
    COMPONENT_ERROR,
    TRANSPORT_CODES,
    FlowResult,
    PluginError,
    UserError,
    plugin_failure,
)
from ...runtime.jsonfmt import dumps_compact
from ...runtime.plugins import PLUGIN_TYPES
from ...runtime.plugins.base import ComponentInfo, StepCall
from ...runtime.routing import RoutingError
from ...runtime.worker_api.convert import from_value
from ...runtime.worker_api.endpoint import MAX_MESSAGE_BYTES
from .blobs import RemoteBlobStore
from .catalog import Catalog
from .results import complete_request

if TYPE_CHECKING:
    from ...runtime.model import Flow

log = logging.getLogger("stepflow.bridge")

DEFAULT_QUEUE = "bridge"
DEFAULT_MAX_CONCURRENT = 16
DEFAULT_SHUTDOWN_GRACE_SECS = 10.0
RECONNECT_MIN_SECS = 0.25
RECONNECT_MAX_SECS = 5.0
CALL_TIMEOUT_SECS = 30.0
HEARTBEAT_CALL_TIMEOUT_SECS = 4.0  # under the node's 5 s heartbeat window
CLAIM_ATTEMPTS = 5  # on UNAVAILABLE (node recovering), 1 s apart, like stepflow-py
COMPLETE_RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0)  # on UNAVAILABLE / DEADLINE_EXCEEDED
RETRY_MEMORY = 4096  # task ids whose last attempt here ended with a transport failure
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Detect a vanished node on an idle stream; above the server's 5-minute ping policy.
    ("grpc.keepalive_time_ms", 360_000),
    ("grpc.keepalive_timeout_ms", 20_000),
]
# Plugin types that live in `stepflow_mesh.adapters` and register themselves when imported.
ADAPTER_PLUGIN_MODULES = {
    "mcp": "stepflow_mesh.adapters.mcp_plugin",
    "stepflow": "stepflow_mesh.adapters.stdio_plugin",
}
SUBFLOW_UNAVAILABLE = (
    "nested flows cannot run on a bridge worker (the node runs them); "
    "route this component to the node instead"
)


@dataclass
class BridgeOptions:
    orchestrator: str  # host:port of the node whose queue is pulled
    queue: str = DEFAULT_QUEUE
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    shutdown_grace_secs: float = DEFAULT_SHUTDOWN_GRACE_SECS
    blob_url: str | None = None  # BlobService; default: each task's orchestrator URL
    worker_id: str = field(default_factory=lambda: str(uuid.uuid4()))


class SubflowUnavailable(BuiltinError):
    """`run_subflow` on a bridge: a component result (WORKER_ERROR), never a transport retry."""

    def __init__(self) -> None:
        super().__init__("WORKER_ERROR", SUBFLOW_UNAVAILABLE)


async def _no_subflows(flow: Flow, inputs: list[Any], limit: int | None) -> list[FlowResult]:
    raise SubflowUnavailable()


def normalize_address(address: str) -> str:
    """`http://host:port/` → `host:port` (URLs handed to workers carry no scheme)."""
    for scheme in ("http://", "https://", "grpc://"):
        address = address.removeprefix(scheme)
    return address.rstrip("/")


def load_adapter_plugins(config: Config) -> None:
    """Import the adapter modules of the plugin types the config uses (they register on import)."""
    for name, plugin in config.plugins.items():
        type_name = str(plugin.get("type"))
        module = ADAPTER_PLUGIN_MODULES.get(type_name)
        if module is None or type_name in PLUGIN_TYPES:
            continue
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue  # not shipped: create_plugin reports the unknown type
            raise UserError(
                f"plugin type {type_name!r} cannot be loaded: {exc}",
                f"{config.source or 'config'}: plugins.{name}.type",
            ) from None


def routing_failure(exc: RoutingError) -> FlowResult:
    """What the node's executor makes of a routing error (runtime/executor.py `_run_step`)."""
    return FlowResult.failure(
        "ORCHESTRATOR_ERROR",
        "error routing component",
        {"stack": [{"error": "error routing component", "attachments": [str(exc)]}]},
    )


def _schema_text(schema: Any) -> str | None:
    if schema is None:
        return None
    try:
        return dumps_compact(schema)
    except (TypeError, ValueError):
        return None


class BridgeWorker:
    def __init__(self, config: Config, options: BridgeOptions) -> None:
        if options.max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.config = config
        self.options = options
        self.orchestrator = normalize_address(options.orchestrator)
        self.worker_id = options.worker_id
        self.runtime: Runtime | None = None
        self.catalog = Catalog({}, {})
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._blob_stores: dict[str, RemoteBlobStore] = {}
        self._slots = asyncio.Semaphore(options.max_concurrent)
        self._inflight: set[asyncio.Task[None]] = set()
        self._discoveries: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._immediate = asyncio.Event()
        self._stream_call: Any = None
        self._reconnect = False
        self._transport_failed: OrderedDict[str, str] = OrderedDict()  # task id → plugin name

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the config's plugins and learn their components."""
        load_adapter_plugins(self.config)
        runtime = Runtime(self.config)
        await runtime.start()
        self.runtime = runtime
        for name, plugin in runtime.plugins.items():
            plugin.on_components_changed = self._watch_components(
                name, plugin.on_components_changed
            )
        self._rebuild_catalog()
        log.info(
            "bridge worker %s serves %d component(s): %s",
            self.worker_id, len(self.catalog.entries),
            ", ".join(e.path for e in self.catalog.entries) or "none",
        )  # fmt: skip

    def _watch_components(self, name: str, previous: Any) -> Any:
        def changed(found: list[ComponentInfo]) -> None:
            runtime = self.runtime
            if runtime is None:
                return
            if previous is not None:  # the runtime's own hook (it rebuilds the router)
                previous(found)
            else:
                runtime._rediscovered(name, found)
            announced = self.catalog.entries
            self._rebuild_catalog()
            if self.catalog.entries != announced:
                # Nodes discover on each new stream: reopening it announces the new list.
                log.info("plugin %s changed its components; announcing them again", name)
                self._request_reconnect()

        return changed

    def _rebuild_catalog(self) -> None:
        assert self.runtime is not None
        self.catalog = Catalog(self.config.routes, self.runtime.components)

    def stop(self, *, immediate: bool = False) -> None:
        """Stop pulling; in-flight tasks get the grace (none with `immediate`)."""
        self._stopping.set()
        if immediate:
            self._immediate.set()

    async def run(self) -> None:
        await self.start()
        try:
            await self.serve()
        finally:
            await self.close()

    async def serve(self) -> None:
        """Pull and execute tasks until `stop()`, then drain in-flight tasks."""
        if self.runtime is None:
            raise RuntimeError("BridgeWorker.start() has not been called")
        puller = asyncio.create_task(self._pull_loop(), name="bridge-pull")
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({puller, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            puller.cancel()
            [pulled] = await asyncio.gather(puller, return_exceptions=True)
            await self._drain()
        if isinstance(pulled, Exception):  # a bug, not a lost connection: surface it
            raise pulled

    async def _drain(self) -> None:
        for task in list(self._discoveries):
            task.cancel()
        loop = asyncio.get_running_loop()
        pending = set(self._inflight)
        if pending and not self._immediate.is_set():
            grace = self.options.shutdown_grace_secs
            log.info("waiting up to %.1f s for %d in-flight task(s)", grace, len(pending))
            deadline = loop.time() + grace
            immediate = asyncio.create_task(self._immediate.wait())
            try:
                while pending and not immediate.done():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    done, _ = await asyncio.wait(
                        {*pending, immediate}, timeout=remaining,
                        return_when=asyncio.FIRST_COMPLETED,
                    )  # fmt: skip
                    pending -= done
            finally:
                immediate.cancel()
        leftover = [t for t in self._inflight if not t.done()]
        if leftover:
            log.warning("cancelling %d unfinished task(s) without reporting them", len(leftover))
            for task in leftover:
                task.cancel()
        await asyncio.gather(*self._inflight, *self._discoveries, return_exceptions=True)
        log.info("no task in flight; closing the plugins")

    async def close(self) -> None:
        runtime, self.runtime = self.runtime, None
        if runtime is not None:
            await runtime.close()
        channels, self._channels = self._channels, {}
        self._blob_stores.clear()
        for channel in channels.values():
            await channel.close()
        log.info("bridge worker %s stopped", self.worker_id)

    # -- connections -----------------------------------------------------------------------------

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            self._channels[address] = channel
        return channel

    def _orchestrator(self, address: str) -> Any:
        return orchestrator_pb2_grpc.OrchestratorServiceStub(self._channel(address))  # type: ignore[no-untyped-call]

    def _blobs(self, task_address: str) -> RemoteBlobStore:
        address = normalize_address(self.options.blob_url or task_address)
        store = self._blob_stores.get(address)
        if store is None:
            store = RemoteBlobStore(self._channel(address), address)
            self._blob_stores[address] = store
        return store

    def _task_address(self, context: Any) -> str:
        return normalize_address(context.orchestrator_service_url or self.orchestrator)

    # -- the stream ------------------------------------------------------------------------------

    def _request_reconnect(self) -> None:
        call = self._stream_call
        if call is not None:
            self._reconnect = True
            call.cancel()

    async def _pull_loop(self) -> None:
        delay = RECONNECT_MIN_SECS
        quiet = False  # after the first failure in a row, further ones are logged at debug
        stub: Any = tasks_pb2_grpc.TasksServiceStub(self._channel(self.orchestrator))  # type: ignore[no-untyped-call]
        request = tasks_pb2.PullTasksRequest(
            queue_name=self.options.queue, worker_id=self.worker_id
        )
        while not self._stopping.is_set():
            received = False
            problem = "stream ended"
            call = stub.PullTasks(request)
            self._stream_call, self._reconnect = call, False
            try:
                async for assignment in call:
                    if not received:
                        received, quiet, delay = True, False, RECONNECT_MIN_SECS
                        log.info(
                            "pulling queue %s from %s as worker %s",
                            self.options.queue, self.orchestrator, self.worker_id,
                        )  # fmt: skip
                    await self._accept(assignment)
            except grpc.aio.AioRpcError as exc:
                problem = f"{exc.code().name}: {exc.details()}"
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not self._reconnect or (current is not None and current.cancelling()):
                    raise
                problem = "reconnecting to announce changed components"
            except Exception as exc:  # never let one bad message end the worker
                log.exception("task stream from %s failed", self.orchestrator)
                problem = f"{type(exc).__name__}: {exc}"
            finally:
                self._stream_call = None
                call.cancel()
            if self._stopping.is_set():
                return
            if self._reconnect:
                continue
            level = logging.DEBUG if quiet else logging.WARNING
            log.log(
                level, "task stream from %s (queue %s): %s; reconnecting in %.2f s",
                self.orchestrator, self.options.queue, problem, delay,
            )  # fmt: skip
            quiet = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, RECONNECT_MAX_SECS)

    async def _accept(self, assignment: Any) -> None:
        kind = assignment.WhichOneof("task")
        if kind == "list_components":
            discovery = asyncio.create_task(self._answer_discovery(assignment))
            self._discoveries.add(discovery)
            discovery.add_done_callback(self._discoveries.discard)
        elif kind == "execute":
            # A slot before the claim: a busy bridge leaves its next task to other workers.
            await self._slots.acquire()
            task = asyncio.create_task(self._run_task(assignment))
            self._inflight.add(task)
            task.add_done_callback(self._task_done)
        else:
            log.warning("ignoring task %s of unknown kind", assignment.task_id)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("task handler failed", exc_info=task.exception())

    # -- discovery -------------------------------------------------------------------------------

    def component_infos(self) -> list[Any]:
        infos = []
        for entry in self.catalog.entries:
            fields: dict[str, Any] = {"component_id": entry.component_id, "path": entry.path}
            if entry.info.description is not None:
                fields["description"] = entry.info.description
            for key, schema in (
                ("input_schema", entry.info.input_schema),
                ("output_schema", entry.info.output_schema),
            ):
                text = _schema_text(schema)
                if text is not None:
                    fields[key] = text
            infos.append(tasks_pb2.ComponentInfo(**fields))
        return infos

    async def _answer_discovery(self, assignment: Any) -> None:
        request = orchestrator_pb2.CompleteTaskRequest(
            task_id=assignment.task_id,
            list_components=orchestrator_pb2.ListComponentsResult(
                components=self.component_infos()
            ),
        )
        await self._complete(self._task_address(assignment.context), request)

    # -- execution -------------------------------------------------------------------------------

    async def _run_task(self, assignment: Any) -> None:
        task_id = str(assignment.task_id)
        request = assignment.execute
        address = self._task_address(assignment.context)
        run_id = str(request.observability.run_id) or None
        stub = self._orchestrator(address)
        if not await self._claim(stub, task_id, run_id):
            return
        log.debug(
            "claimed task %s (run %s, step %s, attempt %d): %s",
            task_id, run_id, request.observability.step_id, request.attempt, request.component_id,
        )  # fmt: skip
        interval = float(assignment.heartbeat_interval_secs or 1)
        work = asyncio.create_task(
            self._execute(task_id, request, str(assignment.context.root_run_id), address)
        )
        aborted = asyncio.Event()
        beats = asyncio.create_task(
            self._heartbeats(stub, task_id, run_id, interval, work, aborted)
        )
        try:
            result = await work
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if aborted.is_set() and current is not None and not current.cancelling():
                log.info(
                    "task %s aborted by the node (run cancelled or claimed elsewhere)", task_id
                )
                return
            raise
        finally:
            beats.cancel()
        await self._complete(address, complete_request(task_id, result, run_id))

    def _heartbeat_request(self, task_id: str, run_id: str | None) -> Any:
        request = orchestrator_pb2.TaskHeartbeatRequest(task_id=task_id, worker_id=self.worker_id)
        if run_id:
            request.run_id = run_id
        return request

    async def _claim(self, stub: Any, task_id: str, run_id: str | None) -> bool:
        request = self._heartbeat_request(task_id, run_id)
        for attempt in range(1, CLAIM_ATTEMPTS + 1):
            try:
                response = await stub.TaskHeartbeat(request, timeout=CALL_TIMEOUT_SECS)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE and attempt < CLAIM_ATTEMPTS:
                    await asyncio.sleep(1.0)
                    continue
                log.warning("could not claim task %s: %s", task_id, exc.code().name)
                return False
            if response.should_abort:
                log.info("task %s is not ours to run (aborted or claimed elsewhere)", task_id)
                return False
            return True
        return False

    async def _heartbeats(
        self,
        stub: Any,
        task_id: str,
        run_id: str | None,
        interval: float,
        work: asyncio.Task[FlowResult],
        aborted: asyncio.Event,
    ) -> None:
        request = self._heartbeat_request(task_id, run_id)
        while not work.done():
            await asyncio.wait({work}, timeout=interval)
            if work.done():
                return
            try:
                response = await stub.TaskHeartbeat(request, timeout=HEARTBEAT_CALL_TIMEOUT_SECS)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    # Completed or timed out on the node: our result may still land (first wins).
                    log.debug("task %s is no longer tracked; heartbeats stop", task_id)
                    return
                log.debug("heartbeat for task %s failed: %s", task_id, exc.code().name)
                continue
            if response.should_abort:
                aborted.set()
                work.cancel()
                return

    async def _execute(
        self, task_id: str, request: Any, root_run_id: str, address: str
    ) -> FlowResult:
        """One attempt, as the node's executor would run it in-process (`_attempt`)."""
        runtime = self.runtime
        assert runtime is not None
        observability = request.observability
        step_id = str(observability.step_id)
        step_input = from_value(request.input)
        path = self.catalog.target_path(request.component_id, dict(request.path_params))
        try:
            route = runtime.router.resolve(path, step_input)
        except RoutingError as exc:
            return routing_failure(exc)
        await self._prepare_retry(task_id, request.attempt)
        run_id = str(observability.run_id)
        call = StepCall(
            run_id=run_id,
            root_run_id=root_run_id or run_id,
            flow_id=str(observability.flow_id) or None,
            step_id=step_id,
            item_index=0,  # not carried by the protocol
            attempt=int(request.attempt) or 1,
            task_id=task_id,
            component=route.component,
            input=step_input,
            blobs=self._blobs(address),
            working_dir=self.config.working_dir,
            run_subflow=_no_subflows,
            route_params=route.rule.params,
            path_params=route.path_params,
            plugin_config=route.plugin.config,
            component_id=route.component_id,
        )
        try:
            result = await route.plugin.execute(call)
        except SubflowUnavailable as exc:
            result = FlowResult.failure(exc.code, exc.message)
        except PluginError as exc:
            result = plugin_failure(step_id, route.component, exc.detail, exc.category)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("plugin %s failed on step %s", route.plugin.name, step_id)
            result = plugin_failure(step_id, route.component, str(exc), COMPONENT_ERROR)
        if result.error is not None and result.error.code in TRANSPORT_CODES:
            self._transport_failed[task_id] = route.plugin.name
            while len(self._transport_failed) > RETRY_MEMORY:
                self._transport_failed.popitem(last=False)
        return result

    async def _prepare_retry(self, task_id: str, attempt: int) -> None:
        """The node retries a transport failure; in-process it would call `prepare_retry` first."""
        plugin_name = self._transport_failed.pop(task_id, None)
        if plugin_name is None or attempt <= 1 or self.runtime is None:
            return
        plugin = self.runtime.plugins.get(plugin_name)
        if plugin is None:
            return
        try:
            await plugin.prepare_retry()
        except Exception:
            log.exception("plugin %s failed to prepare a retry", plugin_name)

    async def _complete(self, address: str, request: Any) -> None:
        """Deliver a result; UNAVAILABLE is retried, NOT_FOUND means the node is done with it."""
        stub = self._orchestrator(address)
        for delay in (*COMPLETE_RETRY_DELAYS, None):
            try:
                await stub.CompleteTask(request, timeout=CALL_TIMEOUT_SECS)
                return
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.NOT_FOUND:
                    log.debug("task %s was already finished on the node", request.task_id)
                    return
                retriable = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                if not retriable or delay is None:
                    log.warning(
                        "could not deliver the result of task %s to %s: %s: %s",
                        request.task_id, address, code.name, exc.details(),
                    )  # fmt: skip
                    return
            await asyncio.sleep(delay)
