"""A runtime node: one Runtime, one state store, one gRPC port for clients and workers.

Runs are executed by the DurableRunner as background tasks; everything a client reads comes from
the store's metadata (derived from the journal), so reads answer the same during and after a run.
At start the node resumes every unfinished root run in its store (startup recovery).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .. import telemetry
from ..blobs import BlobStore
from ..config import Config
from ..durable import DurableRunner, RunRequest
from ..engine import RunOutcome, Runtime
from ..errors import UserError
from ..executor import RunExecution, RunObserver
from ..model import Flow, parse_flow
from ..state.base import TERMINAL, RunFilter, RunRecord, StateStore, StoreError
from ..state.settings import DurabilitySettings
from ..worker_api.endpoint import WorkerEndpoint

log = logging.getLogger("stepflow.node")

DEFAULT_WAIT_SECS = 300.0
FLOW_CACHE_SIZE = 256
RETENTION_PASS_MAX_SECS = 300.0  # retention passes run every retentionSecs / 4, capped here


class NotFound(LookupError):
    """An unknown flow, run, step or blob (→ NOT_FOUND)."""


class InvalidRequest(ValueError):
    """A malformed request field (→ INVALID_ARGUMENT)."""


class _TakenOver(RunObserver):
    """Counts a failover once the claimed tree's lease is ours and it starts executing here."""

    def __init__(self, from_node: str, to_node: str) -> None:
        self.from_node, self.to_node = from_node, to_node

    async def run_started(self, run: RunExecution) -> None:
        if run.parent is None:
            telemetry.record_failover(self.from_node, self.to_node)


class ClusterLink(Protocol):
    """The node's membership in a cluster (registry.member.ClusterMember); None standalone."""

    relay: Any  # worker_api.relay.OwnerRelay
    http_address: str

    async def join(self, host: Any, grpc_address: str, http_address: str) -> None: ...

    async def recover_at_startup(self) -> int: ...

    def start_loops(self) -> None: ...

    async def leave(self) -> None: ...

    async def wait_done(self, run_id: str, timeout: float) -> None: ...

    async def cancel_elsewhere(self, root_run_id: str) -> bool: ...


@dataclass
class NodeOptions:
    host: str = "0.0.0.0"
    port: int = 7840
    node_id: str | None = None
    shutdown_grace_secs: float = 10.0


class Node:
    def __init__(
        self,
        config: Config,
        store: StateStore,
        blobs: BlobStore,
        settings: DurabilitySettings,
        options: NodeOptions,
    ) -> None:
        self.config = config
        self.store = store
        self.blobs = blobs
        self.settings = settings
        self.options = options
        self.endpoint = WorkerEndpoint(blobs, host=options.host, port=options.port)
        self.endpoint.set_run_lookup(self.is_local)
        from .worker_calls import NodeRunCalls

        self.endpoint.run_calls = NodeRunCalls(self)
        self.runtime = Runtime(config, blobs=blobs, worker_endpoint=self.endpoint)
        self.runner: DurableRunner | None = None
        self._tasks: dict[str, asyncio.Task[RunOutcome]] = {}
        self._flows: dict[str, Flow] = {}  # parsed flows by id, oldest first
        self.node_id = options.node_id or "stepflow-node"
        self.cluster: ClusterLink | None = None
        self._stopping = False
        self._retention: asyncio.Task[None] | None = None
        self.advertise_address: str | None = None  # host:port peers use (default: bound)

    def attach_cluster(self, cluster: ClusterLink, advertise_address: str | None) -> None:
        """Join a cluster at start: shared store, forwarding, failover claims (call first)."""
        self.cluster = cluster
        self.advertise_address = advertise_address
        self.endpoint.relay = cluster.relay

    def add_services(self, register: Callable[[Any], None]) -> None:
        self.endpoint.add_services(register)

    @property
    def port(self) -> int:
        return self.endpoint.port

    def advertise_host(self) -> str:
        """The host part of the address peers and workers use for this node."""
        return (self.advertise_address or self.endpoint.address).rpartition(":")[0]

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()
        await self.endpoint.start()
        await self.runtime.start()
        self.runner = DurableRunner(self.runtime, self.store, self.settings, owner=self._owner())
        self._retention = asyncio.create_task(self._retain(self.runner))
        if self.cluster is None:
            await self._recover()
            return
        address = self.advertise_address or self.endpoint.address
        await self.cluster.join(self, address, self.cluster.http_address)
        recovered = await self.cluster.recover_at_startup()
        if recovered:
            log.info("claimed %d unowned run trees at startup", recovered)
        self.cluster.start_loops()

    async def _retain(self, runner: DurableRunner) -> None:
        """Journal retention for a long-lived node (durability.md G5): journals of trees that
        finished more than `journal.retentionSecs` ago become one final record, and values kept
        outside the store that nothing references go (`collect_garbage`), so storage stays
        bounded. In a cluster every node runs passes; both are safe to run concurrently.
        """
        interval = min(max(self.settings.retention_secs / 4, 1.0), RETENTION_PASS_MAX_SECS)
        while True:
            try:
                finalized = await runner.finalize_expired()
                collected = await self.store.collect_garbage()
            except StoreError as exc:  # e.g. etcd briefly away: the next pass catches up
                log.warning("journal retention pass failed: %s", exc)
            else:
                if finalized:
                    log.info("finalized the journals of %d finished run trees", finalized)
                if collected:
                    log.info("deleted %d stored values nothing references any more", collected)
            await asyncio.sleep(interval)

    def _owner(self) -> str:
        from ..durable import process_owner_id

        return self.options.node_id or process_owner_id()

    async def _recover(self) -> None:
        """Resume unfinished root runs of this store (durability.md §6, single node)."""
        running = await self.store.list_runs(RunFilter(status="running", roots_only=True))
        if running:
            log.info("Found %d execution trees to recover", len(running))
        for run in running:
            log.info("Recovering execution tree rooted at %s", run.run_id)
            self._track(run.run_id, asyncio.create_task(self._resume(run.run_id)))

    async def _resume(self, run_id: str) -> RunOutcome:
        assert self.runner is not None
        return await self.runner.resume(run_id)

    # -- cluster host (registry.member.RunHost) ------------------------------------------------

    def local_runs(self) -> list[str]:
        return list(self._tasks)

    def in_flight_tasks(self) -> int:
        return self.endpoint.broker.task_count()

    async def claim(self, run_id: str, previous_owner: str = "") -> None:
        """Resume a run tree whose owner is gone, if it is unfinished and its lease is free."""
        if run_id in self._tasks or self.runner is None or self._stopping:
            return
        run = await self.store.get_run(run_id)
        if run is None or run.status in TERMINAL or run.parent_run_id is not None:
            return
        log.info("taking over run %s from %s", run_id, previous_owner or "an unknown owner")
        self._track(run_id, asyncio.create_task(self._resume_claimed(run_id, previous_owner)))

    async def _resume_claimed(self, run_id: str, previous_owner: str) -> RunOutcome:
        assert self.runner is not None
        taken = _TakenOver(previous_owner or "unknown", self.node_id)
        try:
            return await self.runner.resume(run_id, [taken])
        except UserError as exc:  # another node was faster: its lease wins
            log.info("run %s not taken over: %s", run_id, exc)
            return RunOutcome(run_id, "running", [])

    def _track(self, run_id: str, task: asyncio.Task[RunOutcome]) -> None:
        """Keep the run's task while it executes; log how a run that could not go on ended."""
        self._tasks[run_id] = task

        def done(finished: asyncio.Task[RunOutcome]) -> None:
            self._tasks.pop(run_id, None)
            if not finished.cancelled() and finished.exception() is not None:
                log.error("run %s stopped: %s", run_id, finished.exception())

        task.add_done_callback(done)

    async def stop(self) -> None:
        """Graceful: nothing new is dispatched; in-flight steps get the grace period.

        In a cluster the node then drops its leases at once, so other nodes resume its
        unfinished runs without waiting for the lease TTL.
        """
        self._stopping = True
        if self._retention is not None:
            self._retention.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention
        if self.runner is not None:
            self.runner.drain()
        pending = list(self._tasks.values())
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.options.shutdown_grace_secs)
            for task in late:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*late, return_exceptions=True)
        if self.cluster is not None:
            await self.cluster.leave()
        await self.runtime.close()  # before the endpoint: launched workers leave cleanly
        await self.endpoint.close()
        await self.store.close()

    # -- runs ------------------------------------------------------------------------------------

    def is_local(self, run_id: str) -> bool:
        return run_id in self._tasks

    async def load_flow(self, flow_id: str) -> Flow:
        """Flows are content-addressed, so a parsed flow can be reused for every run of it."""
        cached = self._flows.get(flow_id)
        if cached is not None:
            return cached
        flow = await self._read_flow(flow_id)
        if len(self._flows) >= FLOW_CACHE_SIZE:
            self._flows.pop(next(iter(self._flows)))
        self._flows[flow_id] = flow
        return flow

    async def _read_flow(self, flow_id: str) -> Flow:
        blob = await self.blobs.get(flow_id)
        if blob is None:
            raise NotFound(f"flow {flow_id} not found")
        try:
            return parse_flow(blob.json(), f"flow {flow_id}")
        except (UserError, ValueError) as exc:
            raise InvalidRequest(f"stored flow {flow_id} is not a valid flow: {exc}") from None

    async def create_run(
        self,
        flow_id: str,
        inputs: list[Any],
        variables: dict[str, Any],
        overrides: dict[str, Any] | None,
        max_concurrency: int,
    ) -> str:
        """Journal the run and start executing it; returns once `root_run_created` is durable."""
        assert self.runner is not None
        flow = await self.load_flow(flow_id)
        request = RunRequest(flow, inputs, variables, overrides, max_concurrency, flow_id)
        created: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self.runner.start(request, created=created))
        try:
            run_id = await created
        except UserError as exc:
            raise InvalidRequest(str(exc)) from None
        self._track(run_id, task)
        return run_id

    async def wait(self, run_id: str, timeout: float | None) -> None:
        """Until the run is terminal or `timeout` passes (never an error on timeout)."""
        task = self._tasks.get(run_id)
        limit = DEFAULT_WAIT_SECS if timeout is None else timeout
        deadline = time.monotonic() + limit
        if task is not None:
            await asyncio.wait({task}, timeout=limit)  # the run's own errors stay in the task
        if self.cluster is not None:  # executing elsewhere, or handed over while we waited
            remaining = deadline - time.monotonic()
            if remaining > 0:
                await self.cluster.wait_done(run_id, remaining)

    async def cancel_run(self, run_id: str) -> None:
        """Cancel a running root run; a finished run is left as it is."""
        assert self.runner is not None
        run = await self.get_run(run_id)
        if run.parent_run_id is not None:
            raise InvalidRequest(f"{run_id} is a sub-run; cancel its root {run.root_run_id}")
        if run.status in TERMINAL:
            return
        if not await self.runner.cancel(run_id, "cancelled by a client"):
            if self.cluster is not None and await self.cluster.cancel_elsewhere(run_id):
                return
            raise NotFound(f"run {run_id} is not executing on this node")
        await self.wait(run_id, 1.0)

    async def get_run(self, run_id: str) -> RunRecord:
        run = await self.store.get_run(run_id)
        if run is None:
            raise NotFound(f"run {run_id} not found")
        return run

    async def delete_run(self, run_id: str) -> None:
        run = await self.get_run(run_id)
        if run.status not in TERMINAL or run_id in self._tasks:
            raise InvalidRequest("RUN_NOT_DELETABLE: the run is still running")
        await self.store.delete_tree(run.root_run_id)
