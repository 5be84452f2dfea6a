"""Journal events (durability.md §3): plain JSON objects with a snake_case `type`.

Constructors here are the only place event shapes are spelled out; the executor's journal observer
writes them, the stores project them into metadata, and replay reads them back. Project-only fields
(`flow_name`, `step_id`, `max_concurrency`, `overrides`, `traceparent`) ride along; upstream
readers ignore them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..errors import FlowResult

Event = dict[str, Any]

ROOT_RUN_CREATED = "root_run_created"
STEPS_NEEDED = "steps_needed"
TASKS_STARTED = "tasks_started"
TASK_COMPLETED = "task_completed"
STEPS_UNBLOCKED = "steps_unblocked"
ITEM_COMPLETED = "item_completed"
SUB_RUN_CREATED = "sub_run_created"
RUN_CANCEL_REQUESTED = "run_cancel_requested"
RUN_COMPLETED = "run_completed"

EVENT_TYPES = (
    ROOT_RUN_CREATED,
    STEPS_NEEDED,
    TASKS_STARTED,
    TASK_COMPLETED,
    STEPS_UNBLOCKED,
    ITEM_COMPLETED,
    SUB_RUN_CREATED,
    RUN_CANCEL_REQUESTED,
    RUN_COMPLETED,
)


def root_run_created(
    run_id: str,
    flow_id: str,
    inputs: Sequence[Any],
    variables: dict[str, Any],
    *,
    flow_name: str | None = None,
    max_concurrency: int | None = None,
    overrides: dict[str, Any] | None = None,
    traceparent: str | None = None,
) -> Event:
    """`traceparent`: the W3C trace context the run was submitted in (durability.md §14), so a
    resumed or failed-over tree continues the same trace."""
    event: Event = {
        "type": ROOT_RUN_CREATED,
        "run_id": run_id,
        "flow_id": flow_id,
        "inputs": list(inputs),
        "variables": variables,
    }
    if flow_name is not None:
        event["flow_name"] = flow_name
    if max_concurrency is not None:
        event["max_concurrency"] = max_concurrency
    if overrides:
        event["overrides"] = overrides
    if traceparent:
        event["traceparent"] = traceparent
    return event


def sub_run_created(
    run_id: str,
    flow_id: str,
    inputs: Sequence[Any],
    *,
    parent_run_id: str,
    item_index: int,
    step_index: int,
    subflow_key: str,
    flow_name: str | None = None,
    max_concurrency: int | None = None,
) -> Event:
    event: Event = {
        "type": SUB_RUN_CREATED,
        "run_id": run_id,
        "flow_id": flow_id,
        "inputs": list(inputs),
        "variables": {},
        "parent_run_id": parent_run_id,
        "item_index": item_index,
        "step_index": step_index,
        "subflow_key": subflow_key,
    }
    if flow_name is not None:
        event["flow_name"] = flow_name
    if max_concurrency is not None:
        event["max_concurrency"] = max_concurrency
    return event


def steps_needed(
    run_id: str, item_index: int, step_indices: Sequence[int], step_ids: Sequence[str] = ()
) -> Event:
    event: Event = {
        "type": STEPS_NEEDED,
        "run_id": run_id,
        "item_index": item_index,
        "step_indices": list(step_indices),
    }
    if step_ids:
        event["step_ids"] = list(step_ids)  # project field: readers need no flow to name them
    return event


def tasks_started(runs: dict[str, list[dict[str, Any]]]) -> Event:
    """`runs`: run id → [{item_index, step_index, attempt, task_id, step_id}]."""
    return {
        "type": TASKS_STARTED,
        "runs": [{"run_id": run_id, "tasks": tasks} for run_id, tasks in runs.items()],
    }


def task_completed(
    run_id: str, item_index: int, step_index: int, step_id: str, result: FlowResult
) -> Event:
    return {
        "type": TASK_COMPLETED,
        "run_id": run_id,
        "item_index": item_index,
        "step_index": step_index,
        "step_id": step_id,
        "result": result.to_json(),
    }


def steps_unblocked(
    run_id: str, item_index: int, step_indices: Sequence[int], step_ids: Sequence[str] = ()
) -> Event:
    event: Event = {
        "type": STEPS_UNBLOCKED,
        "run_id": run_id,
        "item_index": item_index,
        "step_indices": list(step_indices),
    }
    if step_ids:
        event["step_ids"] = list(step_ids)
    return event


def item_completed(run_id: str, item_index: int, result: FlowResult) -> Event:
    return {
        "type": ITEM_COMPLETED,
        "run_id": run_id,
        "item_index": item_index,
        "result": result.to_json(),
    }


def run_cancel_requested(run_id: str, reason: str | None = None) -> Event:
    event: Event = {"type": RUN_CANCEL_REQUESTED, "run_id": run_id}
    if reason:
        event["reason"] = reason
    return event


def run_completed(run_id: str, status: str) -> Event:
    return {"type": RUN_COMPLETED, "run_id": run_id, "status": status}


def event_run_ids(event: Event) -> list[str]:
    """The runs an event is about (a `tasks_started` round may span several runs of a tree)."""
    if event["type"] == TASKS_STARTED:
        return [r["run_id"] for r in event["runs"]]
    return [event["run_id"]]


def encode_event(event: Any) -> str:
    """Journal/metadata text of a JSON value: compact, key order kept; non-JSON values fail.

    The stdlib encoder (C-accelerated) is enough: journal text is never content-addressed.
    """
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
