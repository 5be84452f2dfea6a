"""`noop` and `sleep`: trivial components for benchmarks and timing tests."""

from __future__ import annotations

import asyncio
from typing import Any

from ..plugins.base import StepCall
from .base import Builtin, field_of, invalid_input, schema


async def _noop(call: StepCall) -> Any:
    return call.input


async def _sleep(call: StepCall) -> Any:
    duration = field_of(call, "duration_ms", "integer")
    if duration < 0:
        raise invalid_input("field 'duration_ms' must not be negative")
    await asyncio.sleep(duration / 1000)
    out: dict[str, Any] = {"duration_ms": duration}
    if isinstance(call.input, dict) and "passthrough" in call.input:
        out["passthrough"] = call.input["passthrough"]
    return out


NOOP = Builtin("noop", "Returns its input unchanged.", _noop, {}, {})
SLEEP = Builtin(
    "sleep",
    "Sleeps for duration_ms milliseconds, then echoes the input.",
    _sleep,
    schema({"duration_ms": {"type": "integer"}, "passthrough": {}}, ["duration_ms"]),
    schema({"duration_ms": {"type": "integer"}, "passthrough": {}}, ["duration_ms"]),
)
