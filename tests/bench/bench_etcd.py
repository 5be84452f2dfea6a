"""Journal append throughput against a real etcd: group commit (batching) on vs off.

Starts its own etcd (registry/etcd_process.py, fsync on). Each writer appends one realistic event
per call to its own run tree and waits for durability, as an executor does. With batching, appends
queued while a transaction is in flight share the next one; `txns/append` shows how many.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

from bench_journal import measure  # the same writer loops as the SQLite journal benchmark
from stepflow_mesh.registry.etcd_client import EtcdSettings
from stepflow_mesh.registry.etcd_process import EtcdProcess
from stepflow_mesh.registry.etcd_store import EtcdStateStore


async def bench(seconds: float, concurrency: list[int], no_fsync: bool) -> None:
    print(f"{'batching':>8} {'writers':>8} {'appends':>8} {'appends/s':>10} {'txns/append':>12}")
    async with EtcdProcess(unsafe_no_fsync=no_fsync) as server:
        for batching in (True, False):
            for writers in concurrency:
                settings = EtcdSettings([server.endpoint], prefix=f"/bench/{uuid.uuid4().hex}")
                store = EtcdStateStore(settings, batching=batching)
                await store.open()
                appends, elapsed = await measure(store, writers, seconds)
                txns = store.txns - writers  # minus the setup appends
                await store.close()
                on = "on" if batching else "off"
                print(
                    f"{on:>8} {writers:>8} {appends:>8} {appends / elapsed:>10.0f}"
                    f" {txns / appends:>12.3f}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time budget per row")
    parser.add_argument("--writers", default="1,32", help="comma-separated concurrency levels")
    parser.add_argument("--no-fsync", action="store_true", help="etcd --unsafe-no-fsync")
    args = parser.parse_args()
    asyncio.run(bench(args.seconds, [int(w) for w in args.writers.split(",")], args.no_fsync))


if __name__ == "__main__":
    main()
