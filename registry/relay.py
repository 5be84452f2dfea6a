"""Relaying a worker's calls to the node that owns the run now (the OwnerRelay of a cluster)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..runtime import telemetry
from ..runtime._pb.stepflow.v1 import orchestrator_pb2_grpc
from ..runtime.worker_api.relay import OwnerUnavailable
from .channels import PeerChannels
from .directory import Directory

RELAY_TIMEOUT_SECS = 30.0


class ClusterRelay:
    def __init__(
        self,
        lease_owner: Callable[[str], Awaitable[str | None]],
        directory: Directory,
        channels: PeerChannels,
    ) -> None:
        self._lease_owner = lease_owner
        self.directory = directory
        self.channels = channels

    async def owner_address(self, root_run_id: str) -> str | None:
        owner = await self._lease_owner(root_run_id)
        if owner is None:
            return None
        node = self.directory.node(owner)
        if node is None or not node.grpc_address:
            raise OwnerUnavailable(f"run {root_run_id} is owned by {owner}, which is unreachable")
        return node.grpc_address

    async def call(self, root_run_id: str, method: str, request: Any) -> Any:
        owner = await self._lease_owner(root_run_id)
        node = self.directory.node(owner) if owner is not None else None
        if node is None:
            raise OwnerUnavailable(f"no live node owns run {root_run_id} right now; retry")
        channel = self.channels.get(node.grpc_address)
        stub: Any = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)  # type: ignore[no-untyped-call]
        with telemetry.forward_span(node.node_id, method):
            return await getattr(stub, method)(request, timeout=RELAY_TIMEOUT_SECS)
