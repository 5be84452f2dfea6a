"""Acceptance: a real node (`stepflow serve`) and a real stepflow-py worker exporting OTLP to a
receiver in this test; one trace from the client's span to the worker's `execute` span, every
§14 single-node metric with its attributes, run ids on JSON log records, and nothing when off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from node_process import STEPFLOW, NodeProcess
from stepflow_mesh.runtime._pb.stepflow.v1 import (
    common_pb2,
    runs_pb2,
    runs_pb2_grpc,
)
from stepflow_mesh.runtime.worker_api.convert import to_value
from waiting import wait_until

from .receiver import ReceivedPoint, ReceivedSpan, Receiver

WORKER = Path(__file__).with_name("traced_worker.py")

TRACE_FLOW = {
    "name": "traced",
    "steps": [
        {"id": "first", "component": "/builtin/noop", "input": {"v": {"$input": "text"}}},
        {
            "id": "loud",
            "component": "/python/shout",
            "input": {"text": {"$step": "first", "path": "v"}},
        },
    ],
    "output": {"loud": {"$step": "loud", "path": "text"}},
}


def metrics_flow(marker: str) -> dict[str, Any]:
    """Parallel steps covering retries, timeouts, failures and blobs; the run ends failed."""
    retry = {"action": "retry", "maxRetries": 4}
    steps = [
        {
            "id": "flaky",
            "component": "/python/flaky",
            "input": {"marker": marker},
            "onError": retry,
        },
        {"id": "broken", "component": "/python/always_fails", "input": {}, "onError": retry},
        {"id": "unserved", "component": "/nobody/thing", "input": {}},
        {"id": "slow", "component": "/python/slow", "input": {"seconds": 6}},
        {
            "id": "blob",
            "component": "/builtin/put_blob",
            "input": {"data": {"k": [1, 2, 3]}, "blob_type": "data"},
        },
    ]
    output = {s["id"]: {"$step": s["id"]} for s in steps}
    return {"name": "metrics", "steps": steps, "output": output}


def logged_flow(marker: Path) -> dict[str, Any]:
    """One `flaky` step that fails once (leaving `marker`) and is retried: a retry log record."""
    return {
        "name": "logged",
        "steps": [{"id": "flaky", "component": "/python/flaky", "input": {"marker": str(marker)},
                   "onError": {"action": "retry"}}],
        "output": {"flaky": {"$step": "flaky"}},
    }  # fmt: skip


QUIET_WORKER = {"STEPFLOW_LOG_LEVEL": "WARNING", "STEPFLOW_LOG_DESTINATION": "stderr"}


class Node(NodeProcess):
    """A traced node with a stepflow-py worker; logs as JSON lines to `node.jsonl`. The worker
    logs warnings to stderr unless `worker_env` says otherwise ({}: as the node does)."""

    def __init__(
        self,
        workdir: Path,
        flags: list[str],
        env: dict[str, str],
        *,
        otlp_logs: bool = False,
        worker_env: dict[str, str] = QUIET_WORKER,
    ) -> None:
        config = {
            "plugins": {
                "builtin": {"type": "builtin"},
                "python": {
                    "type": "grpc",
                    "queueName": "python",
                    "command": sys.executable,
                    "args": [str(WORKER)],
                    "executionTimeoutSecs": 2,
                    "env": worker_env,
                },
                "nobody": {"type": "grpc", "queueName": "nobody", "queueTimeoutSecs": 1},
            },
            "routes": {
                "/builtin": [{"plugin": "builtin"}],
                "/python": [{"plugin": "python"}],
                "/nobody": [{"plugin": "nobody"}],
            },
            "retry": {"transportMaxRetries": 1, "backoff": {"type": "constant", "delayMs": 10}},
        }
        (workdir / "stepflow-config.yml").write_text(yaml.safe_dump(config))
        self.log_file = workdir / "node.jsonl"
        logging = ["--log-format", "json", "--log-destination", "file",
                   "--log-file", str(self.log_file)]  # fmt: skip
        if otlp_logs:
            logging = ["--log-destination", "otlp"]
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "STEPFLOW_"))}
        super().__init__(
            workdir,
            ["--state-dir", str(workdir / "state"), "--node-id", "node-a"],
            global_args=[*flags, *logging],
            env={**clean, **env},
            log_name="stderr.log",
        )
        self.start()

    def run(self, flow_id: str, value: Any, traceparent: str | None = None) -> Any:
        stub = runs_pb2_grpc.RunsServiceStub(self.channel)
        metadata = [("traceparent", traceparent)] if traceparent else None
        request = runs_pb2.CreateRunRequest(
            flow_id=flow_id, input=[to_value(value)], wait=True, timeout_secs=60
        )
        return stub.CreateRun(request, metadata=metadata, timeout=90)

    def log_records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_file.read_text().splitlines() if line]


FAST_EXPORT = {"OTEL_METRIC_EXPORT_INTERVAL": "300", "OTEL_BSP_SCHEDULE_DELAY": "100"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def node(receiver: Receiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    flags = ["--trace-enabled", "--metrics-enabled", "--otlp-endpoint", receiver.endpoint]
    process = Node(tmp_path_factory.mktemp("telemetry-node"), flags, FAST_EXPORT)
    yield process
    if process.alive():
        assert process.stop() == 0


@pytest.fixture(scope="module")
def client_span(receiver: Receiver, node: Node) -> Iterator[tuple[Any, Any]]:
    """A span of this test process (the client), exported to the same receiver."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "test-client"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True))
    )
    tracer = provider.get_tracer("test")
    flow_id = node.store_flow(TRACE_FLOW)
    with tracer.start_as_current_span("client.create_run") as span:
        context = span.get_span_context()
        traceparent = f"00-{context.trace_id:032x}-{context.span_id:016x}-01"
        response = node.run(flow_id, {"text": "hello"}, traceparent)
    provider.shutdown()
    yield context, response


def _trace(receiver: Receiver, trace_id: str) -> list[ReceivedSpan]:
    return [s for s in receiver.snapshot_spans() if s.trace_id == trace_id]


def test_one_trace_from_client_span_to_worker_span(
    receiver: Receiver, client_span: tuple[Any, Any]
) -> None:
    context, response = client_span
    assert response.summary.status == common_pb2.EXECUTION_STATUS_COMPLETED
    trace_id = f"{context.trace_id:032x}"
    run_id = response.summary.run_id

    def complete(r: Receiver) -> list[ReceivedSpan] | None:
        spans = _trace(r, trace_id)
        names = [s.name for s in spans]
        wanted = {"client.create_run", "run_execution", "execute shout"}
        return spans if wanted <= set(names) and names.count("step") >= 2 else None

    spans = receiver.wait_for(complete)
    by_name: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    (client,) = by_name["client.create_run"]
    (run,) = by_name["run_execution"]
    assert run.parent_span_id == client.span_id
    assert run.service == "stepflow-server"
    assert run.attributes["run_id"] == run_id
    assert run.attributes["max_in_flight"] == 10
    assert run.attributes["flow_id"] == response.summary.flow_id
    assert run.attributes["stepflow.node_id"] == "node-a"
    assert run.attributes["stepflow.recovered"] is False
    steps = {s.attributes["step_id"]: s for s in by_name["step"]}
    assert set(steps) == {"first", "loud"}
    for step in steps.values():
        assert step.parent_span_id == run.span_id
        assert step.attributes["stepflow.outcome"] == "success"
        assert step.attributes["stepflow.attempt"] == 1
        assert len(step.attributes["stepflow.task_id"]) == 36
    assert steps["loud"].attributes["component"] == "/python/shout"
    (execute,) = by_name["execute shout"]
    assert execute.parent_span_id == steps["loud"].span_id
    assert execute.attributes["stepflow.task_id"] == steps["loud"].attributes["stepflow.task_id"]
    assert execute.service != "stepflow-server"  # the worker's own process and service
    # Every journal write of the run is traced: the one creating the run under the client's span
    # (the RPC it serves), the others under the run's span; the final one (the run's end) inside it.
    journal = sorted(by_name["journal.append"], key=lambda s: s.start_ns)
    assert all(s.attributes["stepflow.backend"] == "sqlite" for s in journal)
    created, *during, final = journal
    assert created.parent_span_id == client.span_id and created.end_ns <= run.start_ns
    assert created.attributes["stepflow.events"] == 1
    assert during and all(s.parent_span_id == run.span_id for s in [*during, final])
    assert run.start_ns <= final.start_ns and final.end_ns <= run.end_ns
    assert sum(s.attributes["stepflow.events"] for s in journal) >= 6


def test_without_incoming_trace_the_trace_id_is_the_run_id(receiver: Receiver, node: Node) -> None:
    response = node.run(node.store_flow(TRACE_FLOW), {"text": "plain"})
    trace_id = response.summary.run_id.replace("-", "")

    def found(r: Receiver) -> list[ReceivedSpan] | None:
        spans = _trace(r, trace_id)
        names = {s.name for s in spans}
        return spans if {"run_execution", "step", "execute shout"} <= names else None

    spans = receiver.wait_for(found)
    (run,) = [s for s in spans if s.name == "run_execution"]
    assert run.parent_span_id == ""  # a root: the run id is the trace


def test_a_rest_client_traceparent_is_honoured(receiver: Receiver, node: Node) -> None:
    trace_id, parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    base = f"http://127.0.0.1:{node.http_port}/api/v1"
    with httpx.Client(base_url=base, timeout=90) as http:
        flow_id = http.post("/flows", json={"flow": TRACE_FLOW}).json()["flowId"]
        body = {"flowId": flow_id, "input": [{"text": "over rest"}], "wait": True}
        headers = {"traceparent": f"00-{trace_id}-{parent}-01"}
        assert http.post("/runs", json=body, headers=headers).status_code == 200

    def found(r: Receiver) -> list[ReceivedSpan] | None:
        return [s for s in _trace(r, trace_id) if s.name == "run_execution"] or None

    (run,) = receiver.wait_for(found)
    assert run.parent_span_id == parent


def _points(receiver: Receiver, metric: str) -> list[ReceivedPoint]:
    return [p for p in receiver.snapshot_points() if p.metric == metric]


def _has(receiver: Receiver, metric: str, **attributes: Any) -> bool:
    return any(
        all(p.attributes.get(k) == v for k, v in attributes.items()) and (p.value or p.total)
        for p in _points(receiver, metric)
    )


def test_metrics_of_a_run_with_retries_and_timeouts(
    receiver: Receiver, node: Node, client_span: Any
) -> None:
    marker = str(node.workdir / "flaky-marker")
    response = node.run(node.store_flow(metrics_flow(marker)), {})
    assert response.summary.status == common_pb2.EXECUTION_STATUS_FAILED
    python = "/python/always_fails"
    expected: list[tuple[str, dict[str, Any]]] = [
        ("workflow_executions_total", {"outcome": "completed"}),
        ("workflow_executions_total", {"outcome": "failed"}),
        ("workflow_duration_seconds", {"outcome": "failed"}),
        ("workflow_started_total", {}),
        ("step.executions_total", {"component": "/python/flaky", "outcome": "success"}),
        ("step.executions_total", {"component": "/python/flaky", "outcome": "failed"}),
        ("step.duration_seconds", {"component": "/python/shout", "outcome": "success"}),
        ("step.retries_total", {"reason": "component_error", "component": "/python/flaky"}),
        ("step.retries_total", {"reason": "transport_error", "component": "/nobody/thing"}),
        ("step.retries_exhausted_total", {"reason": "component_error", "component": python}),
        (
            "step.retries_exhausted_total",
            {"reason": "transport_error", "component": "/python/slow"},
        ),
        ("component.unhealthy_total", {"component": python}),
        ("task.queue_duration_seconds", {"component": "shout"}),
        ("task.execution_duration_seconds", {"component": "shout"}),
        ("task.success_total", {"component": "shout"}),
        ("task.failure_total", {"component": "always_fails"}),
        ("task.queue_timeout_total", {"component": "thing"}),
        ("task.execution_timeout_total", {"component": "slow"}),
        ("task.dispatched_total", {"queue_name": "python"}),
        ("task.dispatched_total", {"queue_name": "nobody"}),
        ("blob_store.put.bytes", {"blob_type": "flow"}),
        ("blob_store.put.bytes", {"blob_type": "data"}),
        ("blob_store.put.duration", {"blob_type": "data"}),
        ("blob_store.blob_size", {"blob_type": "data"}),
        ("blob_store.get.bytes", {"blob_type": "flow"}),
        ("blob_store.get.duration", {"blob_type": "flow"}),
        ("journal.append_duration_seconds", {"backend": "sqlite"}),
        ("journal.append_batch_size", {"backend": "sqlite"}),
        ("queue.connected_workers", {"queue_name": "python"}),
    ]

    def all_seen(r: Receiver) -> bool:
        return all(_has(r, name, **attrs) for name, attrs in expected)

    try:
        receiver.wait_for(all_seen, timeout=30)
    except AssertionError:
        missing = [(n, a) for n, a in expected if not _has(receiver, n, **a)]
        raise AssertionError(f"missing metrics: {missing}") from None
    # Instruments whose current value may be 0 are still reported, with their attributes.
    for name, attrs in [
        ("stepflow_pending_component_executions", {"component": "/python/flaky"}),
        ("queue.depth", {"queue_name": "nobody"}),
        ("leases.held", {"node_id": "node-a"}),
    ]:
        receiver.wait_for(
            lambda r, n=name, a=attrs: any(
                all(p.attributes.get(k) == v for k, v in a.items()) for p in _points(r, n)
            )
        )
    sums = {p.metric: p for p in receiver.snapshot_points() if p.kind == "sum"}
    assert sums["workflow_executions_total"].monotonic
    assert not sums["leases.held"].monotonic and not sums["queue.depth"].monotonic
    histograms = {p.metric for p in receiver.snapshot_points() if p.kind == "histogram"}
    assert {"workflow_duration_seconds", "step.duration_seconds"} <= histograms


def test_json_logs_carry_the_run_ids(node: Node, receiver: Receiver, client_span: Any) -> None:
    flow = logged_flow(node.workdir / "flaky-marker-logs")
    response = node.run(node.store_flow(flow), {})
    assert response.summary.status == common_pb2.EXECUTION_STATUS_COMPLETED
    run_id = response.summary.run_id
    records = [r for r in node.log_records() if r.get("run_id") == run_id]
    retry = [r for r in records if r["message"].startswith("retrying step flaky")]
    assert retry, records
    record = retry[0]
    assert record["step_id"] == "flaky"
    assert record["flow_id"] == response.summary.flow_id
    assert record["node_id"] == "node-a"
    assert record["trace_id"] == run_id.replace("-", "")
    assert len(record["span_id"]) == 16
    # The same span id is a span of that trace (the run's run_execution span).
    spans = receiver.wait_for(
        lambda r: [s for s in _trace(r, record["trace_id"]) if s.name == "run_execution"]
    )
    assert record["span_id"] in {s.span_id for s in spans}


def test_cli_submit_records_a_client_span_the_run_is_a_child_of(
    receiver: Receiver, node: Node, tmp_path: Path
) -> None:
    flow_file = tmp_path / "flow.yaml"
    flow_file.write_text(yaml.safe_dump(TRACE_FLOW))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "STEPFLOW_"))}
    done = subprocess.run(
        [str(STEPFLOW), "--trace-enabled", "--otlp-endpoint", receiver.endpoint, "submit",
         "--url", f"http://{node.address}", "--flow", str(flow_file),
         "--input-json", '{"text": "from the cli"}'],
        capture_output=True, text=True, timeout=120, env=clean,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    run_id = next(
        line.split()[-1] for line in done.stderr.splitlines() if line.startswith("run_id:")
    )
    # The CLI flushed its span before exiting; the node's run span arrives within its batching.
    submit = next(
        s for s in receiver.snapshot_spans()
        if s.name == "stepflow.submit" and s.service == "stepflow"
        and s.attributes.get("stepflow.url") == f"http://{node.address}"
    )  # fmt: skip

    def run_span(s: ReceivedSpan) -> bool:
        return s.name == "run_execution" and s.attributes["run_id"].replace("-", "") == run_id

    run = receiver.wait_for(lambda r: [s for s in r.snapshot_spans() if run_span(s)])[0]
    assert run.trace_id == submit.trace_id
    assert run.parent_span_id == submit.span_id


def test_log_destination_otlp_sends_records_with_run_ids_and_flushes_on_sigterm(
    tmp_path: Path,
) -> None:
    collector = Receiver().start()
    try:
        flags = ["--trace-enabled", "--otlp-endpoint", collector.endpoint]
        node = Node(tmp_path, flags, FAST_EXPORT, otlp_logs=True)
        flow = logged_flow(tmp_path / "flaky-marker-otlp-logs")
        response = node.run(node.store_flow(flow), {})
        assert response.summary.status == common_pb2.EXECUTION_STATUS_COMPLETED
        run_id = response.summary.run_id
        retry = collector.wait_for(
            lambda r: [g for g in r.snapshot_logs() if g.body.startswith("retrying step flaky")]
        )[0]
        assert retry.severity_number >= 9 and retry.service == "stepflow-server"
        assert retry.attributes["run_id"] == run_id
        assert retry.attributes["step_id"] == "flaky"
        assert retry.attributes["node_id"] == "node-a"
        assert retry.trace_id == run_id.replace("-", "") and len(retry.span_id) == 16
        assert node.stop() == 0
        # The last records (the graceful stop) left before the process exited.
        assert any(g.body.startswith("shutting down") for g in collector.snapshot_logs())
        assert "retrying step" not in (tmp_path / "stderr.log").read_text()
    finally:
        collector.stop()


def test_launched_workers_log_where_the_node_logs(tmp_path: Path) -> None:
    """The node passes its log level and destination on (telemetry.worker_env): to its file here,
    not to the collector a stepflow-py worker given an endpoint would otherwise choose; with
    `--log-destination otlp`, to the collector."""
    collector = Receiver().start()
    try:
        env = {**FAST_EXPORT, "OTEL_BLRP_SCHEDULE_DELAY": "100"}
        flags = ["--trace-enabled", "--otlp-endpoint", collector.endpoint]
        (tmp_path / "file").mkdir()
        node = Node(tmp_path / "file", flags, env, worker_env={})
        response = node.run(node.store_flow(TRACE_FLOW), {"text": "to the file"})
        assert response.summary.status == common_pb2.EXECUTION_STATUS_COMPLETED

        def executing(records: list[dict[str, Any]]) -> bool:
            return any(str(r.get("message", "")).startswith("Executing task") for r in records)

        wait_until(lambda: executing(node.log_records()), 30, "the worker's record in node.jsonl")
        collector.wait_for(lambda r: [s for s in r.snapshot_spans() if s.name == "execute shout"])
        assert node.stop() == 0  # the worker stops (and flushes) with the node
        assert not [g for g in collector.snapshot_logs() if g.body.startswith("Executing task")]

        (tmp_path / "otlp").mkdir()
        node = Node(tmp_path / "otlp", flags, env, otlp_logs=True, worker_env={})
        node.run(node.store_flow(TRACE_FLOW), {"text": "to the collector"})
        record = collector.wait_for(
            lambda r: [g for g in r.snapshot_logs() if g.body.startswith("Executing task")]
        )[0]
        assert record.service != "stepflow-server"  # the worker's own resource
        assert node.stop() == 0
    finally:
        collector.stop()


def test_nothing_is_exported_when_telemetry_is_off(
    tmp_path: Path, client_span: Any, node: Node
) -> None:
    quiet = Receiver().start()
    try:
        # An endpoint alone does not switch anything on, for the node or its worker.
        env = {**FAST_EXPORT, "STEPFLOW_OTLP_ENDPOINT": quiet.endpoint}
        off = Node(tmp_path, [], env)
        flow_id = off.store_flow(TRACE_FLOW)
        traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        response = off.run(flow_id, {"text": "quiet"}, traceparent)
        assert response.summary.status == common_pb2.EXECUTION_STATUS_COMPLETED
        assert off.stop() == 0  # a graceful stop would flush anything pending
        journal_db = tmp_path / "state"
        assert journal_db.exists()
        assert quiet.requests == 0 and not quiet.spans and not quiet.points
    finally:
        quiet.stop()
