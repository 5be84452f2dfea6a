"""The flow model (flows.md §2-§3) and its loader.

Parsing is hand-written rather than generated so that every error names the file and the exact
field (`flow.yaml: steps[1].onError.action: ...`) and unknown keys become warnings, as upstream
flows carry keys this model does not know.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from .errors import UserError
from .expressions import Const, Expr, ExpressionError, parse_expr
from .yaml12 import YamlError, load_yaml

FLOW_SCHEMA_URL = "https://stepflow.org/schemas/v1/flow.json"
ON_ERROR_ACTIONS = ("fail", "useDefault", "retry")
DEFAULT_MAX_RETRIES = 3


@dataclass(frozen=True)
class OnError:
    action: str = "fail"
    default_value: Any = None
    max_retries: int = DEFAULT_MAX_RETRIES


@dataclass
class Step:
    id: str
    component: str
    input: Expr
    raw: dict[str, Any]
    index: int
    on_error: OnError = field(default_factory=OnError)
    must_execute: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Steps this one reads (computed once; the scheduler asks every round).
        self.dependencies = frozenset(self.input.step_refs())


@dataclass(frozen=True)
class VariableSpec:
    """What the flow's variable schema says about one variable (flows.md §5.5)."""

    name: str
    has_default: bool
    default: Any = None
    is_secret: bool = False
    env_var: str | None = None


@dataclass
class Flow:
    steps: list[Step]
    output: Expr
    raw: dict[str, Any]
    source: str = "<flow>"
    name: str | None = None
    description: str | None = None
    version: str | None = None
    schemas: dict[str, Any] = field(default_factory=dict)
    test: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    unknown_fields: list[tuple[str, str]] = field(default_factory=list)
    has_output: bool = True

    def __post_init__(self) -> None:
        self.steps_by_id = {s.id: s for s in self.steps}

    def schema_part(self, name: str) -> dict[str, Any] | None:
        props = self.schemas.get("properties") if isinstance(self.schemas, dict) else None
        part = props.get(name) if isinstance(props, dict) else None
        return part if isinstance(part, dict) else None

    def variables(self) -> dict[str, VariableSpec]:
        """Declared variables with their defaults, secrecy and env-var annotations."""
        schema = self.schema_part("variables") or {}
        props = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        out: dict[str, VariableSpec] = {}
        for name, prop in props.items():
            prop = prop if isinstance(prop, dict) else {}
            has_default, default = _variable_default(prop, name in required)
            env_var = prop.get("env_var")
            out[name] = VariableSpec(
                name=name,
                has_default=has_default,
                default=default,
                is_secret=prop.get("is_secret") is True,
                env_var=env_var if isinstance(env_var, str) else None,
            )
        return out


def _variable_default(prop: dict[str, Any], required: bool) -> tuple[bool, Any]:
    if "default" in prop:
        return True, prop["default"]
    if required:
        return False, None
    kind = prop.get("type")
    if isinstance(kind, list):
        return ("null" in kind, None)
    implicit = {"string": "", "number": 0, "integer": 0, "boolean": False}
    if kind in implicit:
        return True, implicit[kind]
    return False, None


FLOW_KEYS = {
    "schema", "name", "description", "version", "schemas", "steps", "output", "test",
    "examples", "metadata",
}  # fmt: skip
STEP_KEYS = {"id", "component", "input", "onError", "mustExecute", "metadata"}


class _Reader:
    """Field access with locations, collecting unknown keys as warnings."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.unknown: list[tuple[str, str]] = []

    def error(self, where: str, message: str) -> UserError:
        return UserError(message, f"{self.source}: {where}" if where else self.source)

    def note_unknown(self, obj: dict[str, Any], known: set[str], where: str) -> None:
        for key in obj:
            if key not in known:
                self.unknown.append((str(key), where or "flow"))

    def opt_str(self, obj: dict[str, Any], key: str, where: str) -> str | None:
        value = obj.get(key)
        if value is not None and not isinstance(value, str):
            raise self.error(f"{where}{key}", f"expected a string, got {_type_name(value)}")
        return value

    def opt_dict(self, obj: dict[str, Any], key: str, where: str) -> dict[str, Any]:
        value = obj.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(f"{where}{key}", f"expected an object, got {_type_name(value)}")
        return value

    def expr(self, value: Any, where: str) -> Expr:
        try:
            return parse_expr(value, where)
        except ExpressionError as exc:
            raise self.error(exc.where, exc.message) from None


def _type_name(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def parse_flow(doc: Any, source: str = "<flow>") -> Flow:
    """Build a Flow from its JSON form; raises UserError naming `source` and the field."""
    reader = _Reader(source)
    if not isinstance(doc, dict):
        raise reader.error("", f"a flow must be an object, got {_type_name(doc)}")
    reader.note_unknown(doc, FLOW_KEYS, "")
    raw_steps = doc.get("steps")
    if raw_steps is None:
        raw_steps = []
    if not isinstance(raw_steps, list):
        raise reader.error("steps", f"expected a list of steps, got {_type_name(raw_steps)}")
    steps = [_parse_step(reader, raw, i) for i, raw in enumerate(raw_steps)]
    schemas = reader.opt_dict(doc, "schemas", "")
    for key in ("input", "output", "variables", "steps"):
        if key in schemas:
            raise reader.error(
                f"schemas.{key}", f"'{key}' must be inside 'schemas.properties', not 'schemas'"
            )
    test = doc.get("test")
    if test is not None and not isinstance(test, dict):
        raise reader.error("test", f"expected an object, got {_type_name(test)}")
    return Flow(
        steps=steps,
        output=reader.expr(doc.get("output"), "output") if "output" in doc else Const(None),
        raw=doc,
        source=source,
        name=reader.opt_str(doc, "name", ""),
        description=reader.opt_str(doc, "description", ""),
        version=None if doc.get("version") is None else str(doc.get("version")),
        schemas=schemas,
        test=test,
        metadata=reader.opt_dict(doc, "metadata", ""),
        unknown_fields=reader.unknown,
        has_output=doc.get("output") is not None,
    )


def _parse_step(reader: _Reader, raw: Any, index: int) -> Step:
    where = f"steps[{index}]"
    if not isinstance(raw, dict):
        raise reader.error(where, f"a step must be an object, got {_type_name(raw)}")
    reader.note_unknown(raw, STEP_KEYS, where)
    step_id = raw.get("id")
    if not isinstance(step_id, str):
        raise reader.error(f"{where}.id", "every step needs a string 'id'")
    where = f"steps[{index}] (step '{step_id}')"
    component = raw.get("component")
    if not isinstance(component, str):
        raise reader.error(f"{where}.component", "every step needs a string 'component'")
    must_execute = raw.get("mustExecute")
    if must_execute is not None and not isinstance(must_execute, bool):
        raise reader.error(f"{where}.mustExecute", "expected true or false")
    return Step(
        id=step_id,
        component=component,
        input=reader.expr(raw.get("input"), f"{where}.input"),
        raw=raw,
        index=index,
        on_error=_parse_on_error(reader, raw.get("onError"), f"{where}.onError"),
        must_execute=bool(must_execute),
        metadata=reader.opt_dict(raw, "metadata", f"{where}."),
    )


def _parse_on_error(reader: _Reader, raw: Any, where: str) -> OnError:
    if raw is None:
        return OnError()
    if not isinstance(raw, dict):
        raise reader.error(where, f"expected an object with 'action', got {_type_name(raw)}")
    action = raw.get("action")
    if action not in ON_ERROR_ACTIONS:
        raise reader.error(
            f"{where}.action",
            f"unknown action {action!r}; expected one of {', '.join(ON_ERROR_ACTIONS)}",
        )
    max_retries = raw.get("maxRetries")
    if max_retries is None:
        max_retries = DEFAULT_MAX_RETRIES
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise reader.error(f"{where}.maxRetries", "expected a non-negative integer")
    reader.note_unknown(raw, {"action", "defaultValue", "maxRetries"}, where)
    return OnError(action=action, default_value=raw.get("defaultValue"), max_retries=max_retries)


def read_document(path: FsPath) -> Any:
    """Read a YAML or JSON file by extension; errors name the file."""
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json", ".jsonl"):
        raise UserError(f"Unrecognized file extension: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"Missing file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"Cannot read file: {exc}", str(path)) from None
    return parse_document(text, suffix, str(path))


def parse_document(text: str, suffix: str, source: str) -> Any:
    if suffix in (".json", ".jsonl"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(
                f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", source
            ) from None
    try:
        return load_yaml(text, source)
    except YamlError as exc:
        raise UserError(str(exc)) from None


def load_flow(path: FsPath) -> Flow:
    return parse_flow(read_document(path), str(path))
