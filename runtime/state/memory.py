"""In-process `StateStore` (`storageConfig: {type: inMemory}`, `stepflow test`, unit tests).

Nothing survives the process; it exists so the executor runs the same journal-first code path
everywhere. Events are stored as a JSON round trip, so callers see exactly what SQLite would return.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from .base import (
    TERMINAL,
    ActiveRoot,
    Checkpoint,
    FaultInjector,
    ItemRecord,
    JournalEntry,
    LeaseLost,
    RunFilter,
    RunRecord,
    StateStore,
    StepRecord,
)
from .common import (
    Clock,
    canonical_time,
    final_record,
    matches,
    newest_first,
    not_finished,
)
from .events import Event, encode_event
from .projection import project


@dataclass
class _Root:
    """One root's journal: the entries kept and the last sequence ever assigned."""

    entries: list[JournalEntry] = field(default_factory=list)
    last_sequence: int = 0
    finalized: bool = False


class _View:
    """`MetadataView` over the store's dicts (lock held), with an undo log for atomic appends."""

    def __init__(self, store: MemoryStateStore) -> None:
        self._s = store
        self._undo: list[Callable[[], object]] = []

    def undo(self) -> None:
        for action in reversed(self._undo):
            action()

    def run_status(self, run_id: str) -> str | None:
        run = self._s._runs.get(run_id)
        return run.status if run else None

    def insert_run(self, run: RunRecord) -> None:
        runs = self._s._runs
        runs[run.run_id] = run
        self._undo.append(lambda: runs.pop(run.run_id, None))

    def put_item(self, run_id: str, item: ItemRecord) -> None:
        items = self._s._runs[run_id].items
        index = item.item_index
        if 0 <= index < len(items):
            old = items[index]
            items[index] = item
            self._undo.append(lambda: items.__setitem__(index, old))

    def item_indices(self, run_id: str, status: str) -> list[int]:
        return [i.item_index for i in self._s._runs[run_id].items if i.status == status]

    def set_run_status(
        self, run_id: str, status: str, completed_at: str, finished_at_seqno: int
    ) -> None:
        runs = self._s._runs
        run, old = runs[run_id], replace(runs[run_id])
        self._undo.append(lambda: runs.__setitem__(run_id, old))
        run.status, run.completed_at = status, completed_at
        run.finished_at_seqno = finished_at_seqno

    def get_step(self, run_id: str, item_index: int, step_index: int) -> StepRecord | None:
        found = self._s._steps.get((run_id, item_index, step_index))
        return replace(found) if found else None

    def put_step(self, step: StepRecord) -> None:
        steps = self._s._steps
        key = (step.run_id, step.item_index, step.step_index)
        old = steps.get(key)
        steps[key] = step
        if old is None:
            self._undo.append(lambda: steps.pop(key, None))
        else:
            self._undo.append(lambda: steps.__setitem__(key, old))


class MemoryStateStore(StateStore):
    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._clock = Clock()
        self._faults = FaultInjector()
        self._roots: dict[str, _Root] = {}
        self._runs: dict[str, RunRecord] = {}
        self._steps: dict[tuple[str, int, int], StepRecord] = {}
        self._checkpoints: dict[str, Checkpoint] = {}
        self._leases: dict[str, tuple[str, float]] = {}  # root → (owner, monotonic expiry)

    # -- leases ----------------------------------------------------------------------------------

    async def acquire_lease(self, root_run_id: str, owner: str, ttl_secs: float) -> str | None:
        async with self._lock:
            now = time.monotonic()
            held = self._leases.get(root_run_id)
            if held and held[0] != owner and held[1] > now:
                return held[0]
            self._leases[root_run_id] = (owner, now + ttl_secs)
            return None

    async def release_lease(self, root_run_id: str, owner: str) -> None:
        async with self._lock:
            held = self._leases.get(root_run_id)
            if held and held[0] == owner:
                del self._leases[root_run_id]

    def _holds(self, root_run_id: str, owner: str) -> bool:
        held = self._leases.get(root_run_id)
        return held is not None and held[0] == owner and held[1] > time.monotonic()

    # -- journal ---------------------------------------------------------------------------------

    async def append(
        self, root_run_id: str, events: Sequence[Event], *, owner: str | None = None
    ) -> list[int]:
        # Serialise before taking the lock: a bad event fails this call and changes nothing.
        copies = [json.loads(encode_event(e)) for e in events]
        async with self._lock:
            if owner is not None and not self._holds(root_run_id, owner):
                raise LeaseLost(f"lease of run tree {root_run_id} is not held by {owner}")
            root = self._roots.setdefault(root_run_id, _Root())
            before = (len(root.entries), root.last_sequence)
            timestamp = self._clock.now()
            view = _View(self)
            try:
                for event in copies:
                    root.last_sequence += 1
                    entry = JournalEntry(root_run_id, root.last_sequence, timestamp, event)
                    root.entries.append(entry)
                    project(entry, view)
            except BaseException:
                # All or none, as in a database transaction.
                view.undo()
                del root.entries[before[0] :]
                root.last_sequence = before[1]
                if not root.last_sequence:
                    del self._roots[root_run_id]
                raise
            if copies:
                self._faults.after_durable(len(copies))
            return list(range(before[1] + 1, root.last_sequence + 1))

    async def read_journal(self, root_run_id: str, from_sequence: int = 0) -> list[JournalEntry]:
        async with self._lock:
            root = self._roots.get(root_run_id)
            if root is None:
                return []
            return [copy.deepcopy(e) for e in root.entries if e.sequence >= from_sequence]

    async def latest_sequence(self, root_run_id: str) -> int | None:
        async with self._lock:
            root = self._roots.get(root_run_id)
            return root.last_sequence if root and root.last_sequence else None

    async def list_active_roots(self) -> list[ActiveRoot]:
        async with self._lock:
            active = []
            for root_id, root in self._roots.items():
                run = self._runs.get(root_id)
                if root.last_sequence and not (run and run.status in TERMINAL):
                    active.append(ActiveRoot(root_id, root.last_sequence, len(root.entries)))
            return active

    async def compact(self, root_run_id: str, up_to_sequence: int) -> int:
        async with self._lock:
            root = self._roots.get(root_run_id)
            if root is None:
                return 0
            kept = [e for e in root.entries if e.sequence > up_to_sequence]
            dropped = len(root.entries) - len(kept)
            root.entries = kept
            return dropped

    async def finalize(self, root_run_id: str) -> None:
        async with self._lock:
            run = self._runs.get(root_run_id)
            root = self._roots.get(root_run_id)
            if run is None or root is None:
                return
            if run.status not in TERMINAL:
                raise ValueError(not_finished(root_run_id, run.status))
            event = final_record(run)
            root.last_sequence += 1
            entry = JournalEntry(root_run_id, root.last_sequence, self._clock.now(), event)
            root.entries = [entry]
            root.finalized = True
            self._checkpoints.pop(root_run_id, None)

    async def delete_tree(self, root_run_id: str) -> None:
        async with self._lock:
            doomed = {r.run_id for r in self._runs.values() if r.root_run_id == root_run_id}
            doomed.add(root_run_id)
            for run_id in doomed:
                self._runs.pop(run_id, None)
            for key in [k for k in self._steps if k[0] in doomed]:
                del self._steps[key]
            self._roots.pop(root_run_id, None)
            self._checkpoints.pop(root_run_id, None)
            self._leases.pop(root_run_id, None)

    # -- checkpoints -----------------------------------------------------------------------------

    async def put_checkpoint(self, root_run_id: str, sequence: int, data: bytes) -> None:
        async with self._lock:
            self._checkpoints[root_run_id] = Checkpoint(sequence, bytes(data))

    async def get_checkpoint(self, root_run_id: str) -> Checkpoint | None:
        async with self._lock:
            return self._checkpoints.get(root_run_id)

    async def delete_checkpoint(self, root_run_id: str) -> None:
        async with self._lock:
            self._checkpoints.pop(root_run_id, None)

    # -- metadata --------------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> RunRecord | None:
        async with self._lock:
            run = self._runs.get(run_id)
            return copy.deepcopy(run) if run else None

    async def list_runs(self, filters: RunFilter | None = None) -> list[RunRecord]:
        filters = filters or RunFilter()
        async with self._lock:
            runs = [r for r in self._runs.values() if matches(r, filters)]
            page = newest_first(runs)[filters.offset :]
            if filters.limit is not None:
                page = page[: filters.limit]
            return copy.deepcopy(page)

    async def get_steps(self, run_id: str, item_index: int | None = None) -> list[StepRecord]:
        async with self._lock:
            steps = [
                s
                for (rid, item, _), s in self._steps.items()
                if rid == run_id and (item_index is None or item == item_index)
            ]
            return copy.deepcopy(sorted(steps, key=lambda s: (s.step_index, s.item_index)))

    async def finished_roots(self, finished_before: str) -> list[str]:
        before = canonical_time(finished_before)
        async with self._lock:
            return [
                root_id
                for root_id, root in self._roots.items()
                if not root.finalized
                and (run := self._runs.get(root_id)) is not None
                and run.status in TERMINAL
                and run.completed_at is not None
                and run.completed_at < before
            ]
