"""The `cluster` section, upstream's `leaseManager`, and `stepflow serve` flag overrides."""

from __future__ import annotations

from typing import Any

import pytest
from stepflow_mesh.registry.cluster_config import ClusterFlags, cluster_settings
from stepflow_mesh.runtime.errors import UserError

NO_FLAGS = ClusterFlags()


def test_without_a_cluster_a_node_runs_standalone() -> None:
    assert cluster_settings({}, NO_FLAGS) is None
    assert cluster_settings({"leaseManager": {"type": "noOp"}}, NO_FLAGS) is None


def test_the_cluster_section_with_defaults() -> None:
    raw = {"cluster": {"etcd": {"endpoints": ["http://e1:2379", "http://e2:2379"]},
                       "nodeId": "n1", "region": "eu"}}  # fmt: skip
    settings = cluster_settings(raw, NO_FLAGS)
    assert settings is not None
    assert settings.endpoints == ["http://e1:2379", "http://e2:2379"]
    assert (settings.prefix, settings.lease_prefix) == ("/stepflow", None)
    assert (settings.node_id, settings.region, settings.zone) == ("n1", "eu", "")
    assert settings.lease_ttl_secs == 10.0


def test_flags_override_the_section() -> None:
    raw = {"cluster": {"etcd": {"endpoints": ["http://e1:2379"]}, "nodeId": "n1", "region": "eu"}}
    flags = ClusterFlags(node_id="n9", region="us", zone="us-1", etcd="a:1, b:2",
                         advertise_url="n9:7840")  # fmt: skip
    settings = cluster_settings(raw, flags)
    assert settings is not None
    assert settings.endpoints == ["a:1", "b:2"]
    assert (settings.node_id, settings.region, settings.zone) == ("n9", "us", "us-1")
    assert settings.advertise_url == "n9:7840"


def test_etcd_flag_alone_makes_a_cluster() -> None:
    settings = cluster_settings({}, ClusterFlags(etcd="http://127.0.0.1:2379"))
    assert settings is not None and settings.endpoints == ["http://127.0.0.1:2379"]
    assert settings.node_id  # $HOSTNAME or a generated id


def test_upstream_lease_manager_is_accepted() -> None:
    raw = {"leaseManager": {"type": "etcd", "endpoints": ["http://e:2379"],
                            "key_prefix": "/custom/leases/"}}  # fmt: skip
    settings = cluster_settings(raw, NO_FLAGS)
    assert settings is not None
    assert settings.endpoints == ["http://e:2379"]
    assert settings.lease_prefix == "/custom/leases"


def test_lease_ttl_from_recovery_and_cluster_wins() -> None:
    base: dict[str, Any] = {"cluster": {"etcd": {"endpoints": ["e:1"]}}}
    assert cluster_settings({**base, "recovery": {"leaseTtlSecs": 6}}, NO_FLAGS).lease_ttl_secs == 6  # type: ignore[union-attr]
    both = {"cluster": {"etcd": {"endpoints": ["e:1"]}, "leaseTtlSecs": 4},
            "recovery": {"leaseTtlSecs": 6}}  # fmt: skip
    assert cluster_settings(both, NO_FLAGS).lease_ttl_secs == 4  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ({"cluster": {"etcd": {}}}, "cluster.etcd.endpoints"),
        ({"cluster": {"etcd": {"endpoints": [1]}}}, "cluster.etcd.endpoints"),
        ({"cluster": {"etcd": {"endpoints": ["e:1"]}, "leaseTtlSecs": 0}}, "cluster.leaseTtlSecs"),
        ({"cluster": "yes"}, "cluster"),
        ({"leaseManager": {"type": "zookeeper"}}, "leaseManager"),
    ],
)
def test_bad_sections_name_the_field(raw: dict[str, Any], where: str) -> None:
    with pytest.raises(UserError) as caught:
        cluster_settings(raw, NO_FLAGS, "cfg.yml")
    assert f"cfg.yml: {where}" in str(caught.value)
