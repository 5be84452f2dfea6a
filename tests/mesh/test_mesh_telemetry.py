"""Telemetry across the mesh: a failed-over run stays in its trace; forwarding and failover count.

Two traced nodes export to an OTLP receiver inside the test; the worker is on node B, so node A
forwards its steps; SIGKILL of A makes B resume the run.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from stepflow_mesh.registry.etcd_process import EtcdProcess
from stepflow_mesh.runtime._pb.stepflow.v1 import runs_pb2
from stepflow_mesh.runtime.worker_api.convert import to_value
from telemetry.receiver import ReceivedPoint, Receiver
from waiting import wait_until

from .cluster import COMPLETED, Cluster
from .test_failover import lease_owner, sequential, start_pair

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def _point(receiver: Receiver, metric: str, **attributes: str) -> ReceivedPoint | None:
    for point in receiver.snapshot_points():
        if point.metric == metric and all(
            point.attributes.get(k) == v for k, v in attributes.items()
        ):
            return point
    return None


def test_a_failed_over_run_keeps_its_trace_and_is_counted(
    etcd_server: EtcdProcess, receiver: Receiver, tmp_path: Path
) -> None:
    cluster = Cluster(tmp_path, etcd_server.endpoint, lease_ttl=3)
    cluster.global_args = ["--trace-enabled", "--metrics-enabled", "--otlp-endpoint",
                           receiver.endpoint]  # fmt: skip
    cluster.env = {"OTEL_METRIC_EXPORT_INTERVAL": "300", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    try:
        a, b = start_pair(cluster)
        request = runs_pb2.CreateRunRequest(
            flow_id=a.store_flow(sequential(cluster.log, n=3, seconds=1.0)), input=[to_value({})]
        )
        traceparent = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
        run_id = a.runs.CreateRun(request, metadata=[("traceparent", traceparent)]).summary.run_id
        receiver.wait_for(
            lambda r: _point(
                r, "steps.forwarded_total", queue_name="mesh", target_region="region-a"
            )
        )
        wait_until(lambda: len(cluster.ticks()) >= 1, 60, "the first step")
        a.stop(signal.SIGKILL)
        wait_until(lambda: lease_owner(cluster, run_id) == "node-b", 15, "node B to claim")
        assert b.get(run_id, wait=True, timeout=60).summary.status == COMPLETED

        def resumed(r: Receiver) -> list[object] | None:
            spans = [s for s in r.snapshot_spans() if s.name == "run_execution"
                     and s.attributes.get("stepflow.node_id") == "node-b"]  # fmt: skip
            return spans or None

        [span] = receiver.wait_for(resumed)
        assert span.trace_id == TRACE_ID  # continued, not restarted
        assert span.attributes.get("stepflow.recovered") is True
        steps = [s for s in receiver.snapshot_spans() if s.name == "step"]
        assert steps and all(s.trace_id == TRACE_ID for s in steps)
        assert receiver.wait_for(
            lambda r: _point(r, "failovers_total", from_node="node-a", to_node="node-b")
        )
    finally:
        cluster.stop()
