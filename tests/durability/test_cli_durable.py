"""The durable CLI with real processes: Ctrl-C, `resume`, `runs list|show`, state locations, errors.

Every test runs the real `stepflow` entry point (harness.py adds the `recorder` test plugin type,
which logs each execution to a side file). Waits are on conditions with deadlines: the journal is
polled read-only, and stderr (redirected to a file) is polled for the messages a user would see.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .recorder_plugin import read_log

HARNESS = Path(__file__).resolve().parent / "harness.py"
DEADLINE_SECS = 30.0
RUN_ID_LINE = re.compile(r"^run_id: [0-9a-f]{32}$", re.MULTILINE)

# `nap` sleeps long enough for the test to interrupt it; `after` (the recorder) depends on it.
# A journalled `running` status is not enough to know the sleep has begun: a started step that has
# not reached its component when the drain begins is left in flight (executor.StepInterrupted).
# `mark` is dispatched in the same round right after `nap`, and asyncio runs tasks in creation
# order, so once `mark` has executed, `nap` is inside its component.
SLEEP_FLOW = """
name: sleepy
steps:
  - id: nap
    component: /builtin/sleep
    input: {duration_ms: 3000, passthrough: {$input: x}}
  - id: mark
    component: /test/record
    input: {name: mark, value: 0}
    mustExecute: true
  - id: after
    component: /test/record
    input: {name: after, value: {$step: nap, path: passthrough}}
output: {$step: after, path: value}
"""

# One recorder step that fails when the input says so (`fail_attempts: 1`, no retries). The long
# name makes `runs list` squeeze its table at 80 columns: the run ids must still be printed whole.
WORK_FLOW = """
name: nightly-review-digest-work
steps:
  - id: work
    component: /test/record
    input: {name: work, value: {$input: x}, fail_attempts: {$input: fail}}
output: {$step: work, path: value}
"""

# `one` reads a variable, `two` is overridden; `one` and `two` are independent (concurrency 1).
KNOBS_FLOW = """
name: knobs
schemas:
  type: object
  properties:
    variables:
      type: object
      properties:
        greeting: {type: string}
steps:
  - id: one
    component: /test/record
    input: {name: one, value: {$variable: greeting, default: unset}}
  - id: two
    component: /test/record
    input: {name: two, value: original}
  - id: three
    component: /test/record
    input:
      name: three
      value: {one: {$step: one, path: value}, two: {$step: two, path: value}}
output: {$step: three, path: value}
"""


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """Flows, a config routing `/test` to the recorder (logging to `executions.jsonl`)."""
    paths = {
        "sleep": tmp_path / "sleep.yaml",
        "work": tmp_path / "work.yaml",
        "knobs": tmp_path / "knobs.yaml",
        "config": tmp_path / "stepflow-config.yml",
        "log": tmp_path / "executions.jsonl",
        "state": tmp_path / "state",
        "db": tmp_path / "state" / "stepflow.db",
    }
    paths["sleep"].write_text(SLEEP_FLOW)
    paths["work"].write_text(WORK_FLOW)
    paths["knobs"].write_text(KNOBS_FLOW)
    paths["config"].write_text(
        "plugins:\n"
        "  builtin: {type: builtin}\n"
        f"  test: {{type: recorder, log: '{paths['log']}'}}\n"
        "routes:\n"
        '  "/builtin": [{plugin: builtin}]\n'
        '  "/test": [{plugin: test}]\n'
    )
    return paths


# -- processes ------------------------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    # COLUMNS: rich tables get a fixed, ordinary terminal width whatever runs the tests.
    return {**os.environ, "COLUMNS": "80", **extra}


def stepflow(args: list[Any], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HARNESS), *map(str, args)],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(**env),
    )


class Background:
    """A `stepflow` process whose stdout/stderr go to files, so the test can poll them."""

    def __init__(self, args: list[Any], cwd: Path, name: str) -> None:
        self.stdout_path = cwd / f"{name}.stdout"
        self.stderr_path = cwd / f"{name}.stderr"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(HARNESS), *map(str, args)],
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=child_env(),
            )

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        """Poll `condition` until it holds; fail at the deadline or if the process ends first."""
        deadline = time.monotonic() + DEADLINE_SECS
        while not condition():
            if self.proc.poll() is not None:
                pytest.fail(
                    f"process exited ({self.proc.returncode}) before {what}:\n{self.stderr}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}:\n{self.stderr}")
            time.sleep(0.02)

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)

    def wait(self) -> int:
        return self.proc.wait(timeout=DEADLINE_SECS)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_id_from(stderr: str) -> str:
    for line in stderr.splitlines():
        if line.startswith("run_id: "):
            run_id = line.split()[1]
            assert len(run_id) == 32 and int(run_id, 16) >= 0, line
            return run_id
    raise AssertionError(f"no run id printed:\n{stderr}")


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


def hyphenated(run_id: str) -> str:
    return str(uuid.UUID(run_id))


# -- reading the journal (read-only, while a writer may be running) -----------------------------


def query(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def step_status(db: Path, run_id: str, step_id: str) -> str | None:
    """The step's status in the metadata; None while the database or the row does not exist."""
    if not db.exists():
        return None
    try:
        rows = query(
            db, "SELECT status FROM steps WHERE run_id = ? AND step_id = ?", run_id, step_id
        )
    except sqlite3.OperationalError:  # opened before the schema was created
        return None
    return str(rows[0][0]) if rows else None


def journal(db: Path, run_id: str) -> list[dict[str, Any]]:
    rows = query(
        db,
        "SELECT event FROM journal WHERE root_run_id = ? ORDER BY sequence",
        hyphenated(run_id),
    )
    return [json.loads(row[0]) for row in rows]


def tasks_started(events: list[dict[str, Any]], step_id: str) -> list[tuple[int, str]]:
    """(attempt, task id) of every dispatch of `step_id`, in journal order."""
    return [
        (task["attempt"], task["task_id"])
        for event in events
        if event["type"] == "tasks_started"
        for run in event["runs"]
        for task in run["tasks"]
        if task["step_id"] == step_id
    ]


def completed_steps(events: list[dict[str, Any]]) -> list[str]:
    return [e["step_id"] for e in events if e["type"] == "task_completed"]


def show(run_id: str, files: dict[str, Path], cwd: Path) -> dict[str, Any]:
    done = stepflow(
        ["runs", "show", run_id, "--config", files["config"], "--state-dir", files["state"],
         "--format", "json"],
        cwd,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    body: dict[str, Any] = json.loads(done.stdout)
    return body


def steps_by_id(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["stepId"]: s for s in body["steps"] if s["stepId"]}


def start_sleep_run(files: dict[str, Path], cwd: Path, x: int) -> tuple[Background, str]:
    """Start the sleep flow; return once its sleep is executing and `mark` is journalled done."""
    proc = Background(
        ["run", "--flow", files["sleep"], "--config", files["config"],
         "--input-json", json.dumps({"x": x}), "--state-dir", files["state"]],
        cwd,
        "run",
    )  # fmt: skip
    try:
        proc.wait_until(lambda: RUN_ID_LINE.search(proc.stderr) is not None, "the run id")
        run_id = run_id_from(proc.stderr)
        proc.wait_until(
            lambda: step_status(files["db"], hyphenated(run_id), "mark") == "completed",
            "the marker step to complete",
        )
    except BaseException:
        proc.kill()
        raise
    assert step_status(files["db"], hyphenated(run_id), "nap") == "running"
    assert logged_steps(files) == ["mark"]
    return proc, run_id


def logged_steps(files: dict[str, Path]) -> list[str]:
    """The steps the recorder executed, in order."""
    return [line["step"] for line in read_log(str(files["log"]))]


def resume_hint(run_id: str) -> str:
    return f"Run {run_id} interrupted; continue it with: stepflow resume {run_id}"


# -- Ctrl-C ----------------------------------------------------------------------------------


def test_ctrl_c_drains_in_flight_step_then_resume_finishes(
    files: dict[str, Path], tmp_path: Path
) -> None:
    proc, run_id = start_sleep_run(files, tmp_path, x=7)
    try:
        proc.interrupt()
        code = proc.wait()
    finally:
        proc.kill()
    stderr = proc.stderr
    assert code == 130, stderr
    assert resume_hint(run_id) in stderr
    assert "Traceback" not in stderr
    assert proc.stdout == ""  # no result: the run is not finished

    # The drain let the sleep finish and journalled it; nothing new was dispatched.
    events = journal(files["db"], run_id)
    assert sorted(completed_steps(events)) == ["mark", "nap"]
    assert tasks_started(events, "after") == []
    assert not [e for e in events if e["type"] in ("item_completed", "run_completed")]
    assert logged_steps(files) == ["mark"]  # `after` never started
    body = show(run_id, files, tmp_path)
    assert body["status"] == "running"
    assert body["items"] == [{"itemIndex": 0, "status": "running", "result": None}]
    nap = steps_by_id(body)["nap"]
    assert (nap["status"], nap["attempts"], nap["result"]["passthrough"]) == ("completed", 1, 7)

    resumed = stepflow(
        ["resume", run_id, "--config", files["config"], "--state-dir", files["state"]], tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == {"outcome": "success", "result": 7}
    assert f"run_id: {run_id} (completed)" in resumed.stderr
    [_, after] = read_log(str(files["log"]))
    assert (after["step"], after["run_id"], after["attempt"]) == ("after", hyphenated(run_id), 1)
    body = show(run_id, files, tmp_path)
    assert body["status"] == "completed"
    steps = steps_by_id(body)
    assert steps["nap"]["attempts"] == 1  # completed before the interrupt: not run again
    assert (steps["after"]["status"], steps["after"]["attempts"]) == ("completed", 1)
    assert tasks_started(journal(files["db"], run_id), "nap") == tasks_started(events, "nap")


def test_ctrl_c_twice_stops_at_once_and_resume_redispatches_the_same_task(
    files: dict[str, Path], tmp_path: Path
) -> None:
    proc, run_id = start_sleep_run(files, tmp_path, x=9)
    try:
        proc.interrupt()
        # A second SIGINT sent before the first is handled would merge with it (POSIX signals
        # do not queue): press again only once the CLI has acknowledged the first one.
        proc.wait_until(lambda: "Ctrl-C again to stop now" in proc.stderr, "the drain message")
        proc.interrupt()
        code = proc.wait()
    finally:
        proc.kill()
    stderr = proc.stderr
    assert code == 130, stderr
    assert resume_hint(run_id) in stderr
    assert "Traceback" not in stderr

    # Stopped at once: the sleep never completed, it is still in flight in the journal.
    events = journal(files["db"], run_id)
    assert completed_steps(events) == ["mark"]
    [(attempt, task_id)] = tasks_started(events, "nap")
    assert attempt == 1
    body = show(run_id, files, tmp_path)
    assert body["status"] == "running"
    nap = steps_by_id(body)["nap"]
    assert (nap["status"], nap["attempts"], nap["taskId"]) == ("running", 1, task_id)
    assert logged_steps(files) == ["mark"]

    resumed = stepflow(
        ["resume", run_id, "--config", files["config"], "--state-dir", files["state"]], tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == {"outcome": "success", "result": 9}
    # Re-dispatched under its old task id (idempotency key), as attempt 2.
    assert tasks_started(journal(files["db"], run_id), "nap") == [(1, task_id), (2, task_id)]
    steps = steps_by_id(show(run_id, files, tmp_path))
    assert (steps["nap"]["status"], steps["nap"]["attempts"]) == ("completed", 2)
    assert steps["nap"]["taskId"] == task_id
    assert logged_steps(files) == ["mark", "after"]  # `mark` was journalled: not run again


# -- runs list / show ------------------------------------------------------------------------


def test_runs_list_and_show(files: dict[str, Path], tmp_path: Path) -> None:
    def run(x: int, fail: int) -> subprocess.CompletedProcess[str]:
        return stepflow(
            ["run", "--flow", files["work"], "--config", files["config"],
             "--input-json", json.dumps({"x": x, "fail": fail}), "--state-dir", files["state"]],
            tmp_path,
        )  # fmt: skip

    ok = run(1, 0)
    assert ok.returncode == 0, ok.stderr
    bad = run(2, 1)
    assert bad.returncode == 1, bad.stderr
    ok_id, bad_id = run_id_from(ok.stderr), run_id_from(bad.stderr)
    base = ["--config", files["config"], "--state-dir", files["state"]]

    listed = stepflow(["runs", "list", *base, "--format", "json"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["runId"] for r in rows] == [hyphenated(bad_id), hyphenated(ok_id)]  # newest first
    for row in rows:
        assert {"runId", "flowName", "status", "createdAt", "itemCount"} <= row.keys()
        assert (row["flowName"], row["itemCount"]) == ("nightly-review-digest-work", 1)
        assert row["createdAt"].endswith("Z")
    assert [r["status"] for r in rows] == ["failed", "completed"]
    assert rows[0]["createdAt"] >= rows[1]["createdAt"]

    failed = stepflow(["runs", "list", *base, "--format", "json", "--status", "failed"], tmp_path)
    assert failed.returncode == 0, failed.stderr
    assert [r["runId"] for r in json.loads(failed.stdout)] == [hyphenated(bad_id)]
    limited = stepflow(["runs", "list", *base, "--format", "json", "--limit", "1"], tmp_path)
    assert [r["runId"] for r in json.loads(limited.stdout)] == [hyphenated(bad_id)]

    body = show(bad_id, files, tmp_path)
    assert (body["runId"], body["status"]) == (hyphenated(bad_id), "failed")
    [item] = body["items"]
    assert (item["itemIndex"], item["status"]) == (0, "failed")
    assert item["result"]["outcome"] == "failed"
    [step] = body["steps"]
    assert {k: step[k] for k in ("stepId", "itemIndex", "status", "attempts")} == {
        "stepId": "work",
        "itemIndex": 0,
        "status": "failed",
        "attempts": 1,
    }
    assert step["error"] == {"code": "COMPONENT_FAILED", "message": "planned failure of attempt 1"}
    good = show(ok_id, files, tmp_path)
    assert good["status"] == "completed"
    assert good["items"][0]["result"] == {"outcome": "success", "result": 1}
    assert steps_by_id(good)["work"]["result"] == {"name": "work", "value": 1}

    # Table format: the full 32-digit id a user copies into `stepflow resume`.
    table = stepflow(["runs", "list", *base], tmp_path)
    assert table.returncode == 0, table.stderr
    assert ok_id in table.stdout and bad_id in table.stdout
    assert "failed" in table.stdout and "completed" in table.stdout
    shown = stepflow(["runs", "show", bad_id, *base], tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert bad_id in shown.stdout
    assert "COMPONENT_FAILED" in shown.stdout


# -- unusable state ---------------------------------------------------------------------------


def test_corrupt_database_is_one_clear_error(files: dict[str, Path], tmp_path: Path) -> None:
    db = tmp_path / ".stepflow" / "stepflow.db"
    db.parent.mkdir()
    garbage = bytes(range(256)) * 16
    db.write_bytes(garbage)
    done = stepflow(
        ["run", "--flow", files["work"], "--config", files["config"],
         "--input-json", '{"x": 1, "fail": 0}'],
        tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    [line] = error_lines(done.stderr)
    assert str(db.resolve()) in line
    assert "not a SQLite database or is corrupt" in line
    assert done.stdout == ""
    assert read_log(str(files["log"])) == []  # no step ran
    assert db.read_bytes() == garbage  # the user's file is left alone


def test_unwritable_state_dir_is_one_clear_error(files: dict[str, Path], tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root bypasses file permissions, so a read-only directory is writable")
    state = tmp_path / "readonly"
    state.mkdir()
    state.chmod(0o500)
    try:
        done = stepflow(
            ["run", "--flow", files["work"], "--config", files["config"],
             "--input-json", '{"x": 1, "fail": 0}', "--state-dir", state],
            tmp_path,
        )  # fmt: skip
    finally:
        state.chmod(0o700)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    [line] = error_lines(done.stderr)
    assert str(state.resolve() / "stepflow.db") in line
    assert "not writable" in line
    assert read_log(str(files["log"])) == []


def test_state_dir_that_cannot_be_created_is_one_clear_error(
    files: dict[str, Path], tmp_path: Path
) -> None:
    """Like the unwritable directory, but also meaningful as root: its parent is a file."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    state = blocker / "state"
    done = stepflow(
        ["run", "--flow", files["work"], "--config", files["config"],
         "--input-json", '{"x": 1, "fail": 0}', "--state-dir", state],
        tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    [line] = error_lines(done.stderr)
    assert "cannot create the state directory" in line
    assert str(state.resolve()) in line
    assert read_log(str(files["log"])) == []


# -- resume errors and finished runs -------------------------------------------------------------


def test_resume_unknown_and_malformed_run_ids(files: dict[str, Path], tmp_path: Path) -> None:
    base = ["--config", files["config"], "--state-dir", files["state"]]
    unknown = uuid.uuid4().hex
    done = stepflow(["resume", unknown, *base], tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    [line] = error_lines(done.stderr)
    assert f"no run with id {hyphenated(unknown)}" in line

    done = stepflow(["resume", "not-a-run-id", *base], tmp_path)
    assert done.returncode == 1, done.stderr
    [line] = error_lines(done.stderr)
    assert "not a run id" in line and "not-a-run-id" in line
    assert read_log(str(files["log"])) == []


def test_resume_of_a_completed_run_prints_its_result(
    files: dict[str, Path], tmp_path: Path
) -> None:
    first = stepflow(
        ["run", "--flow", files["work"], "--config", files["config"],
         "--input-json", '{"x": 5, "fail": 0}', "--state-dir", files["state"]],
        tmp_path,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    run_id = run_id_from(first.stderr)
    log_before = read_log(str(files["log"]))
    assert len(log_before) == 1

    output = tmp_path / "again.json"
    again = stepflow(
        ["resume", hyphenated(run_id), "--config", files["config"],
         "--state-dir", files["state"], "--output", output],
        tmp_path,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert f"run_id: {run_id} (completed)" in again.stderr
    expected = {"outcome": "success", "result": 5}
    assert json.loads(first.stdout) == expected
    assert json.loads(output.read_text()) == expected
    assert read_log(str(files["log"])) == log_before  # nothing executed again


# -- where state goes -----------------------------------------------------------------------


def test_in_memory_writes_nothing_to_the_cwd(files: dict[str, Path], tmp_path: Path) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    done = stepflow(
        ["run", "--flow", files["work"], "--config", files["config"],
         "--input-json", '{"x": 3, "fail": 0}', "--in-memory"],
        work,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"outcome": "success", "result": 3}
    run_id_from(done.stderr)
    assert not (work / ".stepflow").exists()
    assert list(work.iterdir()) == []
    assert not files["state"].exists()


def test_default_state_location_is_dot_stepflow_in_the_cwd(
    files: dict[str, Path], tmp_path: Path
) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    done = stepflow(
        ["run", "--flow", files["work"], "--config", files["config"],
         "--input-json", '{"x": 4, "fail": 0}'],
        work,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    run_id = run_id_from(done.stderr)
    db = work / ".stepflow" / "stepflow.db"
    assert db.is_file()
    assert journal(db, run_id)[0]["type"] == "root_run_created"
    listed = stepflow(["runs", "list", "--config", files["config"], "--format", "json"], work)
    assert listed.returncode == 0, listed.stderr
    assert [r["runId"] for r in json.loads(listed.stdout)] == [hyphenated(run_id)]


# -- what a resume must remember ------------------------------------------------------------------


def test_variables_overrides_and_max_concurrency_survive_resume(
    files: dict[str, Path], tmp_path: Path
) -> None:
    variables = {"greeting": "hi"}
    overrides = {"steps": {"two": {"value": {"input": {"value": "overridden"}}}}}

    def run(state: Path, **env: str) -> subprocess.CompletedProcess[str]:
        return stepflow(
            ["run", "--flow", files["knobs"], "--config", files["config"], "--input-json", "{}",
             "--variables-json", json.dumps(variables),
             "--overrides-json", json.dumps(overrides),
             "--max-concurrency", "1", "--state-dir", state],
            tmp_path,
            **env,
        )  # fmt: skip

    baseline = run(tmp_path / "baseline")
    assert baseline.returncode == 0, baseline.stderr
    expected = json.loads(baseline.stdout)
    assert expected == {"outcome": "success", "result": {"one": "hi", "two": "overridden"}}
    events = journal(tmp_path / "baseline" / "stepflow.db", run_id_from(baseline.stderr))
    first_completion = 1 + [e["type"] for e in events].index("task_completed")

    # Dies (SIGKILL) right after the first step's completion is durable.
    crashed = run(
        files["state"],
        STEPFLOW_FAULT_KILL_AFTER_EVENTS=str(first_completion),
        RECORDER_GENERATION="crashed",
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    run_id = run_id_from(crashed.stderr)
    events = journal(files["db"], run_id)
    [created] = [e for e in events if e["type"] == "root_run_created"]
    assert created["variables"] == variables
    assert created["overrides"] == overrides
    assert created["max_concurrency"] == 1
    done_before = set(completed_steps(events))
    assert done_before and "three" not in done_before
    assert not [e for e in events if e["type"] == "item_completed"]

    resumed = stepflow(
        ["resume", run_id, "--config", files["config"], "--state-dir", files["state"]],
        tmp_path,
        RECORDER_GENERATION="resumed",
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == expected
    log = read_log(str(files["log"]))
    again = [x["step"] for x in log if x["generation"] == "resumed"]
    assert not done_before & set(again), again
    assert sorted(again) == sorted({"one", "two", "three"} - done_before)
