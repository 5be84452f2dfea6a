"""Forwarding tasks to nodes whose workers can take them (durability.md §15 G6).

The broker calls `forward` when no local worker stream is free for a task; the task goes to the
best node the directory lists for its queue (same zone, same region, then anywhere unless the
route's locality is `strict`). That node delivers it and relays the worker's calls back to the
run's owner, so for the owner a forwarded task looks like a local one that a worker claimed.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from ..runtime import telemetry
from ..runtime._pb.stepflow_mesh.v1 import mesh_pb2, mesh_pb2_grpc
from ..runtime.worker_api.broker import TrackedTask
from .channels import PeerChannels
from .directory import Directory

log = logging.getLogger("stepflow.mesh")

FORWARD_TIMEOUT_SECS = 5.0
CAPACITY_WAIT_SECS = 2.0  # re-check even without a directory change (a peer's refusal)


class MeshForwarder:
    def __init__(
        self,
        directory: Directory,
        channels: PeerChannels,
        node_id: str,
        region: str,
        zone: str,
    ) -> None:
        self.directory = directory
        self.channels = channels
        self.node_id = node_id
        self.region = region
        self.zone = zone

    async def forward(self, task: TrackedTask) -> str | None:
        if task.root_run_id is None:
            return None  # discovery and other node-local tasks stay here
        candidates = self.directory.targets(
            task.queue, exclude=self.node_id, region=self.region, zone=self.zone,
            strict=task.locality == "strict",
        )  # fmt: skip
        for entry in candidates:
            node = self.directory.node(entry.node_id)
            if node is None:
                continue
            step = _step_traceparent(task.payload)
            request = mesh_pb2.ForwardTaskRequest(
                queue_name=task.queue,
                assignment=task.payload.SerializeToString(),
                from_node_id=self.node_id,
                root_run_id=task.root_run_id,
                traceparent=step or "",
            )
            channel = self.channels.get(node.grpc_address)
            stub: Any = mesh_pb2_grpc.MeshServiceStub(channel)  # type: ignore[no-untyped-call]
            try:
                with telemetry.forward_span(entry.node_id, task.queue, step):
                    response = await stub.ForwardTask(request, timeout=FORWARD_TIMEOUT_SECS)
            except grpc.aio.AioRpcError as exc:
                log.warning("cannot forward to node %s: %s", entry.node_id, exc.details())
                continue
            if response.accepted:
                telemetry.record_step_forwarded(task.queue, entry.region)
                log.info(
                    "task %s of queue %s forwarded to node %s (%s)",
                    task.task_id, task.queue, entry.node_id, entry.region or "no region",
                )  # fmt: skip
                return entry.node_id
            log.debug("node %s refused task %s: %s", entry.node_id, task.task_id, response.reason)
        return None

    async def capacity_changed(self, queue: str) -> None:
        await self.directory.wait_changed(CAPACITY_WAIT_SECS)


def _step_traceparent(assignment: Any) -> str | None:
    """The W3C traceparent of the step span a task belongs to (carried in its assignment)."""
    if assignment.WhichOneof("task") != "execute":
        return None
    context = assignment.execute.observability
    if len(context.trace_id) != 32 or len(context.span_id) != 16:
        return None
    return f"00-{context.trace_id}-{context.span_id}-01"
