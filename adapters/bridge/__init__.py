"""The bridge worker: stdio and MCP servers (any plugin) served to nodes over the pull protocol."""

from .catalog import BridgedComponent, Catalog
from .worker import BridgeOptions, BridgeWorker

__all__ = ["BridgeOptions", "BridgeWorker", "BridgedComponent", "Catalog"]
