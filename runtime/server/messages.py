"""Run metadata (state/base.py records) as stepflow.v1 messages (durability.md §2, §13)."""

from __future__ import annotations

from typing import Any

from google.protobuf import timestamp_pb2

from .._pb.stepflow.v1 import common_pb2, runs_pb2
from ..state.base import ItemRecord, RunRecord, StepRecord
from ..worker_api.convert import to_value

RUN_STATUS = {
    "running": common_pb2.EXECUTION_STATUS_RUNNING,
    "completed": common_pb2.EXECUTION_STATUS_COMPLETED,
    "failed": common_pb2.EXECUTION_STATUS_FAILED,
    "cancelled": common_pb2.EXECUTION_STATUS_CANCELLED,
    "paused": common_pb2.EXECUTION_STATUS_PAUSED,
    "recoveryFailed": common_pb2.EXECUTION_STATUS_RECOVERY_FAILED,
}
STATUS_NAMES = {number: name for name, number in RUN_STATUS.items()}
STEP_STATUS = {  # step metadata statuses → ExecutionStatus numbers (durability.md §2)
    "blocked": common_pb2.EXECUTION_STATUS_UNSPECIFIED,
    "runnable": common_pb2.EXECUTION_STATUS_UNSPECIFIED,
    "running": common_pb2.EXECUTION_STATUS_RUNNING,
    "completed": common_pb2.EXECUTION_STATUS_COMPLETED,
    "skipped": common_pb2.EXECUTION_STATUS_COMPLETED,
    "failed": common_pb2.EXECUTION_STATUS_FAILED,
}


def timestamp(text: str | None) -> timestamp_pb2.Timestamp | None:
    if not text:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromJsonString(text)
    return stamp


def error_code(code: str | None) -> int:
    name = f"TASK_ERROR_CODE_{code}" if code else ""
    try:
        return int(common_pb2.TaskErrorCode.Value(name))
    except ValueError:
        return int(common_pb2.TASK_ERROR_CODE_UNSPECIFIED)


def run_summary(run: RunRecord, owner: str | None = None) -> runs_pb2.RunSummary:
    counts = {status: sum(1 for i in run.items if i.status == status) for status in RUN_STATUS}
    summary = runs_pb2.RunSummary(
        run_id=run.run_id,
        flow_id=run.flow_id,
        status=RUN_STATUS.get(run.status, common_pb2.EXECUTION_STATUS_UNSPECIFIED),
        items=common_pb2.ItemStatistics(
            total=len(run.items),
            completed=counts["completed"],
            running=counts["running"],
            failed=counts["failed"],
            cancelled=counts["cancelled"],
        ),
        root_run_id=run.root_run_id,
        created_at_seqno=run.created_at_seqno,
    )
    if run.flow_name is not None:
        summary.flow_name = run.flow_name
    _set_time(summary, "created_at", run.created_at)
    _set_time(summary, "completed_at", run.completed_at)
    if run.parent_run_id:
        summary.parent_run_id = run.parent_run_id
    if owner:
        summary.orchestrator_id = owner
    if run.finished_at_seqno is not None:
        summary.finished_at_seqno = run.finished_at_seqno
    return summary


def item_result(item: ItemRecord) -> common_pb2.ItemResult:
    message = common_pb2.ItemResult(
        item_index=item.item_index,
        status=RUN_STATUS.get(item.status, common_pb2.EXECUTION_STATUS_UNSPECIFIED),
    )
    _fill_result(message, item.result)
    _set_time(message, "completed_at", item.completed_at)
    return message


def item_results(run: RunRecord, by_completion: bool = False) -> list[common_pb2.ItemResult]:
    """Items by index, or by completion: finished first by completion time, then index (§7.1)."""
    items = list(run.items)
    if by_completion:
        items.sort(key=lambda i: (i.completed_at is None, i.completed_at or "", i.item_index))
    return [item_result(i) for i in items]


def step_status(step: StepRecord, component: str | None = None) -> runs_pb2.StepStatus:
    message = runs_pb2.StepStatus(
        step_id=step.step_id or "",
        step_index=step.step_index,
        item_index=step.item_index,
        status=STEP_STATUS.get(step.status, common_pb2.EXECUTION_STATUS_UNSPECIFIED),
        journal_seqno=step.journal_seqno,
    )
    if component:
        message.component = component
    _fill_result(message, step.result)
    _set_time(message, "updated_at", step.updated_at)
    if step.status in ("completed", "failed"):
        _set_time(message, "completed_at", step.updated_at)
    return message


def _fill_result(message: Any, result: dict[str, Any] | None) -> None:
    """`output` on success, `error_message`/`error_code` on failure."""
    if not result:
        return
    if result.get("outcome") == "success":
        message.output.CopyFrom(to_value(result.get("result")))
    else:
        error = result.get("error") or {}
        message.error_message = str(error.get("message", ""))
        message.error_code = error_code(error.get("code"))


def _set_time(message: Any, field: str, text: str | None) -> None:
    stamp = timestamp(text)
    if stamp is not None:
        getattr(message, field).CopyFrom(stamp)
