"""JSON ↔ protobuf `Value`/`Struct` (worker-protocol.md §1.1).

Whole finite numbers that fit in int64 come back as JSON integers (protobuf has only doubles);
NaN and infinities become null. Structs are read with sorted keys, written in the value's order.
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import struct_pb2

_INT64 = 2**63


def to_value(data: Any) -> struct_pb2.Value:
    value = struct_pb2.Value()
    _fill(value, data)
    return value


def to_struct(data: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    for key, item in data.items():
        _fill(struct.fields[key], item)
    return struct


def _fill(value: struct_pb2.Value, data: Any) -> None:
    if data is None:
        value.null_value = struct_pb2.NULL_VALUE
    elif isinstance(data, bool):
        value.bool_value = data
    elif isinstance(data, int | float):
        value.number_value = float(data)
    elif isinstance(data, str):
        value.string_value = data
    elif isinstance(data, dict):
        value.struct_value.SetInParent()
        for key, item in data.items():
            _fill(value.struct_value.fields[str(key)], item)
    elif isinstance(data, list | tuple):
        value.list_value.SetInParent()
        for item in data:
            _fill(value.list_value.values.add(), item)
    else:
        raise TypeError(f"not a JSON value: {type(data).__name__}")


def from_value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "bool_value":
        return value.bool_value
    if kind == "number_value":
        return _number(value.number_value)
    if kind == "string_value":
        return value.string_value
    if kind == "struct_value":
        return from_struct(value.struct_value)
    return [from_value(v) for v in value.list_value.values]


def from_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    return {key: from_value(struct.fields[key]) for key in sorted(struct.fields)}


def _number(number: float) -> int | float | None:
    if math.isnan(number) or math.isinf(number):
        return None
    if number.is_integer() and -_INT64 <= number < _INT64:
        return int(number)
    return number
