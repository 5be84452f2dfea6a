"""A real `stepflow serve` process for tests: started with its flags, its ports read from stdout.

The one helper every suite that drives a node over the network uses (server, REST, bridge,
telemetry, mesh); each suite adds only its config and flags.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
from stepflow_mesh.runtime._pb.stepflow.v1 import flows_pb2, flows_pb2_grpc
from stepflow_mesh.runtime.worker_api.convert import to_struct

STEPFLOW = Path(sys.executable).parent / "stepflow"


class NodeProcess:
    def __init__(
        self,
        workdir: Path,
        serve_args: list[str] | None = None,
        *,
        global_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        log_name: str = "node.log",
    ) -> None:
        self.workdir = workdir
        self.serve_args = serve_args if serve_args is not None else ["--state-dir", "state"]
        self.global_args = global_args or []
        self.env = env
        self.log_path = workdir / log_name
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.http_port = 0
        self._channel: grpc.Channel | None = None

    def start(self) -> NodeProcess:
        """Launch and wait for the `{"port", "httpPort"}` line the node prints once it serves."""
        command = [str(STEPFLOW), *self.global_args, "serve", "--port", "0",
                   "--http-port", "0", *self.serve_args]  # fmt: skip
        self.proc = subprocess.Popen(
            command,
            cwd=self.workdir,
            env=self.env if self.env is not None else dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=open(self.log_path, "a"),  # noqa: SIM115 - closed with the process
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, self.log
        ports = json.loads(line)
        self.port, self.http_port = ports["port"], ports["httpPort"]
        self._channel = None
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def channel(self) -> grpc.Channel:
        """A gRPC channel to the node (reopened after a restart)."""
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.address)
        return self._channel

    def store_flow(self, flow: dict[str, Any]) -> str:
        """StoreFlow over gRPC; the flow's id (fails the test with the diagnostics if refused)."""
        flows = flows_pb2_grpc.FlowsServiceStub(self.channel)
        stored = flows.StoreFlow(flows_pb2.StoreFlowRequest(flow=to_struct(flow)))
        assert stored.stored, stored.diagnostics
        return str(stored.flow_id)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        """Signal the node and wait for it; the exit code (None if it was never started)."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if sig == signal.SIGTERM:
                self.proc.send_signal(signal.SIGCONT)  # a stopped process could not handle it
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)
