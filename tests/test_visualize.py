"""`stepflow visualize`: the graph model, both text renderers, Graphviz images and the CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from stepflow_mesh.runtime.cli.visualize_cmd import command
from stepflow_mesh.runtime.config import Config, RouteRule, default_config
from stepflow_mesh.runtime.errors import UserError
from stepflow_mesh.runtime.model import Flow, load_flow, parse_flow
from stepflow_mesh.runtime.visualize import (
    Edge,
    build_graph,
    plugin_for,
    render_image,
    to_dot,
    to_mermaid,
)

FLOW_DOC: dict[str, Any] = {
    "name": "answer questions",
    "steps": [
        {
            "id": "prompt",
            "component": "/builtin/create_messages",
            "input": {"user_prompt": {"$input": "question"}, "system": "be brief"},
        },
        {
            "id": "llm",
            "component": "/python/chat",
            "input": {
                "messages": {"$step": "prompt", "path": "messages"},
                "temperature": {"$coalesce": [{"$input": "temperature"}, 0.2]},
            },
        },
        {
            "id": "audit-log",
            "component": "/mystery/log",
            "mustExecute": True,
            "input": {"$step": "llm"},
        },
    ],
    "output": {
        "answer": {"$step": "llm", "path": "text"},
        "debug": {"$if": {"$input": "debug"}, "then": {"$step": "prompt"}},
    },
}


@pytest.fixture
def flow_file(tmp_path: Path) -> Path:
    path = tmp_path / "flow.json"
    path.write_text(json.dumps(FLOW_DOC), encoding="utf-8")
    return path


@pytest.fixture
def flow(flow_file: Path) -> Flow:
    return load_flow(flow_file)


def _edges(flow: Flow, config: Config | None = None) -> set[Edge]:
    return set(build_graph(flow, config).edges)


def test_graph_edges_follow_references_with_field_labels(flow: Flow, tmp_path: Path) -> None:
    assert _edges(flow, default_config(tmp_path)) == {
        Edge("workflow_input", "prompt", "user_prompt"),
        Edge("prompt", "llm", "messages"),
        Edge("workflow_input", "llm", "temperature"),
        Edge("llm", "audit-log", ""),
        Edge("llm", "workflow_output", "answer"),
        Edge("workflow_input", "workflow_output", "debug"),
        Edge("prompt", "workflow_output", "debug"),
    }


def test_edges_walk_nested_expressions_and_merge_fields() -> None:
    flow = parse_flow(
        {
            "steps": [
                {"id": "a", "component": "/x/a", "input": {"$input": "$"}},
                {
                    "id": "b",
                    "component": "/x/b",
                    "input": {
                        "left": [{"k": {"$step": "a"}}],
                        "right": {"$variable": "v", "default": {"$step": "a", "path": "y"}},
                        "plain": 1,
                    },
                },
                {"id": "c", "component": "/x/c", "input": {"$step": "ghost"}},
            ],
            "output": [{"$step": "b"}, {"$input": "n"}],
        }
    )
    assert _edges(flow) == {
        Edge("workflow_input", "a", ""),
        Edge("a", "b", "left, right"),
        Edge("b", "workflow_output", ""),
        Edge("workflow_input", "workflow_output", ""),
    }


def test_node_labels_name_component_and_plugin(flow: Flow, tmp_path: Path) -> None:
    config = default_config(tmp_path)
    lines = {n.key: n.lines for n in build_graph(flow, config).nodes}
    assert list(lines) == ["workflow_input", "prompt", "llm", "audit-log", "workflow_output"]
    assert lines["prompt"] == ("prompt", "/builtin/create_messages", "plugin: builtin")
    assert lines["llm"] == ("llm", "/python/chat")  # no route for /python: no plugin line
    no_servers = build_graph(flow, config, show_plugins=False)
    assert next(n for n in no_servers.nodes if n.key == "prompt").lines == (
        "prompt",
        "/builtin/create_messages",
    )
    no_details = build_graph(flow, config, show_details=False)
    assert [n.lines for n in no_details.nodes if n.kind == "step"] == [
        ("prompt",),
        ("llm",),
        ("audit-log",),
    ]


def test_plugin_for_uses_prefix_then_catch_all() -> None:
    routes = {"/python": [RouteRule("py"), RouteRule("other")], "/": [RouteRule("fallback")]}
    assert plugin_for("/python/chat", routes) == "py"
    assert plugin_for("/python", routes) == "py"
    assert plugin_for("/openai/chat", routes) == "fallback"
    assert plugin_for("/openai/chat", {"/python": [RouteRule("py")]}) is None
    assert plugin_for("no-slash", routes) is None


def test_mermaid_has_every_node_and_labelled_edge(flow: Flow, tmp_path: Path) -> None:
    text = to_mermaid(build_graph(flow, default_config(tmp_path)))
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0] == "flowchart TD"
    assert 'workflow_input(["Workflow Input"])' in lines
    assert 'workflow_output(["Workflow Output"])' in lines
    assert 'prompt["prompt<br/>/builtin/create_messages<br/>plugin: builtin"]' in lines
    assert 'llm["llm<br/>/python/chat"]' in lines
    assert 'audit_log[["audit-log<br/>/mystery/log"]]' in lines  # mustExecute shape
    assert "class audit_log mustExecute" in lines
    for edge in (
        'workflow_input -->|"user_prompt"| prompt',
        'prompt -->|"messages"| llm',
        'workflow_input -->|"temperature"| llm',
        "llm --> audit_log",
        'llm -->|"answer"| workflow_output',
        'prompt -->|"debug"| workflow_output',
    ):
        assert edge in lines


def test_mermaid_sanitises_ids_and_escapes_labels() -> None:
    flow = parse_flow(
        {
            "steps": [
                {"id": "end", "component": "/x/a", "input": {"q": {"$input": "q"}}},
                {"id": "a.b", "component": '/x/say "hi" <b>', "input": {"$step": "end"}},
                {"id": "a-b", "component": "/x/c", "input": {"p|q": {"$step": "a.b"}}},
            ],
            "output": {"$step": "a-b"},
        }
    )
    lines = [line.strip() for line in to_mermaid(build_graph(flow)).splitlines()]
    assert 'n_end["end<br/>/x/a"]' in lines
    assert 'a_b["a.b<br/>/x/say #quot;hi#quot; #lt;b#gt;"]' in lines
    assert 'a_b_["a-b<br/>/x/c"]' in lines
    assert "n_end --> a_b" in lines
    assert 'a_b -->|"p#124;q"| a_b_' in lines


def _dot_statements(text: str) -> tuple[list[str], int]:
    """Split DOT into statements outside quoted strings; also report the maximum brace depth."""
    statements, current, depth, max_depth = [], "", 0, 0
    in_string = escaped = False
    for ch in text:
        current += ch
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
            max_depth = max(max_depth, depth)
        elif ch == "}":
            depth -= 1
            assert depth >= 0, "closing brace without an opening one"
        elif ch == ";":
            statements.append(current.strip())
            current = ""
    assert not in_string and depth == 0, "unterminated string or unbalanced braces"
    assert current.strip() == "}"
    return statements, max_depth


QUOTED = r'"((?:[^"\\]|\\.)*)"'


def test_dot_is_structurally_valid(flow: Flow, tmp_path: Path) -> None:
    text = to_dot(build_graph(flow, default_config(tmp_path)))
    assert text.startswith('digraph "answer questions" {')
    statements, max_depth = _dot_statements(text)
    assert max_depth == 1
    nodes: dict[str, str] = {}
    edges: set[tuple[str, str, str]] = set()
    for stmt in statements:
        edge = re.match(rf"^{QUOTED} -> {QUOTED}(.*);$", stmt)
        node = re.match(rf"^{QUOTED} \[label={QUOTED}(.*)\];$", stmt)
        if edge:
            label = re.search(rf"label={QUOTED}", edge.group(3))
            edges.add((edge.group(1), edge.group(2), label.group(1) if label else ""))
        elif node:
            nodes[node.group(1)] = node.group(2)
    assert set(nodes) == {"workflow_input", "prompt", "llm", "audit-log", "workflow_output"}
    assert nodes["prompt"] == "prompt\\n/builtin/create_messages\\nplugin: builtin"
    assert ("workflow_input", "prompt", "user_prompt") in edges
    assert ("prompt", "llm", "messages") in edges
    assert ("llm", "audit-log", "") in edges
    assert ("llm", "workflow_output", "answer") in edges
    assert len(edges) == 7
    assert 'peripheries="2"' in next(s for s in statements if s.startswith('"audit-log"'))


def test_dot_escapes_quotes_backslashes_and_newlines() -> None:
    flow = parse_flow(
        {
            "steps": [{"id": 'we"ird\\', "component": "/x/a\nb", "input": {"$input": "$"}}],
            "output": {"r": {"$step": 'we"ird\\'}},
        }
    )
    text = to_dot(build_graph(flow))
    _dot_statements(text)
    assert '"we\\"ird\\\\" [label="we\\"ird\\\\\\n/x/a\\nb"' in text
    assert '"we\\"ird\\\\" -> "workflow_output" [label="r"];' in text


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_svg_rendering_with_graphviz(flow: Flow) -> None:
    svg = render_image(to_dot(build_graph(flow)), "svg")
    assert b"<svg" in svg
    assert b"audit-log" in svg


@pytest.mark.skipif(shutil.which("dot") is not None, reason="Graphviz is installed")
def test_svg_rendering_without_graphviz_suggests_text_formats(flow: Flow) -> None:
    with pytest.raises(UserError, match=r"--format dot or --format mermaid"):
        render_image(to_dot(build_graph(flow)), "svg")


def _fake_dot(directory: Path, body: str) -> None:
    """A stand-in `dot` on PATH, so the subprocess contract is tested without Graphviz."""
    directory.mkdir(exist_ok=True)
    fake = directory / "dot"
    fake.write_text(f"#!{sys.executable}\nimport sys\n{body}\n", encoding="utf-8")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)


@pytest.mark.skipif(os.name != "posix", reason="the fake dot relies on a shebang line")
def test_render_image_passes_format_and_dot_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    monkeypatch.setenv("PATH", str(bin_dir))
    _fake_dot(bin_dir, 'sys.stdout.write(f"<fake {sys.argv[1:]}>" + sys.stdin.read())')
    assert render_image("digraph {}\n", "png") == b"<fake ['-Tpng']>digraph {}\n"
    _fake_dot(bin_dir, 'sys.stderr.write("syntax error in line 1\\n")\nsys.exit(3)')
    with pytest.raises(UserError, match="failed: syntax error in line 1"):
        render_image("digraph {", "svg")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="not installed"):
        render_image("digraph {}\n", "svg")


def test_cli_mermaid_to_stdout(flow_file: Path) -> None:
    result = CliRunner().invoke(command, [str(flow_file), "--format", "mermaid", "--no-servers"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("flowchart TD\n")
    assert 'workflow_input -->|"user_prompt"| prompt' in result.stdout
    assert 'prompt["prompt<br/>/builtin/create_messages"]' in result.stdout
    assert "Visualization generated" not in result.stderr


def test_cli_dot_to_file_reports_path(flow_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "graph.dot"
    result = CliRunner().invoke(command, [str(flow_file), "--format", "dot", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr.strip() == f"✅ Visualization generated: {out}"
    assert '"prompt" -> "llm" [label="messages"];' in out.read_text(encoding="utf-8")


@pytest.mark.skipif(os.name != "posix", reason="the fake dot relies on a shebang line")
def test_cli_svg_defaults_to_a_file_beside_the_flow(
    flow_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    _fake_dot(tmp_path / "bin", 'sys.stdout.write("<svg>" + sys.stdin.read() + "</svg>")')
    result = CliRunner().invoke(command, [str(flow_file), "--no-details"])
    assert result.exit_code == 0, result.output
    written = flow_file.with_suffix(".svg")
    assert result.stderr.strip() == f"✅ Visualization generated: {written}"
    svg = written.read_text(encoding="utf-8")
    assert svg.startswith("<svg>digraph")
    assert '"prompt" [label="prompt", shape="box"' in svg


def test_cli_refuses_to_overwrite_default_image(flow_file: Path) -> None:
    existing = flow_file.with_suffix(".svg")
    existing.write_text("keep me", encoding="utf-8")
    result = CliRunner().invoke(command, [str(flow_file)])
    assert result.exit_code == 1
    assert isinstance(result.exception, UserError)
    assert str(existing) in str(result.exception)
    assert "overwrite" in str(result.exception)
    assert existing.read_text(encoding="utf-8") == "keep me"
