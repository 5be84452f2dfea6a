"""The `mcp` plugin (worker-protocol.md §7) against real MCP servers over stdio.

Two servers: `mcp-server-time` from PyPI, and mcp_test_server.py beside this file, written with the
`mcp` SDK's server API. Starting a server costs a second or two (the SDK import), so the tests that
leave the server as they found it share one Runtime (`shared`, module scope); the ones that crash,
time out or reconfigure a server start their own. Nothing here waits on a sleep: concurrency is a
rendezvous inside the server, and notifications are awaited as events.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from mcp.types.version import LATEST_HANDSHAKE_VERSION
from stepflow_mesh.adapters import mcp_connection
from stepflow_mesh.adapters.mcp_plugin import McpPlugin, substitute_env
from stepflow_mesh.runtime.blobs import MemoryBlobStore
from stepflow_mesh.runtime.config import parse_config
from stepflow_mesh.runtime.engine import Runtime
from stepflow_mesh.runtime.errors import FlowResult, PluginError, UserError
from stepflow_mesh.runtime.model import parse_flow
from stepflow_mesh.runtime.plugins import ComponentInfo, StepCall, create_plugin

# The async tests share the module's event loop, where the `shared` runtime lives.
module_loop = pytest.mark.asyncio(loop_scope="module")

BIN = Path(sys.executable).parent
TIME_SERVER = str(BIN / "mcp-server-time")
TEST_SERVER = str(Path(__file__).with_name("mcp_test_server.py"))
STEPFLOW = BIN / "stepflow"


def lab_server(**extra: Any) -> dict[str, Any]:
    return {"type": "mcp", "command": sys.executable, "args": [TEST_SERVER], **extra}


def time_server() -> dict[str, Any]:
    return {"type": "mcp", "command": TIME_SERVER, "args": ["--local-timezone", "UTC"]}


def make_config(
    tmp_path: Path, plugins: dict[str, Any], retry: dict[str, Any] | None = None
) -> Any:
    return parse_config(
        {
            "plugins": plugins,
            "routes": {f"/{name}": [{"plugin": name}] for name in plugins},
            "retry": retry or {"transportMaxRetries": 0},
        },
        "<test>",
        tmp_path,
    )


def one_step(component: str, step_input: Any, path: str | None = None) -> Any:
    output: dict[str, Any] = {"$step": "s"}
    if path is not None:
        output["path"] = path
    return parse_flow(
        {"steps": [{"id": "s", "component": component, "input": step_input}], "output": output}
    )


async def run_one(runtime: Runtime, component: str, step_input: Any) -> dict[str, Any]:
    outcome = await runtime.run(one_step(component, step_input), [{}])
    result: dict[str, Any] = outcome.results[0].to_json()
    return result


def text(*items: str) -> dict[str, Any]:
    return {"outcome": "success", "result": [{"type": "text", "text": t} for t in items]}


def step_call(component: str, step_input: Any, working_dir: Path) -> StepCall:
    async def no_subflows(*_: Any) -> list[FlowResult]:
        raise AssertionError("no sub-runs here")

    return StepCall(
        run_id="run", root_run_id="run", flow_id=None, step_id="s", item_index=0, attempt=1,
        task_id="task", component=component, input=step_input, blobs=MemoryBlobStore(),
        working_dir=working_dir, run_subflow=no_subflows,
    )  # fmt: skip


def success_text(result: FlowResult) -> str:
    assert result.ok, result.to_json()
    assert isinstance(result.value, list) and result.value[0]["type"] == "text"
    value: str = result.value[0]["text"]
    return value


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Runtime]:
    """Both servers behind one Runtime; the test server's args and env use substitution."""
    working_dir = tmp_path_factory.mktemp("mcp")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MCP_TEST_TAG", "v42")
        env.setenv("MCP_TEST_INHERITED", "from the node")
        env.delenv("MCP_TEST_UNSET", raising=False)
        test = lab_server(
            args=[TEST_SERVER, "--tag=${MCP_TEST_TAG}", "${MCP_TEST_UNSET:-fallback}"],
            env={"MCP_TEST_GREETING": "hello ${MCP_TEST_TAG}", "MCP_TEST_PORT": 8080},
            callTimeoutSecs=60,
        )
        config = make_config(working_dir, {"test": test, "time": time_server()})
        async with Runtime(config) as runtime:
            yield runtime


# -- mcp-server-time (PyPI) ----------------------------------------------------------------------


@module_loop
async def test_time_server_tools_are_components(shared: Runtime) -> None:
    components = {c.path: c for c in shared.components["time"]}
    assert sorted(components) == ["/convert_time", "/get_current_time"]
    current = components["/get_current_time"]
    assert current.description == "Get current time in a specific timezone"
    assert current.input_schema["required"] == ["timezone"]
    assert current.input_schema["properties"]["timezone"]["type"] == "string"
    assert current.output_schema == {"type": "array"}
    assert set(components["/convert_time"].input_schema["required"]) == {
        "source_timezone",
        "time",
        "target_timezone",
    }
    assert shared.router.routes_to("time", "/convert_time") == ["/time/convert_time"]


@module_loop
async def test_time_server_through_the_runtime(shared: Runtime) -> None:
    flow = one_step("/time/get_current_time", {"timezone": {"$input": "tz"}}, "$[0].text")
    outcome = await shared.run(flow, [{"tz": "UTC"}, {"tz": "Asia/Tokyo"}])
    assert outcome.status == "completed"
    assert [json.loads(r.value)["timezone"] for r in outcome.results] == ["UTC", "Asia/Tokyo"]

    converted = await run_one(
        shared,
        "/time/convert_time",
        {"source_timezone": "UTC", "time": "12:00", "target_timezone": "UTC"},
    )
    body = json.loads(converted["result"][0]["text"])
    assert body["time_difference"] == "+0.0h"
    assert body["target"]["datetime"].endswith("T12:00:00+00:00")

    bad = await run_one(shared, "/time/get_current_time", {"timezone": "Nowhere/Special"})
    assert bad["outcome"] == "failed"
    assert bad["error"]["code"] == "COMPONENT_FAILED"
    assert "Invalid timezone" in bad["error"]["message"]
    assert bad["error"]["data"] == {"content": [{"type": "text", "text": bad["error"]["message"]}]}


@module_loop
async def test_unknown_tool_is_invalid_input(shared: Runtime, tmp_path: Path) -> None:
    """mcp-server-time answers an unknown tool with -32602 (as a stale route would reach it)."""
    result = await shared.plugins["time"].execute(step_call("/no_such_tool", {}, tmp_path))
    assert result.to_json() == {
        "outcome": "failed",
        "error": {
            "code": "INVALID_INPUT",
            "message": "Tool 'no_such_tool' execution failed: Unknown tool: no_such_tool",
            "data": {"code": -32602, "message": "Unknown tool: no_such_tool"},
        },
    }


def test_time_server_through_the_cli(tmp_path: Path) -> None:
    (tmp_path / "stepflow-config.yml").write_text(
        json.dumps(
            {
                "plugins": {"time": time_server()},
                "routes": {"/time": [{"plugin": "time"}]},
            }
        )
    )
    (tmp_path / "flow.yaml").write_text(
        "name: now\n"
        "steps:\n"
        "  - id: now\n"
        "    component: /time/get_current_time\n"
        "    input: {timezone: {$input: tz}}\n"
        "output: {$step: now, path: '$[0].text'}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPFLOW_")}

    def stepflow(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(STEPFLOW), *args],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def finish(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
        stdout, stderr = process.communicate(timeout=60)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    # Both at once: each spends most of its time starting Python and the server.
    running = stepflow("run", "--flow", "flow.yaml", "--input-json", '{"tz": "Europe/Paris"}')
    listing = stepflow("list-components", "--format", "json")
    run, listed = finish(running), finish(listing)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["outcome"] == "success"
    assert json.loads(result["result"])["timezone"] == "Europe/Paris"

    assert listed.returncode == 0, listed.stderr
    components = {c["component"]: c for c in json.loads(listed.stdout)["components"]}
    assert sorted(components) == ["/convert_time", "/get_current_time"]
    current = components["/get_current_time"]
    assert current["plugin"] == "time"
    assert current["routes"] == ["/time/get_current_time"]
    assert current["input_schema"]["required"] == ["timezone"]
    assert current["output_schema"] == {"type": "array"}


# -- the test server: results and errors ---------------------------------------------------------


@module_loop
async def test_tools_results_and_errors(shared: Runtime) -> None:
    cases: list[tuple[str, Any, dict[str, Any]]] = [
        ("echo", {"text": "hi"}, text("hi")),
        ("add", {"a": 2, "b": 3}, text("5")),
        (
            "mixed",
            {},
            {
                "outcome": "success",
                "result": [
                    {"type": "text", "text": "hello"},
                    {"type": "image", "data": "aGk=", "mimeType": "image/png"},
                ],
            },
        ),
        (
            "fail",
            {"message": "no luck"},
            {
                "outcome": "failed",
                "error": {
                    "code": "COMPONENT_FAILED",
                    "message": "Error executing tool fail: no luck",
                    "data": {
                        "content": [{"type": "text", "text": "Error executing tool fail: no luck"}]
                    },
                },
            },
        ),
        (
            "fail_empty",
            {},
            {
                "outcome": "failed",
                "error": {
                    "code": "COMPONENT_FAILED",
                    "message": "Tool 'fail_empty' returned an error",
                    "data": {"content": []},
                },
            },
        ),
        (
            "reject",
            {"field": "x"},
            {
                "outcome": "failed",
                "error": {
                    "code": "INVALID_INPUT",
                    "message": "Tool 'reject' execution failed: bad argument: x",
                    "data": {"code": -32602, "message": "bad argument: x", "data": {"field": "x"}},
                },
            },
        ),
        (
            "rpc_error",
            {},
            {
                "outcome": "failed",
                "error": {
                    "code": "COMPONENT_FAILED",
                    "message": "Tool 'rpc_error' execution failed: backend unavailable",
                    "data": {
                        "code": -32050,
                        "message": "backend unavailable",
                        "data": {"retryAfter": 5},
                    },
                },
            },
        ),
        (
            "echo",
            "not an object",
            {
                "outcome": "failed",
                "error": {
                    "code": "INVALID_INPUT",
                    "message": "Tool 'echo' input must be an object, got string",
                },
            },
        ),
    ]
    results = await asyncio.gather(
        *(run_one(shared, f"/test/{tool}", step_input) for tool, step_input, _ in cases)
    )
    for (tool, _, expected), result in zip(cases, results, strict=True):
        assert result == expected, tool

    # MCPServer reports bad arguments as a tool error (isError), hence COMPONENT_FAILED.
    bad_args = await run_one(shared, "/test/add", {"a": "x"})
    assert bad_args["error"]["code"] == "COMPONENT_FAILED"
    assert "validation error" in bad_args["error"]["message"]


@module_loop
async def test_discovery_follows_cursors(shared: Runtime) -> None:
    """The test server lists 3 tools per page; every one of them is a component."""
    paths = [c.path for c in shared.components["test"]]
    assert len(paths) > 3 * 4
    assert paths[:3] == ["/echo", "/add", "/mixed"]
    assert {"/probe_client", "/env_info", "/rendezvous"} <= set(paths)
    echo = next(c for c in shared.components["test"] if c.path == "/echo")
    assert echo.description == "Echo the text back."
    assert echo.input_schema["properties"]["text"]["type"] == "string"
    add = next(c for c in shared.components["test"] if c.path == "/add")
    assert add.description == "MCP tool"  # the tool has none


@module_loop
async def test_handshake_and_answers_to_server_requests(shared: Runtime) -> None:
    result = await run_one(shared, "/test/probe_client", {})
    probe = json.loads(result["result"][0]["text"])
    assert probe == {
        "clientInfo": {"name": "stepflow", "version": "0.1.0"},
        "capabilities": {"roots": {"listChanged": False}},
        "protocolVersion": LATEST_HANDSHAKE_VERSION,
        "roots": [],
        "sampling": -32601,
    }


@module_loop
async def test_args_and_env_are_substituted_and_the_environment_inherited(
    shared: Runtime,
) -> None:
    names = ["MCP_TEST_GREETING", "MCP_TEST_PORT", "MCP_TEST_INHERITED", "PATH"]
    result = await run_one(shared, "/test/env_info", {"names": names})
    info = json.loads(result["result"][0]["text"])
    assert info["argv"] == ["--tag=v42", "fallback"]
    assert info["env"]["MCP_TEST_GREETING"] == "hello v42"
    assert info["env"]["MCP_TEST_PORT"] == "8080"
    assert info["env"]["MCP_TEST_INHERITED"] == "from the node"
    assert info["env"]["PATH"] == os.environ["PATH"]
    assert Path(info["cwd"]) == shared.config.working_dir


@module_loop
async def test_fifty_concurrent_calls_share_one_session(shared: Runtime) -> None:
    """Each call returns only once all 50 are in flight in the server at the same time."""
    flow = one_step(
        "/test/rendezvous", {"group": "fifty", "n": 50, "i": {"$input": "i"}}, "$[0].text"
    )
    outcome = await shared.run(flow, [{"i": i} for i in range(50)], max_concurrency=50)
    assert outcome.status == "completed", outcome.results
    assert [r.value for r in outcome.results] == [str(i) for i in range(50)]


@module_loop
async def test_a_chatty_stderr_never_blocks_the_server(shared: Runtime) -> None:
    """4 MiB to stderr (far past a pipe's buffer) while the call waits: it completes."""
    assert await run_one(shared, "/test/spam_stderr", {"kib": 4096}) == text("ok")
    assert await run_one(shared, "/test/echo", {"text": "still here"}) == text("still here")


# -- the test server: failures, restarts, timeouts -----------------------------------------------


@module_loop
async def test_routing_follows_tool_changes_and_a_crash_is_retried_after_a_restart(
    tmp_path: Path,
) -> None:
    config = make_config(
        tmp_path,
        {"test": lab_server()},
        {"transportMaxRetries": 2, "backoff": {"type": "constant", "delayMs": 10}},
    )
    marker = tmp_path / "crashed"
    async with Runtime(config) as runtime:
        first = int((await run_one(runtime, "/test/pid", {}))["result"][0]["text"])

        # tools/list_changed → the runtime's routing table learns the new tool.
        plugin = runtime.plugins["test"]
        rediscovered = plugin.on_components_changed
        assert rediscovered is not None
        changed = asyncio.Event()

        def on_changed(found: list[ComponentInfo]) -> None:
            rediscovered(found)
            changed.set()

        plugin.on_components_changed = on_changed
        assert await run_one(runtime, "/test/add_tool", {"name": "extra"}) == text("added")
        await asyncio.wait_for(changed.wait(), 10)
        assert await run_one(runtime, "/test/extra", {}) == text("I am extra")

        # Attempt 1 kills the server (UNREACHABLE); it is restarted and attempt 2 succeeds.
        outcome = await runtime.run(one_step("/test/crash", {"marker": str(marker)}), [{}])
        after = int((await run_one(runtime, "/test/pid", {}))["result"][0]["text"])
        # The restarted server does not have the added tool: discovery ran again.
        gone = await run_one(runtime, "/test/extra", {})
    assert marker.exists()
    assert outcome.results[0].to_json() == text(f"recovered in {after}")
    assert after != first
    assert gone["error"]["code"] == "ORCHESTRATOR_ERROR"


@module_loop
async def test_call_timeout(tmp_path: Path) -> None:
    """callTimeoutSecs: 1 → TIMEOUT (transport-retried once, after a ping finds the server
    healthy, so it is not restarted)."""
    config = make_config(
        tmp_path,
        {"test": lab_server(callTimeoutSecs=1)},
        {"transportMaxRetries": 1, "backoff": {"type": "constant", "delayMs": 10}},
    )
    async with Runtime(config) as runtime:
        before = await run_one(runtime, "/test/pid", {})
        result = await run_one(runtime, "/test/hang", {})
        assert await run_one(runtime, "/test/pid", {}) == before
    assert result == {
        "outcome": "failed",
        "error": {"code": "TIMEOUT", "message": "Tool 'hang' did not answer within 1 seconds"},
    }


@module_loop
async def test_crash_garbage_and_list_changed_at_the_plugin_level(tmp_path: Path) -> None:
    refuse = tmp_path / "refuse"
    config = lab_server(callTimeoutSecs=30, env={"MCP_TEST_REFUSE_IF": str(refuse)})
    plugin = create_plugin("lab", config, tmp_path, "<test>")
    assert isinstance(plugin, McpPlugin)
    changes: asyncio.Queue[list[ComponentInfo]] = asyncio.Queue()
    plugin.on_components_changed = changes.put_nowait
    await plugin.start()
    try:
        await changes.get()  # the first discovery
        first_pid = success_text(await plugin.execute(step_call("/pid", {}, tmp_path)))

        # notifications/tools/list_changed → tools/list again → the new list is published.
        assert (
            success_text(await plugin.execute(step_call("/add_tool", {"name": "extra"}, tmp_path)))
            == "added"
        )
        changed = await asyncio.wait_for(changes.get(), 10)
        assert [c.path for c in changed][-1] == "/extra"
        assert changed[-1].description == "Added at run time: extra"
        assert await plugin.components() == changed
        assert success_text(await plugin.execute(step_call("/extra", {}, tmp_path))) == "I am extra"

        # The process dies mid-call: a plugin-level failure naming plugin, command and stderr.
        marker = tmp_path / "marker"
        with pytest.raises(PluginError) as crashed:
            await plugin.execute(step_call("/crash", {"marker": str(marker)}, tmp_path))
        detail = crashed.value.detail
        assert detail.startswith(f"MCP server of plugin 'lab' ({sys.executable} {TEST_SERVER})")
        assert "closed its stdout" in detail
        assert detail.endswith("stderr tail:\ncrashing on purpose")
        assert crashed.value.category == "error executing component"

        # The next call restarts it; discovery runs again (the added tool is gone).
        second_pid = success_text(await plugin.execute(step_call("/pid", {}, tmp_path)))
        assert second_pid != first_pid
        relisted = changes.get_nowait()
        assert "/extra" not in [c.path for c in relisted]

        # Protocol garbage on stdout is a transport failure too; prepare_retry restarts eagerly.
        with pytest.raises(PluginError) as garbage:
            await plugin.execute(step_call("/garbage", {}, tmp_path))
        assert "sent an invalid message" in garbage.value.detail
        await plugin.prepare_retry()
        third_pid = success_text(await plugin.execute(step_call("/pid", {}, tmp_path)))
        assert third_pid not in (first_pid, second_pid)
        assert changes.empty()  # same tools as before the garbage

        # A restart that fails is a plugin-level failure too, with the server's last words.
        refuse.touch()
        with pytest.raises(PluginError):
            await plugin.execute(step_call("/crash", {"marker": str(tmp_path / "m2")}, tmp_path))
        with pytest.raises(PluginError) as refused:
            await plugin.execute(step_call("/pid", {}, tmp_path))
        assert refused.value.detail.startswith("MCP server of plugin 'lab' (")
        assert refused.value.detail.endswith(f"stderr tail:\nrefusing to start: {refuse}")
        refuse.unlink()
        await plugin.prepare_retry()
        assert (
            success_text(await plugin.execute(step_call("/echo", {"text": "back"}, tmp_path)))
            == "back"
        )
    finally:
        await plugin.close()


# -- start failures and config -------------------------------------------------------------------


@module_loop
async def test_a_missing_command_is_a_clear_start_error(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, {"ghost": {"type": "mcp", "command": "/nonexistent/mcp-srv", "args": []}}
    )
    with pytest.raises(UserError) as error:
        await Runtime(config).start()
    assert str(error.value) == (
        "plugins.ghost: MCP server of plugin 'ghost' (/nonexistent/mcp-srv) could not be started: "
        "No such file or directory"
    )


@module_loop
async def test_a_server_exiting_at_start_shows_its_stderr(tmp_path: Path) -> None:
    script = "import sys; print('missing API key', file=sys.stderr); sys.exit(2)"
    plugin = {"type": "mcp", "command": sys.executable, "args": ["-c", script]}
    with pytest.raises(UserError) as error:
        await Runtime(make_config(tmp_path, {"broken": plugin})).start()
    assert "MCP server of plugin 'broken'" in error.value.message
    assert "closed its stdout" in error.value.message
    assert error.value.notes == ["missing API key"]


@module_loop
async def test_handshake_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mcp_connection, "HANDSHAKE_TIMEOUT_SECS", 0.5)
    silent = {
        "type": "mcp",
        "command": sys.executable,
        "args": ["-c", "import sys; sys.stdin.read()"],
    }
    with pytest.raises(UserError) as error:
        await Runtime(make_config(tmp_path, {"silent": silent})).start()
    assert error.value.where == "plugins.silent"
    assert error.value.message.endswith("did not complete the MCP handshake within 0.5 seconds")


def test_substitute_env() -> None:
    env = {"A": "1", "EMPTY": ""}
    assert substitute_env("x${A}y${A}", "w", env) == "x1y1"
    assert substitute_env("${B:-dflt}/${EMPTY:-e}/${A:-z}", "w", env) == "dflt/e/1"
    assert substitute_env("$A ${not a var} $${A}", "w", env) == "$A ${not a var} $1"
    with pytest.raises(UserError) as error:
        substitute_env("${MISSING}", "plugins.p.args[0]", env)
    assert error.value.where == "plugins.p.args[0]"
    assert "environment variable 'MISSING' is not set" in error.value.message


@pytest.mark.parametrize(
    ("config", "where"),
    [
        ({"args": []}, "plugins.p.command"),
        ({"command": "x"}, "plugins.p.args"),
        ({"command": "x", "args": [1]}, "plugins.p.args"),
        ({"command": "x", "args": [], "env": {"K": ["v"]}}, "plugins.p.env.K"),
        ({"command": "x", "args": [], "callTimeoutSecs": -1}, "plugins.p.callTimeoutSecs"),
        ({"command": "x", "args": ["${MCP_TEST_SURELY_UNSET}"]}, "plugins.p.args[0]"),
    ],
)
def test_config_errors(config: dict[str, Any], where: str, tmp_path: Path) -> None:
    with pytest.raises(UserError) as error:
        create_plugin("p", {"type": "mcp", **config}, tmp_path, "cfg.yml")
    assert error.value.where == f"cfg.yml: {where}"


def test_call_timeout_config(tmp_path: Path) -> None:
    def timeout(**config: Any) -> float | None:
        plugin = create_plugin(
            "p", {"type": "mcp", "command": "x", "args": [], **config}, tmp_path, "c"
        )
        assert isinstance(plugin, McpPlugin)
        return plugin.call_timeout

    assert timeout() == 300
    assert timeout(callTimeoutSecs=0) is None
    assert timeout(callTimeoutSecs=2.5) == 2.5
