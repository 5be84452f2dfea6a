"""Flag groups shared by `run`, `submit` and friends (flows.md §10.2), and their parsing."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..errors import UserError
from ..model import parse_document, read_document

F = TypeVar("F", bound=Callable[..., Any])


def _compose(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(fn: F) -> F:
        for deco in reversed(decorators):
            fn = deco(fn)
        return fn

    return apply


PATH = click.Path(path_type=Path)

config_option = click.option("--config", "config_path", type=PATH, help="Config file.")

input_options = _compose(
    click.option("--input", "input_file", type=PATH, help="Input file (JSON or YAML)."),
    click.option("--input-json", help="Input as inline JSON."),
    click.option("--input-yaml", help="Input as inline YAML."),
    click.option(
        "--stdin-format",
        type=click.Choice(["json", "yaml"]),
        default="json",
        show_default=True,
        help="Format of the input read from stdin when no other input is given.",
    ),
    click.option("--inputs", "inputs_file", type=PATH, help="JSONL batch: one input per line."),
)

variable_options = _compose(
    click.option("--variables", "variables_file", type=PATH, help="Variables file."),
    click.option("--variables-json", help="Variables as inline JSON."),
    click.option("--variables-yaml", help="Variables as inline YAML."),
    click.option(
        "--env-variables",
        "env_variables_flag",
        is_flag=True,
        help="Read variables not supplied from their env var or STEPFLOW_VAR_<NAME>.",
    ),
)

override_options = _compose(
    click.option("--overrides", "overrides_file", type=PATH, help="Step overrides file."),
    click.option("--overrides-json", help="Step overrides as inline JSON."),
    click.option("--overrides-yaml", help="Step overrides as inline YAML."),
)

output_option = click.option(
    "--output", "output_file", type=PATH, help="Write the result here (.json, .jsonl, .yaml)."
)


def _one_of(kind: str, **given: Any) -> tuple[str, Any] | None:
    present = [(k, v) for k, v in given.items() if v is not None]
    if len(present) > 1:
        flags = ", ".join("--" + k.replace("_", "-") for k, _ in present)
        raise click.UsageError(f"{kind} flags are mutually exclusive: {flags}")
    return present[0] if present else None


def _inline(text: str, fmt: str, flag: str) -> Any:
    return parse_document(text, ".json" if fmt == "json" else ".yaml", flag)


def read_inputs(
    input_file: Path | None,
    input_json: str | None,
    input_yaml: str | None,
    stdin_format: str,
    inputs_file: Path | None,
) -> tuple[list[Any], bool]:
    """The run's inputs and whether this is a batch (`--inputs`)."""
    chosen = _one_of(
        "Input",
        input=input_file,
        input_json=input_json,
        input_yaml=input_yaml,
        inputs=inputs_file,
    )
    if chosen is None:
        return [_inline(sys.stdin.read(), stdin_format, "stdin")], False
    kind, value = chosen
    if kind == "inputs":
        return read_jsonl(value), True
    if kind == "input":
        return [read_document(value)], False
    return [
        _inline(value, "json" if kind == "input_json" else "yaml", "--" + kind.replace("_", "-"))
    ], False


def read_jsonl(path: Path) -> list[Any]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"Missing file: {path}") from None
    values = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            values.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise UserError(
                f"Failed to parse input at line {number}: {exc.msg}", str(path)
            ) from None
    return values


def read_object(kind: str, file: Path | None, as_json: str | None, as_yaml: str | None) -> Any:
    """`--variables*` / `--overrides*`: at most one form; the value must be an object."""
    chosen = _one_of(
        kind.capitalize(), **{kind: file, f"{kind}_json": as_json, f"{kind}_yaml": as_yaml}
    )
    if chosen is None:
        return None
    flag, value = chosen
    if flag == kind:
        data = read_document(value)
    else:
        data = _inline(
            value, "json" if flag.endswith("json") else "yaml", "--" + flag.replace("_", "-")
        )
    if not isinstance(data, dict):
        raise UserError(f"{kind} must be an object", "--" + flag.replace("_", "-"))
    return data
