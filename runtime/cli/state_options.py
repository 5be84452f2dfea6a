"""Where a local command keeps durable state: flags, config, or `.stepflow/` in the CWD."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from ..blobs import BlobStore, FileBlobStore, MemoryBlobStore
from ..config import Config
from ..engine import blob_store_for
from ..state.base import StateStore
from ..state.memory import MemoryStateStore
from ..state.open_store import store_from_config
from ..state.settings import DurabilitySettings, durability_settings
from ..state.sqlite import SqliteStateStore
from .options import PATH, _compose

DEFAULT_STATE_DIR = Path(".stepflow")
DB_NAME = "stepflow.db"

state_options = _compose(
    click.option(
        "--state-dir",
        type=PATH,
        help="Directory for the run journal and blobs [default: .stepflow in the CWD, "
        "or the config's storageConfig].",
    ),
    click.option(
        "--in-memory",
        is_flag=True,
        help="Keep run state in memory only (nothing written; the run cannot be resumed).",
    ),
)


@dataclass
class LocalState:
    store: StateStore
    blobs: BlobStore
    settings: DurabilitySettings
    durable: bool


def local_state(config: Config, state_dir: Path | None, in_memory: bool) -> LocalState:
    """`--in-memory` > `--state-dir` > `storageConfig` > `.stepflow/` under the CWD."""
    settings = durability_settings(config.raw, config.source or "config")
    if in_memory:
        if state_dir is not None:
            raise click.UsageError("--in-memory and --state-dir exclude each other")
        return LocalState(MemoryStateStore(), MemoryBlobStore(), settings, durable=False)
    if state_dir is None and config.storage is not None:
        store = store_from_config(config.storage, Path.cwd())
        blobs = blob_store_for(config)
        durable = not isinstance(store, MemoryStateStore)
        if durable and isinstance(blobs, MemoryBlobStore):
            # Resume needs the flow blob; keep blobs beside the journal by default.
            blobs = FileBlobStore((Path.cwd() / DEFAULT_STATE_DIR / "blobs").resolve())
        return LocalState(store, blobs, settings, durable)
    directory = (state_dir or Path.cwd() / DEFAULT_STATE_DIR).resolve()
    return LocalState(
        SqliteStateStore(directory / DB_NAME),
        FileBlobStore(directory / "blobs"),
        settings,
        durable=True,
    )
