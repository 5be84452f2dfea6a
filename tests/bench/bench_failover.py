"""Failover time of the mesh: SIGKILL a run's owner, time until another node holds its lease.

Two nodes (lease TTL 10 s, the default, and 3 s) on a real etcd with a stepflow-py worker on the
survivor; each round submits a sequential flow to node A, kills A after the first step, measures
kill → node B owns the run (lease key in etcd), waits for the run to complete on B, restarts A.
Target (durability.md §15 G7): within lease TTL + 2 s.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the tests import their shared helpers by name

from stepflow_mesh.registry.etcd_process import EtcdProcess  # noqa: E402
from waiting import wait_until  # noqa: E402

from tests.mesh.cluster import COMPLETED, Cluster  # noqa: E402
from tests.mesh.test_failover import lease_owner, sequential  # noqa: E402


def measure(ttl: int, rounds: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp, EtcdProcess(Path(tmp) / "etcd") as etcd:
        cluster = Cluster(Path(tmp), etcd.endpoint, lease_ttl=ttl)
        times = []
        try:
            a, b = cluster.node("node-a"), cluster.node("node-b")
            cluster.worker("w", b)
            wait_until(lambda: "worker" in b.log, 60, "the worker")
            for _ in range(rounds):
                before = len(cluster.ticks())
                run_id = a.submit(sequential(cluster.log, n=3, seconds=0.5), {}).summary.run_id
                wait_until(lambda: len(cluster.ticks()) > before, 60, "the first step")  # noqa: B023
                a.stop(signal.SIGKILL)
                killed = time.monotonic()
                wait_until(lambda: lease_owner(cluster, run_id) == "node-b", ttl + 30, "claim")  # noqa: B023
                times.append(time.monotonic() - killed)
                assert b.get(run_id, wait=True, timeout=120).summary.status == COMPLETED
                a.start()
        finally:
            cluster.stop()
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print("failover (SIGKILL owner → survivor holds the lease), 2 nodes, real etcd")
    for ttl in (3, 10):
        times = measure(ttl, args.rounds)
        print(
            f"  lease TTL {ttl:>2} s: p50 {statistics.median(times):.2f} s, max {max(times):.2f} s "
            f"over {len(times)} kills (target ≤ {ttl + 2} s)"
        )


if __name__ == "__main__":
    main()
