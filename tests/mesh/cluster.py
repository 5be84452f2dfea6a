"""A real cluster on loopback for the mesh tests: etcd, `stepflow serve` nodes, stepflow-py workers.

Nodes and workers are separate processes (SIGKILL/SIGSTOP apply to them as in production); each
cluster uses its own etcd key prefix, so tests sharing one etcd never see each other.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import yaml
from stepflow_mesh.runtime._pb.stepflow.v1 import (
    common_pb2,
    flows_pb2,
    flows_pb2_grpc,
    runs_pb2,
    runs_pb2_grpc,
)
from stepflow_mesh.runtime.worker_api.convert import from_value, to_struct, to_value

STEPFLOW = Path(sys.executable).parent / "stepflow"
WORKER = Path(__file__).with_name("mesh_worker.py")
COMPLETED = common_pb2.EXECUTION_STATUS_COMPLETED


def node_config(prefix: str, lease_ttl: int, queue_timeout: int = 60) -> dict[str, Any]:
    return {
        "plugins": {
            "builtin": {"type": "builtin"},
            "mesh": {"type": "grpc", "queueName": "mesh", "queueTimeoutSecs": queue_timeout},
            "strict": {"type": "grpc", "queueName": "mesh", "queueTimeoutSecs": 4},
        },
        "routes": {
            "/builtin": [{"plugin": "builtin"}],
            "/mesh": [{"plugin": "mesh"}],
            "/strict": [{"plugin": "strict", "locality": "strict"}],
        },
        "cluster": {"etcd": {"prefix": prefix}, "leaseTtlSecs": lease_ttl},
        "recovery": {"checkIntervalSecs": 5},
        "retry": {"backoff": {"type": "constant", "delayMs": 100}},
    }


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll a condition of an external process (no push channel exists) with a deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class ClusterNode:
    def __init__(self, cluster: Cluster, node_id: str, region: str, zone: str) -> None:
        self.cluster, self.node_id, self.region, self.zone = cluster, node_id, region, zone
        self.workdir = cluster.root / node_id
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.http_port = 0
        self._channel: grpc.Channel | None = None

    @property
    def log(self) -> str:
        return (self.workdir / "node.log").read_text()

    def start(self) -> ClusterNode:
        config = self.workdir / "stepflow-config.yml"
        config.write_text(yaml.safe_dump(self.cluster.config))
        self.proc = subprocess.Popen(
            [
                str(STEPFLOW), *self.cluster.global_args, "serve",
                "--port", "0", "--http-port", "0",
                "--config", str(config), "--node-id", self.node_id, "--region", self.region,
                "--zone", self.zone, "--etcd", self.cluster.etcd_endpoint,
                "--shutdown-grace-secs", "5",
            ],
            cwd=self.workdir,
            env={**os.environ, **self.cluster.env},
            stdout=subprocess.PIPE,
            stderr=open(self.workdir / "node.log", "a"),  # noqa: SIM115 - closed with the process
            text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, self.log
        ports = json.loads(line)
        self.port, self.http_port = ports["port"], ports["httpPort"]
        self._channel = None
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.address)
        return self._channel

    @property
    def runs(self) -> Any:
        return runs_pb2_grpc.RunsServiceStub(self.channel)

    def store_flow(self, flow: dict[str, Any]) -> str:
        flows = flows_pb2_grpc.FlowsServiceStub(self.channel)
        stored = flows.StoreFlow(flows_pb2.StoreFlowRequest(flow=to_struct(flow)))
        assert stored.stored, stored.diagnostics
        return str(stored.flow_id)

    def submit(self, flow: dict[str, Any], *inputs: Any, wait: bool = False) -> Any:
        request = runs_pb2.CreateRunRequest(
            flow_id=self.store_flow(flow), input=[to_value(i) for i in inputs], wait=wait
        )
        return self.runs.CreateRun(request, timeout=120)

    def items(self, run_id: str) -> Any:
        return self.runs.GetRunItems(runs_pb2.GetRunItemsRequest(run_id=run_id), timeout=30)

    def get(self, run_id: str, *, wait: bool = False, timeout: float = 60) -> Any:
        request = runs_pb2.GetRunRequest(run_id=run_id, wait=wait, timeout_secs=int(timeout))
        return self.runs.GetRun(request, timeout=timeout + 30)

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        if sig == signal.SIGTERM:
            self.proc.send_signal(signal.SIGCONT)
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=60)
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        return code


class Cluster:
    def __init__(self, root: Path, etcd_endpoint: str, lease_ttl: int = 3) -> None:
        self.root = root
        self.etcd_endpoint = etcd_endpoint
        self.prefix = f"/test-{uuid.uuid4().hex[:12]}"
        self.lease_ttl = lease_ttl
        self.config = node_config(self.prefix, lease_ttl)
        self.nodes: dict[str, ClusterNode] = {}
        self.workers: dict[str, subprocess.Popen[str]] = {}
        self.log = root / "ticks.log"
        self.global_args: list[str] = []  # stepflow options before `serve` (telemetry)
        self.env: dict[str, str] = {}  # extra environment of the node processes

    def node(self, node_id: str, region: str = "region-a", zone: str = "") -> ClusterNode:
        node = ClusterNode(self, node_id, region, zone or f"{region}-1")
        self.nodes[node_id] = node
        return node.start()

    def worker(self, label: str, node: ClusterNode) -> subprocess.Popen[str]:
        env = {
            **os.environ,
            "STEPFLOW_TASKS_URL": node.address,
            "STEPFLOW_QUEUE_NAME": "mesh",
            "MESH_WORKER_LABEL": label,
            "STEPFLOW_LOG_LEVEL": "WARNING",
        }
        proc = subprocess.Popen(
            [sys.executable, str(WORKER)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / f"worker-{label}.log", "a"),  # noqa: SIM115
            text=True,
        )
        self.workers[label] = proc
        return proc

    def ticks(self) -> list[tuple[str, str]]:
        if not self.log.exists():
            return []
        return [tuple(line.split()) for line in self.log.read_text().splitlines()]  # type: ignore[misc]

    def stop(self) -> None:
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for node in self.nodes.values():
            node.stop(signal.SIGKILL)


def tick_step(step_id: str, log: Path, seconds: float = 0.0, component: str = "/mesh/tick",
              after: str | None = None) -> dict[str, Any]:  # fmt: skip
    data: dict[str, Any] = {"tag": step_id, "log": str(log), "seconds": seconds}
    if after:
        data["after"] = {"$step": after}
    return {"id": step_id, "component": component, "input": data}


def output_of(response: Any) -> Any:
    """The first item's output of a GetRun/CreateRun response."""
    [item] = response.results
    return from_value(item.output)
