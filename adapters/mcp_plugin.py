"""Plugin `type: mcp`: the tools of an MCP server over stdio as components (worker-protocol.md §7).

`{type: mcp, command, args, env: {}, callTimeoutSecs: 300}`. Each tool `<t>` is the component
`/<t>`; a step's input is the tool's arguments and its output the result's `content` list as MCP
JSON. Transport failures (spawn failure, exit, EOF, protocol garbage) are plugin-level failures
(`UNREACHABLE`, transport-retried); the next call, or `prepare_retry`, starts the server again and
lists its tools again. The process and session live in `mcp_connection.McpConnection`, which this
module imports only when an `mcp` plugin is created (the SDK takes about a second to import).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..runtime.errors import COMPONENT_ERROR, FlowResult, PluginError, UserError
from ..runtime.plugins import register_plugin_type
from ..runtime.plugins.base import ComponentInfo, Plugin, StepCall
from .stdio_process import substitute

if TYPE_CHECKING:
    import mcp.types

    from .mcp_connection import McpConnection, StartFailed

log = logging.getLogger("stepflow.plugins.mcp")

DEFAULT_CALL_TIMEOUT_SECS = 300.0
OUTPUT_SCHEMA: dict[str, Any] = {"type": "array"}


def substitute_env(value: str, where: str, environ: Mapping[str, str] | None = None) -> str:
    """Expand `${VAR}` and `${VAR:-default}` from the node's environment.

    The default applies when VAR is unset or empty (as the shell's `:-`); an unset VAR without a
    default is a config error rather than a silently empty argument.
    """

    def unset(name: str) -> str:
        raise UserError(
            f"environment variable '{name}' is not set (write ${{{name}:-default}} for a default)",
            where,
        )

    return substitute(value, os.environ if environ is None else environ, unset)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


class McpPlugin(Plugin):
    def __init__(self, name: str, config: dict[str, Any], working_dir: Path) -> None:
        super().__init__(name, config, working_dir)
        where = f"plugins.{name}"
        command = config.get("command")
        if not isinstance(command, str) or not command:
            raise UserError("an mcp plugin needs a non-empty string", f"{where}.command")
        self.command = command
        args = config.get("args")
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise UserError("an mcp plugin needs a list of strings", f"{where}.args")
        self.args = [substitute_env(a, f"{where}.args[{i}]") for i, a in enumerate(args)]
        env = config.get("env") or {}
        if not isinstance(env, dict):
            raise UserError("expected a map of strings", f"{where}.env")
        self.env: dict[str, str] = {}
        for key, value in env.items():
            if isinstance(value, dict | list) or value is None:
                raise UserError("expected a string", f"{where}.env.{key}")
            if isinstance(value, bool):
                value = "true" if value else "false"
            self.env[str(key)] = substitute_env(str(value), f"{where}.env.{key}")
        timeout = config.get("callTimeoutSecs")
        if timeout is None:
            timeout = DEFAULT_CALL_TIMEOUT_SECS
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
            raise UserError("must be a number ≥ 0 (0 = no timeout)", f"{where}.callTimeoutSecs")
        self.call_timeout: float | None = float(timeout) or None
        self._connection: McpConnection | None = None
        self._restart_lock = asyncio.Lock()
        self._start_attempts = 0
        self._start_failure: StartFailed | None = None
        self._components: list[ComponentInfo] = []
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        from .mcp_connection import StartFailed

        try:
            await self._connect()
        except StartFailed as exc:
            raise UserError(exc.detail, f"plugins.{self.name}", exc.stderr) from None

    async def _connect(self) -> McpConnection:
        """The live incarnation, (re)starting the server if there is none; raises StartFailed."""
        from .mcp_connection import McpConnection, StartFailed, server_parameters

        connection = self._connection
        if connection is not None and connection.alive:
            return connection
        attempts = self._start_attempts
        async with self._restart_lock:
            connection = self._connection
            if connection is not None and connection.alive:
                return connection
            if self._closed:
                raise StartFailed(f"plugin '{self.name}' is closed", [])
            if self._start_attempts != attempts and self._start_failure is not None:
                # It failed to start while this call waited: one attempt per wave of calls.
                raise self._start_failure
            self._start_attempts += 1
            self._start_failure = None
            if connection is not None:
                await connection.close()
                log.warning("restarting the MCP server of plugin '%s'", self.name)
            # The child inherits the node's environment (the SDK alone passes a safe subset).
            params = server_parameters(
                self.command, self.args, {**os.environ, **self.env}, str(self.working_dir)
            )
            connection = McpConnection(self.name, params, self._tools_listed)
            self._connection = connection
            try:
                await connection.start()
            except StartFailed as exc:
                self._start_failure = exc
                raise
            if self._closed:  # closed while it was starting
                await connection.close()
                raise StartFailed(f"plugin '{self.name}' is closed", [])
            self._tools_listed(connection, connection.tools)
            return connection

    async def prepare_retry(self) -> None:
        """Before a transport retry: restart a dead server; after a call timeout, ping it first."""
        from .mcp_connection import StartFailed

        connection = self._connection
        try:
            if connection is not None and connection.alive and connection.suspect:
                connection.suspect = False
                if not await connection.ping():
                    connection.kill("stopped answering pings after a call timed out")
            await self._connect()
        except StartFailed as exc:
            # The retried call reports it (and tries again); prepare_retry itself must not fail.
            log.warning("%s", exc.detail)

    async def close(self) -> None:
        self._closed = True
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    # -- components ------------------------------------------------------------------------------

    async def components(self) -> list[ComponentInfo]:
        return list(self._components)

    def _tools_listed(self, connection: McpConnection, tools: list[mcp.types.Tool]) -> None:
        """Discovery ran (start, restart, `tools/list_changed`): publish a changed list."""
        if connection is not self._connection:
            return  # a replaced incarnation's late answer
        found = [
            ComponentInfo(
                path=f"/{tool.name}",
                description=tool.description or "MCP tool",
                input_schema=tool.input_schema,
                output_schema=dict(OUTPUT_SCHEMA),
            )
            for tool in tools
        ]
        if found == self._components:
            return
        self._components = found
        log.info("MCP plugin %s serves %s", self.name, ", ".join(c.path for c in found))
        if self.on_components_changed is not None:
            self.on_components_changed(list(found))

    # -- execution -------------------------------------------------------------------------------

    async def execute(self, call: StepCall) -> FlowResult:
        from .mcp_connection import StartFailed

        component = call.component_id or call.component
        name = component[1:] if component.startswith("/") else component
        if not isinstance(call.input, dict):
            return FlowResult.failure(
                "INVALID_INPUT",
                f"Tool '{name}' input must be an object, got {_json_type(call.input)}",
            )
        try:
            connection = await self._connect()
        except StartFailed as exc:
            detail = exc.detail
            if exc.stderr:
                detail += "; stderr tail:\n" + "\n".join(exc.stderr)
            raise PluginError(detail, COMPONENT_ERROR) from None
        return await connection.call(name, call.input, self.call_timeout)


register_plugin_type("mcp", McpPlugin)
__all__ = ["McpPlugin", "substitute_env"]
