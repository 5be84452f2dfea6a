"""The config file (flows.md §9): plugins, routes, retry, storage; discovery and defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from .errors import UserError
from .model import read_document
from .paths import Path, PathError, parse_path

CONFIG_NAMES = (
    "stepflow-config.yml",
    "stepflow-config.yaml",
    "stepflow_config.yml",
    "stepflow_config.yaml",
)
RULE_KEYS = {"plugin", "conditions", "componentAllow", "componentDeny", "locality"}


@dataclass(frozen=True)
class Condition:
    path: Path
    value: Any


@dataclass(frozen=True)
class RouteRule:
    plugin: str
    conditions: tuple[Condition, ...] = ()
    component_allow: tuple[str, ...] | None = None
    component_deny: tuple[str, ...] = ()
    locality: str = "prefer"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Backoff:
    """Delay before retry k (1-based) of one budget (flows.md §9.5)."""

    kind: str = "fibonacci"
    min_delay_ms: int = 1000
    max_delay_ms: int = 10000
    factor: float = 2.0
    delay_ms: int = 1000

    def delay_seconds(self, k: int) -> float:
        if self.kind == "constant":
            return self.delay_ms / 1000
        if self.kind == "exponential":
            ms = min(self.min_delay_ms * self.factor ** (k - 1), self.max_delay_ms)
            return ms / 1000
        a, b = 1, 1
        for _ in range(k - 1):
            a, b = b, a + b
        return min(self.min_delay_ms * a, self.max_delay_ms) / 1000


@dataclass(frozen=True)
class RetryConfig:
    transport_max_retries: int = 3
    backoff: Backoff = field(default_factory=Backoff)


@dataclass
class Config:
    plugins: dict[str, dict[str, Any]]
    routes: dict[str, list[RouteRule]]
    working_dir: FsPath
    retry: RetryConfig = field(default_factory=RetryConfig)
    storage: dict[str, Any] | None = None
    source: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


def default_config(working_dir: FsPath) -> Config:
    """Builtins routed under `/builtin` (flows.md §9.1 divergence: upstream routes nothing)."""
    return Config(
        plugins={"builtin": {"type": "builtin"}},
        routes={"/builtin": [RouteRule(plugin="builtin")]},
        working_dir=working_dir,
    )


def find_config(directory: FsPath) -> FsPath | None:
    found = [directory / n for n in CONFIG_NAMES if (directory / n).is_file()]
    if len(found) > 1:
        raise UserError(f"Multiple stepflow config files found in directory: {directory}")
    return found[0] if found else None


def discover_config(explicit: FsPath | None, flow_dir: FsPath | None) -> Config:
    """`--config` wins; else the flow's directory, then the CWD; else the default config."""
    if explicit is not None:
        return load_config(explicit)
    for directory in (flow_dir, FsPath.cwd()):
        if directory is not None:
            found = find_config(directory)
            if found is not None:
                return load_config(found)
    return default_config((flow_dir or FsPath.cwd()).resolve())


def load_config(path: FsPath) -> Config:
    return parse_config(read_document(path), str(path), path.parent.resolve())


def parse_config(doc: Any, source: str, base_dir: FsPath) -> Config:
    def err(where: str, message: str) -> UserError:
        return UserError(message, f"{source}: {where}")

    if not isinstance(doc, dict):
        raise UserError("a config file must be an object", source)
    working = doc.get("workingDirectory")
    working_dir = FsPath(working).resolve() if isinstance(working, str) else base_dir
    plugins = doc.get("plugins")
    if not isinstance(plugins, dict):
        raise err("plugins", "'plugins' is required and must be a map of name → plugin config")
    for name, plugin in plugins.items():
        if not isinstance(plugin, dict) or not isinstance(plugin.get("type"), str):
            raise err(f"plugins.{name}", "each plugin needs a 'type'")
    routes_raw = doc.get("routes")
    if not isinstance(routes_raw, dict):
        raise err("routes", "'routes' is required and must be a map of prefix → rules")
    routes = {
        str(prefix): _parse_rules(rules, f"routes.{prefix}", err)
        for prefix, rules in routes_raw.items()
    }
    for prefix in routes:
        if prefix != "/" and (not prefix.startswith("/") or "/" in prefix[1:] or "{" in prefix):
            raise err(
                f"routes.{prefix}",
                f"Invalid prefix '{prefix}': must be \"/\" or a single-segment prefix like "
                '"/python" (no nested segments)',
            )
    storage = doc.get("storageConfig")
    return Config(
        plugins=plugins,
        routes=routes,
        working_dir=working_dir,
        retry=_parse_retry(doc.get("retry"), err),
        storage=storage if isinstance(storage, dict) else None,
        source=source,
        raw=doc,
    )


def _parse_rules(rules: Any, where: str, err: Any) -> list[RouteRule]:
    if not isinstance(rules, list):
        raise err(where, "expected a list of route rules")
    out = []
    for i, rule in enumerate(rules):
        here = f"{where}[{i}]"
        if not isinstance(rule, dict) or not isinstance(rule.get("plugin"), str):
            raise err(here, "each route rule needs a 'plugin'")
        raw_conditions = rule.get("conditions") or []
        if not isinstance(raw_conditions, list):
            raise err(f"{here}.conditions", "expected a list of {path, value} conditions")
        conditions = []
        for j, cond in enumerate(raw_conditions):
            if not isinstance(cond, dict) or "path" not in cond:
                raise err(f"{here}.conditions[{j}]", "a condition needs 'path' and 'value'")
            try:
                conditions.append(Condition(parse_path(cond["path"]), cond.get("value")))
            except PathError as exc:
                raise err(f"{here}.conditions[{j}].path", str(exc)) from None
        allow = _component_ids(rule.get("componentAllow"), f"{here}.componentAllow", err)
        deny = _component_ids(rule.get("componentDeny"), f"{here}.componentDeny", err)
        locality = rule.get("locality") or "prefer"
        if locality not in ("prefer", "strict"):
            raise err(f"{here}.locality", "expected 'prefer' or 'strict'")
        out.append(
            RouteRule(
                plugin=rule["plugin"],
                conditions=tuple(conditions),
                component_allow=allow,
                component_deny=deny or (),
                locality=locality,
                params={k: v for k, v in rule.items() if k not in RULE_KEYS},
            )
        )
    return out


def _component_ids(raw: Any, where: str, err: Any) -> tuple[str, ...] | None:
    """`componentAllow`/`componentDeny`: a list of component ids (a bare string is an error)."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
        raise err(where, "expected a list of component ids")
    return tuple(raw)


def _backoff_number(raw: dict[str, Any], key: str, default: float, err: Any) -> float:
    """One numeric backoff field; `null` means absent, anything but a number is an error."""
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise err(f"retry.backoff.{key}", "expected a non-negative number")
    return value


def _parse_retry(raw: Any, err: Any) -> RetryConfig:
    if raw is None:
        return RetryConfig()
    if not isinstance(raw, dict):
        raise err("retry", "expected an object")
    max_retries = raw.get("transportMaxRetries")
    if max_retries is None:
        max_retries = 3
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise err("retry.transportMaxRetries", "expected a non-negative integer")
    backoff_raw = raw.get("backoff") or {"type": "fibonacci"}
    kind = backoff_raw.get("type") if isinstance(backoff_raw, dict) else None
    if kind not in ("fibonacci", "exponential", "constant"):
        raise err("retry.backoff.type", "expected fibonacci, exponential or constant")
    assert isinstance(backoff_raw, dict)
    backoff = Backoff(
        kind=kind,
        min_delay_ms=int(_backoff_number(backoff_raw, "minDelayMs", 1000, err)),
        max_delay_ms=int(_backoff_number(backoff_raw, "maxDelayMs", 10000, err)),
        factor=float(_backoff_number(backoff_raw, "factor", 2.0, err)),
        delay_ms=int(_backoff_number(backoff_raw, "delayMs", 1000, err)),
    )
    return RetryConfig(transport_max_retries=max_retries, backoff=backoff)
