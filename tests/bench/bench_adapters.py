"""Adapter overhead: per-call latency and throughput of a one-step flow through each adapter.

Each flow is one step calling a trivial echo: the `echo` tool of tests/adapters/mcp_test_server.py
(`type: mcp`), the `echo` component of tests/adapters/legacy_server.py on stepflow-py 0.7.0
(`type: stepflow`, legacy stdio JSON-RPC), and `/builtin/noop` as the baseline. Each runs
- in-process: a `Runtime` hosting the plugins, flows run with `Runtime.run`;
- bridged: a real node (`stepflow serve`, SQLite journal) routing `/bridge` to
  `{type: grpc, queueName: bridge}` and a `stepflow worker` hosting the same plugins; runs are
  submitted with CreateRun(wait=true) over gRPC.
For each: sequential latency (median, p95 over --calls runs) and runs/s with --clients concurrent
runs for --seconds. Overhead is against the in-process builtin noop; the node's own noop (no
bridge) is printed too, so a bridged figure splits into node + bridge hop + adapter.

The legacy server needs the stepflow-py 0.7.0 venv the adapter tests create
(`.venv/legacy-stepflow-py-0.7.0/`); without it its rows are skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml
from stepflow_mesh.runtime._pb.stepflow.v1 import common_pb2, runs_pb2, runs_pb2_grpc
from stepflow_mesh.runtime.config import parse_config
from stepflow_mesh.runtime.engine import Runtime
from stepflow_mesh.runtime.model import parse_flow
from stepflow_mesh.runtime.worker_api.convert import to_value

# The adapter tests' helpers: tests/adapters is the package `adapters` with tests/ on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adapters.bridge_helpers import (
    NODE_CONFIG,
    RETRY,
    STEPFLOW,
    components,
    one_step_flow,
    store_flow,
    wait_until,
)
from adapters.test_mcp import TEST_SERVER
from adapters.test_stdio import LEGACY_SERVER, LEGACY_VENV

INPUT = {"x": 1, "text": "hi"}
WARMUP = 10
Once = Callable[[], Awaitable[None]]


@dataclass
class Row:
    label: str
    median_ms: float
    p95_ms: float
    runs_per_s: float
    reference: bool = False


def legacy_available() -> bool:
    """The check of test_stdio's `legacy_venv` fixture (which creates the venv; this does not)."""
    python = LEGACY_VENV / "bin" / "python"
    return (LEGACY_VENV / ".stepflow-py-installed").is_file() and python.exists()


def plugins_config(legacy: bool) -> dict[str, Any]:
    plugins: dict[str, Any] = {
        "builtin": {"type": "builtin"},
        "mcp": {"type": "mcp", "command": sys.executable, "args": [TEST_SERVER]},
    }
    if legacy:
        plugins["legacy"] = {
            "type": "stepflow",
            "command": str(LEGACY_VENV / "bin" / "python"),
            "args": [str(LEGACY_SERVER)],
            "env": {"STEPFLOW_LOG_LEVEL": "WARNING"},
        }
    return {
        "plugins": plugins,
        "routes": {f"/{name}": [{"plugin": name}] for name in plugins},
        "retry": RETRY,
    }


def flows(prefix: str, legacy: bool) -> dict[str, dict[str, Any]]:
    """Adapter name -> one-step flow, its components under `prefix`."""
    found = {
        "builtin noop": one_step_flow(f"{prefix}/builtin/noop", {"x": {"$input": "x"}}),
        "MCP echo": one_step_flow(f"{prefix}/mcp/echo", {"text": {"$input": "text"}}),
    }
    if legacy:
        found["legacy stdio echo"] = one_step_flow(f"{prefix}/legacy/echo", {"x": {"$input": "x"}})
    return found


async def measure(label: str, once: Once, args: argparse.Namespace, **row: Any) -> Row:
    for _ in range(WARMUP):
        await once()
    latencies = []
    for _ in range(args.calls):
        started = time.perf_counter()
        await once()
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    done = 0
    deadline = time.perf_counter() + args.seconds

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await once()
            done += 1

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(args.clients)))
    elapsed = time.perf_counter() - began
    p95 = latencies[max(0, math.ceil(len(latencies) * 0.95) - 1)]
    print(f"  measured {label}", file=sys.stderr, flush=True)
    return Row(label, statistics.median(latencies) * 1e3, p95 * 1e3, done / elapsed, **row)


# -- in-process --------------------------------------------------------------------------------


async def in_process(workdir: Path, legacy: bool, args: argparse.Namespace) -> list[Row]:
    config = parse_config(plugins_config(legacy), "<bench>", workdir)
    rows = []
    async with Runtime(config) as runtime:
        for name, doc in flows("", legacy).items():
            flow = parse_flow(doc, "<bench>")

            async def once(flow: Any = flow, name: str = name) -> None:
                [result] = (await runtime.run(flow, [INPUT])).results
                if not result.ok:
                    raise SystemExit(f"{name} failed in-process: {result.to_json()}")

            rows.append(await measure(f"{name} (in-process)", once, args))
    return rows


# -- bridged: a node and a `stepflow worker` ---------------------------------------------------


def start_node(workdir: Path) -> tuple[subprocess.Popen[str], str]:
    config = workdir / "node-config.yml"
    config.write_text(yaml.safe_dump(NODE_CONFIG))
    node = subprocess.Popen(
        [str(STEPFLOW), "--log-level", "warning", "serve", "--port", "0",
         "--state-dir", str(workdir / "state"), "--config", str(config),
         "--shutdown-grace-secs", "2"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert node.stdout is not None
    line = node.stdout.readline()
    if not line:
        raise SystemExit(f"the node did not start (exit status {node.wait()})")
    return node, f"127.0.0.1:{json.loads(line)['port']}"


def start_worker(workdir: Path, legacy: bool, address: str) -> subprocess.Popen[str]:
    config = workdir / "worker-config.yml"
    config.write_text(yaml.safe_dump(plugins_config(legacy)))
    return subprocess.Popen(
        [str(STEPFLOW), "--log-level", "warning", "worker", "--config", str(config),
         "--orchestrator", address, "--queue", "bridge", "--max-concurrent", "16"],
        cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, text=True,
        stderr=open(workdir / "worker.log", "w"),
        start_new_session=True,  # its MCP and stdio servers go with it
    )  # fmt: skip


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


async def bridged(workdir: Path, legacy: bool, args: argparse.Namespace) -> list[Row]:
    node, address = start_node(workdir)
    worker: subprocess.Popen[str] | None = None
    try:
        worker = start_worker(workdir, legacy, address)
        wanted = ["/bridge/mcp/echo"] + (["/bridge/legacy/echo"] if legacy else [])
        with grpc.insecure_channel(address) as sync_channel:

            def discovered() -> bool:
                if worker is not None and worker.poll() is not None:
                    log = (workdir / "worker.log").read_text()
                    raise SystemExit(f"the worker exited:\n{log}")
                listed = components(sync_channel)
                return all(path in listed for path in wanted)

            wait_until(discovered, 30, "the worker's components on the node")
            cases = {"builtin noop (node, no bridge)": one_step_flow(
                "/builtin/noop", {"x": {"$input": "x"}})}  # fmt: skip
            cases.update({f"{k} (bridged)": v for k, v in flows("/bridge", legacy).items()})
            flow_ids = {label: store_flow(sync_channel, doc) for label, doc in cases.items()}
        rows = []
        async with grpc.aio.insecure_channel(address) as channel:
            runs = runs_pb2_grpc.RunsServiceStub(channel)
            for label, flow_id in flow_ids.items():

                async def once(flow_id: str = flow_id, label: str = label) -> None:
                    response = await runs.CreateRun(
                        runs_pb2.CreateRunRequest(
                            flow_id=flow_id, input=[to_value(INPUT)], wait=True, timeout_secs=60
                        )
                    )
                    if response.summary.status != common_pb2.EXECUTION_STATUS_COMPLETED:
                        raise SystemExit(f"{label} failed: {response}")

                reference = "no bridge" in label
                rows.append(await measure(label, once, args, reference=reference))
        return rows
    finally:
        if worker is not None:
            stop(worker)
        stop(node)


# -- report ------------------------------------------------------------------------------------


def report(rows: list[Row], args: argparse.Namespace, legacy: bool) -> None:
    base = rows[0]
    print(
        f"adapter overhead: one-step flow, sequential latency over {args.calls} runs, "
        f"runs/s with {args.clients} concurrent runs ({args.seconds:g} s)"
    )
    print(
        f"{'flow':<38} {'median ms':>9} {'p95 ms':>8} {'runs/s':>8}"
        f" {'+median ms':>10} {'x median':>8} {'x runs/s':>8}"
    )
    for r in rows:
        print(
            f"{r.label:<38} {r.median_ms:>9.2f} {r.p95_ms:>8.2f} {r.runs_per_s:>8.1f}"
            f" {r.median_ms - base.median_ms:>+10.2f} {r.median_ms / base.median_ms:>8.1f}"
            f" {r.runs_per_s / base.runs_per_s:>8.3f}"
        )
    print(f"overhead columns: against {base.label}")
    node = next((r for r in rows if r.reference), None)
    if node is not None:
        hops = [
            f"{r.label.removesuffix(' (bridged)')} +{r.median_ms - node.median_ms:.2f} ms"
            for r in rows
            if r.label.endswith("(bridged)")
        ]
        print(f"bridged minus the node's own noop (bridge hop + adapter): {', '.join(hops)}")
    if not legacy:
        print(
            "legacy stdio: skipped: run the adapter tests once to create it "
            f"(.venv/bin/pytest tests/adapters/test_stdio.py creates {LEGACY_VENV})"
        )


async def main_async(args: argparse.Namespace) -> None:
    legacy = legacy_available()
    if not legacy:
        print("  legacy stdio: skipped (no stepflow-py 0.7.0 venv yet)", file=sys.stderr)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        rows = await in_process(workdir, legacy, args)
        rows += await bridged(workdir, legacy, args)
    print(f"  total {time.perf_counter() - started:.1f} s", file=sys.stderr)
    report(rows, args, legacy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="sequential runs per flow")
    parser.add_argument("--clients", type=int, default=16, help="concurrent runs")
    parser.add_argument("--seconds", type=float, default=2.0, help="throughput window per flow")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
