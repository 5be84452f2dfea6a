"""Logging set-up for the CLI: text or JSON lines to stderr (default), stdout or a file; or
OTLP (`--log-destination otlp`: stderr until telemetry is up, then `log_to` the OTLP handler)."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from ..errors import UserError
from ..telemetry.logs import RunContextFilter
from ..telemetry.settings import python_level_name

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line; context fields (run_id, step_id, ...) come from `extra`."""

    CONTEXT_KEYS = ("trace_id", "span_id", "run_id", "flow_id", "step_id", "node_id")

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in self.CONTEXT_KEYS:
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


OFF = logging.CRITICAL + 10  # above every record's level


def _level(name: str, flag: str) -> int:
    name = name.strip().lower()
    if name == "off":
        return OFF
    value = logging.getLevelName(python_level_name(name))
    if not isinstance(value, int):
        raise UserError(
            f"unknown log level '{name}' (use off, error, warn, info, debug, trace)", flag
        )
    return value


def configure_logging(
    *, level: str, other_level: str, destination: str, fmt: str, log_file: str | None
) -> None:
    handler: logging.Handler
    if destination == "file":
        if not log_file:
            raise UserError("--log-destination file needs --log-file")
        handler = logging.FileHandler(log_file, encoding="utf-8")
    elif destination == "stdout":
        handler = logging.StreamHandler(sys.stdout)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RunContextFilter())  # the run's ids on every record inside a run
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_level(other_level, "--other-log-level"))
    logging.getLogger("stepflow").setLevel(_level(level, "--log-level"))


def log_to(handler: logging.Handler) -> None:
    """Records go to `handler` (OTLP) instead; the exporter's own warnings stay on stderr, since
    they report that the collector cannot be reached."""
    handler.addFilter(RunContextFilter())
    exporter_notes = logging.StreamHandler(sys.stderr)
    exporter_notes.setFormatter(logging.Formatter(TEXT_FORMAT))
    exporter_notes.addFilter(logging.Filter("stepflow.telemetry"))
    logging.getLogger().handlers[:] = [handler, exporter_notes]
