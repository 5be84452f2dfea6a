"""Test plugin type `recorder`: a component that logs every execution to a side file.

Crash tests compare that log with the journal: a step whose completion was journalled must never
execute again after a resume. `fail_attempts: n` in the input fails attempts 1..n (retry coverage).
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from stepflow_mesh.runtime.errors import FlowResult
from stepflow_mesh.runtime.plugins import register_plugin_type
from stepflow_mesh.runtime.plugins.base import ComponentInfo, Plugin, StepCall

GENERATION = os.environ.get("RECORDER_GENERATION", str(os.getpid()))


class RecorderPlugin(Plugin):
    static_components = True

    async def components(self) -> list[ComponentInfo]:
        return [ComponentInfo("/record", "Logs the call to a side file and echoes name/value.")]

    async def execute(self, call: StepCall) -> FlowResult:
        line = {
            "generation": self.config.get("generation", GENERATION),
            "run_id": call.run_id,
            "item": call.item_index,
            "step": call.step_id,
            "attempt": call.attempt,
            "task_id": call.task_id,
        }
        await asyncio.to_thread(_append_line, self.config["log"], json.dumps(line))
        data: dict[str, Any] = call.input
        if data.get("fail_attempts", 0) >= call.attempt:
            return FlowResult.failure(
                "COMPONENT_FAILED", f"planned failure of attempt {call.attempt}"
            )
        return FlowResult.success({"name": data.get("name"), "value": data.get("value")})


def _append_line(path: str, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_log(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


register_plugin_type("recorder", RecorderPlugin)
