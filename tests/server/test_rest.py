"""The REST API `/api/v1` (durability.md §12, §13) of a real `stepflow serve` process, driven with
httpx; then the SSE writer, the context adapter and the error mapping against stub servicers in
process."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import timestamp_pb2
from node_process import NodeProcess
from stepflow_mesh.runtime._pb.stepflow.v1 import common_pb2, flows_pb2, runs_pb2, runs_pb2_grpc
from stepflow_mesh.runtime.server import rest
from stepflow_mesh.runtime.server.api import HealthServicer
from stepflow_mesh.runtime.worker_api.convert import to_value

UNKNOWN_RUN = "01a2158a-0000-7000-8000-000000000000"

FLOW = {
    "name": "rest-greet",
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
            "id": "greet",
            "component": "/builtin/create_messages",
            "input": {
                "user_prompt": {"$variable": "greeting"},
                "after": {"$step": "pause", "path": "duration_ms"},
            },
        },
    ],
    "output": {
        "greeting": {"$step": "greet", "path": "messages"},
        "slept": {"$step": "pause", "path": "duration_ms"},
    },
}
DANGLING = {"steps": [{"id": "a", "component": "/builtin/noop", "input": {"$step": "ghost"}}]}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    workdir = tmp_path_factory.mktemp("rest-node")
    process = NodeProcess(workdir, ["--state-dir", str(workdir / "state")]).start()
    yield process
    assert process.stop() == 0
    assert "Traceback" not in process.log


@pytest.fixture(scope="module")
def api(node: NodeProcess) -> Iterator[httpx.Client]:
    base = f"http://127.0.0.1:{node.http_port}/api/v1"
    with httpx.Client(base_url=base, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def flow_id(api: httpx.Client) -> str:
    stored = api.post("/flows", json={"flow": FLOW})
    assert stored.status_code == 200, stored.text
    assert stored.json()["stored"] is True
    return str(stored.json()["flowId"])


def run(api: httpx.Client, flow_id: str, *inputs: Any, **fields: Any) -> dict[str, Any]:
    answer = api.post("/runs", json={"flowId": flow_id, "input": list(inputs), **fields})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def error(response: httpx.Response, status: int, code: grpc.StatusCode) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code.value[0] and body["message"], body
    return str(body["message"])


def sse_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


# -- a real node ----------------------------------------------------------------------------------


def test_serve_prints_both_ports(node: NodeProcess) -> None:
    assert isinstance(node.port, int) and isinstance(node.http_port, int)
    assert node.port > 0 and node.http_port > 0
    assert node.port != node.http_port


def test_health(api: httpx.Client) -> None:
    answer = api.get("/health")
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "healthy" and body["timestamp"].endswith("Z")
    assert set(body["build"]) == {
        "gitVersion", "dirty", "rustcVersion", "profile", "features", "target"
    }  # fmt: skip
    assert body["build"]["features"] == [] and body["build"]["dirty"] is False


def test_store_flow_and_dry_run_diagnostics(api: httpx.Client, flow_id: str) -> None:
    dry = api.post("/flows", json={"flow": FLOW, "dryRun": True}).json()
    assert dry["flowId"] == flow_id and dry["stored"] is False
    broken = api.post("/flows", json={"flow": DANGLING}).json()
    assert broken["stored"] is False
    diagnostics = broken["diagnostics"]
    assert diagnostics["numFatal"] + diagnostics["numError"] > 0
    levels = {d["level"] for d in diagnostics["diagnostics"]}
    assert levels and all(isinstance(level, int) for level in levels)
    assert {"kind", "code", "level", "formatted", "experimental"} <= set(
        diagnostics["diagnostics"][0]
    )
    assert any(d.get("path") for d in diagnostics["diagnostics"])


def test_flow_reads(api: httpx.Client, flow_id: str) -> None:
    got = api.get(f"/flows/{flow_id}").json()
    assert got["flowId"] == flow_id and got["flow"]["name"] == "rest-greet"
    assert got["allExamples"] == []
    assert got["flow"]["steps"][0]["input"] == {"duration_ms": {"$input": "ms"}}
    variables = api.get(f"/flows/{flow_id}/variables").json()
    assert variables["flowId"] == flow_id
    greeting = variables["variables"]["greeting"]
    assert greeting["defaultValue"] == "hello" and greeting["required"] is False
    assert greeting["schema"] == {"default": "hello", "type": "string"}
    assert api.delete(f"/flows/{flow_id}").json() == {}
    error(api.get(f"/flows/{'ab' * 32}"), 404, grpc.StatusCode.NOT_FOUND)
    error(api.get("/flows/not-a-flow-id"), 400, grpc.StatusCode.INVALID_ARGUMENT)
    error(api.get(f"/flows/{'ab' * 32}/variables"), 404, grpc.StatusCode.NOT_FOUND)


def test_create_run_with_wait(api: httpx.Client, flow_id: str) -> None:
    body = run(
        api, flow_id, {"ms": 1}, {"ms": 2}, wait=True, timeoutSecs=60,
        variables={"greeting": "hi"}, maxConcurrency=2,
    )  # fmt: skip
    summary = body["summary"]
    assert summary["status"] == common_pb2.EXECUTION_STATUS_COMPLETED == 2
    assert summary["items"] == {
        "total": 2,
        "completed": 2,
        "running": 0,
        "failed": 0,
        "cancelled": 0,
    }
    assert summary["flowName"] == "rest-greet" and summary["rootRunId"] == summary["runId"]
    assert "parentRunId" not in summary  # unset optional fields are omitted
    # 64-bit integers are JSON numbers, enums are integers, whole numbers stay integers
    assert type(summary["createdAtSeqno"]) is int and type(summary["finishedAtSeqno"]) is int
    assert summary["finishedAtSeqno"] > summary["createdAtSeqno"]
    assert [r["itemIndex"] for r in body["results"]] == [0, 1]
    assert [r["status"] for r in body["results"]] == [2, 2]
    assert body["results"][0]["output"] == {
        "greeting": [{"role": "user", "content": "hi"}],
        "slept": 1,
    }
    assert type(body["results"][1]["output"]["slept"]) is int


def test_create_run_without_wait_then_long_poll(api: httpx.Client, flow_id: str) -> None:
    body = run(api, flow_id, {"ms": 200})
    assert "results" not in body or body["results"] == []
    run_id = body["summary"]["runId"]
    done = api.get(f"/runs/{run_id}", params={"wait": "true", "timeoutSecs": 60}).json()
    assert done["summary"]["status"] == 2
    assert {s["stepId"] for s in done["steps"]} == {"pause", "greet"}
    assert all(type(s["journalSeqno"]) is int and s["status"] == 2 for s in done["steps"])


def test_bad_run_requests(api: httpx.Client, flow_id: str) -> None:
    error(api.get(f"/runs/{UNKNOWN_RUN}"), 404, grpc.StatusCode.NOT_FOUND)
    message = error(api.get("/runs/not-a-uuid"), 400, grpc.StatusCode.INVALID_ARGUMENT)
    assert "UUID" in message
    error(
        api.post("/runs", json={"flowId": "ab" * 32, "input": [{}]}), 404, grpc.StatusCode.NOT_FOUND
    )
    error(
        api.post("/runs", json={"flowId": "x", "input": [{}]}),
        400,
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    error(
        api.post("/runs", json={"flowId": flow_id, "input": [{}], "overrides": {"steps": 3}}),
        400,
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    error(
        api.get(f"/runs/{UNKNOWN_RUN}", params={"wait": "maybe"}),
        400,
        grpc.StatusCode.INVALID_ARGUMENT,
    )


def test_list_runs_with_filters(api: httpx.Client, flow_id: str) -> None:
    first = run(api, flow_id, {"ms": 1}, wait=True)["summary"]["runId"]
    newest = run(api, flow_id, {"ms": 1}, wait=True)["summary"]["runId"]
    query = {"flowName": "rest-greet", "rootsOnly": "true"}
    listed = api.get("/runs", params={**query, "limit": 2}).json()["runs"]
    assert [r["runId"] for r in listed] == [newest, first]  # newest first
    page = api.get("/runs", params={**query, "limit": 1, "offset": 1}).json()["runs"]
    assert [r["runId"] for r in page] == [first]
    completed = api.get("/runs", params={"status": 2}).json()["runs"]
    assert {first, newest} <= {r["runId"] for r in completed}
    assert all(r["status"] == 2 for r in completed)
    assert api.get("/runs", params={"status": 1, "flowName": "rest-greet"}).json() == {"runs": []}
    assert api.get("/runs", params={"flowName": "no-such-flow"}).json() == {"runs": []}
    tree = api.get("/runs", params={"rootRunId": newest}).json()["runs"]
    assert [r["runId"] for r in tree] == [newest]
    assert api.get("/runs", params={"parentRunId": newest}).json() == {"runs": []}
    error(api.get("/runs", params={"limit": "many"}), 400, grpc.StatusCode.INVALID_ARGUMENT)
    error(api.get("/runs", params={"limit": "-1"}), 400, grpc.StatusCode.INVALID_ARGUMENT)
    error(api.get("/runs", params={"rootRunId": "nope"}), 400, grpc.StatusCode.INVALID_ARGUMENT)


def test_items_steps_and_step_detail(api: httpx.Client, flow_id: str) -> None:
    run_id = run(api, flow_id, {"ms": 1}, {"ms": 3}, wait=True)["summary"]["runId"]
    items = api.get(f"/runs/{run_id}/items").json()["results"]
    assert [i["itemIndex"] for i in items] == [0, 1] and items[1]["output"]["slept"] == 3
    by_completion = api.get(f"/runs/{run_id}/items", params={"resultOrder": 2}).json()["results"]
    assert sorted(i["itemIndex"] for i in by_completion) == [0, 1]
    steps = api.get(f"/runs/{run_id}/steps", params={"itemIndex": 1}).json()["steps"]
    assert [(s["stepId"], s["itemIndex"], s["stepIndex"]) for s in steps] == [
        ("pause", 1, 0),
        ("greet", 1, 1),
    ]
    assert len(api.get(f"/runs/{run_id}/steps").json()["steps"]) == 4
    detail = api.get(f"/runs/{run_id}/steps/pause", params={"itemIndex": 1}).json()["step"]
    assert detail["output"] == {"duration_ms": 3} and detail["status"] == 2
    seqno = detail["journalSeqno"]
    assert type(seqno) is int and seqno > 0
    same = api.get(f"/runs/{run_id}/steps/pause", params={"itemIndex": 1, "asof": seqno})
    assert same.status_code == 200 and same.json()["step"] == detail
    first_item = api.get(f"/runs/{run_id}/steps/greet").json()["step"]  # itemIndex defaults to 0
    assert first_item["itemIndex"] == 0 and first_item["output"]["messages"][0]["role"] == "user"
    message = error(
        api.get(f"/runs/{run_id}/steps/pause", params={"itemIndex": 1, "asof": seqno + 10**9}),
        400,
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert message.startswith("METADATA_NOT_CONSISTENT")
    error(api.get(f"/runs/{run_id}/steps/ghost"), 404, grpc.StatusCode.NOT_FOUND)
    error(
        api.get(f"/runs/{run_id}/steps/pause", params={"itemIndex": 7}),
        404,
        grpc.StatusCode.NOT_FOUND,
    )
    error(
        api.get(f"/runs/{run_id}/steps", params={"itemIndex": "-1"}),
        400,
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    error(api.get(f"/runs/{UNKNOWN_RUN}/items"), 404, grpc.StatusCode.NOT_FOUND)
    error(api.get(f"/runs/{UNKNOWN_RUN}/steps"), 404, grpc.StatusCode.NOT_FOUND)


def test_run_flow_and_delete(api: httpx.Client, flow_id: str) -> None:
    run_id = run(api, flow_id, {"ms": 1}, wait=True)["summary"]["runId"]
    flow = api.get(f"/runs/{run_id}/flow").json()
    assert flow["flowId"] == flow_id and flow["flow"]["name"] == "rest-greet"
    assert api.delete(f"/runs/{run_id}").json() == {}
    error(api.get(f"/runs/{run_id}"), 404, grpc.StatusCode.NOT_FOUND)
    error(api.get(f"/runs/{run_id}/flow"), 404, grpc.StatusCode.NOT_FOUND)
    error(api.delete(f"/runs/{run_id}"), 404, grpc.StatusCode.NOT_FOUND)


def test_cancel_a_running_run_then_delete_it(api: httpx.Client, flow_id: str) -> None:
    run_id = run(api, flow_id, {"ms": 60_000})["summary"]["runId"]
    message = error(api.delete(f"/runs/{run_id}"), 400, grpc.StatusCode.FAILED_PRECONDITION)
    assert message.startswith("RUN_NOT_DELETABLE")
    cancelled = api.post(f"/runs/{run_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["summary"]["runId"] == run_id
    done = api.get(f"/runs/{run_id}", params={"wait": "true", "timeoutSecs": 30}).json()
    assert done["summary"]["status"] == common_pb2.EXECUTION_STATUS_CANCELLED == 4
    assert api.delete(f"/runs/{run_id}").json() == {}
    error(api.post(f"/runs/{UNKNOWN_RUN}/cancel"), 404, grpc.StatusCode.NOT_FOUND)


def test_run_events_as_server_sent_events(api: httpx.Client, flow_id: str) -> None:
    run_id = run(api, flow_id, {"ms": 1}, wait=True)["summary"]["runId"]
    answer = api.get(f"/runs/{run_id}/events", params=[("runId", run_id), ("runId", run_id)])
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/event-stream")
    events = sse_events(answer.text)
    assert [next(iter(e["event"])) for e in (events[0], events[-1])] == [
        "RunCreated",
        "RunCompleted",
    ]
    assert all(set(e) == {"sequenceNumber", "timestamp", "event"} for e in events)
    numbers = [e["sequenceNumber"] for e in events]
    assert all(type(n) is int for n in numbers) and numbers == sorted(numbers)
    assert events[0]["event"]["RunCreated"] == {"runId": run_id, "flowId": flow_id, "itemCount": 1}
    assert events[-1]["event"]["RunCompleted"] == {"runId": run_id, "status": 2}
    only = api.get(f"/runs/{run_id}/events", params={"eventTypes": "1,6"})
    assert [next(iter(e["event"])) for e in sse_events(only.text)] == ["RunCreated", "RunCompleted"]
    later = sse_events(api.get(f"/runs/{run_id}/events", params={"since": numbers[-1]}).text)
    assert [e["sequenceNumber"] for e in later] == [numbers[-1]]
    error(api.get(f"/runs/{UNKNOWN_RUN}/events"), 404, grpc.StatusCode.NOT_FOUND)
    error(api.get("/runs/nope/events"), 400, grpc.StatusCode.INVALID_ARGUMENT)


def test_live_events_close_after_run_completed(api: httpx.Client, flow_id: str) -> None:
    run_id = run(api, flow_id, {"ms": 300})["summary"]["runId"]
    with api.stream("GET", f"/runs/{run_id}/events", params={"eventTypes": 6}) as answer:
        assert answer.status_code == 200
        lines = [line for line in answer.iter_lines() if line]
    assert len(lines) == 1 and json.loads(lines[0][6:])["event"]["RunCompleted"]["status"] == 2


def test_components(api: httpx.Client) -> None:
    lean = api.get("/components", params={"excludeSchemas": "true"}).json()
    assert lean["complete"] is True and lean["failedPlugins"] == []
    paths = {c["path"] for c in lean["components"]}
    assert {"/builtin/create_messages", "/builtin/sleep", "/builtin/map"} <= paths
    assert not any("inputSchema" in c for c in lean["components"])
    assert all(c["plugin"] == "builtin" and c["componentId"] for c in lean["components"])
    full = api.get("/components").json()
    sleep = next(c for c in full["components"] if c["path"] == "/builtin/sleep")
    assert sleep["inputSchema"]["properties"]["duration_ms"] == {"type": "integer"}


def test_json_blobs(api: httpx.Client) -> None:
    put = api.post("/blobs", json={"data": {"b": 1, "a": [2, 1.5, None]}})
    assert put.status_code == 200, put.text
    blob_id = put.json()["blobId"]
    assert put.json() == {"blobId": blob_id}
    assert blob_id == hashlib.sha256(b'{"a":[2,1.5,null],"b":1}').hexdigest()
    got = api.get(f"/blobs/{blob_id}").json()
    assert got == {"data": {"a": [2, 1.5, None], "b": 1}, "blobType": "data", "blobId": blob_id}
    for body in ({"json_data": [1], "blob_type": "flow"}, {"jsonData": [1], "blobType": "flow"}):
        same = api.post("/blobs", json={**body, "filename": "f.json"}).json()
        assert same["filename"] == "f.json"
        assert api.get(f"/blobs/{same['blobId']}").json()["data"] == [1]
    raw = api.get(f"/blobs/{blob_id}", headers={"Accept": "application/octet-stream"})
    assert raw.status_code == 200 and raw.content == b'{"a":[2,1.5,null],"b":1}'
    assert raw.headers["x-blob-type"] == "data"
    assert raw.headers["content-disposition"] == f'attachment; filename="{blob_id}"'
    error(
        api.post("/blobs", json={"data": 1, "blobType": "nope"}),
        400,
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    error(
        api.post("/blobs", json={"data": 1, "jsonData": 2}), 400, grpc.StatusCode.INVALID_ARGUMENT
    )
    error(api.post("/blobs", json={"filename": "x"}), 400, grpc.StatusCode.INVALID_ARGUMENT)
    error(
        api.post("/blobs", json={"data": 1, "color": "red"}), 400, grpc.StatusCode.INVALID_ARGUMENT
    )


def test_binary_blobs(api: httpx.Client) -> None:
    payload = bytes(range(256)) * 4
    put = api.post(
        "/blobs",
        content=payload,
        headers={"Content-Type": "application/octet-stream", "X-Blob-Filename": "report.bin"},
    )
    assert put.status_code == 200, put.text
    assert put.json() == {"blobId": hashlib.sha256(payload).hexdigest(), "filename": "report.bin"}
    blob_id = put.json()["blobId"]
    got = api.get(f"/blobs/{blob_id}").json()
    assert got == {"data": None, "blobType": "binary", "blobId": blob_id}
    raw = api.get(f"/blobs/{blob_id}", headers={"Accept": "application/octet-stream"})
    assert raw.status_code == 200 and raw.content == payload
    assert raw.headers["content-type"] == "application/octet-stream"
    assert raw.headers["x-blob-type"] == "binary"
    assert raw.headers["content-disposition"].startswith("attachment; filename=")
    error(api.get("/blobs/zz"), 400, grpc.StatusCode.INVALID_ARGUMENT)
    error(api.get(f"/blobs/{'0' * 64}"), 404, grpc.StatusCode.NOT_FOUND)


@pytest.mark.parametrize(
    ("body", "hint"),
    [
        (b'{"flowId": ', "not valid JSON"),
        (b"", "empty"),
        (b"[1, 2]", "JSON object"),
        (b'{"flowId": "x", "input": 3}', "input"),
        (b'{"flowId": "x", "bogus": 1}', "bogus"),
        (b'{"flowId": "x", "input": [NaN]}', "not valid JSON"),
        (b'{"flowId": "x", "maxConcurrency": -1}', "maxConcurrency"),
        (b"\xff\xfe\x00", "not valid JSON"),
    ],
)
def test_malformed_bodies_are_400(api: httpx.Client, body: bytes, hint: str) -> None:
    answer = api.post("/runs", content=body, headers={"Content-Type": "application/json"})
    assert hint in error(answer, 400, grpc.StatusCode.INVALID_ARGUMENT)


def test_unknown_routes_and_methods(api: httpx.Client) -> None:
    error(api.get("/nothing-here"), 404, grpc.StatusCode.NOT_FOUND)
    answer = api.put("/runs", json={})
    error(answer, 405, grpc.StatusCode.UNIMPLEMENTED)
    assert "POST" in answer.headers["allow"]


def test_cors(api: httpx.Client) -> None:
    preflight = api.options(
        "/runs",
        headers={
            "Origin": "http://example.test",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-blob-filename",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "content-type,x-blob-filename"
    for answer in (
        api.get("/health", headers={"Origin": "http://example.test"}),
        api.get(f"/runs/{UNKNOWN_RUN}", headers={"Origin": "http://example.test"}),
    ):
        assert answer.headers["access-control-allow-origin"] == "*"
        assert answer.headers["access-control-expose-headers"] == "*"


def test_the_node_still_answers_over_grpc_and_rest(node: NodeProcess, api: httpx.Client) -> None:
    from stepflow_mesh.runtime._pb.stepflow.v1 import health_pb2, health_pb2_grpc

    assert api.get("/health").json()["status"] == "healthy"
    with grpc.insecure_channel(f"127.0.0.1:{node.port}") as channel:
        stub = health_pb2_grpc.HealthServiceStub(channel)
        assert stub.HealthCheck(health_pb2.HealthCheckRequest()).status == "healthy"


# -- in process, against stub servicers -----------------------------------------------------------


def _event(number: int, **variant: Any) -> runs_pb2.StatusEvent:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromJsonString("2025-01-02T03:04:05Z")
    return runs_pb2.StatusEvent(sequence_number=number, timestamp=stamp, **variant)


class StubRuns(runs_pb2_grpc.RunsServiceServicer):
    """GetRunEvents/CancelRun as the real ones behave, driven by the test."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.gate = asyncio.Event()
        self.closed = asyncio.Event()

    async def GetRunEvents(self, request: Any, context: Any) -> AsyncIterator[Any]:
        self.requests.append(request)
        try:
            if request.run_id == UNKNOWN_RUN:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"run {request.run_id} not found")
            if request.run_id == "gated":
                await self.gate.wait()
            yield _event(
                2**53 + 2,
                step_completed=runs_pb2.StepCompletedEvent(
                    run_id=request.run_id, step_id="s", status=2, result=to_value({"n": 3})
                ),
            )
            if request.run_id == "broken":
                raise RuntimeError("journal went away")
            yield _event(2**53 + 3, run_completed=runs_pb2.RunCompletedEvent(run_id="r", status=2))
        finally:
            self.closed.set()

    async def CancelRun(self, request: Any, context: Any) -> Any:
        summary = runs_pb2.RunSummary(run_id=request.run_id, status=4, created_at_seqno=2**60)
        return runs_pb2.CancelRunResponse(summary=summary)

    async def GetRun(self, request: Any, context: Any) -> Any:
        raise RuntimeError("a bug in the servicer")


class BareRuns(runs_pb2_grpc.RunsServiceServicer):
    """Neither GetRunEvents nor CancelRun implemented (the generated stubs)."""


@asynccontextmanager
async def served(runs: Any) -> AsyncIterator[httpx.AsyncClient]:
    services = rest.Services(
        health=HealthServicer(),
        flows=None,
        runs=runs,
        components=None,
        blobs=None,  # type: ignore[arg-type]
    )
    server = rest.RestServer(services, "127.0.0.1", 0)
    await server.start()
    try:
        base = f"http://127.0.0.1:{server.port}/api/v1"
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            yield client
    finally:
        await server.stop()


async def test_sse_frames_and_request_fields() -> None:
    runs = StubRuns()
    async with served(runs) as client:
        answer = await client.get(
            "/runs/r1/events",
            params=[
                ("runId", "other"), ("runId", "r1"), ("since", "5"), ("eventTypes", "3"),
                ("eventTypes", "6"), ("includeSubRuns", "true"), ("includeResults", ""),
            ],
        )  # fmt: skip
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-cache"
    assert answer.text.startswith("data: ") and answer.text.endswith("\n\n")
    assert sse_events(answer.text) == [
        {
            "sequenceNumber": 2**53 + 2,
            "timestamp": "2025-01-02T03:04:05Z",
            "event": {
                "StepCompleted": {
                    "runId": "r1",
                    "itemIndex": 0,
                    "stepIndex": 0,
                    "stepId": "s",
                    "status": 2,
                    "result": {"n": 3},
                }
            },
        },
        {
            "sequenceNumber": 2**53 + 3,
            "timestamp": "2025-01-02T03:04:05Z",
            "event": {"RunCompleted": {"runId": "r", "status": 2}},
        },
    ]
    (request,) = runs.requests
    assert request.run_id == "r1" and request.since == 5  # the path wins over runId=...
    assert list(request.event_types) == [3, 6]
    assert request.include_sub_runs and request.include_results
    assert runs.closed.is_set()


async def test_sse_errors_before_and_after_the_first_event() -> None:
    runs = StubRuns()
    async with served(runs) as client:
        error(await client.get(f"/runs/{UNKNOWN_RUN}/events"), 404, grpc.StatusCode.NOT_FOUND)
        error(
            await client.get("/runs/x/events", params={"since": "soon"}),
            400,
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        broken = await client.get("/runs/broken/events")
        assert broken.status_code == 200  # the stream had started
        frames = broken.text.strip().split("\n\n")
        assert len(frames) == 2 and frames[1].startswith("event: error\ndata: ")
        assert json.loads(frames[1].split("data: ", 1)[1]) == {
            "code": grpc.StatusCode.INTERNAL.value[0],
            "message": "event stream failed: journal went away",
        }
        assert (await client.get("/health")).status_code == 200


async def test_sse_answers_and_keeps_alive_while_no_event_comes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rest, "SSE_FIRST_EVENT_SECS", 0.0)
    monkeypatch.setattr(rest, "SSE_KEEPALIVE_SECS", 0.01)
    runs = StubRuns()
    async with served(runs) as client, client.stream("GET", "/runs/gated/events") as answer:
        assert answer.status_code == 200  # headers before any event
        lines = answer.aiter_lines()
        assert await anext(lines) == ": keep-alive"
        runs.gate.set()
        rest_of_stream = [line async for line in lines if line.startswith("data: ")]
    assert [next(iter(json.loads(x[6:])["event"])) for x in rest_of_stream] == [
        "StepCompleted",
        "RunCompleted",
    ]


async def test_a_client_leaving_closes_the_event_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rest, "SSE_FIRST_EVENT_SECS", 0.0)
    monkeypatch.setattr(rest, "SSE_KEEPALIVE_SECS", 0.01)
    runs = StubRuns()
    async with served(runs) as client:
        async with client.stream("GET", "/runs/gated/events") as answer:
            assert answer.status_code == 200
            assert await anext(answer.aiter_lines()) == ": keep-alive"
        # the next keep-alive write fails, and the handler closes the generator
        await asyncio.wait_for(runs.closed.wait(), timeout=10)
        assert (await client.get("/health")).status_code == 200


async def test_unimplemented_methods_answer_501() -> None:
    async with served(BareRuns()) as client:
        message = error(await client.post("/runs/r/cancel"), 501, grpc.StatusCode.UNIMPLEMENTED)
        assert "CancelRun" in message
        message = error(await client.get("/runs/r/events"), 501, grpc.StatusCode.UNIMPLEMENTED)
        assert "GetRunEvents" in message
        error(await client.get("/runs/r/items"), 501, grpc.StatusCode.UNIMPLEMENTED)


async def test_servicer_results_and_crashes() -> None:
    async with served(StubRuns()) as client:
        cancelled = await client.post("/runs/r9/cancel")
        assert cancelled.json() == {
            "summary": {
                "runId": "r9",
                "flowId": "",
                "status": 4,
                "rootRunId": "",
                "createdAtSeqno": 2**60,
            }
        }
        message = error(await client.get("/runs/r9"), 500, grpc.StatusCode.INTERNAL)
        assert "a bug in the servicer" in message
        assert (await client.get("/health")).json()["status"] == "healthy"


def test_message_json_conventions() -> None:
    response = flows_pb2.GetFlowVariablesResponse(flow_id="f")
    variable = response.variables["v"]
    variable.default_value.CopyFrom(to_value({"z": 2.0, "a": [1.5, None]}))
    variable.required = True
    assert rest.message_json(response) == {
        "variables": {"v": {"defaultValue": {"a": [1.5, None], "z": 2}, "required": True}},
        "flowId": "f",
    }
    listed = rest.message_json(runs_pb2.ListRunsResponse())
    assert listed == {"runs": []}  # repeated fields default to []


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.FAILED_PRECONDITION, 400),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.INTERNAL, 500),
        (grpc.StatusCode.UNKNOWN, 500),
        (grpc.StatusCode.DATA_LOSS, 500),
    ],
)
def test_status_mapping(code: grpc.StatusCode, status: int) -> None:
    failure = rest.RestError(code, "m")
    assert failure.http_status == status
    assert failure.body() == {"code": code.value[0], "message": "m"}
