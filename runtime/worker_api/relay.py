"""Worker calls about runs owned by another node of the cluster (durability.md §15 G6).

A node that delivers a forwarded task names itself as the worker's orchestrator and passes the
worker's TaskHeartbeat/CompleteTask/SubmitRun/GetRun on to whichever node owns the run *now*,
looked up per call, so a result finished during a failover still reaches the new owner. The
registry implements this protocol; the worker-facing servicers only know the protocol.
"""

from __future__ import annotations

from typing import Any, Protocol


class OwnerUnavailable(Exception):
    """No live node owns the run at the moment (→ UNAVAILABLE: the worker retries)."""


class OwnerRelay(Protocol):
    async def owner_address(self, root_run_id: str) -> str | None:
        """The gRPC address of the node holding the run's lease; None when no lease exists.

        Raises OwnerUnavailable when the lease names a node that published no address.
        """

    async def call(self, root_run_id: str, method: str, request: Any) -> Any:
        """Send one OrchestratorService call (`method` is its RPC name) to the run's owner.

        Raises OwnerUnavailable when no node owns the run, grpc.aio.AioRpcError as the owner
        answered.
        """
