"""`stepflow serve` (also the `stepflow-server` command): run a node until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import faulthandler
import json
import logging
import signal
import sys
from pathlib import Path

import click

from .. import telemetry
from ..config import discover_config, load_config
from ..errors import UserError
from ..server.gc_tuning import tune_for_serving
from ..state.base import StoreError
from .options import PATH
from .state_options import local_state, state_options

log = logging.getLogger("stepflow.node")


@click.command("serve")
@click.option("-p", "--port", envvar="STEPFLOW_PORT", type=int, default=7840, show_default=True)
@click.option(
    "--http-port", envvar="STEPFLOW_HTTP_PORT", type=click.IntRange(0, 65535),
    help="Port of the REST API /api/v1 (default: --port + 1; 0 = any free port).",
)  # fmt: skip
@click.option("-c", "--config", "config_path", envvar="STEPFLOW_CONFIG", type=PATH)
@click.option(
    "--node-id", "--orchestrator-id", "node_id", envvar="STEPFLOW_ORCHESTRATOR_ID",
    help="Stable id of this node (leases name it as the owner of its runs).",
)  # fmt: skip
@click.option("--region", envvar="STEPFLOW_REGION", help="Cluster: this node's region.")
@click.option("--zone", envvar="STEPFLOW_ZONE", help="Cluster: this node's zone.")
@click.option(
    "--etcd", envvar="STEPFLOW_ETCD_ENDPOINTS",
    help="Cluster: etcd endpoints, comma-separated (overrides cluster.etcd.endpoints).",
)  # fmt: skip
@click.option(
    "--advertise-url", envvar="STEPFLOW_ADVERTISE_URL",
    help="Cluster: host:port other nodes and workers reach this node's gRPC port at.",
)  # fmt: skip
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to bind.")
@click.option(
    "--shutdown-grace-secs", type=float, default=10.0, show_default=True,
    help="How long in-flight steps may finish after SIGTERM.",
)  # fmt: skip
@state_options
def command(
    port: int,
    http_port: int | None,
    config_path: Path | None,
    node_id: str | None,
    region: str | None,
    zone: str | None,
    etcd: str | None,
    advertise_url: str | None,
    host: str,
    shutdown_grace_secs: float,
    state_dir: Path | None,
    in_memory: bool,
) -> None:
    """Serve runs to gRPC clients and tasks to workers on one port, REST on the HTTP port."""
    from ...registry.cluster_config import ClusterFlags, cluster_settings
    from ..server.api import register_client_services
    from ..server.node import Node, NodeOptions
    from ..server.rest import RestServer

    config = load_config(config_path) if config_path else discover_config(None, None)
    flags = ClusterFlags(node_id, region, zone, etcd, advertise_url)
    cluster = cluster_settings(config.raw, flags, config.source or "config")
    if cluster is None:
        state = local_state(config, state_dir, in_memory)
        store, blobs, settings = state.store, state.blobs, state.settings
    else:
        from ...registry.node_setup import cluster_state

        store, blobs, settings = cluster_state(config, cluster)
        node_id = cluster.node_id
    options = NodeOptions(
        host=host, port=port, node_id=node_id, shutdown_grace_secs=shutdown_grace_secs
    )
    node = Node(config, store, blobs, settings, options)
    telemetry.set_node(node.node_id, cluster.region if cluster else None)
    node.add_services(register_client_services(node))
    if cluster is not None:
        from ...registry.node_setup import join_cluster

        join_cluster(node, cluster)
    if http_port is None:
        http_port = 0 if port == 0 else port + 1
    rest = RestServer.for_node(node, host, http_port)

    # Operators (and hung-node diagnosis in tests) can ask for every thread's stack: kill -USR1.
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)

    async def serve() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        try:
            await node.start()
        except StoreError as exc:
            raise UserError(str(exc)) from None
        try:
            await rest.start()
        except (OSError, OverflowError) as exc:
            await node.stop()
            raise UserError(f"cannot serve the REST API on port {http_port}: {exc}") from None
        if node.cluster is not None:
            node.cluster.http_address = f"{node.advertise_host()}:{rest.port}"
        tune_for_serving()
        click.echo(json.dumps({"port": node.port, "httpPort": rest.port}))
        sys.stdout.flush()
        log.info("node %s serving on port %d (REST %d)", node.node_id, node.port, rest.port)
        await stopping.wait()
        log.info("shutting down: in-flight steps have %.0f s to finish", shutdown_grace_secs)
        await rest.stop()
        await node.stop()

    asyncio.run(serve())
