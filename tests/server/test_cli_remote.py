"""`stepflow submit` and `stepflow runs ... --url` as subprocesses against a real `stepflow serve`.

A scripted in-process gRPC node covers what a real node cannot show deterministically: the client
polling after its first wait ran out, events arriving live, and a node without CancelRun or
GetRunEvents (UNIMPLEMENTED).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from stepflow_mesh.runtime._pb.stepflow.v1 import (
    common_pb2,
    flows_pb2,
    flows_pb2_grpc,
    runs_pb2,
    runs_pb2_grpc,
)
from stepflow_mesh.runtime.worker_api.convert import to_value

STEPFLOW = Path(sys.executable).parent / "stepflow"
DEADLINE_SECS = 60.0

FLOW = """\
name: remote-cli
schemas:
  type: object
  properties:
    variables:
      type: object
      properties:
        greeting: {type: string, default: hello}
steps:
  - id: pause
    component: /builtin/sleep
    input:
      duration_ms: {$input: ms}
  - id: greet
    component: /builtin/create_messages
    input:
      user_prompt: {$variable: greeting}
  - id: echo
    component: /builtin/noop
    input:
      x: {$input: x}
output:
  slept: {$step: pause, path: duration_ms}
  messages: {$step: greet, path: messages}
  echo: {$step: echo}
"""


def expected(ms: int, x: Any, greeting: str = "hello") -> dict[str, Any]:
    return {
        "outcome": "success",
        "result": {
            "slept": ms,
            "messages": [{"role": "user", "content": greeting}],
            "echo": {"x": x},
        },
    }


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("STEPFLOW_URL", None)
    return env


class Node:
    """A `stepflow serve` subprocess with builtins only (no config file in its directory)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.state = workdir / "state"
        self.proc = subprocess.Popen(
            [str(STEPFLOW), "serve", "--port", "0", "--state-dir", str(self.state)],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=open(workdir / "node.log", "a"),  # noqa: SIM115 - closed with the process
            text=True,
            env=_env(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, (workdir / "node.log").read_text()
        self.port = int(json.loads(line)["port"])  # other keys (e.g. httpPort) are ignored
        self.url = f"localhost:{self.port}"

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


class Cli:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.flow = workdir / "flow.yaml"
        self.flow.write_text(FLOW)

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(STEPFLOW), *args],
            cwd=self.workdir,
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=120,
            env=_env(),
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def json(self, *args: str) -> Any:
        done = self(*args)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    process = Node(tmp_path_factory.mktemp("node"))
    yield process
    assert process.stop() == 0


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def until(probe: Callable[[], Any], what: str) -> Any:
    """Poll `probe` until it returns something truthy (no fixed sleeps decide a test)."""
    deadline = time.monotonic() + DEADLINE_SECS
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def run_id_from(stderr: str) -> str:
    match = re.search(r"^run_id: ([0-9a-f]{32})$", stderr, re.MULTILINE)
    assert match, stderr
    return match.group(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- submit against a real node ------------------------------------------------------------


def test_submit_single_input_text(node: Node, cli: Cli) -> None:
    done = cli(
        "submit", "--url", node.url, "--flow", str(cli.flow), "--input-json", '{"ms":1,"x":7}'
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == expected(1, 7)
    assert not done.stdout.endswith("\n")  # like `run`: compact JSON, no trailing newline
    run_id_from(done.stderr)


def test_submit_json_format_http_url_variables_overrides_and_output(node: Node, cli: Cli) -> None:
    out = cli.workdir / "result.json"
    overrides = {"steps": {"echo": {"value": {"input": {"x": "overridden"}}}}}
    done = cli(
        "submit", "--url", f"http://127.0.0.1:{node.port}", "--flow", str(cli.flow),
        "--input-json", '{"ms":2,"x":1}', "--format", "json", "--output", str(out),
        "--variables-json", '{"greeting":"hi"}', "--overrides-json", json.dumps(overrides),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert json.loads(out.read_text()) == expected(2, "overridden", greeting="hi")


@pytest.mark.parametrize(
    "form",
    ["input-json-file", "input-yaml-file", "input-json", "input-yaml", "stdin-json", "stdin-yaml"],
)
def test_submit_accepts_every_input_form_of_run(node: Node, cli: Cli, form: str) -> None:
    args: list[str] = []
    stdin = None
    if form == "input-json-file":
        (cli.workdir / "in.json").write_text('{"ms": 1, "x": "f"}')
        args = ["--input", str(cli.workdir / "in.json")]
    elif form == "input-yaml-file":
        (cli.workdir / "in.yaml").write_text("ms: 1\nx: f\n")
        args = ["--input", str(cli.workdir / "in.yaml")]
    elif form == "input-json":
        args = ["--input-json", '{"ms": 1, "x": "f"}']
    elif form == "input-yaml":
        args = ["--input-yaml", "{ms: 1, x: f}"]
    elif form == "stdin-json":
        stdin = '{"ms": 1, "x": "f"}'
    else:
        args, stdin = ["--stdin-format", "yaml"], "ms: 1\nx: f\n"
    done = cli("submit", "--url", node.url, "--flow", str(cli.flow), *args, stdin=stdin)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == expected(1, "f")


def test_submit_batch_from_jsonl(node: Node, cli: Cli) -> None:
    inputs = cli.workdir / "inputs.jsonl"
    inputs.write_text('{"ms":3,"x":0}\n\n{"ms":-1,"x":1}\n{"ms":1,"x":2}\n')
    done = cli("submit", "--url", node.url, "--flow", str(cli.flow), "--inputs", str(inputs))
    assert done.returncode == 0, done.stderr  # a batch exits 0 once every item has a result
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[0] == expected(3, 0) and lines[2] == expected(1, 2)
    assert lines[1]["outcome"] == "failed"
    assert lines[1]["error"]["code"] == "INVALID_INPUT"
    assert "Submitting batch with 3 inputs" in done.stderr
    assert "Batch execution completed with 3 results" in done.stderr

    out = cli.workdir / "results.jsonl"
    again = cli(
        "submit", "--url", node.url, "--flow", str(cli.flow), "--inputs", str(inputs),
        "--output", str(out),
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert out.read_text() == done.stdout
    assert f'Results written to "{out}"' in again.stderr


def test_submit_empty_batch_submits_nothing(node: Node, cli: Cli) -> None:
    (cli.workdir / "empty.jsonl").write_text("\n")
    out = cli.workdir / "out.jsonl"
    done = cli(
        "submit", "--url", node.url, "--flow", str(cli.flow), "--inputs", "empty.jsonl",
        "--output", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "No inputs provided, nothing to submit" in done.stderr
    assert out.read_text() == ""


def test_failing_flow_exits_1_with_the_failed_result(node: Node, cli: Cli) -> None:
    done = cli(
        "submit", "--url", node.url, "--flow", str(cli.flow), "--input-json", '{"ms":-5,"x":1}'
    )
    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert result["outcome"] == "failed"
    assert result["error"]["code"] == "INVALID_INPUT"
    assert "must not be negative" in result["error"]["message"]


def test_no_wait_json_then_runs_show_until_completed(node: Node, cli: Cli) -> None:
    done = cli(
        "submit", "--url", node.url, "--flow", str(cli.flow), "--input-json", '{"ms":300,"x":3}',
        "--no-wait", "--format", "json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert list(answer) == ["runId"]
    run_id = answer["runId"]

    def completed() -> Any:
        body = cli.json("runs", "show", run_id, "--url", node.url, "--format", "json")
        return body if body["status"] != "running" else None

    body = until(completed, "the run to finish")
    assert body["status"] == "completed" and body["runId"] == run_id
    assert body["itemCount"] == 1 and body["itemsCompleted"] == 1
    assert body["items"] == [{"itemIndex": 0, "status": "completed", "result": expected(300, 3)}]
    assert {s["stepId"] for s in body["steps"]} == {"pause", "greet", "echo"}
    assert all(s["status"] == "completed" and s["attempts"] is None for s in body["steps"])

    # The same JSON shape as `runs show` over the node's own journal; the wire has no attempt
    # counts or task ids, so only those differ.
    local = cli.json(
        "runs", "show", run_id.replace("-", ""), "--state-dir", str(node.state), "--format", "json"
    )
    for step in local["steps"]:
        assert step.pop("attempts") == 1
        step.pop("taskId", None)
    for step in body["steps"]:
        step.pop("attempts")
    assert body == local

    text = cli("runs", "show", run_id, "--url", node.url)
    assert text.returncode == 0 and run_id.replace("-", "") in text.stdout


def test_no_wait_text_prints_the_run_id_on_stderr(node: Node, cli: Cli) -> None:
    done = cli(
        "submit", "--url", node.url, "--flow", str(cli.flow), "--input-json", '{"ms":1,"x":1}',
        "--no-wait",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    run_id = run_id_from(done.stderr)
    until(
        lambda: (
            cli.json("runs", "show", run_id, "--url", node.url, "--format", "json")["status"]
            == "completed"
        ),
        "the run to complete",
    )


def test_wait_timeout_is_an_error_naming_the_run(node: Node, cli: Cli) -> None:
    done = cli(
        "submit", "--url", node.url, "--flow", str(cli.flow), "--input-json", '{"ms":3000,"x":1}',
        "--timeout", "1",
    )  # fmt: skip
    assert done.returncode == 1
    run_id = run_id_from(done.stderr)
    assert f"run {run_id} is still running after 1 s" in done.stderr


# --- runs list/show/cancel/watch against a real node --------------------------------------


def test_runs_list_newest_first_same_shape_as_local(tmp_path: Path) -> None:
    node = Node(tmp_path)  # its own node: every run in it is ours and finished
    try:
        cli = Cli(tmp_path)
        ids = []
        for x in range(3):
            done = cli(
                "submit", "--url", node.url, "--flow", str(cli.flow),
                "--input-json", json.dumps({"ms": 1, "x": x}),
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            ids.append(run_id_from(done.stderr))
        rows = cli.json("runs", "list", "--url", node.url, "--format", "json")
        assert [r["runId"].replace("-", "") for r in rows] == ids[::-1]
        assert [r["createdAt"] for r in rows] == sorted(
            (r["createdAt"] for r in rows), reverse=True
        )
        assert all(r["status"] == "completed" and r["flowName"] == "remote-cli" for r in rows)
        local = cli.json("runs", "list", "--state-dir", str(node.state), "--format", "json")
        assert rows == local

        limited = cli.json("runs", "list", "--url", node.url, "--format", "json", "--limit", "1")
        assert [r["runId"] for r in limited] == [rows[0]["runId"]]
        failed = cli.json(
            "runs", "list", "--url", node.url, "--format", "json", "--status", "failed"
        )
        assert failed == []
        table = cli("runs", "list", "--url", node.url)
        assert table.returncode == 0 and all(i in table.stdout for i in ids)
    finally:
        assert node.stop() == 0


def test_runs_cancel(node: Node, cli: Cli) -> None:
    done = cli(
        "submit", "--url", node.url, "--flow", str(cli.flow), "--input-json", '{"ms":30000,"x":1}',
        "--no-wait", "--format", "json",
    )  # fmt: skip
    run_id = json.loads(done.stdout)["runId"]
    cancelled = cli("runs", "cancel", run_id, "--url", node.url, "--format", "json")
    if cancelled.returncode == 1 and "does not support CancelRun" in cancelled.stderr:
        pytest.skip("this node has no CancelRun yet (the clear error is what we print)")
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["runId"] == run_id
    until(
        lambda: (
            cli.json("runs", "show", run_id, "--url", node.url, "--format", "json")["status"]
            == "cancelled"
        ),
        "the run to be cancelled",
    )


def test_runs_watch_replays_a_finished_run(node: Node, cli: Cli) -> None:
    done = cli(
        "submit", "--url", node.url, "--flow", str(cli.flow), "--input-json", '{"ms":1,"x":1}'
    )
    run_id = run_id_from(done.stderr)
    watched = cli("runs", "watch", run_id, "--url", node.url, "--format", "json")
    if watched.returncode == 1 and "does not support GetRunEvents" in watched.stderr:
        pytest.skip("this node has no GetRunEvents yet (the clear error is what we print)")
    assert watched.returncode == 0, watched.stderr
    events = [json.loads(line) for line in watched.stdout.splitlines()]
    assert events[-1]["event"] == "run_completed" and events[-1]["status"] == "completed"
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    finished = {e["stepId"] for e in events if e["event"] == "step_completed"}
    assert finished == {"pause", "greet", "echo"}

    text = cli("runs", "watch", run_id, "--url", node.url)
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[-1].endswith("run_completed status=completed")


# --- errors ---------------------------------------------------------------------------------


def test_unreachable_node_is_one_clear_line(cli: Cli) -> None:
    port = free_port()
    for url, args in (
        (f"127.0.0.1:{port}", ["submit", "--flow", str(cli.flow), "--input-json", "{}"]),
        (f"http://127.0.0.1:{port}", ["runs", "list"]),
        (f"127.0.0.1:{port}", ["runs", "show", "0" * 32]),
        (f"127.0.0.1:{port}", ["runs", "watch", "0" * 32]),
    ):
        done = cli(*args, "--url", url)
        assert done.returncode == 1
        assert done.stderr == f"Error: cannot reach stepflow node at {url}\n"


def test_stepflow_url_env_and_bad_urls(cli: Cli) -> None:
    port = free_port()
    done = subprocess.run(
        [str(STEPFLOW), "runs", "watch", "0" * 32],
        cwd=cli.workdir, capture_output=True, text=True, timeout=60,
        env={**_env(), "STEPFLOW_URL": f"127.0.0.1:{port}"},
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == f"Error: cannot reach stepflow node at 127.0.0.1:{port}\n"
    local = subprocess.run(
        [str(STEPFLOW), "runs", "list", "--format", "json"],
        cwd=cli.workdir, capture_output=True, text=True, timeout=60,
        env={**_env(), "STEPFLOW_URL": f"127.0.0.1:{port}"},
    )  # fmt: skip
    assert local.returncode == 0, local.stderr  # `runs list` stays local without --url

    bad = cli("runs", "list", "--url", "ftp://example.com:1")
    assert bad.returncode == 1 and "unsupported URL scheme 'ftp'" in bad.stderr


def test_bad_flow_files_are_named(node: Node, cli: Cli) -> None:
    missing = cli("submit", "--url", node.url, "--flow", "nope.yaml", "--input-json", "{}")
    assert missing.returncode == 1
    assert "nope.yaml" in missing.stderr

    broken = cli.workdir / "broken.yaml"
    broken.write_text("steps: {not: a list}\n")
    done = cli("submit", "--url", node.url, "--flow", str(broken), "--input-json", "{}")
    assert done.returncode == 1
    assert str(broken) in done.stderr and "steps" in done.stderr

    invalid = cli.workdir / "invalid.yaml"
    invalid.write_text(
        "steps:\n  - id: a\n    component: /builtin/noop\n    input: {$step: ghost}\n"
        "output: {$step: a}\n"
    )
    done = cli("submit", "--url", node.url, "--flow", str(invalid), "--input-json", "{}")
    assert done.returncode == 1
    assert "ghost" in done.stderr
    assert f"{invalid}: validation failed on the node at {node.url}" in done.stderr


def test_unknown_run_id(node: Node, cli: Cli) -> None:
    done = cli("runs", "show", "0" * 32, "--url", node.url)
    assert done.returncode == 1
    assert done.stderr.startswith("Error: run 00000000-0000-0000-0000-000000000000 not found")
    assert cli("runs", "show", "xyz", "--url", node.url).returncode == 1


# --- a scripted node -----------------------------------------------------------------------

RUN_ID = "01a215b4-0000-7000-8000-000000000001"
FLOW_ID = "f" * 64


def _summary(status: int) -> Any:
    summary = runs_pb2.RunSummary(run_id=RUN_ID, flow_id=FLOW_ID, status=status)
    summary.root_run_id = RUN_ID
    summary.items.total = 1
    summary.created_at.FromJsonString("2030-01-01T00:00:00.000001Z")
    return summary


class ScriptedFlows(flows_pb2_grpc.FlowsServiceServicer):
    def StoreFlow(self, request: Any, context: Any) -> Any:
        return flows_pb2.StoreFlowResponse(flow_id=FLOW_ID, stored=True)


class ScriptedRuns(runs_pb2_grpc.RunsServiceServicer):
    """CreateRun's wait runs out; GetRun reports the run running, then completed. Events: two,
    then nothing until the test releases the rest. CancelRun is not implemented."""

    def __init__(self, events: bool) -> None:
        self.events = events
        self.get_runs = 0
        self.release = threading.Event()

    def CreateRun(self, request: Any, context: Any) -> Any:
        return runs_pb2.CreateRunResponse(summary=_summary(common_pb2.EXECUTION_STATUS_RUNNING))

    def GetRun(self, request: Any, context: Any) -> Any:
        self.get_runs += 1
        done = self.get_runs >= 2 or self.release.is_set()
        status = (
            common_pb2.EXECUTION_STATUS_COMPLETED if done else common_pb2.EXECUTION_STATUS_RUNNING
        )
        return runs_pb2.GetRunResponse(summary=_summary(status))

    def GetRunItems(self, request: Any, context: Any) -> Any:
        item = common_pb2.ItemResult(
            item_index=0, status=common_pb2.EXECUTION_STATUS_COMPLETED, output=to_value({"ok": 1})
        )
        return runs_pb2.GetRunItemsResponse(results=[item])

    def GetRunEvents(self, request: Any, context: Any) -> Iterator[Any]:
        if not self.events:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        yield runs_pb2.StatusEvent(
            sequence_number=1, run_created=runs_pb2.RunCreatedEvent(run_id=RUN_ID, item_count=1)
        )
        yield runs_pb2.StatusEvent(
            sequence_number=2,
            step_started=runs_pb2.StepStartedEvent(run_id=RUN_ID, step_id="a", attempt=1),
        )
        assert self.release.wait(DEADLINE_SECS)
        yield runs_pb2.StatusEvent(
            sequence_number=3,
            step_completed=runs_pb2.StepCompletedEvent(
                run_id=RUN_ID, step_id="a", status=common_pb2.EXECUTION_STATUS_FAILED
            ),
        )
        yield runs_pb2.StatusEvent(
            sequence_number=4,
            run_completed=runs_pb2.RunCompletedEvent(
                run_id=RUN_ID, status=common_pb2.EXECUTION_STATUS_FAILED
            ),
        )


@pytest.fixture
def scripted(request: pytest.FixtureRequest) -> Iterator[tuple[str, ScriptedRuns]]:
    runs = ScriptedRuns(events=getattr(request, "param", True))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    flows_pb2_grpc.add_FlowsServiceServicer_to_server(ScriptedFlows(), server)
    runs_pb2_grpc.add_RunsServiceServicer_to_server(runs, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", runs
    runs.release.set()
    server.stop(grace=None)


def test_submit_polls_when_the_first_wait_runs_out(
    scripted: tuple[str, ScriptedRuns], cli: Cli
) -> None:
    url, runs = scripted
    done = cli("submit", "--url", url, "--flow", str(cli.flow), "--input-json", "{}")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"outcome": "success", "result": {"ok": 1}}
    assert runs.get_runs == 2
    assert run_id_from(done.stderr) == RUN_ID.replace("-", "")


def test_watch_prints_events_as_they_arrive(scripted: tuple[str, ScriptedRuns], cli: Cli) -> None:
    url, runs = scripted
    watch = subprocess.Popen(
        [str(STEPFLOW), "runs", "watch", RUN_ID, "--url", url],
        cwd=cli.workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    try:
        assert watch.stdout is not None
        first = watch.stdout.readline()
        second = watch.stdout.readline()
        # The node holds back the rest: these lines were printed live, not at the end.
        assert watch.poll() is None
        assert first.startswith("#1 ") and "run_created" in first and "itemCount=1" in first
        assert "step_started" in second and "stepId=a" in second and "attempt=1" in second
        runs.release.set()
        rest = watch.stdout.read().splitlines()
        assert watch.wait(timeout=DEADLINE_SECS) == 1  # the run failed
    finally:
        if watch.poll() is None:
            watch.kill()
        watch.wait()
    assert "step_completed" in rest[0] and "status=failed" in rest[0]
    assert rest[1].endswith("run_completed status=failed")


@pytest.mark.parametrize("scripted", [False], indirect=True)
def test_a_node_without_events_or_cancel_gets_a_clear_error(
    scripted: tuple[str, ScriptedRuns], cli: Cli
) -> None:
    url, _ = scripted
    watched = cli("runs", "watch", RUN_ID, "--url", url)
    assert watched.returncode == 1
    assert watched.stderr == (
        f"Error: the stepflow node at {url} does not support GetRunEvents "
        "(it runs an older version)\n"
    )
    cancelled = cli("runs", "cancel", RUN_ID, "--url", url)
    assert cancelled.returncode == 1
    assert "does not support CancelRun" in cancelled.stderr
