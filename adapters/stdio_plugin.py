"""Plugin `type: stepflow`: legacy stdio JSON-RPC component servers (worker-protocol.md §6).

The plugin spawns `command args` (cwd = the working directory, the node's environment plus `env`),
talks newline-delimited JSON-RPC 2.0 over its stdin/stdout — fully multiplexed, both ways — and
drains its stderr into a 64 KiB tail. Both protocol dialects are spoken: `slash`
(`components/execute`, stepflow-py 0.2.2 to 0.7.0) and the older `underscore` one
(`component_execute`, `<prefix>://<name>` URLs); `auto` asks `components/list` and falls back to
`list_components` on an error reply.

Failures:
- A JSON-RPC error reply to an execute call is the step's result, mapped by the §6.6 code table.
- Transport failures (spawn failure, exit, EOF, an unparsable stdout line) fail every call in flight
  on that process as plugin-level failures (UNREACHABLE; the detail names the plugin and command and
  carries the exit status and stderr tail). `callTimeoutSecs` exceeded kills the process too; that
  call fails with TIMEOUT. The next call restarts the server (new handshake). A call that was in
  flight when its process died is retried once on the new process with `attempt + 1` before the
  failure is reported.
- A server that cannot be started when the plugin starts does not stop the runtime: it is logged,
  and steps routed to the plugin fail (after trying to start it again) with the reason.

Callbacks (`blobs/*`, `flows/*`, `runs/*`) need the step call they belong to, which legacy servers
do not name. Each execute is sent a fresh `trace_id` in its observability context; stepflow-py
propagates it into the callbacks it makes, which identifies the call exactly. Otherwise the call is
chosen by the callback's `run_id`/`step_id`, then: the only call in flight, else the most recently
started one in flight, else the most recent call. With several calls in flight on a server that
sends no observability context (the underscore dialect), a callback may be attributed to the wrong
call: its blobs land in the same store either way, but a nested flow then runs as a sub-run of
that other step.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..runtime.errors import COMPONENT_ERROR, FlowResult, PluginError, UserError, plugin_failure
from ..runtime.plugins import register_plugin_type
from ..runtime.plugins.base import ComponentInfo, Plugin, StepCall
from .jsonrpc import METHOD_NOT_FOUND, ConnectionClosed, JsonRpcConnection, RpcError
from .stdio_callbacks import BatchRegistry, Callback, callbacks
from .stdio_process import ChildProcess, describe_command, resolve_command, substitute

log = logging.getLogger("stepflow.plugins.stepflow")

DEFAULT_CALL_TIMEOUT_SECS = 300.0
HANDSHAKE_TIMEOUT_SECS = 30.0
# `auto` dialect: how long to wait for `list_components` after `components/list` failed.
DETECT_TIMEOUT_SECS = 5.0
PROTOCOL_VERSION = 1
# After EOF/garbage: how long the process may take to exit by itself before it is killed.
EXIT_WAIT_SECS = 2.0
# How much of the stderr tail goes into a failure detail (the whole 64 KiB stays in the logs).
DETAIL_TAIL_BYTES = 4096
DIALECTS = ("auto", "underscore", "slash")


def error_code_for(rpc_code: int) -> str:
    """A JSON-RPC error code from a legacy server as a TaskErrorCode name (§6.6)."""
    if rpc_code in (-32700, -32600, -32601, -32602, -32603):
        return "WORKER_ERROR"
    fixed = {
        -32000: "COMPONENT_FAILED",
        -32001: "COMPONENT_NOT_FOUND",
        -32002: "INVALID_INPUT",
        -32003: "COMPONENT_FAILED",
        -32004: "RESOURCE_UNAVAILABLE",
        -32005: "INVALID_INPUT",
        -32102: "RESOURCE_UNAVAILABLE",
        -32103: "INVALID_INPUT",
        -32200: "EXPRESSION_FAILURE",
        -32201: "EXPRESSION_FAILURE",
        -32202: "ORCHESTRATOR_ERROR",
    }
    if rpc_code in fixed:
        return fixed[rpc_code]
    if -32199 <= rpc_code <= -32100:
        return "COMPONENT_FAILED"
    if -32399 <= rpc_code <= -32300:
        return "UNREACHABLE"
    return "WORKER_ERROR"


class _CallTimedOut(Exception):
    pass


@dataclass
class _InFlight:
    call: StepCall
    trace_id: str


class _Session:
    """One server process and its connection; dead for good once its connection closes."""

    def __init__(self, plugin: StdioPlugin, child: ChildProcess) -> None:
        self.plugin = plugin
        self.child = child
        self.dialect = "slash"
        self.components: list[ComponentInfo] = []
        self.wire_names: dict[str, str] = {}
        self.in_flight: dict[int, _InFlight] = {}
        self.last_call: StepCall | None = None
        self._ids = itertools.count()
        self._reaper: asyncio.Task[str] | None = None
        self._kill_on_close = False
        self._stopping = False
        self.conn = JsonRpcConnection(
            child.stdout, child.stdin, self._handle_request,
            handle_notification=self._handle_notification,
            on_closed=self._on_closed, name=f"stepflow plugin {plugin.name}",
        )  # fmt: skip
        self.conn.start()

    @property
    def alive(self) -> bool:
        return not self.conn.closed

    # -- death -----------------------------------------------------------------------------------

    def fail(self, reason: str) -> None:
        """Give up on this process: kill it and fail every call in flight."""
        self._kill_on_close = True
        self.conn.close(reason)

    def _on_closed(self, reason: str) -> None:
        if not self._stopping:
            self._reaper = asyncio.create_task(self._reap(reason))

    async def _reap(self, reason: str) -> str:
        """Make sure the process is gone; the failure detail with exit status and stderr tail."""
        child = self.child
        # A server that hit EOF is normally exiting by itself; one that broke the protocol (or
        # timed out) is killed at once.
        exiting = self.conn.eof and not self._kill_on_close
        if not exiting or not await child.wait_exited(EXIT_WAIT_SECS):
            child.kill()
            await child.wait_exited(EXIT_WAIT_SECS)
        await child.stderr.wait(1.0)
        tail = child.stderr.text(DETAIL_TAIL_BYTES)
        detail = f"{reason} (pid {child.pid}, {child.exit_status()})"
        detail += f"; stderr tail:\n{tail}" if tail else "; no stderr output"
        if not self.plugin.closing:
            log.warning("%s: %s", self.plugin.describe(), detail)
        return detail

    async def failure_detail(self) -> str:
        """Why the connection closed, with the exit status and stderr tail (no plugin prefix)."""
        if self._reaper is None:  # closed without a reason (cannot happen after close())
            return str(self.conn.close_reason)
        return await asyncio.shield(self._reaper)

    async def stop(self) -> None:
        """End the process: gracefully when it is healthy (stdin EOF, SIGTERM, SIGKILL)."""
        if not self.conn.closed:
            self._stopping = True
            self.conn.close("the plugin is shutting down")
        if self._reaper is not None:
            # Others may be waiting for its detail: let it finish (it is bounded), never cancel.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._reaper)
        await self.child.stop()

    # -- handshake and discovery ----------------------------------------------------------------

    async def handshake(self, dialect: str, timeout: float) -> None:
        result = await self.conn.request(
            "initialize",
            {"runtime_protocol_version": PROTOCOL_VERSION, "protocol_prefix": self.plugin.name},
            timeout,
        )
        version = None
        if isinstance(result, dict):
            version = result.get("server_protocol_version", result.get("serverProtocolVersion"))
        if version != PROTOCOL_VERSION:
            raise PluginError(
                f"{self.plugin.describe()}: unsupported server protocol version {version!r} "
                f"(this runtime speaks version {PROTOCOL_VERSION})"
            )
        await self.conn.notify("initialized", {})
        if dialect in ("auto", "slash"):
            try:
                listed = await self.conn.request("components/list", {}, timeout)
                self.dialect = "slash"
                self._slash_components(listed)
                return
            except RpcError as exc:
                if dialect == "slash":
                    raise PluginError(
                        f"{self.plugin.describe()}: components/list failed: {exc}"
                    ) from None
                log.info("%s: components/list failed (%s); trying the underscore dialect",
                         self.plugin.describe(), exc)  # fmt: skip
                try:
                    # Slash servers drop methods they cannot decode without a reply: a slash
                    # server whose listing failed would leave this unanswered for good.
                    listed = await self.conn.request(
                        "list_components", {}, min(timeout, DETECT_TIMEOUT_SECS)
                    )
                except (RpcError, TimeoutError) as second:
                    raise PluginError(
                        f"{self.plugin.describe()}: components/list failed: {exc}; "
                        f"list_components (underscore dialect): {second or 'no answer'}"
                    ) from None
        else:
            listed = await self.conn.request("list_components", {}, timeout)
        self.dialect = "underscore"
        await self._underscore_components(listed, timeout)

    def _slash_components(self, listed: Any) -> None:
        entries = listed.get("components") if isinstance(listed, dict) else None
        if not isinstance(entries, list):
            raise PluginError(f"{self.plugin.describe()}: components/list answered {listed!r}")
        for entry in entries:
            if isinstance(entry, str):
                entry = {"component": entry}
            if not isinstance(entry, dict) or not isinstance(entry.get("component"), str):
                raise PluginError(f"{self.plugin.describe()}: bad component entry {entry!r}")
            name = entry["component"]
            path = name if name.startswith("/") else "/" + name
            self.wire_names[path] = name
            self.components.append(
                ComponentInfo(
                    path,
                    entry.get("description"),
                    entry.get("input_schema"),
                    entry.get("output_schema"),
                )
            )

    async def _underscore_components(self, listed: Any, timeout: float) -> None:
        urls = listed.get("components") if isinstance(listed, dict) else None
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise PluginError(f"{self.plugin.describe()}: list_components answered {listed!r}")
        for url in urls:
            name = url.split("://", 1)[1] if "://" in url else url
            path = "/" + name.lstrip("/")
            info = await self.conn.request("component_info", {"component": url}, timeout)
            info = info if isinstance(info, dict) else {}
            if isinstance(info.get("info"), dict):  # tolerate the nested slash shape
                info = info["info"]
            self.wire_names[path] = url
            self.components.append(
                ComponentInfo(
                    path, info.get("description"), info.get("input_schema"),
                    info.get("output_schema"),
                )
            )  # fmt: skip

    # -- execution -------------------------------------------------------------------------------

    def wire_name(self, call: StepCall) -> str:
        for key in (call.component, call.component_id, "/" + call.component_id.lstrip("/")):
            if key in self.wire_names:
                return self.wire_names[key]
        name = call.component.lstrip("/")
        return f"/{name}" if self.dialect == "slash" else f"{self.plugin.name}://{name}"

    async def execute(self, call: StepCall, attempt: int, timeout: float | None) -> FlowResult:
        trace_id = uuid.uuid4().hex
        key = next(self._ids)
        self.in_flight[key] = _InFlight(call, trace_id)
        self.last_call = call
        component = self.wire_name(call)
        if self.dialect == "slash":
            observability = {
                "trace_id": trace_id,
                "span_id": secrets.token_hex(8),
                "run_id": call.run_id,
                "step_id": call.step_id,
            }
            if call.flow_id:
                observability["flow_id"] = call.flow_id
            method = "components/execute"
            params: dict[str, Any] = {
                "component": component,
                "input": call.input,
                "attempt": attempt,
                "observability": observability,
            }
        else:
            method, params = "component_execute", {"component": component, "input": call.input}
        try:
            result = await self.conn.request(method, params, timeout)
        except RpcError as exc:
            if exc.has_data:
                return FlowResult.failure(error_code_for(exc.code), exc.message, exc.data)
            return FlowResult.failure(error_code_for(exc.code), exc.message)
        except TimeoutError:
            raise _CallTimedOut() from None
        finally:
            del self.in_flight[key]
        if not isinstance(result, dict) or "output" not in result:
            return FlowResult.failure(
                "WORKER_ERROR", f"{method} answered without an 'output': {str(result)[:200]}"
            )
        return FlowResult.success(result["output"])

    # -- server → runtime ------------------------------------------------------------------------

    def owner(self, params: dict[str, Any]) -> StepCall | None:
        """The step call a callback belongs to (see the module docstring)."""
        calls = list(self.in_flight.values())
        obs = params.get("observability")
        if isinstance(obs, dict):
            trace_id = obs.get("trace_id")
            for entry in calls:
                if trace_id and entry.trace_id == trace_id:
                    return entry.call
            matching = [
                e
                for e in calls
                if e.call.run_id == obs.get("run_id") and e.call.step_id == obs.get("step_id")
            ]
            if matching:
                return matching[-1].call
        if calls:
            return calls[-1].call
        return self.last_call

    async def _handle_request(self, method: str, params: Any) -> Any:
        handler: Callback | None = self.plugin.callbacks.get(method)
        if handler is None:
            raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise RpcError(-32602, f"{method}: params must be an object")
        call = self.owner(params)
        if call is None:
            raise RpcError(-32603, f"{method}: no step is executing on this server")
        return await handler(call, params)

    def _handle_notification(self, method: str, params: Any) -> None:
        log.debug("%s: notification %s %s", self.plugin.describe(), method, params)


def _where(name: str, key: str) -> str:
    return f"plugins.{name}.{key}"


class StdioPlugin(Plugin):
    """Components of one legacy stdio JSON-RPC server process (restarted when it fails)."""

    def __init__(self, name: str, config: dict[str, Any], working_dir: Path) -> None:
        super().__init__(name, config, working_dir)
        transport = config.get("transport") or "stdio"
        if transport == "http":
            raise UserError(
                "transport 'http' is not supported (only stdio)", _where(name, "transport")
            )
        if transport != "stdio":
            raise UserError(f"unknown transport {transport!r} (expected stdio)",
                            _where(name, "transport"))  # fmt: skip
        command = config.get("command")
        if not isinstance(command, str) or not command:
            raise UserError("a stepflow plugin needs a command (string)", _where(name, "command"))
        self.command = command
        args = config.get("args") or []
        if not isinstance(args, list) or not all(isinstance(a, str | int | float) for a in args):
            raise UserError("expected a list of strings", _where(name, "args"))
        self.args = [str(a) for a in args]
        env = config.get("env") or {}
        if not isinstance(env, dict) or not all(
            isinstance(v, str | int | float | bool) for v in env.values()
        ):
            raise UserError("expected a map of strings", _where(name, "env"))
        self.env = {str(k): str(v) for k, v in env.items()}
        dialect = config.get("protocolDialect") or "auto"
        if dialect not in DIALECTS:
            raise UserError(f"expected one of {', '.join(DIALECTS)}",
                            _where(name, "protocolDialect"))  # fmt: skip
        self.dialect = str(dialect)
        timeout = config.get("callTimeoutSecs")
        if timeout is None:
            timeout = DEFAULT_CALL_TIMEOUT_SECS
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
            raise UserError("must be a number ≥ 0 (0 = no timeout)",
                            _where(name, "callTimeoutSecs"))  # fmt: skip
        self.call_timeout: float | None = float(timeout) or None
        self.handshake_timeout = min(HANDSHAKE_TIMEOUT_SECS, self.call_timeout or math.inf)
        self.callbacks = callbacks(BatchRegistry())
        self.closing = False
        self._components: list[ComponentInfo] = []
        self._session: _Session | None = None
        self._lock = asyncio.Lock()
        self._stderr_log = logging.getLogger(f"stepflow.plugins.stepflow.{name}")

    def describe(self) -> str:
        command = describe_command(self.command, self.args)
        return f"stepflow plugin '{self.name}' (command: {command})"

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._live_session()
        except PluginError as exc:
            # Steps routed here fail with this reason (after a new start attempt); others run.
            log.error("%s", exc.detail)
            self.accepts_unlisted_components = True

    async def close(self) -> None:
        self.closing = True
        async with self._lock:
            session, self._session = self._session, None
        if session is not None:
            await session.stop()

    async def components(self) -> list[ComponentInfo]:
        return list(self._components)

    async def _live_session(self) -> _Session:
        async with self._lock:
            if self.closing:
                raise PluginError(f"{self.describe()}: the plugin is shutting down")
            session = self._session
            if session is not None and session.alive:
                return session
            if session is not None:
                self._session = None
                await session.stop()
            session = await self._start_session()
            self._session = session
        self._publish(session.components)
        return session

    def _publish(self, found: list[ComponentInfo]) -> None:
        # `accepts_unlisted_components` stays as start() left it: after a failed start the router
        # only knows the new list if the runtime listens (`on_components_changed`).
        if found != self._components:
            self._components = found
            log.info("%s serves %s (%s dialect)", self.describe(),
                     " ".join(c.path for c in found) or "nothing",
                     self._session.dialect if self._session else "?")  # fmt: skip
            if self.on_components_changed is not None:
                self.on_components_changed(found)

    async def _start_session(self) -> _Session:
        environ = dict(os.environ)
        env = {**environ, **{k: substitute(v, environ) for k, v in self.env.items()}}
        args = [substitute(a, environ) for a in self.args]
        executable = resolve_command(self.command, self.working_dir, env.get("PATH"))
        if executable is None:
            raise PluginError(
                f"{self.describe()}: command '{self.command}' not found "
                f"(on PATH or in {self.working_dir})"
            )
        try:
            child = await ChildProcess.spawn(
                executable, args, env=env, cwd=self.working_dir, stderr_log=self._stderr_log
            )
        except OSError as exc:
            raise PluginError(
                f"{self.describe()}: cannot start '{executable}': {exc.strerror or exc}"
            ) from None
        log.info("%s started (pid %d)", self.describe(), child.pid)
        session = _Session(self, child)
        try:
            await session.handshake(self.dialect, self.handshake_timeout)
        except ConnectionClosed:
            detail = await session.failure_detail()
            await session.stop()
            raise PluginError(f"{self.describe()}: failed to start: {detail}") from None
        except TimeoutError:
            session.fail(f"no answer to the handshake within {self.handshake_timeout:g} s")
            detail = await session.failure_detail()
            await session.stop()
            raise PluginError(f"{self.describe()}: failed to start: {detail}") from None
        except RpcError as exc:
            await session.stop()
            raise PluginError(f"{self.describe()}: handshake failed: {exc}") from None
        except BaseException:
            await session.stop()
            raise
        return session

    # -- execution -------------------------------------------------------------------------------

    async def execute(self, call: StepCall) -> FlowResult:
        attempt = call.attempt
        for retried in (False, True):
            session = await self._live_session()
            try:
                return await session.execute(call, attempt, self.call_timeout)
            except _CallTimedOut:
                session.fail(f"call to {call.component} timed out after {self.call_timeout:g} s")
                detail = await session.failure_detail()
                return self._timeout(call, f"{self.describe()}: {detail}")
            except ConnectionClosed:
                detail = f"{self.describe()}: {await session.failure_detail()}"
                if retried:
                    detail += f" (the call was in flight twice: attempts {call.attempt}, {attempt})"
                if retried or self.closing:
                    raise PluginError(detail, COMPONENT_ERROR) from None
                log.warning(
                    "step %s: retrying once on a restarted server with attempt %d",
                    call.step_id, attempt + 1,
                )  # fmt: skip
                attempt += 1
        raise AssertionError("unreachable")

    @staticmethod
    def _timeout(call: StepCall, detail: str) -> FlowResult:
        """A plugin-level failure shaped like the others, with code TIMEOUT."""
        failure = plugin_failure(call.step_id, call.component, detail, COMPONENT_ERROR)
        assert failure.error is not None
        return FlowResult.failure("TIMEOUT", failure.error.message, failure.error.data)


register_plugin_type("stepflow", StdioPlugin)

__all__ = ["StdioPlugin", "error_code_for"]
