"""The config file (flows.md §9): parsing, errors that name the field, discovery, defaults, retry
settings, and how parsed routes resolve components (§9.3)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from stepflow_mesh.runtime.config import (
    Backoff,
    Condition,
    Config,
    RetryConfig,
    RouteRule,
    default_config,
    discover_config,
    find_config,
    load_config,
    parse_config,
)
from stepflow_mesh.runtime.engine import Runtime
from stepflow_mesh.runtime.errors import UserError
from stepflow_mesh.runtime.model import parse_flow
from stepflow_mesh.runtime.paths import Path as JsonPath
from stepflow_mesh.runtime.plugins import create_plugin
from stepflow_mesh.runtime.routing import Router, RoutingError

BUILTIN = {"builtin": {"type": "builtin"}}


def parse(doc: Any, base: Path | None = None) -> Config:
    return parse_config(doc, "cfg.yml", base or Path("/base"))


def config_error(doc: Any) -> UserError:
    with pytest.raises(UserError) as info:
        parse(doc)
    return info.value


# --- parsing -----------------------------------------------------------------------------------


def test_minimal_config() -> None:
    config = parse({"plugins": BUILTIN, "routes": {"/builtin": [{"plugin": "builtin"}]}})
    assert config.plugins == BUILTIN
    assert config.routes == {"/builtin": [RouteRule(plugin="builtin")]}
    assert config.working_dir == Path("/base")
    assert config.retry == RetryConfig()
    assert config.storage is None
    assert config.source == "cfg.yml"


def test_route_rules_are_parsed_in_order_with_all_fields() -> None:
    config = parse(
        {
            "plugins": {**BUILTIN, "py": {"type": "grpc", "queueName": "python"}},
            "routes": {
                "/python": [
                    {
                        "plugin": "py",
                        "conditions": [
                            {"path": "$.model.kind", "value": "fast"},
                            {"path": "tier", "value": None},
                        ],
                        "componentAllow": ["/udf", "/other"],
                        "componentDeny": ["/secret"],
                        "locality": "strict",
                        "queueName": "gpu",
                        "extra": {"k": [1]},
                    },
                    {"plugin": "builtin", "componentAllow": []},
                ],
                "/": [{"plugin": "builtin", "locality": None, "conditions": None}],
            },
        }
    )
    first, second = config.routes["/python"]
    assert first == RouteRule(
        plugin="py",
        conditions=(
            Condition(JsonPath(("model", "kind")), "fast"),
            Condition(JsonPath(("tier",)), None),
        ),
        component_allow=("/udf", "/other"),
        component_deny=("/secret",),
        locality="strict",
        params={"queueName": "gpu", "extra": {"k": [1]}},
    )
    # an empty allow list allows nothing; an absent one allows everything
    assert second.component_allow == ()
    assert config.routes["/"] == [RouteRule(plugin="builtin")]
    assert config.routes["/"][0].component_allow is None
    assert list(config.routes) == ["/python", "/"]


def test_storage_and_raw_document_are_kept() -> None:
    doc = {
        "plugins": BUILTIN,
        "routes": {},
        "storageConfig": {"type": "sqlite", "databaseUrl": "sqlite::memory:"},
        "someFutureKey": {"ignored": True},
    }
    config = parse(doc)
    assert config.storage == {"type": "sqlite", "databaseUrl": "sqlite::memory:"}
    assert config.raw is doc
    assert parse({**doc, "storageConfig": None}).storage is None


def test_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    base = {"plugins": BUILTIN, "routes": {}}
    assert parse({**base, "workingDirectory": "data/in"}).working_dir == tmp_path / "data" / "in"
    assert parse({**base, "workingDirectory": "/abs/dir"}).working_dir == Path("/abs/dir")
    assert parse({**base, "workingDirectory": None}).working_dir == Path("/base")


# --- errors name the field ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "where", "message"),
    [
        ({"routes": {}}, "cfg.yml: plugins", "'plugins' is required"),
        ({"plugins": [1], "routes": {}}, "cfg.yml: plugins", "'plugins' is required"),
        ({"plugins": {"p": {}}, "routes": {}}, "cfg.yml: plugins.p", "each plugin needs a 'type'"),
        ({"plugins": {"p": "builtin"}, "routes": {}}, "cfg.yml: plugins.p", "needs a 'type'"),
        ({"plugins": {"p": {"type": 3}}, "routes": {}}, "cfg.yml: plugins.p", "needs a 'type'"),
        ({"plugins": BUILTIN}, "cfg.yml: routes", "'routes' is required"),
        ({"plugins": BUILTIN, "routes": ["/"]}, "cfg.yml: routes", "'routes' is required"),
        (
            {"plugins": BUILTIN, "routes": {"/b": {"plugin": "builtin"}}},
            "cfg.yml: routes./b",
            "expected a list of route rules",
        ),
        (
            {"plugins": BUILTIN, "routes": {"/b": [{"plugin": "builtin"}, {"component": "x"}]}},
            "cfg.yml: routes./b[1]",
            "each route rule needs a 'plugin'",
        ),
        (
            {"plugins": BUILTIN, "routes": {"/b": [{"plugin": "builtin", "conditions": [{}]}]}},
            "cfg.yml: routes./b[0].conditions[0]",
            "a condition needs 'path' and 'value'",
        ),
        (
            {
                "plugins": BUILTIN,
                "routes": {"/b": [{"plugin": "builtin", "conditions": {"path": "x", "value": 1}}]},
            },
            "cfg.yml: routes./b[0].conditions",
            "expected a list of {path, value} conditions",
        ),
        (
            {
                "plugins": BUILTIN,
                "routes": {"/b": [{"plugin": "builtin", "conditions": [{"path": "$x"}]}]},
            },
            "cfg.yml: routes./b[0].conditions[0].path",
            "Invalid character 'x' in JSON path after $ or ']'. Expected '.' or '['",
        ),
        (
            {"plugins": BUILTIN, "routes": {"/b": [{"plugin": "builtin", "componentAllow": "/x"}]}},
            "cfg.yml: routes./b[0].componentAllow",
            "expected a list of component ids",
        ),
        (
            {"plugins": BUILTIN, "routes": {"/b": [{"plugin": "builtin", "componentDeny": [1]}]}},
            "cfg.yml: routes./b[0].componentDeny",
            "expected a list of component ids",
        ),
        (
            {"plugins": BUILTIN, "routes": {"/b": [{"plugin": "builtin", "locality": "near"}]}},
            "cfg.yml: routes./b[0].locality",
            "expected 'prefer' or 'strict'",
        ),
    ],
)
def test_errors_name_the_field(doc: Any, where: str, message: str) -> None:
    error = config_error(doc)
    assert error.where == where
    assert message in error.message
    assert str(error) == f"{where}: {error.message}"


@pytest.mark.parametrize("prefix", ["/a/b", "python", "/python/{*component}", "/{x}", "//"])
def test_invalid_route_prefixes(prefix: str) -> None:
    error = config_error({"plugins": BUILTIN, "routes": {prefix: [{"plugin": "builtin"}]}})
    assert error.where == f"cfg.yml: routes.{prefix}"
    assert error.message == (
        f"Invalid prefix '{prefix}': must be \"/\" or a single-segment prefix like "
        '"/python" (no nested segments)'
    )


def test_config_must_be_an_object() -> None:
    for doc in (None, [], "plugins: x"):
        error = config_error(doc)
        assert error.where == "cfg.yml"
        assert error.message == "a config file must be an object"


# --- retry -------------------------------------------------------------------------------------


def retry_of(retry: Any) -> RetryConfig:
    return parse({"plugins": BUILTIN, "routes": {}, "retry": retry}).retry


def test_retry_defaults() -> None:
    default = RetryConfig(3, Backoff("fibonacci", 1000, 10000, 2.0, 1000))
    assert retry_of(None) == default
    assert retry_of({}) == default
    assert retry_of({"transportMaxRetries": None, "backoff": None}) == default
    explicit_nulls = {"type": "fibonacci", "minDelayMs": None, "maxDelayMs": None}
    assert retry_of({"backoff": explicit_nulls}) == default


def test_retry_settings() -> None:
    retry = retry_of(
        {
            "transportMaxRetries": 0,
            "backoff": {"type": "exponential", "minDelayMs": 100, "maxDelayMs": 1000, "factor": 3},
        }
    )
    assert retry.transport_max_retries == 0
    assert retry.backoff == Backoff("exponential", 100, 1000, 3.0, 1000)
    assert retry_of({"backoff": {"type": "constant", "delayMs": 5}}).backoff.delay_ms == 5


@pytest.mark.parametrize(
    ("backoff", "delays"),
    [
        ({"type": "fibonacci"}, [1, 1, 2, 3, 5, 8, 10, 10]),
        (
            {"type": "fibonacci", "minDelayMs": 10, "maxDelayMs": 60},
            [0.01, 0.01, 0.02, 0.03, 0.05, 0.06],
        ),
        (
            {"type": "exponential", "minDelayMs": 100, "maxDelayMs": 1000, "factor": 3},
            [0.1, 0.3, 0.9, 1.0, 1.0],
        ),
        ({"type": "exponential"}, [1, 2, 4, 8, 10]),
        ({"type": "constant", "delayMs": 250}, [0.25, 0.25, 0.25]),
        ({"type": "constant"}, [1, 1]),
    ],
)
def test_backoff_delays(backoff: dict[str, Any], delays: list[float]) -> None:
    parsed = retry_of({"backoff": backoff}).backoff
    assert [parsed.delay_seconds(k) for k in range(1, len(delays) + 1)] == pytest.approx(delays)


@pytest.mark.parametrize(
    ("retry", "where"),
    [
        ([], "cfg.yml: retry"),
        ({"transportMaxRetries": -1}, "cfg.yml: retry.transportMaxRetries"),
        ({"transportMaxRetries": True}, "cfg.yml: retry.transportMaxRetries"),
        ({"transportMaxRetries": "3"}, "cfg.yml: retry.transportMaxRetries"),
        ({"transportMaxRetries": 1.5}, "cfg.yml: retry.transportMaxRetries"),
        ({"backoff": {"type": "linear"}}, "cfg.yml: retry.backoff.type"),
        ({"backoff": {"minDelayMs": 5}}, "cfg.yml: retry.backoff.type"),
        ({"backoff": "fibonacci"}, "cfg.yml: retry.backoff.type"),
        ({"backoff": {"type": "constant", "delayMs": "1s"}}, "cfg.yml: retry.backoff.delayMs"),
        ({"backoff": {"type": "fibonacci", "minDelayMs": -5}}, "cfg.yml: retry.backoff.minDelayMs"),
        (
            {"backoff": {"type": "fibonacci", "maxDelayMs": True}},
            "cfg.yml: retry.backoff.maxDelayMs",
        ),
        ({"backoff": {"type": "exponential", "factor": [2]}}, "cfg.yml: retry.backoff.factor"),
        (
            {"backoff": {"type": "exponential", "maxDelayMs": float("inf")}},
            "cfg.yml: retry.backoff.maxDelayMs",
        ),
        (
            {"backoff": {"type": "exponential", "factor": float("nan")}},
            "cfg.yml: retry.backoff.factor",
        ),
    ],
)
def test_retry_errors(retry: Any, where: str) -> None:
    error = config_error({"plugins": BUILTIN, "routes": {}, "retry": retry})
    assert error.where == where


# --- files, discovery and the default config ---------------------------------------------------

CONFIG_YAML = """\
plugins:
  builtin:
    type: builtin
  mock:
    type: mock
    components:
      /x:
        behaviors:
          on: {outcome: success, result: 1}
routes:
  /builtin:
  - plugin: builtin
  /m:
  - plugin: mock
    conditions:
    - path: mode
      value: on
"""


def test_load_yaml_config_file(tmp_path: Path) -> None:
    path = tmp_path / "stepflow-config.yml"
    path.write_text(CONFIG_YAML)
    config = load_config(path)
    assert config.source == str(path)
    assert config.working_dir == tmp_path.resolve()
    # YAML 1.2: `on` is the string "on", not true
    [rule] = config.routes["/m"]
    assert rule.conditions == (Condition(JsonPath(("mode",)), "on"),)
    assert list(config.plugins["mock"]["components"]["/x"]["behaviors"]) == ["on"]


def test_load_json_config_file(tmp_path: Path) -> None:
    path = tmp_path / "conf.json"
    path.write_text(json.dumps({"plugins": BUILTIN, "routes": {"/": [{"plugin": "builtin"}]}}))
    assert load_config(path).routes == {"/": [RouteRule("builtin")]}


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        load_config(tmp_path / "conf.toml")
    assert str(info.value) == f"Unrecognized file extension: {tmp_path / 'conf.toml'}"
    with pytest.raises(UserError) as info:
        load_config(tmp_path / "absent.yml")
    assert str(info.value) == f"Missing file: {tmp_path / 'absent.yml'}"
    dup = tmp_path / "dup.yml"
    dup.write_text("plugins: {}\nroutes: {}\nplugins: {}\n")
    with pytest.raises(UserError, match="duplicate key 'plugins'"):
        load_config(dup)
    bad = tmp_path / "bad.yml"
    bad.write_text("plugins:\n  b: {type: builtin}\nroutes:\n  /b/c:\n  - plugin: b\n")
    with pytest.raises(UserError) as info:
        load_config(bad)
    assert info.value.where == f"{bad}: routes./b/c"


def test_default_config() -> None:
    config = default_config(Path("/somewhere"))
    assert config.plugins == {"builtin": {"type": "builtin"}}
    assert config.routes == {"/builtin": [RouteRule(plugin="builtin")]}
    assert config.working_dir == Path("/somewhere")
    assert config.retry == RetryConfig()
    assert config.source is None


def _write_config(directory: Path, name: str = "stepflow-config.yml", plugin: str = "p") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"plugins:\n  {plugin}:\n    type: builtin\nroutes: {{}}\n")
    return path


def test_discovery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd, flow_dir, other = tmp_path / "cwd", tmp_path / "flows", tmp_path / "other"
    cwd.mkdir()
    flow_dir.mkdir()
    monkeypatch.chdir(cwd)

    # nothing anywhere: the default config, working in the flow's directory
    config = discover_config(None, flow_dir)
    assert config.source is None and config.routes == {"/builtin": [RouteRule("builtin")]}
    assert config.working_dir == flow_dir.resolve()
    assert discover_config(None, None).working_dir == cwd.resolve()

    # the CWD is the fallback ...
    _write_config(cwd, "stepflow_config.yaml", plugin="from_cwd")
    assert list(discover_config(None, flow_dir).plugins) == ["from_cwd"]
    # ... the flow's directory comes first ...
    _write_config(flow_dir, "stepflow-config.yaml", plugin="from_flow_dir")
    config = discover_config(None, flow_dir)
    assert list(config.plugins) == ["from_flow_dir"]
    assert config.working_dir == flow_dir.resolve()
    # ... and --config wins
    explicit = _write_config(other, "mine.yml", plugin="explicit")
    assert list(discover_config(explicit, flow_dir).plugins) == ["explicit"]


def test_two_config_files_in_one_directory(tmp_path: Path) -> None:
    _write_config(tmp_path, "stepflow-config.yml")
    assert find_config(tmp_path) == tmp_path / "stepflow-config.yml"
    _write_config(tmp_path, "stepflow_config.yml")
    with pytest.raises(UserError) as info:
        find_config(tmp_path)
    assert info.value.message == f"Multiple stepflow config files found in directory: {tmp_path}"
    with pytest.raises(UserError, match="Multiple stepflow config files"):
        discover_config(None, tmp_path)


# --- plugins -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        ({"type": "nats"}, "plugin type 'nats' is not supported"),
        ({"type": "carrier-pigeon"}, "unknown plugin type 'carrier-pigeon' (known: "),
    ],
)
async def test_plugin_type_errors(plugin: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError) as info:
        create_plugin("q", plugin, Path("."), "cfg.yml")
    assert info.value.where == "cfg.yml: plugins.q.type"
    assert info.value.message.startswith(message)
    config = parse({"plugins": {"q": plugin}, "routes": {}})
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        await Runtime(config).start()


def test_builtin_types_survive_an_earlier_registration() -> None:
    # Regression: a plugin module registering its type before the first create_plugin() call
    # used to hide the builtin and mock types ("unknown plugin type 'builtin'").
    script = textwrap.dedent(
        """
        from pathlib import Path
        from stepflow_mesh.runtime.plugins import create_plugin, register_plugin_type
        from stepflow_mesh.runtime.plugins.base import Plugin

        class Custom(Plugin):
            async def components(self): return []
            async def execute(self, call): raise NotImplementedError

        register_plugin_type("custom", Custom)
        for kind in ("builtin", "mock", "custom"):
            print(type(create_plugin("p", {"type": kind}, Path("."), "cfg")).__name__)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["BuiltinPlugin", "MockPlugin", "Custom"]


# --- routing with parsed rules -----------------------------------------------------------------


def _mock(*components: str) -> dict[str, Any]:
    return {"type": "mock", "components": {c: {"behaviors": {}} for c in components}}


ROUTED = {
    "plugins": {
        "builtin": {"type": "builtin"},
        "fast": _mock("/x", "/y"),
        "slow": _mock("/x", "/y", "/udf/{name}", "/files/{*rest}"),
        "fallback": _mock("/m/y", "/deny/x", "/noop"),
    },
    "routes": {
        "/m": [
            {"plugin": "fast", "conditions": [{"path": "$.mode", "value": "fast"}], "queue": "q1"},
            {"plugin": "slow", "componentDeny": ["/y"]},
        ],
        "/deny": [{"plugin": "fast", "componentAllow": ["/y"]}],
        "/p": [{"plugin": "slow"}],
        "/builtin": [{"plugin": "builtin", "componentDeny": ["/sleep"]}],
        "/": [{"plugin": "fallback"}],
    },
}


@pytest.fixture
async def router() -> AsyncIterator[Router]:
    async with Runtime(parse(ROUTED)) as runtime:
        yield runtime.router


@pytest.mark.parametrize(
    ("path", "step_input", "plugin", "component"),
    [
        ("/m/x", {"mode": "fast"}, "fast", "/x"),
        ("/m/x", {"mode": "slow"}, "slow", "/x"),
        ("/m/y", {"mode": "fast"}, "fast", "/y"),
        # the second rule denies /y, so the catch-all gets the whole path
        ("/m/y", {"mode": "slow"}, "fallback", "/m/y"),
        ("/m/x", {"mode": 1}, "slow", "/x"),
        ("/deny/y", None, "fast", "/y"),
        ("/deny/x", None, "fallback", "/deny/x"),  # not allowed by /deny: falls through to "/"
        ("/builtin/noop", None, "builtin", "/noop"),
        ("/builtin/sleep", None, None, None),
        ("/noop", None, "fallback", "/noop"),
    ],
)
def test_route_resolution(
    router: Router, path: str, step_input: Any, plugin: str | None, component: str | None
) -> None:
    if plugin is None:
        with pytest.raises(RoutingError) as info:
            router.resolve(path, step_input)
        assert str(info.value) == f"No matching component for path: {path} (prefix: /builtin)"
        return
    route = router.resolve(path, step_input)
    assert (route.plugin.name, route.component) == (plugin, component)


def test_condition_values_use_strict_json_equality(router: Router) -> None:
    assert router.resolve("/m/x", {"mode": "fast"}).plugin.name == "fast"
    for other in (["fast"], {"v": "fast"}, "FAST", None):
        assert router.resolve("/m/x", {"mode": other}).plugin.name == "slow"


def test_condition_on_missing_path_is_a_routing_error(router: Router) -> None:
    with pytest.raises(RoutingError, match="Failed to extract value from input path"):
        router.resolve("/m/x", {"other": 1})
    # a static resolution (no input yet) skips conditions
    assert router.resolve("/m/x", None, static=True).plugin.name == "fast"


def test_route_parameters_and_path_captures(router: Router) -> None:
    assert router.resolve("/m/x", {"mode": "fast"}).rule.params == {"queue": "q1"}
    route = router.resolve("/p/udf/summarise", None)
    assert route.component == "/udf/summarise" and route.path_params == {"name": "summarise"}
    route = router.resolve("/p/files/a/b/c.txt", None)
    assert route.path_params == {"rest": "a/b/c.txt"}
    with pytest.raises(RoutingError):
        router.resolve("/p/udf/a/b", None)


def test_no_match_messages() -> None:
    config = parse(
        {
            "plugins": {"fast": _mock("/x")},
            "routes": {"/m": [{"plugin": "fast", "componentAllow": ["/y"]}]},
        }
    )
    router = Router(config.routes, {}, {})
    with pytest.raises(RoutingError, match=r"^No matching prefix for path: /other/x$"):
        router.resolve("/other/x", None)
    with pytest.raises(
        RoutingError, match=r"^No matching component for path: /m/x \(prefix: /m\)$"
    ):
        router.resolve("/m/x", None)


def test_split() -> None:
    assert Router.split("/builtin/eval") == ("/builtin", "/eval")
    assert Router.split("/python") == ("/python", "/")
    assert Router.split("/a/b/c") == ("/a", "/b/c")


async def test_default_config_runs_builtins_only_under_builtin(tmp_path: Path) -> None:
    def flow(component: str) -> Any:
        steps = [{"id": "s", "component": component, "input": {"$input": "$"}}]
        return parse_flow({"steps": steps, "output": {"$step": "s"}})

    async with Runtime(default_config(tmp_path)) as runtime:
        assert list(runtime.plugins) == ["builtin"]
        ok = await runtime.run(flow("/builtin/noop"), [{"hello": "world"}])
        bare = await runtime.run(flow("/noop"), [None])
    assert ok.results[0].to_json() == {"outcome": "success", "result": {"hello": "world"}}
    error = bare.results[0].to_json()["error"]
    assert (error["code"], error["message"]) == ("ORCHESTRATOR_ERROR", "error routing component")
    assert error["data"]["stack"][0]["attachments"] == ["No matching prefix for path: /noop"]
