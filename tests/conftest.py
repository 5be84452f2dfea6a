"""Session-wide fixtures shared by several test folders."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from stepflow_mesh.registry.etcd_process import EtcdProcess


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdProcess]:
    """ONE real etcd for the whole session (started on first use); tests isolate by key prefix."""
    with EtcdProcess(unsafe_no_fsync=True) as server:
        yield server
