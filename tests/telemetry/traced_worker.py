"""A stepflow-py 0.13 worker with the SDK's own observability set-up (OTLP from the env).

The runtime launches it as a `grpc` plugin worker; STEPFLOW_OTLP_ENDPOINT and
STEPFLOW_TRACE_ENABLED come from the node (telemetry.worker_env), so its `execute <component>`
spans reach the node's collector.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from stepflow_py.worker.grpc_worker import run_grpc_worker
from stepflow_py.worker.observability import setup_observability
from stepflow_py.worker.server import StepflowServer

server = StepflowServer(include_builtins=False)


@server.component
def shout(input: dict) -> dict:
    """Upper-cases `text`."""
    return {"text": str(input.get("text", "")).upper()}


@server.component
def flaky(input: dict) -> dict:
    """Fails (COMPONENT_FAILED) the first time for a marker path, succeeds afterwards."""
    marker = Path(input["marker"])
    if not marker.exists():
        marker.write_text("failed once\n")
        raise ValueError("flaky: first attempt fails")
    return {"ok": True}


@server.component
def always_fails(input: dict) -> dict:
    """Fails with COMPONENT_FAILED every time."""
    raise ValueError("always fails")


@server.component
async def slow(input: dict) -> dict:
    """Sleeps `seconds`."""
    await asyncio.sleep(float(input.get("seconds", 1)))
    return {"slept": True}


if __name__ == "__main__":
    setup_observability()
    asyncio.run(
        run_grpc_worker(
            server=server,
            tasks_url=os.environ.get("STEPFLOW_TASKS_URL", "localhost:7837"),
            queue_name=os.environ.get("STEPFLOW_QUEUE_NAME", "python"),
        )
    )
