"""Plugin `type: grpc`: components served by pull workers over stepflow.v1 (worker-protocol.md §4).

Steps become tasks on the plugin's queue (or a route's `queueName`); any worker pulling that queue
may run them. With `command`, the plugin launches and supervises the worker process itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from .. import telemetry
from ..errors import FlowResult, PluginError, UserError
from . import register_plugin_type
from .base import ComponentInfo, Plugin, StepCall

log = logging.getLogger("stepflow.plugins.grpc")

CONNECT_TIMEOUT_SECS = 30.0
DISCOVERY_TIMEOUT_SECS = 5.0
# SIGTERM → SIGKILL delay: by the time plugins close, the node has drained its in-flight tasks.
WORKER_STOP_SECS = 2.0
_discovery_ids = itertools.count(1)


def _positive(config: dict[str, Any], key: str, where: str, default: float | None) -> float | None:
    value = config.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 1:
        raise UserError("must be a number ≥ 1", f"{where}.{key}")
    return float(value)


class GrpcPlugin(Plugin):
    needs_worker_endpoint = True
    accepts_unlisted_components = True

    def __init__(self, name: str, config: dict[str, Any], working_dir: Path) -> None:
        super().__init__(name, config, working_dir)
        where = f"plugins.{name}"
        queue = config.get("queueName")
        if not isinstance(queue, str) or not queue:
            raise UserError("a grpc plugin needs a non-empty string", f"{where}.queueName")
        self.queue = queue
        from ..worker_api.broker import Timeouts

        queue_timeout = _positive(config, "queueTimeoutSecs", where, 30.0)
        self.timeouts = Timeouts(
            queue_secs=queue_timeout or 30.0,
            execution_secs=_positive(config, "executionTimeoutSecs", where, None),
        )
        self.command = config.get("command")
        if self.command is not None and not isinstance(self.command, str):
            raise UserError("expected a string", f"{where}.command")
        self.args = config.get("args") or []
        if not isinstance(self.args, list) or not all(isinstance(a, str) for a in self.args):
            raise UserError("expected a list of strings", f"{where}.args")
        self.env = config.get("env") or {}
        if not isinstance(self.env, dict):
            raise UserError("expected a map of strings", f"{where}.env")
        self._components: list[ComponentInfo] = []
        self._process: asyncio.subprocess.Process | None = None
        self._worker_id: str | None = None  # the launched worker's, from its PullTasks stream
        self._discovering: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        endpoint = self.worker_endpoint
        endpoint.broker.declare_queue(self.queue)
        endpoint.on_new_stream(self.queue, self._schedule_discovery)
        if self.command:
            await self._launch()  # its new stream schedules discovery; wait for the answer
            if self._discovering is not None:
                await asyncio.shield(self._discovering)

    async def _launch(self) -> None:
        """(Re)start the worker process and wait for its own PullTasks stream."""
        await self._stop_process()
        endpoint = self.worker_endpoint
        env = {
            **os.environ,
            "STEPFLOW_TRANSPORT": "grpc",
            "STEPFLOW_TASKS_URL": endpoint.address,
            "STEPFLOW_QUEUE_NAME": self.queue,
            "STEPFLOW_BLOB_URL": endpoint.address,
            **telemetry.worker_env(),
            **{str(k): str(v) for k, v in self.env.items()},
        }
        started = time.monotonic()
        try:
            self._process = await asyncio.create_subprocess_exec(
                str(self.command), *self.args, cwd=self.working_dir, env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            raise UserError(
                f"cannot start worker '{self.command}': {exc.strerror}", f"plugins.{self.name}"
            ) from None
        log.info("started worker for queue %s (pid %d)", self.queue, self._process.pid)
        await self._wait_for_connection(self._process, started)

    async def _wait_for_connection(
        self, process: asyncio.subprocess.Process, started: float
    ) -> None:
        """Until the worker's own stream opens. A worker that exits first (a missing module, a
        bad command) fails at once with its exit code, not after the connect timeout."""
        connecting = asyncio.ensure_future(
            self.worker_endpoint.broker.wait_for_stream(self.queue, started, CONNECT_TIMEOUT_SECS)
        )
        exiting = asyncio.ensure_future(process.wait())
        try:
            done, _ = await asyncio.wait({connecting, exiting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            connecting.cancel()
            exiting.cancel()
        stream = connecting.result() if connecting in done else None
        if stream is not None:
            self._worker_id = stream.worker_id
            return
        if exiting in done:
            self._process = None
            raise UserError(
                f"gRPC worker '{self.command}' exited with code {process.returncode} before"
                " connecting (its stderr, above, says why)",
                f"plugins.{self.name}",
            )
        await self._stop_process()
        raise UserError(
            f"gRPC worker did not connect within {CONNECT_TIMEOUT_SECS:.0f} seconds",
            f"plugins.{self.name}",
        )

    async def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), WORKER_STOP_SECS)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    async def prepare_retry(self) -> None:
        """Before a transport retry: restart our worker only if it died or lost its stream."""
        if not self.command:
            return
        alive = self._process is not None and self._process.returncode is None
        if alive and self.worker_endpoint.broker.live_streams(self.queue):
            return
        log.warning("worker for queue %s is gone; restarting it", self.queue)
        await self._launch()

    async def close(self) -> None:
        """Stops the launched worker while the endpoint still serves: its stream ends cleanly
        first, so it leaves like after any finished session instead of reporting a lost
        connection (the runtime and the node close their endpoint after their plugins)."""
        if self._discovering is not None:
            self._discovering.cancel()
        if self._worker_id is not None and self._process is not None:
            self.worker_endpoint.broker.retire(self._worker_id)
        await self._stop_process()

    # -- components ------------------------------------------------------------------------------

    async def components(self) -> list[ComponentInfo]:
        return list(self._components)

    def _schedule_discovery(self) -> None:
        if self._discovering is None or self._discovering.done():
            self._discovering = asyncio.create_task(self._discover())

    async def _discover(self) -> None:
        """Ask the queue's workers what they serve (worker-protocol.md §3.6)."""
        from .._pb.stepflow.v1 import tasks_pb2
        from ..worker_api.broker import Timeouts
        from ..worker_api.outcomes import Components

        endpoint = self.worker_endpoint
        task_id = f"discovery-{next(_discovery_ids)}"
        assignment = tasks_pb2.TaskAssignment(
            task_id=task_id,
            list_components=tasks_pb2.ListComponentsRequest(),
            context=tasks_pb2.TaskContext(orchestrator_service_url=endpoint.address),
            heartbeat_interval_secs=0,
        )
        try:
            outcome = await endpoint.broker.dispatch(
                self.queue, task_id, assignment, Timeouts(queue_secs=DISCOVERY_TIMEOUT_SECS),
                heartbeats=False,
            )  # fmt: skip
        except TimeoutError:
            log.warning("no component list from queue %s within 5 s", self.queue)
            return
        if not isinstance(outcome, Components):
            log.warning("queue %s answered discovery with %r", self.queue, outcome)
            return
        found = [
            ComponentInfo(c.path, c.description, c.input_schema, c.output_schema, c.component_id)
            for c in outcome.components
        ]
        if found != self._components:
            self._components = found
            log.info("queue %s serves %s", self.queue, ", ".join(c.path for c in found))
            if self.on_components_changed is not None:
                self.on_components_changed(found)

    # -- execution -------------------------------------------------------------------------------

    async def execute(self, call: StepCall) -> FlowResult:
        from .._pb.stepflow.v1 import common_pb2, tasks_pb2
        from ..worker_api.convert import to_value
        from ..worker_api.outcomes import Failure, Success

        endpoint = self.worker_endpoint
        queue = str(call.route_params.get("queueName") or self.queue)
        endpoint.broker.declare_queue(queue)
        observability = common_pb2.ObservabilityContext(
            run_id=call.run_id, flow_id=call.flow_id or "", step_id=call.step_id
        )
        span_ids = telemetry.current_span_ids()  # the `step` span: the worker's parent
        if span_ids is not None:
            observability.trace_id, observability.span_id = span_ids
        request = tasks_pb2.ComponentExecuteRequest(
            component_id=call.component_id or call.component.lstrip("/"),
            input=to_value(call.input),
            attempt=call.attempt,
            observability=observability,
            path_params=call.path_params,
        )
        assignment = tasks_pb2.TaskAssignment(
            task_id=call.task_id,
            execute=request,
            context=tasks_pb2.TaskContext(
                orchestrator_service_url=endpoint.address, root_run_id=call.root_run_id
            ),
            heartbeat_interval_secs=1,
        )
        try:
            outcome = await endpoint.broker.dispatch(
                queue, call.task_id, assignment, self.timeouts, run_id=call.run_id,
                root_run_id=call.root_run_id, locality=call.locality,
            )  # fmt: skip
        except TimeoutError as exc:
            return FlowResult.failure("TIMEOUT", str(exc))
        if isinstance(outcome, Success):
            return FlowResult.success(outcome.output)
        if isinstance(outcome, Failure):
            if outcome.data is None:
                return FlowResult.failure(outcome.code, outcome.message)
            return FlowResult.failure(outcome.code, outcome.message, outcome.data)
        raise PluginError(f"worker answered task {call.task_id} with a component list")


register_plugin_type("grpc", GrpcPlugin)
