"""Content-addressed blob stores (flows.md §8.1): the id is the SHA-256 of the stored bytes."""

from __future__ import annotations

import asyncio
import json
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .jsonfmt import content_id, dumps_compact

BLOB_TYPES = ("data", "flow", "binary")
_BLOB_ID = re.compile(r"[0-9a-f]{64}\Z")


def is_blob_id(value: Any) -> bool:
    return isinstance(value, str) and bool(_BLOB_ID.match(value))


@dataclass(frozen=True)
class Blob:
    data: bytes
    blob_type: str

    def json(self) -> Any:
        return json.loads(self.data)


class BlobStore(ABC):
    """Stores bytes under their content hash; writing the same bytes twice is a no-op."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        from .telemetry.metrics import meter_blob_store

        meter_blob_store(cls)  # blob_store.* metrics around every store's put/get

    @abstractmethod
    async def put(self, data: bytes, blob_type: str) -> str: ...

    @abstractmethod
    async def get(self, blob_id: str) -> Blob | None: ...

    async def put_json(self, value: Any, blob_type: str = "data") -> str:
        return await self.put(dumps_compact(value).encode("utf-8"), blob_type)


class MemoryBlobStore(BlobStore):
    def __init__(self) -> None:
        self._blobs: dict[str, Blob] = {}

    async def put(self, data: bytes, blob_type: str) -> str:
        blob_id = content_id(data)
        self._blobs.setdefault(blob_id, Blob(data, blob_type))
        return blob_id

    async def get(self, blob_id: str) -> Blob | None:
        return self._blobs.get(blob_id)


class FileBlobStore(BlobStore):
    """One file per blob (`<dir>/<id[:2]>/<id>.<type>`), written atomically via rename."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, blob_id: str, blob_type: str) -> Path:
        return self.directory / blob_id[:2] / f"{blob_id}.{blob_type}"

    async def put(self, data: bytes, blob_type: str) -> str:
        blob_id = content_id(data)
        await asyncio.to_thread(self._write, self._path(blob_id, blob_type), data)
        return blob_id

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    async def get(self, blob_id: str) -> Blob | None:
        if not is_blob_id(blob_id):
            return None
        return await asyncio.to_thread(self._read, blob_id)

    def _read(self, blob_id: str) -> Blob | None:
        for blob_type in BLOB_TYPES:
            path = self._path(blob_id, blob_type)
            if path.exists():
                return Blob(path.read_bytes(), blob_type)
        return None
