"""`storageConfig` → state store selection (flows.md §9.4, durability.md §8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from stepflow_mesh.runtime.state.base import StoreError
from stepflow_mesh.runtime.state.memory import MemoryStateStore
from stepflow_mesh.runtime.state.open_store import store_from_config
from stepflow_mesh.runtime.state.sqlite import SqliteStateStore


def sqlite_path(config: dict[str, Any] | None, working_dir: Path) -> Path:
    store = store_from_config(config, working_dir)
    assert isinstance(store, SqliteStateStore)
    return store.path


def test_default_is_sqlite_under_dot_stepflow(tmp_path: Path) -> None:
    assert sqlite_path(None, tmp_path) == tmp_path / ".stepflow" / "stepflow.db"


def test_filesystem_at_top_level_means_blobs_only(tmp_path: Path) -> None:
    config = {"type": "filesystem", "directory": "blobs"}
    assert sqlite_path(config, tmp_path) == tmp_path / ".stepflow" / "stepflow.db"


def test_in_memory(tmp_path: Path) -> None:
    assert isinstance(store_from_config({"type": "inMemory"}, tmp_path), MemoryStateStore)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:state.db?mode=rwc", "state.db"),
        ("sqlite:data/state.db", "data/state.db"),
        ("sqlite://rel/state.db", "rel/state.db"),
        ("sqlite:///abs/state.db", "/abs/state.db"),
    ],
)
def test_sqlite_urls(tmp_path: Path, url: str, expected: str) -> None:
    config = {"type": "sqlite", "databaseUrl": url, "maxConnections": 10, "autoMigrate": True}
    assert sqlite_path(config, tmp_path) == tmp_path / expected


def test_sqlite_memory_url_is_in_memory(tmp_path: Path) -> None:
    store = store_from_config({"type": "sqlite", "databaseUrl": "sqlite::memory:"}, tmp_path)
    assert isinstance(store, MemoryStateStore)


def test_expanded_form_uses_journal_else_metadata(tmp_path: Path) -> None:
    both = {
        "metadata": {"type": "inMemory"},
        "journal": {"type": "sqlite", "databaseUrl": "sqlite:j.db"},
        "blobs": {"type": "filesystem"},
    }
    assert sqlite_path(both, tmp_path) == tmp_path / "j.db"
    only_metadata = {"metadata": {"type": "sqlite", "databaseUrl": "sqlite:m.db"}}
    assert sqlite_path(only_metadata, tmp_path) == tmp_path / "m.db"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"type": "postgres", "databaseUrl": "postgres://x"}, "not supported"),
        ({"type": "redis"}, "storageConfig.type"),
        ({"metadata": {"type": "nope"}}, "storageConfig.metadata.type"),
        ({"metadata": {"type": "filesystem"}}, "blobs only"),
        ({"type": "sqlite", "databaseUrl": "postgres://x"}, "storageConfig.databaseUrl"),
    ],
)
def test_bad_configs(tmp_path: Path, config: dict[str, Any], message: str) -> None:
    with pytest.raises(StoreError, match=message.replace(".", r"\.")):
        store_from_config(config, tmp_path)


async def test_opened_default_store_creates_its_directory(tmp_path: Path) -> None:
    store = store_from_config(None, tmp_path / "project")
    await store.open()
    try:
        assert await store.append("A", [{"type": "run_cancel_requested", "run_id": "A"}]) == [1]
    finally:
        await store.close()
    assert (tmp_path / "project" / ".stepflow" / "stepflow.db").is_file()
