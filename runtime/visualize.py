"""A flow as a graph (flows.md §10.3 `visualize`): one model, rendered as Mermaid or Graphviz DOT.

The graph is built once from the flow and config and both renderers only format it, so the two
text formats always agree on which nodes and edges exist.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .config import Config, RouteRule
from .errors import UserError
from .expressions import (
    CoalesceExpr,
    Const,
    Expr,
    IfExpr,
    InputRef,
    ListExpr,
    ObjectExpr,
    StepRef,
    VariableRef,
)
from .model import Flow
from .routing import Router

INPUT_NODE = "workflow_input"
OUTPUT_NODE = "workflow_output"
IMAGE_FORMATS = ("svg", "png")
DOT_TIMEOUT_SECONDS = 60

# Marks a reference to the flow input while walking expressions; not a valid step id key.
_INPUT_SOURCE = object()


@dataclass(frozen=True)
class Node:
    """A box in the picture; `key` is unique in the graph even when step ids are not."""

    key: str
    lines: tuple[str, ...]
    kind: str  # "input", "step" or "output"
    must_execute: bool = False


@dataclass(frozen=True)
class Edge:
    """Data flowing from `source` to `target`; `label` names the input fields ("" = all of it)."""

    source: str
    target: str
    label: str = ""


@dataclass
class Graph:
    """What both renderers draw, so dot and mermaid always agree on nodes and edges."""

    title: str
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)


def plugin_for(component: str, routes: dict[str, list[RouteRule]]) -> str | None:
    """The plugin a component most likely goes to, without starting anything.

    Only the first rule of the matching prefix counts: conditions depend on the step's runtime
    input, so a static picture can only name the first candidate.
    """
    if not component.startswith("/"):
        return None
    prefix, _ = Router.split(component)
    for key in (prefix, "/"):
        rules = routes.get(key)
        if rules:
            return rules[0].plugin
    return None


def _sources(expr: Expr) -> Iterator[object]:
    """Every step id (or `_INPUT_SOURCE`) the expression reads, ignoring laziness."""
    if isinstance(expr, InputRef):
        yield _INPUT_SOURCE
    elif isinstance(expr, StepRef):
        yield expr.step_id
    elif isinstance(expr, ObjectExpr):
        for sub in expr.fields.values():
            yield from _sources(sub)
    elif isinstance(expr, ListExpr | CoalesceExpr):
        for sub in expr.items:
            yield from _sources(sub)
    elif isinstance(expr, IfExpr):
        yield from _sources(expr.condition)
        yield from _sources(expr.then)
        if expr.otherwise is not None:
            yield from _sources(expr.otherwise)
    elif isinstance(expr, VariableRef):
        if expr.default is not None:
            yield from _sources(expr.default)
    elif not isinstance(expr, Const):
        # An expression kind this walker does not know yet: still show its step edges.
        yield from sorted(expr.step_refs())


def _labelled_sources(expr: Expr) -> dict[object, list[str]]:
    """Sources of a step (or output) expression with the top-level fields they feed."""
    found: dict[object, list[str]] = {}
    if isinstance(expr, ObjectExpr):
        for name, sub in expr.fields.items():
            for source in _sources(sub):
                names = found.setdefault(source, [])
                if name not in names:
                    names.append(name)
    else:
        for source in _sources(expr):
            found.setdefault(source, [])
    return found


def _unique(wanted: str, used: set[str]) -> str:
    key = wanted
    while key in used:
        key += "_"
    used.add(key)
    return key


def build_graph(
    flow: Flow,
    config: Config | None = None,
    *,
    show_plugins: bool = True,
    show_details: bool = True,
) -> Graph:
    """Nodes for the input, each step and the output; edges for every reference between them."""
    graph = Graph(title=flow.name or "workflow")
    used = {INPUT_NODE, OUTPUT_NODE}
    graph.nodes.append(Node(INPUT_NODE, ("Workflow Input",), "input"))
    key_of: dict[str, str] = {}
    targets: list[tuple[str, Expr]] = []
    for step in flow.steps:
        lines = [step.id]
        if show_details:
            lines.append(step.component)
            plugin = plugin_for(step.component, config.routes) if config else None
            if show_plugins and plugin is not None:
                lines.append(f"plugin: {plugin}")
        key = _unique(step.id, used)
        key_of.setdefault(step.id, key)
        graph.nodes.append(Node(key, tuple(lines), "step", step.must_execute))
        targets.append((key, step.input))
    graph.nodes.append(Node(OUTPUT_NODE, ("Workflow Output",), "output"))
    targets.append((OUTPUT_NODE, flow.output))
    for target, expr in targets:
        for source, names in _labelled_sources(expr).items():
            source_key = INPUT_NODE if source is _INPUT_SOURCE else key_of.get(str(source))
            if source_key is not None:  # references to undefined steps are `validate`'s job
                graph.edges.append(Edge(source_key, target, ", ".join(names)))
    return graph


# --- Mermaid -----------------------------------------------------------------------------------

_MERMAID_RESERVED = {"end", "graph", "subgraph", "flowchart", "style", "class", "classdef"}
_MERMAID_ESCAPES = {
    "#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "|": "#124;", "`": "#96;",
}  # fmt: skip


def _mermaid_ids(keys: Iterable[str]) -> dict[str, str]:
    """Mermaid ids allow only word characters, and `end` and friends break the parser."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for key in keys:
        safe = re.sub(r"\W", "_", key, flags=re.ASCII)
        if not safe or safe[0].isdigit() or safe.lower() in _MERMAID_RESERVED:
            safe = "n_" + safe
        out[key] = _unique(safe, used)
    return out


def _mermaid_text(text: str) -> str:
    escaped = "".join(_MERMAID_ESCAPES.get(ch, ch) for ch in text)
    return escaped.replace("\r\n", "<br/>").replace("\n", "<br/>")


def to_mermaid(graph: Graph) -> str:
    """A `flowchart TD`; must-execute steps use the subroutine shape and a bold class."""
    ids = _mermaid_ids(n.key for n in graph.nodes)
    lines = ["flowchart TD"]
    for node in graph.nodes:
        label = "<br/>".join(_mermaid_text(line) for line in node.lines)
        if node.kind != "step":
            opening, closing = "([", "])"
        elif node.must_execute:
            opening, closing = "[[", "]]"
        else:
            opening, closing = "[", "]"
        lines.append(f'    {ids[node.key]}{opening}"{label}"{closing}')
    for edge in graph.edges:
        arrow = f'-->|"{_mermaid_text(edge.label)}"|' if edge.label else "-->"
        lines.append(f"    {ids[edge.source]} {arrow} {ids[edge.target]}")
    lines.append("    classDef io fill:#e8f1fb,stroke:#4a78b0")
    lines.append("    classDef mustExecute fill:#fff1e0,stroke:#c0620b,stroke-width:3px")
    io = [ids[n.key] for n in graph.nodes if n.kind != "step"]
    lines.append(f"    class {','.join(io)} io")
    must = [ids[n.key] for n in graph.nodes if n.must_execute]
    if must:
        lines.append(f"    class {','.join(must)} mustExecute")
    return "\n".join(lines) + "\n"


# --- Graphviz ----------------------------------------------------------------------------------


def _dot_quote(text: str) -> str:
    """A DOT quoted string; doubling backslashes also disarms escString codes like `\\N`."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n") + '"'


def _dot_attrs(attrs: dict[str, str]) -> str:
    return "[" + ", ".join(f"{k}={_dot_quote(v)}" for k, v in attrs.items()) + "]"


def to_dot(graph: Graph) -> str:
    """A Graphviz digraph; every id and label is quoted so any step id is safe."""
    lines = [
        f"digraph {_dot_quote(graph.title)} {{",
        "    rankdir=TB;",
        '    node [fontname="Helvetica", fontsize=11];',
        '    edge [fontname="Helvetica", fontsize=9];',
    ]
    for node in graph.nodes:
        attrs = {"label": "\n".join(node.lines)}
        if node.kind != "step":
            attrs |= {"shape": "ellipse", "style": "filled", "fillcolor": "#e8f1fb"}
        elif node.must_execute:
            attrs |= {"shape": "box", "style": "rounded,filled,bold", "fillcolor": "#fff1e0"}
            attrs["peripheries"] = "2"
        else:
            attrs |= {"shape": "box", "style": "rounded"}
        lines.append(f"    {_dot_quote(node.key)} {_dot_attrs(attrs)};")
    for edge in graph.edges:
        attrs = {"label": edge.label} if edge.label else {}
        suffix = f" {_dot_attrs(attrs)}" if attrs else ""
        lines.append(f"    {_dot_quote(edge.source)} -> {_dot_quote(edge.target)}{suffix};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_image(dot_text: str, fmt: str) -> bytes:
    """Run Graphviz's `dot`; images are its job, so without it only text formats work."""
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"unsupported image format {fmt!r}")
    dot = shutil.which("dot")
    if dot is None:
        raise UserError("Graphviz 'dot' is not installed; use --format dot or --format mermaid")
    try:
        done = subprocess.run(
            [dot, f"-T{fmt}"],
            input=dot_text.encode("utf-8"),
            capture_output=True,
            check=False,
            timeout=DOT_TIMEOUT_SECONDS,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"Graphviz 'dot' could not run: {exc}") from None
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = detail[0] if detail else f"exit code {done.returncode}"
        raise UserError(f"Graphviz 'dot' failed: {reason}")
    return done.stdout
