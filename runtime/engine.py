"""The in-process runtime: plugins from a config, the router, a blob store, and runs.

`stepflow run`, `stepflow test` and (later) every server node are this object with a different face.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import telemetry
from .blobs import BlobStore, FileBlobStore, MemoryBlobStore
from .config import Config
from .errors import FlowResult, UserError
from .executor import RunExecution, RunObserver, RunTree
from .plugins import ComponentInfo, Plugin, create_plugin
from .routing import Router

if TYPE_CHECKING:
    from .worker_api.endpoint import WorkerEndpoint
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
        worker_endpoint: WorkerEndpoint | None = None,
    ) -> None:
        self.config = config
        self.blobs = blobs or blob_store_for(config)
        self.observers = [*telemetry.run_observers(), *observers]
        self.plugins: dict[str, Plugin] = {}
        self.components: dict[str, list[ComponentInfo]] = {}
        self._router: Router | None = None
        # A node passes its own endpoint (and closes it); otherwise one is made when needed.
        self.worker_endpoint = worker_endpoint
        self._owns_endpoint = worker_endpoint is None

    async def start(self) -> None:
        """Create and start every configured plugin (concurrently), then build the router."""
        source = self.config.source or "config"
        for name, plugin_config in self.config.plugins.items():
            self.plugins[name] = create_plugin(name, plugin_config, self.config.working_dir, source)
        try:
            await self._connect_workers()
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

    async def _connect_workers(self) -> None:
        """Discovery callbacks for every plugin; plugins with pull workers get a gRPC endpoint
        (a free loopback port unless the node preset one)."""
        for name, plugin in self.plugins.items():
            plugin.on_components_changed = lambda found, name=name: self._rediscovered(name, found)
        wanting = [p for p in self.plugins.values() if p.needs_worker_endpoint]
        if not wanting:
            return
        if self.worker_endpoint is None:
            from .worker_api.endpoint import WorkerEndpoint  # grpc is only loaded when needed

            self.worker_endpoint = WorkerEndpoint(self.blobs)
            await self.worker_endpoint.start()
        for plugin in wanting:
            plugin.worker_endpoint = self.worker_endpoint

    def _rediscovered(self, plugin: str, components: list[ComponentInfo]) -> None:
        """Discovery found a new component list: rebuild the routing table."""
        self.components[plugin] = components
        if self._router is not None:
            self._router = Router(self.config.routes, self.plugins, self.components)

    async def close(self) -> None:
        # Plugins first: a grpc plugin lets its launched worker go while the endpoint serves.
        results = await asyncio.gather(
            *(p.close() for p in self.plugins.values()), return_exceptions=True
        )
        for name, result in zip(self.plugins, results, strict=True):
            if isinstance(result, Exception):
                log.warning("plugin %s failed to close: %s", name, result)
        if self.worker_endpoint is not None and self._owns_endpoint:
            await self.worker_endpoint.close()
            self.worker_endpoint = None

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
