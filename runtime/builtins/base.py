"""What a builtin component is, and the input checks they share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..plugins.base import StepCall


class BuiltinError(Exception):
    """A builtin's own failure: reported as a component result, never retried by transport."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid_input(message: str) -> BuiltinError:
    return BuiltinError("INVALID_INPUT", message)


@dataclass(frozen=True)
class Builtin:
    name: str
    description: str
    run: Callable[[StepCall], Awaitable[Any]]
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def field_of(call: StepCall, name: str, kind: str | None = None, *, required: bool = True) -> Any:
    """Read one input field, checking presence and JSON type; errors name the field."""
    data = call.input
    if not isinstance(data, dict):
        raise invalid_input(f"input must be an object, got {_kind(data)}")
    if name not in data or data[name] is None:
        if required:
            raise invalid_input(f"missing required field '{name}'")
        return None
    value = data[name]
    if kind is not None:
        ok = isinstance(value, _JSON_TYPES[kind])
        if kind in ("integer", "number") and isinstance(value, bool):
            ok = False
        if not ok:
            raise invalid_input(f"field '{name}' must be {kind}, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    for name, types in _JSON_TYPES.items():
        if isinstance(value, types) and not (name != "boolean" and isinstance(value, bool)):
            return name
    return "null" if value is None else type(value).__name__


def schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}
