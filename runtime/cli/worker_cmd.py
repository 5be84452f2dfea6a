"""`stepflow worker`: a bridge worker serving a config's components to a node's queue."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click

from ..config import load_config
from ..errors import UserError
from .options import PATH

DEFAULT_QUEUE = "bridge"


@click.command("worker")
@click.option(
    "-c",
    "--config",
    "config_path",
    type=PATH,
    required=True,
    help="Config whose plugins (stdio, MCP, mock, builtin...) this worker hosts.",
)
@click.option(
    "--orchestrator",
    envvar="STEPFLOW_TASKS_URL",
    help="host:port of the node to pull tasks from [env: STEPFLOW_TASKS_URL].",
)
@click.option(
    "--queue",
    envvar="STEPFLOW_QUEUE_NAME",
    default=DEFAULT_QUEUE,
    show_default=True,
    help="Queue to pull (the node's `grpc` plugin queueName) [env: STEPFLOW_QUEUE_NAME].",
)
@click.option(
    "--max-concurrent",
    envvar="STEPFLOW_MAX_CONCURRENT",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Tasks executed at once.",
)
@click.option(
    "--shutdown-grace-secs",
    envvar="STEPFLOW_SHUTDOWN_GRACE_SECS",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="How long in-flight tasks may finish after SIGTERM.",
)
@click.option(
    "--blob-url",
    envvar="STEPFLOW_BLOB_URL",
    help="BlobService host:port (default: each task's orchestrator URL).",
)
def command(
    config_path: Path,
    orchestrator: str | None,
    queue: str,
    max_concurrent: int,
    shutdown_grace_secs: float,
    blob_url: str | None,
) -> None:
    """Host a config's plugins and serve their components to a node over stepflow.v1.

    Each component is announced at its full path in this config (route prefix included): with
    `/time` routed to an MCP server here and `/bridge` routed to `{type: grpc, queueName: bridge}`
    on the node, flows call `/bridge/time/<tool>`.
    """
    from stepflow_mesh.adapters.bridge import BridgeOptions, BridgeWorker

    if not orchestrator:
        raise UserError(
            "the node to pull from is missing: pass --orchestrator or STEPFLOW_TASKS_URL"
        )
    if not queue:
        raise UserError("--queue must not be empty")
    config = load_config(config_path)
    options = BridgeOptions(
        orchestrator=orchestrator,
        queue=queue,
        max_concurrent=max_concurrent,
        shutdown_grace_secs=shutdown_grace_secs,
        blob_url=blob_url or None,
    )

    async def serve() -> None:
        worker = BridgeWorker(config, options)
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            worker.stop(immediate=signals > 1)  # a second signal skips the grace

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await worker.run()

    asyncio.run(serve())
