"""Run variables (flows.md §5.5): supplied values, environment lookup and secret redaction."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from .model import Flow

REDACTED = "[REDACTED]"


def env_variables(flow: Flow, supplied: Mapping[str, Any]) -> dict[str, Any]:
    """Declared variables not supplied, read from their `env_var` or `STEPFLOW_VAR_<NAME>`."""
    found: dict[str, Any] = {}
    for name, spec in flow.variables().items():
        if name in supplied:
            continue
        text = os.environ.get(spec.env_var or f"STEPFLOW_VAR_{name.upper()}")
        if text is None:
            continue
        try:
            found[name] = json.loads(text)
        except json.JSONDecodeError:
            found[name] = text
    return found


def redact(flow: Flow, variables: Mapping[str, Any]) -> dict[str, Any]:
    """Variables as they may appear in logs: secret ones replaced by `[REDACTED]`."""
    specs = flow.variables()
    return {k: REDACTED if k in specs and specs[k].is_secret else v for k, v in variables.items()}
