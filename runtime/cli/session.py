"""Loading what a local command needs: the flow, its config and a started runtime."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ..config import Config, discover_config
from ..model import Flow, load_flow
from ..plugins import create_plugin
from ..routing import Router
from ..validation import Diagnostic, validate


def load_flow_and_config(flow_path: Path, config_path: Path | None) -> tuple[Flow, Config]:
    flow = load_flow(flow_path)
    config = discover_config(config_path, flow_path.parent)
    return flow, config


def static_router(config: Config) -> Router | None:
    """A router over the plugins whose components are known without starting them."""
    plugins = {}
    components = {}
    for name, plugin_config in config.plugins.items():
        plugin = create_plugin(name, plugin_config, config.working_dir, config.source or "config")
        if not plugin.static_components:
            return None
        plugins[name] = plugin
        components[name] = asyncio.run(plugin.components())
    return Router(config.routes, plugins, components)


def validate_static(flow: Flow, config: Config) -> list[Diagnostic]:
    return validate(flow, config, static_router(config))
