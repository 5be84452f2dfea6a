"""OTLP trace messages written straight in protobuf wire format.

Building `opentelemetry.proto` message objects costs ~20 µs per span and the SDK's exporter path
~60 µs; a run of ten noop steps makes a dozen spans, so that cost was most of the tracing
overhead. Each ended span is encoded once, by the exporter thread (a few µs, mostly cached
attribute bytes); an export request is then a join of those bytes under the resource and scope
header.

Field numbers are those of `opentelemetry/proto/trace/v1/trace.proto` and `common/v1/common.proto`;
`tests/telemetry/test_otlp_wire.py` decodes the output with the official classes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping

AttributeValue = str | bool | int | float

# trace id (field 1, 16 bytes) and span id (field 2, 8 bytes), big-endian as OTLP's bytes are
_IDS = struct.Struct(">2sQQ2sQ").pack
_PARENT = struct.Struct(">2sQ").pack  # parent span id (field 4)
_LOW64 = 0xFFFF_FFFF_FFFF_FFFF
_TIMESTAMPS = struct.Struct("<BQBQ").pack  # start (field 7) and end (field 8): fixed64
_DOUBLE = struct.Struct("<d").pack
_ATTRIBUTE_CACHE_LIMIT = 8192
_CACHEABLE_CHARS = 32  # longer strings (uuids, messages, stack traces) rarely repeat
# per field tag: (key, value, value type) → the encoded field
_encoded_attributes: dict[bytes, dict[tuple[str, AttributeValue, type], bytes]] = {}
_key_fields: dict[str, bytes] = {}
_NAME_FIELDS: dict[str, bytes] = {}

SPAN_KIND_INTERNAL = 1
STATUS_ERROR = 2


_ONE_BYTE = [bytes((n,)) for n in range(0x80)]


def varint(value: int) -> bytes:
    if value < 0x80:
        return _ONE_BYTE[value]
    if value < 0x4000:  # a span's or a batch's length: two bytes
        return bytes(((value & 0x7F) | 0x80, value >> 7))
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
    """Each attribute as a `tag` field. Short values (component, step id, attempt, outcome) repeat
    from span to span, so their encoding is cached per tag; a cache starts over when full, so its
    memory stays bounded (~8k short entries). Longer strings (ids that occur once, messages) take
    the direct path, which costs about what a cache insert would."""
    cache = _encoded_attributes.get(tag)
    if cache is None or len(cache) >= _ATTRIBUTE_CACHE_LIMIT:
        cache = _encoded_attributes[tag] = {}
    out = []
    for key, value in values.items():
        kind = type(value)
        if kind is str and len(value) > _CACHEABLE_CHARS:  # type: ignore[arg-type]
            out.append(_string_attribute(tag, key, value))  # type: ignore[arg-type]
            continue
        cache_key = (key, value, kind)  # the type: True == 1 but encodes differently
        cached = cache.get(cache_key)
        if cached is None:
            cached = cache[cache_key] = field(tag, key_value(key, value))
        out.append(cached)
    return out


def _string_attribute(tag: bytes, key: str, value: str) -> bytes:
    """`field(tag, key_value(key, value))` for a string value, with the key's bytes cached."""
    key_field = _key_fields.get(key)
    if key_field is None:
        if len(_key_fields) >= _ATTRIBUTE_CACHE_LIMIT:
            _key_fields.clear()
        key_field = _key_fields[key] = field(b"\x0a", key.encode())
    data = value.encode()
    size = len(data)
    total = len(key_field) + size + 4  # + the value's two tag and two length bytes
    if total < 0x80:  # every length fits one byte: an id
        return b"".join(
            (tag, _ONE_BYTE[total], key_field, b"\x12", _ONE_BYTE[size + 2], b"\x0a",
             _ONE_BYTE[size], data)
        )  # fmt: skip
    return field(tag, key_field + field(b"\x12", field(b"\x0a", data)))


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
    """One `Span` (kind INTERNAL) as the bytes of a `ScopeSpans.spans` entry (field 2).

    Called for every ended span (each step attempt, each journal write), hence the cached parts."""
    parts = [
        _IDS(b"\x0a\x10", trace_id >> 64, trace_id & _LOW64, b"\x12\x08", span_id),
        _PARENT(b"\x22\x08", parent_span_id) if parent_span_id else b"",
        _NAME_FIELDS.get(name) or _name_field(name),
        _TIMESTAMPS(0x39, start_ns, 0x41, end_ns),
        *attributes(b"\x4a", span_attributes),
    ]
    for time_ns, event_name, event_attributes in events:
        event = [b"\x09", time_ns.to_bytes(8, "little"), field(b"\x12", event_name.encode())]
        event += attributes(b"\x1a", event_attributes)
        parts.append(field(b"\x5a", b"".join(event)))
    if error_message is not None:
        status = field(b"\x12", error_message.encode()) + b"\x18" + varint(STATUS_ERROR)
        parts.append(field(b"\x7a", status))
    return field(b"\x12", b"".join(parts))


def _name_field(name: str) -> bytes:
    """Span name (field 5) and kind INTERNAL (field 6): a handful of names, encoded once."""
    encoded = field(b"\x2a", name.encode()) + b"\x30" + varint(SPAN_KIND_INTERNAL)
    if len(_NAME_FIELDS) < 64:
        _NAME_FIELDS[name] = encoded
    return encoded


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
