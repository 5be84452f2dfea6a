"""In-process engine benchmark: runs/s and per-step orchestration overhead.

Each flow has N independent `noop` steps whose results the output gathers, so every step is
scheduled, dispatched, recorded and resolved. Per-step overhead is the mean run time divided by N:
`noop` itself does nothing, so this is the price of the engine around a component call.
Target (issue 2): under 100 µs per step for N = 100 on the reference machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from stepflow_mesh.runtime.config import default_config
from stepflow_mesh.runtime.engine import Runtime
from stepflow_mesh.runtime.model import Flow, parse_flow

TARGET_US = 100.0
HISTORY = Path(".stepflow/bench/engine-last.json")


def parallel_noop_flow(width: int) -> Flow:
    steps = [
        {"id": f"s{i}", "component": "/builtin/noop", "input": {"i": i, "x": {"$input": "x"}}}
        for i in range(width)
    ]
    output = {f"s{i}": {"$step": f"s{i}", "path": "i"} for i in range(width)}
    return parse_flow({"name": f"noop-{width}", "steps": steps, "output": output}, "<bench>")


async def time_runs(runtime: Runtime, flow: Flow, width: int, runs: int) -> list[float]:
    """Sequential runs (max concurrency = width) so the number measures latency, not queueing."""
    durations = []
    for _ in range(runs):
        started = time.perf_counter()
        outcome = await runtime.run(flow, [{"x": 1}], max_concurrency=width)
        durations.append(time.perf_counter() - started)
        if outcome.status != "completed":
            raise SystemExit(f"benchmark run failed: {outcome.results[0].to_json()}")
    return durations


async def bench(widths: list[int], seconds: float) -> list[dict[str, Any]]:
    rows = []
    async with Runtime(default_config(Path.cwd())) as runtime:
        for width in widths:
            flow = parallel_noop_flow(width)
            await time_runs(runtime, flow, width, 20)  # warm-up
            per_run = statistics.median(await time_runs(runtime, flow, width, 20))
            runs = max(20, int(seconds / per_run))
            durations = await time_runs(runtime, flow, width, runs)
            median = statistics.median(durations)
            rows.append(
                {
                    "steps": width,
                    "runs": runs,
                    "runs_per_s": 1 / statistics.mean(durations),
                    "median_ms": median * 1e3,
                    "p95_ms": statistics.quantiles(durations, n=20)[-1] * 1e3,
                    "per_step_us": median / width * 1e6,
                }
            )
    return rows


def load_previous() -> dict[int, float]:
    """runs/s per flow size from the last `make bench` on this checkout ("vs last" column)."""
    try:
        return {int(r["steps"]): float(r["runs_per_s"]) for r in json.loads(HISTORY.read_text())}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time budget per flow size")
    parser.add_argument("--widths", default="1,10,100")
    args = parser.parse_args()
    rows = asyncio.run(bench([int(w) for w in args.widths.split(",")], args.seconds))
    previous = load_previous()
    print(
        f"{'steps':>5} {'runs':>6} {'runs/s':>9} {'median ms':>10} {'p95 ms':>8} {'µs/step':>8}"
        f" {'vs last':>8}"
    )
    for r in rows:
        last = previous.get(r["steps"])
        ratio = f"{r['runs_per_s'] / last:.2f}x" if last else "-"
        print(
            f"{r['steps']:>5} {r['runs']:>6} {r['runs_per_s']:>9.1f} {r['median_ms']:>10.3f}"
            f" {r['p95_ms']:>8.3f} {r['per_step_us']:>8.1f} {ratio:>8}"
        )
    HISTORY.parent.mkdir(parents=True, exist_ok=True)
    HISTORY.write_text(json.dumps(rows, indent=2))
    widest = rows[-1]
    verdict = "meets" if widest["per_step_us"] < TARGET_US else "MISSES"
    print(
        f"per-step overhead at {widest['steps']} steps: {widest['per_step_us']:.1f} µs "
        f"({verdict} the {TARGET_US:.0f} µs target)"
    )


if __name__ == "__main__":
    main()
