"""How each journal event changes the metadata views (runs, items, step statuses).

Written once so every backend derives identical metadata from identical journals: a backend only
implements the few primitive reads/writes of `MetadataView` (inside its append transaction) and
calls `project` for each entry it makes durable. Events about runs the store does not know are
ignored (logged at debug): metadata is derived, so a stray event must never break an append.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from . import events as ev
from .base import (
    CANCELLED,
    COMPLETED,
    FAILED,
    RUNNING,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_NEEDED,
    STEP_RUNNING,
    TERMINAL,
    ItemRecord,
    JournalEntry,
    RunRecord,
    StepRecord,
)

log = logging.getLogger("stepflow.state")


class MetadataView(Protocol):
    """Primitive metadata operations a backend provides (all within the append transaction)."""

    def run_status(self, run_id: str) -> str | None:
        """The run's status, or None when the run is unknown."""

    def insert_run(self, run: RunRecord) -> None:
        """Store a new run with its item rows (the caller checked it does not exist)."""

    def put_item(self, run_id: str, item: ItemRecord) -> None:
        """Replace one item row of an existing run."""

    def item_indices(self, run_id: str, status: str) -> list[int]:
        """Indices of the run's items currently in `status`."""

    def set_run_status(
        self, run_id: str, status: str, completed_at: str, finished_at_seqno: int
    ) -> None: ...

    def get_step(self, run_id: str, item_index: int, step_index: int) -> StepRecord | None: ...

    def put_step(self, step: StepRecord) -> None:
        """Insert or replace the step row keyed by (run_id, item_index, step_index)."""


def item_status(result: dict[str, Any]) -> str:
    """FlowResult JSON → item/step status."""
    return COMPLETED if result.get("outcome") == "success" else FAILED


def project(entry: JournalEntry, view: MetadataView) -> None:
    """Apply one durable journal entry to the metadata views."""
    event = entry.event
    kind = event.get("type")
    handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
    if handler is not None:
        handler(entry, event, view)


def _known(view: MetadataView, run_id: str, entry: JournalEntry) -> bool:
    if view.run_status(run_id) is not None:
        return True
    log.debug(
        "journal %s seq %d: %s for unknown run %s ignored",
        entry.root_run_id,
        entry.sequence,
        entry.event.get("type"),
        run_id,
    )
    return False


def _run_created(entry: JournalEntry, event: ev.Event, view: MetadataView) -> None:
    run_id = event["run_id"]
    if view.run_status(run_id) is not None:
        return  # creation is idempotent (durability.md §7.1)
    is_root = event["type"] == ev.ROOT_RUN_CREATED
    view.insert_run(
        RunRecord(
            run_id=run_id,
            root_run_id=run_id if is_root else entry.root_run_id,
            parent_run_id=None if is_root else event.get("parent_run_id"),
            flow_id=event["flow_id"],
            flow_name=event.get("flow_name"),
            status=RUNNING,
            created_at=entry.timestamp,
            completed_at=None,
            items=[ItemRecord(i, RUNNING) for i in range(len(event.get("inputs", [])))],
            variables=dict(event.get("variables") or {}),
            overrides=event.get("overrides"),
            max_concurrency=event.get("max_concurrency"),
            created_at_seqno=entry.sequence,
        )
    )


def _steps_needed(entry: JournalEntry, event: ev.Event, view: MetadataView) -> None:
    """`steps_needed` / `steps_unblocked`: add runnable rows; never downgrade an existing one."""
    run_id, item_index = event["run_id"], event["item_index"]
    if not _known(view, run_id, entry):
        return
    for step_index in event.get("step_indices", []):
        if view.get_step(run_id, item_index, step_index) is None:
            view.put_step(
                StepRecord(
                    run_id=run_id,
                    item_index=item_index,
                    step_index=step_index,
                    step_id=None,
                    status=STEP_NEEDED,
                    journal_seqno=entry.sequence,
                    updated_at=entry.timestamp,
                )
            )


def _step(view: MetadataView, run_id: str, item_index: int, step_index: int) -> StepRecord:
    found = view.get_step(run_id, item_index, step_index)
    return found or StepRecord(run_id, item_index, step_index, None, STEP_NEEDED)


def _tasks_started(entry: JournalEntry, event: ev.Event, view: MetadataView) -> None:
    for run in event.get("runs", []):
        run_id = run["run_id"]
        if not _known(view, run_id, entry):
            continue
        for task in run.get("tasks", []):
            step = _step(view, run_id, task["item_index"], task["step_index"])
            step.status = STEP_RUNNING
            step.attempts = max(step.attempts, int(task.get("attempt", 0)))
            step.task_id = task.get("task_id", step.task_id)
            step.step_id = task.get("step_id") or step.step_id
            step.journal_seqno, step.updated_at = entry.sequence, entry.timestamp
            view.put_step(step)


def _task_completed(entry: JournalEntry, event: ev.Event, view: MetadataView) -> None:
    run_id = event["run_id"]
    if not _known(view, run_id, entry):
        return
    result = event["result"]
    step = _step(view, run_id, event["item_index"], event["step_index"])
    step.status = STEP_COMPLETED if item_status(result) == COMPLETED else STEP_FAILED
    step.result = result
    step.step_id = event.get("step_id") or step.step_id
    step.journal_seqno, step.updated_at = entry.sequence, entry.timestamp
    view.put_step(step)


def _item_completed(entry: JournalEntry, event: ev.Event, view: MetadataView) -> None:
    run_id = event["run_id"]
    if not _known(view, run_id, entry):
        return
    result = event["result"]
    item = ItemRecord(event["item_index"], item_status(result), result, entry.timestamp)
    view.put_item(run_id, item)


def _run_completed(entry: JournalEntry, event: ev.Event, view: MetadataView) -> None:
    """Terminal status; `cancelled` is never overwritten (§15 G1), and cancels open items."""
    run_id, status = event["run_id"], event["status"]
    current = view.run_status(run_id)
    if current is None:
        _known(view, run_id, entry)
        return
    if current == CANCELLED and status in TERMINAL:
        return
    view.set_run_status(run_id, status, entry.timestamp, entry.sequence)
    if status == CANCELLED:
        for index in view.item_indices(run_id, RUNNING):
            view.put_item(run_id, ItemRecord(index, CANCELLED, None, entry.timestamp))


_HANDLERS = {
    ev.ROOT_RUN_CREATED: _run_created,
    ev.SUB_RUN_CREATED: _run_created,
    ev.STEPS_NEEDED: _steps_needed,
    ev.STEPS_UNBLOCKED: _steps_needed,
    ev.TASKS_STARTED: _tasks_started,
    ev.TASK_COMPLETED: _task_completed,
    ev.ITEM_COMPLETED: _item_completed,
    ev.RUN_COMPLETED: _run_completed,
    # RUN_CANCEL_REQUESTED changes no metadata: the run stays `running` until `run_completed`.
}
