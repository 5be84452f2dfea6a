"""The bridge worker (`stepflow worker`) in front of a real node (`stepflow serve`).

The node routes `/bridge` to `{type: grpc, queueName: bridge}`; the worker hosts a `mock` plugin,
builtins and (once the MCP adapter exists) `mcp-server-time`, so `/bridge/mock/echo` on the node is
`/mock/echo` in the worker's config. A second node and worker host the legacy stdio server on
stepflow-py 0.7.0 (test_stdio.py's cached venv; skipped when it cannot be created). Every result
is compared with the same flow run in-process with the worker's config: outputs, failure codes,
messages and data must be equal.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from stepflow_mesh.adapters.bridge.catalog import Catalog, fill_captures
from stepflow_mesh.runtime._pb.stepflow.v1 import common_pb2
from stepflow_mesh.runtime.config import RouteRule
from stepflow_mesh.runtime.plugins.base import ComponentInfo
from stepflow_mesh.runtime.worker_api.convert import from_struct, from_value

from .bridge_helpers import (
    RETRY,
    InProcess,
    NodeProcess,
    WorkerProcess,
    bridge_node,
    cancel_run,
    components,
    create_run,
    have_mcp,
    one_step_flow,
    run_on_node,
    step_attempts,
    store_flow,
    wait_run,
    wait_until,
    worker_config,
)
from .test_stdio import LEGACY_SERVER, legacy_venv  # noqa: F401 - a fixture, for legacy_stack

COMPLETED = common_pb2.EXECUTION_STATUS_COMPLETED
CANCELLED = common_pb2.EXECUTION_STATUS_CANCELLED
needs_mcp = pytest.mark.skipif(not have_mcp(), reason="adapters/mcp_plugin.py not available yet")


def test_catalog_maps_worker_routes_to_ids_and_paths() -> None:
    a = [ComponentInfo("/x"), ComponentInfo("/y/{id}"), ComponentInfo("/{*rest}", component_id="r")]
    routes = {
        "/a": [RouteRule("a")],
        "/b": [RouteRule("a", component_allow=("/x",))],
        "/c": [RouteRule("c", component_deny=("/hidden",)), RouteRule("a")],
        "/": [RouteRule("root")],
    }
    infos = {"a": a, "c": [ComponentInfo("/x"), ComponentInfo("/hidden")], "root": [a[0]]}
    catalog = Catalog(routes, infos)
    assert [(e.component_id, e.path) for e in catalog.entries] == [
        ("a:/x@/a", "/a/x"),
        ("a:/y/{id}@/a", "/a/y/{id}"),
        ("a:r@/a", "/a/{*rest}"),
        ("a:/x@/b", "/b/x"),  # componentAllow keeps only /x under /b
        ("c:/x", "/c/x"),  # the first rule reaching /c/x wins the entry
        ("a:/y/{id}@/c", "/c/y/{id}"),
        ("a:r@/c", "/c/{*rest}"),
        ("root:/x", "/x"),  # the "/" route adds no prefix
    ]
    assert catalog.target_path("a:/y/{id}@/a", {"id": "7"}) == "/a/y/7"
    assert catalog.target_path("a:r@/c", {"rest": "p/q"}) == "/c/p/q"
    # A node that had not discovered the worker yet sends its remaining path as the id.
    assert catalog.target_path("c/hidden", {}) == "/c/hidden"
    assert fill_captures("/f/{a}/{*b}", {"a": "1"}) == "/f/1/{*b}"


@dataclass
class Stack:
    workdir: Path
    node: NodeProcess
    channel: grpc.Channel
    config: Path
    mcp: bool
    worker: WorkerProcess | None = None
    started: int = field(default=0)

    def start_worker(self) -> WorkerProcess:
        self.started += 1
        self.worker = WorkerProcess(
            self.workdir, self.config, self.node.address, f"worker-{self.started}"
        )
        self.worker.wait_for_log("pulling queue bridge from")
        return self.worker


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("bridge")
    mcp = have_mcp()
    config = workdir / "worker-config.yml"
    config.write_text(yaml.safe_dump(worker_config(mcp)))
    node = bridge_node(workdir).start()
    channel = grpc.insecure_channel(node.address)
    stack = Stack(workdir, node, channel, config, mcp)
    try:
        stack.start_worker()
        wait_until(lambda: "/bridge/mock/echo" in components(channel), 20, "bridge discovery")
        yield stack
    finally:
        if stack.worker is not None:
            assert stack.worker.terminate() == 0, stack.worker.log_text()
        channel.close()
        assert node.stop() == 0


def test_discovery_lists_the_bridged_components(stack: Stack) -> None:
    found = components(stack.channel)
    echo = found["/bridge/mock/echo"]
    assert (echo.component_id, echo.plugin, echo.description) == (
        "mock:/echo",
        "bridge",
        "canned answers",
    )
    assert from_struct(echo.input_schema) == {"type": "string"}
    assert found["/bridge/builtin/sleep"].component_id == "builtin:/sleep"
    assert found["/builtin/sleep"].component_id == "/sleep"  # the node's own builtins
    if stack.mcp:
        tool = found["/bridge/time/get_current_time"]
        assert tool.component_id == "time:/get_current_time"
        assert from_struct(tool.output_schema) == {"type": "array"}
        assert "timezone" in from_struct(tool.input_schema)["properties"]


async def test_mock_outputs_and_failures_equal_in_process(stack: Stack) -> None:
    def flow(prefix: str) -> dict[str, Any]:
        return one_step_flow(f"{prefix}/mock/echo", {"$input": "key"})

    inputs = [{"key": k} for k in ("hello", "fail", "boom", "no-such-behaviour")]
    bridged = run_on_node(stack.channel, flow("/bridge"), inputs)
    async with InProcess(stack.config) as local:
        assert bridged == await local.run(flow(""), inputs)
    ok, failed, plugin_error, unknown = bridged
    assert ok == {"outcome": "success", "result": {"greeting": "hi", "n": 2.5}}
    assert failed["error"] == {
        "code": "COMPONENT_FAILED",
        "message": "nope",
        "data": {"why": [1, "x"], "nested": {"a": None, "b": True}},
    }
    # A plugin-level failure keeps the shape the node itself would give it (flows.md §6).
    assert plugin_error["error"]["code"] == "UNREACHABLE"
    assert plugin_error["error"]["data"]["stack"][0]["attachments"] == [
        "Component: /echo",
        "Component execution failed for step 's'",
        "exploded",
    ]
    assert "No behavior defined for /echo" in str(unknown["error"]["data"])


async def test_blobs_routing_errors_and_subflows(stack: Stack) -> None:
    def flow(prefix: str) -> dict[str, Any]:
        return {
            "steps": [
                {
                    "id": "put",
                    "component": f"{prefix}/builtin/put_blob",
                    "input": {"data": {"$input": "data"}, "blob_type": "data"},
                },
                {
                    "id": "here",
                    "component": "/builtin/get_blob",
                    "input": {"blob_id": {"$step": "put", "path": "blob_id"}},
                },
                {
                    "id": "there",
                    "component": f"{prefix}/builtin/get_blob",
                    "input": {"blob_id": {"$step": "put", "path": "blob_id"}},
                },
            ],
            "output": {
                "put": {"$step": "put"},
                "here": {"$step": "here"},
                "there": {"$step": "there"},
            },
        }

    inputs = [{"data": {"z": 1, "a": [1.5, "x", None]}}]
    bridged = run_on_node(stack.channel, flow("/bridge"), inputs)
    [routed] = run_on_node(stack.channel, one_step_flow("/bridge/mock/missing", "hello"), [{}])
    async with InProcess(stack.config) as local:
        # Same bytes stored through the node's BlobService: same content-addressed id.
        assert bridged == await local.run(flow(""), inputs)
        assert [routed] == await local.run(one_step_flow("/mock/missing", "hello"), [{}])
    assert bridged[0]["result"]["there"] == {"data": inputs[0]["data"]}
    assert routed["error"]["code"] == "ORCHESTRATOR_ERROR"
    assert "No matching component for path: /mock/missing" in str(routed["error"]["data"])

    # Nested flows need the node: a clear component failure, never retried.
    nested = {"steps": [{"id": "n", "component": "/builtin/noop", "input": 1}], "output": 1}
    evaluate = one_step_flow(
        "/bridge/builtin/map", {"workflow": {"$literal": nested}, "items": [1]}
    )
    [result] = run_on_node(stack.channel, evaluate, [{}])
    assert result["error"]["code"] == "WORKER_ERROR"
    assert "nested flows cannot run on a bridge worker" in result["error"]["message"]


@pytest.fixture(scope="module")
def legacy_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A node of its own and a worker hosting the stepflow-py 0.7.0 legacy stdio server (skipped,
    like test_stdio.py, when its venv cannot be created)."""
    venv: Path = request.getfixturevalue("legacy_venv")  # test_stdio.py's, imported above
    workdir = tmp_path_factory.mktemp("bridge-legacy")
    config = workdir / "worker-config.yml"
    legacy = {
        "type": "stepflow",
        "command": str(venv / "bin" / "python"),
        "args": [str(LEGACY_SERVER)],
        "env": {"STEPFLOW_LOG_LEVEL": "WARNING"},
    }
    config.write_text(
        yaml.safe_dump(
            {
                "plugins": {"legacy": legacy, "builtin": {"type": "builtin"}},
                "routes": {"/legacy": [{"plugin": "legacy"}], "/builtin": [{"plugin": "builtin"}]},
                "retry": RETRY,
            }
        )
    )
    node = bridge_node(workdir).start()
    channel = grpc.insecure_channel(node.address)
    stack = Stack(workdir, node, channel, config, mcp=False)
    try:
        stack.start_worker()
        wait_until(lambda: "/bridge/legacy/add" in components(channel), 30, "legacy discovery")
        yield stack
    finally:
        if stack.worker is not None:
            assert stack.worker.terminate() == 0, stack.worker.log_text()
        channel.close()
        assert node.stop() == 0


async def test_legacy_stdio_outputs_and_failures_equal_in_process(legacy_stack: Stack) -> None:
    """Two dependent steps on the legacy server, an input it rejects, and a component that
    raises: the same results through the bridge worker as in-process."""

    def flow(prefix: str) -> dict[str, Any]:
        return {
            "name": "legacy-bridge",
            "steps": [
                {
                    "id": "sum",
                    "component": f"{prefix}/legacy/add",
                    "input": {"a": 2, "b": {"$input": "b"}},
                },
                {
                    "id": "echo",
                    "component": f"{prefix}/legacy/echo",
                    "input": {"got": {"$step": "sum"}},
                },
            ],
            "output": {"echo": {"$step": "echo"}, "sum": {"$step": "sum", "path": "sum"}},
        }

    def failing(prefix: str) -> dict[str, Any]:
        return one_step_flow(f"{prefix}/legacy/fail", {"why": {"$input": "why"}})

    inputs: list[Any] = [{"b": 40}, {"b": "forty"}]
    why = [{"why": "over the bridge"}]
    bridged = run_on_node(legacy_stack.channel, flow("/bridge"), inputs)
    bridged_failure = run_on_node(legacy_stack.channel, failing("/bridge"), why)
    async with InProcess(legacy_stack.config) as local:
        assert bridged == await local.run(flow(""), inputs)
        assert bridged_failure == await local.run(failing(""), why)
    ok, rejected = bridged
    assert ok == {"outcome": "success", "result": {"echo": {"got": {"sum": 42}}, "sum": 42}}
    assert rejected["error"]["code"] == "INVALID_INPUT"
    assert "Expected `int`, got `str` - at `$.b`" in rejected["error"]["message"]
    assert bridged_failure == [
        {
            "outcome": "failed",
            "error": {
                "code": "COMPONENT_FAILED",
                "message": "Component execution failed: boom: over the bridge",
                "data": {},
            },
        }
    ]


def _mcp_normalized(value: Any) -> Any:
    """Clock readings differ between two runs; everything else must not (tool texts are JSON)."""
    if isinstance(value, dict):
        return {
            k: "<clock>" if k in ("datetime", "day_of_week") else _mcp_normalized(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_mcp_normalized(v) for v in value]
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        return _mcp_normalized(parsed) if isinstance(parsed, dict | list) else value
    return value


@needs_mcp
async def test_mcp_tools_equal_in_process(stack: Stack) -> None:
    def flow(prefix: str) -> dict[str, Any]:
        return one_step_flow(f"{prefix}/time/get_current_time", {"$input": "args"})

    inputs: list[Any] = [
        {"args": {"timezone": "UTC"}},
        {"args": {"timezone": "Nowhere/Bogus"}},
        {"args": "not an object"},
    ]
    convert = {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}
    bridged = run_on_node(stack.channel, flow("/bridge"), inputs)
    [there] = run_on_node(stack.channel, one_step_flow("/bridge/time/convert_time", convert), [{}])
    [unknown] = run_on_node(stack.channel, one_step_flow("/bridge/time/nope", {}), [{}])
    async with InProcess(stack.config) as in_process:
        local = await in_process.run(flow(""), inputs)
        [here] = await in_process.run(one_step_flow("/time/convert_time", convert), [{}])
        assert [unknown] == await in_process.run(one_step_flow("/time/nope", {}), [{}])
    assert [_mcp_normalized(r) for r in bridged] == [_mcp_normalized(r) for r in local]
    now, bad_zone, not_object = bridged
    assert now["outcome"] == "success" and '"timezone": "UTC"' in now["result"][0]["text"]
    assert bad_zone == local[1]  # no clock in a failure: exactly equal
    assert bad_zone["error"]["code"] == "COMPONENT_FAILED"
    assert "Invalid timezone" in bad_zone["error"]["message"]
    assert not_object == local[2] and not_object["error"]["code"] == "INVALID_INPUT"
    assert _mcp_normalized(there) == _mcp_normalized(here)
    assert "21:00:00+09:00" in there["result"][0]["text"]


def test_twenty_concurrent_runs(stack: Stack) -> None:
    flow = {
        "steps": [
            {"id": "pause", "component": "/bridge/builtin/sleep", "input": {"duration_ms": 300}},
            {
                "id": "echo",
                "component": "/bridge/mock/echo",
                "input": "hello",
                "after": ["pause"],
            },
        ],
        "output": {"slept": {"$step": "pause"}, "echo": {"$step": "echo"}},
    }
    flow_id = store_flow(stack.channel, flow)
    started = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        responses = list(
            pool.map(lambda _: create_run(stack.channel, flow_id, [{}], wait=True), range(20))
        )
    elapsed = time.monotonic() - started
    assert all(r.summary.status == COMPLETED for r in responses)
    outputs = [from_value(r.results[0].output) for r in responses]
    assert all(o["echo"] == {"greeting": "hi", "n": 2.5} for o in outputs)
    assert elapsed < 5.5  # one after another: at least 20 * 0.3 s


def _slow_run(stack: Stack, ms: int) -> str:
    flow = one_step_flow("/bridge/builtin/sleep", {"duration_ms": ms})
    response = create_run(stack.channel, store_flow(stack.channel, flow), [{}], wait=False)
    return str(response.summary.run_id)


def test_a_cancelled_run_aborts_the_bridged_step(stack: Stack) -> None:
    worker = stack.worker
    assert worker is not None
    run_id = _slow_run(stack, 20_000)
    worker.wait_for_log(f"(run {run_id}, step s, attempt 1)")
    cancel_run(stack.channel, run_id)
    assert wait_run(stack.channel, run_id).summary.status == CANCELLED
    # The next heartbeat says should_abort: the execution stops and nothing is reported.
    task_id = re.search(rf"claimed task (\S+) \(run {run_id}", worker.log_text())
    assert task_id is not None
    worker.wait_for_log(f"task {task_id.group(1)} aborted by the node", timeout=5)


def test_sigterm_finishes_the_in_flight_step(stack: Stack) -> None:
    """The step outlives the node's 5 s heartbeat window: heartbeats keep it alive, and SIGTERM
    lets it finish (worker grace 10 s) before the worker exits."""
    worker = stack.worker
    assert worker is not None
    run_id = _slow_run(stack, 6500)
    worker.wait_for_log(f"(run {run_id}, step s, attempt 1)")
    assert worker.terminate() == 0, worker.log_text()
    done = wait_run(stack.channel, run_id)
    assert done.summary.status == COMPLETED
    assert step_attempts(stack.channel, run_id, "s") == [1]
    stack.start_worker()


def test_a_killed_worker_is_replaced_and_the_step_retried(stack: Stack) -> None:
    worker = stack.worker
    assert worker is not None
    run_id = _slow_run(stack, 1500)
    worker.wait_for_log(f"(run {run_id}, step s, attempt 1)")
    worker.kill()  # no result, no heartbeats: the node times the task out and retries it
    replacement = stack.start_worker()
    replacement.wait_for_log(f"(run {run_id}, step s, attempt 2)", timeout=20)
    done = wait_run(stack.channel, run_id)
    assert done.summary.status == COMPLETED
    assert from_value(done.steps[0].output) == {"duration_ms": 1500}
    assert step_attempts(stack.channel, run_id, "s") == [1, 2]
    assert stack.node.alive()
    [again] = run_on_node(stack.channel, one_step_flow("/bridge/mock/echo", "hello"), [{}])
    assert again["outcome"] == "success"
