"""Durable runs in this process: create or resume a run tree under a lease, journal first.

Write order for a new run (durability.md §4): new id → lease → flow blob → `root_run_created` →
execute. Resume replays the journal (from the latest checkpoint) and continues the same tree:
completed steps are never re-run, in-flight ones get their old task id and attempt + 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from . import telemetry
from .engine import RunOutcome, Runtime
from .errors import UserError
from .executor import RunExecution, RunObserver
from .ids import new_id
from .model import Flow, parse_flow
from .overrides import apply_overrides
from .state import events as ev
from .state.base import TERMINAL, StateStore, StoreError
from .state.recorder import JournalRecorder
from .state.replay import ReplayError, TreeState, replay
from .state.settings import DurabilitySettings

log = logging.getLogger("stepflow.durable")


def process_owner_id() -> str:
    """`host:pid:nonce`: lets a later process on this host see that the owner is dead."""
    return f"{socket.gethostname()}:{os.getpid()}:{new_id()[-8:]}"


def _owner_is_dead(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass
class RunRequest:
    flow: Flow  # as written, before overrides (overrides are journalled and re-applied)
    inputs: list[Any]
    variables: dict[str, Any]
    overrides: dict[str, Any] | None
    max_concurrency: int
    flow_id: str | None = None  # set when the flow is already stored as a blob (a node's flows)


class DurableRunner:
    """Runs root run trees of one `Runtime` against one `StateStore`."""

    def __init__(
        self,
        runtime: Runtime,
        store: StateStore,
        settings: DurabilitySettings | None = None,
        owner: str | None = None,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.settings = settings or DurabilitySettings()
        self.owner = owner or process_owner_id()
        self.executions: dict[str, RunExecution] = {}  # root run id → its executing tree
        self._recorders: dict[str, JournalRecorder] = {}
        self.active_run_id: str | None = None  # the last run started or resumed (CLI messages)

    async def start(
        self,
        request: RunRequest,
        observers: Sequence[RunObserver] = (),
        run_id: str | None = None,
        created: asyncio.Future[str] | None = None,
    ) -> RunOutcome:
        """Create the run (journal first) and execute it to the end.

        `created` resolves with the run id once `root_run_created` is durable (a server answers
        its client then), or with the error that prevented creation.
        """
        run_id = run_id or new_id()
        try:
            return await self._start(request, observers, run_id, created)
        except BaseException as exc:
            if created is not None and not created.done():
                created.set_exception(exc)
            raise

    async def _start(
        self,
        request: RunRequest,
        observers: Sequence[RunObserver],
        run_id: str,
        created: asyncio.Future[str] | None,
    ) -> RunOutcome:
        self.active_run_id = run_id
        async with self._lease(run_id):
            flow_id = request.flow_id or await self.runtime.blobs.put_json(request.flow.raw, "flow")
            event = ev.root_run_created(
                run_id,
                flow_id,
                request.inputs,
                request.variables,
                flow_name=request.flow.name,
                max_concurrency=request.max_concurrency,
                overrides=request.overrides,
                traceparent=telemetry.current_traceparent(),
            )
            tree = TreeState(run_id)
            recorder = JournalRecorder(self.store, tree, self.owner, self.settings)
            await recorder.write([event])
            if created is not None and not created.done():
                created.set_result(run_id)
            flow = apply_overrides(request.flow, request.overrides)
            return await self._execute(flow, tree, recorder, observers, fresh=True)

    async def resume(self, run_id: str, observers: Sequence[RunObserver] = ()) -> RunOutcome:
        record = await self.store.get_run(run_id)
        if record is None:
            raise UserError(f"no run with id {run_id}", "resume")
        if record.parent_run_id is not None:
            raise UserError(
                f"{run_id} is a sub-run; resume its root run {record.root_run_id}", "resume"
            )
        self.active_run_id = run_id
        async with self._lease(run_id):
            tree = await self.load_tree(run_id)
            root = tree.root
            if root.status in TERMINAL:
                results = [root.item_results[i] for i in sorted(root.item_results)]
                return RunOutcome(run_id, root.status, results)
            blob = await self.runtime.blobs.get(root.flow_id)
            if blob is None:
                raise UserError(
                    f"the flow of run {run_id} ({root.flow_id}) is not in the blob store"
                )
            flow = apply_overrides(parse_flow(blob.json(), f"flow {root.flow_id}"), root.overrides)
            recorder = JournalRecorder(self.store, tree, self.owner, self.settings)
            return await self._execute(flow, tree, recorder, observers, fresh=False)

    async def load_tree(self, run_id: str) -> TreeState:
        """Replay the tree's journal from its latest checkpoint."""
        checkpoint = await self.store.get_checkpoint(run_id)
        start = checkpoint.sequence + 1 if checkpoint else 0
        entries = await self.store.read_journal(run_id, start)
        try:
            tree = replay(run_id, entries, checkpoint.data if checkpoint else None)
        except ReplayError as exc:
            raise UserError(f"cannot replay the journal of run {run_id}: {exc}") from None
        if checkpoint:
            log.info(
                "Restoring from checkpoint at sequence %d for tree %s", checkpoint.sequence, run_id
            )
        return tree

    async def _execute(
        self,
        flow: Flow,
        tree: TreeState,
        recorder: JournalRecorder,
        observers: Sequence[RunObserver],
        *,
        fresh: bool,
    ) -> RunOutcome:
        root = tree.root
        execution = self.runtime.new_run(
            flow,
            root.inputs,
            variables=root.variables,
            max_concurrency=root.max_concurrency or 10,
            run_id=root.run_id,
            flow_id=root.flow_id,
            extra_observers=[recorder, *observers],
            recovered=None if fresh else tree,
        )
        self.executions[root.run_id] = execution
        self._recorders[root.run_id] = recorder
        try:
            results = await execution.execute()
        finally:
            self.executions.pop(root.run_id, None)
            self._recorders.pop(root.run_id, None)
        if execution.status in TERMINAL and (recorder.checkpointed or not fresh):
            await self.store.delete_checkpoint(root.run_id)
        return RunOutcome(root.run_id, execution.status, results)

    async def cancel(self, run_id: str, reason: str | None = None) -> bool:
        """Cancel a tree executing here: journal first, then stop it (durability.md §15 G1).

        False when the run is not executing in this process.
        """
        execution, recorder = self.executions.get(run_id), self._recorders.get(run_id)
        if execution is None or recorder is None:
            return False
        if not execution.tree.cancelled:
            await recorder.write([ev.run_cancel_requested(run_id, reason)])
            execution.tree.cancel()
        return True

    def drain(self, run_id: str | None = None) -> None:
        """Ctrl-C / shutdown: dispatch nothing new; in-flight steps finish and are journalled."""
        for root, execution in list(self.executions.items()):
            if run_id is None or root == run_id:
                execution.tree.drain()

    @contextlib.asynccontextmanager
    async def _lease(self, run_id: str) -> AsyncIterator[None]:
        """Hold the tree's lease (renewed in the background) while the body runs."""
        ttl = self.settings.lease_ttl_secs
        holder = await self.store.acquire_lease(run_id, self.owner, ttl)
        if holder is not None and _owner_is_dead(holder):
            log.info("run %s was owned by a process that is gone (%s); taking over", run_id, holder)
            await self.store.release_lease(run_id, holder)
            holder = await self.store.acquire_lease(run_id, self.owner, ttl)
        if holder is not None:
            raise UserError(f"run {run_id} is being executed by another process ({holder})")
        renew = asyncio.create_task(self._renew(run_id, ttl))
        telemetry.lease_acquired()
        try:
            yield
        finally:
            telemetry.lease_released()
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew
            with contextlib.suppress(StoreError):
                await self.store.release_lease(run_id, self.owner)

    async def _renew(self, run_id: str, ttl: float) -> None:
        while True:
            await asyncio.sleep(max(ttl / 3, 0.05))
            try:
                holder = await self.store.acquire_lease(run_id, self.owner, ttl)
            except StoreError as exc:  # e.g. etcd restarting: fenced appends decide, keep trying
                log.warning("cannot renew the lease of run %s: %s", run_id, exc)
                continue
            if holder is not None:
                log.error("lost the lease of run %s to %s; stopping it", run_id, holder)
                self.drain(run_id)
                return

    async def finalize_expired(self) -> int:
        """Retention: replace journals of trees finished longer ago than `retentionSecs`."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.settings.retention_secs)
        roots = await self.store.finished_roots(cutoff.isoformat().replace("+00:00", "Z"))
        for root in roots:
            await self.store.finalize(root)
        return len(roots)
