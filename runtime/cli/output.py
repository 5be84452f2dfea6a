"""Writing results: compact JSON on stdout, or a file whose extension picks the format."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..jsonfmt import dumps_compact
from ..yaml12 import dump_yaml


def write_result(value: Any, output: Path | None) -> None:
    """One value: stdout gets compact JSON without a trailing newline (flows.md §10.2)."""
    if output is None:
        sys.stdout.write(dumps_compact(value))
        sys.stdout.flush()
        return
    check_output_path(output)
    text = dump_yaml(value) if output.suffix.lower() in YAML_SUFFIXES else dumps_compact(value)
    _write(output, text)


YAML_SUFFIXES = (".yml", ".yaml")
OUTPUT_SUFFIXES = (".json", ".jsonl", *YAML_SUFFIXES)


def check_output_path(output: Path | None) -> None:
    """Called before a run too, so a typo in `--output` does not cost the run."""
    if output is not None and output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UserError(
            f"Unsupported output extension '{output.suffix}' (use .json, .jsonl or .yaml)",
            str(output),
        )


def write_lines(values: list[Any], output: Path | None) -> None:
    """A batch: always JSONL, one compact value per line."""
    text = "".join(dumps_compact(v) + "\n" for v in values)
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        _write(output, text)


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write output: {exc.strerror}", str(path)) from None
