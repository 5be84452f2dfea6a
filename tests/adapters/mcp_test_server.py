"""An MCP server for tests/adapters/test_mcp.py, written with the `mcp` SDK's server API.

`MCPServer` is mcp 2.x's name for v1's FastMCP. Run as a script over stdio:
`python mcp_test_server.py [ARGS...]` (`env_info` shows the args). With `MCP_TEST_REFUSE_IF=<path>`
it exits at once while that file exists. Tools are listed `MCP_TEST_PAGE_SIZE` (default 3) per
`tools/list` page, so every test also exercises `nextCursor` pagination.
"""

# ruff: noqa: E402 - the refusal below comes first, before the slow SDK import
from __future__ import annotations

import os
import sys
from pathlib import Path

_refuse = os.environ.get("MCP_TEST_REFUSE_IF")
if __name__ == "__main__" and _refuse and Path(_refuse).exists():
    sys.exit("refusing to start: " + _refuse)

import json
from typing import Any

import anyio
import mcp.types as types
from mcp import MCPError
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types.jsonrpc import INVALID_PARAMS

PAGE_SIZE = int(os.environ.get("MCP_TEST_PAGE_SIZE", "3"))
# The SDK points fd 1 at stderr while it serves stdio (stray prints must not corrupt the protocol);
# a duplicate taken before that still reaches the client, for `garbage`.
WIRE = os.dup(1)


class PagedServer(MCPServer):
    """MCPServer answers `tools/list` in one page; this one pages it."""

    async def _handle_list_tools(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> Any:
        tools = await self.list_tools()
        start = int(params.cursor) if params is not None and params.cursor else 0
        end = start + PAGE_SIZE
        return types.ListToolsResult(
            tools=tools[start:end], next_cursor=str(end) if end < len(tools) else None
        )


server = PagedServer("stepflow-test", log_level="WARNING")
_groups: dict[str, tuple[list[int], anyio.Event]] = {}


@server.tool(description="Echo the text back.")
def echo(text: str) -> str:
    return text


@server.tool()
def add(a: int, b: int) -> int:
    return a + b


@server.tool(description="Text and an image.")
def mixed() -> types.CallToolResult:
    return types.CallToolResult(
        content=[
            types.TextContent(type="text", text="hello"),
            types.ImageContent(type="image", data="aGk=", mime_type="image/png"),
        ]
    )


@server.tool(description="A tool error (isError) with the given message.")
def fail(message: str) -> str:
    raise ToolError(message)


@server.tool(description="isError without any text.")
def fail_empty() -> types.CallToolResult:
    return types.CallToolResult(content=[], is_error=True)


@server.tool(description="A JSON-RPC -32602 error.")
def reject(field: str) -> str:
    raise MCPError(INVALID_PARAMS, f"bad argument: {field}", {"field": field})


@server.tool(description="A JSON-RPC error with another code.")
def rpc_error() -> str:
    raise MCPError(-32050, "backend unavailable", {"retryAfter": 5})


@server.tool(description="Returns once `n` calls of `group` are in flight at the same time.")
async def rendezvous(group: str, n: int, i: int) -> int:
    arrived, everyone = _groups.setdefault(group, ([], anyio.Event()))
    arrived.append(i)
    if len(arrived) >= n:
        everyone.set()
    await everyone.wait()
    return i


@server.tool(description="Never answers.")
async def hang() -> str:
    await anyio.sleep_forever()
    return "unreachable"


@server.tool(description="The server's process id.")
def pid() -> int:
    return os.getpid()


@server.tool(description="Kills the server the first time (no marker file yet).")
def crash(marker: str) -> str:
    path = Path(marker)
    if not path.exists():
        path.write_text("crashed")
        print("crashing on purpose", file=sys.stderr, flush=True)
        os._exit(3)
    return f"recovered in {os.getpid()}"


@server.tool(description="Writes a non-JSON line to stdout.")
async def garbage() -> str:
    os.write(WIRE, b"this is not json-rpc\n")
    await anyio.sleep_forever()
    return "unreachable"


@server.tool(description="Writes `kib` KiB to stderr, then a marker line.")
def spam_stderr(kib: int) -> str:
    line = "x" * 1023 + "\n"
    for _ in range(kib):
        sys.stderr.write(line)
    sys.stderr.write("spam done\n")
    sys.stderr.flush()
    return "ok"


@server.tool(description="Adds a tool and sends notifications/tools/list_changed.")
async def add_tool(name: str, ctx: Context) -> str:
    def added() -> str:
        return f"I am {name}"

    server.add_tool(added, name=name, description=f"Added at run time: {name}")
    await ctx.session.send_tool_list_changed()
    return "added"


@server.tool(description="What the server sees of its environment.")
def env_info(names: list[str]) -> str:
    return json.dumps(
        {"env": {n: os.environ.get(n) for n in names}, "argv": sys.argv[1:], "cwd": os.getcwd()}
    )


@server.tool(description="What the client said and how it answers server requests.")
async def probe_client(ctx: Context) -> str:
    session = ctx.session
    params = session.client_params
    assert params is not None
    roots = await session.list_roots()
    await session.send_ping()
    try:
        await session.create_message(
            [types.SamplingMessage(role="user", content=types.TextContent(type="text", text="hi"))],
            max_tokens=5,
        )
        sampling: Any = "answered"
    except MCPError as exc:
        sampling = exc.code
    return json.dumps(
        {
            "clientInfo": params.client_info.model_dump(mode="json", exclude_none=True),
            "capabilities": params.capabilities.model_dump(
                mode="json", by_alias=True, exclude_none=True
            ),
            "protocolVersion": params.protocol_version,
            "roots": roots.model_dump(mode="json", by_alias=True, exclude_none=True)["roots"],
            "sampling": sampling,
        }
    )


if __name__ == "__main__":
    server.run("stdio")
