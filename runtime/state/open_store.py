"""`storageConfig` → the `StateStore` holding journal, checkpoints and metadata (flows.md §9.4).

Only the journal's store matters here: checkpoints follow the journal, and metadata is projected
from the journal in the same store. Blob stores are configured elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import StateStore, StoreError
from .memory import MemoryStateStore
from .sqlite import SqliteStateStore

DEFAULT_DATABASE = Path(".stepflow") / "stepflow.db"


def default_database(working_dir: Path) -> Path:
    return working_dir / DEFAULT_DATABASE


def store_from_config(storage: dict[str, Any] | None, working_dir: Path) -> StateStore:
    """The unopened store for `storage`; None → SQLite `<working_dir>/.stepflow/stepflow.db`."""
    if storage is None:
        return SqliteStateStore(default_database(working_dir))
    if not isinstance(storage, dict):
        raise StoreError("storageConfig: expected a mapping")
    if "type" not in storage and ("metadata" in storage or "journal" in storage):
        key = "journal" if storage.get("journal") is not None else "metadata"
        return _simple(storage[key], working_dir, f"storageConfig.{key}")
    if storage.get("type") == "filesystem":
        return SqliteStateStore(default_database(working_dir))  # blobs only; default journal
    return _simple(storage, working_dir, "storageConfig")


def _simple(config: Any, working_dir: Path, where: str) -> StateStore:
    if not isinstance(config, dict):
        raise StoreError(f"{where}: expected a mapping with a 'type'")
    kind = config.get("type")
    if kind == "inMemory":
        return MemoryStateStore()
    if kind == "sqlite":
        return _sqlite(config.get("databaseUrl"), working_dir, where)
    if kind == "postgres":
        raise StoreError(f"{where}.type 'postgres' is not supported; use 'sqlite' or 'inMemory'")
    if kind == "filesystem":
        raise StoreError(f"{where}.type 'filesystem' stores blobs only, not the journal")
    raise StoreError(
        f"{where}.type: unknown storage type {kind!r} (expected inMemory, sqlite or filesystem)"
    )


def _sqlite(url: Any, working_dir: Path, where: str) -> StateStore:
    """`sqlite:<file>?mode=rwc`, `sqlite://<file>`, `sqlite:///<abs>`, `sqlite::memory:`."""
    if url is None:
        return SqliteStateStore(default_database(working_dir))
    if not isinstance(url, str) or not url.startswith("sqlite:"):
        raise StoreError(f"{where}.databaseUrl: expected 'sqlite:<file>', got {url!r}")
    rest, _, query = url.removeprefix("sqlite:").partition("?")
    if rest.startswith("//"):
        rest = rest[2:]
    params = dict(p.partition("=")[::2] for p in query.split("&") if p)
    if rest in ("", ":memory:") or params.get("mode") == "memory":
        if rest == "" and params.get("mode") != "memory":
            raise StoreError(f"{where}.databaseUrl: no database file in {url!r}")
        return MemoryStateStore()
    return SqliteStateStore(working_dir / Path(rest).expanduser())
