"""Step overrides (flows.md §7): RFC 7396 merge patches applied to steps before a run."""

from __future__ import annotations

import copy
from typing import Any

from .errors import UserError
from .model import Flow, parse_flow


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: objects merge recursively, `null` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def apply_overrides(flow: Flow, overrides: Any, source: str = "overrides") -> Flow:
    """Return a new flow with each overridden step patched and re-parsed."""
    if overrides is None:
        return flow
    if not isinstance(overrides, dict):
        raise UserError("overrides must be an object like {steps: {<id>: {value: {...}}}}", source)
    steps = overrides.get("steps") or {}
    if not isinstance(steps, dict):
        raise UserError("'steps' must map step ids to overrides", f"{source}: steps")
    if not steps:
        return flow
    raw_steps = list(flow.raw.get("steps") or [])
    index = {s.id: s.index for s in flow.steps}
    for step_id, override in steps.items():
        where = f"{source}: steps.{step_id}"
        if step_id not in index:
            raise UserError(f"Step '{step_id}' not found in workflow", where)
        if not isinstance(override, dict) or not isinstance(override.get("value"), dict):
            raise UserError("an override needs a 'value' object", where)
        kind = override.get("$type")
        if kind is None:  # absent or explicit null (flows.md §1): the default
            kind = "merge_patch"
        if kind != "merge_patch":
            raise UserError(f"override type {kind!r} is not supported (use merge_patch)", where)
        i = index[step_id]
        raw_steps[i] = merge_patch(raw_steps[i], override["value"])
    return parse_flow({**flow.raw, "steps": raw_steps}, flow.source)
