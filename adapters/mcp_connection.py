"""One MCP server process and its client session, for the `mcp` plugin (worker-protocol.md §7).

Built on the official `mcp` client SDK (`stdio_client` + `ClientSession`). The SDK's transport and
session are anyio context managers whose task groups must be entered and left by one task, so each
server process (an "incarnation") is owned by a background task, `McpConnection._serve`, that holds
both contexts open until the plugin closes it or the transport breaks. Step calls from any task are
multiplexed over that one session (no lock around calls).

Importing the SDK takes about a second, so only `McpPlugin` imports this module, when a config
actually has an `mcp` plugin.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import shlex
from collections.abc import Callable
from importlib import metadata
from typing import Any

import anyio
import mcp.types as types
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream
from mcp import ClientSession, MCPError, StdioServerParameters
from mcp.client.session import ClientRequestContext
from mcp.client.stdio import stdio_client
from mcp.shared.message import SessionMessage
from mcp.types.jsonrpc import CONNECTION_CLOSED, INVALID_PARAMS, METHOD_NOT_FOUND
from pydantic import ValidationError

from ..runtime.errors import COMPONENT_ERROR, FlowResult, PluginError

log = logging.getLogger("stepflow.plugins.mcp")

HANDSHAKE_TIMEOUT_SECS = 30.0
STDERR_TAIL_BYTES = 64 * 1024
# How much of the stderr tail a failure detail quotes.
DETAIL_TAIL_LINES = 20
DETAIL_TAIL_CHARS = 4000
# The SDK's own shutdown is bounded (stdin close, 2 s, SIGTERM, 2 s, SIGKILL); this is a backstop.
CLOSE_TIMEOUT_SECS = 10.0
PING_TIMEOUT_SECS = 5.0
# After the transport broke: how long to wait for the rest of stderr (usually the cause).
STDERR_EOF_GRACE_SECS = 1.0
MAX_TOOL_PAGES = 10_000


def _project_version() -> str:
    try:
        return metadata.version("stepflow-mesh")
    except metadata.PackageNotFoundError:  # a source tree without installed metadata
        return "0.1.0"


def _first_leaf(exc: BaseException) -> BaseException:
    """anyio task groups wrap failures in exception groups; the first leaf is the cause."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class _StderrTail(asyncio.Protocol):
    """Reads the server's stderr pipe as it comes, keeping the last STDERR_TAIL_BYTES.

    Lines are logged at debug (info with `STEPFLOW_COMPONENT_STDERR=verbose`, as for `stepflow`
    plugins). Reading never pauses while the pipe is open, so a chatty server cannot block on it.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.tail = bytearray()
        self.closed = asyncio.Event()
        self._partial = b""
        verbose = os.environ.get("STEPFLOW_COMPONENT_STDERR", "").lower() == "verbose"
        self._level = logging.INFO if verbose else logging.DEBUG

    def data_received(self, data: bytes) -> None:
        self.tail += data
        if len(self.tail) > STDERR_TAIL_BYTES:
            del self.tail[: len(self.tail) - STDERR_TAIL_BYTES]
        if log.isEnabledFor(self._level):
            *lines, self._partial = (self._partial + data).split(b"\n")
            for line in lines:
                log.log(self._level, "[%s stderr] %s", self.label, line.decode(errors="replace"))
            self._partial = self._partial[-STDERR_TAIL_BYTES:]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._partial and log.isEnabledFor(self._level):
            text = self._partial.decode(errors="replace")
            log.log(self._level, "[%s stderr] %s", self.label, text)
        self.closed.set()

    def last_lines(self) -> list[str]:
        text = self.tail.decode(errors="replace")[-DETAIL_TAIL_CHARS:]
        return [line for line in text.splitlines() if line.strip()][-DETAIL_TAIL_LINES:]


class _StepflowClientSession(ClientSession):
    """The SDK session with the client behaviour §7 fixes.

    Capabilities are exactly `roots {listChanged: false}` (the SDK would advertise listChanged
    true for a roots callback); `roots/list` answers no roots; sampling, elicitation and any other
    server request get -32601. `ping` is answered by the SDK itself.
    """

    def _build_capabilities(self, version: str) -> types.ClientCapabilities:
        return types.ClientCapabilities(roots=types.RootsCapability(list_changed=False))

    async def dispatch_input_request(
        self, ctx: ClientRequestContext, request: types.InputRequest
    ) -> types.InputResponse | types.ErrorData:
        if isinstance(request, types.ListRootsRequest):
            return types.ListRootsResult(roots=[])
        return types.ErrorData(code=METHOD_NOT_FOUND, message="Method not found")


class StartFailed(Exception):
    """The server could not be started: spawn failure, early exit, handshake failure/timeout."""

    def __init__(self, detail: str, stderr: list[str]) -> None:
        super().__init__(detail)
        self.detail = detail
        self.stderr = stderr


class McpConnection:
    """One incarnation of the server: its process, its MCP session and the task owning both."""

    def __init__(
        self,
        plugin: str,
        params: StdioServerParameters,
        on_tools: Callable[[McpConnection, list[types.Tool]], None],
    ) -> None:
        self.plugin = plugin
        self.params = params
        self.command_line = shlex.join([params.command, *params.args])
        self.on_tools = on_tools
        self.session: _StepflowClientSession | None = None
        self.tools: list[types.Tool] = []
        self.ready = False
        # Set once the transport is unusable (broken or closing); `failure` says why.
        self.dead = asyncio.Event()
        self.failure: str | None = None
        # A call timed out: before the next transport retry, check that the server still answers.
        self.suspect = False
        self._stop = asyncio.Event()
        self._stderr = _StderrTail(plugin)
        self._errlog: io.TextIOWrapper | None = None
        self._task: asyncio.Task[None] | None = None
        self._task_group: TaskGroup | None = None
        self._listing = False
        self._relist = False

    @property
    def alive(self) -> bool:
        return self.ready and not self.dead.is_set()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Spawn, handshake and list the tools; raises `StartFailed` with a detail."""
        # stderr goes to a pipe read by the event loop (the SDK hands `errlog` to the child as is);
        # the read end belongs to the pipe transport, our copy of the write end is closed once the
        # child has been spawned.
        read_fd, write_fd = os.pipe()
        self._errlog = open(write_fd, "w", closefd=True)  # noqa: SIM115
        reader = open(read_fd, "rb", buffering=0, closefd=True)  # noqa: SIM115
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_read_pipe(lambda: self._stderr, reader)
        except BaseException:
            reader.close()
            self._close_errlog()
            raise
        started: asyncio.Future[None] = loop.create_future()
        self._task = asyncio.create_task(self._serve(started), name=f"mcp server {self.plugin}")
        try:
            await asyncio.shield(started)
        except StartFailed as exc:
            await self._wait_for_stderr()
            raise StartFailed(exc.detail, self._stderr.last_lines()) from None
        except asyncio.CancelledError:
            self._task.cancel()  # its shielded exit still stops the process
            raise

    async def _serve(self, started: asyncio.Future[None]) -> None:
        """Own the transport and session contexts for the whole life of the incarnation."""
        assert self._errlog is not None
        try:
            async with stdio_client(self.params, errlog=self._errlog) as (read, write):
                self._close_errlog()  # the child has its own copy now
                send, receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)
                async with anyio.create_task_group() as task_group:
                    self._task_group = task_group
                    task_group.start_soon(self._pump, read, send)
                    async with _StepflowClientSession(
                        receive,
                        write,
                        message_handler=self._on_message,
                        client_info=types.Implementation(
                            name="stepflow", version=_project_version()
                        ),
                    ) as session:
                        with anyio.fail_after(HANDSHAKE_TIMEOUT_SECS):
                            await session.initialize()
                            self.session = session
                            self.tools = await self._list_tools(session)
                        self.ready = True
                        started.set_result(None)
                        await self._stop.wait()
                    task_group.cancel_scope.cancel()
        except Exception as exc:  # whatever it was, this incarnation is over
            reason = self._describe(_first_leaf(exc))
            self._fail(reason)
            if not started.done():
                started.set_exception(StartFailed(self._detail(reason), []))
        finally:
            self._close_errlog()
            self._task_group = None
            self._fail("was stopped", requested=True)
            if not started.done():
                started.set_exception(StartFailed(self._detail("was stopped"), []))

    def _describe(self, exc: BaseException) -> str:
        if self.failure is not None:
            return self.failure
        if isinstance(exc, TimeoutError):
            return f"did not complete the MCP handshake within {HANDSHAKE_TIMEOUT_SECS:g} seconds"
        if isinstance(exc, OSError) and self.session is None and exc.strerror:
            return f"could not be started: {exc.strerror}"
        if isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED:
            return "closed the connection"
        return f"failed: {type(exc).__name__}: {exc}"

    async def _pump(
        self, read: Any, send: MemoryObjectSendStream[SessionMessage | Exception]
    ) -> None:
        """Forward the transport's messages to the session; EOF or garbage ends the connection.

        The connection is marked dead *before* the session sees EOF, so a call failing with
        "Connection closed" can tell a broken transport from a server's own -32000 error.
        """
        async with send:
            try:
                async for item in read:
                    if isinstance(item, Exception):
                        self._fail(f"sent an invalid message ({type(item).__name__}: {item})")
                        return
                    await send.send(item)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # our own shutdown
            self._fail("closed its stdout (the process exited or closed the connection)")

    def _fail(self, reason: str, *, requested: bool = False) -> None:
        if self.failure is None:
            self.failure = reason
            if self.ready and not requested:
                log.warning("MCP server of plugin '%s' %s", self.plugin, reason)
        self.dead.set()
        self._stop.set()

    def kill(self, reason: str) -> None:
        """Give up on this incarnation: in-flight calls fail, the process is stopped."""
        self._fail(reason, requested=True)
        log.warning("MCP server of plugin '%s' %s; stopping it", self.plugin, reason)

    def _close_errlog(self) -> None:
        errlog, self._errlog = self._errlog, None
        if errlog is not None:
            with contextlib.suppress(OSError):
                errlog.close()

    async def close(self) -> None:
        """Stop the server (the SDK closes stdin, then terminates the process group)."""
        self._fail("was stopped", requested=True)
        task = self._task
        if task is not None and not task.done():
            if not self.ready:
                task.cancel()  # still starting: nothing to drain, stop waiting for the handshake
            await asyncio.wait({task}, timeout=CLOSE_TIMEOUT_SECS)
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        await self._wait_for_stderr()

    async def _wait_for_stderr(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stderr.closed.wait(), STDERR_EOF_GRACE_SECS)

    # -- failures --------------------------------------------------------------------------------

    def _detail(self, reason: str) -> str:
        return f"MCP server of plugin '{self.plugin}' ({self.command_line}) {reason}"

    async def failure_detail(self) -> str:
        """The detail of a transport failure, with the stderr tail once the process is gone."""
        await self._wait_for_stderr()
        detail = self._detail(self.failure or "failed")
        lines = self._stderr.last_lines()
        if lines:
            detail += "; stderr tail:\n" + "\n".join(lines)
        return detail

    async def _broken(self) -> bool:
        """After a "Connection closed": was it the transport (vs a server's own -32000 error)?"""
        if self.dead.is_set():
            return True
        # A write onto a dead stdin fails before the reader reaches EOF: give it a moment.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.dead.wait(), STDERR_EOF_GRACE_SECS)
        return self.dead.is_set()

    # -- discovery -------------------------------------------------------------------------------

    async def _list_tools(self, session: ClientSession) -> list[types.Tool]:
        """`tools/list`, following `nextCursor` until exhausted."""
        tools: list[types.Tool] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_TOOL_PAGES):
            params = types.PaginatedRequestParams(cursor=cursor) if cursor is not None else None
            page = await session.list_tools(params=params)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
            if cursor in seen:
                log.warning("MCP server of plugin '%s' repeated cursor %r", self.plugin, cursor)
                break
            seen.add(cursor)
        return tools

    async def _on_message(self, message: types.ServerNotification | Exception) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            if self._listing:
                self._relist = True
            elif self._task_group is not None and self.ready:
                self._listing = True
                self._task_group.start_soon(self._relist_tools)
        elif isinstance(message, types.LoggingMessageNotification):
            params = message.params
            log.info("[%s log %s] %s", self.plugin, params.level, params.data)
        elif isinstance(message, Exception):
            log.warning("MCP server of plugin '%s': transport error %s", self.plugin, message)
        else:
            log.debug("MCP server of plugin '%s' notified %s", self.plugin, message)

    async def _relist_tools(self) -> None:
        """Re-run discovery after `notifications/tools/list_changed` (coalescing bursts)."""
        try:
            while True:
                self._relist = False
                session = self.session
                if session is None or self.dead.is_set():
                    return
                try:
                    self.tools = await self._list_tools(session)
                except Exception as exc:
                    log.warning("re-listing the tools of plugin '%s' failed: %s", self.plugin, exc)
                    return
                self.on_tools(self, self.tools)
                if not self._relist:
                    return
        finally:
            self._listing = False

    async def ping(self) -> bool:
        session = self.session
        if session is None or self.dead.is_set():
            return False
        try:
            async with asyncio.timeout(PING_TIMEOUT_SECS):
                await session.send_ping()
        except Exception:
            return False
        return True

    # -- calls -----------------------------------------------------------------------------------

    async def call(self, name: str, arguments: dict[str, Any], timeout: float | None) -> FlowResult:
        """`tools/call`; raises PluginError when the transport broke under the call."""
        session = self.session
        if session is None or self.dead.is_set():
            raise PluginError(await self.failure_detail(), COMPONENT_ERROR)
        try:
            async with asyncio.timeout(timeout):
                result = await session.call_tool(name, arguments)
        except TimeoutError:
            if self.dead.is_set():
                raise PluginError(await self.failure_detail(), COMPONENT_ERROR) from None
            self.suspect = True
            return FlowResult.failure(
                "TIMEOUT", f"Tool '{name}' did not answer within {timeout:g} seconds"
            )
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED and await self._broken():
                raise PluginError(await self.failure_detail(), COMPONENT_ERROR) from None
            data: dict[str, Any] = {"code": exc.code, "message": exc.message}
            if exc.data is not None:
                data["data"] = exc.data
            code = "INVALID_INPUT" if exc.code == INVALID_PARAMS else "COMPONENT_FAILED"
            return FlowResult.failure(code, f"Tool '{name}' execution failed: {exc.message}", data)
        except ValidationError as exc:
            return FlowResult.failure(
                "COMPONENT_FAILED", f"Tool '{name}' returned an invalid result: {exc}"
            )
        except RuntimeError as exc:  # e.g. structured content not matching the output schema
            return FlowResult.failure("COMPONENT_FAILED", f"Tool '{name}' execution failed: {exc}")
        if not isinstance(result, types.CallToolResult):
            return FlowResult.failure("COMPONENT_FAILED", f"Tool '{name}' returned no tool result")
        content = [
            item.model_dump(mode="json", by_alias=True, exclude_none=True)
            for item in result.content
        ]
        if result.is_error:
            texts = [item["text"] for item in content if item.get("type") == "text"]
            message = "\n".join(texts) if texts else f"Tool '{name}' returned an error"
            return FlowResult.failure("COMPONENT_FAILED", message, {"content": content})
        return FlowResult.success(content)


def server_parameters(
    command: str, args: list[str], env: dict[str, str], cwd: str
) -> StdioServerParameters:
    return StdioServerParameters(command=command, args=args, env=env, cwd=cwd)


__all__ = ["HANDSHAKE_TIMEOUT_SECS", "McpConnection", "StartFailed", "server_parameters"]
