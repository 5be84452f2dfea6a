"""YAML 1.2 core-schema loading and 1.1/1.2-safe dumping, on libyaml and on pure PyYAML."""

from __future__ import annotations

import copy
import importlib.util
import math
import pickle
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from stepflow_mesh.runtime import yaml12
from stepflow_mesh.runtime.jsonfmt import json_equal
from stepflow_mesh.runtime.yaml12 import YamlError, YamlKey, dump_yaml, load_yaml


def _pure_python_variant() -> ModuleType:
    """A second copy of the module built without libyaml, so both code paths get tested."""
    spec = importlib.util.spec_from_file_location(
        "stepflow_mesh.runtime._yaml12_pure_python", yaml12.__file__
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(yaml, "__with_libyaml__", False)
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", params=["default", "pure-python"])
def y(request: pytest.FixtureRequest) -> Iterator[ModuleType]:
    yield yaml12 if request.param == "default" else _pure_python_variant()


# --- scalar resolution -------------------------------------------------------------------------

SCALARS: list[tuple[str, Any]] = [
    ("null", None),
    ("Null", None),
    ("NULL", None),
    ("~", None),
    ("", None),
    ("true", True),
    ("True", True),
    ("TRUE", True),
    ("false", False),
    ("False", False),
    ("FALSE", False),
    ("0", 0),
    ("42", 42),
    ("-17", -17),
    ("+5", 5),
    ("012", 12),
    ("-012", -12),
    ("0o17", 15),
    ("0x1F", 31),
    ("0xff", 255),
    ("123456789012345678901234567890", 123456789012345678901234567890),
    ("1.5", 1.5),
    (".5", 0.5),
    ("-.5", -0.5),
    ("1.", 1.0),
    ("1e3", 1000.0),
    ("1E3", 1000.0),
    ("-2.5E-3", -0.0025),
    ("+1.0e+20", 1e20),
    ("0.0", 0.0),
    (".inf", math.inf),
    (".Inf", math.inf),
    (".INF", math.inf),
    ("+.inf", math.inf),
    ("-.inf", -math.inf),
    ("-.Inf", -math.inf),
    ("yes", "yes"),
    ("no", "no"),
    ("Yes", "Yes"),
    ("NO", "NO"),
    ("on", "on"),
    ("off", "off"),
    ("On", "On"),
    ("y", "y"),
    ("n", "n"),
    ("2024-01-01", "2024-01-01"),
    ("2024-01-01 00:00:00+00:00", "2024-01-01 00:00:00+00:00"),
    ("2001-12-14t21:59:43.10-05:00", "2001-12-14t21:59:43.10-05:00"),
    ("1:30", "1:30"),
    ("190:20:30.15", "190:20:30.15"),
    ("<<", "<<"),
    ("=", "="),
    ("0b101", "0b101"),
    ("1_000", "1_000"),
    ("0o18", "0o18"),
    ("0xG", "0xG"),
    ("-0x1F", "-0x1F"),
    ("-.nan", "-.nan"),
    ("nan", "nan"),
    ("inf", "inf"),
    ("1e", "1e"),
    ("e3", "e3"),
    (".", "."),
    ("nulls", "nulls"),
    ("truey", "truey"),
    ("tRUE", "tRUE"),
    ("hello world", "hello world"),
]


@pytest.mark.parametrize(("text", "expected"), SCALARS)
def test_plain_scalar_resolution(y: ModuleType, text: str, expected: Any) -> None:
    for document in (f"v: {text}\n", f"- {text}\n", f"{{v: {text}}}", text):
        loaded = y.load_yaml(document)
        if isinstance(loaded, dict):
            loaded = loaded["v"]
        elif isinstance(loaded, list):
            (loaded,) = loaded
        assert json_equal(loaded, expected), (document, loaded)


@pytest.mark.parametrize("spelling", [".nan", ".NaN", ".NAN"])
def test_nan(y: ModuleType, spelling: str) -> None:
    value = y.load_yaml(f"v: {spelling}")["v"]
    assert isinstance(value, float) and math.isnan(value)


@pytest.mark.parametrize(("text", "_"), [row for row in SCALARS if row[0]])
def test_quoted_scalars_are_strings(y: ModuleType, text: str, _: Any) -> None:
    assert y.load_yaml(f"a: '{text}'\nb: \"{text}\"\n") == {"a": text, "b": text}


def test_explicit_standard_tags(y: ModuleType) -> None:
    text = (
        "a: !!str 12\nb: !!int '12'\nc: !!float 1\nd: !!bool 'true'\ne: !!null ''\n"
        "f: !!seq [1]\ng: !!map {x: 1}\nh: !!str yes\n"
    )
    loaded = y.load_yaml(text)
    expected = {"a": "12", "b": 12, "c": 1.0, "d": True, "e": None, "f": [1], "g": {"x": 1}}
    assert json_equal(loaded, {**expected, "h": "yes"})


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("a: !!timestamp 2024-01-01\n", "!!timestamp"),
        ("a: !!binary aGk=\n", "!!binary"),
        ("a: !!set {x}\n", "!!set"),
        ("a: !!omap [{x: 1}]\n", "!!omap"),
        ("a: !custom x\n", "!custom"),
        ("a: !!python/tuple [1]\n", "!!python/tuple"),
        ("a: !!int 1.5\n", "invalid int"),
        ("a: !!int 0b1\n", "invalid int"),
        ("a: !!bool yes\n", "invalid bool"),
        ("a: !!null x\n", "invalid null"),
        ("a: !!float abc\n", "invalid float"),
        ("a: !!str [1]\n", "expected a scalar"),
        ("a: !!map [1]\n", "expected a mapping"),
        ("a: !!seq {b: 1}\n", "expected a sequence"),
        ("a: !!merge <<\n", "!!merge"),
    ],
)
def test_other_tags_are_rejected(y: ModuleType, text: str, needle: str) -> None:
    with pytest.raises(y.YamlError) as info:
        y.load_yaml(text, "flow.yaml")
    assert needle in str(info.value)
    assert info.value.line == 1
    assert str(info.value).startswith("flow.yaml:1:")


# --- mappings ----------------------------------------------------------------------------------


def test_key_order_is_preserved(y: ModuleType) -> None:
    loaded = y.load_yaml("z: 1\na: 2\nm: {c: 3, b: 4}\n")
    assert list(loaded) == ["z", "a", "m"]
    assert list(loaded["m"]) == ["c", "b"]
    assert type(loaded) is dict


def test_merge_key_is_a_plain_string(y: ModuleType) -> None:
    loaded = y.load_yaml("base: &b {x: 1}\nderived:\n  <<: *b\n  y: 2\n")
    assert loaded["derived"] == {"<<": {"x": 1}, "y": 2}


def test_duplicate_key(y: ModuleType) -> None:
    with pytest.raises(y.YamlError) as info:
        y.load_yaml("a: 1\nsome_key: 2\nb:\n  c: 3\nsome_key: 4\n", "dup.yaml")
    assert "duplicate key 'some_key'" in str(info.value)
    assert "line 2" in str(info.value)
    assert info.value.line == 5
    assert info.value.source == "dup.yaml"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("1: a\n'1': b\n", "1"),
        ("{x: 1}: a\n{ x: 1 }: b\n", '{"x":1}'),
        ("[1, {a: b}]: a\n? - 1\n  - a: b\n: c\n", '[1,{"a":"b"}]'),
        ("~: a\nnull: b\n", "null"),
        ("true: a\nTrue: b\n", "true"),
        ("012: a\n12: b\n", "12"),
    ],
)
def test_duplicate_non_string_keys_compare_json_text(y: ModuleType, text: str, key: str) -> None:
    with pytest.raises(y.YamlError, match="duplicate key") as info:
        y.load_yaml(text)
    assert repr(key) in str(info.value)
    assert info.value.line is not None and info.value.line >= 2


def test_complex_keys_become_yaml_keys(y: ModuleType) -> None:
    loaded = y.load_yaml('{ input: "a" }: 1\n[1, 2]: 2\n3: 3\n~: 4\nfalse: 5\n1.5: 6\nplain: 7\n')
    keys = list(loaded)
    assert keys == ['{"input":"a"}', "[1,2]", "3", "null", "false", "1.5", "plain"]
    values = [k.value for k in keys[:-1]]
    assert json_equal(values, [{"input": "a"}, [1, 2], 3, None, False, 1.5])
    assert all(isinstance(k, y.YamlKey) for k in keys[:-1])
    assert type(keys[-1]) is str
    assert loaded['{"input":"a"}'] == 1
    assert repr(keys[0]) == 'YamlKey(\'{"input":"a"}\')'


def test_nested_complex_key(y: ModuleType) -> None:
    loaded = y.load_yaml("? {a: {1: x}}\n: v\n")
    (key,) = loaded
    assert key == '{"a":{"1":"x"}}'
    assert isinstance(key.value["a"], dict)
    (inner,) = key.value["a"]
    assert isinstance(inner, y.YamlKey) and inner.value == 1


def test_yaml_key_survives_copy_and_pickle() -> None:
    key = YamlKey.of({"input": [1, True]})
    assert key == '{"input":[1,true]}'
    for clone in (copy.copy(key), copy.deepcopy(key), pickle.loads(pickle.dumps(key))):
        assert isinstance(clone, YamlKey)
        assert clone == key
        assert json_equal(clone.value, {"input": [1, True]})
    assert YamlKey('{"input":"a"}').value == {"input": "a"}
    assert hash(key) == hash(str(key))


# --- documents and errors ----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "--- ~\n", "null\n"])
def test_empty_document_is_none(y: ModuleType, text: str) -> None:
    assert y.load_yaml(text) is None


def test_single_document_with_markers(y: ModuleType) -> None:
    assert y.load_yaml("---\na: 1\n...\n") == {"a": 1}
    assert y.load_yaml("%YAML 1.1\n---\na: 1\n") == {"a": 1}


@pytest.mark.parametrize(
    ("text", "line"),
    [("a: 1\n---\nb: 2\n", 2), ("--- a\n--- b\n", 2), ("a\n...\n---\n", 3), ("a: 1\n---\n", 2)],
)
def test_multiple_documents(y: ModuleType, text: str, line: int) -> None:
    with pytest.raises(y.YamlError, match="multiple YAML documents") as info:
        y.load_yaml(text, "multi.yaml")
    assert info.value.line == line
    assert str(info.value) == f"multi.yaml:{line}:1: multiple YAML documents"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a: 1\nb: [1, 2\nc: 3\n", 3),
        ("a: 1\nb:\n  c: 1\n d: 2\n", 4),
        ("a: 1\nb: 'unterminated\n", 3),
        ("a: 1\n\tb: 2\n", 2),
        ("a: b: c\n", 1),
        ("ok: 1\nbad: \x01\n", 2),
        ("a: *missing\n", 1),
        ("a: &x [*x]\n", 1),
    ],
)
def test_malformed_yaml_reports_line(y: ModuleType, text: str, line: int) -> None:
    with pytest.raises(y.YamlError) as info:
        y.load_yaml(text, "bad.yaml")
    error = info.value
    assert issubclass(y.YamlError, ValueError)
    assert error.source == "bad.yaml"
    assert error.line == line
    assert error.column is not None and error.column >= 1
    assert str(error).startswith(f"bad.yaml:{line}:{error.column}: ")


def test_error_without_location_formats_source_only() -> None:
    assert str(YamlError("boom", "x.yaml")) == "x.yaml: boom"
    assert str(YamlError("boom", "x.yaml", 3)) == "x.yaml:3: boom"
    error = pickle.loads(pickle.dumps(YamlError("boom", "x.yaml", 3, 4)))
    assert (error.problem, error.source, error.line, error.column) == ("boom", "x.yaml", 3, 4)


def test_aliases_are_expanded(y: ModuleType) -> None:
    loaded = y.load_yaml("a: &x {b: [1, 2]}\nc: *x\n")
    assert loaded == {"a": {"b": [1, 2]}, "c": {"b": [1, 2]}}


def test_deep_nesting_is_an_error_not_a_crash(y: ModuleType) -> None:
    # A low limit keeps this quick: PyYAML's pure scanner is quadratic in the nesting depth.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(250)
    try:
        with pytest.raises(y.YamlError, match="nest"):
            y.load_yaml("[" * 300 + "]" * 300)
    finally:
        sys.setrecursionlimit(limit)
    if y is yaml12 and yaml.__with_libyaml__:
        with pytest.raises(y.YamlError, match="nest"):  # libyaml's own depth limit
            y.load_yaml("[" * 1100 + "]" * 1100)


# --- dumping -----------------------------------------------------------------------------------

AMBIGUOUS_STRINGS = [
    "yes",
    "no",
    "Yes",
    "NO",
    "on",
    "off",
    "On",
    "OFF",
    "y",
    "n",
    "Y",
    "N",
    "true",
    "False",
    "null",
    "Null",
    "~",
    "",
    "1:30",
    "190:20:30",
    "2024-01-01",
    "2024-01-01 00:00:00+00:00",
    "1e3",
    "1E3",
    "012",
    "0o17",
    "0x1F",
    "0b101",
    "1_000",
    "1.5",
    ".5",
    "1.",
    "+5",
    "-.inf",
    ".NaN",
    "<<",
    "=",
    "12",
    "-0",
]


@pytest.mark.parametrize("text", AMBIGUOUS_STRINGS)
def test_dump_quotes_strings_that_read_as_other_types(y: ModuleType, text: str) -> None:
    dumped = y.dump_yaml({"k": text, "list": [text], text: 1})
    assert y.load_yaml(dumped) == {"k": text, "list": [text], text: 1}
    # A YAML 1.1 reader (PyYAML's own SafeLoader) gets the same strings back.
    assert yaml.safe_load(dumped) == {"k": text, "list": [text], text: 1}
    assert f"k: {text}\n" not in dumped


@pytest.mark.parametrize(
    "value", [1e20, 1.5e-7, 1e16, 0.1, -0.0, 100.0, 3.0, 5e-324, 1.7976931348623157e308]
)
def test_dump_floats_read_back_as_floats(y: ModuleType, value: float) -> None:
    dumped = y.dump_yaml({"f": value})
    loaded = y.load_yaml(dumped)["f"]
    assert type(loaded) is float and loaded == value
    assert math.copysign(1.0, loaded) == math.copysign(1.0, value)
    assert yaml.safe_load(dumped)["f"] == value  # and under 1.1 rules too


def test_dump_non_finite_floats(y: ModuleType) -> None:
    dumped = y.dump_yaml([math.inf, -math.inf, math.nan])
    assert dumped == "- .inf\n- -.inf\n- .nan\n"
    loaded = y.load_yaml(dumped)
    assert loaded[:2] == [math.inf, -math.inf] and math.isnan(loaded[2])


def test_dump_is_block_style_in_key_order(y: ModuleType) -> None:
    value = {"z": 1, "a": [1, {"b": None}], "m": {}, "l": [], "s": "é ✓", "t": (True, False)}
    expected = "z: 1\na:\n- 1\n- b: null\nm: {}\nl: []\ns: é ✓\nt:\n- true\n- false\n"
    assert y.dump_yaml(value) == expected


def test_dump_multiline_strings_as_literal_blocks(y: ModuleType) -> None:
    dumped = y.dump_yaml({"text": "line one\nline two\n"})
    assert dumped == "text: |\n  line one\n  line two\n"
    assert y.load_yaml(dumped) == {"text": "line one\nline two\n"}


def test_dump_writes_yaml_keys_as_their_values(y: ModuleType) -> None:
    loaded = y.load_yaml('{ input: "a" }: 1\n7: x\n~: y\n')
    again = y.load_yaml(y.dump_yaml(loaded))
    assert again == loaded
    assert [type(k) for k in again] == [y.YamlKey] * 3
    assert json_equal([k.value for k in again], [{"input": "a"}, 7, None])


def test_dump_shared_values_without_anchors(y: ModuleType) -> None:
    shared = {"a": 1}
    dumped = y.dump_yaml({"x": shared, "y": shared})
    assert "&" not in dumped and "*" not in dumped


@pytest.mark.parametrize("value", [{1, 2}, {"a": b"x"}, {"a": object()}])
def test_dump_rejects_non_json_values(y: ModuleType, value: Any) -> None:
    with pytest.raises(TypeError):
        y.dump_yaml(value)


TRICKY_TEXT = st.sampled_from([*AMBIGUOUS_STRINGS, "- a", "a: b", "#x", " x", "x ", "\n", "'\""])
YAML_TEXT = st.text() | TRICKY_TEXT
YAML_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | YAML_TEXT,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(YAML_TEXT, children, max_size=5)
    ),
    max_leaves=15,
)


@settings(max_examples=200, deadline=None)
@given(value=YAML_VALUES)
def test_dump_load_round_trip(y: ModuleType, value: Any) -> None:
    assert json_equal(y.load_yaml(y.dump_yaml(value)), value)


@settings(max_examples=200, deadline=None)
@given(text=YAML_TEXT)
def test_strings_round_trip_under_yaml_11_too(text: str) -> None:
    dumped = dump_yaml([text])
    assert load_yaml(dumped) == [text]
    assert yaml.safe_load(dumped) == [text]


def test_module_level_api_is_the_default_variant() -> None:
    assert load_yaml("a: on") == {"a": "on"}
    assert dump_yaml({"a": "on"}) == "a: 'on'\n"
