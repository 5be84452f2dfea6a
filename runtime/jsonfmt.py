"""Canonical JSON text and content hashes.

Blob ids are SHA-256 digests of the compact JSON text, so that text has to be byte-identical to
what serde_json (with ryu float formatting) writes for the same value; a Python and a Rust
runtime then agree on every id. Python's own `json` matches serde_json except for some floats
and for silently stringifying non-string keys, which is what this module corrects.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from json.encoder import encode_basestring
from typing import Any

__all__ = [
    "content_id",
    "dumps_compact",
    "dumps_pretty",
    "format_float",
    "json_blob_id",
    "json_equal",
]

# The C encoder, set up once: building a JSONEncoder per call costs more than small payloads.
# `allow_nan=False` is a backstop; `_scan` already routes non-finite floats to the slow path.
_c_encode = json.JSONEncoder(
    ensure_ascii=False, check_circular=False, allow_nan=False, separators=(",", ":")
).encode

_LEAF_TYPES = frozenset({str, int, bool, type(None)})
_CONTAINER_TYPES = (dict, list, tuple)


def format_float(value: float) -> str:
    """A float as serde_json/ryu writes it; non-finite floats become `null` as in serde_json."""
    if not math.isfinite(value):
        return "null"
    text = float.__repr__(value)
    if "e" not in text:
        # repr already has the ryu form whenever it avoids an exponent: `1.5`, `100.0`, `0.001`.
        return text
    mantissa, exp_text = text.split("e")
    exp = int(exp_text)
    if exp == -5:
        # Only 1e-5 <= |v| < 1e-4 differs in layout: ryu writes `0.0000ddd`, repr `d.ddde-05`.
        sign = "-" if mantissa.startswith("-") else ""
        digits = mantissa.lstrip("-").replace(".", "")
        return f"{sign}0.0000{digits}"
    return f"{mantissa}e{exp}"


def _floats_are_plain(floats: list[float]) -> bool:
    """True when repr writes every one canonically, i.e. 1e-4 <= |v| < 1e16 or v == 0.

    (Both bounds were checked float by float around the boundaries.) Uses C-level passes
    rather than a Python loop; overflow in the sum just sends a payload down the slow path.
    """
    if not math.isfinite(sum(floats)):
        return False
    magnitudes = list(map(abs, floats))
    return max(magnitudes) < 1e16 and min(filter(None, magnitudes), default=1.0) >= 1e-4


def _not_json(kind: type) -> TypeError:
    return TypeError(f"value of type {kind.__name__} is not JSON-serialisable")


def _check_keys(mapping: dict[Any, Any]) -> None:
    for kind in set(map(type, mapping)):
        if not issubclass(kind, str):
            raise TypeError(f"JSON object keys must be strings, not {kind.__name__}")


def _scan(container: Any) -> bool:
    """Validate a container; True when it holds a float that repr would not write canonically.

    Works per type set (`set(map(type, ...))` runs in C) so that flat containers of strings and
    ints cost little more than one C-level pass before the C encoder runs.
    """
    items: Iterable[Any]
    if isinstance(container, dict):
        _check_keys(container)
        items = container.values()
    else:
        items = container
    kinds = set(map(type, items))
    if kinds <= _LEAF_TYPES:
        return False
    has_float = has_container = False
    for kind in kinds - _LEAF_TYPES:
        if issubclass(kind, float):
            has_float = True
        elif issubclass(kind, _CONTAINER_TYPES):
            has_container = True
        elif not issubclass(kind, (str, int)):
            raise _not_json(kind)
    if has_float and not _floats_are_plain([item for item in items if isinstance(item, float)]):
        return True
    if has_container:
        for item in items:
            if isinstance(item, _CONTAINER_TYPES) and _scan(item):
                return True
    return False


def _encode(value: Any) -> str:
    """Plain recursive encoder: used when some float needs `format_float`."""
    if isinstance(value, str):
        return encode_basestring(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, dict):
        _check_keys(value)
        body = ",".join([f"{encode_basestring(k)}:{_encode(v)}" for k, v in value.items()])
        return "{" + body + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join([_encode(v) for v in value]) + "]"
    raise _not_json(type(value))


def dumps_compact(value: Any) -> str:
    """Canonical compact JSON text (the form that is hashed for blob ids)."""
    try:
        if isinstance(value, _CONTAINER_TYPES):
            if _scan(value):
                return _encode(value)
            return _c_encode(value)
        return _encode(value)
    except RecursionError:
        raise ValueError("value is nested too deeply or contains a reference cycle") from None


def _pretty(value: Any, indent: str, out: list[str]) -> None:
    if isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        _check_keys(value)
        inner = indent + "  "
        out.append("{")
        sep = "\n"
        for key, item in value.items():
            out.append(f"{sep}{inner}{encode_basestring(key)}: ")
            _pretty(item, inner, out)
            sep = ",\n"
        out.append(f"\n{indent}}}")
    elif isinstance(value, list | tuple):
        if not value:
            out.append("[]")
            return
        inner = indent + "  "
        out.append("[")
        sep = "\n"
        for item in value:
            out.append(sep + inner)
            _pretty(item, inner, out)
            sep = ",\n"
        out.append(f"\n{indent}]")
    else:
        out.append(_encode(value))


def dumps_pretty(value: Any) -> str:
    """Readable JSON (2-space indent) with the same scalars as `dumps_compact`, for humans."""
    out: list[str] = []
    try:
        _pretty(value, "", out)
    except RecursionError:
        raise ValueError("value is nested too deeply or contains a reference cycle") from None
    return "".join(out)


def content_id(data: bytes) -> str:
    """Lowercase hex SHA-256: the address of a blob in every store."""
    return hashlib.sha256(data).hexdigest()


def json_blob_id(value: Any) -> str:
    """The blob id of a JSON value, identical to the Rust runtime's for the same value."""
    return content_id(dumps_compact(value).encode("utf-8"))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "other"


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values without Python's `1 == 1.0 == True` coercions.

    Flows match on values (mock behaviours, routing conditions) where `1` and `true` must differ;
    object key order is irrelevant, arrays compare element-wise, tuples count as arrays.
    """
    kind = _kind(a)
    if kind != _kind(b):
        return False
    if kind == "object":
        if len(a) != len(b):
            return False
        return all(key in b and json_equal(item, b[key]) for key, item in a.items())
    if kind == "array":
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if kind == "other":
        return type(a) is type(b) and bool(a == b)
    return bool(a == b)
