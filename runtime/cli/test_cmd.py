"""`stepflow test`: run embedded test cases (flows.md §11)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from ..testing import TestOptions, run_tests
from .options import PATH, config_option


@click.command("test")
@click.argument("paths", nargs=-1, required=True, type=PATH)
@config_option
@click.option("--case", "cases", multiple=True, help="Run only the named case (repeatable).")
@click.option("--update", is_flag=True, help="Write actual results into failing cases.")
@click.option("--diff", is_flag=True, help="Show a diff for failing cases.")
@click.option("--max-concurrency", type=click.IntRange(min=1), default=10, show_default=True)
def command(
    paths: tuple[Path, ...],
    config_path: Path | None,
    cases: tuple[str, ...],
    update: bool,
    diff: bool,
    max_concurrency: int,
) -> None:
    """Run the test cases embedded in flow files."""
    options = TestOptions(config_path, cases, update, diff, max_concurrency)
    summary = asyncio.run(run_tests(list(paths), options, sys.stdout))
    if not summary.ok:
        failed = sum(r.failed for r in summary.reports) + sum(
            1 for r in summary.reports if r.error is not None
        )
        click.echo(f"{failed} test(s) failed", err=True)
        sys.exit(1)
