"""The durable state interface: journal, checkpoints, derived run metadata, local leases.

One `StateStore` per backend (memory, SQLite; etcd with the mesh issue). The journal is the source
of truth: `append` makes events durable *and* projects them into the metadata views (runs, items,
step statuses) in the same transaction, so metadata can never run ahead of or behind the journal.
Every backend must pass tests/state/test_store_contract.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .events import Event

# Run / item statuses (durability.md §2) as stored.
RUNNING, COMPLETED, FAILED, CANCELLED = "running", "completed", "failed", "cancelled"
RECOVERY_FAILED = "recoveryFailed"
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED, RECOVERY_FAILED})

# Step statuses in metadata.
STEP_RUNNING, STEP_COMPLETED, STEP_FAILED = "running", "completed", "failed"
STEP_NEEDED = "runnable"


FOLLOW_POLL_SECS = 0.1


class StoreError(Exception):
    """The state directory or database cannot be used (locked, corrupt, unwritable, disk full).

    The message names the path and says what to do; the CLI prints it as one line.
    """


class StoreUnavailable(StoreError):
    """The store's backend (etcd) did not answer in time; the message names its endpoints."""


class LeaseLost(StoreError):
    """A fenced append was refused: another process now owns the run tree."""


@dataclass(frozen=True)
class JournalEntry:
    root_run_id: str
    sequence: int
    timestamp: str  # RFC 3339 UTC, assigned by the store
    event: Event


@dataclass
class ItemRecord:
    item_index: int
    status: str  # running | completed | failed | cancelled
    result: dict[str, Any] | None = None  # FlowResult JSON
    completed_at: str | None = None


@dataclass
class RunRecord:
    """Derived from `root_run_created`/`sub_run_created`, `item_completed`, `run_completed`."""

    run_id: str
    root_run_id: str
    parent_run_id: str | None
    flow_id: str
    flow_name: str | None
    status: str
    created_at: str
    completed_at: str | None
    items: list[ItemRecord]
    variables: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] | None = None
    max_concurrency: int | None = None
    created_at_seqno: int = 0
    finished_at_seqno: int | None = None


@dataclass
class StepRecord:
    """One (run, item, step): from `steps_needed`, `tasks_started`, `task_completed`."""

    run_id: str
    item_index: int
    step_index: int
    step_id: str | None
    status: str  # runnable | running | completed | failed
    attempts: int = 0
    task_id: str | None = None
    result: dict[str, Any] | None = None
    journal_seqno: int = 0
    updated_at: str | None = None


@dataclass(frozen=True)
class RunFilter:
    status: str | None = None
    flow_name: str | None = None
    root_run_id: str | None = None  # the whole tree, root included
    parent_run_id: str | None = None
    roots_only: bool = False
    limit: int | None = None
    offset: int = 0


@dataclass(frozen=True)
class ActiveRoot:
    root_run_id: str
    latest_sequence: int
    entry_count: int


@dataclass(frozen=True)
class Checkpoint:
    sequence: int
    data: bytes


class StateStore(ABC):
    """Async; safe to share between the runs of one process."""

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Create/migrate/lock as needed; raise StoreError with a clear message if unusable."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush pending writes and release resources."""

    # -- leases (fencing between processes of one machine) ------------------------------------

    @abstractmethod
    async def acquire_lease(self, root_run_id: str, owner: str, ttl_secs: float) -> str | None:
        """Take or renew the tree's lease. Returns None on success, else the live owner's id.

        An expired lease (owner stopped renewing, e.g. killed) is taken over.
        """

    @abstractmethod
    async def release_lease(self, root_run_id: str, owner: str) -> None:
        """Drop the lease if `owner` holds it (absent is fine)."""

    # -- journal ---------------------------------------------------------------------------------

    @abstractmethod
    async def append(
        self, root_run_id: str, events: Sequence[Event], *, owner: str | None = None
    ) -> list[int]:
        """Durably append `events` (all or none) and project them into metadata.

        Returns their sequences (strictly increasing per root). With `owner`, the append is fenced:
        it raises LeaseLost unless `owner` holds the root's lease at commit time. Concurrent calls
        (from many runs) may be grouped into one transaction.
        """

    @abstractmethod
    async def read_journal(self, root_run_id: str, from_sequence: int = 0) -> list[JournalEntry]:
        """Entries with sequence ≥ `from_sequence`, in order."""

    @abstractmethod
    async def latest_sequence(self, root_run_id: str) -> int | None: ...

    async def follow(
        self, root_run_id: str, from_sequence: int = 0
    ) -> AsyncGenerator[JournalEntry, None]:
        """Entries ≥ `from_sequence`, then new ones as they are written (unbounded).

        This default polls every FOLLOW_POLL_SECS (durability.md §7.3 allows ≤ 500 ms); a store
        shared between nodes (etcd) pushes instead.
        """
        next_sequence = from_sequence
        while True:
            entries = await self.read_journal(root_run_id, next_sequence)
            for entry in entries:
                next_sequence = entry.sequence + 1
                yield entry
            if not entries:
                await asyncio.sleep(FOLLOW_POLL_SECS)

    @abstractmethod
    async def list_active_roots(self) -> list[ActiveRoot]:
        """Roots with journal entries whose root run is not terminal."""

    @abstractmethod
    async def compact(self, root_run_id: str, up_to_sequence: int) -> int:
        """Drop entries with sequence ≤ `up_to_sequence` (a checkpoint covers them)."""

    @abstractmethod
    async def finalize(self, root_run_id: str) -> None:
        """Replace a finished tree's journal by one `run_completed` record with the item results.

        Also deletes its checkpoint; metadata stays (retention, durability.md §15 G5).
        """

    @abstractmethod
    async def delete_tree(self, root_run_id: str) -> None:
        """Delete journal, checkpoint, metadata and step rows of the tree."""

    # -- checkpoints -----------------------------------------------------------------------------

    @abstractmethod
    async def put_checkpoint(self, root_run_id: str, sequence: int, data: bytes) -> None: ...

    @abstractmethod
    async def get_checkpoint(self, root_run_id: str) -> Checkpoint | None: ...

    @abstractmethod
    async def delete_checkpoint(self, root_run_id: str) -> None: ...

    # -- metadata (read side; written only through `append`) -----------------------------------

    @abstractmethod
    async def get_run(self, run_id: str) -> RunRecord | None: ...

    @abstractmethod
    async def list_runs(self, filters: RunFilter | None = None) -> list[RunRecord]:
        """Newest first (by creation sequence, then creation time)."""

    @abstractmethod
    async def get_steps(self, run_id: str, item_index: int | None = None) -> list[StepRecord]:
        """Ordered by step index, then item index."""

    @abstractmethod
    async def finished_roots(self, finished_before: str) -> list[str]:
        """Terminal root runs completed before the RFC 3339 time whose journal is not finalized."""

    async def collect_garbage(self) -> int:
        """Delete storage kept outside the store's own records that nothing references any more
        (the etcd store's spilled large values); how many items went. Run by retention passes."""
        return 0


class FaultInjector:
    """Test hook: SIGKILL this process after the N-th durable journal event (crash tests).

    Enabled by `STEPFLOW_FAULT_KILL_AFTER_EVENTS=N`; backends call `after_durable(count)` right
    after a commit, before returning to any caller, so the kill lands between a write and the
    action it precedes.
    """

    def __init__(self) -> None:
        raw = os.environ.get("STEPFLOW_FAULT_KILL_AFTER_EVENTS")
        self.limit = int(raw) if raw else None
        self.count = 0

    def after_durable(self, events: int) -> None:
        if self.limit is None:
            return
        self.count += events
        if self.count >= self.limit:
            os.kill(os.getpid(), signal.SIGKILL)
