"""The gRPC server pull workers connect to (TasksService, OrchestratorService, BlobService).

`stepflow run`/`test` start one on a free loopback port whenever a `grpc` plugin is configured
(worker-protocol.md §4); the node server will mount the same servicers on its own port.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

import grpc

from .. import telemetry
from .._pb.stepflow.v1 import blobs_pb2_grpc, orchestrator_pb2_grpc, tasks_pb2_grpc
from ..blobs import BlobStore
from .broker import TaskBroker
from .relay import OwnerRelay
from .servicer import BlobServicer, OrchestratorServicer, RunCalls, TasksServicer

log = logging.getLogger("stepflow.workers")

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


class WorkerEndpoint:
    def __init__(self, blobs: BlobStore, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.blobs = blobs
        self.host = host
        self.port = port
        self.broker = TaskBroker()
        self.address = ""
        self._server: grpc.aio.Server | None = None
        self._listeners: dict[str, list[Callable[[], None]]] = {}
        self._services: list[Callable[[grpc.aio.Server], None]] = []
        self._local_runs: Callable[[str], bool] = lambda run_id: False
        self.run_calls: RunCalls | None = None  # set by a node: SubmitRun/GetRun from components
        self.relay: OwnerRelay | None = None  # set by a cluster node: calls for runs elsewhere

    def on_new_stream(self, queue: str, callback: Callable[[], None]) -> None:
        """Call `callback` whenever a worker opens a PullTasks stream on `queue` (discovery)."""
        self._listeners.setdefault(queue, []).append(callback)

    def add_services(self, register: Callable[[grpc.aio.Server], None]) -> None:
        """More services on the same port (a node's client APIs); call before `start`."""
        self._services.append(register)

    def set_run_lookup(self, is_local: Callable[[str], bool]) -> None:
        self._local_runs = is_local

    def _local_runs_now(self, run_id: str) -> bool:
        return self._local_runs(run_id)

    def _stream_opened(self, queue: str) -> None:
        for callback in self._listeners.get(queue, []):
            callback()

    async def start(self) -> None:
        server = grpc.aio.server(
            options=SERVER_OPTIONS, interceptors=telemetry.server_interceptors() or None
        )
        tasks = TasksServicer(
            self.broker, lambda: self.address, lambda run_id: self._local_runs(run_id),
            self._stream_opened, lambda: self.relay,
        )  # fmt: skip
        # The generated registration functions are untyped (grpc_tools writes no stubs for them).
        tasks_pb2_grpc.add_TasksServiceServicer_to_server(tasks, server)  # type: ignore[no-untyped-call]
        orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(  # type: ignore[no-untyped-call]
            OrchestratorServicer(
                self.broker, lambda: self.run_calls, self._local_runs_now, lambda: self.relay
            ),
            server,
        )
        blobs_pb2_grpc.add_BlobServiceServicer_to_server(BlobServicer(self.blobs), server)  # type: ignore[no-untyped-call]
        for register in self._services:
            register(server)
        bound = server.add_insecure_port(f"{self.host}:{self.port}")
        await server.start()
        self._server = server
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        self.port = bound
        self.address = os.environ.get("STEPFLOW_ORCHESTRATOR_URL") or f"{host}:{bound}"
        log.debug("worker endpoint listening on %s", self.address)

    async def close(self, grace: float = 0.3) -> None:
        await self.broker.close()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        await asyncio.sleep(0)
