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
_IDS_AND_PARENT = struct.Struct(">2sQQ2sQ2sQ").pack  # and the parent span id (field 4)
_LOW64 = 0xFFFF_FFFF_FFFF_FFFF
_TIMESTAMPS = struct.Struct("<BQBQ").pack  # start (field 7) and end (field 8): fixed64
_DOUBLE = struct.Struct("<d").pack
_CACHE_LIMIT = 8192  # encoded attribute values kept in all (when full, every cache starts over)
_KEY_LIMIT = 256  # attribute keys cached per field tag
_CACHEABLE_CHARS = 32  # longer strings (uuids, messages, stack traces) rarely repeat
_PREFIXED_BYTES = 255  # strings up to this many bytes reuse a prefix cached per length
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


class _KeyCache:
    """The encoded `KeyValue` fields of one attribute key under one field tag. Most values repeat
    from span to span: the same object as last time (a run's id on each of its step spans,
    attempt 1, "success") is one identity check; other short values are looked up by value; any
    other string is its bytes behind a prefix cached by length (a task's uuid: one concatenation).
    Spans are encoded in the exporter thread and log records in the logging one, so `last` is
    one (value, encoding) tuple, replaced whole."""

    __slots__ = ("by_value", "key_field", "last", "prefixes", "tag")

    def __init__(self, tag: bytes, key: str) -> None:
        self.tag = tag
        self.key_field = field(b"\x0a", key.encode())
        self.by_value: dict[object, bytes] = {}
        self.prefixes: dict[int, bytes] = {}  # string value's byte length → the bytes before it
        self.last: tuple[object, bytes] = (_NOTHING, b"")

    def encode(self, value: AttributeValue) -> bytes:
        kind = type(value)
        if kind is str:
            found = self.by_value.get(value)
            if found is None:
                found = self._string(value)  # type: ignore[arg-type]
                if len(value) <= _CACHEABLE_CHARS:  # type: ignore[arg-type]
                    _count_cached()
                    self.by_value[value] = found
            self.last = (value, found)
            return found
        cache_key = (kind, value)  # True == 1 == 1.0, but each encodes differently
        found = self.by_value.get(cache_key)
        if found is None:
            _count_cached()
            found = self.by_value[cache_key] = field(
                self.tag, self.key_field + field(b"\x12", any_value(value))
            )
        self.last = (value, found)
        return found

    def _string(self, value: str) -> bytes:
        data = value.encode()
        size = len(data)
        prefix = self.prefixes.get(size)
        if prefix is not None:
            return prefix + data
        encoded = field(self.tag, self.key_field + field(b"\x12", field(b"\x0a", data)))
        if size <= _PREFIXED_BYTES:  # longer ones (messages, stack traces) rarely share a length
            self.prefixes[size] = encoded[: len(encoded) - size]  # all but the string's bytes
        return encoded


_NOTHING = object()
_key_caches: dict[bytes, dict[str, _KeyCache]] = {}  # field tag → attribute key → its cache
_cached_values = 0


def _count_cached() -> None:
    """One more cached encoding; past the limit every cache starts over (bounded memory)."""
    global _cached_values
    _cached_values += 1
    if _cached_values > _CACHE_LIMIT:
        _cached_values = 0
        for caches in list(_key_caches.values()):
            for cache in list(caches.values()):
                cache.by_value = {}


def attributes(tag: bytes, values: Mapping[str, AttributeValue]) -> list[bytes]:
    """Each attribute as a `tag` field."""
    out: list[bytes] = []
    add_attributes(out, tag, values)
    return out


def add_attributes(out: list[bytes], tag: bytes, values: Mapping[str, AttributeValue]) -> None:
    """`attributes()` appended to `out`. Runs for every attribute of every span, hence the
    caches (bounded: a full one starts over)."""
    caches = _key_caches.get(tag)
    if caches is None:
        caches = _key_caches[tag] = {}
    for key, value in values.items():
        cache = caches.get(key)
        if cache is None:
            if len(caches) >= _KEY_LIMIT:
                caches.clear()
            cache = caches[key] = _KeyCache(tag, key)
        last = cache.last
        out.append(last[1] if value is last[0] else cache.encode(value))


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
    high, low = trace_id >> 64, trace_id & _LOW64
    parts = [
        _IDS_AND_PARENT(b"\x0a\x10", high, low, b"\x12\x08", span_id, b"\x22\x08", parent_span_id)
        if parent_span_id
        else _IDS(b"\x0a\x10", high, low, b"\x12\x08", span_id),
        _NAME_FIELDS.get(name) or _name_field(name),
        _TIMESTAMPS(0x39, start_ns, 0x41, end_ns),
    ]
    add_attributes(parts, b"\x4a", span_attributes)
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
