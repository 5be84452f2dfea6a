"""What a legacy stdio server may ask the runtime while one of its components runs (§6.4-6.5).

Every callback runs on behalf of a step call (`StepCall`): its blob store, and its `run_subflow`
for nested runs, which makes them sub-runs of the calling step (keyed like the builtin `eval`, so
a re-executed step finds them, and not counted against the run's concurrency while it waits).

`flows/submit_batch` and `runs/submit` would create new *root* runs upstream, which needs a node's
run service; a plugin only has the calling step. They are served here as sub-runs that run to
completion before the submit call returns ("wait" semantics), with the results remembered under
the returned id for `flows/get_batch` / `runs/get` (in memory, per plugin instance).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..runtime.blobs import BLOB_TYPES, is_blob_id
from ..runtime.errors import FlowResult, UserError
from ..runtime.model import Flow, parse_flow
from ..runtime.overrides import apply_overrides
from ..runtime.plugins.base import StepCall
from .jsonrpc import INTERNAL_ERROR, INVALID_PARAMS, RpcError

# Legacy SDK code for "runtime error / blob not found" (worker-protocol.md §6.6).
NOT_FOUND = -32004

# TaskErrorCode numbers (worker-protocol.md §5): FlowResults on this wire carry integer codes.
TASK_ERROR_NUMBERS = {
    "UNSPECIFIED": 0,
    "TIMEOUT": 1,
    "INVALID_INPUT": 2,
    "COMPONENT_FAILED": 3,
    "CANCELLED": 4,
    "UNREACHABLE": 5,
    "COMPONENT_NOT_FOUND": 6,
    "RESOURCE_UNAVAILABLE": 7,
    "EXPRESSION_FAILURE": 8,
    "ORCHESTRATOR_ERROR": 9,
    "WORKER_ERROR": 10,
}


def wire_result(result: FlowResult) -> dict[str, Any]:
    """A FlowResult in the legacy wire form: integer error codes."""
    if result.error is None:
        return {"outcome": "success", "result": result.value}
    error: dict[str, Any] = {
        "code": TASK_ERROR_NUMBERS.get(result.error.code, TASK_ERROR_NUMBERS["WORKER_ERROR"]),
        "message": result.error.message,
    }
    if result.error.has_data:
        error["data"] = result.error.data
    return {"outcome": "failed", "error": error}


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _optional_int(params: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = params.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise RpcError(INVALID_PARAMS, f"field '{name}' must be a non-negative integer")
        return value or None  # 0 = no limit
    return None


async def load_flow(call: StepCall, flow_id: Any, overrides: Any = None) -> Flow:
    """The stored flow `flow_id`, with `overrides` applied."""
    if not is_blob_id(flow_id):
        raise RpcError(INVALID_PARAMS, f"flow_id must be 64 lowercase hex characters: {flow_id}")
    blob = await call.blobs.get(flow_id)
    if blob is None:
        raise RpcError(NOT_FOUND, f"Flow not found: {flow_id}", {"flow_id": flow_id})
    try:
        flow = parse_flow(blob.json(), f"flow {flow_id}")
        return apply_overrides(flow, overrides, "overrides") if overrides is not None else flow
    except (ValueError, UnicodeDecodeError):
        raise RpcError(INVALID_PARAMS, f"blob {flow_id} does not hold a JSON flow") from None
    except UserError as exc:
        raise RpcError(INVALID_PARAMS, str(exc)) from None


# -- blobs ---------------------------------------------------------------------------------------


async def put_blob(call: StepCall, params: dict[str, Any]) -> Any:
    if "data" not in params:
        raise RpcError(INVALID_PARAMS, "missing field 'data'")
    blob_type = params.get("blob_type") or "data"
    if blob_type not in BLOB_TYPES:
        raise RpcError(INVALID_PARAMS, f"blob_type must be one of {', '.join(BLOB_TYPES)}")
    return {"blob_id": await call.blobs.put_json(params["data"], str(blob_type))}


async def _read_blob(call: StepCall, params: dict[str, Any]) -> tuple[Any, str]:
    blob_id = params.get("blob_id")
    if not isinstance(blob_id, str) or not is_blob_id(blob_id):
        raise RpcError(INVALID_PARAMS, f"blob_id must be 64 lowercase hex characters: {blob_id}")
    blob = await call.blobs.get(blob_id)
    if blob is None:
        raise RpcError(NOT_FOUND, f"Blob not found: {blob_id}", {"blob_id": blob_id})
    try:
        data = blob.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RpcError(INTERNAL_ERROR, f"Blob {blob_id} does not hold JSON") from None
    # Legacy servers know only `flow` and `data` blobs.
    return data, "flow" if blob.blob_type == "flow" else "data"


async def get_blob(call: StepCall, params: dict[str, Any]) -> Any:
    data, blob_type = await _read_blob(call, params)
    return {"data": data, "blob_type": blob_type}


async def get_blob_underscore(call: StepCall, params: dict[str, Any]) -> Any:
    data, _ = await _read_blob(call, params)
    return {"data": data}


# -- flows ---------------------------------------------------------------------------------------


async def evaluate_flow(call: StepCall, params: dict[str, Any]) -> Any:
    if "input" not in params:
        raise RpcError(INVALID_PARAMS, "missing field 'input'")
    flow = await load_flow(call, params.get("flow_id"), params.get("overrides"))
    [result] = await call.run_subflow(flow, [params["input"]], None)
    return {"result": wire_result(result)}


async def get_flow_metadata(call: StepCall, params: dict[str, Any]) -> Any:
    flow = await load_flow(call, params.get("flow_id"))
    out: dict[str, Any] = {"flow_metadata": dict(flow.metadata)}
    step_id = params.get("step_id")
    if isinstance(step_id, str) and step_id in flow.steps_by_id:
        out["step_metadata"] = dict(flow.steps_by_id[step_id].metadata)
    return out


@dataclass
class FinishedRuns:
    """A batch (`flows/submit_batch`) or run (`runs/submit`) served as a finished sub-run."""

    run_id: str
    flow_id: str
    flow_name: str | None
    results: list[FlowResult]
    created_at: str
    completed_at: str

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if not r.ok)

    @property
    def completed(self) -> int:
        return len(self.results) - self.failed


class BatchRegistry:
    """Finished batches and runs by id, for the lifetime of one plugin instance."""

    def __init__(self) -> None:
        self._runs: dict[str, FinishedRuns] = {}

    async def run(
        self, call: StepCall, flow_id: Any, inputs: Any, overrides: Any, limit: int | None
    ) -> FinishedRuns:
        if not isinstance(inputs, list):
            raise RpcError(INVALID_PARAMS, "field 'inputs' must be a list")
        flow = await load_flow(call, flow_id, overrides)
        created = _now()
        results = await call.run_subflow(flow, list(inputs), limit) if inputs else []
        finished = FinishedRuns(str(uuid.uuid4()), flow_id, flow.name, results, created, _now())
        self._runs[finished.run_id] = finished
        return finished

    def get(self, run_id: Any, what: str) -> FinishedRuns:
        found = self._runs.get(run_id) if isinstance(run_id, str) else None
        if found is None:
            raise RpcError(NOT_FOUND, f"{what} not found: {run_id}", {f"{what.lower()}_id": run_id})
        return found

    # flows/submit_batch, flows/get_batch (2025-07 … 2025-11 servers)

    async def submit_batch(self, call: StepCall, params: dict[str, Any]) -> Any:
        limit = _optional_int(params, "max_concurrency")
        batch = await self.run(
            call, params.get("flow_id"), params.get("inputs"), params.get("overrides"), limit
        )
        return {"batch_id": batch.run_id, "total_runs": len(batch.results)}

    async def get_batch(self, call: StepCall, params: dict[str, Any]) -> Any:
        batch = self.get(params.get("batch_id"), "Batch")
        details: dict[str, Any] = {
            "batch_id": batch.run_id,
            "flow_id": batch.flow_id,
            "total_runs": len(batch.results),
            "status": "completed",
            "created_at": batch.created_at,
            "completed_runs": batch.completed,
            "running_runs": 0,
            "failed_runs": batch.failed,
            "cancelled_runs": 0,
            "paused_runs": 0,
            "completed_at": batch.completed_at,
        }
        if batch.flow_name is not None:
            details["flow_name"] = batch.flow_name
        out: dict[str, Any] = {"details": details}
        if params.get("include_results"):
            out["outputs"] = [
                {
                    "batch_input_index": i,
                    "status": "completed" if r.ok else "failed",
                    "result": wire_result(r),
                }
                for i, r in enumerate(batch.results)
            ]
        return out

    # runs/submit, runs/get (2025-12 / 2026-01 servers; camelCase)

    def _run_status(self, run: FinishedRuns, with_results: bool) -> dict[str, Any]:
        status: dict[str, Any] = {
            "runId": run.run_id,
            "flowId": run.flow_id,
            "status": "failed" if run.failed else "completed",
            "items": {
                "total": len(run.results),
                "completed": run.completed,
                "running": 0,
                "failed": run.failed,
                "cancelled": 0,
            },
            "createdAt": run.created_at,
            "completedAt": run.completed_at,
        }
        if run.flow_name is not None:
            status["flowName"] = run.flow_name
        if with_results:
            status["results"] = [
                {
                    "itemIndex": i,
                    "status": "completed" if r.ok else "failed",
                    "result": wire_result(r),
                    "completedAt": run.completed_at,
                }
                for i, r in enumerate(run.results)
            ]
        return status

    async def submit_run(self, call: StepCall, params: dict[str, Any]) -> Any:
        limit = _optional_int(params, "maxConcurrency", "max_concurrency")
        run = await self.run(
            call, params.get("flowId"), params.get("inputs"), params.get("overrides"), limit
        )
        return self._run_status(run, bool(params.get("wait")))

    async def get_run(self, call: StepCall, params: dict[str, Any]) -> Any:
        run = self.get(params.get("runId"), "Run")
        return self._run_status(run, bool(params.get("includeResults")))


Callback = Callable[[StepCall, dict[str, Any]], Awaitable[Any]]


def callbacks(batches: BatchRegistry) -> dict[str, Callback]:
    """Server → runtime methods by name, both dialects."""
    return {
        "blobs/put": put_blob,
        "blobs/get": get_blob,
        "put_blob": put_blob,
        "get_blob": get_blob_underscore,
        "flows/evaluate": evaluate_flow,
        "flows/get_metadata": get_flow_metadata,
        "flows/submit_batch": batches.submit_batch,
        "flows/get_batch": batches.get_batch,
        "runs/submit": batches.submit_run,
        "runs/get": batches.get_run,
    }


__all__ = ["TASK_ERROR_NUMBERS", "BatchRegistry", "callbacks", "load_flow", "wire_result"]
