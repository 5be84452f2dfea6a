"""This node's membership in a cluster: registration, heartbeats, failover claims (§10).

A node registers itself and its queues on its etcd lease, keeps the lease alive, and claims run
trees whose owner's lease disappeared: the etcd watch on lease keys is the primary trigger, a
sweep every `recovery.checkIntervalSecs` catches anything missed. Waiting for a run finished on
another node is a watch on its `done/` key; cancelling one is forwarded to its owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any, Protocol

import grpc

from ..runtime._pb.stepflow.v1 import runs_pb2, runs_pb2_grpc
from ..runtime.state.base import RunFilter, StoreError
from ..runtime.state.settings import DurabilitySettings
from ..runtime.version import VERSION
from ..runtime.worker_api.broker import TaskBroker
from .channels import PeerChannels
from .cluster_config import ClusterSettings
from .directory import Directory, NodeRecord
from .etcd_client import EtcdError
from .etcd_store import EtcdStateStore
from .forwarding import MeshForwarder
from .mesh_service import MeshServicer
from .relay import ClusterRelay

log = logging.getLogger("stepflow.mesh")

PUBLISH_DEBOUNCE_SECS = 0.05
CANCEL_TIMEOUT_SECS = 10.0


class RunHost(Protocol):
    """What the member needs from its node."""

    def local_runs(self) -> list[str]: ...

    def in_flight_tasks(self) -> int: ...

    async def claim(self, run_id: str, previous_owner: str) -> None:
        """Resume the run tree here if its lease can be taken (a lost race is fine)."""


class ClusterMember:
    def __init__(
        self,
        settings: ClusterSettings,
        store: EtcdStateStore,
        durability: DurabilitySettings,
        broker: TaskBroker,
    ) -> None:
        self.settings = settings
        self.node_id = settings.node_id
        self.store = store
        self.durability = durability
        self.broker = broker
        self.channels = PeerChannels()
        self.directory = Directory(store.client, settings.prefix, store.leases.node_lease_id)
        self.forwarder = MeshForwarder(
            self.directory, self.channels, self.node_id, settings.region, settings.zone
        )
        self.relay = ClusterRelay(self.lease_owner, self.directory, self.channels)
        self.grpc_address = ""
        self.http_address = ""
        self.started_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        self._host: RunHost | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._publish: asyncio.Task[None] | None = None
        self.mesh: MeshServicer | None = None  # this node's side of forwarding (node_setup)

    # -- lifecycle -------------------------------------------------------------------------------

    async def join(self, host: RunHost, grpc_address: str, http_address: str) -> None:
        """Register, mirror the directory and start forwarding; claims start with `start_loops`."""
        self._host = host
        self.grpc_address, self.http_address = grpc_address, http_address
        self.directory.start()
        await self.store.leases.heartbeat(self.node_id, grpc_address)
        await self._publish_now()
        await self.directory.wait_synced(self.store.client.timeout)
        self.broker.forwarder = self.forwarder
        self.broker.on_streams_changed = lambda queue: self._schedule_publish()

    async def recover_at_startup(self) -> int:
        return await self._sweep(self.durability.max_startup_recovery)

    def start_loops(self) -> None:
        self._loops.append(asyncio.create_task(self._heartbeat_loop()))
        if self.durability.recovery_enabled:
            self._loops.append(asyncio.create_task(self._orphan_loop()))
            self._loops.append(asyncio.create_task(self._sweep_loop()))

    async def leave(self) -> None:
        """Graceful stop: drop every lease at once so other nodes claim the runs now."""
        if self.mesh is not None:
            self.mesh.accepting = False
        for task in [*self._loops, *([self._publish] if self._publish else [])]:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._loops.clear()
        self.broker.forwarder = None
        self.broker.on_streams_changed = None
        with contextlib.suppress(EtcdError, StoreError):
            await self.store.leases.release_all(self.node_id)
        await self.directory.stop()
        await self.channels.close()

    # -- publishing ------------------------------------------------------------------------------

    def _schedule_publish(self) -> None:
        if self._publish is None or self._publish.done():
            self._publish = asyncio.create_task(self._publish_soon())

    async def _publish_soon(self) -> None:
        await asyncio.sleep(PUBLISH_DEBOUNCE_SECS)  # coalesce a burst of stream changes
        try:
            await self._publish_now()
        except (EtcdError, StoreError) as exc:
            log.warning("cannot publish this node's queues: %s", exc)

    async def _publish_now(self) -> None:
        host = self._host
        record = NodeRecord(
            self.node_id, self.grpc_address, self.http_address, self.settings.region,
            self.settings.zone, VERSION, self.started_at,
            host.in_flight_tasks() if host else 0, len(host.local_runs()) if host else 0,
        )  # fmt: skip
        await self.directory.publish_node(record)
        await self.directory.publish_queues(
            self.node_id,
            self.settings.region,
            self.settings.zone,
            {
                q: (s.workers, s.idle_workers)
                for q, s in self.broker.queue_stats().items()
                if s.workers
            },
        )

    async def _heartbeat_loop(self) -> None:
        lease_id: int | None = None
        while True:
            await asyncio.sleep(max(self.settings.lease_ttl_secs / 3, 0.2))
            try:
                await self.store.leases.heartbeat(self.node_id, self.grpc_address)
                current = await self.store.leases.node_lease_id()
                if lease_id is not None and current != lease_id:  # the old lease expired
                    self.directory.forget_published()
                lease_id = current
                await self._publish_now()
            except (EtcdError, StoreError) as exc:
                log.warning("cluster heartbeat failed: %s", exc)

    # -- failover --------------------------------------------------------------------------------

    async def _orphan_loop(self) -> None:
        while True:
            try:
                async for orphan in self.store.leases.watch_orphans():
                    await self._claim(orphan.run_id, orphan.previous_owner)
            except (EtcdError, StoreError) as exc:
                log.warning("orphan watch interrupted (%s); the sweep covers the gap", exc)
                await asyncio.sleep(1.0)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.durability.check_interval_secs)
            try:
                await self._sweep(self.durability.max_claims_per_check)
            except (EtcdError, StoreError) as exc:
                log.warning("orphan sweep failed: %s", exc)

    async def _sweep(self, limit: int) -> int:
        """Claim up to `limit` running root runs that no live node owns."""
        running = await self.store.list_runs(RunFilter(status="running", roots_only=True))
        claimed = 0
        for run in running:
            if claimed >= limit:
                break
            owner = await self.lease_owner(run.run_id)
            if owner in (None, self.node_id) and await self._claim(run.run_id, owner or ""):
                claimed += 1
        return claimed

    async def _claim(self, run_id: str, previous_owner: str) -> bool:
        host = self._host
        if host is None or run_id in host.local_runs():
            return False
        await host.claim(run_id, previous_owner)
        return True

    # -- runs elsewhere --------------------------------------------------------------------------

    async def lease_owner(self, root_run_id: str) -> str | None:
        lease = await self.store.leases.get_lease(root_run_id)
        return lease.owner if lease is not None else None

    async def wait_done(self, run_id: str, timeout: float) -> None:
        await self.store.wait_done(run_id, timeout)

    async def cancel_elsewhere(self, root_run_id: str) -> bool:
        """Ask the run's owner to cancel it; False when no live node owns it."""
        owner = await self.lease_owner(root_run_id)
        node = self.directory.node(owner) if owner else None
        if node is None or owner == self.node_id:
            return False
        channel = self.channels.get(node.grpc_address)
        stub: Any = runs_pb2_grpc.RunsServiceStub(channel)  # type: ignore[no-untyped-call]
        try:
            await stub.CancelRun(
                runs_pb2.CancelRunRequest(run_id=root_run_id), timeout=CANCEL_TIMEOUT_SECS
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise
        return True
