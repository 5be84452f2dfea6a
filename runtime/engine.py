"""The in-process runtime: plugins from a config, the router, a blob store, and runs.

`stepflow run`, `stepflow test` and (later) every server node are this object with a different face.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .blobs import BlobStore, FileBlobStore, MemoryBlobStore
from .config import Config
from .errors import FlowResult, UserError
from .executor import RunExecution, RunObserver, RunTree
from .plugins import ComponentInfo, Plugin, create_plugin
from .routing import Router
from .state.replay import TreeState

log = logging.getLogger("stepflow.engine")
DEFAULT_MAX_CONCURRENCY = 10


@dataclass
class RunOutcome:
    run_id: str
    status: str
    results: list[FlowResult]


def blob_store_for(config: Config) -> BlobStore:
    """Blobs live where `storageConfig` says; the journal-backed stores come with durability."""
    storage = config.storage or {}
    blobs = storage.get("blobs", storage)
    if isinstance(blobs, dict) and blobs.get("type") == "filesystem":
        directory = blobs.get("directory") or ".stepflow/blobs"
        return FileBlobStore((config.working_dir / directory).resolve())
    return MemoryBlobStore()


class Runtime:
    def __init__(
        self,
        config: Config,
        *,
        blobs: BlobStore | None = None,
        observers: Sequence[RunObserver] = (),
    ) -> None:
        self.config = config
        self.blobs = blobs or blob_store_for(config)
        self.observers = list(observers)
        self.plugins: dict[str, Plugin] = {}
        self.components: dict[str, list[ComponentInfo]] = {}
        self._router: Router | None = None

    async def start(self) -> None:
        """Create and start every configured plugin (concurrently), then build the router."""
        source = self.config.source or "config"
        for name, plugin_config in self.config.plugins.items():
            self.plugins[name] = create_plugin(name, plugin_config, self.config.working_dir, source)
        try:
            await asyncio.gather(*(p.start() for p in self.plugins.values()))
            listed = await asyncio.gather(*(p.components() for p in self.plugins.values()))
        except UserError:
            await self.close()
            raise
        except Exception as exc:
            await self.close()
            raise UserError(f"a plugin failed to start: {exc}", source) from exc
        self.components = dict(zip(self.plugins, listed, strict=True))
        self._router = Router(self.config.routes, self.plugins, self.components)

    async def close(self) -> None:
        results = await asyncio.gather(
            *(p.close() for p in self.plugins.values()), return_exceptions=True
        )
        for name, result in zip(self.plugins, results, strict=True):
            if isinstance(result, Exception):
                log.warning("plugin %s failed to close: %s", name, result)

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def router(self) -> Router:
        if self._router is None:
            raise RuntimeError("Runtime.start() has not been called")
        return self._router

    def new_run(
        self,
        flow: Any,
        inputs: list[Any],
        *,
        variables: dict[str, Any] | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        run_id: str | None = None,
        flow_id: str | None = None,
        extra_observers: Sequence[RunObserver] = (),
        recovered: TreeState | None = None,
    ) -> RunExecution:
        tree = RunTree(
            router=self.router,
            blobs=self.blobs,
            working_dir=self.config.working_dir,
            retry=self.config.retry,
            max_concurrency=max_concurrency,
            observers=[*self.observers, *extra_observers],
            recovered=recovered,
        )
        return RunExecution(tree, flow, inputs, run_id=run_id, flow_id=flow_id, variables=variables)

    async def run(self, flow: Any, inputs: list[Any], **kwargs: Any) -> RunOutcome:
        execution = self.new_run(flow, inputs, **kwargs)
        results = await execution.execute()
        return RunOutcome(execution.run_id, execution.status, results)
