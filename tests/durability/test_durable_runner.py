"""DurableRunner in-process: checkpoints, compaction, retention, leases and journal shape."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from stepflow_mesh.runtime.blobs import MemoryBlobStore
from stepflow_mesh.runtime.config import default_config
from stepflow_mesh.runtime.durable import DurableRunner, RunRequest
from stepflow_mesh.runtime.engine import Runtime
from stepflow_mesh.runtime.errors import UserError
from stepflow_mesh.runtime.executor import RunObserver
from stepflow_mesh.runtime.model import parse_flow
from stepflow_mesh.runtime.state.base import StateStore
from stepflow_mesh.runtime.state.memory import MemoryStateStore
from stepflow_mesh.runtime.state.settings import DurabilitySettings
from stepflow_mesh.runtime.state.sqlite import SqliteStateStore

CHAIN = parse_flow(
    {
        "name": "chain",
        "steps": [
            {
                "id": f"s{i}",
                "component": "/builtin/noop",
                "input": {"v": i, "after": {"$step": f"s{i - 1}", "path": "v"} if i else None},
            }
            for i in range(8)
        ],
        "output": {f"s{i}": {"$step": f"s{i}", "path": "v"} for i in range(8)},
    }
)
EXPECTED = {f"s{i}": i for i in range(8)}


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    backend: StateStore = (
        MemoryStateStore() if request.param == "memory" else SqliteStateStore(tmp_path / "s.db")
    )
    await backend.open()
    yield backend
    await backend.close()


async def run_once(
    store: StateStore, settings: DurabilitySettings, blobs: MemoryBlobStore | None = None
) -> tuple[str, Any]:
    async with Runtime(default_config(Path.cwd()), blobs=blobs) as runtime:
        runner = DurableRunner(runtime, store, settings)
        outcome = await runner.start(RunRequest(CHAIN, [{}], {}, None, max_concurrency=1))
    return outcome.run_id, outcome


async def test_journal_shape_of_a_run(store: StateStore) -> None:
    run_id, outcome = await run_once(store, DurabilitySettings())
    assert outcome.results[0].value == EXPECTED
    types = [e.event["type"] for e in await store.read_journal(run_id)]
    assert types[0] == "root_run_created"
    assert types[-2:] == ["item_completed", "run_completed"]
    assert types.count("task_completed") == 8
    unblocked = [e.event["step_indices"] for e in await store.read_journal(run_id)
                 if e.event["type"] == "steps_unblocked"]  # fmt: skip
    assert unblocked == [[i] for i in range(1, 8)]  # each step of the chain, once its input is done
    started = [
        e.event for e in await store.read_journal(run_id) if e.event["type"] == "tasks_started"
    ]
    tasks = [t for e in started for group in e["runs"] for t in group["tasks"]]
    assert sorted(t["step_id"] for t in tasks) == sorted(f"s{i}" for i in range(8))
    assert all(t["attempt"] == 1 for t in tasks)
    record = await store.get_run(run_id)
    assert record is not None and record.status == "completed" and record.flow_name == "chain"
    assert record.max_concurrency == 1
    steps = await store.get_steps(run_id)
    assert [s.status for s in steps] == ["completed"] * 8
    assert await store.get_checkpoint(run_id) is None  # none written at the default interval


async def test_checkpoints_compact_the_journal_and_resume_from_them(
    store: StateStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Checkpoint every 3 entries, crash-free: the live journal keeps only the tail."""
    settings = DurabilitySettings(checkpoint_interval=3, compact_on_checkpoint=True)
    blobs = MemoryBlobStore()
    caplog.set_level(logging.INFO, logger="stepflow.journal")
    run_id, outcome = await run_once(store, settings, blobs)
    assert outcome.results[0].value == EXPECTED
    assert any("Checkpoint created for run" in r.message for r in caplog.records)
    entries = await store.read_journal(run_id)
    assert entries[0].event["type"] != "root_run_created"  # compacted away
    assert await store.get_checkpoint(run_id) is None  # deleted when the root completed


class DrainAfter(RunObserver):
    """Presses Ctrl-C (drains the runner) once `count` steps have completed."""

    def __init__(self, count: int, runner: DurableRunner) -> None:
        self.count = count
        self.runner = runner
        self.seen = 0

    async def tasks_completed(self, run: Any, item_index: int, finished: Any) -> None:
        self.seen += len(finished)
        if self.seen >= self.count:
            self.runner.drain()


async def test_resume_restores_from_checkpoint(
    store: StateStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A run interrupted mid-way resumes from its checkpoint plus the journal tail."""
    settings = DurabilitySettings(checkpoint_interval=2, compact_on_checkpoint=True)
    blobs = MemoryBlobStore()
    async with Runtime(default_config(Path.cwd()), blobs=blobs) as runtime:
        runner = DurableRunner(runtime, store, settings)

        observer = DrainAfter(4, runner)
        first = await runner.start(RunRequest(CHAIN, [{}], {}, None, 1), [observer])
        assert first.status == "interrupted"
        assert await store.get_checkpoint(first.run_id) is not None
        caplog.set_level(logging.INFO, logger="stepflow.durable")
        resumed = await runner.resume(first.run_id)
    assert resumed.status == "completed"
    assert resumed.results[0].value == EXPECTED
    assert any("Restoring from checkpoint at sequence" in r.message for r in caplog.records)
    completions = [
        e.event["step_id"]
        for e in await store.read_journal(first.run_id)
        if e.event["type"] == "task_completed"
    ]
    assert len(completions) == len(set(completions))  # nothing completed twice


async def test_retention_finalizes_finished_journals(store: StateStore) -> None:
    settings = DurabilitySettings(retention_secs=0)
    run_id, _ = await run_once(store, settings)
    async with Runtime(default_config(Path.cwd())) as runtime:
        runner = DurableRunner(runtime, store, settings)
        assert await runner.finalize_expired() == 1
        assert await runner.finalize_expired() == 0
    [final] = await store.read_journal(run_id)
    assert final.event["type"] == "run_completed"
    assert final.event["items"][0]["result"] == EXPECTED
    record = await store.get_run(run_id)
    assert record is not None and record.items[0].result == {
        "outcome": "success",
        "result": EXPECTED,
    }


async def test_a_live_owner_blocks_a_second_runner(store: StateStore) -> None:
    run_id = "01a2158a-0000-7000-8000-0000000000aa"
    assert await store.acquire_lease(run_id, "other-host:1:abc", 60) is None
    async with Runtime(default_config(Path.cwd())) as runtime:
        runner = DurableRunner(runtime, store)
        with pytest.raises(UserError, match="being executed by another process"):
            await runner.start(RunRequest(CHAIN, [{}], {}, None, 1), run_id=run_id)


async def test_a_dead_local_owner_is_taken_over(store: StateStore) -> None:
    """Same host, process gone (as after SIGKILL): resume need not wait for the lease TTL."""
    import socket
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_owner = f"{socket.gethostname()}:{gone.stdout.strip()}:dead"
    run_id = "01a2158a-0000-7000-8000-0000000000bb"
    assert await store.acquire_lease(run_id, dead_owner, 60) is None
    async with Runtime(default_config(Path.cwd())) as runtime:
        runner = DurableRunner(runtime, store)
        outcome = await runner.start(RunRequest(CHAIN, [{}], {}, None, 1), run_id=run_id)
    assert outcome.results[0].value == EXPECTED


class StartedSignal(RunObserver):
    """Sets an event when a given step has been dispatched."""

    def __init__(self, step_id: str) -> None:
        self.step_id = step_id
        self.started = asyncio.Event()

    async def tasks_started(self, run: Any, tasks: Any) -> None:
        if any(t.step_id == self.step_id for t in tasks):
            self.started.set()


async def test_cancel_stops_in_flight_steps_and_ends_the_tree_cancelled(
    store: StateStore,
) -> None:
    flow = parse_flow(
        {
            "name": "long",
            "steps": [
                {"id": "nap", "component": "/builtin/sleep", "input": {"duration_ms": 60000}},
                {"id": "after", "component": "/builtin/noop",
                 "input": {"x": {"$step": "nap"}}},
            ],
            "output": {"$step": "after"},
        }
    )  # fmt: skip
    signal = StartedSignal("nap")
    async with Runtime(default_config(Path.cwd())) as runtime:
        runner = DurableRunner(runtime, store)
        running = asyncio.create_task(
            runner.start(RunRequest(flow, [{}, {}], {}, None, 4), [signal])
        )
        await signal.started.wait()
        run_id = next(iter(runner.executions))
        assert await runner.cancel(run_id, "test")
        outcome = await asyncio.wait_for(running, 10)
    assert outcome.status == "cancelled"
    assert [r.error.code for r in outcome.results if r.error] == ["CANCELLED", "CANCELLED"]
    events = [e.event for e in await store.read_journal(run_id)]
    kinds = [e["type"] for e in events]
    assert kinds.index("run_cancel_requested") < kinds.index("run_completed")
    assert events[-1] == {"type": "run_completed", "run_id": run_id, "status": "cancelled"}
    assert not any(
        e["type"] == "tasks_started" and any(t["step_id"] == "after" for g in e["runs"]
                                             for t in g["tasks"])
        for e in events
    )  # fmt: skip
    record = await store.get_run(run_id)
    assert record is not None and record.status == "cancelled"
