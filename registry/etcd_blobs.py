"""`EtcdBlobStore`: content-addressed blobs shared by every node of the mesh (durability.md §7.2).

Blobs up to the large-value limit (512 KiB) live in etcd at `{prefix}/mesh/blobs/{sha256}` as a
JSON header line (`{"type": ...}`) followed by the bytes; larger ones go through the same shared
large-value directory as the state store's values (etcd_values.py), with only a reference in etcd.
The id is the SHA-256 of the bytes, as in the other blob stores; a re-put is a no-op.
"""

from __future__ import annotations

import json

from stepflow_mesh.runtime.blobs import Blob, BlobStore, is_blob_id
from stepflow_mesh.runtime.jsonfmt import content_id
from stepflow_mesh.runtime.state.base import StoreError, StoreUnavailable

from .etcd_client import Compare, EtcdClient, EtcdError, EtcdUnavailable, Put
from .etcd_keys import Keys
from .etcd_values import LargeValues


class EtcdBlobStore(BlobStore):
    def __init__(self, client: EtcdClient, keys: Keys, values: LargeValues) -> None:
        self.client = client
        self.keys = keys
        self.values = values

    async def put(self, data: bytes, blob_type: str) -> str:
        blob_id = content_id(data)
        key = self.keys.blob(blob_id)
        value = json.dumps({"type": blob_type}).encode() + b"\n" + bytes(data)
        stored = await self.values.encode(value, f"blob {blob_id}")
        try:
            # Create only: the first writer's type wins, like the other stores.
            await self.client.txn([Compare.created(key, 0)], [Put(key, stored)])
        except EtcdUnavailable as exc:
            raise StoreUnavailable(f"etcd unavailable at {self.client.describe()}: {exc}") from exc
        except EtcdError as exc:
            raise StoreError(str(exc)) from exc
        return blob_id

    async def get(self, blob_id: str) -> Blob | None:
        if not is_blob_id(blob_id):
            return None
        try:
            kv = await self.client.get(self.keys.blob(blob_id))
        except EtcdUnavailable as exc:
            raise StoreUnavailable(f"etcd unavailable at {self.client.describe()}: {exc}") from exc
        except EtcdError as exc:
            raise StoreError(str(exc)) from exc
        if kv is None:
            return None
        header, _, data = (await self.values.decode(kv.value)).partition(b"\n")
        return Blob(data, str(json.loads(header)["type"]))
