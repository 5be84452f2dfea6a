"""The expression language of flows (flows.md §5): parsing, lazy dependencies and resolution.

Every expression answers two questions: which step results it needs *now* (`needs`, lazy through
`$if` and `$coalesce`), and what it evaluates to once those are there (`resolve`). The executor only
ever asks these two questions, so laziness lives in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import FlowResult
from .paths import NOT_FOUND, ROOT, Path, PathError, parse_path


class ExpressionError(ValueError):
    """An expression that cannot be parsed; `where` is a field path such as `steps[1].input.x`."""

    def __init__(self, message: str, where: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.message = message
        self.where = where


@dataclass
class Env:
    """What expressions can see: the item's input, variables and the step results so far."""

    input: Any
    results: Mapping[str, FlowResult]
    variables: Mapping[str, Any] = field(default_factory=dict)
    variable_defaults: Mapping[str, Any] = field(default_factory=dict)
    known_steps: frozenset[str] | None = None


def _expression_failure(message: str) -> FlowResult:
    return FlowResult.failure("EXPRESSION_FAILURE", message)


def is_truthy(value: Any) -> bool:
    """Anything but null and false is truthy (0, "", [] and {} included)."""
    return value is not None and value is not False


class Expr:
    """Base of all expression nodes."""

    def needs(self, env: Env) -> set[str]:
        """Step ids whose results are needed before this can resolve, given what is known."""
        return set()

    def resolve(self, env: Env) -> FlowResult:
        raise NotImplementedError

    def step_refs(self) -> set[str]:
        """Every step id mentioned anywhere, ignoring laziness (for validation and graphs)."""
        return set()

    def variable_refs(self) -> set[str]:
        return set()


@dataclass
class Const(Expr):
    """A value with nothing to evaluate (scalars, `$literal`, expression-free containers)."""

    value: Any

    def resolve(self, env: Env) -> FlowResult:
        return FlowResult.success(self.value)


@dataclass
class InputRef(Expr):
    path: Path

    def resolve(self, env: Env) -> FlowResult:
        value = self.path.lookup(env.input)
        if value is NOT_FOUND:
            return _expression_failure(f"Input path {self.path} not found")
        return FlowResult.success(value)


@dataclass
class StepRef(Expr):
    step_id: str
    path: Path

    def needs(self, env: Env) -> set[str]:
        return set() if self.step_id in env.results else {self.step_id}

    def resolve(self, env: Env) -> FlowResult:
        result = env.results.get(self.step_id)
        if result is None and env.known_steps is not None and self.step_id not in env.known_steps:
            return _expression_failure(f"Unknown step: {self.step_id}")
        if result is None:
            return FlowResult.failure("ORCHESTRATOR_ERROR", f"Step {self.step_id} not completed")
        if not result.ok or result.value is None or self.path.is_root:
            return result
        value = self.path.lookup(result.value)
        if value is NOT_FOUND:
            return _expression_failure(f"Path {self.path} not found")
        return FlowResult.success(value)

    def step_refs(self) -> set[str]:
        return {self.step_id}


@dataclass
class VariableRef(Expr):
    name: str
    path: Path
    default: Expr | None

    def _lookup(self, env: Env) -> Any:
        if self.name in env.variables:
            value = env.variables[self.name]
        elif self.name in env.variable_defaults:
            value = env.variable_defaults[self.name]
        else:
            return NOT_FOUND
        return self.path.lookup(value)

    def needs(self, env: Env) -> set[str]:
        if self.default is None or self._lookup(env) is not NOT_FOUND:
            return set()
        return self.default.needs(env)

    def resolve(self, env: Env) -> FlowResult:
        value = self._lookup(env)
        if value is not NOT_FOUND:
            return FlowResult.success(value)
        if self.default is not None:
            return self.default.resolve(env)
        return _expression_failure(f"Undefined variable: {self.name}")

    def step_refs(self) -> set[str]:
        return self.default.step_refs() if self.default else set()

    def variable_refs(self) -> set[str]:
        return {self.name} | (self.default.variable_refs() if self.default else set())


@dataclass
class IfExpr(Expr):
    condition: Expr
    then: Expr
    otherwise: Expr | None

    def _branch(self, env: Env) -> Expr | None:
        cond = self.condition.resolve(env)
        return self.then if cond.ok and is_truthy(cond.value) else self.otherwise

    def needs(self, env: Env) -> set[str]:
        pending = self.condition.needs(env)
        if pending:
            return pending
        branch = self._branch(env)
        return branch.needs(env) if branch else set()

    def resolve(self, env: Env) -> FlowResult:
        branch = self._branch(env)
        return branch.resolve(env) if branch else FlowResult.success(None)

    def _parts(self) -> list[Expr]:
        return [self.condition, self.then] + ([self.otherwise] if self.otherwise else [])

    def step_refs(self) -> set[str]:
        return set().union(*(p.step_refs() for p in self._parts()))

    def variable_refs(self) -> set[str]:
        return set().union(*(p.variable_refs() for p in self._parts()))


@dataclass
class CoalesceExpr(Expr):
    items: list[Expr]

    def needs(self, env: Env) -> set[str]:
        for item in self.items:
            pending = item.needs(env)
            if pending:
                return pending
            result = item.resolve(env)
            if not result.ok or result.value is not None:
                return set()
        return set()

    def resolve(self, env: Env) -> FlowResult:
        for item in self.items:
            result = item.resolve(env)
            if not result.ok or result.value is not None:
                return result
        return FlowResult.success(None)

    def step_refs(self) -> set[str]:
        return set().union(*(i.step_refs() for i in self.items))

    def variable_refs(self) -> set[str]:
        return set().union(*(i.variable_refs() for i in self.items))


@dataclass
class ObjectExpr(Expr):
    fields: dict[str, Expr]

    def needs(self, env: Env) -> set[str]:
        return set().union(*(e.needs(env) for e in self.fields.values()))

    def resolve(self, env: Env) -> FlowResult:
        out: dict[str, Any] = {}
        for key, expr in self.fields.items():
            result = expr.resolve(env)
            if not result.ok:
                return result
            out[key] = result.value
        return FlowResult.success(out)

    def step_refs(self) -> set[str]:
        return set().union(*(e.step_refs() for e in self.fields.values()))

    def variable_refs(self) -> set[str]:
        return set().union(*(e.variable_refs() for e in self.fields.values()))


@dataclass
class ListExpr(Expr):
    items: list[Expr]

    def needs(self, env: Env) -> set[str]:
        return set().union(*(e.needs(env) for e in self.items))

    def resolve(self, env: Env) -> FlowResult:
        out: list[Any] = []
        for expr in self.items:
            result = expr.resolve(env)
            if not result.ok:
                return result
            out.append(result.value)
        return FlowResult.success(out)

    def step_refs(self) -> set[str]:
        return set().union(*(e.step_refs() for e in self.items))

    def variable_refs(self) -> set[str]:
        return set().union(*(e.variable_refs() for e in self.items))


def parse_expr(value: Any, where: str = "") -> Expr:
    """Parse a JSON value into an expression; raises ExpressionError naming the field."""
    if isinstance(value, dict):
        return _parse_object(value, where)
    if isinstance(value, list):
        items = [parse_expr(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if all(isinstance(i, Const) for i in items):
            return Const([i.value for i in items])  # type: ignore[attr-defined]
        return ListExpr(items)
    return Const(value)


def _path(value: Any, where: str) -> Path:
    try:
        return parse_path(value)
    except PathError as exc:
        raise ExpressionError(str(exc), where) from None


def _parse_object(obj: dict[str, Any], where: str) -> Expr:
    if "$literal" in obj:
        return Const(obj["$literal"])
    if "$if" in obj:
        if "then" not in obj:
            raise ExpressionError("'$if' requires a 'then' branch", where)
        otherwise = obj.get("else")
        return IfExpr(
            parse_expr(obj["$if"], f"{where}.$if"),
            parse_expr(obj["then"], f"{where}.then"),
            parse_expr(otherwise, f"{where}.else") if "else" in obj else None,
        )
    if "$coalesce" in obj:
        items = obj["$coalesce"]
        if not isinstance(items, list):
            raise ExpressionError("'$coalesce' must be a list of expressions", where)
        return CoalesceExpr([parse_expr(v, f"{where}.$coalesce[{i}]") for i, v in enumerate(items)])
    if "$from" in obj:
        raise ExpressionError(
            "'$from' is not supported: use {$step: <id>, path: <path>} or {$input: <path>} "
            "(wrap in $literal for a literal '$from' key)",
            where,
        )
    if "$step" in obj:
        step_id = obj["$step"]
        if not isinstance(step_id, str):
            raise ExpressionError("'$step' must be a step id string", where)
        return StepRef(step_id, _path(obj.get("path"), f"{where}.path"))
    if "$input" in obj:
        return InputRef(_path(obj["$input"], f"{where}.$input"))
    if "$variable" in obj:
        path = _path(obj["$variable"], f"{where}.$variable")
        name, rest = path.head()
        if name is None or not isinstance(name, str):
            raise ExpressionError("'$variable' must name a variable", where)
        default = parse_expr(obj["default"], f"{where}.default") if "default" in obj else None
        return VariableRef(name, rest, default)
    fields = {k: parse_expr(v, f"{where}.{k}") for k, v in obj.items()}
    if all(isinstance(e, Const) for e in fields.values()):
        return Const({k: e.value for k, e in fields.items()})  # type: ignore[attr-defined]
    return ObjectExpr(fields)


__all__ = [
    "ROOT",
    "CoalesceExpr",
    "Const",
    "Env",
    "Expr",
    "ExpressionError",
    "IfExpr",
    "InputRef",
    "ListExpr",
    "ObjectExpr",
    "StepRef",
    "VariableRef",
    "is_truthy",
    "parse_expr",
]
