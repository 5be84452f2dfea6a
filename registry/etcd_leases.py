"""Run leases and node liveness in etcd (durability.md §9), for `EtcdStateStore`.

One etcd lease per node (TTL `ttl_secs`, kept alive every TTL/3); run lease keys
(`{lease prefix}/runs/{root}`) and the node's heartbeat key are attached to it, so a dead node's
runs are freed when it expires. A run lease also carries a logical expiry (`ttl_secs` of
`acquire_lease`, renewed by re-acquiring): past it, another owner takes over by deleting and
re-creating the key. The key's create revision at acquire is the holder's `Fence`: the store's
appends compare it, so a new create revision fences out the old holder, which then never writes
that tree again (`lost`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stepflow_mesh.runtime.state.base import LeaseLost
from stepflow_mesh.runtime.state.common import canonical_time, format_time

from .etcd_client import (
    Compare,
    Delete,
    EtcdClient,
    EtcdError,
    EtcdLeaseNotFound,
    Get,
    Put,
    RangeResult,
    WatchEvent,
    prefix_end,
)
from .etcd_errors import fail_fast
from .etcd_keys import Keys
from .etcd_tree import dumps

log = logging.getLogger("stepflow.state.etcd")


@dataclass(frozen=True)
class LeaseInfo:
    run_id: str
    owner: str
    acquired_at: str | None
    expires_at: str | None


@dataclass(frozen=True)
class Orphan:
    """A run whose lease disappeared, and who held it (failover metrics)."""

    run_id: str
    previous_owner: str


def _owner(event: WatchEvent) -> str:
    try:
        return str(json.loads(event.prev_value).get("owner", ""))
    except (ValueError, AttributeError):
        return ""


@dataclass(frozen=True)
class OrchestratorInfo:
    id: str
    last_heartbeat: str | None
    active_runs: int
    orchestrator_url: str


@dataclass(frozen=True)
class Fence:
    """What fences a holder's appends: the run lease key's create revision at acquire."""

    owner: str
    create_revision: int


def now_text(offset: float = 0.0) -> str:
    return format_time(datetime.fromtimestamp(time.time() + offset, UTC))


def _expired(expires_at: Any) -> bool:
    if not isinstance(expires_at, str):
        return False
    try:
        return canonical_time(expires_at) < now_text()
    except ValueError:
        return False


class RunLeases:
    """The node's etcd lease, the run leases on it, and the fences appends are checked against."""

    def __init__(self, client: EtcdClient, keys: Keys, ttl_secs: int) -> None:
        self.client = client
        self.keys = keys
        self.ttl_secs = max(int(ttl_secs), 2)
        self._fences: dict[str, Fence] = {}
        self._lost: set[str] = set()
        self._lease_id: int | None = None
        self._lease_lock = asyncio.Lock()
        self._keepalive: asyncio.Task[None] | None = None

    async def close(self) -> None:
        task, self._keepalive = self._keepalive, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    # -- fences ----------------------------------------------------------------------------------

    def check(self, root: str, owner: str) -> Fence:
        """The fence of `owner`'s lease on `root`; LeaseLost if it does not hold it."""
        fence = self._fences.get(root)
        if root in self._lost or fence is None or fence.owner != owner:
            raise LeaseLost(f"lease of run tree {root} is not held by {owner}")
        return fence

    def is_lost(self, root: str) -> bool:
        return root in self._lost

    def lose(self, root: str) -> None:
        """Another holder took `root` (a failed fence compare): never write it again."""
        log.error("lease of run tree %s lost: not writing it again", root)
        self._lost.add(root)
        self._fences.pop(root, None)

    def forget(self, root: str) -> None:
        """The tree is gone (deleted)."""
        self._fences.pop(root, None)

    # -- the node's lease and run leases ---------------------------------------------------------

    async def _node_lease(self) -> int:
        async with self._lease_lock:
            if self._lease_id is None:
                lease_id, _ = await self.client.lease_grant(self.ttl_secs)
                self._lease_id = lease_id
                if self._keepalive is None or self._keepalive.done():
                    self._keepalive = asyncio.get_running_loop().create_task(self._keep_alive())
            return self._lease_id

    async def node_lease_id(self) -> int:
        """This node's etcd lease (granted on first use, kept alive in the background)."""
        return await fail_fast(self.client, self._node_lease())

    def _lease_gone(self, lease_id: int) -> None:
        """Our etcd lease expired: every run lease attached to it is lost."""
        if self._lease_id == lease_id:
            log.warning("etcd lease %x expired: run leases of this node are lost", lease_id)
            self._lease_id = None
            self._lost.update(self._fences)
            self._fences.clear()

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_secs / 3)
            lease_id = self._lease_id
            if lease_id is None:
                continue
            try:
                if await self.client.lease_keepalive(lease_id) <= 0:
                    self._lease_gone(lease_id)
            except EtcdError as exc:
                log.warning("etcd lease keep-alive failed: %s", exc)

    async def acquire_lease(self, root_run_id: str, owner: str, ttl_secs: float) -> str | None:
        return await fail_fast(self.client, self._acquire(root_run_id, owner, ttl_secs))

    async def _acquire(self, root: str, owner: str, ttl_secs: float) -> str | None:
        key = self.keys.lease(root)
        holder = owner
        for _ in range(20):
            lease = await self._node_lease()
            now = now_text()
            value = {"owner": owner, "acquired_at": now, "expires_at": now_text(ttl_secs)}
            try:
                result = await self.client.txn(
                    [Compare.created(key, 0)], [Put(key, dumps(value), lease)], [Get(key)]
                )
            except EtcdLeaseNotFound:
                self._lease_gone(lease)
                continue
            if result.succeeded:
                self._fences[root] = Fence(owner, result.revision)
                self._lost.discard(root)
                return None
            found = result.results[0]
            if not isinstance(found, RangeResult) or not found.kvs:
                continue  # deleted meanwhile
            kv = found.kvs[0]
            current = json.loads(kv.value)
            holder = str(current.get("owner"))
            if holder == owner:
                value["acquired_at"] = current.get("acquired_at") or now
                try:
                    renewed = await self.client.txn(
                        [Compare.created(key, kv.create_revision)],
                        [Put(key, dumps(value), lease)],
                    )
                except EtcdLeaseNotFound:
                    self._lease_gone(lease)
                    continue
                if renewed.succeeded:
                    self._fences[root] = Fence(owner, kv.create_revision)
                    self._lost.discard(root)
                    return None
                continue
            if _expired(current.get("expires_at")):
                # Logically expired: delete, then create anew (a new create_revision).
                await self.client.txn([Compare.modified(key, kv.mod_revision)], [Delete(key)])
                continue
            return holder
        return holder

    async def release_lease(self, root_run_id: str, owner: str) -> None:
        key = self.keys.lease(root_run_id)
        kv = await fail_fast(self.client, self.client.get(key))
        fence = self._fences.get(root_run_id)
        if fence is not None and fence.owner == owner:
            del self._fences[root_run_id]
        if kv is None or json.loads(kv.value).get("owner") != owner:
            return
        await fail_fast(
            self.client, self.client.txn([Compare.created(key, kv.create_revision)], [Delete(key)])
        )

    async def heartbeat(self, node_id: str, url: str) -> None:
        """Publish this node's liveness and URL; refresh its etcd lease."""

        async def beat() -> None:
            for _ in range(3):
                lease = await self._node_lease()
                value = dumps({"last_heartbeat": now_text(), "orchestrator_url": url})
                try:
                    if await self.client.lease_keepalive(lease) <= 0:
                        self._lease_gone(lease)
                        continue
                    await self.client.put(self.keys.heartbeat(node_id), value, lease)
                    return
                except EtcdLeaseNotFound:
                    self._lease_gone(lease)

        await fail_fast(self.client, beat())

    async def release_all(self, node_id: str) -> None:
        """Revoke this node's etcd lease: its run leases and heartbeat disappear at once."""
        lease = self._lease_id
        self._lease_id = None
        self._lost.update(self._fences)
        self._fences.clear()
        if lease is not None:
            with contextlib.suppress(EtcdLeaseNotFound):
                await fail_fast(self.client, self.client.lease_revoke(lease))

    async def get_lease(self, run_id: str) -> LeaseInfo | None:
        kv = await fail_fast(self.client, self.client.get(self.keys.lease(run_id)))
        if kv is None:
            return None
        data = json.loads(kv.value)
        return LeaseInfo(
            run_id, str(data.get("owner")), data.get("acquired_at"), data.get("expires_at")
        )

    async def list_orchestrators(self) -> list[OrchestratorInfo]:
        result = await fail_fast(
            self.client,
            self.client.txn(
                [], [Get.prefix(self.keys.heartbeats_dir()), Get.prefix(self.keys.lease_runs_dir())]
            ),
        )
        beats, runs = result.results
        assert isinstance(beats, RangeResult) and isinstance(runs, RangeResult)
        counts: dict[str, int] = {}
        for kv in runs.kvs:
            owner = str(json.loads(kv.value).get("owner"))
            counts[owner] = counts.get(owner, 0) + 1
        nodes: dict[str, OrchestratorInfo] = {}
        for kv in beats.kvs:
            node = self.keys.node_of_heartbeat(kv.key)
            data = json.loads(kv.value)
            nodes[node] = OrchestratorInfo(
                node,
                data.get("last_heartbeat"),
                counts.get(node, 0),
                str(data.get("orchestrator_url") or ""),
            )
        for owner, count in counts.items():
            nodes.setdefault(owner, OrchestratorInfo(owner, None, count, ""))
        return [nodes[n] for n in sorted(nodes)]

    async def watch_orphans(self, start_revision: int | None = None) -> AsyncIterator[Orphan]:
        """Runs whose lease key was deleted (expiry, revoke, release); survives outages.

        Without `start_revision`, deletions from the moment of the first read on.
        """
        prefix = self.keys.lease_runs_dir()
        start = start_revision
        while True:
            try:
                if start is None:
                    start = (await self.client.range(Get(prefix, count_only=True))).revision + 1
                async with contextlib.aclosing(
                    self.client.watch(prefix, prefix_end(prefix), start, prev_kv=True)
                ) as events:
                    async for event in events:
                        start = event.mod_revision + 1
                        if event.kind == "DELETE":
                            yield Orphan(self.keys.root_of_lease(event.key), _owner(event))
            except EtcdError as exc:
                log.debug("orphan watch interrupted (%s); resuming", exc)
                await asyncio.sleep(0.2)
