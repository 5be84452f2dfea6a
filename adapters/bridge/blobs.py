"""A BlobStore over a node's BlobService (worker-protocol.md §2.4), for components on a bridge.

Bytes go up as `raw_data`, so the node stores exactly what an in-process store would have hashed
and the blob id is the same (`put_json` writes canonical compact JSON either way).
"""

from __future__ import annotations

from typing import Any

import grpc

from ...runtime._pb.stepflow.v1 import blobs_pb2, blobs_pb2_grpc
from ...runtime.blobs import Blob, BlobStore, is_blob_id
from ...runtime.jsonfmt import dumps_compact
from ...runtime.worker_api.convert import from_value

BLOB_CALL_TIMEOUT_SECS = 60.0


class BlobServiceError(ConnectionError):
    """The node's BlobService could not be reached or refused the call."""


class RemoteBlobStore(BlobStore):
    def __init__(self, channel: grpc.aio.Channel, address: str) -> None:
        self.address = address
        self._stub: Any = blobs_pb2_grpc.BlobServiceStub(channel)  # type: ignore[no-untyped-call]

    async def put(self, data: bytes, blob_type: str) -> str:
        request = blobs_pb2.PutBlobRequest(raw_data=data, blob_type=blob_type)
        try:
            response = await self._stub.PutBlob(request, timeout=BLOB_CALL_TIMEOUT_SECS)
        except grpc.aio.AioRpcError as exc:
            raise self._error("PutBlob", exc) from None
        return str(response.blob_id)

    async def get(self, blob_id: str) -> Blob | None:
        if not is_blob_id(blob_id):
            return None
        request = blobs_pb2.GetBlobRequest(blob_id=blob_id)
        try:
            response = await self._stub.GetBlob(request, timeout=BLOB_CALL_TIMEOUT_SECS)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise self._error("GetBlob", exc) from None
        blob_type = str(response.blob_type) or "data"
        if response.WhichOneof("content") == "raw_data":
            return Blob(bytes(response.raw_data), blob_type)
        return Blob(dumps_compact(from_value(response.json_data)).encode("utf-8"), blob_type)

    def _error(self, rpc: str, exc: grpc.aio.AioRpcError) -> BlobServiceError:
        return BlobServiceError(
            f"blob service at {self.address} failed ({rpc}): {exc.code().name}: {exc.details()}"
        )
