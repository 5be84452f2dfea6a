"""A stepflow-py worker for the mesh tests: `tick` records where and how often it ran.

Each execution appends `<tag> <label>` to the file `log` names (label: MESH_WORKER_LABEL), so a
test can tell which worker (region) ran a step and that a journalled step never ran twice.
"""

from __future__ import annotations

import asyncio
import os

from stepflow_py.worker.grpc_worker import run_grpc_worker
from stepflow_py.worker.server import StepflowServer

server = StepflowServer(include_builtins=False)
LABEL = os.environ.get("MESH_WORKER_LABEL", "worker")


@server.component
async def tick(input: dict) -> dict:
    """Sleep `seconds`, then record the execution and return the tag and the worker label."""
    await asyncio.sleep(float(input.get("seconds", 0)))
    with open(input["log"], "a", encoding="utf-8") as log:
        log.write(f"{input['tag']} {LABEL}\n")
    return {"tag": input["tag"], "label": LABEL}


if __name__ == "__main__":
    asyncio.run(
        run_grpc_worker(
            server=server,
            tasks_url=os.environ["STEPFLOW_TASKS_URL"],
            queue_name=os.environ.get("STEPFLOW_QUEUE_NAME", "mesh"),
        )
    )
