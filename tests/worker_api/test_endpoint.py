"""The worker endpoint over real gRPC: how a worker's stream ends when its node stops it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from stepflow_mesh.runtime._pb.stepflow.v1 import tasks_pb2, tasks_pb2_grpc
from stepflow_mesh.runtime.blobs import MemoryBlobStore
from stepflow_mesh.runtime.worker_api.endpoint import WorkerEndpoint
from waiting import wait_until_async


async def test_a_retired_worker_stream_ends_cleanly_and_may_not_return() -> None:
    """The retired worker sees its stream finish with status OK (let go, not a lost
    connection) and its reconnect is UNAVAILABLE; another worker on the queue keeps its stream."""
    endpoint = WorkerEndpoint(MemoryBlobStore())
    broker = endpoint.broker
    broker.declare_queue("q")
    await endpoint.start()
    try:
        async with grpc.aio.insecure_channel(endpoint.address) as channel:
            tasks = tasks_pb2_grpc.TasksServiceStub(channel)
            leaving = tasks_pb2.PullTasksRequest(queue_name="q", worker_id="w1")
            stream = tasks.PullTasks(leaving)
            other = tasks.PullTasks(tasks_pb2.PullTasksRequest(queue_name="q", worker_id="w2"))

            def streams(count: int) -> Callable[[], Awaitable[bool]]:
                async def check() -> bool:
                    return broker.live_streams("q") == count

                return check

            await wait_until_async(streams(2))
            broker.retire("w1")
            received = await asyncio.wait_for(_drain(stream), 10)  # fails rather than hangs
            assert received == []
            assert await stream.code() == grpc.StatusCode.OK
            await wait_until_async(streams(1))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await asyncio.wait_for(_drain(tasks.PullTasks(leaving)), 10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "stopped by its node" in (refused.value.details() or "")
            assert broker.live_streams("q") == 1  # w2 is still there
            other.cancel()
    finally:
        await endpoint.close()


async def _drain(stream: Any) -> list[Any]:
    return [task async for task in stream]
