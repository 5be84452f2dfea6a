"""Waiting on conditions in tests, with a deadline: never a fixed sleep that races.

`wait_until` polls something in another process (a node, a worker, a file); `wait_until_async`
polls an async check in this process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
POLL_SECS = 0.05


def wait_until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """The first truthy value of `check()`; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL_SECS)


async def wait_until_async(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Until `await check()` is true; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)
