"""Steps reach workers on other nodes; locality `prefer` and `strict`; any node answers waits.

One cluster for the module: node A (region-a, no worker), node B (region-a, worker "wa"), node C
(region-b, worker "wb"), all on the session etcd.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import grpc
import pytest
from node_process import STEPFLOW
from stepflow_mesh.registry.etcd_process import EtcdProcess
from stepflow_mesh.runtime._pb.stepflow.v1 import common_pb2, runs_pb2, tasks_pb2, tasks_pb2_grpc
from waiting import wait_until

from .cluster import COMPLETED, Cluster, output_of, tick_step


@pytest.fixture(scope="module")
def cluster(
    etcd_server: EtcdProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("routing"), etcd_server.endpoint)
    try:
        a = cluster.node("node-a", "region-a")
        b = cluster.node("node-b", "region-a")
        c = cluster.node("node-c", "region-b")
        cluster.worker("wa", b)
        cluster.worker("wb", c)
        wait_until(lambda: "worker" in b.log and "worker" in c.log, 60, "workers to connect")
        assert a.port
        yield cluster
    finally:
        cluster.stop()


def one_step_flow(log: Path, component: str = "/mesh/tick", seconds: float = 0) -> dict:
    return {
        "name": "one-tick",
        "steps": [tick_step("t", log, seconds, component)],
        "output": {"$step": "t"},
    }


def test_cluster_status_shows_nodes_regions_and_queues(cluster: Cluster) -> None:
    a = cluster.nodes["node-a"]
    shown = subprocess.run(
        [str(STEPFLOW), "cluster", "status", "--format", "json",
         "--config", str(a.workdir / "stepflow-config.yml"), "--etcd", cluster.etcd_endpoint],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    report = json.loads(shown.stdout)
    regions = {n["nodeId"]: n["region"] for n in report["nodes"] if n["live"]}
    assert regions == {"node-a": "region-a", "node-b": "region-a", "node-c": "region-b"}
    serving = {e["node"]: (e["workers"], e["region"]) for e in report["queues"]["mesh"]}
    assert serving == {"node-b": (1, "region-a"), "node-c": (1, "region-b")}


def test_a_step_runs_on_a_worker_connected_to_another_node(cluster: Cluster) -> None:
    a = cluster.nodes["node-a"]
    done = a.submit(one_step_flow(cluster.log), {}, wait=True)
    assert done.summary.status == COMPLETED, done
    assert output_of(done) == {"tag": "t", "label": "wa"}  # same region as A first


def test_strict_stays_in_the_region_and_prefer_follows_the_caller(cluster: Cluster) -> None:
    c = cluster.nodes["node-c"]
    for component in ("/mesh/tick", "/strict/tick"):
        done = c.submit(one_step_flow(cluster.log, component), {}, wait=True)
        assert done.summary.status == COMPLETED, done
        assert output_of(done)["label"] == "wb"  # C's own region


def test_any_node_answers_wait_promptly(cluster: Cluster) -> None:
    a, c = cluster.nodes["node-a"], cluster.nodes["node-c"]
    created = a.submit(one_step_flow(cluster.log, seconds=1.5), {})
    run_id = created.summary.run_id
    started = time.monotonic()
    finished = c.get(run_id, wait=True, timeout=60)
    waited = time.monotonic() - started
    assert finished.summary.status == COMPLETED
    assert waited < 10, waited  # returned at completion, not at the 60 s timeout
    assert output_of(c.items(run_id))["tag"] == "t"


def test_any_node_cancels_and_streams_events_of_a_run_owned_elsewhere(cluster: Cluster) -> None:
    a, c = cluster.nodes["node-a"], cluster.nodes["node-c"]
    run_id = a.submit(one_step_flow(cluster.log, seconds=60), {}).summary.run_id
    wait_until(
        lambda: any(s.status == common_pb2.EXECUTION_STATUS_RUNNING for s in c.get(run_id).steps),
        30, "the step to start",
    )  # fmt: skip
    tasks = tasks_pb2_grpc.TasksServiceStub(c.channel)
    found = tasks.GetOrchestratorForRun(tasks_pb2.GetOrchestratorForRunRequest(run_id=run_id))
    assert found.orchestrator_service_url == a.address  # answered from the lease registry
    with pytest.raises(grpc.RpcError) as unknown:
        tasks.GetOrchestratorForRun(tasks_pb2.GetOrchestratorForRunRequest(run_id=str(uuid4())))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    events = c.runs.GetRunEvents(runs_pb2.GetRunEventsRequest(run_id=run_id), timeout=60)
    started = time.monotonic()
    cancelled = c.runs.CancelRun(runs_pb2.CancelRunRequest(run_id=run_id), timeout=30)
    assert cancelled.summary.status == common_pb2.EXECUTION_STATUS_CANCELLED
    assert time.monotonic() - started < 5
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[0] == "run_created" and kinds[-1] == "run_completed", kinds
    assert a.get(run_id).summary.status == common_pb2.EXECUTION_STATUS_CANCELLED


def test_strict_never_leaves_the_region(cluster: Cluster) -> None:
    """Without a region-a worker, a strict step times out; a prefer step crosses regions."""
    a = cluster.nodes["node-a"]
    wa = cluster.workers.pop("wa")
    wa.kill()
    wa.wait()
    wait_until(lambda: "left queue mesh" in cluster.nodes["node-b"].log, 30, "wa to leave")
    before = len(cluster.ticks())
    strict = a.submit(one_step_flow(cluster.log, "/strict/tick"), {}, wait=True)
    assert strict.summary.status == common_pb2.EXECUTION_STATUS_FAILED
    assert len(cluster.ticks()) == before  # it never ran anywhere
    prefer = a.submit(one_step_flow(cluster.log), {}, wait=True)
    assert prefer.summary.status == COMPLETED
    assert output_of(prefer)["label"] == "wb"
