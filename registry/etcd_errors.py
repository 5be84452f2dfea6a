"""etcd client errors as the errors store callers handle: StoreUnavailable when etcd cannot be
reached (naming the endpoints), StoreError otherwise."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from stepflow_mesh.runtime.state.base import StoreError, StoreUnavailable

from .etcd_client import EtcdClient, EtcdError, EtcdUnavailable

T = TypeVar("T")


def unavailable(client: EtcdClient, exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"etcd unavailable at {client.describe()}: {exc}")


async def fail_fast(client: EtcdClient, call: Awaitable[T]) -> T:
    """One etcd request, failing fast: StoreUnavailable / StoreError."""
    try:
        return await call
    except EtcdUnavailable as exc:
        raise unavailable(client, exc) from exc
    except EtcdError as exc:
        raise StoreError(str(exc)) from exc
