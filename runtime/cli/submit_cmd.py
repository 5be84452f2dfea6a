"""`stepflow submit`: run a flow on a node (flows.md §10.3) instead of in-process.

The flow file is read and parsed here (so a bad file is reported against its path), then stored
on the node with `FlowsService.StoreFlow`, whose validation decides; overrides and variables go
to the node unapplied. One `RunsService.CreateRun` carries all inputs.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..errors import UserError
from ..model import load_flow
from ..variables import env_variables
from .diagnostics import SECTIONS
from .options import (
    PATH,
    input_options,
    output_option,
    override_options,
    read_inputs,
    read_object,
    variable_options,
)
from .output import check_output_path, write_lines, write_result

F = TypeVar("F", bound=Callable[..., Any])

URL_ENV = "STEPFLOW_URL"
DEFAULT_URL = "http://localhost:7840"  # flows.md §10.3: `stepflow serve`'s default port


def url_option(default: str | None) -> Callable[[F], F]:
    """`--url` (env STEPFLOW_URL); `default=None` means "local unless a URL is given".

    Defined here rather than in remote.py so that loading the CLI does not import grpc.
    """
    if default is None:  # commands that read the local journal stay local without `--url`
        return click.option(
            "--url", default=None, metavar="URL",
            help="Stepflow node: host:port or http://host:port (absent: the local journal).",
        )  # fmt: skip
    return click.option(
        "--url",
        envvar=URL_ENV,
        default=default,
        metavar="URL",
        help=f"Stepflow node: host:port or http://host:port (env {URL_ENV}) [default: {default}].",
    )


@click.command("submit")
@url_option(DEFAULT_URL)
@click.option("--flow", "flow_path", type=PATH, required=True, help="The flow file.")
@input_options
@click.option(
    "--max-concurrency", "--max-concurrent", "max_concurrency",
    type=click.IntRange(min=1), default=10, show_default=True, help="Items run at once.",
)  # fmt: skip
@variable_options
@override_options
@click.option(
    "--wait/--no-wait", default=True, show_default=True,
    help="Wait for the run's results, or print its id and return.",
)  # fmt: skip
@click.option(
    "--timeout", "timeout_secs", type=click.FloatRange(min=0, min_open=True),
    help="Give up waiting after this many seconds (the run goes on).",
)  # fmt: skip
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
    help="`json`: with --no-wait print {\"runId\": ...} on stdout.",
)  # fmt: skip
@output_option
def command(
    url: str,
    flow_path: Path,
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
    wait: bool,
    timeout_secs: float | None,
    fmt: str,
    output_file: Path | None,
) -> None:
    """Run a flow on a Stepflow node (`stepflow serve`) and print its results like `run`."""
    from .. import telemetry
    from .remote import NodeClient, final_result, grpc_target

    grpc_target(url)  # a malformed --url is reported before anything is read
    flow = load_flow(flow_path)
    check_output_path(output_file)
    if not wait and fmt == "text" and output_file is not None:
        raise click.UsageError("--output with --no-wait needs --format json")
    overrides = read_object("overrides", overrides_file, overrides_json, overrides_yaml)
    variables = read_object("variables", variables_file, variables_json, variables_yaml) or {}
    if env_variables_flag:
        variables.update(env_variables(flow, variables))
    inputs, batch = read_inputs(input_file, input_json, input_yaml, stdin_format, inputs_file)
    if batch and not inputs:
        click.echo("No inputs provided, nothing to submit", err=True)
        if output_file is not None:
            write_lines([], output_file)
        return
    deadline = None if timeout_secs is None else time.monotonic() + timeout_secs

    # The client span: with tracing on, the run joins this command's trace.
    client_span: dict[str, str | int] = {"stepflow.url": url, "stepflow.inputs": len(inputs)}
    with telemetry.span("stepflow.submit", client_span), NodeClient(url) as node:
        stored = node.store_flow(flow.raw)
        diagnostics = stored.diagnostics
        if not stored.stored or diagnostics.num_fatal or diagnostics.num_error:
            _print_diagnostics(diagnostics.diagnostics)
            raise UserError(f"validation failed on the node at {url}", str(flow_path))
        if batch:
            click.echo(f"Submitting batch with {len(inputs)} inputs", err=True)
        first_wait = None
        if wait:
            first_wait = _wait_chunk(deadline)
        created = node.create_run(
            stored.flow_id, inputs, variables, overrides, max_concurrency, first_wait
        )
        summary = created.summary
        run_id = summary.run_id
        if fmt == "text" or wait:
            click.echo(f"run_id: {run_id.replace('-', '')}", err=True)
        if not wait:
            if fmt == "json":
                write_result({"runId": run_id}, output_file)
                if output_file is None:
                    click.echo()
            else:
                click.echo(
                    f"Follow it with: stepflow runs watch {run_id.replace('-', '')} --url {url}",
                    err=True,
                )
            return
        if created.results and len(created.results) == len(inputs):
            items = list(created.results)
        else:
            done = node.wait_for_run(run_id, deadline)
            if done is None:
                raise UserError(
                    f"run {run_id.replace('-', '')} is still running after {timeout_secs:g} s "
                    f"(see: stepflow runs show {run_id.replace('-', '')} --url {url})"
                )
            items = node.run_items(run_id)
    results = [final_result(item) for item in sorted(items, key=lambda i: i.item_index)]
    if batch:
        write_lines(results, output_file)
        where = f'. Results written to "{output_file}"' if output_file else ""
        click.echo(f"Batch execution completed with {len(results)} results{where}", err=True)
        return
    [result] = results
    write_result(result, output_file)
    if result["outcome"] != "success":
        sys.exit(1)


def _wait_chunk(deadline: float | None) -> int:
    from .remote import WAIT_CHUNK_SECS

    if deadline is None:
        return WAIT_CHUNK_SECS
    return max(1, min(WAIT_CHUNK_SECS, int(deadline - time.monotonic())))


def _print_diagnostics(diagnostics: Any) -> None:
    """The node's diagnostics in `validate`'s layout (flows.md §10.4), on stderr."""
    from .._pb.stepflow.v1 import flows_pb2

    levels = {
        flows_pb2.DIAGNOSTIC_LEVEL_FATAL: "fatal",
        flows_pb2.DIAGNOSTIC_LEVEL_ERROR: "error",
        flows_pb2.DIAGNOSTIC_LEVEL_WARNING: "warning",
    }
    found = [(levels.get(d.level, "error"), d) for d in diagnostics]
    counts = {level: sum(1 for lv, _ in found if lv == level) for level, _ in SECTIONS}
    print(
        f"📊 Validation results: {counts['fatal']} fatal, {counts['error']} errors, "
        f"{counts['warning']} warnings",
        file=sys.stderr,
    )
    for level, title in SECTIONS:
        selected = [d for lv, d in found if lv == level]
        if selected:
            print(title, file=sys.stderr)
            for d in selected:
                where = f" ({d.path})" if d.HasField("path") and d.path else ""
                print(f"  {level.upper()} {d.formatted}{where}", file=sys.stderr)
