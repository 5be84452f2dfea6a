"""Wiring a node into a cluster: replicated state in etcd, the mesh service, membership.

`stepflow serve` calls these when a `cluster` section (or `--etcd`) is given; the node itself only
sees a StateStore, a BlobStore and a ClusterLink.
"""

from __future__ import annotations

from dataclasses import replace

from ..runtime.blobs import BlobStore
from ..runtime.config import Config
from ..runtime.server.node import Node
from ..runtime.state.settings import DurabilitySettings, durability_settings
from .cluster_config import ClusterSettings
from .etcd_blobs import EtcdBlobStore
from .etcd_client import EtcdSettings
from .etcd_store import EtcdStateStore
from .member import ClusterMember
from .mesh_service import MeshServicer, register_mesh_service


def etcd_settings(cluster: ClusterSettings) -> EtcdSettings:
    return EtcdSettings(
        endpoints=cluster.endpoints,
        prefix=cluster.prefix,
        username=cluster.username,
        password=cluster.password,
        tls=cluster.tls,
    )


def cluster_state(
    config: Config, cluster: ClusterSettings
) -> tuple[EtcdStateStore, BlobStore, DurabilitySettings]:
    """Journal, metadata and blobs in the cluster's etcd; `cluster.leaseTtlSecs` wins (§8)."""
    settings = replace(
        durability_settings(config.raw, config.source or "config"),
        lease_ttl_secs=cluster.lease_ttl_secs,
    )
    store = EtcdStateStore(
        etcd_settings(cluster),
        lease_prefix=cluster.lease_prefix,
        lease_ttl_secs=round(cluster.lease_ttl_secs),
        large_value_dir=cluster.large_value_dir,
    )
    blobs = EtcdBlobStore(store.client, store.keys, store.values)
    return store, blobs, settings


def join_cluster(node: Node, cluster: ClusterSettings) -> ClusterMember:
    assert isinstance(node.store, EtcdStateStore)
    member = ClusterMember(cluster, node.store, node.settings, node.endpoint.broker)
    member.mesh = MeshServicer(
        node.endpoint.broker, lambda: node.advertise_address or node.endpoint.address
    )
    node.add_services(register_mesh_service(member.mesh))
    node.attach_cluster(member, cluster.advertise_url)
    return member
