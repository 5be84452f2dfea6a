"""Python components for the examples, served by an unmodified stepflow-py 0.13 worker.

The runtime starts this script as a `grpc` plugin worker (see stepflow-config.yml); it reads
STEPFLOW_TASKS_URL and STEPFLOW_QUEUE_NAME from the environment the runtime gives it.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections import Counter
from pathlib import Path

from stepflow_py.worker.context import StepflowContext
from stepflow_py.worker.grpc_worker import run_grpc_worker
from stepflow_py.worker.server import StepflowServer

server = StepflowServer(include_builtins=False)
WORD = re.compile(r"[a-z']+")


@server.component
def word_stats(input: dict) -> dict:
    """Word count and the most frequent words of `text` (top `top`, default 3)."""
    words = WORD.findall(str(input.get("text", "")).lower())
    top = int(input.get("top", 3))
    return {"words": len(words), "top": [w for w, _ in Counter(words).most_common(top)]}


@server.component
def score_review(input: dict) -> dict:
    """A crude sentiment score in [-1, 1] from star ratings and a few cue words."""
    text = str(input.get("text", "")).lower()
    cues = sum(text.count(w) for w in ("great", "lasts", "love")) - sum(
        text.count(w) for w in ("cracked", "never", "logging me out", "scratches")
    )
    stars = (int(input.get("stars", 3)) - 3) / 2
    return {"id": input.get("id"), "score": max(-1.0, min(1.0, round(stars + 0.2 * cues, 2)))}


@server.component
async def archive(input: dict, context: StepflowContext) -> dict:
    """Stores `data` as a blob through the runtime and reads it back (a component calling back)."""
    blob_id = await context.put_blob(input["data"])
    return {"blob_id": blob_id, "copy": await context.get_blob(blob_id)}


@server.component
async def run_flow(input: dict, context: StepflowContext) -> dict:
    """Runs `flow` over `inputs` as a new run through the runtime and returns the outputs."""
    status = await context.submit_run(
        input["flow"], input.get("inputs") or [{}], wait=True, timeout_secs=60
    )
    outputs = [r.get("output") for r in status.get("results", [])]
    return {"status": status.get("status"), "outputs": outputs}


@server.component
async def slow(input: dict) -> dict:
    """Sleeps `seconds`, then echoes `value` (timeouts and cancellation)."""
    await asyncio.sleep(float(input.get("seconds", 1)))
    return {"value": input.get("value")}


@server.component
def crash_once(input: dict) -> dict:
    """Kills its worker the first time (marker file absent), succeeds after a restart."""
    marker = Path(input["marker"])
    if not marker.exists():
        marker.write_text("crashed once\n")
        os._exit(17)
    return {"attempt_marker": marker.read_text().strip(), "value": input.get("value")}


if __name__ == "__main__":
    asyncio.run(
        run_grpc_worker(
            server=server,
            tasks_url=os.environ.get("STEPFLOW_TASKS_URL", "localhost:7837"),
            queue_name=os.environ.get("STEPFLOW_QUEUE_NAME", "python"),
        )
    )
