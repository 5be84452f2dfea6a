"""Durable-mode throughput: runs/s with the SQLite journal as a ratio to the in-memory store.

Same flows as bench_engine (N parallel `noop` steps), run through `DurableRunner` so every run is
journalled (lease, `root_run_created`, one `tasks_started` per round, completions, final record).
Many runs are in flight at once, as on a server: that is what group commit is for. A single run on
its own is bounded by fsync latency (several sequential commits per run), shown in the last column.
Target (issue 3): SQLite ≥ 0.5 x in-memory for the 10-step flow.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_engine import parallel_noop_flow
from stepflow_mesh.runtime.config import default_config
from stepflow_mesh.runtime.durable import DurableRunner, RunRequest
from stepflow_mesh.runtime.engine import Runtime
from stepflow_mesh.runtime.state.base import StateStore
from stepflow_mesh.runtime.state.memory import MemoryStateStore
from stepflow_mesh.runtime.state.sqlite import SqliteStateStore

TARGET_RATIO = 0.5


async def runs_per_second(store: StateStore, width: int, seconds: float, in_flight: int) -> float:
    """Keep `in_flight` runs going for about `seconds`; completed runs per second."""
    await store.open()
    try:
        async with Runtime(default_config(Path.cwd())) as runtime:
            runner = DurableRunner(runtime, store)
            request = RunRequest(parallel_noop_flow(width), [{"x": 1}], {}, None, width)
            done = 0
            deadline = time.perf_counter() + seconds

            async def worker() -> None:
                nonlocal done
                while time.perf_counter() < deadline:
                    outcome = await runner.start(request)
                    if outcome.status != "completed":
                        raise SystemExit(f"benchmark run failed: {outcome.results}")
                    done += 1

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(in_flight)))
            return done / (time.perf_counter() - started)
    finally:
        await store.close()


async def bench(widths: list[int], seconds: float, in_flight: int) -> list[dict[str, Any]]:
    rows = []
    for width in widths:
        with tempfile.TemporaryDirectory() as tmp:
            memory = await runs_per_second(MemoryStateStore(), width, seconds, in_flight)
            sqlite = await runs_per_second(
                SqliteStateStore(Path(tmp) / "bench.db"), width, seconds, in_flight
            )
        with tempfile.TemporaryDirectory() as tmp:
            single = await runs_per_second(
                SqliteStateStore(Path(tmp) / "bench.db"), width, seconds / 2, 1
            )
        rows.append({"steps": width, "memory": memory, "sqlite": sqlite, "single": single})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--widths", default="1,10,100")
    parser.add_argument("--in-flight", type=int, default=32, help="concurrent runs")
    args = parser.parse_args()
    rows = asyncio.run(
        bench([int(w) for w in args.widths.split(",")], args.seconds, args.in_flight)
    )
    print(f"durable mode, {args.in_flight} runs in flight")
    print(f"{'steps':>5} {'memory runs/s':>14} {'sqlite runs/s':>14} {'ratio':>6} {'1 run/s':>8}")
    for r in rows:
        print(
            f"{r['steps']:>5} {r['memory']:>14.1f} {r['sqlite']:>14.1f}"
            f" {r['sqlite'] / r['memory']:>6.2f} {r['single']:>8.1f}"
        )
    ten = next((r for r in rows if r["steps"] == 10), None)
    if ten:
        ratio = ten["sqlite"] / ten["memory"]
        verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
        print(f"10-step durable/in-memory: {ratio:.2f} ({verdict} the {TARGET_RATIO} target)")


if __name__ == "__main__":
    main()
