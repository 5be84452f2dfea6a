"""`stepflow run`: load, validate and run a flow in-process."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from ..durable import RunRequest
from ..errors import UserError
from ..executor import RunObserver
from ..ids import new_id
from ..jsonfmt import dumps_compact
from ..overrides import apply_overrides
from ..progress import ProgressDisplay
from ..variables import env_variables, redact
from .diagnostics import has_errors, print_diagnostics
from .options import (
    PATH,
    config_option,
    input_options,
    output_option,
    override_options,
    read_inputs,
    read_object,
    variable_options,
)
from .output import check_output_path, write_lines, write_result
from .session import load_flow_and_config, validate_static
from .state_options import local_state, state_options
from .supervise import run_to_completion

log = logging.getLogger("stepflow.cli")


@click.command("run")
@click.option("--flow", "flow_path", type=PATH, required=True, help="The flow file.")
@config_option
@input_options
@click.option("--max-concurrency", type=click.IntRange(min=1), default=10, show_default=True)
@variable_options
@override_options
@output_option
@state_options
def command(
    flow_path: Path,
    config_path: Path | None,
    input_file: Path | None,
    input_json: str | None,
    input_yaml: str | None,
    stdin_format: str,
    inputs_file: Path | None,
    max_concurrency: int,
    variables_file: Path | None,
    variables_json: str | None,
    variables_yaml: str | None,
    env_variables_flag: bool,
    overrides_file: Path | None,
    overrides_json: str | None,
    overrides_yaml: str | None,
    output_file: Path | None,
    state_dir: Path | None,
    in_memory: bool,
) -> None:
    """Run a flow locally, journalling it so an interrupted run can be resumed."""
    written_flow, config = load_flow_and_config(flow_path, config_path)
    check_output_path(output_file)
    overrides = read_object("overrides", overrides_file, overrides_json, overrides_yaml)
    overrides_source = (
        str(overrides_file) if overrides_file else "--overrides-json" if overrides_json else
        "--overrides-yaml"
    )  # fmt: skip
    flow = apply_overrides(written_flow, overrides, overrides_source)
    variables = read_object("variables", variables_file, variables_json, variables_yaml) or {}
    if env_variables_flag:
        variables.update(env_variables(flow, variables))
    inputs, batch = read_inputs(input_file, input_json, input_yaml, stdin_format, inputs_file)
    diagnostics = validate_static(flow, config)
    if has_errors(diagnostics):
        print_diagnostics(diagnostics, sys.stderr)
        raise UserError("validation failed", str(flow_path))
    if variables:
        log.debug("variables: %s", dumps_compact(redact(flow, variables)))
    observers: list[RunObserver] = []
    if ProgressDisplay.wanted():
        observers.append(ProgressDisplay(len(inputs)))
    if batch:
        click.echo(f"Running batch with {len(inputs)} inputs", err=True)
    state = local_state(config, state_dir, in_memory)
    request = RunRequest(written_flow, inputs, variables, overrides, max_concurrency)
    run_id = new_id()
    click.echo(f"run_id: {run_id.replace('-', '')}", err=True)
    outcome = run_to_completion(
        config, state, observers, lambda runner, obs: runner.start(request, obs, run_id)
    )
    if batch:
        write_lines([r.to_json() for r in outcome.results], output_file)
        where = f'. Results written to "{output_file}"' if output_file else ""
        click.echo(
            f"Batch execution completed with {len(outcome.results)} results{where}", err=True
        )
        return
    [result] = outcome.results
    write_result(result.to_json(), output_file)
    if not result.ok:
        sys.exit(1)
