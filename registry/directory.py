"""Who is in the cluster: node records and which queues have workers where (durability.md §9.2).

Each node publishes `{prefix}/mesh/nodes/{node_id}` and `{prefix}/mesh/queues/{queue}/{node_id}`
on its etcd lease (they vanish with the node), and mirrors both prefixes in memory through one
etcd watch, so forwarding and owner look-ups read local dicts and wake on changes instead of
polling. A broken watch is re-established from a fresh read; readers never see a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .etcd_client import EtcdClient, EtcdError, Get, WatchEvent

log = logging.getLogger("stepflow.mesh")

RESYNC_DELAY_SECS = 0.5  # after a failed watch, before reading again (etcd restarting)


@dataclass(frozen=True)
class NodeRecord:
    node_id: str
    grpc_address: str
    http_address: str
    region: str
    zone: str
    version: str = ""
    started_at: str = ""
    in_flight_tasks: int = 0
    active_runs: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "grpcAddress": self.grpc_address,
            "httpAddress": self.http_address,
            "region": self.region,
            "zone": self.zone,
            "version": self.version,
            "startedAt": self.started_at,
            "inFlightTasks": self.in_flight_tasks,
            "activeRuns": self.active_runs,
        }

    @staticmethod
    def from_json(node_id: str, raw: dict[str, Any]) -> NodeRecord:
        return NodeRecord(
            node_id,
            str(raw.get("grpcAddress", "")),
            str(raw.get("httpAddress", "")),
            str(raw.get("region", "")),
            str(raw.get("zone", "")),
            str(raw.get("version", "")),
            str(raw.get("startedAt", "")),
            int(raw.get("inFlightTasks", 0)),
            int(raw.get("activeRuns", 0)),
        )


@dataclass(frozen=True)
class QueueEntry:
    """One node's workers for one queue."""

    queue: str
    node_id: str
    workers: int
    idle_streams: int
    region: str
    zone: str


class Directory:
    def __init__(self, client: EtcdClient, prefix: str, lease_id: Callable[[], Awaitable[int]]):
        self.client = client
        self._nodes_prefix = f"{prefix}/mesh/nodes/"
        self._queues_prefix = f"{prefix}/mesh/queues/"
        self._lease_id = lease_id
        self.nodes: dict[str, NodeRecord] = {}
        self.queues: dict[str, dict[str, QueueEntry]] = {}  # queue → node id → entry
        self._changed = asyncio.Condition()
        self._synced = asyncio.Event()  # both prefixes read at least once
        self._read_once: set[str] = set()
        self._watching: list[asyncio.Task[None]] = []
        self._published_queues: dict[str, bytes] = {}

    # -- publishing ------------------------------------------------------------------------------

    async def publish_node(self, record: NodeRecord) -> None:
        key = (self._nodes_prefix + record.node_id).encode()
        await self.client.put(key, json.dumps(record.to_json()).encode(), await self._lease_id())

    async def publish_queues(
        self, node_id: str, region: str, zone: str, load: dict[str, tuple[int, int]]
    ) -> None:
        """Make `queues/*/{node_id}` say exactly `load` (queue → workers, idle streams)."""
        for queue, (workers, idle) in load.items():
            value = json.dumps(
                {"workers": workers, "idleStreams": idle, "region": region, "zone": zone}
            ).encode()
            if self._published_queues.get(queue) != value:
                key = f"{self._queues_prefix}{queue}/{node_id}".encode()
                await self.client.put(key, value, await self._lease_id())
                self._published_queues[queue] = value
        for queue in [q for q in self._published_queues if q not in load]:
            await self.client.delete(f"{self._queues_prefix}{queue}/{node_id}".encode())
            del self._published_queues[queue]

    def forget_published(self) -> None:
        """A new etcd lease: everything must be published again."""
        self._published_queues.clear()

    # -- reading ---------------------------------------------------------------------------------

    def node(self, node_id: str) -> NodeRecord | None:
        return self.nodes.get(node_id)

    def targets(
        self, queue: str, *, exclude: str, region: str, zone: str, strict: bool
    ) -> list[QueueEntry]:
        """Nodes with workers for `queue`: same zone, then same region, then (not strict) any."""

        def tier(e: QueueEntry) -> int:
            if e.region == region:
                return 0 if e.zone == zone else 1
            return 2

        entries = [
            e
            for e in self.queues.get(queue, {}).values()
            if e.node_id != exclude and e.workers > 0 and e.node_id in self.nodes
        ]
        if strict:
            entries = [e for e in entries if e.region == region]
        return sorted(entries, key=lambda e: (tier(e), -e.idle_streams, -e.workers, e.node_id))

    async def wait_changed(self, timeout: float) -> None:
        """Return at the next change of nodes or queues, or after `timeout`."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)

    async def wait_synced(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # -- the mirror ------------------------------------------------------------------------------

    def start(self) -> None:
        for prefix, reset in ((self._nodes_prefix, self.nodes), (self._queues_prefix, self.queues)):
            self._watching.append(asyncio.create_task(self._mirror(prefix, reset)))

    async def stop(self) -> None:
        for task in self._watching:
            task.cancel()
        for task in self._watching:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._watching.clear()

    async def _mirror(self, prefix: str, mirror: dict[str, Any]) -> None:
        """Read the prefix, then apply watch events from the read's revision on; repeat."""
        while True:
            try:
                result = await self.client.range(Get.prefix(prefix.encode()))
                mirror.clear()
                for kv in result.kvs:
                    self._apply(kv.key.decode(), kv.value, deleted=False)
                await self._notify()
                self._read_once.add(prefix)
                if len(self._read_once) == 2:
                    self._synced.set()
                async for event in self.client.watch_prefix(prefix.encode(), result.revision + 1):
                    self._on_event(event)
                    await self._notify()
            except asyncio.CancelledError:
                raise
            except EtcdError as exc:
                log.warning("cluster directory watch on %s interrupted (%s)", prefix, exc)
                await asyncio.sleep(RESYNC_DELAY_SECS)

    def _on_event(self, event: WatchEvent) -> None:
        self._apply(event.key.decode(), event.value, deleted=event.kind == "DELETE")

    def _apply(self, key: str, value: bytes, *, deleted: bool) -> None:
        try:
            if key.startswith(self._nodes_prefix):
                node_id = key.removeprefix(self._nodes_prefix)
                if deleted:
                    self.nodes.pop(node_id, None)
                else:
                    self.nodes[node_id] = NodeRecord.from_json(node_id, json.loads(value))
            elif key.startswith(self._queues_prefix):
                queue, _, node_id = key.removeprefix(self._queues_prefix).rpartition("/")
                if deleted:
                    self.queues.get(queue, {}).pop(node_id, None)
                else:
                    raw = json.loads(value)
                    self.queues.setdefault(queue, {})[node_id] = QueueEntry(
                        queue,
                        node_id,
                        int(raw.get("workers", 0)),
                        int(raw.get("idleStreams", 0)),
                        str(raw.get("region", "")),
                        str(raw.get("zone", "")),
                    )
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("ignoring malformed cluster key %s: %s", key, exc)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()
