"""`stepflow cluster status`: nodes, regions, queues with their workers, runs per node."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..config import discover_config
from ..errors import UserError
from ..state.base import StoreError
from .options import config_option


@click.group("cluster")
def group() -> None:
    """Inspect a Stepflow Mesh cluster (reads its etcd)."""


@group.command("status")
@config_option
@click.option("--etcd", envvar="STEPFLOW_ETCD_ENDPOINTS", help="etcd endpoints, comma-separated.")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def status(config_path: Path | None, etcd: str | None, fmt: str) -> None:
    """Nodes (region, zone, addresses, load, leased runs) and queues with connected workers."""
    from ...registry.cluster_config import ClusterFlags, cluster_settings
    from ...registry.etcd_client import EtcdError
    from ...registry.status import cluster_status

    config = discover_config(config_path, None)
    cluster = cluster_settings(config.raw, ClusterFlags(etcd=etcd), config.source or "config")
    if cluster is None:
        raise UserError("no cluster configured: give --etcd or a config with a `cluster` section")
    try:
        report = asyncio.run(cluster_status(cluster))
    except (StoreError, EtcdError) as exc:
        raise UserError(str(exc)) from None
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
        return
    _print(report)


def _print(report: dict[str, Any]) -> None:
    console = Console()
    nodes = Table(title=f"Nodes ({', '.join(report['endpoints'])} {report['prefix']})")
    for column in ("node", "live", "region", "zone", "gRPC", "HTTP", "runs", "tasks"):
        nodes.add_column(column)
    for n in report["nodes"]:
        nodes.add_row(
            n["nodeId"], "yes" if n["live"] else "no (failing over)", n.get("region", ""),
            n.get("zone", ""), n.get("grpcAddress", ""), n.get("httpAddress", ""),
            str(n["leasedRuns"]), str(n.get("inFlightTasks", "")),
        )  # fmt: skip
    console.print(nodes)
    queues = Table(title="Queues")
    for column in ("queue", "node", "workers", "idle", "region", "zone"):
        queues.add_column(column)
    for queue, entries in sorted(report["queues"].items()):
        for e in entries:
            queues.add_row(
                queue, e["node"], str(e.get("workers", 0)), str(e.get("idleStreams", 0)),
                e.get("region", ""), e.get("zone", ""),
            )  # fmt: skip
    console.print(queues)
