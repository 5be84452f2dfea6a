"""Canonical JSON: the text is hashed into blob ids, so it must match serde_json byte for byte."""

from __future__ import annotations

import enum
import hashlib
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stepflow_mesh.runtime.jsonfmt import (
    content_id,
    dumps_compact,
    dumps_pretty,
    format_float,
    json_blob_id,
    json_equal,
)

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=15,
)
FLOATLESS_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=15,
)


def reference_float(value: float) -> str:
    """The ryu/serde_json layout, written straight from its definition (digits D, exponent x)."""
    if not math.isfinite(value):
        return "null"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    text = repr(abs(value))
    if value == 0:
        return sign + "0.0"
    mantissa, _, exp_text = text.partition("e")
    whole, _, frac = mantissa.partition(".")
    x = int(exp_text or "0") - len(frac)
    digits = (whole + frac).lstrip("0")
    while digits.endswith("0"):
        digits = digits[:-1]
        x += 1
    n = len(digits)
    kk = n + x
    if x >= 0 and kk <= 16:
        body = digits + "0" * x + ".0"
    elif 0 < kk <= 16:
        body = digits[:kk] + "." + digits[kk:]
    elif -5 < kk <= 0:
        body = "0." + "0" * -kk + digits
    elif n == 1:
        body = f"{digits}e{kk - 1}"
    else:
        body = f"{digits[0]}.{digits[1:]}e{kk - 1}"
    return sign + body


def reference_compact(value: Any) -> str:
    """Compact JSON built independently: json.dumps for everything but floats."""
    if isinstance(value, float):
        return reference_float(value)
    if isinstance(value, dict):
        items = [f"{reference_compact(k)}:{reference_compact(v)}" for k, v in value.items()]
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(reference_compact(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


# --- check values shared with the Rust runtime ---------------------------------------------


def test_blob_id_of_string() -> None:
    expected = "5aa762ae383fbb727af3c7a36d4940a5b8c40a989452d2304fc958ff3f354e7a"
    assert json_blob_id("hello") == expected


def test_blob_id_of_nested_object() -> None:
    value = {
        "message": "Hello, blobs!",
        "number": 42,
        "nested": {"array": [1, 2, 3], "boolean": True},
    }
    expected = "868591347a854ba1d0f4875b2dd44e1e8335052af03725a9819f89e0142318b0"
    assert json_blob_id(value) == expected


def test_blob_id_of_deep_object() -> None:
    value = {"simple": "test", "complex": {"deeply": {"nested": {"value": "works"}}}}
    expected = "aa05cc227a02bd66a2a91fde7500be122d28e87c45832d1aa9cb0b432eef7e04"
    assert json_blob_id(value) == expected


def test_content_id_is_lowercase_sha256() -> None:
    assert content_id(b"") == hashlib.sha256(b"").hexdigest()
    assert content_id(b"abc") == content_id(b"abc").lower()
    assert len(content_id(b"abc")) == 64


# --- floats ------------------------------------------------------------------------------------

FLOAT_EXAMPLES = [
    (1e20, "1e20"),
    (1.5e-7, "1.5e-7"),
    (1e-5, "0.00001"),
    (1.5e-5, "0.000015"),
    (1e-4, "0.0001"),
    (1e16, "1e16"),
    (1.5e16, "1.5e16"),
    (1e15, "1000000000000000.0"),
    (100.0, "100.0"),
    (0.1, "0.1"),
    (123456.789, "123456.789"),
    (-0.0, "-0.0"),
    (0.0, "0.0"),
    (-2.5, "-2.5"),
    (-1e-7, "-1e-7"),
    (-1.25e-5, "-0.0000125"),
    (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e308"),
    (math.inf, "null"),
    (-math.inf, "null"),
    (math.nan, "null"),
]


@pytest.mark.parametrize(("value", "expected"), FLOAT_EXAMPLES)
def test_float_format(value: float, expected: str) -> None:
    assert format_float(value) == expected
    assert dumps_compact(value) == expected
    # Inside containers too: those go through the C-encoder fast path when repr is canonical.
    assert dumps_compact([value]) == f"[{expected}]"
    assert dumps_compact({"k": value, "s": "x"}) == f'{{"k":{expected},"s":"x"}}'
    assert reference_float(value) == expected


@settings(max_examples=200)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_format_matches_ryu_layout(value: float) -> None:
    expected = reference_float(value)
    assert format_float(value) == expected
    assert dumps_compact([1, value, "x"]) == f'[1,{expected},"x"]'
    assert float(expected) == value


def test_float_format_across_magnitudes() -> None:
    for exponent in range(-324, 309):
        for mantissa in ("1", "1.5", "9.999999999999999", "2.2250738585072014", "4.9"):
            value = float(f"{mantissa}e{exponent}")
            for near in (math.nextafter(value, 0.0), value, math.nextafter(value, math.inf)):
                assert format_float(near) == reference_float(near)
                assert dumps_compact([near]) == f"[{reference_float(near)}]"


# --- compact text ------------------------------------------------------------------------------


def test_compact_layout_and_key_order() -> None:
    value = {"b": [1, True, False, None], "a": {"z": "y"}, "c": ""}
    assert dumps_compact(value) == '{"b":[1,true,false,null],"a":{"z":"y"},"c":""}'


def test_bool_is_not_an_int() -> None:
    assert dumps_compact([True, 1, False, 0]) == "[true,1,false,0]"


def test_string_escapes() -> None:
    text = 'q"b\\/\b\f\n\r\t\x00\x01\x1f\x7fé✓\u2028😀'
    expected = '"q\\"b\\\\/\\b\\f\\n\\r\\t\\u0000\\u0001\\u001f\x7fé✓\u2028😀"'
    assert dumps_compact(text) == expected
    assert dumps_compact([text]) == f"[{expected}]"
    assert dumps_compact({text: 1.5e-7}) == f"{{{expected}:1.5e-7}}"


def test_tuples_are_arrays() -> None:
    assert dumps_compact((1, (2, 3.5e-9), [])) == "[1,[2,3.5e-9],[]]"


def test_subclasses_of_json_types() -> None:
    class Color(enum.IntEnum):
        RED = 1

    class Tag(str):
        pass

    class Frac(float):
        pass

    assert dumps_compact({Tag("k"): [Color.RED, Tag("v"), Frac(1e-6)]}) == '{"k":[1,"v",1e-6]}'
    assert dumps_compact({Tag("k"): [Color.RED, Tag("v")]}) == '{"k":[1,"v"]}'


@pytest.mark.parametrize(
    "value",
    [
        {1: "a"},
        {"a": {None: 1}},
        {"a": [{True: 1}]},
        {(1, 2): 1},
        {1.5: "x", "y": 1e-9},
    ],
)
def test_non_string_keys_are_rejected(value: Any) -> None:
    with pytest.raises(TypeError, match="keys must be strings"):
        dumps_compact(value)
    with pytest.raises(TypeError, match="keys must be strings"):
        dumps_pretty(value)


@pytest.mark.parametrize(
    "value", [{1, 2}, [object()], {"a": b"bytes"}, {"a": [1e-9, {"b": frozenset()}]}, object()]
)
def test_non_json_values_are_rejected(value: Any) -> None:
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        dumps_compact(value)


def test_reference_cycle_is_an_error() -> None:
    value: list[Any] = []
    value.append(value)
    with pytest.raises(ValueError, match="cycle"):
        dumps_compact(value)


@settings(max_examples=200)
@given(JSON_VALUES)
def test_compact_round_trips_through_json(value: Any) -> None:
    # One property test for several facts: hypothesis' generation dominates the run time.
    text = dumps_compact(value)
    assert text == reference_compact(value)
    assert json_equal(json.loads(text), value)
    assert json_equal(value, json.loads(json.dumps(value)))
    assert json_blob_id(value) == content_id(text.encode("utf-8"))
    pretty = dumps_pretty(value)
    assert json_equal(json.loads(pretty), value)
    assert dumps_compact(json.loads(pretty)) == text


@settings(max_examples=200)
@given(FLOATLESS_VALUES)
def test_compact_without_floats_is_pythons_compact_json(value: Any) -> None:
    assert dumps_compact(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- pretty text -------------------------------------------------------------------------------


def test_pretty_layout() -> None:
    value = {"b": [1, {}, [], {"c": None}], "a": 1e20, "é": "✓"}
    expected = (
        "{\n"
        '  "b": [\n'
        "    1,\n"
        "    {},\n"
        "    [],\n"
        "    {\n"
        '      "c": null\n'
        "    }\n"
        "  ],\n"
        '  "a": 1e20,\n'
        '  "é": "✓"\n'
        "}"
    )
    assert dumps_pretty(value) == expected
    assert dumps_pretty([]) == "[]"
    assert dumps_pretty("x") == '"x"'


# --- json_equal ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (1, 1, True),
        (1, 1.0, False),
        (True, 1, False),
        (False, 0, False),
        (True, True, True),
        (None, None, True),
        (None, False, False),
        ("1", 1, False),
        (1.5, 1.5, True),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),
        ({"a": 1}, {"a": 1.0}, False),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ({"a": 1}, {"b": 1}, False),
        ([1, 2], [2, 1], False),
        ([1, 2], (1, 2), True),
        ([1, [True]], [1, [1]], False),
        ([], {}, False),
        ("x", "x", True),
    ],
)
def test_json_equal(a: Any, b: Any, equal: bool) -> None:
    assert json_equal(a, b) is equal
    assert json_equal(b, a) is equal
