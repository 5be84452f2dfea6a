"""`stepflow validate`: static checks of a flow and its config (flows.md §10.4)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .diagnostics import has_errors, print_diagnostics
from .options import PATH, config_option
from .session import load_flow_and_config, validate_static


@click.command("validate")
@click.option("--flow", "flow_path", type=PATH, required=True, help="The flow file.")
@config_option
@click.option("--type-check", is_flag=True, help="Accepted; schema type checking is not built yet.")
@click.option("--strict", is_flag=True, help="Accepted; see --type-check.")
def command(flow_path: Path, config_path: Path | None, type_check: bool, strict: bool) -> None:
    """Check a flow for errors without running it."""
    flow, config = load_flow_and_config(flow_path, config_path)
    diagnostics = validate_static(flow, config)
    print_diagnostics(diagnostics, sys.stdout)
    if has_errors(diagnostics):
        sys.exit(1)
