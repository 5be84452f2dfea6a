"""Property tests: `$literal` and expression-free values evaluate to themselves; flows carrying
arbitrary JSON survive YAML dump → load → parse; YAML 1.2 core-schema scalar rules; paths."""

from __future__ import annotations

import copy
import datetime
import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from stepflow_mesh.runtime.errors import FlowResult
from stepflow_mesh.runtime.expressions import Const, Env, parse_expr
from stepflow_mesh.runtime.model import parse_document, parse_flow
from stepflow_mesh.runtime.paths import parse_path
from stepflow_mesh.runtime.yaml12 import dump_yaml, load_yaml

SPECIAL_KEYS = ("$literal", "$if", "$coalesce", "$from", "$step", "$input", "$variable")
# Strings that YAML 1.1 (or careless 1.2) readers would turn into something else.
AMBIGUOUS = [
    "yes", "no", "on", "off", "y", "n", "Yes", "NO", "On", "OFF", "null", "Null", "~", "true",
    "False", "1:30", "0o17", "0x1F", "012", "1e3", "1.", ".5", ".inf", "-.Inf", ".nan", "<<",
    "2024-01-01", "2024-01-01 00:00:00+00:00", "-", "- a", "a: b", "#c", " x", "x ", "", "\n",
    "'\"", "{a: 1}", "[1]", "&anchor", "*alias", "!tag", "%", "@", "`",
]  # fmt: skip
TEXT = st.text(max_size=10) | st.sampled_from(AMBIGUOUS)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)


def json_values(keys: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        SCALARS,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4)
        ),
        max_leaves=12,
    )


# Any JSON, with the expression keys (and their companions) over-represented.
ANY_JSON = json_values(
    TEXT | st.sampled_from([*SPECIAL_KEYS, "then", "else", "path", "default", "$foo"])
)
# JSON in which no object has a key the expression parser reacts to (`$foo` is ordinary).
PLAIN_JSON = json_values((TEXT | st.just("$foo")).filter(lambda k: k not in SPECIAL_KEYS))

ENV = Env(input={"x": 1}, results={"s": FlowResult.success({"k": 2})}, variables={"v": 3})


def same(a: Any, b: Any) -> bool:
    """JSON equality that also requires identical types (1 ≠ 1.0 ≠ True), key order and str keys."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return (
            list(a) == list(b)
            and all(type(k) is str for k in a)
            and all(type(k) is str for k in b)
            and all(same(a[k], b[k]) for k in a)
        )
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


# --- (a) the evaluator -------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(value=ANY_JSON)
def test_literal_resolves_to_exactly_the_value(value: Any) -> None:
    original = copy.deepcopy(value)
    expr = parse_expr({"$literal": value}, "output")
    assert isinstance(expr, Const)
    assert expr.needs(ENV) == set()
    assert expr.step_refs() == set()
    assert expr.variable_refs() == set()
    result = expr.resolve(ENV)
    assert result.ok
    assert same(result.value, original)
    # ... also when nested among real expressions
    wrapped = parse_expr({"lit": {"$literal": value}, "in": {"$input": "x"}}, "output")
    assert same(wrapped.resolve(ENV).value, {"lit": original, "in": 1})
    assert same(value, original)  # nothing was mutated on the way


@settings(max_examples=150, deadline=None)
@given(value=PLAIN_JSON)
def test_values_without_expression_keys_resolve_to_themselves(value: Any) -> None:
    original = copy.deepcopy(value)
    expr = parse_expr(value, "output")
    assert isinstance(expr, Const)
    assert expr.needs(ENV) == set()
    assert expr.step_refs() == set()
    result = expr.resolve(ENV)
    assert result.ok
    assert same(result.value, original)
    assert same(parse_expr([value, {"$literal": value}]).resolve(ENV).value, [original, original])


# --- (b) the loader ----------------------------------------------------------------------------


def _flow_doc(literal: Any, plain: Any, default: Any) -> dict[str, Any]:
    return {
        "schema": "https://stepflow.org/schemas/v1/flow.json",
        "name": "property",
        "steps": [
            {
                "id": "s1",
                "component": "/builtin/noop",
                "input": {"lit": {"$literal": literal}, "plain": plain, "in": {"$input": "$"}},
                "onError": {"action": "useDefault", "defaultValue": default},
            }
        ],
        "output": {"step": {"$step": "s1", "path": "$.plain"}, "lit": {"$literal": literal}},
        "metadata": {"copy": literal},
    }


@settings(max_examples=75, deadline=None)
@given(literal=ANY_JSON, plain=PLAIN_JSON, default=ANY_JSON)
def test_flow_values_round_trip_through_yaml(literal: Any, plain: Any, default: Any) -> None:
    doc = _flow_doc(literal, plain, default)
    expected = copy.deepcopy(doc)
    text = dump_yaml(doc)
    loaded = load_yaml(text, "flow.yaml")
    assert same(loaded, expected)
    assert text.startswith("schema: ")  # key order kept, `schema` first

    flow = parse_flow(loaded, "flow.yaml")
    [step] = flow.steps
    step_input = step.input.resolve(Env(input={"item": 1}, results={}))
    assert same(step_input.value, {"lit": literal, "plain": plain, "in": {"item": 1}})
    # onError.defaultValue is a literal: never parsed as an expression
    assert same(step.on_error.default_value, default)
    env = Env(input=None, results={"s1": FlowResult.success({"plain": plain})})
    assert same(flow.output.resolve(env).value, {"step": plain, "lit": literal})
    assert same(flow.metadata, {"copy": literal})


@settings(max_examples=50, deadline=None)
@given(literal=ANY_JSON, plain=PLAIN_JSON)
def test_flow_values_round_trip_through_json(literal: Any, plain: Any) -> None:
    doc = _flow_doc(literal, plain, None)
    loaded = parse_document(json.dumps(doc), ".json", "flow.json")
    assert same(loaded, doc)
    flow = parse_flow(loaded, "flow.json")
    env = Env(input=None, results={"s1": FlowResult.success({"plain": plain})})
    assert same(flow.output.resolve(env).value, {"step": plain, "lit": literal})


# --- YAML 1.2 core schema ----------------------------------------------------------------------

NOT_STRINGS = {"null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE"}
WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1)
YAML11_WORDS = st.sampled_from(
    ["yes", "Yes", "YES", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF", "y", "Y", "n"]
)


@settings(max_examples=100, deadline=None)
@given(word=WORDS | YAML11_WORDS)
def test_plain_words_are_strings_unless_core_null_or_bool(word: str) -> None:
    loaded = load_yaml(f"steps:\n- id: s\n  component: /c\n  input:\n    flag: {word}\n")
    value = loaded["steps"][0]["input"]["flag"]
    if word in NOT_STRINGS:
        assert value is (None if word.lower() == "null" else word.lower() == "true")
    else:
        assert type(value) is str and value == word
        flow = parse_flow(loaded)
        assert flow.steps[0].input.resolve(Env(None, {})).value == {"flag": word}


@settings(max_examples=100, deadline=None)
@given(number=st.integers())
def test_integers(number: int) -> None:
    doc = load_yaml(f"dec: {number}\nplus: +{abs(number)}\npadded: 0{abs(number)}\n")
    assert same(doc, {"dec": number, "plus": abs(number), "padded": abs(number)})
    doc = load_yaml(f"oct: 0o{abs(number):o}\nhex: 0x{abs(number):X}\nquoted: '{number}'\n")
    assert same(doc, {"oct": abs(number), "hex": abs(number), "quoted": str(number)})


@settings(max_examples=100, deadline=None)
@given(number=st.floats(allow_nan=False, allow_infinity=False))
def test_floats(number: float) -> None:
    text = repr(number)
    loaded = load_yaml(f"v: {text}")["v"]
    assert type(loaded) is float and loaded == number
    assert load_yaml(f"v: '{text}'")["v"] == text


@settings(max_examples=50, deadline=None)
@given(
    hours=st.integers(0, 99),
    minutes=st.integers(0, 59),
    day=st.dates(min_value=datetime.date(1, 1, 1)),
)
def test_yaml11_sexagesimals_and_timestamps_stay_strings(
    hours: int, minutes: int, day: datetime.date
) -> None:
    clock = f"{hours}:{minutes:02d}"
    stamp = f"{day.isoformat()} 00:00:00+00:00"
    loaded = load_yaml(f"a: {clock}\nb: {day.isoformat()}\nc: {stamp}\n")
    assert same(loaded, {"a": clock, "b": day.isoformat(), "c": stamp})


# --- paths -------------------------------------------------------------------------------------

PATH_KEYS = st.text(max_size=6).filter(lambda k: '"' not in k)
SEGMENTS = st.lists(st.integers(0, 5) | PATH_KEYS, max_size=5)


def _nest(segments: list[Any], leaf: Any) -> Any:
    value = leaf
    for seg in reversed(segments):
        value = [None] * seg + [value] if isinstance(seg, int) else {seg: value}
    return value


@settings(max_examples=100, deadline=None)
@given(segments=SEGMENTS, leaf=SCALARS)
def test_bracket_paths_parse_and_look_up(segments: list[Any], leaf: Any) -> None:
    text = "$" + "".join(f"[{s}]" if isinstance(s, int) else f'["{s}"]' for s in segments)
    path = parse_path(f"  {text}  ")
    assert path.segments == tuple(segments)
    assert same(path.lookup(_nest(segments, leaf)), leaf)
    expr = parse_expr({"$input": text})
    assert same(expr.resolve(Env(_nest(segments, leaf), {})).value, leaf)
