"""gRPC services that workers call (worker-protocol.md §2, §3), over TaskBroker and blobs."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import grpc

from .._pb.stepflow.v1 import (
    blobs_pb2,
    blobs_pb2_grpc,
    common_pb2,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    tasks_pb2,
    tasks_pb2_grpc,
)
from ..blobs import BLOB_TYPES, BlobStore, is_blob_id
from ..jsonfmt import dumps_compact
from .broker import Retired, TaskBroker, UnknownQueue, UnknownTask
from .convert import from_struct, from_value, to_value
from .outcomes import Components, DiscoveredComponent, Failure, Outcome, Success
from .relay import OwnerRelay, OwnerUnavailable

log = logging.getLogger("stepflow.workers")

ERROR_CODE_PREFIX = "TASK_ERROR_CODE_"


def error_code_name(number: int) -> str:
    """A TaskErrorCode number as its short name; unknown numbers are WORKER_ERROR (§2.3)."""
    try:
        name = common_pb2.TaskErrorCode.Name(number)
    except ValueError:
        return "WORKER_ERROR"
    return name.removeprefix(ERROR_CODE_PREFIX)


def _schema(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _mount_path(info: Any) -> str:
    path = str(info.path or info.component_id)
    return path if path.startswith("/") else "/" + path


class TasksServicer(tasks_pb2_grpc.TasksServiceServicer):
    def __init__(
        self,
        broker: TaskBroker,
        own_url: Callable[[], str],
        run_is_local: Callable[[str], bool],
        on_stream: Callable[[str], None],
        relay: Callable[[], OwnerRelay | None] = lambda: None,
    ) -> None:
        self.broker = broker
        self.own_url = own_url
        self.run_is_local = run_is_local
        self.on_stream = on_stream
        self.relay = relay

    async def PullTasks(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        if not request.queue_name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "queue_name is required")
        if not self.broker.has_queue(request.queue_name):
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"no plugin serves queue '{request.queue_name}'"
            )
        try:
            async with self.broker.open_stream(request.queue_name, request.worker_id) as stream:
                log.info("worker %s connected to queue %s", request.worker_id, request.queue_name)
                self.on_stream(request.queue_name)
                try:
                    while (task := await stream.outbox.get()) is not None:
                        yield task.payload
                finally:
                    log.info("worker %s left queue %s", request.worker_id, request.queue_name)
        except UnknownQueue:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown queue {request.queue_name}")
        except Retired as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))

    async def GetOrchestratorForRun(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        url = self.own_url() if self.run_is_local(request.run_id) else None
        relay = self.relay()
        if url is None and relay is not None:  # in a cluster any node answers from the leases
            try:
                url = await relay.owner_address(request.run_id)
            except OwnerUnavailable as exc:
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        if url is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"run {request.run_id} is not active")
        return tasks_pb2.GetOrchestratorForRunResponse(orchestrator_service_url=url)


class RunCalls(Protocol):
    """Runs created or read by running components (a node provides this; §3.8)."""

    async def submit_run(self, request: Any) -> Any:
        """OrchestratorSubmitRunRequest → OrchestratorRunStatus."""

    async def get_run(self, request: Any) -> Any:
        """OrchestratorGetRunRequest → OrchestratorRunStatus."""


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    def __init__(
        self,
        broker: TaskBroker,
        run_calls: Callable[[], RunCalls | None],
        run_is_local: Callable[[str], bool] = lambda run_id: True,
        relay: Callable[[], OwnerRelay | None] = lambda: None,
    ) -> None:
        self.broker = broker
        self.run_calls = run_calls
        self.run_is_local = run_is_local
        self.relay = relay

    async def _relayed(
        self, root: str, method: str, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        relay = self.relay()
        assert relay is not None
        try:
            return await relay.call(root, method, request)
        except OwnerUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")

    async def TaskHeartbeat(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if not request.worker_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "worker_id is required")
        root = self.broker.foreign_root(request.task_id)
        if root is not None and self.relay() is not None:
            self.broker.claim_foreign(request.task_id, request.worker_id)
            return await self._relayed(root, "TaskHeartbeat", request, context)
        try:
            abort, claimed_elsewhere = self.broker.heartbeat(request.task_id, request.worker_id)
        except UnknownTask:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown task '{request.task_id}'")
        if claimed_elsewhere:
            status = orchestrator_pb2.TASK_STATUS_ALREADY_CLAIMED
        elif abort:
            status = orchestrator_pb2.TASK_STATUS_UNSPECIFIED
        else:
            status = orchestrator_pb2.TASK_STATUS_IN_PROGRESS
        return orchestrator_pb2.TaskHeartbeatResponse(should_abort=abort, status=status)

    async def CompleteTask(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        root = self.broker.foreign_root(request.task_id)
        if root is not None and self.relay() is not None:
            response = await self._relayed(root, "CompleteTask", request, context)
            self.broker.drop_foreign(request.task_id)
            return response
        outcome = await self._outcome(request, context)
        try:
            self.broker.complete(request.task_id, outcome)
        except UnknownTask:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"task '{request.task_id}' is unknown, already completed or timed out",
            )
        return orchestrator_pb2.CompleteTaskResponse()

    @staticmethod
    async def _outcome(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Outcome:
        kind = request.WhichOneof("result")
        if kind == "response":
            if not request.response.HasField("output"):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "response.output is missing")
            return Success(from_value(request.response.output))
        if kind == "error":
            error = request.error
            data = from_struct(error.data) if error.HasField("data") else None
            return Failure(error_code_name(error.code), error.message, data)
        if kind == "list_components":
            return Components(
                [
                    DiscoveredComponent(
                        component_id=c.component_id,
                        path=_mount_path(c),
                        description=c.description if c.HasField("description") else None,
                        input_schema=_schema(c.input_schema),
                        output_schema=_schema(c.output_schema),
                    )
                    for c in request.list_components.components
                ]
            )
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no result set")
        raise AssertionError("unreachable")

    async def SubmitRun(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await self._run_call("submit_run", request, context)

    async def GetRun(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await self._run_call("get_run", request, context)

    async def _run_call(
        self, name: str, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        if request.HasField("root_run_id") and self.relay() is not None:
            root = request.root_run_id
            if not self.run_is_local(root):
                return await self._relayed(root, name_to_rpc(name), request, context)
        calls = self.run_calls()
        if calls is None:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                "runs from components need a node: start one with `stepflow serve`",
            )
        try:
            return await getattr(calls, name)(request)
        except LookupError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))


def name_to_rpc(name: str) -> str:
    """`submit_run` → `SubmitRun`."""
    return "".join(part.capitalize() for part in name.split("_"))


class BlobServicer(blobs_pb2_grpc.BlobServiceServicer):
    """Blobs for workers and clients (§2.4): JSON content stored compact, raw bytes as given."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    async def PutBlob(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        blob_type = request.blob_type or "data"
        if blob_type not in BLOB_TYPES:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"blob_type must be one of {BLOB_TYPES}"
            )
        kind = request.WhichOneof("content")
        if kind == "json_data":
            data = dumps_compact(from_value(request.json_data)).encode("utf-8")
        elif kind == "raw_data":
            data = bytes(request.raw_data)
        else:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "json_data or raw_data is required"
            )
        blob_id = await self.blobs.put(data, blob_type)
        response = blobs_pb2.PutBlobResponse(blob_id=blob_id)
        if request.HasField("filename"):
            response.filename = request.filename
        return response

    async def GetBlob(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if not is_blob_id(request.blob_id):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"not a blob id (64 hex): {request.blob_id!r}"
            )
        blob = await self.blobs.get(request.blob_id)
        if blob is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"Blob not found: {request.blob_id}")
        assert blob is not None
        response = blobs_pb2.GetBlobResponse(blob_type=blob.blob_type, blob_id=request.blob_id)
        if blob.blob_type == "binary":
            response.raw_data = blob.data
            return response
        try:
            response.json_data.CopyFrom(to_value(json.loads(blob.data)))
        except ValueError:
            response.raw_data = blob.data
        return response
