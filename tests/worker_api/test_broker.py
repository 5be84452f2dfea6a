"""TaskBroker: FIFO queues, flow control, claims, first-result-wins, re-queue, timeouts."""

from __future__ import annotations

import asyncio
import time

import pytest
from stepflow_mesh.runtime.worker_api import broker as broker_module
from stepflow_mesh.runtime.worker_api.broker import TaskBroker, Timeouts, UnknownQueue, UnknownTask


@pytest.fixture
async def broker() -> TaskBroker:
    b = TaskBroker()
    b.declare_queue("q")
    yield b  # type: ignore[misc]
    await b.close()


async def test_task_goes_to_a_stream_and_first_result_wins(broker: TaskBroker) -> None:
    async with broker.open_stream("q", "w1") as stream:
        pending = asyncio.create_task(broker.dispatch("q", "t1", "payload", Timeouts()))
        delivered = await stream.outbox.get()
        assert (delivered.task_id, delivered.payload) == ("t1", "payload")
        assert broker.heartbeat("t1", "w1") == (False, False)
        broker.complete("t1", {"output": 42})
        with pytest.raises(UnknownTask):
            broker.complete("t1", {"output": 43})
        assert await pending == {"output": 42}
    with pytest.raises(UnknownTask):
        broker.heartbeat("t1", "w1")


async def test_a_stream_gets_no_second_task_until_it_claims_the_first(broker: TaskBroker) -> None:
    async with broker.open_stream("q", "w1") as stream:
        first = asyncio.create_task(broker.dispatch("q", "t1", 1, Timeouts()))
        second = asyncio.create_task(broker.dispatch("q", "t2", 2, Timeouts()))
        assert (await stream.outbox.get()).task_id == "t1"
        await asyncio.sleep(0)  # let the second dispatch register
        assert stream.outbox.empty()  # t2 waits: t1 is delivered but unclaimed
        broker.heartbeat("t1", "w1")
        assert (await stream.outbox.get()).task_id == "t2"
        broker.complete("t1", "a")
        broker.complete("t2", "b")
        assert await asyncio.gather(first, second) == ["a", "b"]


async def test_an_idle_worker_gets_work_a_busy_one_would_hold(broker: TaskBroker) -> None:
    async with broker.open_stream("q", "busy") as busy, broker.open_stream("q", "idle") as idle:
        first = asyncio.create_task(broker.dispatch("q", "t1", 1, Timeouts()))
        second = asyncio.create_task(broker.dispatch("q", "t2", 2, Timeouts()))
        got = {(await busy.outbox.get()).task_id, (await idle.outbox.get()).task_id}
        assert got == {"t1", "t2"}
        broker.complete("t1", 1)
        broker.complete("t2", 2)
        await asyncio.gather(first, second)


async def test_closing_a_stream_requeues_its_unclaimed_task(broker: TaskBroker) -> None:
    pending = asyncio.create_task(broker.dispatch("q", "t1", 1, Timeouts()))
    async with broker.open_stream("q", "w1") as stream:
        await stream.outbox.get()  # delivered, never claimed
    async with broker.open_stream("q", "w2") as stream:
        again = await stream.outbox.get()
        assert again.task_id == "t1"
        broker.heartbeat("t1", "w2")
        broker.complete("t1", "done")
    assert await pending == "done"


async def test_a_second_worker_heartbeating_a_claimed_task_is_told_to_abort(
    broker: TaskBroker,
) -> None:
    async with broker.open_stream("q", "w1") as stream:
        pending = asyncio.create_task(broker.dispatch("q", "t1", 1, Timeouts()))
        await stream.outbox.get()
        assert broker.heartbeat("t1", "w1") == (False, False)
        assert broker.heartbeat("t1", "w2") == (True, True)
        broker.abort_run("run-x")  # other run: no effect
        assert broker.heartbeat("t1", "w1") == (False, False)
        broker.complete("t1", None)
        await pending


async def test_cancelled_run_aborts_on_next_heartbeat(broker: TaskBroker) -> None:
    async with broker.open_stream("q", "w1") as stream:
        pending = asyncio.create_task(broker.dispatch("q", "t1", 1, Timeouts(), run_id="r1"))
        await stream.outbox.get()
        broker.heartbeat("t1", "w1")
        broker.abort_run("r1")
        assert broker.heartbeat("t1", "w1") == (True, False)
        broker.complete("t1", "cancelled")
        await pending


async def test_queue_timeout(broker: TaskBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_module, "WATCHDOG_INTERVAL_SECS", 0.01)
    with pytest.raises(TimeoutError, match="timed out waiting for worker to start"):
        await broker.dispatch("q", "t1", 1, Timeouts(queue_secs=0.05))


async def test_heartbeat_timeout(broker: TaskBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_module, "WATCHDOG_INTERVAL_SECS", 0.01)
    monkeypatch.setattr(broker_module, "HEARTBEAT_TIMEOUT_SECS", 0.05)
    async with broker.open_stream("q", "w1") as stream:
        pending = asyncio.create_task(broker.dispatch("q", "t1", 1, Timeouts()))
        await stream.outbox.get()
        broker.heartbeat("t1", "w1")
        with pytest.raises(TimeoutError, match="no heartbeat received"):
            await pending


async def test_unknown_queue_and_waiting_for_a_new_stream(broker: TaskBroker) -> None:
    with pytest.raises(UnknownQueue):
        await broker.dispatch("nope", "t1", 1, Timeouts())
    before = time.monotonic()
    assert not await broker.wait_for_stream("q", before, 0.01)
    waiter = asyncio.create_task(broker.wait_for_stream("q", before, 5))
    async with broker.open_stream("q", "w1"):
        assert await waiter
