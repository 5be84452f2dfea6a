"""A real cluster on loopback for the mesh tests: etcd, `stepflow serve` nodes, stepflow-py workers.

Nodes and workers are separate processes (SIGKILL/SIGSTOP apply to them as in production); each
cluster uses its own etcd key prefix, so tests sharing one etcd never see each other.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml
from node_process import NodeProcess
from stepflow_mesh.runtime._pb.stepflow.v1 import (
    common_pb2,
    runs_pb2,
    runs_pb2_grpc,
)
from stepflow_mesh.runtime.worker_api.convert import from_value, to_value

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


class ClusterNode(NodeProcess):
    def __init__(
        self,
        cluster: Cluster,
        node_id: str,
        region: str,
        zone: str,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.cluster, self.node_id, self.region, self.zone = cluster, node_id, region, zone
        workdir = cluster.root / node_id
        workdir.mkdir(parents=True, exist_ok=True)
        config_file = workdir / "stepflow-config.yml"
        super().__init__(
            workdir,
            ["--config", str(config_file), "--node-id", node_id, "--region", region, "--zone", zone,
             "--etcd", cluster.etcd_endpoint, "--shutdown-grace-secs", "5"],
            global_args=cluster.global_args,
            env={**os.environ, **cluster.env},
        )  # fmt: skip
        config_file.write_text(yaml.safe_dump({**cluster.config, **(config or {})}))

    @property
    def runs(self) -> Any:
        return runs_pb2_grpc.RunsServiceStub(self.channel)

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

    def node(
        self,
        node_id: str,
        region: str = "region-a",
        zone: str = "",
        config: dict[str, Any] | None = None,
    ) -> ClusterNode:
        """Start a node; `config` replaces top-level sections of the cluster's config for it."""
        node = ClusterNode(self, node_id, region, zone or f"{region}-1", config)
        self.nodes[node_id] = node
        node.start()
        return node

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
