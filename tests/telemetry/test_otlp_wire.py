"""Our hand-written OTLP encoding, decoded by the official `opentelemetry-proto` classes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from stepflow_mesh.runtime.telemetry import otlp_wire
from stepflow_mesh.runtime.telemetry.instruments import Meter
from stepflow_mesh.runtime.telemetry.tracing import SAMPLED, Span, Tracing


def _kv(key: str, **value: object) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(**value))  # type: ignore[arg-type]


def test_span_request_decodes_to_the_same_message_the_proto_classes_build() -> None:
    header = otlp_wire.resource_header({"service.name": "node-a", "pid": 42}, "stepflow", "1")
    encoded = otlp_wire.span(
        trace_id=0x0123456789ABCDEF0123456789ABCDEF,
        span_id=0x1122334455667788,
        parent_span_id=0x99AABBCCDDEEFF00,
        name="step",
        start_ns=1_700_000_000_000_000_000,
        end_ns=1_700_000_000_500_000_000,
        span_attributes={"step_id": "s1", "attempt": 2, "neg": -3, "ok": True, "ratio": 0.5},
        events=[(1_700_000_000_100_000_000, "exception", {"exception.type": "ValueError"})],
        error_message="boom",
    )
    request = trace_service_pb2.ExportTraceServiceRequest.FromString(
        otlp_wire.export_request(header, [encoded, encoded])
    )

    expected_span = trace_pb2.Span(
        trace_id=bytes.fromhex("0123456789abcdef0123456789abcdef"),
        span_id=bytes.fromhex("1122334455667788"),
        parent_span_id=bytes.fromhex("99aabbccddeeff00"),
        name="step",
        kind=trace_pb2.Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_000_500_000_000,
        attributes=[
            _kv("step_id", string_value="s1"),
            _kv("attempt", int_value=2),
            _kv("neg", int_value=-3),
            _kv("ok", bool_value=True),
            _kv("ratio", double_value=0.5),
        ],
        events=[
            trace_pb2.Span.Event(
                time_unix_nano=1_700_000_000_100_000_000,
                name="exception",
                attributes=[_kv("exception.type", string_value="ValueError")],
            )
        ],
        status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_ERROR, message="boom"),
    )
    (resource_spans,) = request.resource_spans
    assert list(resource_spans.resource.attributes) == [
        _kv("service.name", string_value="node-a"),
        _kv("pid", int_value=42),
    ]
    (scope_spans,) = resource_spans.scope_spans
    assert (scope_spans.scope.name, scope_spans.scope.version) == ("stepflow", "1")
    assert list(scope_spans.spans) == [expected_span, expected_span]


class _Collect:
    """Stands in for the exporter: keeps what spans hand over."""

    def __init__(self) -> None:
        self.encoded: list[bytes] = []
        self.header = otlp_wire.resource_header({"service.name": "t"}, "stepflow", "1")

    def add_span(self, span: Span) -> None:
        self.encoded.append(span.encode())

    def request(self) -> trace_service_pb2.ExportTraceServiceRequest:
        return trace_service_pb2.ExportTraceServiceRequest.FromString(
            otlp_wire.export_request(self.header, self.encoded)
        )


def _tracing() -> tuple[Tracing, _Collect]:
    sink = _Collect()
    tracing = Tracing(SimpleNamespace(spans=SimpleNamespace()), sink.header)  # type: ignore[arg-type]
    tracing.exporter = sink  # type: ignore[assignment]
    return tracing, sink


def test_children_inherit_trace_and_parent_and_end_exports_once() -> None:
    tracing, sink = _tracing()
    run = tracing.start_run_span("run_execution", "0190a4d6-0000-7000-8000-000000000001", None, {})
    assert run.trace_id == 0x0190A4D6000070008000000000000001 and run.parent_id == 0
    step = tracing.start_child("step", run, {"step_id": "a"})
    remote = tracing.start_child("mesh.forward", f"00-{'ab' * 16}-{'cd' * 8}-01", {})
    assert (step.trace_id, step.parent_id) == (run.trace_id, run.span_id)
    assert (remote.trace_id, remote.parent_id) == (int("ab" * 16, 16), int("cd" * 8, 16))
    step.end()
    step.end()
    run.end()
    assert len(sink.encoded) == 2
    names = [s.name for s in sink.request().resource_spans[0].scope_spans[0].spans]
    assert names == ["step", "run_execution"]


def test_caller_trace_is_continued_and_its_unsampled_flag_respected() -> None:
    tracing, sink = _tracing()
    caller = f"00-{'12' * 16}-{'34' * 8}-00"
    run = tracing.start_run_span("run_execution", "run", caller, {})
    assert (run.trace_id, run.parent_id) == (int("12" * 16, 16), int("34" * 8, 16))
    assert run.trace_flags == 0
    child = tracing.start_child("step", run, {})
    child.end()
    run.end()
    assert sink.encoded == []


@pytest.mark.parametrize(
    ("sampler", "arg", "exported"),
    [
        ("always_off", "", 0),
        ("traceidratio", "0", 0),
        ("traceidratio", "1", 1),
        ("always_on", "", 1),
    ],
)
def test_otel_traces_sampler_decides_at_the_run_span(
    monkeypatch: pytest.MonkeyPatch, sampler: str, arg: str, exported: int
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    tracing, sink = _tracing()
    run = tracing.start_run_span("run_execution", "0190a4d6-0000-7000-8000-000000000002", None, {})
    assert bool(run.trace_flags & SAMPLED) == bool(exported)
    run.end()
    assert len(sink.encoded) == exported


def test_span_records_exception_events_and_error_status() -> None:
    tracing, sink = _tracing()
    span: Span = tracing.start_child("mesh.forward", None, {})
    span.record_exception(RuntimeError("peer gone"))
    span.set_error("forward failed")
    span.end()
    (exported,) = sink.request().resource_spans[0].scope_spans[0].spans
    assert exported.status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert exported.status.message == "forward failed"
    (event,) = exported.events
    assert event.name == "exception"
    assert {a.key: a.value.string_value for a in event.attributes} == {
        "exception.type": "RuntimeError",
        "exception.message": "peer gone",
    }


def test_meter_exports_cumulative_sums_and_explicit_bucket_histograms() -> None:
    meter = Meter({"service.name": "m"}, "stepflow", "1")
    runs = meter.counter("workflow_executions_total", "runs")
    held = meter.up_down_counter("leases.held", "leases")
    duration = meter.histogram("step.duration_seconds", "steps", [0.1, 1.0])
    meter.observed_up_down_counter("queue.depth", "depth", lambda: [(3, {"queue_name": "q"})])
    assert meter.counter("unused_total", "never recorded") is not None
    runs.add(1, {"outcome": "completed"})
    runs.add(2, {"outcome": "completed"})
    runs.add(1, {"outcome": "failed"})
    held.add(1)
    held.add(-1)
    for value in (0.1, 0.5, 5.0):  # 0.1 sits in the first bucket (upper bound inclusive)
        duration.record(value, {"component": "/c"})

    encoded = meter.export_request()
    assert encoded is not None
    request = metrics_service_pb2.ExportMetricsServiceRequest.FromString(encoded)
    metrics = {m.name: m for m in request.resource_metrics[0].scope_metrics[0].metrics}
    assert set(metrics) == {
        "workflow_executions_total", "leases.held", "step.duration_seconds", "queue.depth",
    }  # fmt: skip
    counted = {
        p.attributes[0].value.string_value: p.as_int
        for p in metrics["workflow_executions_total"].sum.data_points
    }
    assert counted == {"completed": 3, "failed": 1}
    assert metrics["workflow_executions_total"].sum.is_monotonic
    assert metrics["workflow_executions_total"].sum.aggregation_temporality == 2
    assert not metrics["leases.held"].sum.is_monotonic
    assert metrics["leases.held"].sum.data_points[0].as_int == 0
    assert metrics["queue.depth"].sum.data_points[0].as_int == 3
    (point,) = metrics["step.duration_seconds"].histogram.data_points
    assert list(point.explicit_bounds) == [0.1, 1.0]
    assert list(point.bucket_counts) == [1, 1, 1]
    assert (point.count, point.sum, point.min, point.max) == (3, pytest.approx(5.6), 0.1, 5.0)


def test_log_record_decodes_with_severity_body_attributes_and_trace_link() -> None:
    header = otlp_wire.resource_header({"service.name": "node-a"}, "stepflow", "1")
    encoded = otlp_wire.log_record(
        1_700_000_000_000_000_123, "WARNING", "step s1 retried", {"run_id": "r1", "logger": "x"},
        trace_id=0xAB << 100, span_id=0xCD,
    )  # fmt: skip
    request = logs_service_pb2.ExportLogsServiceRequest.FromString(
        otlp_wire.export_request(header, [encoded])
    )
    (record,) = request.resource_logs[0].scope_logs[0].log_records
    assert record.time_unix_nano == 1_700_000_000_000_000_123
    assert (record.severity_number, record.severity_text) == (13, "WARNING")
    assert record.body.string_value == "step s1 retried"
    assert {a.key: a.value.string_value for a in record.attributes} == {
        "run_id": "r1",
        "logger": "x",
    }
    assert record.trace_id == (0xAB << 100).to_bytes(16, "big")
    assert record.span_id == (0xCD).to_bytes(8, "big")


def test_long_attribute_values_are_encoded_but_not_kept_in_the_cache() -> None:
    trace = "Traceback (most recent call last):\n" + "  frame\n" * 200
    header = otlp_wire.resource_header({"service.name": "n"}, "stepflow", "1")
    encoded = otlp_wire.log_record(1, "ERROR", "failed", {"exception.stacktrace": trace})
    request = logs_service_pb2.ExportLogsServiceRequest.FromString(
        otlp_wire.export_request(header, [encoded])
    )
    (record,) = request.resource_logs[0].scope_logs[0].log_records
    assert record.attributes[0].value.string_value == trace
    caches = [cache for by_key in otlp_wire._key_caches.values() for cache in by_key.values()]
    assert caches and all(trace not in cache.by_value for cache in caches)


def test_cached_attribute_encodings_follow_the_value() -> None:
    """The same key with alternating, repeated and look-alike values (True == 1 == 1.0), and
    strings whose byte length differs from their length or outgrows one-byte lengths, decodes to
    exactly what was recorded each time."""
    values: list[otlp_wire.AttributeValue] = [
        "s1", "s2", "s1", 1, True, 1.0, 1, "x" * 40, "y" * 40, "x" * 40, False, 0,
        "é" * 20, "ü" * 40, "z" * 300, "z" * 299 + "é", "",
    ]  # fmt: skip
    for value in values:
        (encoded,) = otlp_wire.attributes(b"\x0a", {"k": value})
        # An attributes field (tag 1) holding the KeyValue: the official classes decode it.
        holder = common_pb2.KeyValueList.FromString(encoded)
        assert len(holder.values) == 1
        decoded = holder.values[0]
        kind = decoded.value.WhichOneof("value")
        got = getattr(decoded.value, kind)
        assert (type(got), got) == (type(value), value)


def test_attribute_caches_stay_bounded() -> None:
    """Many distinct short values (step ids of huge flows) never grow the caches past the limit,
    and encodings stay right across the reset."""
    for index in range(3 * otlp_wire._CACHE_LIMIT):
        (encoded,) = otlp_wire.attributes(b"\x0a", {"step_id": f"s{index}"})
        assert common_pb2.KeyValue.FromString(encoded[2:]).value.string_value == f"s{index}"
    cached = sum(
        len(cache.by_value)
        for caches in otlp_wire._key_caches.values()
        for cache in caches.values()
    )
    assert cached <= otlp_wire._CACHE_LIMIT
