"""OTLP trace messages written straight in protobuf wire format.

Building `opentelemetry.proto` message objects costs ~20 µs per span and the SDK's exporter path
~60 µs; a run of ten noop steps makes a dozen spans, so that cost was most of the tracing
overhead. A span is encoded once, when it ends (a few µs, mostly cached attribute bytes); an export
request is then a join of those bytes under the resource and scope header.

Field numbers are those of `opentelemetry/proto/trace/v1/trace.proto` and `common/v1/common.proto`;
`tests/telemetry/test_otlp_wire.py` decodes the output with the official classes.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable, Mapping

AttributeValue = str | bool | int | float

_FIXED64_PAIR = struct.Struct("<BQBQ").pack  # start (field 7) and end (field 8) timestamps
_DOUBLE = struct.Struct("<d").pack
_ATTRIBUTE_CACHE_LIMIT = 8192
_CACHEABLE_CHARS = 128  # longer strings are one-offs; caching them would only hold memory
_encoded_attributes: dict[tuple[bytes, str, AttributeValue, type], bytes] = {}

SPAN_KIND_INTERNAL = 1
STATUS_ERROR = 2


_ONE_BYTE = [bytes((n,)) for n in range(0x80)]


def varint(value: int) -> bytes:
    if value < 0x80:
        return _ONE_BYTE[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: `tag` is the already-encoded key byte(s)."""
    size = len(payload)
    return tag + (_ONE_BYTE[size] if size < 0x80 else varint(size)) + payload


def any_value(value: AttributeValue) -> bytes:
    """An `AnyValue`: bool, int64, double or string (anything else as its string)."""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + varint(value & 0xFFFF_FFFF_FFFF_FFFF)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    return field(b"\x0a", str(value).encode())


def key_value(key: str, value: AttributeValue) -> bytes:
    """A `KeyValue` message."""
    return field(b"\x0a", key.encode()) + field(b"\x12", any_value(value))


def attributes(tag: bytes, values: Mapping[str, AttributeValue]) -> list[bytes]:
    """Each attribute as a `tag` field. Most pairs (component, step id, attempt, node) repeat from
    span to span, so their encoding is cached; the cache starts over when full (unique ids) and
    never holds long strings, so its memory stays bounded (~8k short entries)."""
    out = []
    for key, value in values.items():
        if type(value) is str and len(value) > _CACHEABLE_CHARS:  # a message, a stack trace
            out.append(field(tag, key_value(key, value)))
            continue
        cache_key = (tag, key, value, type(value))  # the type: True == 1 but encodes differently
        cached = _encoded_attributes.get(cache_key)
        if cached is None:
            if len(_encoded_attributes) >= _ATTRIBUTE_CACHE_LIMIT:
                _encoded_attributes.clear()
            cached = _encoded_attributes[cache_key] = field(tag, key_value(key, value))
        out.append(cached)
    return out


def span(
    trace_id: int,
    span_id: int,
    parent_span_id: int,
    name: str,
    start_ns: int,
    end_ns: int,
    span_attributes: Mapping[str, AttributeValue],
    events: Iterable[tuple[int, str, Mapping[str, AttributeValue]]] = (),
    error_message: str | None = None,
) -> bytes:
    """One `Span` (kind INTERNAL) as the bytes of a `ScopeSpans.spans` entry (field 2)."""
    parts = [
        b"\x0a\x10" + trace_id.to_bytes(16, "big") + b"\x12\x08" + span_id.to_bytes(8, "big"),
        b"\x22\x08" + parent_span_id.to_bytes(8, "big") if parent_span_id else b"",
        _name_field(name),
        _FIXED64_PAIR(0x39, start_ns, 0x41, end_ns),
    ]
    parts += attributes(b"\x4a", span_attributes)
    for time_ns, event_name, event_attributes in events:
        event = [b"\x09", time_ns.to_bytes(8, "little"), field(b"\x12", event_name.encode())]
        event += attributes(b"\x1a", event_attributes)
        parts.append(field(b"\x5a", b"".join(event)))
    if error_message is not None:
        status = field(b"\x12", error_message.encode()) + b"\x18" + varint(STATUS_ERROR)
        parts.append(field(b"\x7a", status))
    return field(b"\x12", b"".join(parts))


@functools.lru_cache(maxsize=64)
def _name_field(name: str) -> bytes:
    """Span name (field 5) and kind INTERNAL (field 6): a handful of names, encoded once."""
    return field(b"\x2a", name.encode()) + b"\x30\x01"


def resource_header(
    resource: Mapping[str, AttributeValue], scope_name: str, scope_version: str
) -> tuple[bytes, bytes]:
    """The constant parts of a `ResourceSpans` / `ResourceLogs`: (resource field, scope field)."""
    resource_field = field(b"\x0a", b"".join(attributes(b"\x0a", resource)))
    scope = field(b"\x0a", scope_name.encode()) + field(b"\x12", scope_version.encode())
    return resource_field, field(b"\x0a", scope)


def export_request(header: tuple[bytes, bytes], encoded: list[bytes]) -> bytes:
    """`ExportTraceServiceRequest` (or `ExportLogsServiceRequest`: the same shape) with one
    resource and one scope holding the `encoded` spans (log records)."""
    resource_field, scope_field = header
    scope_items = field(b"\x12", scope_field + b"".join(encoded))
    return field(b"\x0a", resource_field + scope_items)


SEVERITY = {"DEBUG": 5, "INFO": 9, "WARNING": 13, "ERROR": 17, "CRITICAL": 21}


def log_record(
    time_ns: int,
    level: str,
    body: str,
    record_attributes: Mapping[str, AttributeValue],
    trace_id: int = 0,
    span_id: int = 0,
) -> bytes:
    """One `LogRecord` as the bytes of a `ScopeLogs.log_records` entry (field 2)."""
    parts = [
        b"\x09" + time_ns.to_bytes(8, "little"),
        b"\x10" + varint(SEVERITY.get(level, 0)),
        field(b"\x1a", level.encode()),
        field(b"\x2a", any_value(body)),
    ]
    parts += attributes(b"\x32", record_attributes)
    if trace_id and span_id:
        parts.append(b"\x4a\x10" + trace_id.to_bytes(16, "big"))
        parts.append(b"\x52\x08" + span_id.to_bytes(8, "big"))
    return field(b"\x12", b"".join(parts))
