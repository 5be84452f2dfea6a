"""Plugin `type: builtin`: the in-process components of runtime/builtins."""

from __future__ import annotations

from ..builtins import BUILTINS, BuiltinError, NestedFailure
from ..errors import FlowResult, PluginError
from . import register_plugin_type
from .base import ComponentInfo, Plugin, StepCall


class BuiltinPlugin(Plugin):
    static_components = True

    async def components(self) -> list[ComponentInfo]:
        return [
            ComponentInfo(f"/{b.name}", b.description, b.input_schema, b.output_schema)
            for b in BUILTINS.values()
        ]

    async def execute(self, call: StepCall) -> FlowResult:
        builtin = BUILTINS.get(call.component.lstrip("/"))
        if builtin is None:
            raise PluginError(f"unknown builtin component {call.component}")
        try:
            return FlowResult.success(await builtin.run(call))
        except NestedFailure as exc:
            return exc.result
        except BuiltinError as exc:
            return FlowResult.failure(exc.code, f"{builtin.name}: {exc.message}")


register_plugin_type("builtin", BuiltinPlugin)
