"""`stepflow visualize`: draw a flow's steps and data flow (flows.md §10.3)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UserError
from ..visualize import IMAGE_FORMATS, build_graph, render_image, to_dot, to_mermaid
from .options import PATH, config_option
from .session import load_flow_and_config

FORMATS = ("dot", "svg", "png", "mermaid")


def _default_image_path(flow_path: Path, fmt: str) -> Path:
    """`<flow>.<ext>` beside the flow; checked before any work so no image is ever clobbered."""
    path = flow_path.with_suffix(f".{fmt}")
    if path.exists():
        raise UserError(f"Refusing to overwrite existing file {path}; choose one with --output")
    return path


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise UserError(f"Cannot write visualization: {exc.strerror or exc}", str(path)) from None


@click.command("visualize")
@click.argument("flow_path", metavar="FLOW", type=PATH)
@click.option("-o", "--output", "output_path", type=PATH, help="Write the graph to this file.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="svg",
    show_default=True,
    help="Graph format; svg and png need Graphviz ('mermaid' is a project extension).",
)
@click.option("--no-servers", is_flag=True, help="Leave out which plugin runs each step.")
@click.option("--no-details", is_flag=True, help="Show only step ids.")
@config_option
def command(
    flow_path: Path,
    output_path: Path | None,
    fmt: str,
    no_servers: bool,
    no_details: bool,
    config_path: Path | None,
) -> None:
    """Draw a flow as a graph of its steps and the data passed between them."""
    target = output_path
    if target is None and fmt in IMAGE_FORMATS:
        target = _default_image_path(flow_path, fmt)
    flow, config = load_flow_and_config(flow_path, config_path)
    graph = build_graph(flow, config, show_plugins=not no_servers, show_details=not no_details)
    text = to_mermaid(graph) if fmt == "mermaid" else to_dot(graph)
    if target is None:
        click.echo(text, nl=False)
        return
    data = render_image(text, fmt) if fmt in IMAGE_FORMATS else text.encode("utf-8")
    _write(target, data)
    click.echo(f"✅ Visualization generated: {target}", err=True)
