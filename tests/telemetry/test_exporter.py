"""The exporter thread against a real OTLP receiver: delivery, a collector outage, a full queue."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from stepflow_mesh.runtime.telemetry import otlp_wire
from stepflow_mesh.runtime.telemetry.exporter import OtlpExporter
from stepflow_mesh.runtime.telemetry.instruments import Meter
from stepflow_mesh.runtime.telemetry.log_export import OtlpLogHandler
from stepflow_mesh.runtime.telemetry.settings import TelemetrySettings
from stepflow_mesh.runtime.telemetry.tracing import Tracing
from waiting import wait_until

from .receiver import Receiver

HEADER = otlp_wire.resource_header({"service.name": "exporter-test"}, "stepflow", "1")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()


def _exporter(endpoint: str) -> tuple[OtlpExporter, Tracing]:
    settings = TelemetrySettings(
        trace_enabled=True, metrics_enabled=True, otlp_endpoint=endpoint,
        span_delay_secs=0.05, metrics_interval_secs=0.1,
    )  # fmt: skip
    exporter = OtlpExporter(settings)
    return exporter, Tracing(exporter, HEADER)


def _spans(tracing: Tracing, count: int) -> None:
    for index in range(count):
        tracing.start_child("step", None, {"index": index}).end()


def test_spans_and_metrics_arrive_with_configured_headers(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=blue,Authorization=Bearer%20t0k")
    exporter, tracing = _exporter(receiver.endpoint)
    meter = Meter({"service.name": "exporter-test"}, "stepflow", "1")
    meter.counter("runs_total", "runs").add(2, {"outcome": "completed"})
    exporter.metrics_source = meter.export_request
    try:
        _spans(tracing, 3)
        receiver.wait_for(lambda r: len(r.snapshot_spans()) == 3)
        receiver.wait_for(lambda r: [p for p in r.snapshot_points() if p.metric == "runs_total"])
    finally:
        exporter.shutdown()
    assert {s.service for s in receiver.snapshot_spans()} == {"exporter-test"}
    assert receiver.trace_metadata["x-tenant"] == "blue"
    assert receiver.trace_metadata["authorization"] == "Bearer t0k"


def test_spans_wait_out_a_collector_outage_and_a_full_queue_drops_the_excess(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collector = Receiver().start()
    port = collector.port
    collector.stop()  # the collector is down when the spans are made
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "5")
    exporter, tracing = _exporter(f"http://127.0.0.1:{port}")
    try:
        _spans(tracing, 8)
        wait_until(lambda: exporter.dropped_spans == 3, 10, "3 spans dropped (queue of 5)")
        wait_until(lambda: "traces" in exporter._failing, 10, "a failed export")
        back = Receiver().start(port)
        try:
            back.wait_for(lambda r: len(r.snapshot_spans()) == 5)
            _spans(tracing, 1)  # and new spans flow again
            back.wait_for(lambda r: len(r.snapshot_spans()) == 6)
        finally:
            exporter.shutdown()
            back.stop()
    finally:
        exporter.shutdown()
    assert sorted(s.attributes["index"] for s in back.snapshot_spans()) == [0, 0, 1, 2, 3, 4]


def test_shutdown_sends_what_is_queued(receiver: Receiver) -> None:
    settings = TelemetrySettings(
        trace_enabled=True, otlp_endpoint=receiver.endpoint, span_delay_secs=3600.0
    )
    exporter = OtlpExporter(settings)
    tracing = Tracing(exporter, HEADER)
    _spans(tracing, 4)
    exporter.shutdown()  # no timer fired: only the final flush can have sent them
    assert len(receiver.snapshot_spans()) == 4


def test_log_records_go_out_with_run_ids_but_not_the_exporters_own(receiver: Receiver) -> None:
    exporter, _ = _exporter(receiver.endpoint)
    handler = OtlpLogHandler(exporter, HEADER)
    logger = logging.getLogger("stepflow.test_exporter")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(
            "step %s failed", "s1",
            extra={"run_id": "r-1", "step_id": "s1", "trace_id": "ab" * 16, "span_id": "cd" * 8},
        )  # fmt: skip
        try:
            raise ValueError("bad input")
        except ValueError:
            logger.exception("unexpected")
        handler.handle(
            logging.LogRecord("stepflow.telemetry", 30, "", 0, "export failed", (), None)
        )
        receiver.wait_for(lambda r: len(r.snapshot_logs()) == 2)
    finally:
        logger.removeHandler(handler)
        exporter.shutdown()
    warning, error = sorted(receiver.snapshot_logs(), key=lambda record: record.severity_number)
    assert (warning.body, warning.severity, warning.service) == (
        "step s1 failed",
        "WARNING",
        "exporter-test",
    )
    assert warning.attributes == {
        "logger": "stepflow.test_exporter",
        "run_id": "r-1",
        "step_id": "s1",
    }
    assert (warning.trace_id, warning.span_id) == ("ab" * 16, "cd" * 8)
    assert error.severity == "ERROR"
    assert error.attributes["exception.type"] == "ValueError"
    assert "bad input" in error.attributes["exception.stacktrace"]
