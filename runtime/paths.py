"""JSON paths as flows use them (flows.md §5.2): `$`, `$.a[0]["k"]`, or one literal key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Segment = str | int
NOT_FOUND: Any = object()


class PathError(ValueError):
    """A path text that cannot be parsed."""


@dataclass(frozen=True)
class Path:
    """A parsed path; `segments` are object keys (str) and array indices (int)."""

    segments: tuple[Segment, ...] = ()

    @property
    def is_root(self) -> bool:
        return not self.segments

    def lookup(self, value: Any) -> Any:
        """The sub-value, or NOT_FOUND for a wrong type or an absent key/index."""
        for seg in self.segments:
            if isinstance(seg, int):
                if not isinstance(value, list) or seg >= len(value):
                    return NOT_FOUND
                value = value[seg]
            else:
                if not isinstance(value, dict) or seg not in value:
                    return NOT_FOUND
                value = value[seg]
        return value

    def __str__(self) -> str:
        out = ["$"]
        for seg in self.segments:
            out.append(f"[{seg}]" if isinstance(seg, int) else f".{seg}")
        return "".join(out)

    def head(self) -> tuple[Segment | None, Path]:
        """First segment and the rest (variables use the first segment as the name)."""
        if not self.segments:
            return None, self
        return self.segments[0], Path(self.segments[1:])


ROOT = Path()


def parse_path(text: Any) -> Path:
    """Parse the path syntax of flows.md §5.2; raises PathError with upstream's messages."""
    if text is None:
        return ROOT
    if not isinstance(text, str):
        raise PathError(f"Path must be a string, got {type(text).__name__}")
    stripped = text.strip()
    if stripped in ("", "$"):
        return ROOT
    if not stripped.startswith("$"):
        return Path((text,))
    return Path(tuple(_parse_segments(stripped, 1)))


def _parse_segments(text: str, i: int) -> list[Segment]:
    segments: list[Segment] = []
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == ".":
            j = i + 1
            while j < n and text[j] not in ".[":
                j += 1
            name = text[i + 1 : j]
            if name:
                segments.append(name)
            i = j
        elif ch == "[":
            close = _find_close(text, i)
            segments.append(_bracket_segment(text[i + 1 : close]))
            i = close + 1
        else:
            raise PathError(
                f"Invalid character '{ch}' in JSON path after $ or ']'. Expected '.' or '['"
            )
    return segments


def _find_close(text: str, start: int) -> int:
    i = start + 1
    quote: str | None = None
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "]":
            return i
        i += 1
    raise PathError("Unclosed bracket '[' in path")


def _bracket_segment(inner: str) -> Segment:
    inner = inner.strip()
    if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "\"'":
        return inner[1:-1]
    if inner.isdigit() and inner.isascii():
        return int(inner)
    raise PathError(f"Invalid index '{inner}' in JSON path. Expected a number or a quoted string.")
