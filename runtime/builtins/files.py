"""`load_file`: read JSON, YAML or text relative to the config's working directory."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from ..plugins.base import StepCall
from ..yaml12 import YamlError, load_yaml
from .base import Builtin, field_of, invalid_input, schema

FORMATS = ("json", "yaml", "text")


def _format_for(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in (".yml", ".yaml"):
        return "yaml"
    return "text"


def _read(path: Path, fmt: str) -> tuple[Any, int]:
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise invalid_input(f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise invalid_input(f"cannot read {path}: {exc}") from None
    try:
        if fmt == "json":
            return json.loads(text), len(raw)
        if fmt == "yaml":
            return load_yaml(text, str(path)), len(raw)
    except (json.JSONDecodeError, YamlError) as exc:
        raise invalid_input(f"cannot parse {path} as {fmt}: {exc}") from None
    return text, len(raw)


async def _load_file(call: StepCall) -> Any:
    raw_path = field_of(call, "path", "string")
    fmt = field_of(call, "format", "string", required=False)
    if fmt is not None and fmt not in FORMATS:
        raise invalid_input(f"field 'format' must be one of {', '.join(FORMATS)}")
    if "\x00" in raw_path:
        raise invalid_input("field 'path' must not contain NUL characters")
    path = Path(raw_path)
    if not path.is_absolute():
        path = call.working_dir / path
    fmt = fmt or _format_for(path)
    data, size = await asyncio.to_thread(_read, path, fmt)
    metadata = {"resolved_path": str(path), "size_bytes": size, "format": fmt}
    return {"data": data, "metadata": metadata}


LOAD_FILE = Builtin(
    "load_file",
    "Loads a JSON, YAML or text file (relative paths from the working directory).",
    _load_file,
    schema(
        {"path": {"type": "string"}, "format": {"type": "string", "enum": list(FORMATS)}}, ["path"]
    ),
    schema(
        {
            "data": {},
            "metadata": schema(
                {
                    "resolved_path": {"type": "string"},
                    "size_bytes": {"type": "integer"},
                    "format": {"type": "string"},
                },
                ["resolved_path", "size_bytes", "format"],
            ),
        },
        ["data", "metadata"],
    ),
)
