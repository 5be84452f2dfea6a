"""The `stepflow` command: global options, error handling and the subcommands."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click
from click.core import ParameterSource

from ..errors import UserError
from ..version import VERSION
from .logs import configure_logging, log_to


class StepflowGroup(click.Group):
    """Turns a UserError into one line on stderr and exit code 1 (a traceback with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            if ctx.meta.get("stepflow.debug"):
                raise
            click.echo(f"Error: {exc}", err=True)
            for note in exc.notes:
                click.echo(f"  {note}", err=True)
            ctx.exit(1)


@click.group(cls=StepflowGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, "-V", "--version", prog_name="stepflow")
@click.option("--log-level", envvar="STEPFLOW_LOG_LEVEL", default="info", show_default=True)
@click.option(
    "--other-log-level",
    envvar="STEPFLOW_OTHER_LOG_LEVEL",
    help="Level for dependencies' loggers (default: --log-level's).",
)
@click.option(
    "--log-destination",
    envvar="STEPFLOW_LOG_DESTINATION",
    type=click.Choice(["stdout", "stderr", "file", "otlp"]),
    default="stderr",
    show_default=True,
)
@click.option(
    "--log-format",
    envvar="STEPFLOW_LOG_FORMAT",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
)
@click.option(
    "--log-file",
    envvar="STEPFLOW_LOG_FILE",
    type=click.Path(),
    help="Implies --log-destination file.",
)
@click.option("--trace-enabled", envvar="STEPFLOW_TRACE_ENABLED", is_flag=True)
@click.option("--metrics-enabled", envvar="STEPFLOW_METRICS_ENABLED", is_flag=True)
@click.option("--otlp-endpoint", envvar="STEPFLOW_OTLP_ENDPOINT")
@click.option("--omit-stack-trace", is_flag=True, help="Accepted for upstream compatibility.")
@click.option("--debug", is_flag=True, help="Show Python tracebacks on errors.")
@click.pass_context
def cli(
    ctx: click.Context,
    log_level: str,
    other_log_level: str | None,
    log_destination: str,
    log_format: str,
    log_file: str | None,
    trace_enabled: bool,
    metrics_enabled: bool,
    otlp_endpoint: str | None,
    omit_stack_trace: bool,
    debug: bool,
) -> None:
    """Run Stepflow workflows."""
    ctx.meta["stepflow.debug"] = debug
    if log_file and ctx.get_parameter_source("log_destination") is ParameterSource.DEFAULT:
        log_destination = "file"
    configure_logging(
        level=log_level,
        other_level=other_log_level or log_level,
        destination=log_destination,
        fmt=log_format,
        log_file=log_file,
    )
    from .. import telemetry

    server = ctx.invoked_subcommand == "serve"
    settings = telemetry.TelemetrySettings(
        trace_enabled=trace_enabled,
        metrics_enabled=metrics_enabled,
        otlp_endpoint=otlp_endpoint or None,
        log_destination=log_destination,
        log_level=log_level,
        log_file=log_file,
        service_name="stepflow-server" if server else "stepflow",
    )
    # Exporters flush when the command ends (after a node's graceful stop, durability.md §10).
    if telemetry.init(settings, log_context=log_format == "json") is not None:
        ctx.call_on_close(telemetry.shutdown)
    otlp_handler = telemetry.otlp_log_handler()
    if otlp_handler is not None:
        log_to(otlp_handler)


def _register() -> None:
    from . import (
        cluster_cmd,
        components_cmd,
        resume_cmd,
        run_cmd,
        runs_cmd,
        serve_cmd,
        submit_cmd,
        test_cmd,
        validate_cmd,
        visualize_cmd,
        worker_cmd,
    )

    commands = (
        run_cmd,
        submit_cmd,
        resume_cmd,
        serve_cmd,
        test_cmd,
        validate_cmd,
        visualize_cmd,
        components_cmd,
        worker_cmd,
    )
    for module in commands:
        cli.add_command(module.command)
    cli.add_command(runs_cmd.group)
    cli.add_command(cluster_cmd.group)


def main() -> None:
    _register()
    try:
        cli.main(prog_name="stepflow", standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("Interrupted", err=True)
        sys.exit(130)


def server_main() -> None:
    """`stepflow-server`: `stepflow serve` under upstream's command name and flags."""
    _register()
    cli.main(args=["serve", *sys.argv[1:]], prog_name="stepflow-server")


logging.getLogger("stepflow").addHandler(logging.NullHandler())
