"""etcd-backed tests: the ONE session etcd lives in tests/conftest.py (`etcd_server`), shared with
the store contract suite; here each test gets a fresh key prefix and a store factory."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from stepflow_mesh.registry.etcd_client import EtcdSettings
from stepflow_mesh.registry.etcd_process import EtcdProcess
from stepflow_mesh.registry.etcd_store import EtcdStateStore

StoreFactory = Callable[..., EtcdStateStore]


@pytest.fixture
def etcd_prefix() -> str:
    return f"/test/{uuid.uuid4().hex}"


@pytest.fixture
async def make_store(etcd_server: EtcdProcess, etcd_prefix: str) -> AsyncIterator[StoreFactory]:
    """`make_store(**kw)` → an opened-on-use store on the session etcd, closed after the test."""
    stores: list[EtcdStateStore] = []

    def make(endpoint: str | None = None, **kw: Any) -> EtcdStateStore:
        settings = EtcdSettings(
            [endpoint or etcd_server.endpoint],
            prefix=etcd_prefix,
            request_timeout_secs=kw.pop("request_timeout_secs", 2.0),
        )
        kw.setdefault("lease_ttl_secs", 2)
        store = EtcdStateStore(settings, **kw)
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()
