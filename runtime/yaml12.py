"""YAML with YAML 1.2 core-schema scalars, on top of PyYAML.

PyYAML implements YAML 1.1, where `on`, `no`, `1:30`, `012` and `2024-01-01` silently become
bools, sexagesimal or octal ints and dates. Flow files are written against YAML 1.2 (as the Rust
runtime reads them), so the resolvers and constructors are replaced wholesale here instead of
being patched at each call site. Dumping quotes every string that a 1.1 *or* 1.2 reader would
take for something else, so our output means the same to both.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver as _Yaml11Resolver

from .jsonfmt import dumps_compact

__all__ = ["YamlError", "YamlKey", "dump_yaml", "load_yaml"]

if TYPE_CHECKING:
    _LoaderBase = yaml.SafeLoader
    _DumperBase = yaml.SafeDumper
else:
    # libyaml only speeds up parsing/emitting; resolution still runs through our Python tables.
    _LoaderBase = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader
    _DumperBase = yaml.CSafeDumper if yaml.__with_libyaml__ else yaml.SafeDumper

_TAG = "tag:yaml.org,2002:"
_NULL_TAG = _TAG + "null"
_BOOL_TAG = _TAG + "bool"
_INT_TAG = _TAG + "int"
_FLOAT_TAG = _TAG + "float"
_STR_TAG = _TAG + "str"
_SEQ_TAG = _TAG + "seq"
_MAP_TAG = _TAG + "map"

_NULL_RE = re.compile(r"(?:null|Null|NULL|~|)\Z")
_BOOL_RE = re.compile(r"(?:true|True|TRUE|false|False|FALSE)\Z")
_INT_RE = re.compile(r"(?:(?P<dec>[-+]?[0-9]+)|0o(?P<oct>[0-7]+)|0x(?P<hex>[0-9a-fA-F]+))\Z")
_FLOAT_RE = re.compile(
    r"""(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
        |(?P<inf>[-+]?\.(?:inf|Inf|INF))
        |(?P<nan>\.(?:nan|NaN|NAN)))\Z""",
    re.VERBOSE,
)
_ODD_BREAKS_RE = re.compile("[\r\x85\u2028\u2029]")
# YAML 1.1 booleans that PyYAML itself does not resolve but other 1.1 readers do.
_YAML11_SHORT_BOOL_RE = re.compile(r"(?:y|Y|n|N)\Z")

_DIGITS = "0123456789"


class YamlError(ValueError):
    """A document that cannot be loaded, located as `source:line:column` for the user."""

    def __init__(
        self,
        problem: str,
        source: str = "<string>",
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        # All fields go into args so the exception pickles and copies intact.
        super().__init__(problem, source, line, column)
        self.problem = problem
        self.source = source
        self.line = line
        self.column = column

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.problem}"


_NO_VALUE: Any = object()


class YamlKey(str):
    """A mapping key that was not a string in YAML (`{input: a}: 1`, `1: x`, `null: y`).

    JSON objects only have string keys, so such a key becomes its compact JSON text; the text
    is what makes two keys equal, while `.value` keeps the original for whoever needs it (mock
    behaviours are keyed by whole input values).
    """

    value: Any

    def __new__(cls, text: str, value: Any = _NO_VALUE) -> YamlKey:
        key = super().__new__(cls, text)
        key.value = json.loads(text) if value is _NO_VALUE else value
        return key

    @classmethod
    def of(cls, value: Any) -> YamlKey:
        """The key for a loaded YAML value."""
        return cls(dumps_compact(value), value)

    def __repr__(self) -> str:
        return f"YamlKey({str.__repr__(self)})"

    def __reduce__(self) -> tuple[Any, ...]:
        # The default str reduction would drop `.value` (and __new__ needs it to skip parsing).
        return (YamlKey, (str(self), self.value))


class _Loader(_LoaderBase):
    """SafeLoader with only the YAML 1.2 core schema and JSON-like values."""

    # Fresh tables (not copies of SafeLoader's): anything not registered below is an error.
    yaml_implicit_resolvers: dict[Any, Any] = {}
    yaml_constructors = {}
    yaml_multi_constructors = {}


_Loader.add_implicit_resolver(_NULL_TAG, _NULL_RE, ["~", "n", "N", ""])
_Loader.add_implicit_resolver(_BOOL_TAG, _BOOL_RE, list("tTfF"))
# int before float: every decimal int also matches the float pattern, and the first match wins.
_Loader.add_implicit_resolver(_INT_TAG, _INT_RE, list("-+" + _DIGITS))
_Loader.add_implicit_resolver(_FLOAT_TAG, _FLOAT_RE, list("-+." + _DIGITS))


def _scalar_text(loader: _Loader, node: Node, what: str) -> str:
    if not isinstance(node, ScalarNode):
        raise ConstructorError(None, None, f"expected a scalar for {what}", node.start_mark)
    return loader.construct_scalar(node)


def _invalid(node: Node, what: str, text: str) -> ConstructorError:
    return ConstructorError(None, None, f"invalid {what} value {text!r}", node.start_mark)


def _construct_null(loader: _Loader, node: Node) -> None:
    text = _scalar_text(loader, node, "!!null")
    if not _NULL_RE.match(text):
        raise _invalid(node, "null", text)


def _construct_bool(loader: _Loader, node: Node) -> bool:
    text = _scalar_text(loader, node, "!!bool")
    if not _BOOL_RE.match(text):
        raise _invalid(node, "bool", text)
    return text.lower() == "true"


def _construct_int(loader: _Loader, node: Node) -> int:
    text = _scalar_text(loader, node, "!!int")
    match = _INT_RE.match(text)
    if match is None:
        raise _invalid(node, "int", text)
    try:
        if match["dec"] is not None:
            return int(text, 10)  # "012" is twelve in 1.2 (1.1 read it as octal ten)
        if match["oct"] is not None:
            return int(match["oct"], 8)
        return int(match["hex"], 16)
    except ValueError:  # beyond Python's int-string conversion limit
        raise _invalid(node, "int", text[:40] + "...") from None


def _construct_float(loader: _Loader, node: Node) -> float:
    text = _scalar_text(loader, node, "!!float")
    match = _FLOAT_RE.match(text)
    if match is None:
        raise _invalid(node, "float", text)
    if match["inf"] is not None:
        return -math.inf if text.startswith("-") else math.inf
    if match["nan"] is not None:
        return math.nan
    return float(text)


def _construct_str(loader: _Loader, node: Node) -> str:
    return _scalar_text(loader, node, "!!str")


def _construct_seq(loader: _Loader, node: Node) -> list[Any]:
    if not isinstance(node, SequenceNode):
        raise ConstructorError(None, None, "expected a sequence for !!seq", node.start_mark)
    return [loader.construct_object(child, deep=True) for child in node.value]


def _construct_map(loader: _Loader, node: Node) -> dict[str, Any]:
    if not isinstance(node, MappingNode):
        raise ConstructorError(None, None, "expected a mapping for !!map", node.start_mark)
    result: dict[str, Any] = {}
    first_lines: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if type(key) is not str:
            key = YamlKey.of(key)
        if key in result:
            first = first_lines[key]
            problem = f"duplicate key {str.__repr__(key)} (first defined at line {first})"
            raise ConstructorError(None, None, problem, key_node.start_mark)
        first_lines[key] = key_node.start_mark.line + 1
        result[key] = loader.construct_object(value_node, deep=True)
    return result


def _construct_unsupported(loader: _Loader, node: Node) -> Any:
    tag = "!!" + node.tag.removeprefix(_TAG) if node.tag.startswith(_TAG) else node.tag
    raise ConstructorError(None, None, f"unsupported tag {tag!r}", node.start_mark)


_CONSTRUCTORS: dict[str | None, Callable[[_Loader, Node], Any]] = {
    _NULL_TAG: _construct_null,
    _BOOL_TAG: _construct_bool,
    _INT_TAG: _construct_int,
    _FLOAT_TAG: _construct_float,
    _STR_TAG: _construct_str,
    _SEQ_TAG: _construct_seq,
    _MAP_TAG: _construct_map,
    None: _construct_unsupported,
}
for _tag, _constructor in _CONSTRUCTORS.items():
    _Loader.add_constructor(_tag, _constructor)


def _error_from(exc: yaml.YAMLError, text: str, source: str) -> YamlError:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context:
            problem += f" ({exc.context}"
            if exc.context_mark is not None and exc.context_mark is not mark:
                problem += f" at line {exc.context_mark.line + 1}"
            problem += ")"
        if mark is None:
            return YamlError(problem, source)
        return YamlError(problem, source, mark.line + 1, mark.column + 1)
    if isinstance(exc, yaml.reader.ReaderError):
        # The C reader reports a byte offset, so locate the offending character ourselves.
        bad = yaml.reader.Reader.NON_PRINTABLE.search(text)
        if bad is not None:
            start = bad.start()
            line = text.count("\n", 0, start) + 1
            column = start - (text.rfind("\n", 0, start) + 1) + 1
            problem = f"character {bad.group()!r} is not allowed in YAML"
            return YamlError(problem, source, line, column)
        return YamlError(exc.reason, source)
    return YamlError(str(exc), source)


def load_yaml(text: str, source: str = "<string>") -> Any:
    """One YAML document as JSON-like data (None when empty); YamlError says where it is bad."""
    try:
        loader = _Loader(text)  # the pure-Python reader rejects bad characters right here
    except yaml.YAMLError as exc:
        raise _error_from(exc, text, source) from None
    try:
        if not loader.check_node():
            return None
        node = loader.get_node()
        # peek_event, not check_node: libyaml's check_node swallows the next document's start
        # event, and its mark is the line to report.
        peek_event: Callable[[], object] = loader.peek_event  # untyped in the stubs
        event = peek_event()
        if isinstance(event, yaml.Event) and not isinstance(event, yaml.StreamEndEvent):
            mark = event.start_mark
            if mark is None:
                raise YamlError("multiple YAML documents", source)
            raise YamlError("multiple YAML documents", source, mark.line + 1, mark.column + 1)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise _error_from(exc, text, source) from None
    except RecursionError:
        raise YamlError("document is nested too deeply", source) from None
    finally:
        loader.dispose()


class _Dumper(_DumperBase):
    """SafeDumper that writes JSON-like data only, without anchors or tags."""

    yaml_implicit_resolvers: dict[Any, Any] = {}
    yaml_representers = {}
    yaml_multi_representers = {}

    def ignore_aliases(self, data: Any) -> bool:
        # Shared sub-values are written out in full: `&id001`/`*id001` only confuse readers.
        return True


def _dumper_resolvers() -> dict[Any, list[Any]]:
    """1.2 core resolvers first (they decide how numbers read back), then every 1.1 one.

    A string that any of these would resolve to a non-string gets quoted by the serializer.
    """
    table: dict[Any, list[Any]] = {
        first: list(entries) for first, entries in _Loader.yaml_implicit_resolvers.items()
    }
    for first, entries in _Yaml11Resolver.yaml_implicit_resolvers.items():
        table.setdefault(first, []).extend(entries)
    for first in "yYnN":
        table.setdefault(first, []).append((_BOOL_TAG, _YAML11_SHORT_BOOL_RE))
    return table


_Dumper.yaml_implicit_resolvers = _dumper_resolvers()


def _represent_none(dumper: _Dumper, data: None) -> ScalarNode:
    return dumper.represent_scalar(_NULL_TAG, "null")


def _represent_bool(dumper: _Dumper, data: bool) -> ScalarNode:
    return dumper.represent_scalar(_BOOL_TAG, "true" if data else "false")


def _represent_int(dumper: _Dumper, data: int) -> ScalarNode:
    return dumper.represent_scalar(_INT_TAG, int.__repr__(data))


def _represent_float(dumper: _Dumper, data: float) -> ScalarNode:
    if math.isnan(data):
        text = ".nan"
    elif math.isinf(data):
        text = ".inf" if data > 0 else "-.inf"
    else:
        text = float.__repr__(data)
        if "e" in text and "." not in text:
            # `1.0e+20` reads as a float under 1.1 too; `1e+20` would be a 1.1 string.
            text = text.replace("e", ".0e", 1)
    return dumper.represent_scalar(_FLOAT_TAG, text)


def _represent_str(dumper: _Dumper, data: str) -> ScalarNode:
    style: str | None = None
    if _ODD_BREAKS_RE.search(data):
        # 1.1 emitters treat NEL/LS/PS as line breaks (PyYAML's own even mangles them when it
        # folds single quotes) while 1.2 readers do not: escapes mean the same to both.
        style = '"'
    elif "\n" in data:
        # Literal blocks keep multi-line text readable; the emitter falls back to quotes if needed.
        style = "|"
    return dumper.represent_scalar(_STR_TAG, str(data), style)


def _represent_key(dumper: _Dumper, data: YamlKey) -> Node:
    # Written back as the original value so that loading the output gives the same YamlKey.
    return dumper.represent_data(data.value)


def _represent_list(dumper: _Dumper, data: list[Any] | tuple[Any, ...]) -> SequenceNode:
    return dumper.represent_sequence(_SEQ_TAG, data)


def _represent_dict(dumper: _Dumper, data: dict[Any, Any]) -> MappingNode:
    return dumper.represent_mapping(_MAP_TAG, data)


def _represent_other(dumper: _Dumper, data: Any) -> Node:
    raise TypeError(f"value of type {type(data).__name__} cannot be written as YAML")


_Dumper.add_representer(type(None), _represent_none)
_Dumper.add_representer(bool, _represent_bool)
_Dumper.add_representer(YamlKey, _represent_key)
_Dumper.add_multi_representer(int, _represent_int)
_Dumper.add_multi_representer(float, _represent_float)
_Dumper.add_multi_representer(str, _represent_str)
_Dumper.add_multi_representer(list, _represent_list)
_Dumper.add_multi_representer(tuple, _represent_list)
_Dumper.add_multi_representer(dict, _represent_dict)
_Dumper.add_representer(None, _represent_other)  # type: ignore[arg-type]


def dump_yaml(value: Any) -> str:
    """Block-style YAML that `load_yaml` (and 1.1 readers) read back as exactly `value`."""
    try:
        return yaml.dump(
            value,
            Dumper=_Dumper,
            sort_keys=False,
            allow_unicode=True,
            default_flow_style=False,
        )
    except RecursionError:
        raise ValueError("value is nested too deeply or contains a reference cycle") from None
