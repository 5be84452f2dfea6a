"""Plugin types by config `type`; later packages (grpc, stdio, mcp) register theirs here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UserError
from .base import ComponentInfo, Plugin, StepCall

PluginFactory = type[Plugin]
PLUGIN_TYPES: dict[str, PluginFactory] = {}
UNSUPPORTED_TYPES = {"nats": "plugin type 'nats' is not supported"}


def register_plugin_type(type_name: str, factory: PluginFactory) -> None:
    PLUGIN_TYPES[type_name] = factory


def _load_known_types() -> None:
    """Import the plugin modules that ship with the runtime (they register on import)."""
    from ...adapters import mcp_plugin  # noqa: F401
    from ...adapters import stdio_plugin as _stdio_plugin  # noqa: F401
    from . import builtin, grpc, mock  # noqa: F401


def create_plugin(name: str, config: dict[str, Any], working_dir: Path, source: str) -> Plugin:
    # Always (imports are cached): another module registering first must not hide the builtins.
    _load_known_types()
    type_name = config.get("type")
    if type_name in UNSUPPORTED_TYPES:
        raise UserError(UNSUPPORTED_TYPES[str(type_name)], f"{source}: plugins.{name}.type")
    factory = PLUGIN_TYPES.get(str(type_name))
    if factory is None:
        known = ", ".join(sorted(PLUGIN_TYPES))
        raise UserError(
            f"unknown plugin type {type_name!r} (known: {known})", f"{source}: plugins.{name}.type"
        )
    try:
        return factory(name, config, working_dir)
    except UserError as exc:
        # Plugins name the field (`plugins.<name>...`); the user also needs the file.
        if exc.where and not exc.where.startswith(source):
            raise UserError(exc.message, f"{source}: {exc.where}", exc.notes) from None
        raise


__all__ = ["PLUGIN_TYPES", "ComponentInfo", "Plugin", "StepCall", "create_plugin"]
