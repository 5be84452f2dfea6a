"""Real processes for the bridge tests: a `stepflow serve` node and `stepflow worker` bridges."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, TypeVar

import grpc
import yaml
from node_process import NodeProcess
from stepflow_mesh.runtime._pb.stepflow.v1 import (
    components_pb2,
    components_pb2_grpc,
    flows_pb2,
    flows_pb2_grpc,
    runs_pb2,
    runs_pb2_grpc,
)
from stepflow_mesh.runtime.config import load_config
from stepflow_mesh.runtime.engine import Runtime
from stepflow_mesh.runtime.model import parse_flow
from stepflow_mesh.runtime.worker_api.convert import from_value, to_struct, to_value
from waiting import wait_until

BIN = Path(sys.executable).parent
STEPFLOW = BIN / "stepflow"
MCP_TIME = BIN / "mcp-server-time"
T = TypeVar("T")

# Same retry policy on the node and in-process, so failures end the same way, quickly.
RETRY = {"transportMaxRetries": 2, "backoff": {"type": "constant", "delayMs": 50}}

NODE_CONFIG = {
    "plugins": {"builtin": {"type": "builtin"}, "bridge": {"type": "grpc", "queueName": "bridge"}},
    "routes": {"/builtin": [{"plugin": "builtin"}], "/bridge": [{"plugin": "bridge"}]},
    "retry": RETRY,
}

MOCK = {
    "type": "mock",
    "components": {
        "/echo": {
            "description": "canned answers",
            "input_schema": {"type": "string"},
            "behaviors": {
                "hello": {"outcome": "success", "result": {"greeting": "hi", "n": 2.5}},
                "fail": {
                    "outcome": "failed",
                    "error": {
                        "code": "COMPONENT_FAILED",
                        "message": "nope",
                        "data": {"why": [1, "x"], "nested": {"b": True, "a": None}},
                    },
                },
                "boom": {"error": "exploded"},
            },
        },
    },
}


def have_mcp() -> bool:
    """The MCP adapter is another engineer's work in progress; its tests join once it exists."""
    return importlib.util.find_spec("stepflow_mesh.adapters.mcp_plugin") is not None and (
        MCP_TIME.exists()
    )


def worker_config(mcp: bool) -> dict[str, Any]:
    plugins: dict[str, Any] = {"mock": MOCK, "builtin": {"type": "builtin"}}
    routes: dict[str, Any] = {"/mock": [{"plugin": "mock"}], "/builtin": [{"plugin": "builtin"}]}
    if mcp:
        plugins["time"] = {"type": "mcp", "command": str(MCP_TIME), "args": []}
        routes["/time"] = [{"plugin": "time"}]
    return {"plugins": plugins, "routes": routes, "retry": RETRY}


def bridge_node(workdir: Path) -> NodeProcess:
    """A node with the bridge suite's config and a SQLite journal in `workdir` (not started)."""
    config = workdir / "node-config.yml"
    config.write_text(yaml.safe_dump(NODE_CONFIG))
    serve_args = ["--state-dir", str(workdir / "state"), "--config", str(config),
                  "--shutdown-grace-secs", "2"]  # fmt: skip
    return NodeProcess(workdir, serve_args)


class WorkerProcess:
    """`stepflow worker` in its own process group (killing it takes its MCP servers along)."""

    def __init__(self, workdir: Path, config: Path, orchestrator: str, name: str) -> None:
        self.log = workdir / f"{name}.log"
        self.proc = subprocess.Popen(
            [str(STEPFLOW), "--log-level", "debug", "worker", "--config", str(config),
             "--orchestrator", orchestrator, "--shutdown-grace-secs", "10"],
            cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.log, "w"),  # noqa: SIM115 - closed with the process
            start_new_session=True,
        )  # fmt: skip

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def wait_for_log(self, text: str, timeout: float = 15) -> None:
        def found() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited: {self.log_text()}")
            return text in self.log_text()

        wait_until(found, timeout, f"{text!r} in the worker log")

    def terminate(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


# -- gRPC client side ------------------------------------------------------------------------------


def components(channel: grpc.Channel) -> dict[str, Any]:
    """Registered components by routable path."""
    listed = components_pb2_grpc.ComponentsServiceStub(channel).ListRegisteredComponents(
        components_pb2.ListRegisteredComponentsRequest()
    )
    return {c.path: c for c in listed.components}


def store_flow(channel: grpc.Channel, flow: dict[str, Any]) -> str:
    stored = flows_pb2_grpc.FlowsServiceStub(channel).StoreFlow(
        flows_pb2.StoreFlowRequest(flow=to_struct(flow))
    )
    assert stored.stored, stored.diagnostics
    return str(stored.flow_id)


def create_run(channel: grpc.Channel, flow_id: str, inputs: list[Any], wait: bool) -> Any:
    return runs_pb2_grpc.RunsServiceStub(channel).CreateRun(
        runs_pb2.CreateRunRequest(
            flow_id=flow_id, input=[to_value(i) for i in inputs], wait=wait, timeout_secs=50
        ),
        timeout=55,
    )


def cancel_run(channel: grpc.Channel, run_id: str) -> Any:
    runs = runs_pb2_grpc.RunsServiceStub(channel)
    return runs.CancelRun(runs_pb2.CancelRunRequest(run_id=run_id))


def wait_run(channel: grpc.Channel, run_id: str) -> Any:
    return runs_pb2_grpc.RunsServiceStub(channel).GetRun(
        runs_pb2.GetRunRequest(run_id=run_id, wait=True, timeout_secs=50), timeout=55
    )


def step_status(channel: grpc.Channel, run_id: str, step_id: str) -> Any:
    steps = runs_pb2_grpc.RunsServiceStub(channel).GetRunSteps(
        runs_pb2.GetRunStepsRequest(run_id=run_id, item_index=0)
    )
    return next(s for s in steps.steps if s.step_id == step_id)


def events(channel: grpc.Channel, run_id: str) -> list[Any]:
    """Every journal event of a finished run, results included."""
    stream = runs_pb2_grpc.RunsServiceStub(channel).GetRunEvents(
        runs_pb2.GetRunEventsRequest(run_id=run_id, include_results=True), timeout=30
    )
    return list(stream)


def item_results(channel: grpc.Channel, run_id: str) -> list[Any]:
    """Each item's full FlowResult JSON (error data included), by item index."""
    done = {
        e.item_completed.item_index: from_value(e.item_completed.result)
        for e in events(channel, run_id)
        if e.WhichOneof("event") == "item_completed"
    }
    return [done[i] for i in sorted(done)]


def step_attempts(channel: grpc.Channel, run_id: str, step_id: str) -> list[int]:
    return [
        e.step_started.attempt
        for e in events(channel, run_id)
        if e.WhichOneof("event") == "step_started" and e.step_started.step_id == step_id
    ]


def run_on_node(channel: grpc.Channel, flow: dict[str, Any], inputs: list[Any]) -> list[Any]:
    response = create_run(channel, store_flow(channel, flow), inputs, wait=True)
    assert len(response.results) == len(inputs), response
    return item_results(channel, response.summary.run_id)


class InProcess:
    """The worker's own config in one process: the baseline a bridged step must equal.

    Inputs and results pass through protobuf Values as they do for a node's client (keys sorted,
    whole numbers as integers; worker-protocol.md §1.1), so e.g. a blob of an input object hashes
    the same bytes.
    """

    def __init__(self, config: Path) -> None:
        self.runtime = Runtime(load_config(config))

    async def __aenter__(self) -> InProcess:
        await self.runtime.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runtime.close()

    async def run(self, flow: dict[str, Any], inputs: list[Any]) -> list[Any]:
        as_submitted = [from_value(to_value(i)) for i in inputs]
        outcome = await self.runtime.run(parse_flow(from_value(to_value(flow))), as_submitted)
        return [from_value(to_value(r.to_json())) for r in outcome.results]


def one_step_flow(component: str, step_input: Any, **step: Any) -> dict[str, Any]:
    return {
        "name": "bridge-test",
        "steps": [{"id": "s", "component": component, "input": step_input, **step}],
        "output": {"$step": "s"},
    }
