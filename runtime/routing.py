"""Route a component path to a plugin (flows.md §9.3)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .config import RouteRule
from .jsonfmt import json_equal
from .paths import NOT_FOUND
from .plugins.base import ComponentInfo, Plugin, compile_component_path


class RoutingError(Exception):
    """No rule matched; the step fails with ORCHESTRATOR_ERROR and is never retried."""


@dataclass
class Route:
    plugin: Plugin
    component: str
    rule: RouteRule
    path_params: dict[str, str] = field(default_factory=dict)
    component_id: str = ""


@dataclass
class _PluginComponents:
    plugin: Plugin
    patterns: list[tuple[ComponentInfo, re.Pattern[str]]]


class Router:
    """Resolves `/prefix/rest` against the configured rules; first match wins."""

    def __init__(
        self,
        routes: dict[str, list[RouteRule]],
        plugins: dict[str, Plugin],
        components: dict[str, list[ComponentInfo]],
    ) -> None:
        self.routes = routes
        self._plugins = {
            name: _PluginComponents(
                plugin, [(c, compile_component_path(c.path)) for c in components[name]]
            )
            for name, plugin in plugins.items()
        }

    def routes_to(self, plugin: str, component_path: str) -> list[str]:
        """The full paths under which a plugin's component is reachable (one per route prefix)."""
        return [
            prefix.rstrip("/") + component_path if prefix != "/" else component_path
            for prefix, rules in self.routes.items()
            if any(r.plugin == plugin for r in rules)
        ]

    @staticmethod
    def split(path: str) -> tuple[str, str]:
        """`/builtin/eval` → (`/builtin`, `/eval`); `/python` → (`/python`, `/`)."""
        rest = path[1:]
        head, sep, tail = rest.partition("/")
        return "/" + head, "/" + tail if sep else "/"

    def resolve(self, path: str, step_input: Any, *, static: bool = False) -> Route:
        """The first matching rule's route; `static` skips conditions (input not known yet)."""
        prefix, remainder = self.split(path)
        candidates: list[tuple[str, str]] = []
        if prefix in self.routes:
            candidates.append((prefix, remainder))
        if "/" in self.routes:
            candidates.append(("/", path))
        if not candidates:
            raise RoutingError(f"No matching prefix for path: {path}")
        for route_prefix, rest in candidates:
            for rule in self.routes[route_prefix]:
                route = self._match(rule, rest, step_input, static)
                if route is not None:
                    return route
        raise RoutingError(f"No matching component for path: {path} (prefix: {candidates[0][0]})")

    def _match(self, rule: RouteRule, rest: str, step_input: Any, static: bool) -> Route | None:
        for cond in () if static else rule.conditions:
            value = cond.path.lookup(step_input)
            if value is NOT_FOUND:
                raise RoutingError("Failed to extract value from input path")
            if not json_equal(value, cond.value):
                return None
        entry = self._plugins.get(rule.plugin)
        if entry is None:
            return None
        for info, pattern in entry.patterns:
            match = pattern.match(rest)
            if match is None:
                continue
            if rest in rule.component_deny:
                return None
            if rule.component_allow is not None and rest not in rule.component_allow:
                return None
            return Route(entry.plugin, rest, rule, dict(match.groupdict()), info.dispatch_id)
        if entry.plugin.accepts_unlisted_components and self._allowed(rule, rest):
            # Workers may connect (and be discovered) later: the task waits in their queue.
            return Route(entry.plugin, rest, rule, {}, rest.lstrip("/"))
        return None

    @staticmethod
    def _allowed(rule: RouteRule, rest: str) -> bool:
        if rest in rule.component_deny:
            return False
        return rule.component_allow is None or rest in rule.component_allow
