"""Journal entries as client-facing StatusEvents, live (durability.md §13, GetRunEvents).

The journal is the event log: a client reads it from `since` and then follows new entries until
the requested run's RunCompleted. Events of other runs of the tree are dropped unless sub-runs
are asked for; step ids come from the events themselves (written with them).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from .._pb.stepflow.v1 import common_pb2, runs_pb2
from ..state import events as ev
from ..state.base import JournalEntry, StateStore
from ..worker_api.convert import to_value
from .messages import RUN_STATUS, timestamp

TYPE_OF_FIELD = {
    "run_created": runs_pb2.STATUS_EVENT_TYPE_RUN_CREATED,
    "step_started": runs_pb2.STATUS_EVENT_TYPE_STEP_STARTED,
    "step_completed": runs_pb2.STATUS_EVENT_TYPE_STEP_COMPLETED,
    "step_ready": runs_pb2.STATUS_EVENT_TYPE_STEP_READY,
    "item_completed": runs_pb2.STATUS_EVENT_TYPE_ITEM_COMPLETED,
    "run_completed": runs_pb2.STATUS_EVENT_TYPE_RUN_COMPLETED,
    "sub_run_created": runs_pb2.STATUS_EVENT_TYPE_SUB_RUN_CREATED,
    "steps_needed": runs_pb2.STATUS_EVENT_TYPE_STEPS_NEEDED,
}


def status_events(entry: JournalEntry, include_results: bool) -> Iterator[tuple[str, Any]]:
    """(run id, StatusEvent) pairs for one journal entry; `tasks_started` may give several."""
    event = entry.event
    kind = event.get("type")
    body: Any

    def wrap(run_id: str, field: str, body: Any) -> tuple[str, Any]:
        message = runs_pb2.StatusEvent(sequence_number=entry.sequence)
        stamp = timestamp(entry.timestamp)
        if stamp is not None:
            message.timestamp.CopyFrom(stamp)
        getattr(message, field).CopyFrom(body)
        return run_id, message

    if kind == ev.ROOT_RUN_CREATED:
        body = runs_pb2.RunCreatedEvent(
            run_id=event["run_id"], flow_id=event["flow_id"], item_count=len(event["inputs"])
        )
        yield wrap(event["run_id"], "run_created", body)
    elif kind == ev.SUB_RUN_CREATED:
        body = runs_pb2.SubRunCreatedEvent(
            run_id=event["run_id"], parent_run_id=event["parent_run_id"],
            flow_id=event["flow_id"], item_count=len(event["inputs"]),
        )  # fmt: skip
        yield wrap(event["run_id"], "sub_run_created", body)
    elif kind == ev.STEPS_NEEDED:
        body = runs_pb2.StepsNeededEvent(
            run_id=event["run_id"], item_index=event["item_index"],
            step_ids=event.get("step_ids") or [],
        )  # fmt: skip
        yield wrap(event["run_id"], "steps_needed", body)
    elif kind == ev.TASKS_STARTED:
        for group in event["runs"]:
            for task in group["tasks"]:
                body = runs_pb2.StepStartedEvent(
                    run_id=group["run_id"], item_index=task["item_index"],
                    step_index=task["step_index"], step_id=task.get("step_id", ""),
                    attempt=task["attempt"],
                )  # fmt: skip
                yield wrap(group["run_id"], "step_started", body)
    elif kind == ev.TASK_COMPLETED:
        result = event["result"]
        ok = result.get("outcome") == "success"
        status = common_pb2.EXECUTION_STATUS_COMPLETED if ok else common_pb2.EXECUTION_STATUS_FAILED
        body = runs_pb2.StepCompletedEvent(
            run_id=event["run_id"], item_index=event["item_index"],
            step_index=event["step_index"], step_id=event.get("step_id", ""),
            status=status,
        )  # fmt: skip
        if include_results:
            body.result.CopyFrom(to_value(result))
        yield wrap(event["run_id"], "step_completed", body)
    elif kind == ev.STEPS_UNBLOCKED:
        ids = event.get("step_ids") or []
        for position, step_index in enumerate(event["step_indices"]):
            body = runs_pb2.StepReadyEvent(
                run_id=event["run_id"], item_index=event["item_index"], step_index=step_index,
                step_id=ids[position] if position < len(ids) else "",
            )  # fmt: skip
            yield wrap(event["run_id"], "step_ready", body)
    elif kind == ev.ITEM_COMPLETED:
        body = runs_pb2.ItemCompletedEvent(run_id=event["run_id"], item_index=event["item_index"])
        if include_results:
            body.result.CopyFrom(to_value(event["result"]))
        yield wrap(event["run_id"], "item_completed", body)
    elif kind == ev.RUN_COMPLETED:
        body = runs_pb2.RunCompletedEvent(
            run_id=event["run_id"],
            status=RUN_STATUS.get(event["status"], common_pb2.EXECUTION_STATUS_UNSPECIFIED),
        )
        yield wrap(event["run_id"], "run_completed", body)


async def follow_run(
    store: StateStore,
    root_run_id: str,
    run_id: str,
    *,
    since: int = 0,
    event_types: frozenset[int] = frozenset(),
    include_sub_runs: bool = False,
    include_results: bool = False,
) -> AsyncIterator[Any]:
    """StatusEvents of `run_id` from `since` on, ending after its RunCompleted."""
    run = await store.get_run(run_id)
    latest = await store.latest_sequence(root_run_id)
    if run is not None and run.finished_at_seqno is not None and (latest or 0) < since:
        return  # finished, and nothing at or after `since` will ever be written
    async with contextlib.aclosing(store.follow(root_run_id, since)) as entries:
        async for entry in entries:
            for owner, message in status_events(entry, include_results):
                if owner != run_id and not include_sub_runs:
                    continue
                field = message.WhichOneof("event")
                if event_types and TYPE_OF_FIELD[field] not in event_types:
                    continue
                yield message
            if entry.event.get("type") == ev.RUN_COMPLETED and entry.event["run_id"] == run_id:
                return
