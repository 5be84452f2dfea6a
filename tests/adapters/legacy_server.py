"""A legacy stdio component server built on PyPI `stepflow-py==0.7.0` (its own venv).

Run by tests/adapters/test_stdio.py as `<legacy venv>/bin/python legacy_server.py`; it is what a
user's 2025 component server looked like: `StepflowStdioServer`, `@server.component`, a `context`
second parameter for callbacks into the runtime.

One deliberate change to the SDK's behaviour: stock 0.7.0 wraps *every* exception raised while
executing a component — including its own input-validation and SDK error classes — into
`StepflowExecutionError` (-32003, COMPONENT_FAILED), so no 0.7.0 component can report
INVALID_INPUT. `PassThroughServer` re-raises the SDK error the component raised (and turns a
msgspec input validation error into `InputValidationError`, -32002), as later SDKs do, so the
runtime's mapping of those codes is exercised with real SDK error encoding.
"""

# No `from __future__ import annotations`: the SDK reads component types from real annotations.
import asyncio
import os
import sys
from typing import Any

import msgspec
from stepflow_py import StepflowContext
from stepflow_py.exceptions import (
    InputValidationError,
    StepflowError,
    StepflowExecutionError,
    StepflowFailed,
)
from stepflow_py.generated_protocol import BlobType
from stepflow_py.server import StepflowServer
from stepflow_py.stdio_server import StepflowStdioServer


class PassThroughServer(StepflowServer):
    async def _handle_component_execute(self, request: Any, context: Any = None) -> Any:
        try:
            return await super()._handle_component_execute(request, context)
        except StepflowExecutionError as exc:
            cause = exc.__cause__
            if isinstance(cause, msgspec.ValidationError):
                raise InputValidationError(str(cause)) from cause
            if isinstance(cause, StepflowError):
                raise cause from None
            raise


server = StepflowStdioServer(PassThroughServer())


class AddInput(msgspec.Struct):
    a: int
    b: int


class AddOutput(msgspec.Struct):
    sum: int


@server.component
def add(input: AddInput) -> AddOutput:
    """Adds two integers."""
    return AddOutput(sum=input.a + input.b)


@server.component
def echo(input: dict) -> dict:
    return input


@server.component
def whoami(input: dict, context: StepflowContext) -> dict:
    return {
        "attempt": context.attempt,
        "step_id": context.step_id,
        "run_id": context.run_id,
        "flow_id": context.flow_id,
        "pid": os.getpid(),
        "greeting": os.environ.get("GREETING"),
        "cwd": os.getcwd(),
    }


@server.component
async def blobs(input: dict, context: StepflowContext) -> dict:
    """Stores `data` through blobs/put and reads it back through blobs/get."""
    blob_id = await context.put_blob(input["data"])
    return {"blob_id": blob_id, "copy": await context.get_blob(blob_id)}


_meetings: dict[str, tuple[int, asyncio.Event]] = {}


async def meet(key: str, n: int) -> None:
    """Wait until `n` calls arrived here under `key`: they are all executing at the same time."""
    arrived, event = _meetings.get(key, (0, asyncio.Event()))
    _meetings[key] = (arrived + 1, event)
    if arrived + 1 >= n:
        event.set()
    await asyncio.wait_for(event.wait(), 30)


@server.component
async def evaluate(input: dict, context: StepflowContext) -> dict:
    """Stores `flow` as a flow blob and evaluates it on `input` (flows/evaluate); with `meet`,
    first waits until that many evaluate calls are in flight."""
    if "meet" in input:
        await meet("evaluate", input["meet"])
    flow_id = await context.put_blob(input["flow"], BlobType.flow)
    try:
        return {"result": await context.evaluate_flow_by_id(flow_id, input["input"])}
    except StepflowFailed as exc:
        return {"failed": {"code": exc.error_code, "message": exc.message}}


@server.component
async def metadata(input: dict, context: StepflowContext) -> dict:
    return await context.get_metadata()


@server.component
async def batch(input: dict, context: StepflowContext) -> dict:
    """flows/submit_batch + flows/get_batch (with wait and results)."""
    flow_id = await context.put_blob(input["flow"], BlobType.flow)
    batch_id = await context.submit_batch_by_id(flow_id, input["inputs"], 2)
    details, outputs = await context.get_batch(batch_id, wait=True, include_results=True)
    return {
        "total_runs": details.total_runs,
        "completed_runs": details.completed_runs,
        "failed_runs": details.failed_runs,
        "outputs": msgspec.to_builtins(outputs),
    }


@server.component
def fail(input: dict) -> dict:
    raise ValueError(f"boom: {input.get('why', 'no reason')}")


class StrictInput(msgspec.Struct):
    count: int


@server.component
def strict(input: StrictInput) -> dict:
    return {"count": input.count}


@server.component
async def slow(input: dict) -> dict:
    await asyncio.sleep(float(input["seconds"]))
    return {"slept": input["seconds"]}


@server.component
async def rendezvous(input: dict) -> dict:
    """Returns only once `n` calls are executing at the same time (proves multiplexing)."""
    await meet("rendezvous", input["n"])
    return {"item": input["item"]}


@server.component
def crash_once(input: dict, context: StepflowContext) -> dict:
    """Kills the whole server on the first call (marker file absent), answers afterwards."""
    marker = input["marker"]
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        print("crash_once: exiting on purpose", file=sys.stderr, flush=True)
        os._exit(17)
    return {"attempt": context.attempt, "value": input["value"]}


if __name__ == "__main__":
    from stepflow_py.observability import setup_observability

    setup_observability()  # as the SDK's own `stepflow_py` entry point does (logs to stderr)
    server.run()
