"""Journal append throughput: memory vs SQLite, one writer vs many concurrent writers.

Each writer appends one realistic event per call to its own run tree and waits for durability,
as an executor does. With many writers SQLite group-commits, so appends/s should grow far beyond
one fsync per event; `commits/append` shows how many appends shared each fsync.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from stepflow_mesh.runtime.errors import FlowResult
from stepflow_mesh.runtime.state import events as ev
from stepflow_mesh.runtime.state.base import StateStore
from stepflow_mesh.runtime.state.memory import MemoryStateStore
from stepflow_mesh.runtime.state.sqlite import SqliteStateStore


async def measure(store: StateStore, writers: int, seconds: float) -> tuple[int, float]:
    """Appends completed by `writers` concurrent loops within about `seconds`."""
    for w in range(writers):
        await store.append(f"root-{w}", [ev.root_run_created(f"root-{w}", "f", [{}], {})])
    deadline = time.perf_counter() + seconds
    result = FlowResult.success({"text": "a typical step output " * 4})

    async def writer(w: int) -> int:
        root, done = f"root-{w}", 0
        while time.perf_counter() < deadline:
            await store.append(root, [ev.task_completed(root, 0, done % 50, "step", result)])
            done += 1
        return done

    started = time.perf_counter()
    counts = await asyncio.gather(*(writer(w) for w in range(writers)))
    return sum(counts), time.perf_counter() - started


async def bench(seconds: float, concurrency: list[int]) -> None:
    print(f"{'backend':>8} {'writers':>8} {'appends':>8} {'appends/s':>10} {'commits/append':>15}")
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("memory", "sqlite"):
            for writers in concurrency:
                store: StateStore
                if backend == "memory":
                    store = MemoryStateStore()
                else:
                    store = SqliteStateStore(Path(tmp) / f"bench-{writers}.db")
                await store.open()
                commits_before = getattr(store, "commits", 0)
                appends, elapsed = await measure(store, writers, seconds)
                ratio = "-"
                if isinstance(store, SqliteStateStore):
                    ratio = f"{(store.commits - commits_before) / appends:.3f}"
                await store.close()
                print(
                    f"{backend:>8} {writers:>8} {appends:>8} {appends / elapsed:>10.0f} {ratio:>15}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time budget per row")
    parser.add_argument("--writers", default="1,100", help="comma-separated concurrency levels")
    args = parser.parse_args()
    asyncio.run(bench(args.seconds, [int(w) for w in args.writers.split(",")]))


if __name__ == "__main__":
    main()
