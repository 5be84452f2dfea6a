"""Values too large for etcd go to a shared, content-addressed directory (durability.md §8).

etcd keeps its whole keyspace in memory-mapped boltdb pages and limits a request to
`--max-request-bytes` (1.5 MiB by default), so any single value above `large_value_bytes`
(default 512 KiB) is written to `<large_value_dir>/<sha[:2]>/<sha>.value` (fsynced, renamed into
place, directory fsynced) before the transaction that references it; etcd stores only a small
reference. Every value the stores write inline starts with `{` (JSON, or a JSON header line), so
a reference (starting with NUL) can never be mistaken for inline data.

Files are content-addressed and may be shared by trees and blobs, so they are deleted only by
`sweep`: a file no key of the cluster references (one consistent scan, etcd_store.py) and not
written or re-used for `SWEEP_GRACE_SECS` (re-using an existing file refreshes its mtime, so a
transaction about to reference it is never raced). The first sweep writes the cluster's identity
into `.stepflow-owner`; a directory another cluster owns is never swept (its references are
invisible from here).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

from stepflow_mesh.runtime.state.base import StoreError

DEFAULT_LARGE_VALUE_BYTES = 512 * 1024
SWEEP_GRACE_SECS = 3600.0  # far above any transaction's duration
_REFERENCE = b"\x00stepflow-large-value:"
_OWNER_FILE = ".stepflow-owner"


class LargeValues:
    """Spill/load of oversized values; shared by the etcd state store and blob store."""

    def __init__(
        self, directory: str | Path | None, threshold: int = DEFAULT_LARGE_VALUE_BYTES
    ) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.threshold = threshold

    def needs_spill(self, data: bytes) -> bool:
        return len(data) > self.threshold

    async def encode(self, data: bytes, what: str) -> bytes:
        """`data` itself when small, else a reference to the spilled file."""
        if not self.needs_spill(data):
            return data
        if self.directory is None:
            raise StoreError(
                f"{what} is {len(data)} bytes, above the etcd value limit of {self.threshold}"
                " bytes; set storageConfig.largeValueDir to a directory shared by all nodes"
            )
        digest = hashlib.sha256(data).hexdigest()
        await asyncio.to_thread(self._write, digest, data)
        return _REFERENCE + digest.encode()

    def _path(self, digest: str) -> Path:
        assert self.directory is not None
        return self.directory / digest[:2] / f"{digest}.value"

    def _write(self, digest: str, data: bytes) -> None:
        path = self._path(digest)
        try:
            os.utime(path)  # already there: now fresh again for `sweep`'s grace period
            return
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StoreError(
                f"cannot refresh large value {path} (storageConfig.largeValueDir): {exc}"
            ) from exc
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}.{id(data)}")
            with tmp.open("wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StoreError(
                f"cannot write a large value to {path} (storageConfig.largeValueDir): {exc}"
            ) from exc

    @staticmethod
    def is_reference(stored: bytes) -> bool:
        return stored.startswith(_REFERENCE)

    @staticmethod
    def digest_of(stored: bytes) -> str | None:
        """The file a stored value references (None: the value is inline)."""
        if not stored.startswith(_REFERENCE):
            return None
        return stored[len(_REFERENCE) :].decode()

    def owned_by(self, owner: str) -> bool:
        """Whether `owner` (a cluster's identity) may sweep the directory; the first to ask
        claims it."""
        if self.directory is None:
            return False
        marker = self.directory / _OWNER_FILE
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with marker.open("x") as handle:
                handle.write(owner)
            return True
        except FileExistsError:
            return marker.read_text().strip() == owner

    def sweep(self, referenced: set[str], grace_secs: float = SWEEP_GRACE_SECS) -> int:
        """Blocking: delete value files not in `referenced` and untouched for `grace_secs`, and
        temporary files of interrupted writes as old; returns how many values were deleted."""
        if self.directory is None or not self.directory.is_dir():
            return 0
        cutoff = time.time() - grace_secs
        deleted = 0
        for path in self.directory.glob("??/*"):
            digest, _, suffix = path.name.partition(".")
            if suffix == "value" and digest in referenced:
                continue
            try:
                if path.stat().st_mtime >= cutoff:
                    continue
                path.unlink()
            except FileNotFoundError:
                continue  # another node's sweep was first
            if suffix == "value":
                deleted += 1
        return deleted

    async def decode(self, stored: bytes) -> bytes:
        if not stored.startswith(_REFERENCE):
            return stored
        return await asyncio.to_thread(self.load, stored)

    def load(self, stored: bytes) -> bytes:
        """Blocking read of a referenced value (use `decode` on the event loop)."""
        if not stored.startswith(_REFERENCE):
            return stored
        digest = stored[len(_REFERENCE) :].decode()
        if self.directory is None:
            raise StoreError(
                f"etcd references large value {digest}, but storageConfig.largeValueDir is not set"
            )
        path = self._path(digest)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise StoreError(f"large value {path} is unreadable: {exc}") from exc
