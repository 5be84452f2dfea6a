"""What a bridge worker tells nodes it serves, and how a task's component id leads back to it.

Mapping (worker-protocol.md §3.6 from the worker's side):

- One entry per routable component of the worker's own config: for each route prefix, each rule of
  that prefix, each component of the rule's plugin that the rule's `componentAllow`/`componentDeny`
  admit. The first rule (in config order) that reaches a path wins the entry; a later rule reaching
  the same path (e.g. the same component behind `conditions`) adds nothing, but it still serves
  executions because every execution is routed through the worker's router (below).
- `path` = the component's full routable path in the WORKER's config, prefix included:
  `/time/get_current_time` when the worker routes `/time` to an MCP plugin with tool
  `get_current_time`; a `/` route adds no prefix. A node mounts it under its own route prefix, so a
  node routing `/bridge` to `{type: grpc, queueName: bridge}` reaches it as
  `/bridge/time/get_current_time`. Captures (`{name}`, `{*name}`) are kept, so a node matches them
  and sends the values back as `path_params`.
- `component_id` = `<plugin name>:<the component's in-process dispatch id>`, e.g.
  `time:/get_current_time`, `mock:/echo`; when the worker routes one plugin under more than one
  prefix, `@<prefix>` is appended (`builtin:/eval@/builtin`) so each entry stays unique.

Executing: the task's `component_id` gives the entry's path pattern, `path_params` fill its
captures, and the worker's router resolves that concrete path with the step input — conditions,
allow and deny apply exactly as they would in-process. A `component_id` that is not an entry (a
node that routed a step before it had discovered this worker sends its own remaining path without
the leading `/`) is read as a worker path: `time/get_current_time` → `/time/get_current_time`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ...runtime.config import RouteRule
from ...runtime.plugins.base import ComponentInfo

_CAPTURE = re.compile(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class BridgedComponent:
    """One component as the bridge announces it."""

    component_id: str
    path: str  # full path in the worker's config (route prefix + component path)
    plugin: str
    info: ComponentInfo


def full_path(prefix: str, component_path: str) -> str:
    """`/time` + `/get_current_time` → `/time/get_current_time`; the `/` route adds nothing."""
    if not component_path.startswith("/"):
        component_path = "/" + component_path
    return component_path if prefix == "/" else prefix.rstrip("/") + component_path


def _admitted(rule: RouteRule, component_path: str) -> bool:
    if component_path in rule.component_deny:
        return False
    return rule.component_allow is None or component_path in rule.component_allow


class Catalog:
    """The announced components of a worker config, and the way back from a task to a path."""

    def __init__(
        self,
        routes: Mapping[str, Sequence[RouteRule]],
        components: Mapping[str, Sequence[ComponentInfo]],
    ) -> None:
        prefixes: dict[str, list[str]] = {}
        for prefix, rules in routes.items():
            for rule in rules:
                seen = prefixes.setdefault(rule.plugin, [])
                if prefix not in seen:
                    seen.append(prefix)
        entries: list[BridgedComponent] = []
        paths: set[str] = set()
        ids: set[str] = set()
        for prefix, rules in routes.items():
            for rule in rules:
                for info in components.get(rule.plugin, ()):
                    if not _admitted(rule, info.path):
                        continue
                    path = full_path(prefix, info.path)
                    if path in paths:
                        continue
                    component_id = f"{rule.plugin}:{info.dispatch_id}"
                    if len(prefixes.get(rule.plugin, ())) > 1:
                        component_id += f"@{prefix}"
                    base, n = component_id, 1
                    while component_id in ids:  # two components of a plugin sharing a dispatch id
                        n += 1
                        component_id = f"{base}#{n}"
                    paths.add(path)
                    ids.add(component_id)
                    entries.append(BridgedComponent(component_id, path, rule.plugin, info))
        self.entries = entries
        self._by_id = {e.component_id: e for e in entries}

    def get(self, component_id: str) -> BridgedComponent | None:
        return self._by_id.get(component_id)

    def target_path(self, component_id: str, path_params: Mapping[str, str]) -> str:
        """The concrete worker path a task asks for (captures filled from `path_params`)."""
        entry = self._by_id.get(component_id)
        if entry is None:
            return "/" + component_id.lstrip("/")
        return fill_captures(entry.path, path_params)


def fill_captures(pattern: str, params: Mapping[str, str]) -> str:
    """`/files/{*rest}` with `{rest: "a/b"}` → `/files/a/b`; a missing value leaves the capture."""

    def value(match: re.Match[str]) -> str:
        name = match.group(2)
        return params[name] if name in params else match.group(0)

    return _CAPTURE.sub(value, pattern)
