"""The one interface every component server sits behind.

A plugin lists its components and executes one step call at a time (concurrently, as the executor
pleases). Builtins, mocks, gRPC queues, legacy stdio servers and MCP servers all look alike to the
executor: a call goes in, a FlowResult comes out, or `PluginError` when no result could be had.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FlowResult

if TYPE_CHECKING:
    from ..blobs import BlobStore
    from ..model import Flow


@dataclass(frozen=True)
class ComponentInfo:
    """A component as a plugin offers it; `path` may hold `{name}` / `{*name}` captures."""

    path: str
    description: str | None = None
    input_schema: Any = None
    output_schema: Any = None
    component_id: str | None = None  # what the plugin is sent back; default: the path

    @property
    def dispatch_id(self) -> str:
        return self.component_id if self.component_id is not None else self.path


SubflowRunner = Callable[["Flow", list[Any], int | None], Awaitable[list[FlowResult]]]


@dataclass
class StepCall:
    """Everything a plugin may need to execute one attempt of one step of one item."""

    run_id: str
    root_run_id: str
    flow_id: str | None
    step_id: str
    item_index: int
    attempt: int
    task_id: str
    component: str
    input: Any
    blobs: BlobStore
    working_dir: Path
    run_subflow: SubflowRunner
    route_params: dict[str, Any] = field(default_factory=dict)
    path_params: dict[str, str] = field(default_factory=dict)
    # The serving plugin's config block (the builtin `openai` reads its endpoint settings here).
    plugin_config: dict[str, Any] = field(default_factory=dict)
    component_id: str = ""  # the matched component's dispatch id (worker-protocol.md §3.6)
    locality: str = "prefer"  # the route's policy for steps forwarded to other nodes (mesh)


class Plugin(ABC):
    """A component server. Subclasses register themselves by config `type` (plugins/__init__)."""

    # True when `components()` works before `start()` (validation uses it without launching).
    static_components = False
    # True for plugins whose workers connect to the runtime (the `grpc` plugin): the runtime then
    # starts a WorkerEndpoint and sets `worker_endpoint` before `start()`.
    needs_worker_endpoint = False
    # True when a path missing from `components()` may still be served (workers not discovered yet).
    accepts_unlisted_components = False
    worker_endpoint: Any = None
    # Set by the runtime: call with the new list when discovery changes the components.
    on_components_changed: Callable[[list[ComponentInfo]], None] | None = None

    def __init__(self, name: str, config: dict[str, Any], working_dir: Path) -> None:
        self.name = name
        self.config = config
        self.working_dir = working_dir

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Launch whatever the plugin needs (subprocesses, connections)."""

    @abstractmethod
    async def components(self) -> list[ComponentInfo]:
        """The components this plugin serves."""

    @abstractmethod
    async def execute(self, call: StepCall) -> FlowResult:
        """Run one attempt; raise PluginError when no result could be produced."""

    async def prepare_retry(self) -> None:  # noqa: B027 - optional hook
        """Called before a transport-level retry (a supervised worker may be restarted)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop everything `start` launched."""


def compile_component_path(path: str) -> re.Pattern[str]:
    """`/a/{x}/{*rest}` → a regex with named groups; `{x}` is one segment, `{*rest}` the rest."""
    parts = []
    for segment in re.split(r"(\{\*?[A-Za-z_][A-Za-z0-9_]*\})", path):
        if segment.startswith("{*"):
            parts.append(f"(?P<{segment[2:-1]}>.+)")
        elif segment.startswith("{"):
            parts.append(f"(?P<{segment[1:-1]}>[^/]+)")
        else:
            parts.append(re.escape(segment))
    return re.compile("".join(parts) + r"\Z")
