"""Telemetry inside one process: a resumed tree continues its trace, the mesh-facing API, and a
process with telemetry off that never loads the SDK."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from stepflow_mesh.runtime import telemetry
from stepflow_mesh.runtime.blobs import MemoryBlobStore
from stepflow_mesh.runtime.config import default_config
from stepflow_mesh.runtime.durable import DurableRunner, RunRequest
from stepflow_mesh.runtime.engine import Runtime
from stepflow_mesh.runtime.model import parse_flow
from stepflow_mesh.runtime.state.sqlite import SqliteStateStore
from stepflow_mesh.runtime.telemetry.context import incoming_traceparent

from .receiver import ReceivedSpan, Receiver

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
FLOW = parse_flow(
    {
        "name": "two",
        "steps": [
            {"id": "nap", "component": "/builtin/sleep", "input": {"duration_ms": 300}},
            {"id": "after", "component": "/builtin/noop", "input": {"x": {"$step": "nap"}}},
        ],
        "output": {"after": {"$step": "after"}},
    }
)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
async def traced(receiver: Receiver) -> AsyncIterator[Receiver]:
    settings = telemetry.TelemetrySettings(
        trace_enabled=True, metrics_enabled=True, otlp_endpoint=receiver.endpoint,
        metrics_interval_secs=0.2, span_delay_secs=0.05, node_id="node-t",
    )  # fmt: skip
    telemetry.init(settings)
    try:
        yield receiver
    finally:
        telemetry.shutdown()


async def _wait_until(probe: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_a_resumed_run_continues_the_submitted_trace(
    traced: Receiver, tmp_path: Path
) -> None:
    store = SqliteStateStore(tmp_path / "s.db")
    await store.open()
    incoming_traceparent.set(f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")  # as the gRPC interceptor does
    blobs = MemoryBlobStore()
    async with Runtime(default_config(tmp_path), blobs=blobs) as runtime:
        runner = DurableRunner(runtime, store)
        first = asyncio.create_task(runner.start(RunRequest(FLOW, [{}], {}, None, 10)))

        async def nap_started() -> bool:
            run_id = runner.active_run_id
            if run_id is None:
                return False
            events = [e.event["type"] for e in await store.read_journal(run_id)]
            return "tasks_started" in events

        await _wait_until(nap_started)
        runner.drain()  # the node stops: `nap` finishes, `after` never starts
        outcome = await first
        assert outcome.status == "interrupted"
    incoming_traceparent.set(None)
    journal = await store.read_journal(outcome.run_id)
    assert journal[0].event["traceparent"] == f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    async with Runtime(default_config(tmp_path), blobs=blobs) as runtime:
        resumed = await DurableRunner(runtime, store).resume(outcome.run_id)
    assert resumed.status == "completed"
    await store.close()

    def both(r: Receiver) -> list[ReceivedSpan] | None:
        runs = [s for s in r.snapshot_spans() if s.name == "run_execution"]
        return runs if len(runs) == 2 else None

    runs = traced.wait_for(both)
    assert {s.trace_id for s in runs} == {CLIENT_TRACE}
    assert {s.parent_span_id for s in runs} == {CLIENT_SPAN}
    assert sorted(s.attributes["stepflow.recovered"] for s in runs) == [False, True]
    steps = traced.wait_for(lambda r: [s for s in r.snapshot_spans() if s.name == "step"] or None)
    assert {s.trace_id for s in steps} == {CLIENT_TRACE}
    recovery = traced.wait_for(
        lambda r: [p for p in r.snapshot_points() if p.metric == "leases.held"] or None
    )
    assert recovery[0].attributes == {"node_id": "node-t"}


async def test_mesh_api_failovers_forwarded_steps_and_forward_span(traced: Receiver) -> None:
    telemetry.record_failover("node-a", "node-b")
    telemetry.record_step_forwarded("python", "eu-west")
    incoming_traceparent.set(f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
    with telemetry.forward_span("node-b", "python"):
        from stepflow_mesh.runtime.telemetry.grpc_context import outgoing_traceparent

        sent = outgoing_traceparent()
    incoming_traceparent.set(None)
    span = traced.wait_for(
        lambda r: next((s for s in r.snapshot_spans() if s.name == "mesh.forward"), None)
    )
    assert span.trace_id == CLIENT_TRACE and span.parent_span_id == CLIENT_SPAN
    assert span.attributes == {"stepflow.target_node": "node-b", "stepflow.queue_name": "python"}
    assert sent == f"00-{CLIENT_TRACE}-{span.span_id}-01"

    def points(r: Receiver) -> dict[str, dict[str, object]] | None:
        found = {p.metric: p.attributes for p in r.snapshot_points()}
        wanted = {"failovers_total", "steps.forwarded_total"}
        return found if wanted <= set(found) else None

    found = traced.wait_for(points)
    assert found["failovers_total"] == {"from_node": "node-a", "to_node": "node-b"}
    assert found["steps.forwarded_total"] == {"queue_name": "python", "target_region": "eu-west"}


def test_telemetry_off_loads_no_sdk_and_adds_no_observer(tmp_path: Path) -> None:
    """A run in a fresh process with default settings: no SDK module is ever imported."""
    script = """
import asyncio, sys
from pathlib import Path
from stepflow_mesh.runtime import telemetry
from stepflow_mesh.runtime.blobs import MemoryBlobStore
from stepflow_mesh.runtime.config import default_config
from stepflow_mesh.runtime.engine import Runtime
from stepflow_mesh.runtime.model import parse_flow

assert telemetry.init(telemetry.TelemetrySettings(otlp_endpoint="http://127.0.0.1:9")) is None
flow = parse_flow({"steps": [{"id": "a", "component": "/builtin/noop", "input": {}}],
                   "output": {"$step": "a"}})

async def main():
    async with Runtime(default_config(Path.cwd())) as runtime:
        assert runtime.observers == []
        outcome = await runtime.run(flow, [{}])
        assert outcome.status == "completed", outcome
        assert runtime.worker_endpoint is None or runtime.worker_endpoint.broker.telemetry is None

asyncio.run(main())
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
assert not loaded, loaded
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
