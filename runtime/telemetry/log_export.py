"""`--log-destination otlp`: log records sent to the collector with the spans (OTLP logs).

The run's ids (RunContextFilter) become attributes and the record's trace and span ids fill the
LogRecord's own fields, so a backend links each record to its `step` span. The exporter's own
records (`stepflow.telemetry`) are not sent this way: they say why sending fails.
"""

from __future__ import annotations

import logging

from . import otlp_wire
from .exporter import OtlpExporter
from .otlp_wire import AttributeValue

EXPORTER_LOGGER = "stepflow.telemetry"
RUN_KEYS = ("run_id", "flow_id", "step_id", "node_id")
_formatter = logging.Formatter()


class OtlpLogHandler(logging.Handler):
    def __init__(self, exporter: OtlpExporter, header: tuple[bytes, bytes]) -> None:
        super().__init__()
        self.exporter = exporter
        exporter.logs.header = header
        self.addFilter(lambda record: not record.name.startswith(EXPORTER_LOGGER))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            attributes: dict[str, AttributeValue] = {"logger": record.name}
            for key in RUN_KEYS:
                value = getattr(record, key, None)
                if value is not None:
                    attributes[key] = str(value)
            if record.exc_info and record.exc_info[1] is not None:
                attributes["exception.type"] = type(record.exc_info[1]).__qualname__
                attributes["exception.message"] = str(record.exc_info[1])
                attributes["exception.stacktrace"] = _formatter.formatException(record.exc_info)
            self.exporter.add_log(
                otlp_wire.log_record(
                    int(record.created * 1e9), record.levelname, record.getMessage(), attributes,
                    _hex(getattr(record, "trace_id", None)), _hex(getattr(record, "span_id", None)),
                )
            )  # fmt: skip
        except Exception:  # a log call must never raise
            self.handleError(record)


def _hex(value: object) -> int:
    try:
        return int(str(value), 16) if value else 0
    except ValueError:
        return 0
