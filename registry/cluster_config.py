"""The `cluster` config section and its `stepflow serve` overrides (durability.md §8, §10).

Without a `cluster` section (or upstream's `leaseManager: {type: etcd}`) a node runs standalone.
Precedence for every key: flag > config > default. Upstream's `leaseManager.key_prefix`
(snake_case, as upstream spells it) moves only the lease keys.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from ..runtime.errors import UserError
from ..runtime.ids import new_id

DEFAULT_PREFIX = "/stepflow"
DEFAULT_LEASE_TTL_SECS = 10.0


@dataclass(frozen=True)
class ClusterSettings:
    endpoints: list[str]
    prefix: str = DEFAULT_PREFIX
    lease_prefix: str | None = None  # None: `{prefix}/leases`
    username: str | None = None
    password: str | None = None
    tls: dict[str, Any] | None = None
    node_id: str = ""
    region: str = ""
    zone: str = ""
    advertise_url: str | None = None  # host:port other nodes and workers use; default: bound
    lease_ttl_secs: float = DEFAULT_LEASE_TTL_SECS
    large_value_dir: str | None = None  # shared directory for values too big for etcd


@dataclass(frozen=True)
class ClusterFlags:
    """`stepflow serve` flags that override the section (None = not given)."""

    node_id: str | None = None
    region: str | None = None
    zone: str | None = None
    etcd: str | None = None  # comma-separated endpoints
    advertise_url: str | None = None


def default_node_id() -> str:
    """`$HOSTNAME`, else `stepflow-server-<uuid>` (durability.md §10)."""
    return os.environ.get("HOSTNAME") or socket.gethostname() or f"stepflow-server-{new_id()}"


def cluster_settings(
    raw: dict[str, Any], flags: ClusterFlags, source: str = "config"
) -> ClusterSettings | None:
    """The node's cluster settings, or None to run standalone."""
    section = _mapping(raw.get("cluster"), f"{source}: cluster")
    etcd = _mapping(section.get("etcd"), f"{source}: cluster.etcd")
    lease_manager = _mapping(raw.get("leaseManager"), f"{source}: leaseManager")
    endpoints = _endpoints(etcd.get("endpoints"), f"{source}: cluster.etcd.endpoints")
    lease_prefix = None
    kind = lease_manager.get("type")
    if kind == "etcd":
        endpoints = endpoints or _endpoints(
            lease_manager.get("endpoints"), f"{source}: leaseManager.endpoints"
        )
        lease_prefix = _text(lease_manager.get("key_prefix"), f"{source}: leaseManager.key_prefix")
    elif kind not in (None, "noOp", "none"):
        raise UserError(f"unknown type {kind!r} (expected etcd or noOp)", f"{source}: leaseManager")
    if flags.etcd:
        endpoints = [e.strip() for e in flags.etcd.split(",") if e.strip()]
    if not endpoints:
        if section:
            raise UserError("needs at least one endpoint", f"{source}: cluster.etcd.endpoints")
        return None
    ttl = section.get("leaseTtlSecs")
    recovery = raw.get("recovery") if isinstance(raw.get("recovery"), dict) else {}
    if ttl is None:
        ttl = (recovery or {}).get("leaseTtlSecs", DEFAULT_LEASE_TTL_SECS)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl < 1:
        raise UserError("expected a number of seconds ≥ 1", f"{source}: cluster.leaseTtlSecs")
    here = f"{source}: cluster"
    return ClusterSettings(
        endpoints=endpoints,
        prefix=(_text(etcd.get("prefix"), f"{here}.etcd.prefix") or DEFAULT_PREFIX).rstrip("/"),
        lease_prefix=lease_prefix.rstrip("/") if lease_prefix else None,
        username=_text(etcd.get("username"), f"{here}.etcd.username"),
        password=_text(etcd.get("password"), f"{here}.etcd.password"),
        tls=_mapping(etcd.get("tls"), f"{here}.etcd.tls") or None,
        node_id=flags.node_id
        or _text(section.get("nodeId"), f"{here}.nodeId")
        or default_node_id(),
        region=flags.region or _text(section.get("region"), f"{here}.region") or "",
        zone=flags.zone or _text(section.get("zone"), f"{here}.zone") or "",
        advertise_url=flags.advertise_url
        or _text(section.get("advertiseUrl"), f"{here}.advertiseUrl"),
        lease_ttl_secs=float(ttl),
        large_value_dir=_text(section.get("largeValueDir"), f"{here}.largeValueDir"),
    )


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError("expected a map", where)
    return value


def _text(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise UserError("expected a non-empty string", where)
    return value


def _endpoints(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise UserError("expected a list of URLs like http://etcd:2379", where)
    return [v.strip() for v in value]
