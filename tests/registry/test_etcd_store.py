"""etcd-only behaviour of EtcdStateStore: fencing between nodes, watches, outages, limits, grouping.

The shared StateStore contract runs against etcd in tests/state/test_store_contract.py. Every test
here waits on conditions (bounded by deadlines), never on racing sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import pytest
from stepflow_mesh.registry import etcd_store
from stepflow_mesh.registry.etcd_blobs import EtcdBlobStore
from stepflow_mesh.registry.etcd_client import Get
from stepflow_mesh.registry.etcd_process import EtcdProcess
from stepflow_mesh.registry.etcd_store import EtcdStateStore
from stepflow_mesh.registry.etcd_values import SWEEP_GRACE_SECS
from stepflow_mesh.runtime.errors import FlowResult
from stepflow_mesh.runtime.state import events as ev
from stepflow_mesh.runtime.state.base import COMPLETED, LeaseLost, StoreError, StoreUnavailable
from waiting import wait_until_async

from .conftest import StoreFactory


def created(run_id: str) -> ev.Event:
    return ev.root_run_created(run_id, "flow", [1], {})


async def test_node_b_takes_over_only_after_a_is_revoked(make_store: StoreFactory) -> None:
    a, b = make_store(), make_store()
    assert await a.acquire_lease("R", "node-a", 60) is None
    await a.append("R", [created("R")], owner="node-a")
    assert await b.acquire_lease("R", "node-b", 60) == "node-a"
    with pytest.raises(LeaseLost):
        await b.append("R", [ev.steps_needed("R", 0, [0])], owner="node-b")
    info = await b.leases.get_lease("R")
    assert info is not None and info.owner == "node-a"

    await a.leases.release_all("node-a")
    assert await b.acquire_lease("R", "node-b", 60) is None
    await b.append("R", [ev.steps_needed("R", 0, [0])], owner="node-b")
    with pytest.raises(LeaseLost):
        await a.append("R", [ev.steps_needed("R", 0, [1])], owner="node-a")
    assert [e.event["type"] for e in await b.read_journal("R")] == [
        "root_run_created",
        "steps_needed",
    ]


async def test_expired_node_lease_is_fenced_out_by_etcd(make_store: StoreFactory) -> None:
    a, b = make_store(), make_store()
    assert await a.acquire_lease("R", "node-a", 60) is None
    await a.append("R", [created("R")], owner="node-a")
    assert a.leases._keepalive is not None
    a.leases._keepalive.cancel()  # node A hangs: its 2 s etcd lease runs out

    async def b_took_over() -> bool:
        return await b.acquire_lease("R", "node-b", 60) is None

    await wait_until_async(b_took_over, 15)
    # A's local record still says it holds the lease: etcd's compare refuses the write.
    with pytest.raises(LeaseLost):
        await a.append("R", [ev.steps_needed("R", 0, [1])], owner="node-a")
    with pytest.raises(LeaseLost):  # and A never tries again
        await a.append("R", [ev.steps_needed("R", 0, [2])], owner="node-a")
    assert len(await b.read_journal("R")) == 1


async def test_watch_orphans_reports_revoked_runs(make_store: StoreFactory) -> None:
    a, b = make_store(), make_store()
    await a.leases.heartbeat("node-a", "127.0.0.1:7000")
    for root in ("R1", "R2"):
        assert await a.acquire_lease(root, "node-a", 60) is None
    nodes = await b.leases.list_orchestrators()
    assert [(n.id, n.active_runs, n.orchestrator_url) for n in nodes] == [
        ("node-a", 2, "127.0.0.1:7000")
    ]
    start = (await b.client.range(Get(b"/", count_only=True))).revision + 1
    seen: list[str] = []

    async def collect() -> None:
        async for orphan in b.leases.watch_orphans(start_revision=start):
            assert orphan.previous_owner == "node-a"
            seen.append(orphan.run_id)

    task = asyncio.create_task(collect())
    try:
        await a.leases.release_all("node-a")

        async def both() -> bool:
            return sorted(seen) == ["R1", "R2"]

        await wait_until_async(both, 15)
        assert await b.leases.list_orchestrators() == []
    finally:
        task.cancel()


async def test_wait_done_sees_completion_on_another_node(make_store: StoreFactory) -> None:
    a, b = make_store(), make_store()
    await a.append("R", [created("R")])
    assert await b.wait_done("R", 0.2) is None
    waiter = asyncio.create_task(b.wait_done("R", 30))
    await a.append("R", [ev.run_completed("R", COMPLETED)])
    assert await asyncio.wait_for(waiter, 30) == COMPLETED
    assert await b.wait_done("R", 1) == COMPLETED  # already done: answered from the key


async def test_follow_streams_new_entries(make_store: StoreFactory) -> None:
    a, b = make_store(), make_store()
    first = await a.append("R", [created("R")])
    received: list[int] = []

    async def follow() -> None:
        async for entry in b.follow("R", first[0]):
            received.append(entry.sequence)

    task = asyncio.create_task(follow())
    try:
        expected = list(first)
        for i in range(3):
            expected += await a.append(
                "R", [ev.steps_needed("R", 0, [i]), ev.steps_needed("R", 1, [i])]
            )

        async def all_seen() -> bool:
            return received == expected

        await wait_until_async(all_seen, 15)
    finally:
        task.cancel()


async def test_append_survives_an_etcd_restart_exactly_once(tmp_path: Path) -> None:
    with EtcdProcess(tmp_path / "etcd", unsafe_no_fsync=True) as server:
        from stepflow_mesh.registry.etcd_client import EtcdSettings

        settings = EtcdSettings([server.endpoint], prefix="/t", request_timeout_secs=1.0)
        store = EtcdStateStore(settings, lease_ttl_secs=5)
        try:
            assert await store.acquire_lease("R", "node-a", 600) is None
            await store.append("R", [created("R")], owner="node-a")
            await asyncio.to_thread(server.stop)

            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match=server.endpoint):
                await store.read_journal("R")
            with pytest.raises(StoreUnavailable):
                await store.acquire_lease("S", "node-a", 60)
            assert time.monotonic() - started < 5

            step = ev.steps_needed("R", 0, [7])
            pending = asyncio.create_task(store.append("R", [step], owner="node-a"))

            async def retrying() -> bool:
                return store.unavailable_retries >= 2

            await wait_until_async(retrying, 15)
            assert not pending.done()
            await asyncio.to_thread(server.start)
            (seq,) = await asyncio.wait_for(pending, 60)
            journal = await store.read_journal("R")
            assert [e.event for e in journal].count(step) == 1
            assert journal[-1].sequence == seq
        finally:
            await store.close()


async def test_concurrent_appends_of_many_trees_survive_an_etcd_restart(tmp_path: Path) -> None:
    """A grouped append that fails over to per-tree retries, with lease renewals alongside.

    Regression: closing the channel after a failure cancelled other calls still on it, and the
    cancellation killed the per-tree retry tasks, leaving appends waiting forever.
    """
    with EtcdProcess(tmp_path / "etcd", unsafe_no_fsync=True) as server:
        from stepflow_mesh.registry.etcd_client import EtcdSettings

        settings = EtcdSettings([server.endpoint], prefix="/t", request_timeout_secs=1.0)
        store = EtcdStateStore(settings, lease_ttl_secs=5)
        roots = ["R1", "R2", "R3"]

        async def renew(root: str) -> None:
            while True:
                await asyncio.sleep(0.2)
                with contextlib.suppress(StoreError):
                    await store.acquire_lease(root, "node-a", 600)

        renewals = []
        try:
            for root in roots:
                assert await store.acquire_lease(root, "node-a", 600) is None
                await store.append(root, [created(root)], owner="node-a")
                renewals.append(asyncio.create_task(renew(root)))
            await asyncio.to_thread(server.stop)
            steps = {root: ev.steps_needed(root, 0, [7]) for root in roots}
            pending = [
                asyncio.create_task(store.append(root, [steps[root]], owner="node-a"))
                for root in roots
            ]

            async def retrying() -> bool:
                return store.unavailable_retries >= 6

            await wait_until_async(retrying, 15)
            await asyncio.to_thread(server.start)
            await asyncio.wait_for(asyncio.gather(*pending), 60)
            for root in roots:
                journal = await store.read_journal(root)
                assert [e.event for e in journal].count(steps[root]) == 1
        finally:
            for task in renewals:
                task.cancel()
            await store.close()


async def test_large_values_spill_and_read_back(make_store: StoreFactory, tmp_path: Path) -> None:
    big = FlowResult.success({"text": "x" * 5000})
    without = make_store(large_value_bytes=1024)
    await without.append("R", [created("R")])
    with pytest.raises(StoreError, match=r"storageConfig\.largeValueDir"):
        await without.append("R", [ev.item_completed("R", 0, big)])
    assert len(await without.read_journal("R")) == 1

    spill_dir = tmp_path / "large"
    store = make_store(large_value_bytes=1024, large_value_dir=spill_dir)
    await store.append(
        "R", [ev.item_completed("R", 0, big), ev.task_completed("R", 0, 0, "s", big)]
    )
    journal = await store.read_journal("R")
    assert journal[-1].event["result"] == big.to_json()
    run = await store.get_run("R")
    assert run is not None and run.items[0].result == big.to_json()
    assert (await store.get_steps("R"))[0].result == big.to_json()
    assert list(spill_dir.rglob("*.value"))
    await store.put_checkpoint("R", 3, b"c" * 4000)
    checkpoint = await store.get_checkpoint("R")
    assert checkpoint is not None and checkpoint.data == b"c" * 4000

    blobs = EtcdBlobStore(store.client, store.keys, store.values)
    small_id = await blobs.put(b"small", "data")
    large_id = await blobs.put(b"L" * 10_000, "binary")
    assert await blobs.put(b"small", "flow") == small_id
    small, large = await blobs.get(small_id), await blobs.get(large_id)
    assert small is not None and (small.data, small.blob_type) == (b"small", "data")
    assert large is not None and (large.data, large.blob_type) == (b"L" * 10_000, "binary")
    assert await blobs.get("0" * 64) is None


async def test_group_commit_groups_concurrent_appends(make_store: StoreFactory) -> None:
    grouped, single = make_store(), make_store(batching=False)
    for store, name in ((grouped, "g"), (single, "s")):
        await asyncio.gather(
            *(store.append(f"{name}{i}", [ev.steps_needed("x", i, [0])]) for i in range(60))
        )
        assert store.committed_appends == 60
    assert single.txns == 60
    assert grouped.txns <= 10, grouped.txns
    for i in range(60):
        assert len(await grouped.read_journal(f"g{i}")) == 1


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


async def test_large_values_nothing_references_are_swept_after_the_grace_period(
    make_store: StoreFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(etcd_store, "SCAN_PAGE_KEYS", 2)  # the reference scan reads many pages
    spill_dir = tmp_path / "large"
    store = make_store(large_value_bytes=1024, large_value_dir=spill_dir)
    kept, dropped = (FlowResult.success({"text": c * 5000}) for c in "kd")
    await store.append("KEEP", [created("KEEP"), ev.item_completed("KEEP", 0, kept)])
    await store.append("DROP", [created("DROP"), ev.item_completed("DROP", 0, dropped)])
    spilled = list(spill_dir.rglob("*.value"))
    of_drop = {path for path in spilled if b"d" * 5000 in path.read_bytes()}
    assert of_drop and len(of_drop) < len(spilled)
    await store.delete_tree("DROP")
    for path in spilled:
        _age(path, 2 * SWEEP_GRACE_SECS)
    unreferenced_but_new = spill_dir / "ab" / f"ab{'0' * 62}.value"
    unreferenced_but_new.parent.mkdir(exist_ok=True)
    unreferenced_but_new.write_bytes(b"a write whose transaction has not committed yet")
    interrupted = spill_dir / "cd" / f"cd{'0' * 62}.tmp123.456"
    interrupted.parent.mkdir(exist_ok=True)
    interrupted.write_bytes(b"half")
    _age(interrupted, 2 * SWEEP_GRACE_SECS)

    assert await store.collect_garbage() == len(of_drop)
    assert set(spill_dir.rglob("*.value")) == set(spilled) - of_drop | {unreferenced_but_new}
    assert not interrupted.exists()
    assert (await store.read_journal("KEEP"))[-1].event["result"] == kept.to_json()
    run = await store.get_run("KEEP")
    assert run is not None and run.items[0].result == kept.to_json()
    assert await store.collect_garbage() == 0  # everything left is referenced or new


async def test_reusing_a_spilled_value_makes_it_new_again(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    """A transaction about to reference an old, unreferenced file must not lose it to a sweep
    that read the keys just before the commit: re-using the file restarts its grace period."""
    store = make_store(large_value_bytes=1024, large_value_dir=tmp_path / "large")
    data = b"{" + b"r" * 5000
    reference = await store.values.encode(data, "a value")
    [path] = (tmp_path / "large").rglob("*.value")
    _age(path, 2 * SWEEP_GRACE_SECS)
    assert await store.values.encode(data, "the same value") == reference
    assert path.stat().st_mtime > time.time() - 60
    assert await store.collect_garbage() == 0 and path.exists()


async def test_a_directory_another_cluster_owns_is_never_swept(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    spill_dir = tmp_path / "large"
    store = make_store(large_value_bytes=1024, large_value_dir=spill_dir)
    await store.values.encode(b"{" + b"o" * 5000, "a value")
    [path] = spill_dir.rglob("*.value")
    _age(path, 2 * SWEEP_GRACE_SECS)
    (spill_dir / ".stepflow-owner").write_text("etcd cluster 1234, prefix /elsewhere")
    assert await store.collect_garbage() == 0
    assert path.exists()
