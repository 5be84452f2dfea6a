"""A tiny component server speaking the 2025-06 *underscore* dialect (worker-protocol.md §6.5).

No PyPI release speaks it, so tests/adapters/test_stdio.py runs this instead. It answers the
slash-dialect `components/list` with -32601 (as those servers did for any unknown method), lists
its components as `<prefix>://<name>` URLs, describes each with `component_info`, and executes
`component_execute {component: url, input}`; the `store` component calls back `put_blob` and
`get_blob` while it runs, and `big` answers with one huge line (stepflow-py 0.7.0 cannot: it
writes synchronously to a non-blocking stdout and loses everything past the pipe buffer).
Every method it receives is recorded so tests can check the exchange.

Usage: python stdio_fake_underscore.py [PREFIX]   (the prefix expected in component URLs)
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from typing import Any

EXPECTED_PREFIX = sys.argv[1] if len(sys.argv) > 1 else "legacy"
received: list[str] = []
pending: dict[str, asyncio.Future[Any]] = {}
prefix = ""
out_lock = asyncio.Lock()


async def send(message: dict[str, Any]) -> None:
    async with out_lock:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


async def call_runtime(method: str, params: dict[str, Any]) -> Any:
    request_id = str(uuid.uuid4())
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    pending[request_id] = future
    await send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
    reply = await future
    if "error" in reply:
        raise RuntimeError(reply["error"]["message"])
    return reply["result"]


class Failure(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


COMPONENTS = {
    "double": {"description": "Doubles x", "input_schema": {"type": "object"}},
    "store": {"description": "put_blob + get_blob", "input_schema": {"type": "object"}},
    "picky": {"description": "Rejects its input", "input_schema": {"type": "object"}},
    "trace": {"description": "What the server has received", "input_schema": {}},
    "big": {"description": "A huge output line", "input_schema": {}},
}


async def execute(name: str, value: Any) -> Any:
    if name == "double":
        return {"doubled": value["x"] * 2}
    if name == "store":
        blob_id = (await call_runtime("put_blob", {"data": value}))["blob_id"]
        back = (await call_runtime("get_blob", {"blob_id": blob_id}))["data"]
        return {"blob_id": blob_id, "copy": back}
    if name == "picky":
        raise Failure(-32002, "picky: field 'x' must be a string", {"field": "x"})
    if name == "big":
        return {"text": "x" * value["size"]}
    if name == "trace":
        return {"received": received, "prefix": prefix}
    raise Failure(-32001, f"no component {name}")


async def handle(message: dict[str, Any]) -> None:
    global prefix
    method, params, request_id = message["method"], message.get("params"), message.get("id")
    received.append(method)
    if request_id is None:
        return  # `initialized`
    try:
        if params is None:
            raise Failure(-32600, "params are required")
        if method == "initialize":
            prefix = params["protocol_prefix"]
            result: Any = {"server_protocol_version": 1}
        elif method == "list_components":
            result = {"components": [f"{prefix}://{name}" for name in COMPONENTS]}
        elif method == "component_info":
            info = COMPONENTS[params["component"].split("://", 1)[1]]
            result = {**info, "output_schema": {"type": "object"}}
        elif method == "component_execute":
            url = params["component"]
            if not url.startswith(f"{EXPECTED_PREFIX}://"):
                raise Failure(-32001, f"unexpected component URL {url}")
            result = {"output": await execute(url.split("://", 1)[1], params["input"])}
        else:
            raise Failure(-32601, f"Method not found: {method}")
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "result": result}
    except Failure as exc:
        error = {"code": exc.code, "message": exc.message}
        if exc.data is not None:
            error["data"] = exc.data
        reply = {"jsonrpc": "2.0", "id": request_id, "error": error}
    await send(reply)


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks = set()
    while line := await reader.readline():
        message = json.loads(line)
        if "method" in message:
            task = asyncio.create_task(handle(message))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        else:
            pending.pop(message["id"]).set_result(message)


if __name__ == "__main__":
    asyncio.run(main())
