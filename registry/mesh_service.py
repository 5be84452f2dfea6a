"""MeshService (proto `stepflow_mesh.v1`): this node's side of task forwarding (§15 G6)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from ..runtime._pb.stepflow.v1 import tasks_pb2
from ..runtime._pb.stepflow_mesh.v1 import mesh_pb2, mesh_pb2_grpc
from ..runtime.worker_api.broker import TaskBroker

log = logging.getLogger("stepflow.mesh")


class MeshServicer(mesh_pb2_grpc.MeshServiceServicer):
    def __init__(self, broker: TaskBroker, own_address: Callable[[], str]) -> None:
        self.broker = broker
        self.own_address = own_address
        self.accepting = True  # cleared on graceful shutdown

    async def ForwardTask(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if not request.queue_name or not request.root_run_id:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "queue_name and root_run_id are required"
            )
        if not self.accepting:
            return mesh_pb2.ForwardTaskResponse(accepted=False, reason="node is shutting down")
        assignment = tasks_pb2.TaskAssignment()
        try:
            assignment.ParseFromString(request.assignment)
        except DecodeError:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "assignment is not a TaskAssignment"
            )
        if not assignment.task_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "assignment.task_id is required")
        # The worker talks to this node, which relays to the run's owner of the moment.
        assignment.context.orchestrator_service_url = self.own_address()
        accepted = self.broker.accept_foreign(
            request.queue_name, assignment.task_id, assignment, request.root_run_id
        )
        if not accepted:
            return mesh_pb2.ForwardTaskResponse(
                accepted=False, reason=f"no worker pulls queue {request.queue_name} here"
            )
        log.debug(
            "task %s of queue %s forwarded from %s",
            assignment.task_id, request.queue_name, request.from_node_id,
        )  # fmt: skip
        return mesh_pb2.ForwardTaskResponse(accepted=True)


def register_mesh_service(servicer: MeshServicer) -> Callable[[grpc.aio.Server], None]:
    def register(server: grpc.aio.Server) -> None:
        # Generated registration functions are untyped.
        mesh_pb2_grpc.add_MeshServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]

    return register
