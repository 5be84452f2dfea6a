"""What a launched worker is told (TelemetrySettings.worker_env): the node's collector, and the
node's log level and destination in the spellings stepflow-py reads."""

from __future__ import annotations

import os

import pytest
from stepflow_mesh.runtime.telemetry.settings import TelemetrySettings, python_level_name

ENDPOINT = "http://127.0.0.1:4317"


def test_without_cli_logging_flags_only_the_collector_is_passed_on() -> None:
    assert TelemetrySettings().worker_env() == {}
    env = TelemetrySettings(trace_enabled=True, otlp_endpoint=ENDPOINT).worker_env()
    assert env == {"STEPFLOW_OTLP_ENDPOINT": ENDPOINT, "STEPFLOW_TRACE_ENABLED": "true"}


def test_worker_logs_go_to_stderr_when_ours_do_although_an_endpoint_is_set() -> None:
    settings = TelemetrySettings(
        trace_enabled=True, otlp_endpoint=ENDPOINT, log_destination="stderr", log_level="warn"
    )
    assert settings.worker_env() == {
        "STEPFLOW_LOG_LEVEL": "WARNING",
        "STEPFLOW_LOG_DESTINATION": "stderr",
        "STEPFLOW_OTLP_ENDPOINT": ENDPOINT,
        "STEPFLOW_TRACE_ENABLED": "true",
    }
    # stdout is the node's; a launched worker's is not shown anywhere.
    stdout = TelemetrySettings(log_destination="stdout", log_level="info").worker_env()
    assert stdout == {"STEPFLOW_LOG_LEVEL": "INFO", "STEPFLOW_LOG_DESTINATION": "stderr"}


def test_worker_logs_follow_ours_to_otlp_or_to_our_file() -> None:
    otlp = TelemetrySettings(otlp_endpoint=ENDPOINT, log_destination="otlp", log_level="debug")
    assert otlp.worker_env() == {
        "STEPFLOW_LOG_LEVEL": "DEBUG",
        "STEPFLOW_LOG_DESTINATION": "otlp",
        "STEPFLOW_OTLP_ENDPOINT": ENDPOINT,
        "STEPFLOW_TRACE_ENABLED": "false",
    }
    # Without an endpoint our `otlp` records go to stderr, and so do the worker's.
    nowhere = TelemetrySettings(log_destination="otlp", log_level="info").worker_env()
    assert nowhere["STEPFLOW_LOG_DESTINATION"] == "stderr"
    file = TelemetrySettings(log_destination="file", log_file="/var/log/node.log", log_level="info")
    assert file.worker_env() == {
        "STEPFLOW_LOG_LEVEL": "INFO",
        "STEPFLOW_LOG_DESTINATION": "file",
        "STEPFLOW_LOG_FILE": "/var/log/node.log",
    }
    relative = TelemetrySettings(log_destination="file", log_file="node.log").worker_env()
    assert relative["STEPFLOW_LOG_FILE"] == os.path.join(os.getcwd(), "node.log")


@pytest.mark.parametrize(
    ("ours", "python"),
    [("off", "CRITICAL"), ("error", "ERROR"), ("warn", "WARNING"), ("WARNING", "WARNING"),
     ("info", "INFO"), ("debug", "DEBUG"), ("trace", "DEBUG")],
)  # fmt: skip
def test_level_names(ours: str, python: str) -> None:
    assert python_level_name(ours) == python
