"""Plugin `type: mock`: canned results keyed by input, for tests (flows.md §9.2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import USER_FUNCTION_ERROR, FlowResult, PluginError, UserError
from ..jsonfmt import dumps_compact, json_equal
from . import register_plugin_type
from .base import ComponentInfo, Plugin, StepCall


def _key_value(key: Any) -> Any:
    """Behaviour keys are YAML values; non-string keys arrive as YamlKey carrying `.value`."""
    return getattr(key, "value", key)


class MockPlugin(Plugin):
    static_components = True

    def __init__(self, name: str, config: dict[str, Any], working_dir: Path) -> None:
        super().__init__(name, config, working_dir)
        components = config.get("components") or {}
        if not isinstance(components, dict):
            raise UserError("expected a map of component id → spec", f"plugins.{name}.components")
        self._behaviors: dict[str, list[tuple[Any, Any]]] = {}
        self._infos: list[ComponentInfo] = []
        for component_id, spec in components.items():
            spec = spec if isinstance(spec, dict) else {}
            behaviors = spec.get("behaviors") or {}
            self._behaviors[component_id] = [(_key_value(k), v) for k, v in behaviors.items()]
            self._infos.append(
                ComponentInfo(
                    component_id,
                    spec.get("description"),
                    spec.get("input_schema"),
                    spec.get("output_schema"),
                )
            )

    async def components(self) -> list[ComponentInfo]:
        return list(self._infos)

    async def execute(self, call: StepCall) -> FlowResult:
        for key, behavior in self._behaviors.get(call.component, []):
            if json_equal(key, call.input):
                return self._apply(behavior, call)
        detail = f"No behavior defined for {call.component} on {dumps_compact(call.input)}"
        raise PluginError(detail, USER_FUNCTION_ERROR)

    @staticmethod
    def _apply(behavior: Any, call: StepCall) -> FlowResult:
        if isinstance(behavior, dict) and "error" in behavior and "outcome" not in behavior:
            raise PluginError(str(behavior["error"]), USER_FUNCTION_ERROR)
        try:
            return FlowResult.from_json(behavior, f"mock behavior for {call.component}")
        except ValueError as exc:
            raise PluginError(str(exc), USER_FUNCTION_ERROR) from None


register_plugin_type("mock", MockPlugin)
__all__ = ["MockPlugin"]
