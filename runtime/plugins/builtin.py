"""Plugin `type: builtin`: the in-process components of runtime/builtins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..builtins import BUILTINS, BuiltinError, NestedFailure
from ..errors import FlowResult, PluginError, UserError
from . import register_plugin_type
from .base import ComponentInfo, Plugin, StepCall


class BuiltinPlugin(Plugin):
    static_components = True
    OPENAI_SETTINGS = ("baseUrl", "apiKey", "apiKeyEnv")

    def __init__(self, name: str, config: dict[str, Any], working_dir: Path) -> None:
        super().__init__(name, config, working_dir)
        openai = config.get("openai")
        if openai is None:
            return
        where = f"plugins.{name}.openai"
        if not isinstance(openai, dict):
            raise UserError("expected a map with baseUrl, apiKey or apiKeyEnv", where)
        for key, value in openai.items():
            if key not in self.OPENAI_SETTINGS:
                known = ", ".join(self.OPENAI_SETTINGS)
                raise UserError(f"unknown setting (known: {known})", f"{where}.{key}")
            if not isinstance(value, str) or not value:
                raise UserError("expected a non-empty string", f"{where}.{key}")

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
