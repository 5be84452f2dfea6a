"""The `StateStore` contract (durability.md §3 to §7): every backend must pass the same suite.

Backend-specific setup lives only in the `store` fixture; a new backend (etcd) joins by adding a
parameter there. SQLite-only behaviour (durability on disk, group commit, error messages, crash
safety) is tested at the end of the file.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from stepflow_mesh.runtime.errors import FlowResult
from stepflow_mesh.runtime.state import events as ev
from stepflow_mesh.runtime.state.base import (
    CANCELLED,
    COMPLETED,
    FAILED,
    RUNNING,
    ActiveRoot,
    Checkpoint,
    LeaseLost,
    RunFilter,
    StateStore,
    StoreError,
)
from stepflow_mesh.runtime.state.memory import MemoryStateStore
from stepflow_mesh.runtime.state.sqlite import SqliteStateStore
from stepflow_mesh.runtime.state.sqlite_schema import SCHEMA_VERSION
from waiting import wait_until_async

FAR_FUTURE = "2999-01-01T00:00:00Z"
FAR_PAST = "2000-01-01T00:00:00Z"


def _make_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> StateStore:
    if kind == "memory":
        return MemoryStateStore()
    if kind == "etcd":
        # One etcd for the session (tests/conftest.py); a unique prefix isolates each test.
        from stepflow_mesh.registry.etcd_client import EtcdSettings
        from stepflow_mesh.registry.etcd_store import EtcdStateStore

        endpoint = request.getfixturevalue("etcd_server").endpoint
        prefix = f"/test/{uuid.uuid4().hex}"
        return EtcdStateStore(EtcdSettings([endpoint], prefix=prefix), lease_ttl_secs=2)
    return SqliteStateStore(tmp_path / "state" / "stepflow.db")


@pytest.fixture(params=["memory", "sqlite", "etcd"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    s = _make_store(request.param, tmp_path, request)
    await s.open()
    yield s
    await s.close()


# -- event helpers -------------------------------------------------------------------------------


def created(run_id: str, n_items: int = 2, flow_name: str = "demo") -> ev.Event:
    return ev.root_run_created(
        run_id,
        "flow-1",
        list(range(n_items)),
        {"v": 1},
        flow_name=flow_name,
        max_concurrency=4,
        overrides={"steps": {"a": {"value": {"x": 1}}}},
    )


def sub(run_id: str, parent: str, n_items: int = 1) -> ev.Event:
    return ev.sub_run_created(
        run_id,
        "flow-2",
        list(range(n_items)),
        parent_run_id=parent,
        item_index=0,
        step_index=1,
        subflow_key="key-" + run_id,
        flow_name="child",
    )


def started(run_id: str, item: int, step: int, attempt: int, task: str = "t") -> ev.Event:
    task_info = {
        "item_index": item,
        "step_index": step,
        "attempt": attempt,
        "task_id": task,
        "step_id": f"s{step}",
    }
    return ev.tasks_started({run_id: [task_info]})


OK = FlowResult.success({"answer": 42})
BAD = FlowResult.failure("BOOM", "it broke")


def is_rfc3339_utc_micros(text: str) -> bool:
    return (
        text.endswith("Z") and len(text.split(".")[-1]) == 7 and bool(datetime.fromisoformat(text))
    )


# -- journal ---------------------------------------------------------------------------------------


async def test_sequences_increase_per_root_and_roots_are_independent(store: StateStore) -> None:
    a_seqs: list[int] = []
    b_seqs: list[int] = []
    a_seqs += await store.append("A", [created("A")])
    b_seqs += await store.append("B", [created("B")])
    a_seqs += await store.append(
        "A", [ev.steps_needed("A", 0, [0, 1]), ev.steps_needed("A", 1, [0])]
    )
    b_seqs += await store.append("B", [ev.run_cancel_requested("B", "test")])
    a_seqs += await store.append("A", [started("A", 0, 0, 1)])

    assert len(a_seqs) == 4 and len(b_seqs) == 2
    assert a_seqs == sorted(set(a_seqs)) and b_seqs == sorted(set(b_seqs))
    journal_a = await store.read_journal("A")
    assert [e.sequence for e in journal_a] == a_seqs
    assert [e.event["type"] for e in journal_a] == [
        "root_run_created",
        "steps_needed",
        "steps_needed",
        "tasks_started",
    ]
    assert journal_a[0].event == created("A")  # stored as given, key order kept
    assert list(journal_a[0].event) == list(created("A"))
    assert all(e.root_run_id == "A" for e in journal_a)
    assert all(is_rfc3339_utc_micros(e.timestamp) for e in journal_a)
    assert [e.timestamp for e in journal_a] == sorted(e.timestamp for e in journal_a)
    journal_b = await store.read_journal("B")
    assert [e.sequence for e in journal_b] == b_seqs
    assert journal_b[1].event == {"type": "run_cancel_requested", "run_id": "B", "reason": "test"}


async def test_read_journal_from_sequence_and_latest_sequence(store: StateStore) -> None:
    assert await store.latest_sequence("A") is None
    assert await store.read_journal("A") == []
    seqs = await store.append("A", [created("A"), ev.steps_needed("A", 0, [0])])
    seqs += await store.append("A", [ev.steps_needed("A", 1, [0])])
    assert await store.latest_sequence("A") == seqs[-1]
    tail = await store.read_journal("A", seqs[1])
    assert [e.sequence for e in tail] == seqs[1:]
    assert await store.read_journal("A", seqs[-1] + 1) == []
    assert await store.append("A", []) == []


async def test_append_is_all_or_nothing(store: StateStore) -> None:
    await store.append("A", [created("A")])
    before_run = await store.get_run("A")
    malformed = {"type": "task_completed", "run_id": "A", "item_index": 0, "step_index": 0}
    batch = [ev.steps_needed("A", 0, [0]), ev.item_completed("A", 0, OK), malformed]
    with pytest.raises(KeyError):
        await store.append("A", batch)
    with pytest.raises(TypeError):
        await store.append("A", [ev.steps_needed("A", 0, [1]), {"type": "x", "bad": object()}])
    assert len(await store.read_journal("A")) == 1
    assert await store.get_run("A") == before_run
    assert await store.get_steps("A") == []
    # The store is still usable and sequences continue without a hole being reused.
    (seq,) = await store.append("A", [ev.steps_needed("A", 0, [0])])
    assert seq > (await store.read_journal("A"))[0].sequence


async def test_concurrent_appends_all_durable(store: StateStore) -> None:
    roots = [f"root-{i}" for i in range(20)]

    async def writer(task: int) -> list[int]:
        root = roots[task % len(roots)]
        return [(await store.append(root, [ev.steps_needed(root, task, [k])]))[0] for k in range(5)]

    results = await asyncio.gather(*(writer(t) for t in range(200)))
    for seqs in results:
        assert seqs == sorted(set(seqs))
    total = 0
    for index, root in enumerate(roots):
        journal = await store.read_journal(root)
        seqs = [e.sequence for e in journal]
        assert seqs == sorted(set(seqs))
        mine = sorted(s for t, r in enumerate(results) if t % len(roots) == index for s in r)
        assert seqs == mine
        total += len(journal)
    assert total == 1000


# -- projection ------------------------------------------------------------------------------------


async def test_root_run_created_projects_run_and_items(store: StateStore) -> None:
    (seq,) = await store.append("A", [created("A", n_items=3)])
    entry = (await store.read_journal("A"))[0]
    run = await store.get_run("A")
    assert run is not None
    assert (run.run_id, run.root_run_id, run.parent_run_id) == ("A", "A", None)
    assert (run.flow_id, run.flow_name, run.status) == ("flow-1", "demo", RUNNING)
    assert (run.created_at, run.created_at_seqno) == (entry.timestamp, seq)
    assert run.completed_at is None and run.finished_at_seqno is None
    assert run.variables == {"v": 1}
    assert run.overrides == {"steps": {"a": {"value": {"x": 1}}}}
    assert run.max_concurrency == 4
    assert [(i.item_index, i.status, i.result) for i in run.items] == [
        (0, RUNNING, None),
        (1, RUNNING, None),
        (2, RUNNING, None),
    ]
    # Creation is idempotent: a replayed event changes nothing.
    await store.append("A", [created("A", n_items=5, flow_name="other")])
    assert await store.get_run("A") == run
    assert await store.get_run("nope") is None


async def test_sub_run_created_belongs_to_the_tree(store: StateStore) -> None:
    await store.append("A", [created("A")])
    (seq,) = await store.append("A", [sub("A.1", parent="A", n_items=3)])
    child = await store.get_run("A.1")
    assert child is not None
    assert (child.root_run_id, child.parent_run_id, child.flow_name) == ("A", "A", "child")
    assert child.created_at_seqno == seq and child.status == RUNNING
    assert child.variables == {} and child.overrides is None and child.max_concurrency is None
    assert len(child.items) == 3


async def test_step_events_project_step_records(store: StateStore) -> None:
    await store.append("A", [created("A")])
    (needed_seq,) = await store.append("A", [ev.steps_needed("A", 0, [0, 2])])
    steps = await store.get_steps("A")
    assert [(s.step_index, s.status, s.step_id, s.attempts) for s in steps] == [
        (0, "runnable", None, 0),
        (2, "runnable", None, 0),
    ]
    assert all(s.journal_seqno == needed_seq for s in steps)

    (start_seq,) = await store.append("A", [started("A", 0, 0, attempt=2, task="task-1")])
    entry = (await store.read_journal("A", start_seq))[0]
    step = (await store.get_steps("A", 0))[0]
    assert (step.status, step.attempts, step.task_id, step.step_id) == (
        "running",
        2,
        "task-1",
        "s0",
    )
    assert (step.journal_seqno, step.updated_at) == (start_seq, entry.timestamp)

    # A lower journalled attempt never lowers the counter; steps_needed never downgrades.
    await store.append("A", [started("A", 0, 0, attempt=1, task="task-1")])
    await store.append("A", [ev.steps_needed("A", 0, [0])])
    step = (await store.get_steps("A", 0))[0]
    assert (step.status, step.attempts) == ("running", 2)

    (done_seq,) = await store.append("A", [ev.task_completed("A", 0, 0, "s0", OK)])
    step = (await store.get_steps("A", 0))[0]
    assert (step.status, step.result, step.journal_seqno) == ("completed", OK.to_json(), done_seq)
    assert step.attempts == 2 and step.task_id == "task-1"

    await store.append(
        "A", [started("A", 0, 2, attempt=1), ev.task_completed("A", 0, 2, "s2", BAD)]
    )
    step = (await store.get_steps("A", 0))[1]
    assert (step.step_index, step.status, step.result) == (2, "failed", BAD.to_json())

    await store.append("A", [ev.steps_unblocked("A", 1, [3])])
    step = (await store.get_steps("A", 1))[0]
    assert (step.step_index, step.status) == (3, "runnable")


async def test_tasks_started_spans_runs_of_the_tree(store: StateStore) -> None:
    await store.append("A", [created("A"), sub("A.1", "A")])
    both = ev.tasks_started(
        {
            "A": [{"item_index": 0, "step_index": 1, "attempt": 1, "task_id": "t1"}],
            "A.1": [{"item_index": 0, "step_index": 0, "attempt": 3, "task_id": "t2"}],
        }
    )
    await store.append("A", [both])
    (root_step,) = await store.get_steps("A")
    (child_step,) = await store.get_steps("A.1")
    assert (root_step.task_id, root_step.attempts, root_step.step_id) == ("t1", 1, None)
    assert (child_step.task_id, child_step.attempts, child_step.status) == ("t2", 3, "running")


async def test_item_and_run_completion(store: StateStore) -> None:
    await store.append("A", [created("A", n_items=2)])
    await store.append("A", [ev.item_completed("A", 0, OK)])
    entry = (await store.read_journal("A"))[-1]
    run = await store.get_run("A")
    assert run is not None
    first = run.items[0]
    assert (first.status, first.result, first.completed_at) == (
        COMPLETED,
        OK.to_json(),
        entry.timestamp,
    )
    await store.append("A", [ev.item_completed("A", 1, BAD)])
    await store.append("A", [ev.run_cancel_requested("A")])
    run = await store.get_run("A")
    assert run is not None and run.status == RUNNING  # cancel request alone changes nothing
    assert (run.items[1].status, run.items[1].result) == (FAILED, BAD.to_json())

    (seq,) = await store.append("A", [ev.run_completed("A", FAILED)])
    done = (await store.read_journal("A"))[-1]
    run = await store.get_run("A")
    assert run is not None
    assert (run.status, run.completed_at, run.finished_at_seqno) == (FAILED, done.timestamp, seq)


async def test_cancelled_is_never_overwritten(store: StateStore) -> None:
    await store.append("A", [created("A", n_items=2), ev.item_completed("A", 0, OK)])
    (seq,) = await store.append("A", [ev.run_completed("A", CANCELLED)])
    await store.append("A", [ev.run_completed("A", COMPLETED)])
    await store.append("A", [ev.run_completed("A", FAILED)])
    run = await store.get_run("A")
    assert run is not None
    assert (run.status, run.finished_at_seqno) == (CANCELLED, seq)
    # Items that never finished end cancelled too; finished ones keep their result.
    assert [i.status for i in run.items] == [COMPLETED, CANCELLED]


async def test_events_of_unknown_runs_are_ignored(store: StateStore) -> None:
    events = [
        ev.steps_needed("ghost", 0, [0]),
        started("ghost", 0, 0, 1),
        ev.task_completed("ghost", 0, 0, "s0", OK),
        ev.steps_unblocked("ghost", 0, [1]),
        ev.item_completed("ghost", 0, OK),
        ev.run_cancel_requested("ghost"),
        ev.run_completed("ghost", COMPLETED),
        {"type": "some_future_event", "run_id": "ghost"},
    ]
    seqs = await store.append("A", events)
    assert len(seqs) == len(events)
    assert await store.get_run("ghost") is None
    assert await store.get_steps("ghost") == []
    # An item index outside the run is ignored as well.
    await store.append("B", [created("B", n_items=1), ev.item_completed("B", 7, OK)])
    run = await store.get_run("B")
    assert run is not None and len(run.items) == 1 and run.items[0].status == RUNNING


# -- metadata queries ------------------------------------------------------------------------------


async def test_list_runs_filters_order_and_paging(store: StateStore) -> None:
    await store.append("A", [created("A", flow_name="alpha")])
    await store.append("B", [created("B", flow_name="beta")])
    await store.append("A", [sub("A.1", "A"), sub("A.2", "A")])
    await store.append("A", [sub("A.1.1", "A.1")])
    await store.append("C", [created("C", flow_name="alpha")])
    await store.append("B", [ev.run_completed("B", COMPLETED)])

    async def ids(**kw: Any) -> list[str]:
        return [r.run_id for r in await store.list_runs(RunFilter(**kw))]

    assert await ids() == ["C", "A.1.1", "A.2", "A.1", "B", "A"]
    assert [r.run_id for r in await store.list_runs()] == await ids()
    assert await ids(roots_only=True) == ["C", "B", "A"]
    assert await ids(status=COMPLETED) == ["B"]
    assert await ids(status=RUNNING, roots_only=True) == ["C", "A"]
    assert await ids(flow_name="alpha") == ["C", "A"]
    assert await ids(root_run_id="A") == ["A.1.1", "A.2", "A.1", "A"]
    assert await ids(parent_run_id="A") == ["A.2", "A.1"]
    assert await ids(limit=2) == ["C", "A.1.1"]
    assert await ids(limit=2, offset=2) == ["A.2", "A.1"]
    assert await ids(offset=5) == ["A"]
    assert await ids(offset=9) == []
    assert await ids(flow_name="none") == []
    runs = await store.list_runs(RunFilter(root_run_id="A", limit=1, offset=3))
    assert len(runs) == 1 and runs[0].run_id == "A" and len(runs[0].items) == 2


async def test_get_steps_orders_by_step_then_item(store: StateStore) -> None:
    await store.append("A", [created("A", n_items=3)])
    await store.append(
        "A",
        [
            ev.steps_needed("A", 2, [1, 0]),
            ev.steps_needed("A", 0, [2, 1]),
            ev.steps_needed("A", 1, [0]),
        ],
    )
    steps = await store.get_steps("A")
    assert [(s.step_index, s.item_index) for s in steps] == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0)]
    assert [s.step_index for s in await store.get_steps("A", 2)] == [0, 1]
    assert await store.get_steps("A", 9) == []


async def test_list_active_roots(store: StateStore) -> None:
    await store.append("A", [created("A"), ev.steps_needed("A", 0, [0])])
    (b_seq,) = await store.append("B", [created("B")])
    await store.append("C", [created("C"), ev.run_completed("C", COMPLETED)])
    seqs = await store.append("A", [sub("A.1", "A"), ev.run_completed("A.1", COMPLETED)])
    active = sorted(await store.list_active_roots(), key=lambda r: r.root_run_id)
    assert active == [ActiveRoot("A", seqs[-1], 4), ActiveRoot("B", b_seq, 1)]


async def test_compact_drops_covered_entries(store: StateStore) -> None:
    seqs = await store.append(
        "A", [created("A")] + [ev.steps_needed("A", 0, [i]) for i in range(4)]
    )
    assert await store.compact("A", seqs[2]) == 3
    assert [e.sequence for e in await store.read_journal("A")] == seqs[3:]
    assert await store.compact("A", seqs[2]) == 0
    assert await store.compact("unknown", 10) == 0
    assert await store.latest_sequence("A") == seqs[-1]
    assert await store.compact("A", seqs[-1]) == 2
    assert await store.read_journal("A") == []
    # Sequences keep increasing after the journal was emptied; metadata is untouched.
    (after,) = await store.append("A", [ev.steps_needed("A", 1, [0])])
    assert after > seqs[-1]
    assert len(await store.get_steps("A")) == 5
    active = await store.list_active_roots()
    assert active == [ActiveRoot("A", after, 1)]


async def test_finalize_keeps_one_record_and_metadata(store: StateStore) -> None:
    await store.append("A", [created("A", n_items=2), sub("A.1", "A")])
    await store.append("A", [started("A", 0, 0, 1), ev.task_completed("A", 0, 0, "s0", OK)])
    await store.append("A", [ev.run_completed("A.1", COMPLETED)])
    await store.append("A", [ev.item_completed("A", 0, OK), ev.item_completed("A", 1, BAD)])
    last = (await store.append("A", [ev.run_completed("A", FAILED)]))[0]
    await store.put_checkpoint("A", last, b"state")
    await store.append("B", [created("B")])
    run_before = await store.get_run("A")
    steps_before = await store.get_steps("A")

    assert await store.finished_roots(FAR_FUTURE) == ["A"]
    assert await store.finished_roots(FAR_PAST) == []
    with pytest.raises(ValueError, match="B"):
        await store.finalize("B")  # still running: its journal must stay
    await store.finalize("A")

    (final,) = await store.read_journal("A")
    assert final.sequence > last
    assert final.event == {
        "type": "run_completed",
        "run_id": "A",
        "status": FAILED,
        "final": True,
        "items": [OK.to_json(), BAD.to_json()],
    }
    assert await store.latest_sequence("A") == final.sequence
    assert await store.get_checkpoint("A") is None
    assert await store.get_run("A") == run_before
    assert await store.get_run("A.1") is not None
    assert await store.get_steps("A") == steps_before
    assert await store.finished_roots(FAR_FUTURE) == []
    assert [r.root_run_id for r in await store.list_active_roots()] == ["B"]
    await store.finalize("unknown")  # nothing to do


async def test_finished_roots_respects_time_and_ignores_sub_runs(store: StateStore) -> None:
    await store.append("A", [created("A"), sub("A.1", "A"), ev.run_completed("A.1", COMPLETED)])
    assert await store.finished_roots(FAR_FUTURE) == []
    await store.append("A", [ev.run_completed("A", COMPLETED)])
    run = await store.get_run("A")
    assert run is not None and run.completed_at is not None
    assert await store.finished_roots(run.completed_at) == []
    later = datetime.fromisoformat(run.completed_at) + timedelta(microseconds=1)
    assert await store.finished_roots(later.isoformat()) == ["A"]
    assert await store.finished_roots("2999-01-01T00:00:00+00:00") == ["A"]


async def test_delete_tree_removes_everything_of_the_tree(store: StateStore) -> None:
    await store.append("A", [created("A"), sub("A.1", "A"), ev.steps_needed("A.1", 0, [0])])
    await store.append("A", [ev.steps_needed("A", 0, [0]), ev.run_completed("A", COMPLETED)])
    await store.put_checkpoint("A", 1, b"x")
    assert await store.acquire_lease("A", "node-1", 60) is None
    await store.append("B", [created("B"), ev.steps_needed("B", 0, [0])])

    await store.delete_tree("A")
    for run_id in ("A", "A.1"):
        assert await store.get_run(run_id) is None
        assert await store.get_steps(run_id) == []
    assert await store.read_journal("A") == []
    assert await store.latest_sequence("A") is None
    assert await store.get_checkpoint("A") is None
    assert await store.acquire_lease("A", "node-2", 60) is None  # lease went with the tree
    assert await store.finished_roots(FAR_FUTURE) == []
    assert [r.run_id for r in await store.list_runs()] == ["B"]
    assert len(await store.read_journal("B")) == 2
    assert len(await store.get_steps("B")) == 1
    await store.delete_tree("A")  # idempotent


# -- checkpoints -----------------------------------------------------------------------------------


async def test_checkpoints_put_replace_get_delete(store: StateStore) -> None:
    assert await store.get_checkpoint("A") is None
    await store.put_checkpoint("A", 5, b"\x00first")
    await store.put_checkpoint("B", 7, b"other")
    assert await store.get_checkpoint("A") == Checkpoint(5, b"\x00first")
    await store.put_checkpoint("A", 9, b"second")
    assert await store.get_checkpoint("A") == Checkpoint(9, b"second")
    await store.delete_checkpoint("A")
    await store.delete_checkpoint("A")  # missing is fine
    assert await store.get_checkpoint("A") is None
    assert await store.get_checkpoint("B") == Checkpoint(7, b"other")


# -- leases and fencing ----------------------------------------------------------------------------


async def test_lease_acquire_renew_refuse_release(store: StateStore) -> None:
    assert await store.acquire_lease("A", "n1", 60) is None
    assert await store.acquire_lease("A", "n1", 60) is None  # renew by the owner
    assert await store.acquire_lease("A", "n2", 60) == "n1"
    assert await store.acquire_lease("B", "n2", 60) is None  # leases are per root
    await store.release_lease("A", "n2")  # not the owner: no effect
    assert await store.acquire_lease("A", "n2", 60) == "n1"
    await store.release_lease("A", "n1")
    await store.release_lease("A", "n1")  # absent is fine
    assert await store.acquire_lease("A", "n2", 60) is None


async def test_expired_lease_is_taken_over(store: StateStore) -> None:
    assert await store.acquire_lease("A", "n1", 0.05) is None
    assert await store.acquire_lease("A", "n2", 60) == "n1"

    async def taken() -> bool:
        return await store.acquire_lease("A", "n2", 60) is None

    await wait_until_async(taken)
    assert await store.acquire_lease("A", "n1", 60) == "n2"


async def test_fenced_append(store: StateStore) -> None:
    with pytest.raises(LeaseLost):
        await store.append("A", [created("A")], owner="n1")  # no lease at all
    assert await store.acquire_lease("A", "n1", 0.05) is None
    (first,) = await store.append("A", [created("A")], owner="n1")

    async def taken() -> bool:
        return await store.acquire_lease("A", "n2", 60) is None

    await wait_until_async(taken)
    with pytest.raises(LeaseLost):
        await store.append("A", [ev.steps_needed("A", 0, [0])], owner="n1")
    assert [e.sequence for e in await store.read_journal("A")] == [first]
    assert await store.get_steps("A") == []
    await store.append("A", [ev.steps_needed("A", 0, [0])], owner="n2")
    await store.append("A", [ev.steps_needed("A", 0, [1])])  # unfenced: always accepted
    assert len(await store.read_journal("A")) == 3
    await store.release_lease("A", "n2")
    with pytest.raises(LeaseLost):
        await store.append("A", [ev.steps_needed("A", 0, [2])], owner="n2")


async def test_failed_fence_fails_only_its_own_append(store: StateStore) -> None:
    assert await store.acquire_lease("A", "n1", 60) is None
    await store.append("A", [created("A")], owner="n1")
    calls = [
        store.append("A", [ev.steps_needed("A", 0, [i])], owner="n1" if i % 3 else "intruder")
        for i in range(30)
    ]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    lost = [i for i, o in enumerate(outcomes) if isinstance(o, LeaseLost)]
    assert lost == list(range(0, 30, 3))
    assert all(isinstance(o, list) for i, o in enumerate(outcomes) if i % 3)
    assert sorted(s.step_index for s in await store.get_steps("A")) == [
        i for i in range(30) if i % 3
    ]


# -- SQLite only -----------------------------------------------------------------------------------


async def test_sqlite_reopen_sees_everything(tmp_path: Path) -> None:
    path = tmp_path / "db" / "stepflow.db"
    first = SqliteStateStore(path)
    await first.open()
    seqs = await first.append("A", [created("A"), ev.item_completed("A", 0, OK)])
    await first.append("A", [started("A", 0, 0, 2, "t")])
    await first.put_checkpoint("A", seqs[-1], b"cp")
    assert await first.acquire_lease("A", "n1", 60) is None
    await first.close()

    second = SqliteStateStore(path)
    await second.open()
    try:
        assert [e.sequence for e in await second.read_journal("A")] == [*seqs, seqs[-1] + 1]
        run = await second.get_run("A")
        assert run is not None and run.items[0].result == OK.to_json()
        assert (await second.get_steps("A"))[0].attempts == 2
        assert await second.get_checkpoint("A") == Checkpoint(seqs[-1], b"cp")
        assert await second.acquire_lease("A", "n2", 60) == "n1"  # leases are shared
        (next_seq,) = await second.append("A", [ev.steps_needed("A", 1, [0])])
        assert next_seq == seqs[-1] + 2
    finally:
        await second.close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_sqlite_two_stores_on_one_file_fence_each_other(tmp_path: Path) -> None:
    """Two processes (e.g. `run` and `resume`) share the file: leases and sequences hold."""
    path = tmp_path / "stepflow.db"
    first, second = SqliteStateStore(path), SqliteStateStore(path)
    await first.open()
    await second.open()
    try:
        assert await first.acquire_lease("A", "proc-1", 60) is None
        assert await second.acquire_lease("A", "proc-2", 60) == "proc-1"
        await first.append("A", [created("A")], owner="proc-1")
        with pytest.raises(LeaseLost):
            await second.append("A", [ev.steps_needed("A", 0, [0])], owner="proc-2")
        calls = [
            (first if i % 2 else second).append("A", [ev.steps_needed("A", 0, [i])])
            for i in range(40)
        ]
        seqs = [s for r in await asyncio.gather(*calls) for s in r]
        assert len(set(seqs)) == 40
        journal = await second.read_journal("A")
        assert [e.sequence for e in journal] == list(range(1, 42))
        assert len(await first.get_steps("A")) == 40
    finally:
        await first.close()
        await second.close()
    with pytest.raises(StoreError, match="not open"):
        await first.append("A", [created("A")])


async def test_sqlite_group_commit_groups_concurrent_appends(tmp_path: Path) -> None:
    path = tmp_path / "stepflow.db"
    store = SqliteStateStore(path)
    await store.open()
    try:
        # Hold SQLite's write lock from outside so every append queues up behind the first one.
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        tasks = [
            asyncio.ensure_future(store.append(f"r{i % 7}", [ev.steps_needed("x", i, [0])]))
            for i in range(100)
        ]
        await asyncio.sleep(0.05)
        blocker.execute("COMMIT")
        blocker.close()
        await asyncio.gather(*tasks)
        assert store.committed_appends == 100
        assert store.commits <= 3, store.commits
    finally:
        await store.close()


async def test_sqlite_commits_fewer_times_than_appends_under_load(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "stepflow.db")
    await store.open()
    try:

        async def writer(task: int) -> None:
            for k in range(5):
                await store.append(f"r{task % 20}", [ev.steps_needed("x", task, [k])])

        await asyncio.gather(*(writer(t) for t in range(200)))
        assert store.committed_appends == 1000
        assert store.commits < store.committed_appends / 4, store.commits
    finally:
        await store.close()


async def test_sqlite_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "stepflow.db"
    path.write_bytes(b"this is certainly not an SQLite database file\n" * 100)
    store = SqliteStateStore(path)
    with pytest.raises(StoreError, match="not a SQLite database") as info:
        await store.open()
    assert str(path) in str(info.value)


async def test_sqlite_unwritable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state directory should be")
    store = SqliteStateStore(blocker / ".stepflow" / "stepflow.db")
    with pytest.raises(StoreError, match="state directory") as info:
        await store.open()
    assert str(blocker) in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
async def test_sqlite_read_only_directory(tmp_path: Path) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        store = SqliteStateStore(directory / "stepflow.db")
        with pytest.raises(StoreError, match="not writable") as info:
            await store.open()
        assert str(directory) in str(info.value)
    finally:
        directory.chmod(0o700)


async def test_sqlite_locked_beyond_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "stepflow.db"
    store = SqliteStateStore(path, busy_timeout_secs=0.1)
    await store.open()
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        await store.append("A", [created("A")])
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match="locked") as info:
            await store.append("A", [ev.steps_needed("A", 0, [0])])
        assert str(path) in str(info.value)
        blocker.execute("ROLLBACK")
        await store.append("A", [ev.steps_needed("A", 0, [0])])  # usable again
        assert len(await store.read_journal("A")) == 2
    finally:
        blocker.close()
        await store.close()


async def test_sqlite_disk_full_keeps_committed_entries(tmp_path: Path) -> None:
    path = tmp_path / "stepflow.db"
    store = SqliteStateStore(path, max_page_count=40)
    await store.open()
    try:
        await store.append("A", [created("A")])
        committed = 1
        big = "x" * 20_000
        with pytest.raises(StoreError, match="disk full") as info:
            for i in range(100):
                await store.append(
                    "A", [ev.item_completed("A", 0, FlowResult.success(big + str(i)))]
                )
                committed += 1
        assert str(path) in str(info.value)
        journal = await store.read_journal("A")
        assert len(journal) == committed
        assert [e.sequence for e in journal] == list(range(1, committed + 1))
        # Small writes still fit; the store stays usable.
        await store.append("A", [ev.run_cancel_requested("A")])
    finally:
        await store.close()
    reopened = SqliteStateStore(path)
    await reopened.open()
    try:
        assert len(await reopened.read_journal("A")) == committed + 1
    finally:
        await reopened.close()


async def test_sqlite_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "stepflow.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer") as info:
        await SqliteStateStore(path).open()
    assert str(path) in str(info.value)


_KILL_SCRIPT = """
import asyncio, sys
from stepflow_mesh.runtime.state import events as ev
from stepflow_mesh.runtime.state.sqlite import SqliteStateStore

async def main() -> None:
    store = SqliteStateStore(sys.argv[1])
    await store.open()
    await store.append("A", [ev.root_run_created("A", "f", [1], {})])
    for i in range(4):
        await store.append("A", [ev.steps_needed("A", 0, [i])])
        print("appended", i, flush=True)
    await store.close()

asyncio.run(main())
"""


def test_sqlite_fault_injector_kills_after_durable_events(tmp_path: Path) -> None:
    path = tmp_path / "stepflow.db"
    env = dict(os.environ, STEPFLOW_FAULT_KILL_AFTER_EVENTS="3")
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_SCRIPT, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    # Killed after the 3rd commit, before that append returned to its caller.
    assert proc.stdout.split("\n")[:-1] == ["appended 0"]

    async def check() -> None:
        store = SqliteStateStore(path)
        await store.open()
        try:
            journal = await store.read_journal("A")
            assert [e.sequence for e in journal] == [1, 2, 3]
            assert [e.event["type"] for e in journal] == ["root_run_created"] + ["steps_needed"] * 2
        finally:
            await store.close()

    asyncio.run(check())
