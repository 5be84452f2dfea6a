"""The expression language (flows.md §5) and JSON paths (§5.2), evaluated without an executor."""

from __future__ import annotations

from typing import Any

import pytest
from stepflow_mesh.runtime.errors import FlowResult
from stepflow_mesh.runtime.expressions import (
    CoalesceExpr,
    Const,
    Env,
    Expr,
    ExpressionError,
    IfExpr,
    InputRef,
    ListExpr,
    ObjectExpr,
    StepRef,
    VariableRef,
    is_truthy,
    parse_expr,
)
from stepflow_mesh.runtime.paths import NOT_FOUND, ROOT, Path, PathError, parse_path

FAILED_A = FlowResult.failure("COMPONENT_FAILED", "a broke", {"detail": [1, 2]})


def env(
    input: Any = None,
    results: dict[str, FlowResult] | None = None,
    variables: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
    known: set[str] | None = None,
) -> Env:
    return Env(
        input,
        results or {},
        variables or {},
        defaults or {},
        known_steps=frozenset(known) if known is not None else None,
    )


def ev(expr: Any, e: Env | None = None) -> FlowResult:
    return parse_expr(expr, "output").resolve(e or env())


def ok(expr: Any, e: Env | None = None) -> Any:
    result = ev(expr, e)
    assert result.ok, result
    return result.value


def failure(expr: Any, e: Env | None = None) -> tuple[str, str]:
    result = ev(expr, e)
    assert result.error is not None, result
    return result.error.code, result.error.message


# --- parsing: which key decides ------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, True, False, 0, -3, 1.5, "", "text", "$input"])
def test_scalars_are_literals(value: Any) -> None:
    expr = parse_expr(value)
    assert isinstance(expr, Const)
    assert expr.resolve(env(input={"x": 1})) == FlowResult.success(value)


def test_expression_free_containers_are_constants() -> None:
    value = {"a": [1, {"b": None}], "$foo": {"$bar": 2}}
    expr = parse_expr(value)
    assert isinstance(expr, Const)
    assert expr.value == value
    assert isinstance(parse_expr([1, [2, {"c": 3}]]), Const)


def test_literal_is_verbatim_and_never_evaluated() -> None:
    inner = {"$step": "nope", "$input": "missing", "$from": {"x": 1}, "l": [{"$if": 1}]}
    expr = parse_expr({"$literal": inner})
    assert isinstance(expr, Const)
    assert expr.step_refs() == set()
    assert expr.needs(env()) == set()
    assert ok({"$literal": inner}) == inner
    assert ok({"$literal": None}) is None


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        # $literal beats everything, including $if and $from
        ({"$literal": 1, "$if": True, "then": 2}, 1),
        ({"$literal": 1, "$from": "x"}, 1),
        # $if beats $coalesce, $from, $step, $input
        ({"$if": True, "then": 2, "$coalesce": [3]}, 2),
        ({"$if": True, "then": 2, "$from": {"step": "x"}}, 2),
        ({"$if": False, "then": 2, "else": 4, "$input": "x"}, 4),
        # $coalesce beats $step / $input / $variable
        ({"$coalesce": [None, 3], "$step": "missing"}, 3),
        ({"$coalesce": [3], "$input": "missing"}, 3),
        # $step beats $input; $input beats $variable
        ({"$step": "a", "$input": "x"}, {"from": "a"}),
        ({"$input": "x", "$variable": "v"}, "input-x"),
        # a sibling `path` next to $input is ignored
        ({"$input": "x", "path": "y"}, "input-x"),
    ],
)
def test_first_matching_key_decides(expr: dict[str, Any], expected: Any) -> None:
    e = env(
        input={"x": "input-x", "y": "input-y"},
        results={"a": FlowResult.success({"from": "a"})},
        variables={"v": "var-v"},
    )
    assert ok(expr, e) == expected


def test_from_is_always_a_load_error() -> None:
    with pytest.raises(ExpressionError) as info:
        parse_expr({"$from": {"step": "a"}, "$step": "a"}, "steps[0].input")
    assert info.value.where == "steps[0].input"
    assert "'$from' is not supported" in info.value.message
    assert "{$step: <id>, path: <path>}" in info.value.message
    assert "$literal" in info.value.message


def test_other_dollar_keys_are_ordinary_keys() -> None:
    expr = {"$foo": {"$input": "x"}, "$blob": 1, "$expr": [{"$input": "x"}]}
    assert ok(expr, env(input={"x": 7})) == {"$foo": 7, "$blob": 1, "$expr": [7]}


@pytest.mark.parametrize(
    ("expr", "where", "message"),
    [
        ({"$if": True}, "out", "'$if' requires a 'then' branch"),
        ({"$if": True, "else": 1}, "out", "'$if' requires a 'then' branch"),
        ({"$coalesce": {"a": 1}}, "out", "'$coalesce' must be a list of expressions"),
        ({"$coalesce": "x"}, "out", "'$coalesce' must be a list of expressions"),
        ({"$step": 5}, "out", "'$step' must be a step id string"),
        ({"$step": None}, "out", "'$step' must be a step id string"),
        ({"$step": {"id": "a"}}, "out", "'$step' must be a step id string"),
        ({"$variable": ""}, "out", "'$variable' must name a variable"),
        ({"$variable": "$"}, "out", "'$variable' must name a variable"),
        ({"$variable": None}, "out", "'$variable' must name a variable"),
        ({"$variable": "$[0]"}, "out", "'$variable' must name a variable"),
        (
            {"$input": "$x"},
            "out.$input",
            "Invalid character 'x' in JSON path after $ or ']'. Expected '.' or '['",
        ),
        ({"$input": "$[0"}, "out.$input", "Unclosed bracket '[' in path"),
        ({"$step": "a", "path": "$[-1]"}, "out.path", "Invalid index '-1' in JSON path."),
        ({"$variable": "$.v[x]"}, "out.$variable", "Invalid index 'x' in JSON path."),
        ({"$input": 5}, "out.$input", "Path must be a string, got int"),
    ],
)
def test_parse_errors_name_the_field(expr: Any, where: str, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse_expr(expr, "out")
    assert info.value.where == where
    assert info.value.message.startswith(message)
    assert str(info.value) == f"{where}: {info.value.message}"


def test_parse_errors_deep_inside_containers_and_branches() -> None:
    doc = {"a": [1, {"b": {"$coalesce": [{"$if": 1}]}}]}
    with pytest.raises(ExpressionError) as info:
        parse_expr(doc, "steps[2].input")
    assert info.value.where == "steps[2].input.a[1].b.$coalesce[0]"
    with pytest.raises(ExpressionError) as info:
        parse_expr({"$if": {"$input": "$bad"}, "then": 1}, "output")
    assert info.value.where == "output.$if.$input"
    with pytest.raises(ExpressionError) as info:
        parse_expr({"$variable": "v", "default": {"$step": 1}}, "output")
    assert info.value.where == "output.default"


def test_node_types() -> None:
    assert isinstance(parse_expr({"$input": "x"}), InputRef)
    assert isinstance(parse_expr({"$step": "a"}), StepRef)
    assert isinstance(parse_expr({"$variable": "v"}), VariableRef)
    assert isinstance(parse_expr({"$if": 1, "then": 2}), IfExpr)
    assert isinstance(parse_expr({"$coalesce": []}), CoalesceExpr)
    assert isinstance(parse_expr({"k": {"$input": "x"}, "c": 1}), ObjectExpr)
    assert isinstance(parse_expr([1, {"$input": "x"}]), ListExpr)


# --- $input ------------------------------------------------------------------------------------

INPUT = {
    "user": {"name": "Ada", "tags": ["x", "y"], "nothing": None},
    "user.name": "literal key",
    " padded ": "spaces kept",
    "a.b": {"c": 1},
    "items": [{"id": 10}, {"id": 11}],
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (None, INPUT),
        ("", INPUT),
        ("$", INPUT),
        ("  $  ", INPUT),
        ("user", INPUT["user"]),
        ("user.name", "literal key"),  # no `$`: one key, taken literally
        (" padded ", "spaces kept"),  # ... and untrimmed
        ("$.user.name", "Ada"),
        ("  $.user.name  ", "Ada"),
        ("$.user.tags[1]", "y"),
        ("$.user.tags[ 0 ]", "x"),
        ("$.user.nothing", None),
        ("$['a.b'].c", 1),
        ('$["a.b"]["c"]', 1),
        ("$[ 'user' ].name", "Ada"),
        ("$.items[1].id", 11),
        ("$..user..name", "Ada"),  # empty names are skipped
    ],
)
def test_input_paths(path: Any, expected: Any) -> None:
    assert ok({"$input": path}, env(input=INPUT)) == expected


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("$.user.age", "$.user.age"),
        ("$.user.tags[2]", "$.user.tags[2]"),
        ("$.user.name.first", "$.user.name.first"),  # key on a string
        ("$.user[0]", "$.user[0]"),  # index on an object
        ('$.items["0"]', "$.items.0"),  # key on an array
        ("nope", "$.nope"),
        ("$['a.b'].d", "$.a.b.d"),
    ],
)
def test_missing_input_path_message(path: str, shown: str) -> None:
    assert failure({"$input": path}, env(input=INPUT)) == (
        "EXPRESSION_FAILURE",
        f"Input path {shown} not found",
    )


def test_input_path_on_null_or_scalar_input() -> None:
    assert ok({"$input": None}, env(input=None)) is None
    assert ok({"$input": "$"}, env(input=42)) == 42
    assert failure({"$input": "x"}, env(input=None)) == (
        "EXPRESSION_FAILURE",
        "Input path $.x not found",
    )
    assert failure({"$input": "$[0]"}, env(input="abc"))[1] == "Input path $[0] not found"


# --- $step -------------------------------------------------------------------------------------

RESULTS = {
    "a": FlowResult.success({"out": {"list": [1, 2, 3]}, "n": None}),
    "nul": FlowResult.success(None),
    "bad": FAILED_A,
}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ({"$step": "a"}, RESULTS["a"].value),
        ({"$step": "a", "path": None}, RESULTS["a"].value),
        ({"$step": "a", "path": ""}, RESULTS["a"].value),
        ({"$step": "a", "path": "$"}, RESULTS["a"].value),
        ({"$step": "a", "path": "out"}, {"list": [1, 2, 3]}),
        ({"$step": "a", "path": "$.out.list[2]"}, 3),
        ({"$step": "a", "path": "n"}, None),
        # a step that succeeded with null gives null, even with a path
        ({"$step": "nul", "path": "$.deep.er[3]"}, None),
    ],
)
def test_step_references(expr: Any, expected: Any) -> None:
    assert ok(expr, env(results=RESULTS, known=set(RESULTS))) == expected


@pytest.mark.parametrize("path", [None, "x", "$.x[0]"])
def test_failed_step_propagates_unchanged(path: Any) -> None:
    result = ev({"$step": "bad", "path": path}, env(results=RESULTS))
    assert result == FAILED_A
    assert result.to_json() == {
        "outcome": "failed",
        "error": {"code": "COMPONENT_FAILED", "message": "a broke", "data": {"detail": [1, 2]}},
    }


def test_step_path_not_found() -> None:
    e = env(results=RESULTS)
    assert failure({"$step": "a", "path": "$.out.list[3]"}, e) == (
        "EXPRESSION_FAILURE",
        "Path $.out.list[3] not found",
    )
    assert failure({"$step": "a", "path": "missing"}, e)[1] == "Path $.missing not found"


def test_unknown_and_unfinished_steps() -> None:
    known = env(results=RESULTS, known={"a", "nul", "bad", "later"})
    assert failure({"$step": "ghost"}, known) == ("EXPRESSION_FAILURE", "Unknown step: ghost")
    assert failure({"$step": "later"}, known) == ("ORCHESTRATOR_ERROR", "Step later not completed")
    # without a list of known steps, an absent result is an unfinished step
    assert failure({"$step": "ghost"}, env(results=RESULTS)) == (
        "ORCHESTRATOR_ERROR",
        "Step ghost not completed",
    )


def test_step_needs_until_finished() -> None:
    expr = parse_expr({"$step": "a", "path": "x"})
    assert expr.needs(env()) == {"a"}
    assert expr.needs(env(results={"a": FAILED_A})) == set()
    assert expr.step_refs() == {"a"}


# --- $variable ---------------------------------------------------------------------------------


def test_variable_supplied_value_and_sub_path() -> None:
    e = env(variables={"cfg": {"model": "m1", "opts": [1, 2]}, "empty": None})
    assert ok({"$variable": "cfg"}, e) == {"model": "m1", "opts": [1, 2]}
    assert ok({"$variable": "$.cfg.model"}, e) == "m1"
    assert ok({"$variable": "$.cfg.opts[1]"}, e) == 2
    # a supplied null is a value: the default is not used
    assert ok({"$variable": "empty", "default": "dflt"}, e) is None


def test_variable_supplied_beats_schema_default() -> None:
    e = env(variables={"v": "supplied"}, defaults={"v": "schema", "w": "schema-w"})
    assert ok({"$variable": "v"}, e) == "supplied"
    assert ok({"$variable": "w", "default": "expr"}, e) == "schema-w"


def test_variable_default_expression_is_evaluated() -> None:
    e = env(input={"fallback": "from input"}, results={"a": FlowResult.success({"k": 3})})
    assert ok({"$variable": "v", "default": {"$input": "fallback"}}, e) == "from input"
    assert ok({"$variable": "v", "default": {"$step": "a", "path": "k"}}, e) == 3
    assert ok({"$variable": "v", "default": None}, e) is None
    assert ok({"$variable": "v", "default": {"$literal": {"$input": "x"}}}, e) == {"$input": "x"}


def test_variable_missing_sub_path_uses_default() -> None:
    e = env(variables={"cfg": {"model": "m1"}})
    assert ok({"$variable": "$.cfg.temperature", "default": 0.5}, e) == 0.5
    assert failure({"$variable": "$.cfg.temperature"}, e) == (
        "EXPRESSION_FAILURE",
        "Undefined variable: cfg",
    )


def test_undefined_variable() -> None:
    assert failure({"$variable": "api_key"}) == (
        "EXPRESSION_FAILURE",
        "Undefined variable: api_key",
    )
    assert failure({"$variable": "$.api_key.inner"})[1] == "Undefined variable: api_key"


def test_variable_name_without_dollar_is_one_literal_key() -> None:
    e = env(variables={"a.b": 1, "a": {"b": 2}})
    assert ok({"$variable": "a.b"}, e) == 1
    assert ok({"$variable": "$.a.b"}, e) == 2
    assert ok({"$variable": "$['a.b']"}, e) == 1


def test_variable_default_is_lazy() -> None:
    expr = parse_expr({"$variable": "v", "default": {"$step": "slow"}})
    assert expr.needs(env(variables={"v": 1})) == set()
    assert expr.needs(env(defaults={"v": 1})) == set()
    assert expr.needs(env()) == {"slow"}
    assert expr.step_refs() == {"slow"}
    # with a value present, the default is not resolved even if it would fail
    assert expr.resolve(env(variables={"v": 1})) == FlowResult.success(1)


def test_variable_refs() -> None:
    expr = parse_expr(
        {"x": {"$variable": "$.a.b", "default": {"$variable": "c"}}, "y": [{"$variable": "d"}]}
    )
    assert expr.variable_refs() == {"a", "c", "d"}
    assert parse_expr({"$input": "x"}).variable_refs() == set()


# --- $if ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "truthy"),
    [
        (None, False),
        (False, False),
        (True, True),
        (0, True),
        (0.0, True),
        ("", True),
        ("false", True),
        ([], True),
        ({}, True),
        ("x", True),
    ],
)
def test_if_truthiness(condition: Any, truthy: bool) -> None:
    assert is_truthy(condition) is truthy
    e = env(input={"c": condition})
    expr = {"$if": {"$input": "c"}, "then": "T", "else": "E"}
    assert ok(expr, e) == ("T" if truthy else "E")


def test_if_without_else_is_null() -> None:
    assert ok({"$if": False, "then": 1}) is None
    assert ok({"$if": None, "then": 1, "else": None}) is None
    assert ok({"$if": True, "then": {"$literal": {"$step": "x"}}}) == {"$step": "x"}


def test_failed_condition_counts_as_false() -> None:
    e = env(results={"bad": FAILED_A})
    assert ok({"$if": {"$step": "bad"}, "then": 1, "else": 2}, e) == 2
    assert ok({"$if": {"$input": "missing"}, "then": 1, "else": 2}, e) == 2
    assert ok({"$if": {"$step": "bad"}, "then": 1}, e) is None


def test_if_chosen_branch_failure_propagates_other_branch_ignored() -> None:
    e = env(input={"yes": True}, results={"bad": FAILED_A})
    assert ev({"$if": {"$input": "yes"}, "then": {"$step": "bad"}, "else": 1}, e) == FAILED_A
    # the branch not taken may reference failed steps or missing input without effect
    expr = {"$if": {"$input": "yes"}, "then": "ok", "else": {"$step": "bad"}}
    assert ok(expr, e) == "ok"
    expr = {"$if": {"$input": "yes"}, "then": "ok", "else": {"$input": "$.missing[3]"}}
    assert ok(expr, e) == "ok"


def test_if_needs_condition_first_then_only_the_chosen_branch() -> None:
    expr = parse_expr({"$if": {"$step": "c"}, "then": {"$step": "t"}, "else": {"$step": "e"}})
    assert expr.needs(env()) == {"c"}
    assert expr.needs(env(results={"c": FlowResult.success(0)})) == {"t"}
    assert expr.needs(env(results={"c": FlowResult.success(False)})) == {"e"}
    assert expr.needs(env(results={"c": FAILED_A})) == {"e"}
    done = {"c": FlowResult.success(True), "t": FlowResult.success("T")}
    assert expr.needs(env(results=done)) == set()
    assert expr.resolve(env(results=done)) == FlowResult.success("T")
    assert expr.step_refs() == {"c", "t", "e"}


def test_if_without_else_needs_nothing_when_false() -> None:
    expr = parse_expr({"$if": {"$step": "c"}, "then": {"$step": "t"}})
    assert expr.needs(env(results={"c": FlowResult.success(None)})) == set()
    assert expr.step_refs() == {"c", "t"}


# --- $coalesce ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([], None),
        ([None, None], None),
        ([None, 0, 1], 0),
        ([None, False, 1], False),
        ([None, "", 1], ""),
        ([{"$input": "nil"}, {"$input": "x"}, "later"], "X"),
        ([{"$literal": None}, [None]], [None]),
    ],
)
def test_coalesce_first_non_null(items: list[Any], expected: Any) -> None:
    assert ok({"$coalesce": items}, env(input={"nil": None, "x": "X"})) == expected


def test_coalesce_failure_stops_the_scan() -> None:
    e = env(input={"nil": None}, results={"bad": FAILED_A})
    assert ev({"$coalesce": [{"$input": "nil"}, {"$step": "bad"}, "fine"]}, e) == FAILED_A
    assert failure({"$coalesce": [{"$input": "nope"}, "fine"]}, e) == (
        "EXPRESSION_FAILURE",
        "Input path $.nope not found",
    )
    # items after the first non-null one are never evaluated
    assert ok({"$coalesce": ["first", {"$step": "bad"}]}, e) == "first"


def test_coalesce_needs_one_item_at_a_time() -> None:
    expr = parse_expr({"$coalesce": [{"$step": "a"}, {"$step": "b"}, {"$step": "c"}]})
    assert expr.needs(env()) == {"a"}
    assert expr.needs(env(results={"a": FlowResult.success(None)})) == {"b"}
    nulls = {"a": FlowResult.success(None), "b": FlowResult.success(None)}
    assert expr.needs(env(results=nulls)) == {"c"}
    assert expr.needs(env(results={"a": FlowResult.success(1)})) == set()
    assert expr.needs(env(results={"a": FAILED_A})) == set()
    # a null step result with a path counts as null: move on
    pathed = parse_expr({"$coalesce": [{"$step": "a", "path": "x"}, {"$step": "b"}]})
    assert pathed.needs(env(results={"a": FlowResult.success(None)})) == {"b"}
    assert pathed.needs(env(results={"a": FlowResult.success({"x": None})})) == {"b"}
    assert pathed.needs(env(results={"a": FlowResult.success({"x": 0})})) == set()
    assert expr.step_refs() == {"a", "b", "c"}


# --- containers --------------------------------------------------------------------------------


def test_nested_objects_and_lists_keep_order() -> None:
    e = env(
        input={"name": "n", "list": [1, 2]},
        results={"s": FlowResult.success({"v": "sv"})},
        variables={"var": "vv"},
    )
    expr = {
        "z": {"$input": "name"},
        "a": [{"$step": "s", "path": "v"}, {"deep": {"$variable": "var"}}, 3],
        "m": {"$coalesce": [None, {"$input": "$.list[1]"}]},
        "k": {"$if": True, "then": [{"$literal": {"$input": 1}}]},
    }
    result = ok(expr, e)
    assert result == {
        "z": "n",
        "a": ["sv", {"deep": "vv"}, 3],
        "m": 2,
        "k": [{"$input": 1}],
    }
    assert list(result) == ["z", "a", "m", "k"]


def test_container_failure_is_the_first_failing_member() -> None:
    e = env(input={}, results={"bad": FAILED_A})
    obj = {"ok": 1, "first": {"$input": "one"}, "second": {"$input": "two"}}
    assert failure(obj, e)[1] == "Input path $.one not found"
    lst = [1, [{"$step": "bad"}], {"$input": "two"}]
    assert ev(lst, e) == FAILED_A


def test_container_needs_and_refs_are_unions() -> None:
    expr = parse_expr(
        {
            "a": {"$step": "a"},
            "l": [{"$step": "b", "path": "x"}, {"$if": {"$step": "c"}, "then": {"$step": "d"}}],
            "v": {"$variable": "v", "default": {"$step": "e"}},
        }
    )
    assert expr.needs(env(variables={"v": 1})) == {"a", "b", "c"}
    assert expr.needs(env()) == {"a", "b", "c", "e"}
    assert expr.step_refs() == {"a", "b", "c", "d", "e"}
    partial = env(
        results={"a": FlowResult.success(1), "c": FlowResult.success(True)}, variables={"v": 1}
    )
    assert expr.needs(partial) == {"b", "d"}


def test_step_refs_ignore_literals_and_inputs() -> None:
    expr = parse_expr({"a": {"$literal": {"$step": "x"}}, "b": {"$input": "y"}, "c": "$step"})
    assert expr.step_refs() == set()
    assert expr.needs(env()) == set()


def test_custom_expr_base_defaults() -> None:
    base = Expr()
    assert base.needs(env()) == set()
    assert base.step_refs() == set()
    assert base.variable_refs() == set()
    with pytest.raises(NotImplementedError):
        base.resolve(env())


# --- paths -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        (None, ()),
        ("", ()),
        ("   ", ()),
        ("$", ()),
        (" $ ", ()),
        ("a", ("a",)),
        (" a ", (" a ",)),
        ("user.name", ("user.name",)),
        ("[0]", ("[0]",)),
        ("a$", ("a$",)),
        ("$.a", ("a",)),
        ("$.a.b", ("a", "b")),
        ("$..a", ("a",)),
        ("$.a.", ("a",)),
        ("$.a b", ("a b",)),
        ("$[0]", (0,)),
        ("$[ 12 ]", (12,)),
        ("$[007]", (7,)),
        ('$["k"]', ("k",)),
        ("$['k']", ("k",)),
        ('$[ "a.b" ]', ("a.b",)),
        ('$["a]b"]', ("a]b",)),
        ("$['0']", ("0",)),
        ('$[""]', ("",)),
        ("$.a[0].b", ("a", 0, "b")),
        ("$['x'][1][2]", ("x", 1, 2)),
        ("$.a[1]['c d'].e", ("a", 1, "c d", "e")),
    ],
)
def test_parse_path(text: Any, segments: tuple[Any, ...]) -> None:
    assert parse_path(text).segments == segments


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("$a", "Invalid character 'a' in JSON path after $ or ']'. Expected '.' or '['"),
        ("$[0]x", "Invalid character 'x' in JSON path after $ or ']'. Expected '.' or '['"),
        ("$ .a", "Invalid character ' ' in JSON path after $ or ']'. Expected '.' or '['"),
        ("$[0", "Unclosed bracket '[' in path"),
        ('$["a]', "Unclosed bracket '[' in path"),
        ("$.a[", "Unclosed bracket '[' in path"),
        ("$[-1]", "Invalid index '-1' in JSON path. Expected a number or a quoted string."),
        ("$[1.5]", "Invalid index '1.5' in JSON path. Expected a number or a quoted string."),
        ("$[]", "Invalid index '' in JSON path. Expected a number or a quoted string."),
        ("$[abc]", "Invalid index 'abc' in JSON path. Expected a number or a quoted string."),
        ("$[*]", "Invalid index '*' in JSON path. Expected a number or a quoted string."),
        ("$[1:2]", "Invalid index '1:2' in JSON path. Expected a number or a quoted string."),
        ("$['a\"]", "Unclosed bracket '[' in path"),
        ("$[\"a'b]", "Unclosed bracket '[' in path"),
    ],
)
def test_path_errors(text: str, message: str) -> None:
    with pytest.raises(PathError) as info:
        parse_path(text)
    assert str(info.value) == message


@pytest.mark.parametrize("value", [1, 1.5, True, ["$.a"], {"p": "a"}])
def test_path_must_be_a_string(value: Any) -> None:
    with pytest.raises(PathError, match=f"Path must be a string, got {type(value).__name__}"):
        parse_path(value)


def test_path_display() -> None:
    assert str(ROOT) == "$"
    assert str(parse_path("$['a'][0].b[12]")) == "$.a[0].b[12]"
    assert str(parse_path("plain key")) == "$.plain key"


def test_path_lookup() -> None:
    value = {"a": [{"b": None}, 5], "0": "zero"}
    assert Path(("a", 0, "b")).lookup(value) is None
    assert Path(("a", 1)).lookup(value) == 5
    assert ROOT.lookup(value) is value
    assert Path(("0",)).lookup(value) == "zero"
    for missing in [("a", 2), ("a", "0"), (0,), ("a", 0, "b", "c"), ("a", 1, 0), ("x",)]:
        assert Path(missing).lookup(value) is NOT_FOUND, missing
    assert Path((0,)).lookup("string") is NOT_FOUND
    assert Path(("k",)).lookup(None) is NOT_FOUND


def test_path_head() -> None:
    name, rest = parse_path("$.cfg.model[0]").head()
    assert name == "cfg"
    assert rest == Path(("model", 0))
    assert ROOT.head() == (None, ROOT)
    assert parse_path("$").is_root
    assert not parse_path("x").is_root
