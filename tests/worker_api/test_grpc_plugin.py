"""The `grpc` plugin with real stepflow-py 0.13 workers (examples/python-worker/worker.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from stepflow_mesh.runtime.config import parse_config
from stepflow_mesh.runtime.engine import Runtime
from stepflow_mesh.runtime.errors import UserError
from stepflow_mesh.runtime.model import parse_flow
from stepflow_mesh.runtime.plugins import grpc as grpc_plugin

WORKER_DIR = Path(__file__).resolve().parents[2] / "examples" / "python-worker"


def config(tmp_path: Path, **python: Any) -> Any:
    plugin = {
        "type": "grpc",
        "queueName": "python",
        "command": sys.executable,
        "args": [str(WORKER_DIR / "worker.py")],
        "env": {"STEPFLOW_LOG_LEVEL": "WARNING"},
        **python,
    }
    return parse_config(
        {
            "plugins": {"builtin": {"type": "builtin"}, "python": plugin},
            "routes": {"/builtin": [{"plugin": "builtin"}], "/python": [{"plugin": "python"}]},
            "retry": {"transportMaxRetries": 2, "backoff": {"type": "constant", "delayMs": 10}},
        },
        "<test>",
        tmp_path,
    )


def one_step(component: str, step_input: Any) -> Any:
    return parse_flow(
        {
            "steps": [{"id": "s", "component": component, "input": step_input}],
            "output": {"$step": "s"},
        }
    )


async def test_discovery_and_execution(tmp_path: Path) -> None:
    async with Runtime(config(tmp_path)) as runtime:
        paths = sorted(c.path for c in runtime.components["python"])
        assert paths == [
            "/archive",
            "/crash_once",
            "/run_flow",
            "/score_review",
            "/slow",
            "/word_stats",
        ]
        outcome = await runtime.run(
            one_step("/python/word_stats", {"text": "a b a c a b", "top": 2}), [{}]
        )
    assert outcome.results[0].to_json() == {
        "outcome": "success",
        "result": {"top": ["a", "b"], "words": 6},
    }


async def test_a_component_calls_back_for_blobs(tmp_path: Path) -> None:
    data = {"rows": [1, 2.5, "x"], "nested": {"ok": True}}
    async with Runtime(config(tmp_path)) as runtime:
        outcome = await runtime.run(one_step("/python/archive", {"data": data}), [{}])
        result = outcome.results[0].value
        assert result["copy"] == data
        stored = await runtime.blobs.get(result["blob_id"])
    assert stored is not None and stored.json() == data


async def test_batch_items_run_on_the_worker_concurrently(tmp_path: Path) -> None:
    flow = one_step("/python/score_review", {"stars": {"$input": "stars"}, "text": "great"})
    async with Runtime(config(tmp_path)) as runtime:
        outcome = await runtime.run(flow, [{"stars": s} for s in (1, 3, 5)])
    assert [r.value["score"] for r in outcome.results] == [-0.8, 0.2, 1.0]


async def test_a_worker_killed_mid_task_is_restarted_and_the_step_retried(
    tmp_path: Path,
) -> None:
    """The first attempt kills the worker; the heartbeat timeout makes a TIMEOUT, the plugin
    restarts the worker before the transport retry, and attempt 2 succeeds."""
    marker = tmp_path / "marker"
    async with Runtime(config(tmp_path)) as runtime:
        outcome = await runtime.run(
            one_step("/python/crash_once", {"marker": str(marker), "value": 7}), [{}]
        )
    assert outcome.results[0].value == {"attempt_marker": "crashed once", "value": 7}


async def test_component_errors_become_step_failures(tmp_path: Path) -> None:
    async with Runtime(config(tmp_path)) as runtime:
        outcome = await runtime.run(one_step("/python/archive", {"no_data": 1}), [{}])
    result = outcome.results[0]
    assert not result.ok and result.error is not None
    assert result.error.code == "COMPONENT_FAILED"
    assert "data" in result.error.message


async def test_a_worker_that_never_comes_times_out_clearly(tmp_path: Path) -> None:
    """No worker ever connects: the task waits in the queue, then fails with TIMEOUT."""
    cfg = config(tmp_path, queueTimeoutSecs=1)
    cfg.plugins["python"].pop("command")
    cfg.plugins["python"].pop("args")
    cfg.retry = type(cfg.retry)(transport_max_retries=0, backoff=cfg.retry.backoff)
    async with Runtime(cfg) as runtime:
        outcome = await runtime.run(one_step("/python/word_stats", {"text": "x"}), [{}])
    result = outcome.results[0]
    assert result.error is not None and result.error.code == "TIMEOUT"
    assert "timed out waiting for worker to start" in result.error.message


async def test_queue_timeout_when_the_worker_stops_pulling(tmp_path: Path) -> None:
    """Discovery ran, then the worker is gone and not restartable: the task times out queued."""
    cfg = config(tmp_path, queueTimeoutSecs=1)
    cfg.retry = type(cfg.retry)(transport_max_retries=0, backoff=cfg.retry.backoff)
    async with Runtime(cfg) as runtime:
        plugin = runtime.plugins["python"]
        assert isinstance(plugin, grpc_plugin.GrpcPlugin)
        await plugin._stop_process()
        await runtime.worker_endpoint.broker.wait_for_no_streams("python", 10)  # type: ignore[union-attr]
        outcome = await runtime.run(one_step("/python/word_stats", {"text": "x"}), [{}])
    result = outcome.results[0]
    assert result.error is not None and result.error.code == "TIMEOUT"
    assert "timed out waiting for worker to start" in result.error.message


def test_bad_plugin_configs_name_the_field(tmp_path: Path) -> None:
    for bad, field in (
        ({"queueName": ""}, "plugins.python.queueName"),
        ({"queueTimeoutSecs": 0}, "plugins.python.queueTimeoutSecs"),
        ({"args": "worker.py"}, "plugins.python.args"),
    ):
        with pytest.raises(UserError) as caught:
            grpc_plugin.GrpcPlugin("python", {"queueName": "python", **bad}, tmp_path)
        assert field in str(caught.value)


async def test_a_missing_worker_command_is_a_clear_error(tmp_path: Path) -> None:
    cfg = config(tmp_path, command=str(tmp_path / "no-such-worker"))
    with pytest.raises(UserError, match="cannot start worker"):
        async with Runtime(cfg):
            pass


async def test_a_worker_that_exits_before_connecting_fails_at_once(tmp_path: Path) -> None:
    """A worker that cannot start (a missing module, a bad argument) is reported with its exit
    code as soon as it exits, not after the 30 s connect timeout."""
    cfg = config(tmp_path, args=["-c", "import sys; sys.exit(3)"])
    with pytest.raises(UserError, match="exited with code 3 before connecting") as caught:
        async with Runtime(cfg):
            pass
    assert caught.value.where == "plugins.python"


async def test_a_closing_runtime_lets_its_worker_leave_quietly(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Closing ends the worker's stream cleanly and refuses its reconnect, so stepflow-py exits
    as after any finished session, instead of warning (on the stderr it shares with us) that its
    connection was lost and that it will retry against a node that is gone."""
    async with Runtime(config(tmp_path)) as runtime:
        outcome = await runtime.run(one_step("/python/word_stats", {"text": "a", "top": 1}), [{}])
        assert outcome.results[0].ok
    stderr = capfd.readouterr().err  # the worker has exited: close waits for it
    assert "Reconnecting" not in stderr and "connection lost" not in stderr
