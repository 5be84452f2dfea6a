"""`stepflow resume RUN_ID`: continue an interrupted run from its journal."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..config import discover_config
from ..progress import ProgressDisplay
from .options import config_option, output_option
from .output import check_output_path, write_lines, write_result
from .run_ids import normalise_run_id
from .state_options import local_state, state_options
from .supervise import run_to_completion


@click.command("resume")
@click.argument("run_id")
@config_option
@output_option
@state_options
def command(
    run_id: str,
    config_path: Path | None,
    output_file: Path | None,
    state_dir: Path | None,
    in_memory: bool,
) -> None:
    """Continue an interrupted run: completed steps are not run again."""
    run_id = normalise_run_id(run_id)
    check_output_path(output_file)
    config = discover_config(config_path, None)
    state = local_state(config, state_dir, in_memory)
    observers = [ProgressDisplay(1)] if ProgressDisplay.wanted() else []
    outcome = run_to_completion(
        config, state, observers, lambda runner, obs: runner.resume(run_id, obs)
    )
    click.echo(f"run_id: {run_id.replace('-', '')} ({outcome.status})", err=True)
    if len(outcome.results) == 1:
        [result] = outcome.results
        write_result(result.to_json(), output_file)
        if not result.ok:
            sys.exit(1)
    else:
        write_lines([r.to_json() for r in outcome.results], output_file)
