"""Crash tests with real processes (issue 3 acceptance).

The CLI runs the scenario and SIGKILLs itself right after its N-th durable journal event
(`STEPFLOW_FAULT_KILL_AFTER_EVENTS`), i.e. between a write and the action it precedes. A second
process resumes the run. The final results must equal an uninterrupted run's, and no step whose
completion was journalled before the crash may execute again.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from stepflow_mesh.runtime.state.sqlite import SqliteStateStore

from .recorder_plugin import read_log
from .scenario import write_scenario

HARNESS = Path(__file__).resolve().parent / "harness.py"


def stepflow(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HARNESS), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def run_args(paths: dict[str, Path], output: Path) -> list[str]:
    return [
        "run", "--flow", str(paths["flow"]), "--config", str(paths["config"]),
        "--inputs", str(paths["inputs"]), "--state-dir", str(paths["state"]),
        "--output", str(output),
    ]  # fmt: skip


def run_id_from(stderr: str) -> str:
    for line in stderr.splitlines():
        if line.startswith("run_id: "):
            return line.split()[1]
    raise AssertionError(f"no run id printed:\n{stderr}")


def journal_of(state: Path, run_id: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        store = SqliteStateStore(state / "stepflow.db")
        await store.open()
        try:
            root = (await store.list_runs())[0].root_run_id
            assert root.replace("-", "") == run_id
            return [e.event for e in await store.read_journal(root)]
        finally:
            await store.close()

    return asyncio.run(read())


def completed_keys(events: list[dict[str, Any]]) -> set[tuple[str, int, str]]:
    return {
        (e["run_id"], e["item_index"], e["step_id"])
        for e in events
        if e["type"] == "task_completed"
    }


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One uninterrupted run: its results and how many journal events it writes."""
    directory = tmp_path_factory.mktemp("baseline")
    paths = write_scenario(directory)
    output = directory / "out.jsonl"
    proc = stepflow(run_args(paths, output), directory)
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line) for line in output.read_text().splitlines()]
    assert all(r["outcome"] == "success" for r in results), results
    events = journal_of(paths["state"], run_id_from(proc.stderr))
    return {"results": results, "events": len(events)}


def kill_points(total: int, count: int = 12) -> list[int]:
    """Spread over the whole run, always including the first and the last-but-one event."""
    points = {1, max(1, total - 1)}
    points.update(1 + (total - 2) * i // (count - 1) for i in range(count))
    return sorted(p for p in points if 1 <= p < total)


def test_baseline_covers_every_feature(baseline: dict[str, Any]) -> None:
    [first, second] = baseline["results"]
    assert first["result"]["nested"] == {"outcome": "success", "result": 3}
    assert [r["result"] for r in first["result"]["fan"]] == [1, 2, 30]
    assert [r["result"] for r in second["result"]["fan"]] == [10, 2, 30]
    assert baseline["events"] > 20


def test_sigkill_at_many_points_then_resume(baseline: dict[str, Any], tmp_path: Path) -> None:
    failures = []
    for point in kill_points(baseline["events"]):
        directory = tmp_path / f"kill-{point}"
        directory.mkdir()
        paths = write_scenario(directory)
        crashed = stepflow(
            run_args(paths, directory / "crashed.jsonl"),
            directory,
            STEPFLOW_FAULT_KILL_AFTER_EVENTS=str(point),
            RECORDER_GENERATION="crashed",
        )
        assert crashed.returncode == -9, (point, crashed.stderr)
        run_id = run_id_from(crashed.stderr)
        done_before = completed_keys(journal_of(paths["state"], run_id))

        output = directory / "resumed.jsonl"
        resumed = stepflow(
            ["resume", run_id, "--config", str(paths["config"]),
             "--state-dir", str(paths["state"]), "--output", str(output)],
            directory,
            RECORDER_GENERATION="resumed",
        )  # fmt: skip
        assert resumed.returncode == 0, (point, resumed.stderr)
        results = [json.loads(line) for line in output.read_text().splitlines()]
        if results != baseline["results"]:
            failures.append((point, "results differ", results))
        log = read_log(str(paths["log"]))
        rerun = [
            line
            for line in log
            if line["generation"] == "resumed"
            and (line["run_id"], line["item"], line["step"]) in done_before
        ]
        if rerun:
            failures.append((point, "journalled steps executed again", rerun))
        ran_before = {
            (x["run_id"], x["item"], x["step"]) for x in log if x["generation"] == "crashed"
        }
        recorded = {k for k in done_before if k[2] in ("a", "b", "m", "inner", "last")}
        if not recorded <= ran_before:
            failures.append((point, "journal claims executions that never happened", recorded))
    assert not failures, failures
