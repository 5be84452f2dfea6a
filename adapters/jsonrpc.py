"""Newline-delimited JSON-RPC 2.0 over a pair of byte streams, multiplexed both ways.

One UTF-8 JSON message per `\\n`-terminated line (worker-protocol.md §6.1-6.2). Many requests may
be in flight in both directions: ours are matched to their replies by id (uuid4 strings), the
peer's are each handled in their own task and answered in any order, and every write goes through
one lock so lines never interleave. Any framing problem (EOF, an unparsable or over-long line, a
failed write) closes the connection and fails every pending request with `ConnectionClosed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..runtime.jsonfmt import dumps_compact

log = logging.getLogger("stepflow.jsonrpc")

# JSON-RPC 2.0 reserved codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

_NO_DATA: Any = object()


class RpcError(Exception):
    """An error reply: raised by `request` when the peer answers one, and by request handlers to
    answer one."""

    def __init__(self, code: int, message: str, data: Any = _NO_DATA) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message
        self.data = data

    @property
    def has_data(self) -> bool:
        return self.data is not _NO_DATA and self.data is not None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.has_data:
            out["data"] = self.data
        return out


class ConnectionClosed(Exception):
    """The connection is gone (or was never usable); `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LineReader(Protocol):
    async def readline(self) -> bytes: ...


class LineWriter(Protocol):
    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...


RequestHandler = Callable[[str, Any], Awaitable[Any]]
NotificationHandler = Callable[[str, Any], None]


def _describe_line(line: bytes, limit: int = 200) -> str:
    text = line.decode("utf-8", "replace").rstrip("\n")
    return repr(text if len(text) <= limit else text[:limit] + "…")


class JsonRpcConnection:
    """Both ends of one JSON-RPC conversation. Call `start()` once, `close()` when done."""

    def __init__(
        self,
        reader: LineReader,
        writer: LineWriter,
        handle_request: RequestHandler,
        *,
        handle_notification: NotificationHandler | None = None,
        on_closed: Callable[[str], None] | None = None,
        name: str = "peer",
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._handle_request = handle_request
        self._handle_notification = handle_notification
        self._on_closed = on_closed
        self.name = name
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._write_lock = asyncio.Lock()
        self._read_task: asyncio.Task[None] | None = None
        self.close_reason: str | None = None
        self.eof = False  # the peer closed its end (as opposed to breaking the protocol)

    @property
    def closed(self) -> bool:
        return self.close_reason is not None

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._read_task = asyncio.create_task(self._read_loop(), name=f"jsonrpc-read-{self.name}")

    # -- outgoing ------------------------------------------------------------------------------

    async def request(self, method: str, params: Any, timeout: float | None = None) -> Any:
        """Send a request and wait for its reply's `result`.

        Raises RpcError for an error reply, ConnectionClosed when the connection fails first, and
        TimeoutError after `timeout` seconds (the connection itself stays open).
        """
        if self.close_reason is not None:
            raise ConnectionClosed(self.close_reason)
        request_id = str(uuid.uuid4())
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
            await self._send(message)
            if timeout is None:
                return await future
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._pending.pop(request_id, None)

    async def notify(self, method: str, params: Any) -> None:
        if self.close_reason is not None:
            raise ConnectionClosed(self.close_reason)
        await self._send({"jsonrpc": "2.0", "method": method, "params": params})

    async def _send(self, message: dict[str, Any]) -> None:
        try:
            # Compact, UTF-8 and escaped so a message is one line; non-finite floats become null.
            line = dumps_compact(message) + "\n"
        except (TypeError, ValueError) as exc:
            raise RpcError(INTERNAL_ERROR, f"message is not JSON-serialisable: {exc}") from None
        data = line.encode("utf-8")
        async with self._write_lock:
            if self.close_reason is not None:
                raise ConnectionClosed(self.close_reason)
            try:
                self._writer.write(data)
                await self._writer.drain()
            except (ConnectionError, RuntimeError, OSError) as exc:
                reason = f"writing to the server failed: {exc or type(exc).__name__}"
                self.close(reason)
                raise ConnectionClosed(reason) from None

    # -- incoming ------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        reason = "connection closed"
        try:
            while True:
                try:
                    line = await self._reader.readline()
                except ValueError:  # LimitOverrunError / "Separator is not found"
                    reason = "the server wrote a line longer than the reader's limit"
                    break
                except (ConnectionError, OSError) as exc:
                    reason = f"reading from the server failed: {exc}"
                    break
                if not line:
                    reason = "the server closed its stdout (EOF)"
                    self.eof = True
                    break
                if not line.strip():
                    continue
                try:
                    message = json.loads(line)
                except ValueError:
                    reason = f"the server wrote an unparsable line: {_describe_line(line)}"
                    break
                if not isinstance(message, dict):
                    reason = f"the server wrote a non-object JSON line: {_describe_line(line)}"
                    break
                self._dispatch(message)
        except asyncio.CancelledError:
            reason = self.close_reason or "connection closed"
            self.close(reason)
            raise
        self.close(reason)

    def _dispatch(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        if isinstance(method, str):
            params = message.get("params")
            if "id" in message and message["id"] is not None:
                task = asyncio.create_task(self._answer(message["id"], method, params))
                self._handlers.add(task)
                task.add_done_callback(self._handlers.discard)
            elif self._handle_notification is not None:
                self._handle_notification(method, params)
            return
        request_id = message.get("id")
        future = self._pending.get(str(request_id)) if request_id is not None else None
        if future is None or future.done():
            # A reply to a request we gave up on (cancelled or timed out).
            log.debug("%s: reply to an unknown request id %r ignored", self.name, request_id)
            return
        if "error" in message:
            error = message["error"]
            if not isinstance(error, dict):
                error = {"code": INTERNAL_ERROR, "message": str(error)}
            code = error.get("code")
            future.set_exception(
                RpcError(
                    code if isinstance(code, int) and not isinstance(code, bool) else 0,
                    str(error.get("message", "")),
                    error.get("data", _NO_DATA),
                )
            )
        else:
            future.set_result(message.get("result"))

    async def _answer(self, request_id: Any, method: str, params: Any) -> None:
        try:
            result = await self._handle_request(method, params)
            reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "result": result}
        except RpcError as exc:
            reply = {"jsonrpc": "2.0", "id": request_id, "error": exc.to_json()}
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s: handling %s failed", self.name, method)
            error = RpcError(INTERNAL_ERROR, f"{method} failed: {exc}")
            reply = {"jsonrpc": "2.0", "id": request_id, "error": error.to_json()}
        with contextlib.suppress(ConnectionClosed):
            try:
                await self._send(reply)
            except RpcError as exc:  # an unserialisable result
                await self._send({"jsonrpc": "2.0", "id": request_id, "error": exc.to_json()})

    # -- shutdown ------------------------------------------------------------------------------

    def close(self, reason: str) -> None:
        """Fail every pending request with `reason`, stop reading and cancel request handlers."""
        if self.close_reason is not None:
            return
        self.close_reason = reason
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionClosed(reason))
        current = asyncio.current_task()
        if self._read_task is not None and self._read_task is not current:
            self._read_task.cancel()
        for task in list(self._handlers):
            if task is not current:
                task.cancel()
        with contextlib.suppress(Exception):
            self._writer.close()
        if self._on_closed is not None:
            self._on_closed(reason)


__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "ConnectionClosed",
    "JsonRpcConnection",
    "RpcError",
]
