"""Node throughput over the network: runs/s and latency at 32 concurrent gRPC clients.

Starts a real `stepflow serve` (SQLite journal in a temp dir) with a stepflow-py worker, then:
- runs/s and p50/p95 latency of a one-step flow through the worker's `echo` component;
- runs/s of 1, 10 and 100 parallel `noop` steps (durable, SQLite).
- the noop flows again over REST (`POST /api/v1/runs` with wait).
Each client loops CreateRun(wait=true) (or its REST form), after one warm-up run.

Upstream's server (PyPI `stepflow-orchestrator`, installed by `make bench`) is measured the same
way on the same machine, with the same worker and SQLite, and printed side by side as a ratio.
Without that wheel the ratio uses issue 4's reference figures for upstream 0.13 on this machine
class: 180 runs/s through a stepflow-py echo worker; SQLite 173 / 67 / 7.9 runs/s for 1 / 10 / 100
noop steps.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from stepflow_mesh.runtime._pb.stepflow.v1 import (
    common_pb2,
    flows_pb2,
    flows_pb2_grpc,
    runs_pb2,
    runs_pb2_grpc,
)
from stepflow_mesh.runtime.worker_api.convert import to_struct, to_value

REFERENCE = {"echo": 180.0, 1: 173.0, 10: 67.0, 100: 7.9}
BIN = Path(sys.executable).parent
WORKER_CONFIG = (
    "plugins:\n  builtin: {type: builtin}\n"
    f"  python: {{type: grpc, queueName: python, command: '{BIN / 'stepflow_worker'}',"
    " env: {STEPFLOW_LOG_LEVEL: WARNING, STEPFLOW_MAX_CONCURRENT: '32'}}\n"
    'routes:\n  "/builtin": [{plugin: builtin}]\n  "/python": [{plugin: python}]\n'
)
Figures = dict[str, float]


def echo_flow() -> dict[str, Any]:
    return {
        "name": "echo",
        "steps": [{"id": "e", "component": "/python/echo", "input": {"x": {"$input": "x"}}}],
        "output": {"$step": "e"},
    }


def noop_flow(width: int) -> dict[str, Any]:
    steps = [{"id": f"s{i}", "component": "/builtin/noop", "input": {"i": i}} for i in range(width)]
    return {"name": f"noop-{width}", "steps": steps,
            "output": {f"s{i}": {"$step": f"s{i}"} for i in range(width)}}  # fmt: skip


async def measure(
    target: str, flow: dict[str, Any], clients: int, seconds: float
) -> dict[str, float]:
    async with grpc.aio.insecure_channel(target) as channel:
        flows = flows_pb2_grpc.FlowsServiceStub(channel)
        runs = runs_pb2_grpc.RunsServiceStub(channel)
        flow_id = (await flows.StoreFlow(flows_pb2.StoreFlowRequest(flow=to_struct(flow)))).flow_id

        async def one_run() -> None:
            response = await runs.CreateRun(
                runs_pb2.CreateRunRequest(
                    flow_id=flow_id, input=[to_value({"x": 1})], wait=True, timeout_secs=60
                )
            )
            if response.summary.status != common_pb2.EXECUTION_STATUS_COMPLETED:
                raise SystemExit(f"benchmark run failed: {response}")

        return await drive(one_run, clients, seconds)


async def measure_rest(
    http_url: str, flow: dict[str, Any], clients: int, seconds: float
) -> dict[str, float]:
    """The same loop over REST: POST /runs with wait."""
    import httpx

    async with httpx.AsyncClient(base_url=f"{http_url}/api/v1", timeout=120) as http:
        stored = (await http.post("/flows", json={"flow": flow})).json()

        async def one_run() -> None:
            body = {"flowId": stored["flowId"], "input": [{"x": 1}], "wait": True}
            answer = (await http.post("/runs", json=body)).json()
            if answer["summary"]["status"] != common_pb2.EXECUTION_STATUS_COMPLETED:
                raise SystemExit(f"benchmark run failed: {answer}")

        return await drive(one_run, clients, seconds)


async def drive(
    one_run: Callable[[], Awaitable[None]], clients: int, seconds: float
) -> dict[str, float]:
    """`clients` loops each running `one_run` back to back for `seconds`: runs/s, p50, p95."""
    await one_run()  # warm-up: the worker has connected and the flow is cached
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await one_run()
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "runs": float(len(latencies)),
        "runs_per_s": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p95_ms": latencies[int(len(latencies) * 0.95) - 1] * 1e3,
    }


def start_node(
    workdir: Path, global_args: Sequence[str] = (), env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], dict[str, int]]:
    """A node with a stepflow-py echo worker; `global_args` go before `serve` (telemetry)."""
    (workdir / "stepflow-config.yml").write_text(WORKER_CONFIG)
    node = subprocess.Popen(
        [str(BIN / "stepflow"), "--log-level", "warning", *global_args, "serve", "--port", "0",
         "--http-port", "0", "--state-dir", str(workdir / "state")],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert node.stdout is not None
    return node, json.loads(node.stdout.readline())


def upstream_binary() -> Path | None:
    """Upstream's `stepflow-server` from the `stepflow-orchestrator` wheel, if installed."""
    spec = importlib.util.find_spec("stepflow_orchestrator")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "bin" / "stepflow-server"
    return binary if binary.is_file() else None


def start_upstream(workdir: Path, binary: Path) -> tuple[subprocess.Popen[str], int]:
    """Upstream's server with the same worker, its SQLite store in `workdir`; one port for both
    gRPC and REST. Its config path must be absolute (it runs the worker in the config's folder)."""
    config = workdir / "stepflow-config.yml"
    database = workdir / "upstream.db"
    config.write_text(
        WORKER_CONFIG
        + f'storageConfig: {{type: sqlite, databaseUrl: "sqlite:{database}?mode=rwc"}}\n'
    )
    server = subprocess.Popen(
        [str(binary), "--port", "0", "--config", str(config), "--log-level", "error",
         "--log-destination", "file", "--log-file", str(workdir / "upstream.log")],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True,  # its own process group: stopped with the worker it launched
    )  # fmt: skip
    assert server.stdout is not None
    for line in server.stdout:  # log lines may come before the `{"port": N}` announcement
        if line.startswith("{") and '"port"' in line:
            return server, int(json.loads(line)["port"])
    raise SystemExit(f"upstream server exited without announcing its port ({server.wait()})")


async def measure_all(target: str, http_url: str, args: argparse.Namespace) -> list[Figures]:
    """The seven rows, in table order: echo, gRPC noop 1/10/100, REST noop 1/10/100."""
    rows = [await measure(target, echo_flow(), args.clients, args.seconds)]
    for width in (1, 10, 100):
        rows.append(await measure(target, noop_flow(width), args.clients, args.seconds))
    for width in (1, 10, 100):
        rows.append(await measure_rest(http_url, noop_flow(width), args.clients, args.seconds))
    return rows


async def ours(args: argparse.Namespace) -> list[Figures]:
    with tempfile.TemporaryDirectory() as tmp:
        node, ports = start_node(Path(tmp))
        try:
            return await measure_all(
                f"127.0.0.1:{ports['port']}", f"http://127.0.0.1:{ports['httpPort']}", args
            )
        finally:
            node.terminate()
            node.wait(timeout=30)


async def upstream(binary: Path, args: argparse.Namespace) -> list[Figures]:
    with tempfile.TemporaryDirectory() as tmp:
        server, port = start_upstream(Path(tmp), binary)
        try:
            return await measure_all(f"127.0.0.1:{port}", f"http://127.0.0.1:{port}", args)
        finally:
            # It does not stop on SIGTERM within 30 s, and its worker runs in a group of its own.
            workers = _children(server.pid)
            os.killpg(server.pid, signal.SIGKILL)
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            server.wait(timeout=30)


def _children(pid: int) -> list[int]:
    """Direct child processes of `pid` (Linux /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(child) for child in task.read_text().split()]
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time `pid` has used so far, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


LABELS = [
    ("echo via stepflow-py", "echo"),
    *((f"{width} noop steps (SQLite)", width) for width in (1, 10, 100)),
    *((f"{width} noop steps, REST", width) for width in (1, 10, 100)),
]


async def main_async(args: argparse.Namespace) -> None:
    binary = upstream_binary()
    mine = await ours(args)
    theirs = await upstream(binary, args) if binary is not None else None
    print(f"node over gRPC, {args.clients} concurrent clients; upstream: runs/s p50/p95 ms")
    header = f"{'runs/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'upstream':>9} {'up p50/p95':>12}"
    print(f"{'flow':<24} {header} {'ratio':>6}")
    for index, (label, key) in enumerate(LABELS):
        figures = mine[index]
        if theirs is not None:
            reference = theirs[index]["runs_per_s"]
            latency = f"{theirs[index]['p50_ms']:.0f}/{theirs[index]['p95_ms']:.0f}"
        else:
            reference, latency = REFERENCE[key], "-"
        print(
            f"{label:<24} {figures['runs_per_s']:>8.1f} {figures['p50_ms']:>8.1f}"
            f" {figures['p95_ms']:>8.1f} {reference:>9.1f} {latency:>12}"
            f" {figures['runs_per_s'] / reference:>6.2f}"
        )
    if theirs is not None:
        print(f"upstream = {binary} measured the same way on this machine")
    else:
        print("upstream = issue 4 reference figures (stepflow-orchestrator wheel not installed)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
