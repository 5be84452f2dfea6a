"""Telemetry settings (durability.md §14): flags and env of the CLI, resolved once per process."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

DEFAULT_METRICS_INTERVAL_SECS = 10.0
# Spans leave the process within about this long after they end.
DEFAULT_SPAN_DELAY_SECS = 0.5
EXPORT_TIMEOUT_SECS = 5.0

_TRUE = {"1", "true", "yes", "on"}


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _env_secs(name: str, default: float, scale: float = 1.0) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text) / scale
    except ValueError:
        return default
    return value if value > 0 else default


def _env_count(name: str, default: int) -> int:
    try:
        value = int(os.environ.get(name, "").strip())
    except ValueError:
        return default
    return value if value > 0 else default


@dataclass(frozen=True)
class TelemetrySettings:
    """What to emit and where. Traces and metrics need an OTLP/gRPC endpoint."""

    trace_enabled: bool = False
    metrics_enabled: bool = False
    # The CLI's logging flags (None: not set here), kept so that launched workers log likewise.
    log_destination: str | None = None  # stdout, stderr, file or otlp
    log_level: str | None = None
    log_file: str | None = None
    otlp_endpoint: str | None = None
    service_name: str = "stepflow"
    # `OTEL_METRIC_EXPORT_INTERVAL` (ms) overrides the 10 s default; tests use a short one.
    metrics_interval_secs: float = field(
        default_factory=lambda: _env_secs(
            "OTEL_METRIC_EXPORT_INTERVAL", DEFAULT_METRICS_INTERVAL_SECS, 1000.0
        )
    )
    span_delay_secs: float = field(
        default_factory=lambda: _env_secs("OTEL_BSP_SCHEDULE_DELAY", DEFAULT_SPAN_DELAY_SECS, 1e3)
    )
    # Spans (and log records) held while the collector is unreachable, and sent per request.
    span_queue_size: int = field(
        default_factory=lambda: _env_count("OTEL_BSP_MAX_QUEUE_SIZE", 2048)
    )
    span_batch_size: int = field(
        default_factory=lambda: _env_count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)
    )
    node_id: str | None = None
    region: str | None = field(default_factory=lambda: os.environ.get("STEPFLOW_REGION") or None)

    @property
    def tracing(self) -> bool:
        return self.trace_enabled and bool(self.otlp_endpoint)

    @property
    def metrics(self) -> bool:
        return self.metrics_enabled and bool(self.otlp_endpoint)

    @property
    def logs_otlp(self) -> bool:
        return self.log_destination == "otlp"

    @property
    def logs(self) -> bool:
        return self.logs_otlp and bool(self.otlp_endpoint)

    @property
    def active(self) -> bool:
        return self.tracing or self.metrics or self.logs

    def worker_env(self) -> dict[str, str]:
        """Env for worker processes the runtime launches: their spans reach our collector, and
        their logs go where ours go, at our level.

        stepflow-py reads `STEPFLOW_OTLP_ENDPOINT`, `STEPFLOW_TRACE_ENABLED` and the
        `STEPFLOW_LOG_*` variables; `OTEL_*` of this process are inherited with the rest of its
        environment. Left to itself, a stepflow-py worker given an endpoint would send its logs
        there even when ours go to stderr.
        """
        env: dict[str, str] = {}
        if self.log_level is not None:
            env["STEPFLOW_LOG_LEVEL"] = python_level_name(self.log_level)
        if self.logs:
            env["STEPFLOW_LOG_DESTINATION"] = "otlp"
        elif self.log_destination == "file" and self.log_file:
            env["STEPFLOW_LOG_DESTINATION"] = "file"
            env["STEPFLOW_LOG_FILE"] = os.path.abspath(self.log_file)  # a worker's cwd may differ
        elif self.log_destination is not None:  # a launched worker's stdout is not ours
            env["STEPFLOW_LOG_DESTINATION"] = "stderr"
        if self.otlp_endpoint:
            env["STEPFLOW_OTLP_ENDPOINT"] = self.otlp_endpoint
            env["STEPFLOW_TRACE_ENABLED"] = "true" if self.trace_enabled else "false"
        return env


# durability.md §14's level names (off, error, warn, info, debug, trace) as Python's logging
# module, and so stepflow-py, spells them; "off" has no name there, CRITICAL is the nearest.
_PYTHON_LEVEL_NAMES = {"off": "CRITICAL", "trace": "DEBUG", "warn": "WARNING"}


def python_level_name(name: str) -> str:
    name = name.strip().lower()
    return _PYTHON_LEVEL_NAMES.get(name, name.upper())
