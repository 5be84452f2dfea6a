"""`stepflow list-components`: every component the configured plugins offer (flows.md §10.3)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click

from ..config import discover_config
from ..engine import Runtime
from ..yaml12 import dump_yaml
from .options import config_option


def _bool(value: str | None) -> bool | None:
    return None if value is None else value.lower() == "true"


async def _collect(runtime: Runtime) -> list[dict[str, Any]]:
    """One entry per component, with the route paths that reach it."""
    entries = []
    for plugin_name, components in runtime.components.items():
        for info in components:
            routes = runtime.router.routes_to(plugin_name, info.path)
            entries.append(
                {
                    "component": info.path,
                    "path": info.path,
                    "description": info.description,
                    "input_schema": info.input_schema,
                    "output_schema": info.output_schema,
                    "plugin": plugin_name,
                    "routes": routes,
                }
            )
    return entries


def _pretty(entries: list[dict[str, Any]], schemas: bool) -> str:
    if not entries:
        return "No components found."
    lines = ["Available Components:", "===================="]
    for e in entries:
        lines += ["", f"Component: {e['component']} (plugin: {e['plugin']})"]
        if e["description"]:
            lines.append(f"  Description: {e['description']}")
        if e["routes"]:
            lines.append("  Available Routes:")
            lines += [f"    {r}" for r in e["routes"]]
        else:
            lines.append("  Available Routes: None")
        if schemas:
            for key, title in (
                ("input_schema", "Input Schema"),
                ("output_schema", "Output Schema"),
            ):
                if e[key] is not None:
                    lines.append(f"  {title}:")
                    text = json.dumps(e[key], indent=2, ensure_ascii=False)
                    lines += ["    " + line for line in text.split("\n")]
    lines += ["", f"Total components: {len(entries)}"]
    return "\n".join(lines)


@click.command("list-components")
@config_option
@click.option("--format", "fmt", type=click.Choice(["pretty", "json", "yaml"]), default="pretty")
@click.option("--schemas", type=click.Choice(["true", "false"]), default=None)
@click.option("--hide-unreachable", type=click.Choice(["true", "false"]), default="true")
def command(config_path: Path | None, fmt: str, schemas: str | None, hide_unreachable: str) -> None:
    """List the components the configured plugins provide."""
    config = discover_config(config_path, None)

    async def collect() -> list[dict[str, Any]]:
        async with Runtime(config) as runtime:
            return await _collect(runtime)

    entries = asyncio.run(collect())
    if _bool(hide_unreachable):
        entries = [e for e in entries if e["routes"]]
    show_schemas = _bool(schemas)
    if show_schemas is None:
        show_schemas = fmt != "pretty"
    if fmt == "pretty":
        click.echo(_pretty(entries, show_schemas))
        return
    cleaned = [
        {
            k: v
            for k, v in e.items()
            if v is not None and (show_schemas or k not in ("input_schema", "output_schema"))
        }
        for e in entries
    ]
    payload = {"components": cleaned}
    if fmt == "json":
        click.echo(json.dumps(payload, indent=2, ensure_ascii=False))
    else:
        click.echo(dump_yaml(payload), nl=False)
