"""Telemetry overhead: runs/s with tracing + metrics on vs off.

Two settings. (1) A node as deployed (`tests/bench/bench_node.py`): 32 concurrent gRPC clients,
SQLite journal, one step through a stepflow-py echo worker and 10 parallel `noop` steps. (2) The
worst case: the engine alone, in process, 10 parallel steps through the DurableRunner with an
in-memory journal, where every step span, every `journal.append` span and every metric point is
pure overhead on a run that does nothing. With telemetry on, everything is exported over
OTLP/gRPC to a receiver in its own process (what a collector would do). Target: ratio ≥ 0.9.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from stepflow_mesh.runtime import telemetry
from stepflow_mesh.runtime.config import default_config
from stepflow_mesh.runtime.durable import DurableRunner, RunRequest
from stepflow_mesh.runtime.engine import Runtime
from stepflow_mesh.runtime.model import Flow, parse_flow
from stepflow_mesh.runtime.state.memory import MemoryStateStore

RECEIVER_DIR = Path(__file__).resolve().parents[1] / "telemetry"
# The receiver runs in its own process, as a collector would (not competing for our GIL), and
# only counts what arrives: a real collector runs on other machines, so its decoding work must not
# take the 2 cores the measured node shares with its worker and clients.
RECEIVER = f"""
import sys, json
sys.path.insert(0, {str(RECEIVER_DIR)!r})
from receiver import Receiver
r = Receiver(keep=False).start()
print(r.port, flush=True)
sys.stdin.read()
print(json.dumps({{"spans": r.span_count, "points": r.point_count}}), flush=True)
"""

TARGET = 0.9
WIDTH = 10


def parallel_flow(width: int, sleep_ms: int) -> Flow:
    """`width` independent steps: `noop` (pure orchestration), or `sleep` for `sleep_ms`."""
    if sleep_ms:
        step = {"component": "/builtin/sleep", "input": {"duration_ms": sleep_ms}}
    else:
        step = {"component": "/builtin/noop", "input": {"i": 1}}
    steps = [{"id": f"s{i}", **step} for i in range(width)]
    output = {f"s{i}": {"$step": f"s{i}"} for i in range(width)}
    return parse_flow({"name": f"bench-{width}", "steps": steps, "output": output}, "<bench>")


async def runs_per_second(flow: Flow, seconds: float) -> float:
    store = MemoryStateStore()
    await store.open()
    async with Runtime(default_config(Path.cwd())) as runtime:
        runner = DurableRunner(runtime, store)
        request = RunRequest(flow, [{}], {}, None, WIDTH)
        for _ in range(20):  # warm-up
            await runner.start(request)
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            outcome = await runner.start(request)
            if outcome.status != "completed":
                raise SystemExit(f"benchmark run failed: {outcome.results[0].to_json()}")
            count += 1
        elapsed = time.perf_counter() - started
    await store.close()
    return count / elapsed


def measure(endpoint: str | None, seconds: float, sleep_ms: int) -> float:
    if endpoint is not None:
        settings = telemetry.TelemetrySettings(
            trace_enabled=True, metrics_enabled=True, otlp_endpoint=endpoint,
            metrics_interval_secs=1.0,
        )  # fmt: skip
        telemetry.init(settings)
    try:
        return asyncio.run(runs_per_second(parallel_flow(WIDTH, sleep_ms), seconds))
    finally:
        telemetry.shutdown()


async def node_rates(endpoint: str | None, seconds: float) -> dict[str, float]:
    """runs/s of a node for the echo and 10-noop flows, with telemetry exported or off."""
    import tempfile

    from bench_node import echo_flow, measure, noop_flow, start_node

    flags = (
        ["--trace-enabled", "--metrics-enabled", "--otlp-endpoint", endpoint] if endpoint else []
    )
    with tempfile.TemporaryDirectory() as tmp:
        node, ports = start_node(Path(tmp), flags)
        target = f"127.0.0.1:{ports['port']}"
        try:
            echo = await measure(target, echo_flow(), 32, seconds)
            noop = await measure(target, noop_flow(10), 32, seconds)
        finally:
            node.terminate()
            node.wait(timeout=30)
    return {"echo": echo["runs_per_s"], "noop": noop["runs_per_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per mode per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    receiver = subprocess.Popen(
        [sys.executable, "-c", RECEIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert receiver.stdin is not None and receiver.stdout is not None
    endpoint = f"http://127.0.0.1:{int(receiver.stdout.readline())}"
    rows = []
    node_rows = []
    try:
        # Off and on alternate, `rounds` times each: the 2-core box's noise hits both alike.
        off_node: dict[str, list[float]] = {"echo": [], "noop": []}
        on_node: dict[str, list[float]] = {"echo": [], "noop": []}
        for _ in range(args.rounds):
            for endpoint_or_none, rates in ((None, off_node), (endpoint, on_node)):
                for key, rate in asyncio.run(node_rates(endpoint_or_none, args.seconds)).items():
                    rates[key].append(rate)
        node_rows = [
            (k, statistics.median(off_node[k]), statistics.median(on_node[k]))
            for k in ("echo", "noop")
        ]
        for sleep_ms in (0, 5):
            off: list[float] = []
            on: list[float] = []
            for _ in range(args.rounds):
                off.append(measure(None, args.seconds, sleep_ms))
                on.append(measure(endpoint, args.seconds, sleep_ms))
            rows.append((sleep_ms, statistics.median(off), statistics.median(on)))
    finally:
        receiver.stdin.close()
        counts = json.loads(receiver.stdout.readline() or "{}")
        receiver.wait(timeout=30)
    print(f"a node, 32 gRPC clients, SQLite journal; tracing + metrics exported"
          f" (median of {args.rounds} alternating rounds)")  # fmt: skip
    print(f"{'flow':>18} {'off runs/s':>11} {'on runs/s':>10} {'on/off':>7}")
    for name, off_rate, on_rate in node_rows:
        label = "echo (stepflow-py)" if name == "echo" else "10 noop steps"
        ratio = on_rate / off_rate
        verdict = "meets" if ratio >= TARGET else "MISSES"
        print(f"{label:>18} {off_rate:>11.1f} {on_rate:>10.1f} {ratio:>7.2f}  ({verdict} {TARGET})")
    print(f"engine alone: {WIDTH} parallel steps per run, in-memory journal (worst case)")
    print(f"{'step':>12} {'off runs/s':>11} {'on runs/s':>10} {'on/off':>7}")
    for sleep_ms, off_rate, on_rate in rows:
        label = f"sleep {sleep_ms} ms" if sleep_ms else "noop"
        ratio = on_rate / off_rate
        verdict = "meets" if ratio >= TARGET else "MISSES"
        print(f"{label:>12} {off_rate:>11.1f} {on_rate:>10.1f} {ratio:>7.2f}  ({verdict} {TARGET})")
    print(f"receiver got {counts.get('spans')} spans, {counts.get('points')} metric points")


if __name__ == "__main__":
    main()
