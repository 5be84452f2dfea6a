"""A run survives its owner: SIGKILL, SIGSTOP (fencing), SIGTERM hand-over, etcd restarts.

Each test builds its own two-node cluster (lease TTL 3 s). The worker is connected to node B
only, so killing the owner A never kills the worker: tasks of A's runs are forwarded to B, and
after a failover B owns the run itself. `ticks.log` records every execution of a worker step.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from stepflow_mesh.registry.etcd_client import EtcdClient, EtcdSettings
from stepflow_mesh.registry.etcd_process import EtcdProcess
from stepflow_mesh.runtime._pb.stepflow.v1 import runs_pb2
from stepflow_mesh.runtime.worker_api.convert import to_value
from waiting import wait_until

from .cluster import COMPLETED, Cluster, ClusterNode, output_of, tick_step

TTL = 3


@pytest.fixture
def cluster(etcd_server: EtcdProcess, tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, etcd_server.endpoint, lease_ttl=TTL)
    try:
        yield cluster
    finally:
        cluster.stop()


def start_pair(cluster: Cluster) -> tuple[ClusterNode, ClusterNode]:
    a = cluster.node("node-a")
    b = cluster.node("node-b")
    cluster.worker("w", b)
    wait_until(lambda: "worker" in b.log, 60, "the worker to connect to node B")
    return a, b


def lease_owner(cluster: Cluster, run_id: str) -> str | None:
    """The owner named by the run's lease key in etcd (read directly, as an operator would)."""

    async def read() -> str | None:
        client = EtcdClient(EtcdSettings([cluster.etcd_endpoint], prefix=cluster.prefix))
        try:
            kv = await client.get(f"{cluster.prefix}/leases/runs/{run_id}".encode())
            return json.loads(kv.value)["owner"] if kv else None
        finally:
            await client.close()

    return asyncio.run(read())


def sequential(log: Path, n: int = 4, seconds: float = 1.0) -> dict[str, Any]:
    steps = [tick_step("t1", log, seconds)]
    steps += [tick_step(f"t{i}", log, seconds, after=f"t{i - 1}") for i in range(2, n + 1)]
    return {"name": "sequential", "steps": steps, "output": {"$step": f"t{n}"}}


def parallel(log: Path) -> dict[str, Any]:
    steps = [tick_step(f"p{i}", log, 0.3 if i == 1 else 3.0) for i in range(1, 4)]
    join = {"id": "join", "component": "/builtin/noop",
            "input": {f"p{i}": {"$step": f"p{i}"} for i in range(1, 4)}}  # fmt: skip
    return {"name": "parallel", "steps": [*steps, join], "output": {"$step": "join"}}


def nested(log: Path) -> dict[str, Any]:
    inner = sequential(log, n=3)
    return {
        "name": "nested",
        "steps": [
            {
                "id": "inner",
                "component": "/builtin/map",
                "input": {"workflow": {"$literal": inner}, "items": [{}]},
            },
            tick_step("last", log, 0.2, after="inner"),
        ],
        "output": {"$step": "last"},
    }


def kill_owner_mid_run(
    cluster: Cluster, flow: dict[str, Any], after_ticks: int
) -> tuple[str, float]:
    """Submit to A, SIGKILL A once `after_ticks` worker steps are done; return (run, failover s)."""
    a, b = start_pair(cluster)
    run_id = a.submit(flow, {}).summary.run_id
    wait_until(lambda: len(cluster.ticks()) >= after_ticks, 60, f"{after_ticks} ticks")
    a.stop(signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: lease_owner(cluster, run_id) == "node-b", TTL + 10, "node B to claim")
    failover = time.monotonic() - killed
    done = b.get(run_id, wait=True, timeout=120)
    assert done.summary.status == COMPLETED, done
    return run_id, failover


def assert_journalled_steps_ran_once(cluster: Cluster, b: ClusterNode, run_id: str) -> None:
    """A step is re-run only if its completion never reached the journal (it was in flight)."""
    counts = Counter(tag for tag, _ in cluster.ticks())
    assert all(n <= 2 for n in counts.values()), counts
    assert sum(1 for n in counts.values() if n == 2) <= 3, counts  # at most the in-flight ones


@pytest.mark.parametrize("shape", ["sequential", "parallel", "nested"])
def test_sigkill_of_the_owner_fails_over_within_ttl_plus_2s(cluster: Cluster, shape: str) -> None:
    flow = {"sequential": sequential, "parallel": parallel, "nested": nested}[shape](cluster.log)
    run_id, failover = kill_owner_mid_run(cluster, flow, after_ticks=1)
    assert failover <= TTL + 2, f"failover took {failover:.1f} s"
    b = cluster.nodes["node-b"]
    assert_journalled_steps_ran_once(cluster, b, run_id)
    expected = {"sequential": "t4", "parallel": None, "nested": "last"}[shape]
    output = output_of(b.items(run_id))
    if expected:
        assert output["tag"] == expected
    else:
        assert sorted(output) == ["p1", "p2", "p3"]


def test_after_failover_a_third_node_relays_to_the_new_owner(cluster: Cluster) -> None:
    """Worker on C only: A's steps go through C; after A dies B owns the run, C relays to B.

    C does not claim orphaned runs (`recovery.enabled: false`), so the new owner is B.
    """
    a, b = cluster.node("node-a"), cluster.node("node-b")
    c = cluster.node("node-c", config={"recovery": {"enabled": False}})
    cluster.worker("wc", c)
    wait_until(lambda: "worker" in c.log, 60, "the worker to connect to node C")
    run_id = a.submit(sequential(cluster.log, n=4, seconds=1.0), {}).summary.run_id
    wait_until(lambda: len(cluster.ticks()) >= 1, 60, "the first step")
    a.stop(signal.SIGKILL)
    wait_until(lambda: lease_owner(cluster, run_id) == "node-b", TTL + 10, "node B to claim")
    done = b.get(run_id, wait=True, timeout=120)
    assert done.summary.status == COMPLETED, done
    assert output_of(b.items(run_id)) == {"tag": "t4", "label": "wc"}
    assert "forwarded to node node-c" in b.log  # B, the new owner, used C's worker


def test_sigterm_hands_runs_over_at_once(cluster: Cluster) -> None:
    a, b = start_pair(cluster)
    run_id = a.submit(sequential(cluster.log, n=3, seconds=1.5), {}).summary.run_id
    wait_until(lambda: len(cluster.ticks()) >= 1, 60, "the first tick")
    stopped = time.monotonic()
    assert a.stop(signal.SIGTERM) == 0
    wait_until(lambda: lease_owner(cluster, run_id) == "node-b", TTL + 10, "node B to claim")
    assert time.monotonic() - stopped < TTL + 2
    done = b.get(run_id, wait=True, timeout=120)
    assert done.summary.status == COMPLETED
    counts = Counter(tag for tag, _ in cluster.ticks())
    assert counts == {"t1": 1, "t2": 1, "t3": 1}, counts  # graceful: nothing ran twice


def test_a_paused_owner_is_fenced_out(cluster: Cluster) -> None:
    """SIGSTOP A past its lease; B takes over; after SIGCONT, A writes nothing to the run.

    A is stopped while its in-process `nap` runs (4 s: long enough that A cannot have reached
    `after` first), so `after` is dispatched only by B and runs exactly once.
    """
    a, b = start_pair(cluster)
    flow = {
        "name": "paused",
        "steps": [
            {"id": "nap", "component": "/builtin/sleep", "input": {"duration_ms": 4000}},
            tick_step("after", cluster.log, 0, after="nap"),
        ],
        "output": {"$step": "after"},
    }
    run_id = a.submit(flow, {}).summary.run_id
    wait_until(
        lambda: any(s.step_id == "nap" and s.status == 1 for s in b.get(run_id).steps),
        30, "the nap step to start",
    )  # fmt: skip
    a.send(signal.SIGSTOP)
    wait_until(lambda: lease_owner(cluster, run_id) == "node-b", TTL + 10, "node B to claim")
    done = b.get(run_id, wait=True, timeout=60)
    assert done.summary.status == COMPLETED
    a.send(signal.SIGCONT)
    wait_until(lambda: "lease" in a.log.lower() and "lost" in a.log.lower(), 30,
               "node A to notice its lost lease")  # fmt: skip
    assert a.proc is not None and a.proc.poll() is None  # fenced, not crashed
    assert Counter(tag for tag, _ in cluster.ticks())["after"] == 1
    assert output_of(b.items(run_id)) == {"tag": "after", "label": "w"}


def test_runs_survive_an_etcd_restart(tmp_path: Path) -> None:
    with EtcdProcess(tmp_path / "etcd") as etcd:
        cluster = Cluster(tmp_path / "cluster", etcd.endpoint, lease_ttl=TTL)
        cluster.root.mkdir()
        try:
            a, _ = start_pair(cluster)
            runs = [a.submit(sequential(cluster.log, n=3, seconds=1.0), {}).summary.run_id
                    for _ in range(3)]  # fmt: skip
            flow_id = a.store_flow(sequential(cluster.log, n=1))
            wait_until(lambda: len(cluster.ticks()) >= 2, 60, "the first ticks")
            etcd.stop()
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as refused:  # a clear answer, not a hang
                a.runs.CreateRun(runs_pb2.CreateRunRequest(flow_id=flow_id, input=[to_value({})]),
                                 timeout=60)  # fmt: skip
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value
            assert time.monotonic() - started < 20
            etcd.start()
            for run_id in runs:
                done = a.get(run_id, wait=True, timeout=120)
                assert done.summary.status == COMPLETED, done
            counts = Counter(tag for tag, _ in cluster.ticks())
            assert counts["t3"] == 3, counts
        finally:
            cluster.stop()
