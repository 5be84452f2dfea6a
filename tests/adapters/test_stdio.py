"""The `stepflow` plugin: legacy stdio JSON-RPC component servers (worker-protocol.md §6).

Real servers only: a component server built on PyPI `stepflow-py==0.7.0` (the last release with the
stdio server) in its own venv, cached under `.venv/legacy-stepflow-py-0.7.0/`; a small fake for the
underscore dialect (no release speaks it); and misbehaving servers. Flows run through `Runtime`
(and once through the real `stepflow run`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from stepflow_mesh.adapters.stdio_plugin import error_code_for
from stepflow_mesh.adapters.stdio_process import substitute
from stepflow_mesh.runtime.config import Config, parse_config
from stepflow_mesh.runtime.engine import Runtime
from stepflow_mesh.runtime.errors import FlowResult, UserError
from stepflow_mesh.runtime.executor import RunExecution, RunObserver
from stepflow_mesh.runtime.model import parse_flow

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LEGACY_VERSION = "0.7.0"
LEGACY_VENV = REPO / ".venv" / f"legacy-stepflow-py-{LEGACY_VERSION}"
LEGACY_SERVER = HERE / "legacy_server.py"
FAKE_UNDERSCORE = HERE / "stdio_fake_underscore.py"
BAD_SERVER = HERE / "stdio_bad_server.py"
STEPFLOW = Path(sys.executable).parent / "stepflow"
NETWORK_TROUBLE = re.compile(
    r"NewConnectionError|Temporary failure in name resolution|Network is unreachable|"
    r"Failed to establish a new connection|No matching distribution found|ConnectTimeout|"
    r"Could not fetch URL|ProxyError|ReadTimeoutError",
    re.IGNORECASE,
)


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def legacy_venv() -> Path:
    """A venv with stepflow-py 0.7.0, created once and reused across runs."""
    python = LEGACY_VENV / "bin" / "python"
    done = LEGACY_VENV / ".stepflow-py-installed"
    if done.is_file() and python.exists():
        return LEGACY_VENV
    shutil.rmtree(LEGACY_VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(LEGACY_VENV)], check=True)
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         f"stepflow-py=={LEGACY_VERSION}"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if proc.returncode != 0:
        shutil.rmtree(LEGACY_VENV, ignore_errors=True)
        output = (proc.stdout + proc.stderr).strip()
        last = output.splitlines()[-1] if output else f"exit status {proc.returncode}"
        if NETWORK_TROUBLE.search(output):
            pytest.skip(f"cannot install stepflow-py=={LEGACY_VERSION} (no network?): {last}")
        pytest.fail(f"pip install stepflow-py=={LEGACY_VERSION} failed:\n{output}")
    done.write_text(LEGACY_VERSION)
    return LEGACY_VENV


@pytest.fixture
def legacy(legacy_venv: Path) -> dict[str, Any]:
    """Plugin config for the legacy server script."""
    return {
        "type": "stepflow",
        "command": str(legacy_venv / "bin" / "python"),
        "args": [str(LEGACY_SERVER)],
        "env": {"STEPFLOW_LOG_LEVEL": "WARNING"},
    }


def make_config(tmp_path: Path, retries: int = 0, **plugins: dict[str, Any]) -> Config:
    routes: dict[str, Any] = {"/builtin": [{"plugin": "builtin"}]}
    routes.update({f"/{name}": [{"plugin": name}] for name in plugins})
    return parse_config(
        {
            "plugins": {"builtin": {"type": "builtin"}, **plugins},
            "routes": routes,
            "retry": {
                "transportMaxRetries": retries,
                "backoff": {"type": "constant", "delayMs": 1},
            },
        },
        "<test>",
        tmp_path,
    )


def one_step(component: str, step_input: Any, **flow: Any) -> Any:
    return parse_flow(
        {
            "steps": [{"id": "s", "component": component, "input": step_input}],
            "output": {"$step": "s"},
            **flow,
        }
    )


async def run_one(runtime: Runtime, component: str, step_input: Any) -> FlowResult:
    outcome = await runtime.run(one_step(component, step_input), [{}])
    [result] = outcome.results
    return result


def ok(result: FlowResult) -> Any:
    assert result.ok, result.to_json()
    return result.value


def failure_detail(result: FlowResult) -> str:
    """The detail line of a plugin-level failure (flows.md §6)."""
    assert result.error is not None, result.to_json()
    attachments = result.error.data["stack"][0]["attachments"]
    assert len(attachments) == 3, attachments
    return str(attachments[2])


# A server that broke the protocol is killed; it may also have seen its stdin close and exited.
STOPPED = re.compile(r"\(pid \d+, (killed by SIGKILL|exit status 0)\)")


def describe(plugin: str, command: str, *args: str) -> str:
    return f"stepflow plugin '{plugin}' (command: {' '.join([command, *args])})"


# -- the real stepflow-py 0.7.0 server --------------------------------------------------------


async def test_discovery_lists_registered_components_with_schemas(
    tmp_path: Path, legacy: dict[str, Any]
) -> None:
    async with Runtime(make_config(tmp_path, legacy=legacy)) as runtime:
        infos = {c.path: c for c in runtime.components["legacy"]}
    assert {"/add", "/echo", "/udf", "/blobs", "/evaluate", "/crash_once"} <= set(infos)
    add = infos["/add"]
    assert add.description == "Adds two integers."
    assert add.input_schema["$defs"]["AddInput"]["required"] == ["a", "b"]
    assert add.output_schema["$defs"]["AddOutput"]["properties"] == {"sum": {"type": "integer"}}


async def test_steps_run_on_the_server_with_attempt_and_observability(
    tmp_path: Path, legacy: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two dependent steps; `${VAR}` / `${VAR:-default}` substitution in args and env; cwd."""
    monkeypatch.setenv("STDIO_TEST_DIR", str(HERE))
    monkeypatch.delenv("STDIO_TEST_GREETING", raising=False)
    legacy = {
        **legacy,
        "args": ["${STDIO_TEST_DIR}/legacy_server.py"],
        "env": {"GREETING": "${STDIO_TEST_GREETING:-hello}", "STEPFLOW_LOG_LEVEL": "WARNING"},
    }
    flow = parse_flow(
        {
            "steps": [
                {"id": "sum", "component": "/legacy/add", "input": {"a": 2, "b": {"$input": "b"}}},
                {"id": "echo", "component": "/legacy/echo", "input": {"got": {"$step": "sum"}}},
                {"id": "who", "component": "/legacy/whoami", "input": {}},
            ],
            "output": {"echo": {"$step": "echo"}, "who": {"$step": "who"}},
        }
    )
    async with Runtime(make_config(tmp_path, legacy=legacy)) as runtime:
        flow_id = await runtime.blobs.put_json(flow.raw, "flow")
        outcome = await runtime.run(flow, [{"b": 40}], flow_id=flow_id)
    value = ok(outcome.results[0])
    assert value["echo"] == {"got": {"sum": 42}}
    assert value["who"] == {
        "attempt": 1,
        "step_id": "who",
        "run_id": outcome.run_id,
        "flow_id": flow_id,
        "pid": value["who"]["pid"],
        "greeting": "hello",
        "cwd": str(tmp_path),
    }


async def test_blob_callbacks_store_in_the_runtime(tmp_path: Path, legacy: dict[str, Any]) -> None:
    data = {"rows": [1, 2.5, "x"], "nested": {"ok": True}}
    async with Runtime(make_config(tmp_path, legacy=legacy)) as runtime:
        value = ok(await run_one(runtime, "/legacy/blobs", {"data": data}))
        stored = await runtime.blobs.get(value["blob_id"])
    assert value["copy"] == data
    assert stored is not None and stored.json() == data and stored.blob_type == "data"


NESTED = {
    "steps": [
        {
            "id": "double",
            "component": "/legacy/add",
            "input": {"a": {"$input": "x"}, "b": {"$input": "x"}},
        }
    ],
    "output": {"doubled": {"$step": "double", "path": "sum"}},
}
FAILING = {
    "steps": [{"id": "f", "component": "/legacy/fail", "input": {"why": "nested"}}],
    "output": {"$step": "f"},
}
# Flows inside a step input must be literals, or the outer flow would evaluate their `$input`.
LIT_NESTED = {"$literal": NESTED}
LIT_FAILING = {"$literal": FAILING}


async def test_evaluate_flow_runs_a_sub_run_and_returns_integer_error_codes(
    tmp_path: Path, legacy: dict[str, Any]
) -> None:
    """flows/evaluate: the nested flow's own step runs on the same server, concurrently with the
    waiting step; a nested failure comes back as FlowResult with the TaskErrorCode number."""
    async with Runtime(make_config(tmp_path, legacy=legacy)) as runtime:
        good = ok(
            await run_one(runtime, "/legacy/evaluate", {"flow": LIT_NESTED, "input": {"x": 21}})
        )
        bad = ok(await run_one(runtime, "/legacy/evaluate", {"flow": LIT_FAILING, "input": {}}))
    assert good == {"result": {"doubled": 42}}
    assert bad["failed"]["code"] == 3  # COMPONENT_FAILED
    assert "boom: nested" in bad["failed"]["message"]


class SubRuns(RunObserver):
    """Which item's step started each sub-run, and with what input."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, Any]] = []

    async def run_started(self, run: RunExecution) -> None:
        if run.origin is not None:
            self.seen.append((run.origin.item_index, run.inputs[0]))


async def test_callbacks_are_attributed_to_their_own_call(
    tmp_path: Path, legacy: dict[str, Any]
) -> None:
    """Three evaluate calls in flight at once, each calling back: every sub-run hangs off the
    step that asked for it (the SDK echoes the per-call trace id in its callbacks)."""
    flow = one_step(
        "/legacy/evaluate",
        {"flow": LIT_NESTED, "input": {"x": {"$input": "x"}}, "meet": 3},
    )
    sub_runs = SubRuns()
    async with Runtime(make_config(tmp_path, legacy=legacy), observers=[sub_runs]) as runtime:
        outcome = await runtime.run(flow, [{"x": i} for i in range(3)])
    assert [ok(r) for r in outcome.results] == [{"result": {"doubled": 2 * i}} for i in range(3)]
    assert sorted(sub_runs.seen) == [(i, {"x": i}) for i in range(3)]


async def test_metadata_and_batch_callbacks(tmp_path: Path, legacy: dict[str, Any]) -> None:
    flow = parse_flow(
        {
            "metadata": {"owner": "team-a", "tier": 2},
            "steps": [
                {
                    "id": "meta",
                    "component": "/legacy/metadata",
                    "input": {},
                    "metadata": {"purpose": "lookup"},
                }
            ],
            "output": {"$step": "meta"},
        }
    )
    batch_input = {"flow": LIT_NESTED, "inputs": [{"x": 1}, {"x": 2}, {"x": "a"}]}
    async with Runtime(make_config(tmp_path, legacy=legacy)) as runtime:
        flow_id = await runtime.blobs.put_json(flow.raw, "flow")
        meta = ok((await runtime.run(flow, [{}], flow_id=flow_id)).results[0])
        batch = ok(await run_one(runtime, "/legacy/batch", batch_input))
    assert meta == {"flow_metadata": {"owner": "team-a", "tier": 2},
                    "step_metadata": {"purpose": "lookup"}}  # fmt: skip
    assert (batch["total_runs"], batch["completed_runs"], batch["failed_runs"]) == (3, 2, 1)
    outputs = batch["outputs"]
    assert [o["batch_input_index"] for o in outputs] == [0, 1, 2]
    assert outputs[0]["result"] == {"outcome": "success", "result": {"doubled": 2}}
    assert outputs[1]["result"] == {"outcome": "success", "result": {"doubled": 4}}
    assert outputs[2]["status"] == "failed" and outputs[2]["result"]["outcome"] == "failed"
    assert outputs[2]["result"]["error"]["code"] == 2  # INVALID_INPUT ("a" is not an int)


async def test_component_errors_map_to_codes(tmp_path: Path, legacy: dict[str, Any]) -> None:
    async with Runtime(make_config(tmp_path, retries=2, legacy=legacy)) as runtime:
        failed = await run_one(runtime, "/legacy/fail", {"why": "bad day"})
        invalid = await run_one(runtime, "/legacy/strict", {"count": "many"})
    assert failed.error is not None and invalid.error is not None
    assert failed.error.code == "COMPONENT_FAILED"
    assert failed.error.message == "Component execution failed: boom: bad day"
    assert failed.error.data == {}  # copied from the reply (the SDK sends an empty object)
    assert invalid.error.code == "INVALID_INPUT"
    assert invalid.error.message.startswith("Input validation failed: Expected `int`, got `str`")


async def test_fifty_concurrent_calls_are_multiplexed(
    tmp_path: Path, legacy: dict[str, Any]
) -> None:
    """`rendezvous` answers only once all 50 calls are executing at the same time."""
    flow = one_step("/legacy/rendezvous", {"n": 50, "item": {"$input": "item"}})
    async with Runtime(make_config(tmp_path, legacy=legacy)) as runtime:
        outcome = await runtime.run(flow, [{"item": i} for i in range(50)], max_concurrency=50)
    assert [ok(r) for r in outcome.results] == [{"item": i} for i in range(50)]


async def test_a_crashed_server_is_restarted_and_the_call_retried_once_with_the_next_attempt(
    tmp_path: Path, legacy: dict[str, Any]
) -> None:
    """No transport retries configured: the plugin's own single retry on the restarted server
    completes the step; a call that was in flight on the crashed process is retried too."""
    marker = tmp_path / "marker"
    flow = parse_flow(
        {
            "steps": [
                {"id": "slow", "component": "/legacy/slow", "input": {"seconds": 0.2}},
                {"id": "crash", "component": "/legacy/crash_once",
                 "input": {"marker": str(marker), "value": 7}},
            ],
            "output": {"slow": {"$step": "slow"}, "crash": {"$step": "crash"}},
        }
    )  # fmt: skip
    async with Runtime(make_config(tmp_path, legacy=legacy)) as runtime:
        value = ok((await runtime.run(flow, [{}])).results[0])
        who = ok(await run_one(runtime, "/legacy/whoami", {}))
    assert value == {"slow": {"slept": 0.2}, "crash": {"attempt": 2, "value": 7}}
    assert who["pid"] != int(marker.read_text())  # a new process serves later calls


async def test_stepflow_run_cli_with_a_legacy_server(
    tmp_path: Path, legacy: dict[str, Any]
) -> None:
    (tmp_path / "stepflow-config.yml").write_text(
        json.dumps(
            {
                "plugins": {"builtin": {"type": "builtin"}, "legacy": legacy},
                "routes": {"/builtin": [{"plugin": "builtin"}], "/legacy": [{"plugin": "legacy"}]},
            }
        )
    )
    nested = {"flow": LIT_NESTED, "input": {"x": {"$step": "sum", "path": "sum"}}}
    (tmp_path / "flow.yaml").write_text(
        json.dumps(
            {
                "name": "legacy-cli",
                "description": "stdio server through the CLI",
                "metadata": {"owner": "cli"},
                "steps": [
                    {"id": "sum", "component": "/legacy/add",
                     "input": {"a": {"$input": "a"}, "b": {"$input": "b"}}},
                    {"id": "meta", "component": "/legacy/metadata", "input": {},
                     "metadata": {"n": 1}},
                    {"id": "nested", "component": "/legacy/evaluate", "input": nested},
                ],
                "output": {"meta": {"$step": "meta"}, "nested": {"$step": "nested"}},
            }
        )
    )  # fmt: skip
    proc = await asyncio.to_thread(
        subprocess.run,
        [str(STEPFLOW), "run", "--flow", "flow.yaml", "--input-json", '{"a": 2, "b": 3}'],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "outcome": "success",
        "result": {
            "meta": {"flow_metadata": {"owner": "cli"}, "step_metadata": {"n": 1}},
            "nested": {"result": {"doubled": 10}},
        },
    }


async def test_the_sdk_console_script_unmodified(tmp_path: Path, legacy_venv: Path) -> None:
    """`stepflow_py` itself (only the auto-registered `/udf`): code stored by a builtin step is
    fetched by the server through blobs/get and run."""
    stock = {"type": "stepflow", "command": str(legacy_venv / "bin" / "stepflow_py"),
             "env": {"STEPFLOW_LOG_LEVEL": "WARNING"}}  # fmt: skip
    code = {"code": "def double(input):\n    return {'doubled': input['x'] * 2}",
            "input_schema": {"type": "object"}}  # fmt: skip
    flow = parse_flow(
        {
            "steps": [
                {"id": "code", "component": "/builtin/put_blob",
                 "input": {"data": {"$literal": code}, "blob_type": "data"}},
                {"id": "run", "component": "/stock/udf",
                 "input": {"blob_id": {"$step": "code", "path": "blob_id"}, "input": {"x": 21}}},
            ],
            "output": {"$step": "run"},
        }
    )  # fmt: skip
    async with Runtime(make_config(tmp_path, stock=stock)) as runtime:
        assert [c.path for c in runtime.components["stock"]] == ["/udf"]
        outcome = await runtime.run(flow, [{}])
    assert ok(outcome.results[0]) == {"doubled": 42}


# -- the underscore dialect (fake server) -------------------------------------------------------


def fake(*extra: str, **config: Any) -> dict[str, Any]:
    return {"type": "stepflow", "command": sys.executable,
            "args": [str(FAKE_UNDERSCORE), *extra], **config}  # fmt: skip


async def test_underscore_dialect_is_detected_and_spoken(tmp_path: Path) -> None:
    async with Runtime(make_config(tmp_path, old=fake("old"))) as runtime:
        infos = {c.path: c for c in runtime.components["old"]}
        doubled = ok(await run_one(runtime, "/old/double", {"x": 21}))
        stored = ok(await run_one(runtime, "/old/store", {"k": [1, 2]}))
        picky = await run_one(runtime, "/old/picky", {"x": 1})
        trace = ok(await run_one(runtime, "/old/trace", {}))
        blob = await runtime.blobs.get(stored["blob_id"])
    assert list(infos) == ["/double", "/store", "/picky", "/trace", "/big"]
    assert infos["/double"].description == "Doubles x"
    assert infos["/double"].output_schema == {"type": "object"}
    assert doubled == {"doubled": 42}
    assert stored["copy"] == {"k": [1, 2]} and blob is not None and blob.json() == {"k": [1, 2]}
    assert picky.to_json() == {
        "outcome": "failed",
        "error": {
            "code": "INVALID_INPUT",
            "message": "picky: field 'x' must be a string",
            "data": {"field": "x"},
        },
    }
    assert trace["prefix"] == "old"
    assert trace["received"][:4] == ["initialize", "initialized", "components/list",
                                     "list_components"]  # fmt: skip
    assert trace["received"][4:9] == ["component_info"] * 5
    assert "put_blob" not in trace["received"]  # callbacks go the other way


async def test_a_16_mib_output_line(tmp_path: Path) -> None:
    size = 16 * 1024 * 1024
    async with Runtime(make_config(tmp_path, old=fake("old"))) as runtime:
        value = ok(await run_one(runtime, "/old/big", {"size": size}))
    assert len(value["text"]) == size


async def test_an_explicit_underscore_dialect_skips_detection(tmp_path: Path) -> None:
    config = make_config(tmp_path, old=fake("old", protocolDialect="underscore"))
    async with Runtime(config) as runtime:
        trace = ok(await run_one(runtime, "/old/trace", {}))
    assert "components/list" not in trace["received"]


# -- configuration and misbehaving servers -------------------------------------------------------


@pytest.mark.parametrize(
    ("plugin", "where", "message"),
    [
        ({"type": "stepflow"}, "plugins.bad.command", "needs a command"),
        ({"type": "stepflow", "command": "x", "transport": "http"}, "plugins.bad.transport",
         "'http' is not supported"),
        ({"type": "stepflow", "command": "x", "protocolDialect": "dots"},
         "plugins.bad.protocolDialect", "expected one of auto, underscore, slash"),
        ({"type": "stepflow", "command": "x", "callTimeoutSecs": -1},
         "plugins.bad.callTimeoutSecs", "≥ 0"),
    ],
)  # fmt: skip
async def test_config_errors(
    tmp_path: Path, plugin: dict[str, Any], where: str, message: str
) -> None:
    with pytest.raises(UserError) as raised:
        async with Runtime(make_config(tmp_path, bad=plugin)):
            pass
    assert raised.value.where == f"<test>: {where}"
    assert message in raised.value.message


async def run_beside_a_good_step(runtime: Runtime, bad: Any) -> FlowResult:
    """Run the bad flow and a builtin flow concurrently; the builtin one must be unaffected."""
    good = one_step("/builtin/noop", {"fine": True})
    bad_outcome, good_outcome = await asyncio.gather(
        runtime.run(bad, [{}]), runtime.run(good, [{}])
    )
    assert ok(good_outcome.results[0]) == {"fine": True}
    return bad_outcome.results[0]


async def test_a_missing_command_fails_its_steps_clearly(tmp_path: Path) -> None:
    bad = {"type": "stepflow", "command": "no-such-stepflow-server", "args": ["--x"]}
    async with Runtime(make_config(tmp_path, retries=1, bad=bad)) as runtime:
        result = await run_beside_a_good_step(runtime, one_step("/bad/anything", {}))
    assert result.error is not None and result.error.code == "UNREACHABLE"
    assert result.error.message == 'step "s" failed'
    assert failure_detail(result) == (
        f"{describe('bad', 'no-such-stepflow-server', '--x')}: command 'no-such-stepflow-server' "
        f"not found (on PATH or in {tmp_path})"
    )


async def test_a_server_that_dies_on_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("STEPFLOW_COMPONENT_STDERR", "verbose")  # stderr lines logged at info
    caplog.set_level(logging.INFO, logger="stepflow.plugins.stepflow.bad")
    starts = tmp_path / "starts"
    bad = {"type": "stepflow", "command": sys.executable,
           "args": [str(BAD_SERVER), "die", str(starts)]}  # fmt: skip
    async with Runtime(make_config(tmp_path, retries=1, bad=bad)) as runtime:
        result = await run_beside_a_good_step(runtime, one_step("/bad/anything", {}))
    detail = failure_detail(result)
    assert result.error is not None and result.error.code == "UNREACHABLE"
    assert detail.startswith(
        f"{describe('bad', sys.executable, str(BAD_SERVER), 'die', str(starts))}: failed to start: "
        "the server closed its stdout (EOF)"
    )
    assert "exit status 3" in detail
    assert detail.endswith("stderr tail:\nfatal: cannot load the model weights")
    # At plugin start, then once per attempt (1 + 1 transport retry).
    assert starts.read_text().split() == ["die"] * 3
    logged = [r for r in caplog.records if r.name == "stepflow.plugins.stepflow.bad"]
    assert [(r.levelno, r.getMessage()) for r in logged] == [
        (logging.INFO, "fatal: cannot load the model weights")
    ] * 3


async def test_another_protocol_version_is_refused(tmp_path: Path) -> None:
    bad = {"type": "stepflow", "command": sys.executable, "args": [str(BAD_SERVER), "v2"]}
    async with Runtime(make_config(tmp_path, bad=bad)) as runtime:
        assert runtime.components["bad"] == []
        result = await run_beside_a_good_step(runtime, one_step("/bad/echo", {}))
    assert failure_detail(result) == (
        f"{describe('bad', sys.executable, str(BAD_SERVER), 'v2')}: unsupported server protocol "
        "version 2 (this runtime speaks version 1)"
    )


async def test_garbage_on_stdout_fails_in_flight_calls_after_one_retry(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    bad = {"type": "stepflow", "command": sys.executable,
           "args": [str(BAD_SERVER), "garbage", str(starts)]}  # fmt: skip
    async with Runtime(make_config(tmp_path, bad=bad)) as runtime:
        result = await run_beside_a_good_step(runtime, one_step("/bad/echo", {"a": 1}))
    detail = failure_detail(result)
    assert result.error is not None and result.error.code == "UNREACHABLE"
    assert detail.startswith(
        describe("bad", sys.executable, str(BAD_SERVER), "garbage", str(starts))
    )
    assert "the server wrote an unparsable line: 'this is not JSON'" in detail
    assert STOPPED.search(detail) and "stderr tail:\nabout to write garbage" in detail
    assert detail.endswith("(the call was in flight twice: attempts 1, 2)")
    assert starts.read_text().split() == ["garbage"] * 2  # the first server, one restart


async def test_a_hung_call_times_out_and_the_server_is_restarted(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    bad = {"type": "stepflow", "command": sys.executable, "callTimeoutSecs": 1,
           "args": [str(BAD_SERVER), "hang", str(starts)]}  # fmt: skip
    async with Runtime(make_config(tmp_path, bad=bad)) as runtime:
        began = time.monotonic()
        result = await run_beside_a_good_step(runtime, one_step("/bad/hang", {}))
        elapsed = time.monotonic() - began
        after = await run_one(runtime, "/bad/echo", {"still": "works"})
    assert result.error is not None and result.error.code == "TIMEOUT"
    assert result.error.message == 'step "s" failed'
    detail = failure_detail(result)
    assert detail.startswith(describe("bad", sys.executable, str(BAD_SERVER), "hang", str(starts)))
    assert "call to /hang timed out after 1 s" in detail and STOPPED.search(detail)
    assert 1.0 <= elapsed < 10
    assert ok(after) == {"still": "works"}
    assert starts.read_text().split() == ["hang"] * 2


# -- units ---------------------------------------------------------------------------------------


def test_error_code_table() -> None:
    table = {
        -32700: "WORKER_ERROR", -32600: "WORKER_ERROR", -32601: "WORKER_ERROR",
        -32602: "WORKER_ERROR", -32603: "WORKER_ERROR", -32000: "COMPONENT_FAILED",
        -32001: "COMPONENT_NOT_FOUND", -32002: "INVALID_INPUT", -32003: "COMPONENT_FAILED",
        -32004: "RESOURCE_UNAVAILABLE", -32005: "INVALID_INPUT", -32102: "RESOURCE_UNAVAILABLE",
        -32103: "INVALID_INPUT", -32100: "COMPONENT_FAILED", -32150: "COMPONENT_FAILED",
        -32199: "COMPONENT_FAILED", -32200: "EXPRESSION_FAILURE", -32201: "EXPRESSION_FAILURE",
        -32202: "ORCHESTRATOR_ERROR", -32300: "UNREACHABLE", -32399: "UNREACHABLE",
        -32400: "WORKER_ERROR", 1: "WORKER_ERROR", 0: "WORKER_ERROR",
    }  # fmt: skip
    assert {code: error_code_for(code) for code in table} == table


def test_variable_substitution() -> None:
    env = {"A": "1", "EMPTY": ""}
    assert substitute("${A}/${B}/${B:-dflt}/${EMPTY:-e}/${A:-x}/$A/${", env) == "1//dflt/e/1/$A/${"
