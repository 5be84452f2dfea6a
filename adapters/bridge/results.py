"""A step attempt's FlowResult as the CompleteTask a node turns back into the same FlowResult.

The node's `grpc` plugin reads `response.output` as success and `error{code, message, data}` as
`FlowResult.failure(code, message, data)` (runtime/worker_api/servicer.py, plugins/grpc.py), so a
failure computed on the bridge — including a plugin-level failure already shaped by
`plugin_failure` — arrives unchanged, and the node's executor retries it exactly as in-process.
"""

from __future__ import annotations

import logging
from typing import Any

from ...runtime._pb.stepflow.v1 import common_pb2, orchestrator_pb2, tasks_pb2
from ...runtime.errors import FlowResult
from ...runtime.worker_api.convert import to_struct, to_value

log = logging.getLogger("stepflow.bridge")

ERROR_CODE_PREFIX = "TASK_ERROR_CODE_"


def error_code_name(code: str) -> str:
    """`COMPONENT_FAILED` → `TASK_ERROR_CODE_COMPONENT_FAILED` (number 3 on the wire); a name the
    enum does not know is sent as WORKER_ERROR."""
    name = ERROR_CODE_PREFIX + code
    try:
        common_pb2.TaskErrorCode.Value(name)
    except ValueError:
        return "TASK_ERROR_CODE_WORKER_ERROR"
    return name


def task_error(code: str, message: str, data: Any = None) -> orchestrator_pb2.TaskError:
    error = orchestrator_pb2.TaskError(code=error_code_name(code), message=message)
    if isinstance(data, dict):
        try:
            error.data.CopyFrom(to_struct(data))
        except TypeError:
            log.warning("error data of a %s failure is not JSON; dropped", code)
    elif data is not None:
        # TaskError.data is a Struct: only objects cross the wire (worker-protocol.md §1.1).
        log.debug("non-object error data of a %s failure cannot be sent; dropped", code)
    return error


def complete_request(task_id: str, result: FlowResult, run_id: str | None) -> Any:
    """CompleteTaskRequest carrying `result`."""
    request = orchestrator_pb2.CompleteTaskRequest(task_id=task_id)
    if run_id:
        request.run_id = run_id
    if result.error is None:
        try:
            output = to_value(result.value)
        except TypeError as exc:
            request.error.CopyFrom(task_error("WORKER_ERROR", f"output is not JSON: {exc}"))
            return request
        request.response.CopyFrom(tasks_pb2.ComponentExecuteResponse(output=output))
        return request
    error = result.error
    request.error.CopyFrom(
        task_error(error.code, error.message, error.data if error.has_data else None)
    )
    return request
