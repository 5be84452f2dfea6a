"""`eval`, `map` and `iterate`: components that run nested flows in the same run tree."""

from __future__ import annotations

from typing import Any

from ..errors import FlowResult, UserError
from ..model import Flow, parse_flow
from ..plugins.base import StepCall
from .base import Builtin, BuiltinError, field_of, invalid_input, schema
from .blobs import read_json_blob

FLOW_RESULT_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"outcome": {}}}


def _flow_from(value: Any, field: str) -> Flow:
    try:
        return parse_flow(value, f"input.{field}")
    except UserError as exc:
        raise invalid_input(f"field '{field}' is not a valid flow: {exc}") from None


async def _eval(call: StepCall) -> Any:
    field_of(call, "flow_id", "string")
    if not isinstance(call.input, dict) or "input" not in call.input:
        raise invalid_input("missing required field 'input'")
    flow = _flow_from(await read_json_blob(call, "flow_id"), "flow_id")
    [result] = await call.run_subflow(flow, [call.input["input"]], None)
    return {"result": result.to_json(), "run_id": call.run_id}


async def _map(call: StepCall) -> Any:
    flow = _flow_from(field_of(call, "workflow", "object"), "workflow")
    items = field_of(call, "items", "array")
    limit = field_of(call, "max_concurrency", "integer", required=False)
    if limit is not None and limit < 1:
        raise invalid_input("field 'max_concurrency' must be at least 1")
    results = await call.run_subflow(flow, list(items), limit) if items else []
    ok = sum(1 for r in results if r.ok)
    return {
        "results": [r.to_json() for r in results],
        "successful": ok,
        "failed": len(results) - ok,
    }


async def _iterate(call: StepCall) -> Any:
    flow = _flow_from(field_of(call, "flow", "object"), "flow")
    if not isinstance(call.input, dict) or "initial_input" not in call.input:
        raise invalid_input("missing required field 'initial_input'")
    limit = field_of(call, "max_iterations", "integer", required=False)
    if limit is not None and limit < 0:
        raise invalid_input("field 'max_iterations' must not be negative")
    limit = 1000 if limit is None else limit
    current = call.input["initial_input"]
    for iteration in range(1, limit + 1):
        [result] = await call.run_subflow(flow, [current], None)
        if result.error is not None:
            raise NestedFailure(result)
        value = result.value
        if isinstance(value, dict) and "result" in value:
            return {"result": value["result"], "iterations": iteration, "terminated": False}
        if isinstance(value, dict) and "next" in value:
            current = value["next"]
            continue
        raise invalid_input("Workflow result must contain either 'result' or 'next' field")
    return {"result": current, "iterations": limit, "terminated": True}


class NestedFailure(BuiltinError):
    """A sub-run failure that becomes the step's failure unchanged (code, message, data)."""

    def __init__(self, result: FlowResult) -> None:
        assert result.error is not None
        super().__init__(result.error.code, result.error.message)
        self.result = result


FLOW_SCHEMA = {"type": "object", "description": "A flow (wrap it in $literal)"}
EVAL = Builtin(
    "eval",
    "Runs a flow stored as a blob on one input.",
    _eval,
    schema({"flow_id": {"type": "string"}, "input": {}}, ["flow_id", "input"]),
    schema({"result": FLOW_RESULT_SCHEMA, "run_id": {"type": "string"}}, ["result", "run_id"]),
)
MAP = Builtin(
    "map",
    "Runs a flow once per item, concurrently, and collects the results in order.",
    _map,
    schema(
        {
            "workflow": FLOW_SCHEMA,
            "items": {"type": "array"},
            "max_concurrency": {"type": "integer"},
        },
        ["workflow", "items"],
    ),
    schema(
        {
            "results": {"type": "array", "items": FLOW_RESULT_SCHEMA},
            "successful": {"type": "integer"},
            "failed": {"type": "integer"},
        },
        ["results", "successful", "failed"],
    ),
)
ITERATE = Builtin(
    "iterate",
    "Runs a flow repeatedly, feeding each 'next' back in, until it returns 'result'.",
    _iterate,
    schema(
        {"flow": FLOW_SCHEMA, "initial_input": {}, "max_iterations": {"type": "integer"}},
        ["flow", "initial_input"],
    ),
    schema(
        {"result": {}, "iterations": {"type": "integer"}, "terminated": {"type": "boolean"}},
        ["result", "iterations", "terminated"],
    ),
)
