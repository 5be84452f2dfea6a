"""What a worker's CompleteTask carried, independent of protobuf."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Success:
    output: Any


@dataclass(frozen=True)
class Failure:
    code: str  # TaskErrorCode name without prefix, e.g. COMPONENT_FAILED
    message: str
    data: dict[str, Any] | None = None


@dataclass(frozen=True)
class DiscoveredComponent:
    component_id: str
    path: str
    description: str | None = None
    input_schema: Any = None
    output_schema: Any = None


@dataclass(frozen=True)
class Components:
    components: list[DiscoveredComponent]


Outcome = Success | Failure | Components
