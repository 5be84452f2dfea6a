"""Static checks of a flow against its config (flows.md §10.4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import Config
from .expressions import Const, Expr
from .model import FLOW_SCHEMA_URL, Flow, parse_flow
from .routing import Router, RoutingError

LEVELS = {1: "warning", 2: "error", 3: "fatal"}


@dataclass(frozen=True)
class Diagnostic:
    code: int
    message: str
    path: str = "$"

    @property
    def level(self) -> str:
        return LEVELS.get(self.code // 1000, "error")


def validate(flow: Flow, config: Config | None, router: Router | None = None) -> list[Diagnostic]:
    """All diagnostics for the flow; `router` (with statically known components) checks routes."""
    out: list[Diagnostic] = []
    out += _check_header(flow)
    out += _check_steps(flow)
    out += _check_variables(flow)
    if config is not None:
        out += _check_config(flow, config)
    if router is not None:
        out += _check_routes(flow, router)
    return out


def _check_header(flow: Flow) -> list[Diagnostic]:
    out = []
    if not flow.name:
        out.append(Diagnostic(1001, "Workflow has no name", "$.name"))
    if not flow.description:
        out.append(Diagnostic(1002, "Workflow has no description", "$.description"))
    for key, where in flow.unknown_fields:
        if key != "schema" or where != "flow":
            out.append(Diagnostic(1010, f"Unknown field '{key}' ignored in {where}"))
    return out


def _check_steps(flow: Flow) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    seen: dict[str, int] = {}
    referenced: set[str] = set(flow.output.step_refs())
    for step in flow.steps:
        where = f"$.steps[{step.index}]"
        if not step.id:
            out.append(Diagnostic(3001, "Step has empty ID", f"{where}.id"))
        elif step.id in seen:
            out.append(Diagnostic(3000, f"Duplicate step ID '{step.id}'", f"{where}.id"))
        if not step.component or step.component == "/":
            out.append(
                Diagnostic(2001, f"Empty component name in step '{step.id}'", f"{where}.component")
            )
        elif not step.component.startswith("/"):
            out.append(
                Diagnostic(
                    2500,
                    f"Invalid component '{step.component}' in step '{step.id}': "
                    "Component path must start with '/'",
                    f"{where}.component",
                )
            )
        refs = step.input.step_refs()
        referenced |= refs
        for ref in sorted(refs):
            if ref == step.id:
                out.append(
                    Diagnostic(3002, f"Step '{step.id}' references itself", f"{where}.input")
                )
            elif ref not in seen:
                out.append(
                    Diagnostic(
                        3003,
                        f"Step '{step.id}' references undefined step '{ref}'",
                        f"{where}.input",
                    )
                )
        out += _check_subflow_literals(step.input, step.id, f"{where}.input")
        seen.setdefault(step.id, step.index)
    for ref in sorted(flow.output.step_refs() - set(seen)):
        out.append(Diagnostic(3003, f"Output references undefined step '{ref}'", "$.output"))
    for step in flow.steps:
        if step.id and step.id not in referenced:
            out.append(
                Diagnostic(
                    1000,
                    f"Step '{step.id}' is not reachable from the output",
                    f"$.steps[{step.index}]",
                )
            )
    return out


def _check_subflow_literals(expr: Expr, step_id: str, where: str) -> list[Diagnostic]:
    """A literal `put_blob` of `blob_type: flow` must itself be a valid flow."""
    if not isinstance(expr, Const) or not isinstance(expr.value, dict):
        return []
    if expr.value.get("blob_type") != "flow" or "data" not in expr.value:
        return []
    try:
        nested = parse_flow(expr.value["data"], f"{where}.data")
    except Exception as exc:  # UserError or ExpressionError from the nested flow
        return [Diagnostic(2003, f"Invalid subflow literal: {exc}", f"{where}.data")]
    return [
        Diagnostic(d.code, d.message, f"{where}.data{d.path[1:]}")
        for d in _check_steps(nested)
        if d.level != "warning"
    ]


def _check_variables(flow: Flow) -> list[Diagnostic]:
    used: dict[str, str] = {}
    for step in flow.steps:
        for name in step.input.variable_refs():
            used.setdefault(name, step.id)
    for name in flow.output.variable_refs():
        used.setdefault(name, "output")
    if not used:
        return []
    schema = flow.schema_part("variables")
    if schema is None:
        return [Diagnostic(1004, "No variable schema defined", "$.schemas.properties.variables")]
    declared = flow.variables()
    out = []
    for name, step_id in used.items():
        if name not in declared:
            out.append(Diagnostic(2005, f"Variable '{name}' is not defined in step '{step_id}'"))
    return out


def _check_config(flow: Flow, config: Config) -> list[Diagnostic]:
    out = []
    if not config.plugins:
        out.append(Diagnostic(1200, "No plugins configured"))
    if not config.routes:
        out.append(Diagnostic(1201, "No routing rules configured"))
    used = set()
    for prefix, rules in config.routes.items():
        for rule in rules:
            used.add(rule.plugin)
            if rule.plugin not in config.plugins:
                out.append(
                    Diagnostic(2200, f"Route '{prefix}' references unknown plugin '{rule.plugin}'")
                )
    for name in config.plugins:
        if name not in used:
            out.append(Diagnostic(1202, f"Plugin '{name}' is not used by any route"))
    for step in flow.steps:
        prefix, _ = Router.split(step.component)
        for rule in config.routes.get(prefix, []):
            plugin = config.plugins.get(rule.plugin) or {}
            if plugin.get("type") == "mock":
                out.append(
                    Diagnostic(
                        1500,
                        f"Step '{step.id}' uses a mock component",
                        f"$.steps[{step.index}].component",
                    )
                )
                break
    return out


def _check_routes(flow: Flow, router: Router) -> list[Diagnostic]:
    """Unknown components: steps whose path no rule can route (conditions assumed to hold)."""
    out = []
    for step in flow.steps:
        if not step.component.startswith("/"):
            continue
        try:
            router.resolve(step.component, None, static=True)
        except RoutingError as exc:
            out.append(
                Diagnostic(
                    2201,
                    f"Unknown component '{step.component}' in step '{step.id}': {exc}",
                    f"$.steps[{step.index}].component",
                )
            )
    return out


def is_flow_document(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("schema") == FLOW_SCHEMA_URL
