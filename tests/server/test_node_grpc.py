"""A real `stepflow serve` process, driven over gRPC with our stepflow.v1 stubs."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from node_process import NodeProcess
from stepflow_mesh.runtime._pb.stepflow.v1 import (
    blobs_pb2,
    blobs_pb2_grpc,
    common_pb2,
    components_pb2,
    components_pb2_grpc,
    flows_pb2,
    flows_pb2_grpc,
    health_pb2,
    health_pb2_grpc,
    runs_pb2,
    runs_pb2_grpc,
)
from stepflow_mesh.runtime.worker_api.convert import from_value, to_struct, to_value
from stepflow_mesh.runtime.worker_api.endpoint import MAX_MESSAGE_BYTES

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

FLOW = {
    "name": "greet",
    "schemas": {
        "type": "object",
        "properties": {
            "variables": {
                "type": "object",
                "properties": {"greeting": {"type": "string", "default": "hello"}},
            }
        },
    },
    "steps": [
        {"id": "pause", "component": "/builtin/sleep", "input": {"duration_ms": {"$input": "ms"}}},
        {
            "id": "words",
            "component": "/python/word_stats",
            "input": {"text": {"$input": "text"}, "top": 1},
        },
        {
            "id": "greet",
            "component": "/builtin/create_messages",
            "input": {
                "user_prompt": {"$variable": "greeting"},
                "after": {"$step": "pause", "path": "duration_ms"},
            },
        },
    ],
    "output": {"words": {"$step": "words"}, "greeting": {"$step": "greet", "path": "messages"}},
}


def worker_node(workdir: Path) -> NodeProcess:
    """A node with the examples' stepflow-py worker plugin and a SQLite journal in `workdir`."""
    (workdir / "stepflow-config.yml").write_text(
        (EXAMPLES / "python-worker" / "stepflow-config.yml")
        .read_text()
        .replace("command: python", f"command: {sys.executable}")
        .replace("args: [worker.py]", f"args: ['{EXAMPLES / 'python-worker' / 'worker.py'}']")
    )
    return NodeProcess(workdir, ["--state-dir", str(workdir / "state")])


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    process = worker_node(tmp_path_factory.mktemp("node")).start()
    yield process
    assert process.stop() == 0


@pytest.fixture(scope="module")
def channel(node: NodeProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{node.port}") as chan:
        yield chan


@pytest.fixture(scope="module")
def flow_id(channel: grpc.Channel) -> str:
    flows = flows_pb2_grpc.FlowsServiceStub(channel)
    stored = flows.StoreFlow(flows_pb2.StoreFlowRequest(flow=to_struct(FLOW)))
    assert stored.stored, stored.diagnostics
    return str(stored.flow_id)


def create(channel: grpc.Channel, flow_id: str, *inputs: Any, **kw: Any) -> Any:
    runs = runs_pb2_grpc.RunsServiceStub(channel)
    return runs.CreateRun(
        runs_pb2.CreateRunRequest(flow_id=flow_id, input=[to_value(i) for i in inputs], **kw)
    )


def test_health(channel: grpc.Channel) -> None:
    answer = health_pb2_grpc.HealthServiceStub(channel).HealthCheck(health_pb2.HealthCheckRequest())
    assert answer.status == "healthy" and answer.timestamp.seconds > 0


def test_create_run_and_wait(channel: grpc.Channel, flow_id: str) -> None:
    response = create(
        channel, flow_id, {"ms": 1, "text": "b a b"}, {"ms": 1, "text": "c"}, wait=True,
        variables={"greeting": to_value("hi")},
    )  # fmt: skip
    assert response.summary.status == common_pb2.EXECUTION_STATUS_COMPLETED
    assert response.summary.items.total == 2 and response.summary.items.completed == 2
    outputs = [from_value(r.output) for r in response.results]
    assert outputs[0]["words"] == {"top": ["b"], "words": 3}
    assert outputs[1]["greeting"] == [{"role": "user", "content": "hi"}]


def test_wait_timeout_returns_the_current_state(channel: grpc.Channel, flow_id: str) -> None:
    started = time.monotonic()
    response = create(channel, flow_id, {"ms": 3000, "text": "x"}, wait=True, timeout_secs=1)
    assert time.monotonic() - started < 2.5
    assert response.summary.status == common_pb2.EXECUTION_STATUS_RUNNING
    assert not response.results
    runs = runs_pb2_grpc.RunsServiceStub(channel)
    done = runs.GetRun(
        runs_pb2.GetRunRequest(run_id=response.summary.run_id, wait=True, timeout_secs=30)
    )
    assert done.summary.status == common_pb2.EXECUTION_STATUS_COMPLETED
    assert {s.step_id for s in done.steps} == {"pause", "words", "greet"}
    assert all(s.status == common_pb2.EXECUTION_STATUS_COMPLETED for s in done.steps)


def test_run_reads(channel: grpc.Channel, flow_id: str) -> None:
    runs = runs_pb2_grpc.RunsServiceStub(channel)
    run_id = create(channel, flow_id, {"ms": 1, "text": "z"}, wait=True).summary.run_id
    listed = runs.ListRuns(runs_pb2.ListRunsRequest(flow_name="greet", roots_only=True))
    assert listed.runs[0].run_id == run_id  # newest first
    items = runs.GetRunItems(runs_pb2.GetRunItemsRequest(run_id=run_id))
    assert [i.status for i in items.results] == [common_pb2.EXECUTION_STATUS_COMPLETED]
    steps = runs.GetRunSteps(runs_pb2.GetRunStepsRequest(run_id=run_id, item_index=0))
    assert [s.step_id for s in steps.steps] == ["pause", "words", "greet"]
    detail = runs.GetStepDetail(runs_pb2.GetStepDetailRequest(run_id=run_id, step_id="words"))
    assert from_value(detail.step.output) == {"top": ["z"], "words": 1}
    with pytest.raises(grpc.RpcError) as ahead:
        runs.GetStepDetail(
            runs_pb2.GetStepDetailRequest(run_id=run_id, step_id="words", asof=10**9)
        )
    assert ahead.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    flow = runs.GetRunFlow(runs_pb2.GetRunFlowRequest(run_id=run_id))
    assert flow.flow_id == flow_id and flow.flow.fields["name"].string_value == "greet"
    runs.DeleteRun(runs_pb2.DeleteRunRequest(run_id=run_id))
    with pytest.raises(grpc.RpcError) as gone:
        runs.GetRun(runs_pb2.GetRunRequest(run_id=run_id))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


def test_flows_service(channel: grpc.Channel, flow_id: str) -> None:
    flows = flows_pb2_grpc.FlowsServiceStub(channel)
    got = flows.GetFlow(flows_pb2.GetFlowRequest(flow_id=flow_id))
    assert got.flow.fields["name"].string_value == "greet"
    variables = flows.GetFlowVariables(flows_pb2.GetFlowVariablesRequest(flow_id=flow_id))
    assert from_value(variables.variables["greeting"].default_value) == "hello"
    assert flows.DeleteFlow(flows_pb2.DeleteFlowRequest(flow_id=flow_id)) is not None
    with pytest.raises(grpc.RpcError) as unknown:
        flows.DeleteFlow(flows_pb2.DeleteFlowRequest(flow_id="cd" * 32))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    dangling = {"steps": [{"id": "a", "component": "/builtin/noop", "input": {"$step": "ghost"}}]}
    broken = flows.StoreFlow(flows_pb2.StoreFlowRequest(flow=to_struct(dangling)))
    assert not broken.stored and broken.diagnostics.num_fatal + broken.diagnostics.num_error > 0


def test_components_and_blobs(channel: grpc.Channel) -> None:
    listed = components_pb2_grpc.ComponentsServiceStub(channel).ListRegisteredComponents(
        components_pb2.ListRegisteredComponentsRequest(exclude_schemas=True)
    )
    paths = {c.path for c in listed.components}
    assert {"/builtin/map", "/python/word_stats"} <= paths
    blobs = blobs_pb2_grpc.BlobServiceStub(channel)
    put = blobs.PutBlob(blobs_pb2.PutBlobRequest(json_data=to_value({"b": 1, "a": [2]})))
    got = blobs.GetBlob(blobs_pb2.GetBlobRequest(blob_id=put.blob_id))
    assert from_value(got.json_data) == {"a": [2], "b": 1} and got.blob_type == "data"
    raw = blobs.PutBlob(blobs_pb2.PutBlobRequest(raw_data=b"\x00\x01", blob_type="binary"))
    assert blobs.GetBlob(blobs_pb2.GetBlobRequest(blob_id=raw.blob_id)).raw_data == b"\x00\x01"


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda c: create(c, "ab" * 32, {}), grpc.StatusCode.NOT_FOUND),
        (lambda c: create(c, "not-a-flow-id", {}), grpc.StatusCode.INVALID_ARGUMENT),
        (
            lambda c: runs_pb2_grpc.RunsServiceStub(c).GetRun(
                runs_pb2.GetRunRequest(run_id="01a2158a-0000-7000-8000-000000000000")
            ),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            lambda c: runs_pb2_grpc.RunsServiceStub(c).GetRun(runs_pb2.GetRunRequest(run_id="x")),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            lambda c: blobs_pb2_grpc.BlobServiceStub(c).GetBlob(
                blobs_pb2.GetBlobRequest(blob_id="zz")
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            lambda c: flows_pb2_grpc.FlowsServiceStub(c).StoreFlow(
                flows_pb2.StoreFlowRequest(flow=struct_pb2.Struct())
            ),
            None,
        ),
    ],
)
def test_bad_requests_get_clear_status_codes(
    channel: grpc.Channel, call: Any, code: grpc.StatusCode | None
) -> None:
    if code is None:
        call(channel)  # answered (with diagnostics), not an error
        return
    with pytest.raises(grpc.RpcError) as caught:
        call(channel)
    assert caught.value.code() == code, caught.value.details()
    assert caught.value.details()


def test_an_oversized_message_is_refused_and_the_node_keeps_serving(
    channel: grpc.Channel,
) -> None:
    blobs = blobs_pb2_grpc.BlobServiceStub(channel)
    too_big = b"x" * (MAX_MESSAGE_BYTES + 1)
    with pytest.raises(grpc.RpcError) as caught:
        blobs.PutBlob(blobs_pb2.PutBlobRequest(raw_data=too_big, blob_type="binary"), timeout=120)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value.details()
    health = health_pb2_grpc.HealthServiceStub(channel)
    assert health.HealthCheck(health_pb2.HealthCheckRequest()).status


def test_a_killed_node_resumes_its_runs_on_restart(tmp_path: Path) -> None:
    """SIGKILL mid-run; the restarted node recovers the run from its journal and finishes it."""
    node = worker_node(tmp_path).start()
    with grpc.insecure_channel(f"127.0.0.1:{node.port}") as chan:
        stored = flows_pb2_grpc.FlowsServiceStub(chan).StoreFlow(
            flows_pb2.StoreFlowRequest(flow=to_struct(FLOW))
        )
        run_id = create(chan, stored.flow_id, {"ms": 4000, "text": "q"}).summary.run_id
        runs = runs_pb2_grpc.RunsServiceStub(chan)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until the fast step is journalled
            steps = runs.GetRunSteps(runs_pb2.GetRunStepsRequest(run_id=run_id)).steps
            if any(s.step_id == "words" and s.status == 2 for s in steps):
                break
            time.sleep(0.05)
    assert node.stop(signal.SIGKILL) == -signal.SIGKILL
    node.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{node.port}") as chan:
            runs = runs_pb2_grpc.RunsServiceStub(chan)
            done = runs.GetRun(runs_pb2.GetRunRequest(run_id=run_id, wait=True, timeout_secs=60))
            assert done.summary.status == common_pb2.EXECUTION_STATUS_COMPLETED
            items = runs.GetRunItems(runs_pb2.GetRunItemsRequest(run_id=run_id))
            assert from_value(items.results[0].output)["words"] == {"top": ["q"], "words": 1}
    finally:
        assert node.stop() == 0
    assert "Recovering execution tree rooted at" in (tmp_path / "node.log").read_text()


def test_cancel_stops_a_long_worker_step(channel: grpc.Channel) -> None:
    flows = flows_pb2_grpc.FlowsServiceStub(channel)
    long_flow = {
        "name": "long",
        "steps": [
            {"id": "slow", "component": "/python/slow", "input": {"seconds": 120, "value": 1}},
            {"id": "after", "component": "/builtin/noop", "input": {"x": {"$step": "slow"}}},
        ],
        "output": {"$step": "after"},
    }
    flow_id = flows.StoreFlow(flows_pb2.StoreFlowRequest(flow=to_struct(long_flow))).flow_id
    run_id = create(channel, flow_id, {}).summary.run_id
    runs = runs_pb2_grpc.RunsServiceStub(channel)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until the worker holds the step
        steps = runs.GetRunSteps(runs_pb2.GetRunStepsRequest(run_id=run_id)).steps
        if any(s.step_id == "slow" and s.status == common_pb2.EXECUTION_STATUS_RUNNING
               for s in steps):  # fmt: skip
            break
        time.sleep(0.05)
    started = time.monotonic()
    cancelled = runs.CancelRun(runs_pb2.CancelRunRequest(run_id=run_id))
    assert cancelled.summary.status == common_pb2.EXECUTION_STATUS_CANCELLED
    assert time.monotonic() - started < 5
    final = runs.GetRun(runs_pb2.GetRunRequest(run_id=run_id))
    assert final.summary.status == common_pb2.EXECUTION_STATUS_CANCELLED
    [slow] = [s for s in final.steps if s.step_id == "slow"]
    assert slow.error_code == common_pb2.TASK_ERROR_CODE_CANCELLED
    assert all(s.step_id != "after" or s.status != 2 for s in final.steps)


def test_events_stream_replays_then_follows_until_completion(
    channel: grpc.Channel, flow_id: str
) -> None:
    runs = runs_pb2_grpc.RunsServiceStub(channel)
    run_id = create(channel, flow_id, {"ms": 300, "text": "e f e"}).summary.run_id
    stream = runs.GetRunEvents(
        runs_pb2.GetRunEventsRequest(run_id=run_id, include_results=True), timeout=30
    )
    events = list(stream)  # ends by itself after RunCompleted
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "run_created" and kinds[-1] == "run_completed"
    assert events[-1].run_completed.status == common_pb2.EXECUTION_STATUS_COMPLETED
    started = {e.step_started.step_id for e in events if e.HasField("step_started")}
    assert started == {"pause", "words", "greet"}
    ready = [e.step_ready.step_id for e in events if e.HasField("step_ready")]
    assert ready == ["greet"]  # the only step whose input waited on another step
    completed = [e.step_completed for e in events if e.HasField("step_completed")]
    words = next(c for c in completed if c.step_id == "words")
    assert from_value(words.result)["result"] == {"top": ["e"], "words": 3}
    sequences = [e.sequence_number for e in events]
    assert sequences == sorted(sequences)
    # `since` and a type filter: only the completion, replayed from the journal.
    tail = list(
        runs.GetRunEvents(
            runs_pb2.GetRunEventsRequest(
                run_id=run_id,
                since=sequences[-1],
                event_types=[runs_pb2.STATUS_EVENT_TYPE_RUN_COMPLETED],
            ),
            timeout=30,
        )
    )
    assert [e.WhichOneof("event") for e in tail] == ["run_completed"]


def test_a_component_submits_a_run_through_the_node(channel: grpc.Channel) -> None:
    inner = {
        "steps": [
            {"id": "m", "component": "/builtin/create_messages",
             "input": {"user_prompt": {"$input": "q"}}},
        ],
        "output": {"$step": "m", "path": "messages"},
    }  # fmt: skip
    outer = {
        "name": "outer",
        "steps": [
            {
                "id": "sub",
                "component": "/python/run_flow",
                "input": {"flow": {"$literal": inner}, "inputs": [{"q": "one"}, {"q": "two"}]},
            }
        ],
        "output": {"$step": "sub"},
    }
    flows = flows_pb2_grpc.FlowsServiceStub(channel)
    flow_id = flows.StoreFlow(flows_pb2.StoreFlowRequest(flow=to_struct(outer))).flow_id
    response = create(channel, flow_id, {}, wait=True, timeout_secs=60)
    assert response.summary.status == common_pb2.EXECUTION_STATUS_COMPLETED, response
    result = from_value(response.results[0].output)
    assert result["status"] == "EXECUTION_STATUS_COMPLETED"
    assert result["outputs"] == [
        [{"role": "user", "content": "one"}],
        [{"role": "user", "content": "two"}],
    ]


def test_sigterm_lets_in_flight_steps_finish_and_leaves_the_run_resumable(
    tmp_path: Path,
) -> None:
    import asyncio

    from stepflow_mesh.runtime.state.sqlite import SqliteStateStore

    flow = {
        "name": "two-naps",
        "steps": [
            {"id": "nap", "component": "/builtin/sleep", "input": {"duration_ms": 1500}},
            {"id": "then", "component": "/builtin/sleep",
             "input": {"duration_ms": 1, "passthrough": {"$step": "nap"}}},
        ],
        "output": {"$step": "then", "path": "passthrough"},
    }  # fmt: skip
    node = worker_node(tmp_path).start()
    with grpc.insecure_channel(f"127.0.0.1:{node.port}") as chan:
        flow_id = (
            flows_pb2_grpc.FlowsServiceStub(chan)
            .StoreFlow(flows_pb2.StoreFlowRequest(flow=to_struct(flow)))
            .flow_id
        )
        run_id = create(chan, flow_id, {}).summary.run_id
        runs = runs_pb2_grpc.RunsServiceStub(chan)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            steps = runs.GetRunSteps(runs_pb2.GetRunStepsRequest(run_id=run_id)).steps
            if any(s.step_id == "nap" and s.status == common_pb2.EXECUTION_STATUS_RUNNING
                   for s in steps):  # fmt: skip
                break
            time.sleep(0.02)
    assert node.stop(signal.SIGTERM) == 0  # waits for the nap, dispatches nothing new

    async def journal_state() -> tuple[str, list[str]]:
        store = SqliteStateStore(tmp_path / "state" / "stepflow.db")
        await store.open()
        try:
            record = await store.get_run(run_id)
            assert record is not None
            steps = await store.get_steps(run_id)
            return record.status, [f"{s.step_id}:{s.status}" for s in steps]
        finally:
            await store.close()

    status, steps = asyncio.run(journal_state())
    assert status == "running" and "nap:completed" in steps
    assert not any(s.startswith("then:") and s != "then:runnable" for s in steps)

    node.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{node.port}") as chan:
            runs = runs_pb2_grpc.RunsServiceStub(chan)
            done = runs.GetRun(runs_pb2.GetRunRequest(run_id=run_id, wait=True, timeout_secs=60))
            assert done.summary.status == common_pb2.EXECUTION_STATUS_COMPLETED
    finally:
        assert node.stop() == 0
