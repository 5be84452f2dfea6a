"""A one-shot picture of the cluster for `stepflow cluster status` (read straight from etcd)."""

from __future__ import annotations

import json
from typing import Any

from .cluster_config import ClusterSettings
from .directory import NodeRecord
from .etcd_client import EtcdClient, Get
from .etcd_store import EtcdStateStore
from .node_setup import etcd_settings


async def cluster_status(cluster: ClusterSettings) -> dict[str, Any]:
    """`{nodes: [...], queues: {queue: [{node, workers, idleStreams, region, zone}]}}`.

    Each node lists its region, zone, addresses, load and the run leases it holds; owners of
    leases without a live node record appear too (their runs are about to fail over).
    """
    store = EtcdStateStore(etcd_settings(cluster), lease_prefix=cluster.lease_prefix)
    client: EtcdClient = store.client
    try:
        nodes_raw = await client.range(Get.prefix(f"{cluster.prefix}/mesh/nodes/".encode()))
        queues_raw = await client.range(Get.prefix(f"{cluster.prefix}/mesh/queues/".encode()))
        orchestrators = {o.id: o for o in await store.leases.list_orchestrators()}
    finally:
        await store.close()
    records = {
        r.node_id: r
        for r in (
            NodeRecord.from_json(kv.key.decode().rpartition("/")[2], json.loads(kv.value))
            for kv in nodes_raw.kvs
        )
    }
    nodes = []
    for node_id in sorted(records.keys() | orchestrators.keys()):
        record, lease = records.get(node_id), orchestrators.get(node_id)
        entry: dict[str, Any] = {"nodeId": node_id, "live": record is not None}
        if record is not None:
            entry.update(record.to_json())
        entry["leasedRuns"] = lease.active_runs if lease else 0
        entry["lastHeartbeat"] = lease.last_heartbeat if lease else None
        nodes.append(entry)
    queues: dict[str, list[dict[str, Any]]] = {}
    queue_prefix = f"{cluster.prefix}/mesh/queues/"
    for kv in queues_raw.kvs:
        queue, _, node_id = kv.key.decode().removeprefix(queue_prefix).rpartition("/")
        queues.setdefault(queue, []).append({"node": node_id, **json.loads(kv.value)})
    return {"prefix": cluster.prefix, "endpoints": cluster.endpoints, "nodes": nodes,
            "queues": queues}  # fmt: skip
