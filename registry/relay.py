"""Relaying a worker's calls to the node that owns the run now (the OwnerRelay of a cluster)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ..runtime import telemetry
from ..runtime._pb.stepflow.v1 import orchestrator_pb2_grpc
from ..runtime.state.base import StoreError
from ..runtime.worker_api.relay import OwnerUnavailable
from .channels import PeerChannels
from .directory import Directory, NodeRecord
from .etcd_client import EtcdError

RELAY_TIMEOUT_SECS = 30.0
LAST_OWNERS = 10_000  # runs whose owner is remembered for etcd outages
# A worker heartbeats every second and its task times out after 5 s of silence: a lease look-up
# that etcd cannot answer quickly falls back to the owner last seen.
LOOKUP_TIMEOUT_SECS = 1.0


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
        self._last_owner: dict[str, str] = {}  # root → owner last seen (etcd outages)

    async def _owner(self, root_run_id: str) -> str | None:
        """The lease's owner now; while etcd cannot answer, the owner last seen for the run."""
        try:
            owner = await asyncio.wait_for(self._lease_owner(root_run_id), LOOKUP_TIMEOUT_SECS)
        except (EtcdError, StoreError, TimeoutError):
            owner = self._last_owner.get(root_run_id)
            if owner is None:
                raise OwnerUnavailable(f"cannot look up the owner of run {root_run_id}") from None
            return owner
        if owner is None:
            self._last_owner.pop(root_run_id, None)
        else:
            if len(self._last_owner) >= LAST_OWNERS and root_run_id not in self._last_owner:
                self._last_owner.pop(next(iter(self._last_owner)))
            self._last_owner[root_run_id] = owner
        return owner

    async def _owner_node(self, root_run_id: str) -> NodeRecord | None:
        """The owning node's record; None without a lease; OwnerUnavailable if unreachable."""
        owner = await self._owner(root_run_id)
        if owner is None:
            return None
        node = self.directory.node(owner)
        if node is None or not node.grpc_address:
            raise OwnerUnavailable(f"run {root_run_id} is owned by {owner}, which is unreachable")
        return node

    async def owner_address(self, root_run_id: str) -> str | None:
        node = await self._owner_node(root_run_id)
        return node.grpc_address if node is not None else None

    async def call(self, root_run_id: str, method: str, request: Any) -> Any:
        node = await self._owner_node(root_run_id)
        if node is None:
            raise OwnerUnavailable(f"no live node owns run {root_run_id} right now; retry")
        channel = self.channels.get(node.grpc_address)
        stub: Any = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)  # type: ignore[no-untyped-call]
        with telemetry.forward_span(node.node_id, method):
            return await getattr(stub, method)(request, timeout=RELAY_TIMEOUT_SECS)
