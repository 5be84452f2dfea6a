"""The builtin components (flows.md §8) and the blob stores they use (§8.1).

Most tests run a real flow through the in-process `Runtime`, so routing, expression resolution and
the builtin plugin's error wrapping are exercised too; a few call the `Builtin` objects directly.
The `openai` builtin talks to a fake OpenAI server on 127.0.0.1 (never the internet).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from stepflow_mesh.runtime.blobs import (
    BLOB_TYPES,
    Blob,
    FileBlobStore,
    MemoryBlobStore,
    is_blob_id,
)
from stepflow_mesh.runtime.builtins import BUILTINS, BuiltinError
from stepflow_mesh.runtime.config import Config, default_config, parse_config
from stepflow_mesh.runtime.engine import RunOutcome, Runtime, blob_store_for
from stepflow_mesh.runtime.errors import FlowResult, UserError
from stepflow_mesh.runtime.executor import RunExecution, RunObserver, TaskStart
from stepflow_mesh.runtime.model import parse_flow
from stepflow_mesh.runtime.plugins import PLUGIN_TYPES
from stepflow_mesh.runtime.plugins.base import ComponentInfo, Plugin, StepCall

HELLO_ID = "5aa762ae383fbb727af3c7a36d4940a5b8c40a989452d2304fc958ff3f354e7a"
NESTED_VALUE = {
    "message": "Hello, blobs!",
    "number": 42,
    "nested": {"array": [1, 2, 3], "boolean": True},
}
NESTED_ID = "868591347a854ba1d0f4875b2dd44e1e8335052af03725a9819f89e0142318b0"
UNKNOWN_ID = "ab" * 32


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# -- helpers -----------------------------------------------------------------------------------


def step_flow(component: str, step_input: Any, **step_extra: Any) -> dict[str, Any]:
    """A flow with one builtin step `s` whose result is the flow output."""
    step = {"id": "s", "component": f"/builtin/{component}", "input": step_input, **step_extra}
    return {"name": "t", "description": "d", "steps": [step], "output": {"$step": "s"}}


def builtin_config(tmp_path: Path, **extra: Any) -> Config:
    """The default routes (`/builtin/<name>`), with extra top-level config keys."""
    doc = {
        "plugins": {"builtin": {"type": "builtin"}},
        "routes": {"/builtin": [{"plugin": "builtin"}]},
        **extra,
    }
    return parse_config(doc, "test-config.yml", tmp_path)


async def run_flow(
    flow_doc: dict[str, Any],
    inputs: Sequence[Any] = (None,),
    *,
    config: Config,
    runtime: Runtime | None = None,
    observers: Sequence[RunObserver] = (),
) -> RunOutcome:
    flow = parse_flow(flow_doc, "flow.yaml")
    if runtime is not None:
        return await runtime.run(flow, list(inputs), extra_observers=observers)
    async with Runtime(config) as rt:
        return await rt.run(flow, list(inputs), extra_observers=observers)


async def run_one(flow_doc: dict[str, Any], flow_input: Any = None, **kwargs: Any) -> FlowResult:
    outcome = await run_flow(flow_doc, [flow_input], **kwargs)
    [result] = outcome.results
    return result


def ok_value(result: FlowResult) -> Any:
    assert result.error is None, f"expected success, got {result.error}"
    return result.value


def failure(result: FlowResult) -> tuple[str, str]:
    """(code, message) of a builtin failure; builtin failures never carry `data.stack`."""
    assert result.error is not None, f"expected a failure, got {result.value!r}"
    assert not result.error.has_data, result.error.data
    return result.error.code, result.error.message


class AttemptRecorder(RunObserver):
    """Records every dispatch (attempt) of every step, to check retry behaviour."""

    def __init__(self) -> None:
        self.starts: list[TaskStart] = []

    async def tasks_started(self, run: RunExecution, tasks: Sequence[TaskStart]) -> None:
        self.starts.extend(tasks)


async def _no_subflows(flow: Any, inputs: list[Any], limit: int | None) -> list[FlowResult]:
    raise AssertionError("this builtin must not start sub-runs")


def make_call(
    component: str, value: Any, tmp_path: Path, blobs: MemoryBlobStore | None = None
) -> StepCall:
    """A StepCall for invoking a `Builtin.run` directly."""
    return StepCall(
        run_id="run-1",
        root_run_id="run-1",
        flow_id=None,
        step_id="s",
        item_index=0,
        attempt=1,
        task_id="task-1",
        component=f"/{component}",
        input=value,
        blobs=blobs or MemoryBlobStore(),
        working_dir=tmp_path,
        run_subflow=_no_subflows,
    )


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return default_config(tmp_path)


# -- the builtin table -------------------------------------------------------------------------


def test_builtins_are_listed_in_list_components_order() -> None:
    assert list(BUILTINS) == [
        "create_messages",
        "eval",
        "get_blob",
        "iterate",
        "load_file",
        "map",
        "noop",
        "openai",
        "put_blob",
        "sleep",
    ]
    for name, builtin in BUILTINS.items():
        assert builtin.name == name
        assert builtin.description
        assert isinstance(builtin.input_schema, dict)
        assert isinstance(builtin.output_schema, dict)


@pytest.mark.parametrize(
    ("name", "required"),
    [
        ("create_messages", ["user_prompt"]),
        ("eval", ["flow_id", "input"]),
        ("get_blob", ["blob_id"]),
        ("iterate", ["flow", "initial_input"]),
        ("load_file", ["path"]),
        ("map", ["workflow", "items"]),
        ("openai", ["messages"]),
        ("put_blob", ["data", "blob_type"]),
        ("sleep", ["duration_ms"]),
    ],
)
def test_input_schemas_declare_required_fields(name: str, required: list[str]) -> None:
    schema = BUILTINS[name].input_schema
    assert schema["type"] == "object"
    assert schema["required"] == required
    assert set(required) <= set(schema["properties"])


async def test_builtin_components_are_routed_under_builtin_prefix(config: Config) -> None:
    async with Runtime(config) as rt:
        paths = [c.path for c in rt.components["builtin"]]
    assert paths == [f"/{name}" for name in BUILTINS]


@pytest.mark.parametrize("name", [n for n in BUILTINS if n != "noop"])
async def test_non_object_input_is_invalid_input(name: str, tmp_path: Path) -> None:
    with pytest.raises(BuiltinError) as info:
        await BUILTINS[name].run(make_call(name, [1, 2], tmp_path))
    assert info.value.code == "INVALID_INPUT"
    assert "object" in info.value.message or "missing required field" in info.value.message


# -- noop ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [{"a": [1, 2.5, None, True], "b": {"c": "d"}}, [1, "x"], "text", 0, None]
)
async def test_noop_returns_its_input(value: Any, config: Config) -> None:
    result = await run_one(step_flow("noop", {"$input": "$"}), value, config=config)
    assert ok_value(result) == value


async def test_noop_without_input_returns_null(config: Config) -> None:
    flow = {"steps": [{"id": "s", "component": "/builtin/noop"}], "output": {"$step": "s"}}
    assert ok_value(await run_one(flow, {"ignored": 1}, config=config)) is None


async def test_noop_preserves_key_order(config: Config) -> None:
    value = {"z": 1, "a": 2, "m": {"y": 1, "b": 2}}
    out = ok_value(await run_one(step_flow("noop", {"$input": "$"}), value, config=config))
    assert json.dumps(out) == json.dumps(value)


# -- sleep -----------------------------------------------------------------------------------


async def test_sleep_echoes_duration_and_passthrough(config: Config) -> None:
    flow = step_flow("sleep", {"duration_ms": 0, "passthrough": {"$input": "$"}})
    out = ok_value(await run_one(flow, {"keep": [1, 2]}, config=config))
    assert out == {"duration_ms": 0, "passthrough": {"keep": [1, 2]}}


async def test_sleep_omits_absent_passthrough_but_keeps_null(config: Config) -> None:
    out = ok_value(await run_one(step_flow("sleep", {"duration_ms": 1}), config=config))
    assert out == {"duration_ms": 1}
    out = ok_value(
        await run_one(step_flow("sleep", {"duration_ms": 1, "passthrough": None}), config=config)
    )
    assert out == {"duration_ms": 1, "passthrough": None}


async def test_sleep_actually_waits(config: Config) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    out = ok_value(await run_one(step_flow("sleep", {"duration_ms": 60}), config=config))
    elapsed = loop.time() - started
    assert out == {"duration_ms": 60}
    # asyncio may wake up to one clock tick early; never much earlier.
    assert elapsed >= 0.05


@pytest.mark.parametrize(
    ("step_input", "message"),
    [
        ({}, "sleep: missing required field 'duration_ms'"),
        ({"duration_ms": None}, "sleep: missing required field 'duration_ms'"),
        ({"duration_ms": "10"}, "sleep: field 'duration_ms' must be integer, got string"),
        ({"duration_ms": 1.5}, "sleep: field 'duration_ms' must be integer, got number"),
        ({"duration_ms": True}, "sleep: field 'duration_ms' must be integer, got boolean"),
        ({"duration_ms": -1}, "sleep: field 'duration_ms' must not be negative"),
    ],
)
async def test_sleep_rejects_bad_input(
    step_input: dict[str, Any], message: str, config: Config
) -> None:
    result = await run_one(step_flow("sleep", step_input), config=config)
    assert failure(result) == ("INVALID_INPUT", message)


# -- create_messages -------------------------------------------------------------------------


async def test_create_messages_user_only(config: Config) -> None:
    flow = step_flow("create_messages", {"user_prompt": {"$input": "q"}})
    out = ok_value(await run_one(flow, {"q": "What is 2+2?"}, config=config))
    assert out == {"messages": [{"role": "user", "content": "What is 2+2?"}]}
    assert list(out["messages"][0]) == ["role", "content"]


async def test_create_messages_system_first(config: Config) -> None:
    flow = step_flow(
        "create_messages", {"user_prompt": "hi", "system_instructions": "Be brief.", "extra": 1}
    )
    out = ok_value(await run_one(flow, config=config))
    assert out == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
        ]
    }


async def test_create_messages_null_system_instructions_is_absent(config: Config) -> None:
    flow = step_flow("create_messages", {"user_prompt": "hi", "system_instructions": None})
    out = ok_value(await run_one(flow, config=config))
    assert out == {"messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("step_input", "message"),
    [
        ({}, "create_messages: missing required field 'user_prompt'"),
        ({"user_prompt": 5}, "create_messages: field 'user_prompt' must be string, got integer"),
        (
            {"user_prompt": "x", "system_instructions": ["a"]},
            "create_messages: field 'system_instructions' must be string, got array",
        ),
        ("just text", "create_messages: input must be an object, got string"),
    ],
)
async def test_create_messages_rejects_bad_input(
    step_input: Any, message: str, config: Config
) -> None:
    result = await run_one(step_flow("create_messages", step_input), config=config)
    assert failure(result) == ("INVALID_INPUT", message)


# -- put_blob / get_blob ---------------------------------------------------------------------


@pytest.mark.parametrize("blob_type", ["data", "flow", "binary"])
async def test_put_blob_id_is_sha256_of_compact_json(blob_type: str, config: Config) -> None:
    flow = step_flow("put_blob", {"data": {"$input": "$"}, "blob_type": blob_type})
    assert ok_value(await run_one(flow, "hello", config=config)) == {"blob_id": HELLO_ID}
    assert ok_value(await run_one(flow, NESTED_VALUE, config=config)) == {"blob_id": NESTED_ID}


@pytest.mark.parametrize(
    ("value", "compact"),
    [
        ({"b": 1, "a": [1, 2]}, '{"b":1,"a":[1,2]}'),  # the value's own key order
        ({"t": "é/\n"}, '{"t":"é/\\n"}'),  # UTF-8 unescaped, "/" not escaped
        (1e20, "1e20"),  # ryu float layout, not Python's repr
        (100.0, "100.0"),
        (1.5e-7, "1.5e-7"),
        (None, "null"),
    ],
)
async def test_put_blob_hashes_canonical_text(value: Any, compact: str, config: Config) -> None:
    flow = step_flow("put_blob", {"data": {"$input": "$"}, "blob_type": "data"})
    assert ok_value(await run_one(flow, value, config=config)) == {"blob_id": sha256_hex(compact)}


async def test_put_then_get_blob_round_trip(config: Config) -> None:
    flow = {
        "steps": [
            {
                "id": "put",
                "component": "/builtin/put_blob",
                "input": {"data": {"$input": "$"}, "blob_type": "data"},
            },
            {
                "id": "get",
                "component": "/builtin/get_blob",
                "input": {"blob_id": {"$step": "put", "path": "blob_id"}},
            },
        ],
        "output": {"id": {"$step": "put", "path": "blob_id"}, "got": {"$step": "get"}},
    }
    out = ok_value(await run_one(flow, NESTED_VALUE, config=config))
    assert out == {"id": NESTED_ID, "got": {"data": NESTED_VALUE}}
    assert list(out["got"]["data"]) == ["message", "number", "nested"]


async def test_blobs_persist_across_runs_of_one_runtime(config: Config) -> None:
    put = step_flow("put_blob", {"data": {"k": [1, 2]}, "blob_type": "data"})
    get = step_flow("get_blob", {"blob_id": {"$input": "id"}})
    async with Runtime(config) as rt:
        blob_id = ok_value(await run_one(put, config=config, runtime=rt))["blob_id"]
        got = await run_one(get, {"id": blob_id}, config=config, runtime=rt)
        assert (await rt.blobs.get(blob_id)) == Blob(b'{"k":[1,2]}', "data")
    assert ok_value(got) == {"data": {"k": [1, 2]}}


async def test_get_blob_unknown_id_fails_without_retries(config: Config) -> None:
    recorder = AttemptRecorder()
    outcome = await run_flow(
        step_flow("get_blob", {"blob_id": UNKNOWN_ID}), config=config, observers=[recorder]
    )
    [result] = outcome.results
    assert failure(result) == ("COMPONENT_FAILED", f"get_blob: Blob not found: {UNKNOWN_ID}")
    assert outcome.status == "failed"
    # A builtin's own failure is a component result: no transport retries, one attempt.
    assert [(s.step_id, s.attempt) for s in recorder.starts] == [("s", 1)]


@pytest.mark.parametrize(
    ("step_input", "message"),
    [
        ({}, "get_blob: missing required field 'blob_id'"),
        ({"blob_id": 7}, "get_blob: field 'blob_id' must be string, got integer"),
        (
            {"blob_id": "abc"},
            "get_blob: field 'blob_id' must be 64 lowercase hex characters: abc",
        ),
        (
            {"blob_id": "AB" * 32},
            f"get_blob: field 'blob_id' must be 64 lowercase hex characters: {'AB' * 32}",
        ),
    ],
)
async def test_get_blob_rejects_bad_ids(
    step_input: dict[str, Any], message: str, config: Config
) -> None:
    result = await run_one(step_flow("get_blob", step_input), config=config)
    assert failure(result) == ("INVALID_INPUT", message)


@pytest.mark.parametrize(
    ("step_input", "message"),
    [
        ({"blob_type": "data"}, "put_blob: missing required field 'data'"),
        ({"data": 1}, "put_blob: missing required field 'blob_type'"),
        (
            {"data": 1, "blob_type": "json"},
            "put_blob: field 'blob_type' must be one of data, flow, binary",
        ),
        ({"data": 1, "blob_type": 3}, "put_blob: field 'blob_type' must be string, got integer"),
    ],
)
async def test_put_blob_rejects_bad_input(
    step_input: dict[str, Any], message: str, config: Config
) -> None:
    result = await run_one(step_flow("put_blob", step_input), config=config)
    assert failure(result) == ("INVALID_INPUT", message)


async def test_put_blob_does_not_check_flow_blobs(config: Config) -> None:
    flow = step_flow("put_blob", {"data": {"not": "a flow"}, "blob_type": "flow"})
    out = ok_value(await run_one(flow, config=config))
    assert out == {"blob_id": sha256_hex('{"not":"a flow"}')}


async def test_get_blob_of_non_json_blob_fails_cleanly(tmp_path: Path) -> None:
    store = MemoryBlobStore()
    blob_id = await store.put(b"\x00\xffnot json", "binary")
    call = make_call("get_blob", {"blob_id": blob_id}, tmp_path, store)
    with pytest.raises(BuiltinError) as info:
        await BUILTINS["get_blob"].run(call)
    assert (info.value.code, info.value.message) == (
        "COMPONENT_FAILED",
        f"Blob {blob_id} does not hold JSON",
    )


async def test_filesystem_storage_config_writes_blob_files(tmp_path: Path) -> None:
    config = builtin_config(tmp_path, storageConfig={"type": "filesystem", "directory": "blobs"})
    flow = step_flow("put_blob", {"data": "hello", "blob_type": "data"})
    assert ok_value(await run_one(flow, config=config)) == {"blob_id": HELLO_ID}
    path = tmp_path / "blobs" / HELLO_ID[:2] / f"{HELLO_ID}.data"
    assert path.read_bytes() == b'"hello"'
    # A second runtime over the same directory sees the blob.
    get = step_flow("get_blob", {"blob_id": HELLO_ID})
    assert ok_value(await run_one(get, config=config)) == {"data": "hello"}


# -- blob stores -----------------------------------------------------------------------------


def test_is_blob_id() -> None:
    assert is_blob_id(HELLO_ID)
    assert not is_blob_id(HELLO_ID.upper())
    assert not is_blob_id(HELLO_ID[:-1])
    assert not is_blob_id(HELLO_ID + "0")
    assert not is_blob_id(HELLO_ID + "\n")
    assert not is_blob_id(None)
    assert BLOB_TYPES == ("data", "flow", "binary")


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> MemoryBlobStore | FileBlobStore:
    if request.param == "memory":
        return MemoryBlobStore()
    return FileBlobStore(tmp_path / "store")


async def test_store_content_addressing(store: MemoryBlobStore | FileBlobStore) -> None:
    assert await store.put_json("hello") == HELLO_ID
    assert await store.put_json(NESTED_VALUE) == NESTED_ID
    assert await store.put(b"raw bytes", "binary") == sha256_hex("raw bytes")
    blob = await store.get(NESTED_ID)
    assert blob is not None
    assert blob.data == json.dumps(NESTED_VALUE, separators=(",", ":")).encode()
    assert blob.blob_type == "data"
    assert blob.json() == NESTED_VALUE
    raw = await store.get(sha256_hex("raw bytes"))
    assert raw == Blob(b"raw bytes", "binary")


async def test_store_put_is_idempotent(store: MemoryBlobStore | FileBlobStore) -> None:
    first = await store.put_json({"a": 1}, "flow")
    second = await store.put_json({"a": 1}, "flow")
    assert first == second == sha256_hex('{"a":1}')
    assert await store.get(first) == Blob(b'{"a":1}', "flow")


async def test_store_unknown_ids(store: MemoryBlobStore | FileBlobStore) -> None:
    assert await store.get(UNKNOWN_ID) is None
    assert await store.get("not-an-id") is None


async def test_file_store_layout_and_persistence(tmp_path: Path) -> None:
    directory = tmp_path / "blobs"
    blob_id = await FileBlobStore(directory).put_json({"x": [1, 2]}, "flow")
    path = directory / blob_id[:2] / f"{blob_id}.flow"
    assert path.read_bytes() == b'{"x":[1,2]}'
    # No temporary files are left behind.
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    # A new store instance over the same directory reads it back.
    assert await FileBlobStore(directory).get(blob_id) == Blob(b'{"x":[1,2]}', "flow")


async def test_file_store_rejects_path_like_ids(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    await store.put_json("hello")
    assert await store.get("../" + HELLO_ID[3:]) is None
    assert await store.get(HELLO_ID[:2] + "/" + HELLO_ID) is None


def test_blob_store_for_config(tmp_path: Path) -> None:
    assert isinstance(blob_store_for(default_config(tmp_path)), MemoryBlobStore)
    memory = builtin_config(tmp_path, storageConfig={"type": "inMemory"})
    assert isinstance(blob_store_for(memory), MemoryBlobStore)
    simple = builtin_config(tmp_path, storageConfig={"type": "filesystem", "directory": "b"})
    store = blob_store_for(simple)
    assert isinstance(store, FileBlobStore)
    assert store.directory == (tmp_path / "b").resolve()
    expanded = builtin_config(
        tmp_path,
        storageConfig={"metadata": {"type": "inMemory"}, "blobs": {"type": "filesystem"}},
    )
    store = blob_store_for(expanded)
    assert isinstance(store, FileBlobStore)
    assert store.directory == (tmp_path / ".stepflow" / "blobs").resolve()


# -- load_file -------------------------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    (d / "sub").mkdir(parents=True)
    (d / "data.json").write_text('{"b": 1, "a": [true, null]}', encoding="utf-8")
    (d / "sub" / "conf.yaml").write_text(
        "answer: yes\nflag: true\nwhen: 2024-01-01\nnum: 0x1F\nlist: [1, 1.5]\n", encoding="utf-8"
    )
    (d / "notes.txt").write_text("line 1\nline 2 — ünïcode\n", encoding="utf-8")
    (d / "data.yml").write_text("- a\n- b\n", encoding="utf-8")
    return d


def load_flow_doc(path: Any, fmt: Any = None) -> dict[str, Any]:
    step_input: dict[str, Any] = {"path": path}
    if fmt is not None:
        step_input["format"] = fmt
    return step_flow("load_file", step_input)


async def test_load_file_json_relative_to_working_directory(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The config's working directory decides, not the process CWD.
    monkeypatch.chdir(tmp_path)
    config = builtin_config(tmp_path, workingDirectory=str(data_dir))
    out = ok_value(await run_one(load_flow_doc("data.json"), config=config))
    assert out["data"] == {"b": 1, "a": [True, None]}
    assert list(out["data"]) == ["b", "a"]
    assert out["metadata"] == {
        "resolved_path": str(data_dir / "data.json"),
        "size_bytes": len('{"b": 1, "a": [true, null]}'),
        "format": "json",
    }


async def test_load_file_yaml_uses_yaml_12_rules(data_dir: Path) -> None:
    config = default_config(data_dir)
    out = ok_value(await run_one(load_flow_doc("sub/conf.yaml"), config=config))
    assert out["data"] == {
        "answer": "yes",
        "flag": True,
        "when": "2024-01-01",
        "num": 31,
        "list": [1, 1.5],
    }
    assert out["metadata"]["format"] == "yaml"
    assert out["metadata"]["resolved_path"] == str(data_dir / "sub" / "conf.yaml")
    yml = ok_value(await run_one(load_flow_doc("data.yml"), config=config))
    assert yml["data"] == ["a", "b"]
    assert yml["metadata"]["format"] == "yaml"


async def test_load_file_text(data_dir: Path) -> None:
    config = default_config(data_dir)
    out = ok_value(await run_one(load_flow_doc("notes.txt"), config=config))
    text = "line 1\nline 2 — ünïcode\n"
    assert out["data"] == text
    assert out["metadata"] == {
        "resolved_path": str(data_dir / "notes.txt"),
        "size_bytes": len(text.encode("utf-8")),
        "format": "text",
    }


async def test_load_file_explicit_format_overrides_extension(data_dir: Path) -> None:
    config = default_config(data_dir)
    as_text = ok_value(await run_one(load_flow_doc("data.json", "text"), config=config))
    assert as_text["data"] == '{"b": 1, "a": [true, null]}'
    assert as_text["metadata"]["format"] == "text"
    # JSON is YAML too.
    as_yaml = ok_value(await run_one(load_flow_doc("data.json", "yaml"), config=config))
    assert as_yaml["data"] == {"b": 1, "a": [True, None]}
    (data_dir / "payload.dat").write_text("[1, 2]", encoding="utf-8")
    as_json = ok_value(await run_one(load_flow_doc("payload.dat", "json"), config=config))
    assert as_json["data"] == [1, 2]
    assert as_json["metadata"]["format"] == "json"


async def test_load_file_absolute_path(data_dir: Path, tmp_path: Path) -> None:
    config = default_config(tmp_path / "elsewhere")
    out = ok_value(await run_one(load_flow_doc(str(data_dir / "data.yml")), config=config))
    assert out["data"] == ["a", "b"]
    assert out["metadata"]["resolved_path"] == str(data_dir / "data.yml")


async def test_load_file_path_from_flow_input(data_dir: Path) -> None:
    config = default_config(data_dir)
    flow = load_flow_doc({"$input": "file"})
    out = ok_value(await run_one(flow, {"file": "data.json"}, config=config))
    assert out["data"]["b"] == 1


async def test_load_file_missing_file(data_dir: Path) -> None:
    config = default_config(data_dir)
    result = await run_one(load_flow_doc("nope.json"), config=config)
    assert failure(result) == (
        "INVALID_INPUT",
        f"load_file: file not found: {data_dir / 'nope.json'}",
    )


async def test_load_file_unparsable_files(data_dir: Path) -> None:
    config = default_config(data_dir)
    (data_dir / "bad.json").write_text("{not json", encoding="utf-8")
    (data_dir / "bad.yaml").write_text("a: [1, 2\n", encoding="utf-8")
    (data_dir / "bin.txt").write_bytes(b"\xff\xfe\x00binary")
    for name, fmt in (("bad.json", "json"), ("bad.yaml", "yaml")):
        code, message = failure(await run_one(load_flow_doc(name), config=config))
        assert code == "INVALID_INPUT"
        assert message.startswith(f"load_file: cannot parse {data_dir / name} as {fmt}: ")
    code, message = failure(await run_one(load_flow_doc("bin.txt"), config=config))
    assert code == "INVALID_INPUT"
    assert message.startswith(f"load_file: cannot read {data_dir / 'bin.txt'}: ")


async def test_load_file_nul_in_path_is_invalid_input(data_dir: Path) -> None:
    recorder = AttemptRecorder()
    outcome = await run_flow(
        load_flow_doc("data\x00.json"), config=default_config(data_dir), observers=[recorder]
    )
    assert failure(outcome.results[0]) == (
        "INVALID_INPUT",
        "load_file: field 'path' must not contain NUL characters",
    )
    assert [s.attempt for s in recorder.starts] == [1]


async def test_load_file_directory_is_invalid_input(data_dir: Path) -> None:
    code, message = failure(await run_one(load_flow_doc("sub"), config=default_config(data_dir)))
    assert code == "INVALID_INPUT"
    assert message.startswith(f"load_file: cannot read {data_dir / 'sub'}: ")


@pytest.mark.parametrize(
    ("step_input", "message"),
    [
        ({}, "load_file: missing required field 'path'"),
        ({"path": 3}, "load_file: field 'path' must be string, got integer"),
        ({"path": "data.json", "format": "xml"}, "load_file: field 'format' must be one of "),
        ({"path": "data.json", "format": 1}, "load_file: field 'format' must be string, got "),
    ],
)
async def test_load_file_rejects_bad_input(
    step_input: dict[str, Any], message: str, data_dir: Path
) -> None:
    result = await run_one(step_flow("load_file", step_input), config=default_config(data_dir))
    code, text = failure(result)
    assert code == "INVALID_INPUT"
    assert text.startswith(message)


# -- eval --------------------------------------------------------------------------------------

MESSAGES_SUBFLOW = {
    "name": "sub",
    "steps": [
        {
            "id": "m",
            "component": "/builtin/create_messages",
            "input": {"user_prompt": {"$input": "q"}},
        }
    ],
    "output": {"$step": "m", "path": "messages"},
}


def eval_flow(subflow: Any) -> dict[str, Any]:
    return {
        "steps": [
            {
                "id": "store",
                "component": "/builtin/put_blob",
                "input": {"data": {"$literal": subflow}, "blob_type": "flow"},
            },
            {
                "id": "run",
                "component": "/builtin/eval",
                "input": {
                    "flow_id": {"$step": "store", "path": "blob_id"},
                    "input": {"$input": "$"},
                },
            },
        ],
        "output": {"$step": "run"},
    }


async def test_eval_runs_a_stored_flow(config: Config) -> None:
    outcome = await run_flow(eval_flow(MESSAGES_SUBFLOW), [{"q": "hello"}], config=config)
    [result] = outcome.results
    assert ok_value(result) == {
        "result": {"outcome": "success", "result": [{"role": "user", "content": "hello"}]},
        "run_id": outcome.run_id,
    }


async def test_eval_nested_failure_is_returned_not_raised(config: Config) -> None:
    outcome = await run_flow(eval_flow(MESSAGES_SUBFLOW), [{"q": 42}], config=config)
    [result] = outcome.results
    assert ok_value(result)["result"] == {
        "outcome": "failed",
        "error": {
            "code": "INVALID_INPUT",
            "message": "create_messages: field 'user_prompt' must be string, got integer",
        },
    }
    assert outcome.status == "completed"


async def test_eval_nested_expression_failure(config: Config) -> None:
    result = await run_one(eval_flow(MESSAGES_SUBFLOW), {"other": 1}, config=config)
    assert ok_value(result)["result"] == {
        "outcome": "failed",
        "error": {"code": "EXPRESSION_FAILURE", "message": "Input path $.q not found"},
    }


async def test_eval_sub_run_receives_no_variables(config: Config) -> None:
    subflow = {
        "schemas": {
            "type": "object",
            "properties": {"variables": {"type": "object", "properties": {"v": {}}}},
        },
        "output": {"$variable": "v", "default": "no variables"},
    }
    flow = parse_flow(eval_flow(subflow), "flow.yaml")
    async with Runtime(config) as rt:
        outcome = await rt.run(flow, [None], variables={"v": "outer"})
    assert ok_value(outcome.results[0])["result"] == {
        "outcome": "success",
        "result": "no variables",
    }


async def test_eval_unknown_blob(config: Config) -> None:
    flow = step_flow("eval", {"flow_id": UNKNOWN_ID, "input": {}})
    result = await run_one(flow, config=config)
    assert failure(result) == ("COMPONENT_FAILED", f"eval: Blob not found: {UNKNOWN_ID}")


async def test_eval_blob_that_is_not_a_flow(config: Config) -> None:
    flow = eval_flow({"steps": "not a list"})
    code, message = failure(await run_one(flow, {}, config=config))
    assert code == "INVALID_INPUT"
    assert message.startswith("eval: field 'flow_id' is not a valid flow: ")
    assert "steps" in message


async def test_eval_blob_that_is_not_json(tmp_path: Path) -> None:
    store = MemoryBlobStore()
    blob_id = await store.put(b"\xff\x00 binary", "binary")
    async with Runtime(default_config(tmp_path), blobs=store) as rt:
        flow = step_flow("eval", {"flow_id": blob_id, "input": {}})
        result = await run_one(flow, config=rt.config, runtime=rt)
    assert failure(result) == ("COMPONENT_FAILED", f"eval: Blob {blob_id} does not hold JSON")


@pytest.mark.parametrize(
    ("step_input", "message"),
    [
        ({"input": 1}, "eval: missing required field 'flow_id'"),
        ({"flow_id": HELLO_ID}, "eval: missing required field 'input'"),
        (
            {"flow_id": "xyz", "input": 1},
            "eval: field 'flow_id' must be 64 lowercase hex characters: xyz",
        ),
    ],
)
async def test_eval_rejects_bad_input(
    step_input: dict[str, Any], message: str, config: Config
) -> None:
    result = await run_one(step_flow("eval", step_input), config=config)
    assert failure(result) == ("INVALID_INPUT", message)


# -- map ---------------------------------------------------------------------------------------


def map_flow(workflow: Any, items: Any, **extra: Any) -> dict[str, Any]:
    return step_flow("map", {"workflow": {"$literal": workflow}, "items": items, **extra})


async def test_map_results_in_item_order(config: Config) -> None:
    flow = map_flow(MESSAGES_SUBFLOW, {"$input": "items"})
    items = [{"q": f"item {i}"} for i in range(7)]
    out = ok_value(await run_one(flow, {"items": items}, config=config))
    assert out == {
        "results": [
            {"outcome": "success", "result": [{"role": "user", "content": f"item {i}"}]}
            for i in range(7)
        ],
        "successful": 7,
        "failed": 0,
    }


async def test_map_counts_failures_without_failing_the_step(config: Config) -> None:
    items = [{"q": "a"}, {"q": 5}, {}, {"q": "d"}]
    outcome = await run_flow(map_flow(MESSAGES_SUBFLOW, items), config=config)
    out = ok_value(outcome.results[0])
    assert outcome.status == "completed"
    assert (out["successful"], out["failed"]) == (2, 2)
    assert [r["outcome"] for r in out["results"]] == ["success", "failed", "failed", "success"]
    assert out["results"][1]["error"]["code"] == "INVALID_INPUT"
    assert out["results"][2]["error"] == {
        "code": "EXPRESSION_FAILURE",
        "message": "Input path $.q not found",
    }


async def test_map_empty_items(config: Config) -> None:
    out = ok_value(await run_one(map_flow(MESSAGES_SUBFLOW, []), config=config))
    assert out == {"results": [], "successful": 0, "failed": 0}


async def test_map_nested_map(config: Config) -> None:
    inner = {"steps": [], "output": {"doubled": [{"$input": "$"}, {"$input": "$"}]}}
    outer = {
        "steps": [
            {
                "id": "m",
                "component": "/builtin/map",
                "input": {"workflow": {"$literal": inner}, "items": {"$input": "$"}},
            }
        ],
        "output": {"$step": "m", "path": "successful"},
    }
    out = ok_value(await run_one(map_flow(outer, [[1, 2], [3], []]), config=config))
    assert [r["result"] for r in out["results"]] == [2, 1, 0]


@pytest.mark.parametrize(
    ("step_input", "message"),
    [
        ({"items": []}, "map: missing required field 'workflow'"),
        ({"workflow": {"steps": []}}, "map: missing required field 'items'"),
        ({"workflow": "flow", "items": []}, "map: field 'workflow' must be object, got string"),
        ({"workflow": {"steps": []}, "items": {}}, "map: field 'items' must be array, got object"),
        (
            {"workflow": {"steps": []}, "items": [1], "max_concurrency": 0},
            "map: field 'max_concurrency' must be at least 1",
        ),
        (
            {"workflow": {"steps": []}, "items": [1], "max_concurrency": "2"},
            "map: field 'max_concurrency' must be integer, got string",
        ),
    ],
)
async def test_map_rejects_bad_input(step_input: Any, message: str, config: Config) -> None:
    # `$literal` keeps the nested flow (if any) from being evaluated in the outer flow.
    result = await run_one(step_flow("map", {"$literal": step_input}), config=config)
    assert failure(result) == ("INVALID_INPUT", message)


async def test_map_invalid_workflow_names_the_field(config: Config) -> None:
    bad = {"steps": [{"id": "x", "component": "/builtin/noop", "onError": {"action": "nope"}}]}
    code, message = failure(await run_one(map_flow(bad, [1]), config=config))
    assert code == "INVALID_INPUT"
    assert message.startswith("map: field 'workflow' is not a valid flow: ")
    assert "onError.action" in message


@dataclass
class _Gauge:
    """Counts concurrent calls; calls wait until `target` are in flight together."""

    target: int
    active: int = 0
    peak: int = 0
    calls: int = 0
    reached: asyncio.Event = field(default_factory=asyncio.Event)


class GaugePlugin(Plugin):
    """A test plugin whose one component `/gauge` measures how many calls overlap."""

    static_components = True
    gauge: _Gauge

    async def components(self) -> list[ComponentInfo]:
        return [ComponentInfo("/gauge")]

    async def execute(self, call: StepCall) -> FlowResult:
        g = self.gauge
        g.calls += 1
        g.active += 1
        g.peak = max(g.peak, g.active)
        if g.active >= g.target:
            g.reached.set()
        try:
            await asyncio.wait_for(g.reached.wait(), timeout=10)
        finally:
            g.active -= 1
        return FlowResult.success(call.input)


@pytest.mark.parametrize(("limit", "expected_peak"), [(2, 2), (1, 1), (None, 6)])
async def test_map_max_concurrency_limits_its_sub_run(
    limit: int | None, expected_peak: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(PLUGIN_TYPES, "gauge", GaugePlugin)
    config = parse_config(
        {
            "plugins": {"builtin": {"type": "builtin"}, "probe": {"type": "gauge"}},
            "routes": {"/builtin": [{"plugin": "builtin"}], "/probe": [{"plugin": "probe"}]},
        },
        "test-config.yml",
        tmp_path,
    )
    inner = {
        "steps": [{"id": "g", "component": "/probe/gauge", "input": {"$input": "$"}}],
        "output": {"$step": "g"},
    }
    extra = {} if limit is None else {"max_concurrency": limit}
    flow = map_flow(inner, list(range(6)), **extra)
    async with Runtime(config) as rt:
        plugin = rt.plugins["probe"]
        assert isinstance(plugin, GaugePlugin)
        plugin.gauge = _Gauge(target=expected_peak)
        result = await run_one(flow, config=config, runtime=rt)
    out = ok_value(result)
    assert [r["result"] for r in out["results"]] == list(range(6))
    assert plugin.gauge.calls == 6
    assert plugin.gauge.peak == expected_peak


# -- iterate -----------------------------------------------------------------------------------

# Peels one `more` level per iteration; stops with `result` when there is none left.
PEEL_FLOW = {
    "steps": [],
    "output": {
        "$if": {"$input": "more"},
        "then": {"next": {"$input": "more"}},
        "else": {"result": {"done": {"$input": "tag"}}},
    },
}


def iterate_flow(flow: Any, initial: Any, **extra: Any) -> dict[str, Any]:
    return step_flow("iterate", {"flow": {"$literal": flow}, "initial_input": initial, **extra})


async def test_iterate_until_result(config: Config) -> None:
    initial = {"more": {"more": {"more": {"tag": "core"}}}}
    out = ok_value(await run_one(iterate_flow(PEEL_FLOW, initial), config=config))
    assert out == {"result": {"done": "core"}, "iterations": 4, "terminated": False}


async def test_iterate_result_on_first_iteration(config: Config) -> None:
    out = ok_value(await run_one(iterate_flow(PEEL_FLOW, {"tag": 1}), config=config))
    assert out == {"result": {"done": 1}, "iterations": 1, "terminated": False}


async def test_iterate_max_iterations_terminates_with_last_input(config: Config) -> None:
    wrap = {"steps": [], "output": {"next": {"w": {"$input": "$"}}}}
    out = ok_value(await run_one(iterate_flow(wrap, 0, max_iterations=3), config=config))
    assert out == {"result": {"w": {"w": {"w": 0}}}, "iterations": 3, "terminated": True}


async def test_iterate_default_max_iterations_is_1000(config: Config) -> None:
    same = {"steps": [], "output": {"next": {"$input": "$"}}}
    out = ok_value(await run_one(iterate_flow(same, "x"), config=config))
    assert out == {"result": "x", "iterations": 1000, "terminated": True}


async def test_iterate_zero_max_iterations_returns_initial_input(config: Config) -> None:
    out = ok_value(await run_one(iterate_flow(PEEL_FLOW, "start", max_iterations=0), config=config))
    assert out == {"result": "start", "iterations": 0, "terminated": True}


async def test_iterate_output_without_result_or_next(config: Config) -> None:
    bad = {"steps": [], "output": {"value": 1}}
    result = await run_one(iterate_flow(bad, 0), config=config)
    assert failure(result) == (
        "INVALID_INPUT",
        "iterate: Workflow result must contain either 'result' or 'next' field",
    )


async def test_iterate_nested_failure_becomes_step_failure_unchanged(config: Config) -> None:
    failing = {
        "steps": [
            {"id": "g", "component": "/builtin/get_blob", "input": {"blob_id": {"$input": "id"}}}
        ],
        "output": {"next": {"$step": "g"}},
    }
    flow = iterate_flow(failing, {"id": UNKNOWN_ID})
    result = await run_one(flow, config=config)
    assert failure(result) == ("COMPONENT_FAILED", f"get_blob: Blob not found: {UNKNOWN_ID}")


@pytest.mark.parametrize(
    ("step_input", "message"),
    [
        ({"initial_input": 1}, "iterate: missing required field 'flow'"),
        ({"flow": {"steps": []}}, "iterate: missing required field 'initial_input'"),
        ({"flow": [], "initial_input": 1}, "iterate: field 'flow' must be object, got array"),
        (
            {"flow": {"steps": []}, "initial_input": 1, "max_iterations": 2.5},
            "iterate: field 'max_iterations' must be integer, got number",
        ),
        (
            {"flow": {"steps": []}, "initial_input": 1, "max_iterations": -1},
            "iterate: field 'max_iterations' must not be negative",
        ),
    ],
)
async def test_iterate_rejects_bad_input(step_input: Any, message: str, config: Config) -> None:
    result = await run_one(step_flow("iterate", {"$literal": step_input}), config=config)
    assert failure(result) == ("INVALID_INPUT", message)


# -- openai (against a fake server on 127.0.0.1) ---------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"


def completion(content: Any) -> Reply:
    payload = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": "gpt-test",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    return Reply(200, json.dumps(payload).encode())


class FakeOpenAI:
    """A tiny OpenAI-compatible server: records requests, answers from a queue of replies."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.replies: list[Reply] = []
        self.default = completion("Hello from the fake!")
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw
                with fake._lock:
                    fake.requests.append(
                        Recorded(
                            "POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body
                        )
                    )
                    reply = fake.replies.pop(0) if fake.replies else fake.default
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No real key, endpoint or proxy from the developer's environment leaks into a test."""
    for name in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "MY_OPENAI_KEY",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def fake_openai(clean_env: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    """The fake server, with OPENAI_BASE_URL pointing at it and OPENAI_API_KEY=`k`."""
    with FakeOpenAI() as fake:
        clean_env.setenv("OPENAI_BASE_URL", fake.base_url)
        clean_env.setenv("OPENAI_API_KEY", "k")
        yield fake


MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello."},
]


def openai_flow(**fields: Any) -> dict[str, Any]:
    return step_flow("openai", {"messages": {"$input": "messages"}, **fields})


async def test_openai_with_env_endpoint_and_key(
    fake_openai: FakeOpenAI, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-key")
    result = await run_one(openai_flow(), {"messages": MESSAGES}, config=config)
    assert ok_value(result) == {"response": "Hello from the fake!"}
    [request] = fake_openai.requests
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-env-key"
    assert request.headers["content-type"] == "application/json"
    assert request.body == {"model": "gpt-3.5-turbo", "messages": MESSAGES}


async def test_openai_sends_model_max_tokens_temperature_and_input_key(
    fake_openai: FakeOpenAI, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A trailing slash on the base URL is fine.
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url + "/")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-key")
    flow = openai_flow(model="gpt-4o-mini", max_tokens=50, temperature=0.2, api_key="sk-input")
    fake_openai.replies.append(completion("custom"))
    result = await run_one(flow, {"messages": MESSAGES}, config=config)
    assert ok_value(result) == {"response": "custom"}
    [request] = fake_openai.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-input"
    assert request.body == {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "max_tokens": 50,
        "temperature": 0.2,
    }


async def test_openai_endpoint_and_key_from_config(
    fake_openai: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/unused")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-key")
    config = parse_config(
        {
            "plugins": {
                "builtin": {
                    "type": "builtin",
                    "openai": {"baseUrl": fake_openai.base_url, "apiKey": "sk-config"},
                }
            },
            "routes": {"/builtin": [{"plugin": "builtin"}]},
        },
        "stepflow-config.yml",
        tmp_path,
    )
    result = await run_one(openai_flow(), {"messages": MESSAGES}, config=config)
    assert ok_value(result) == {"response": "Hello from the fake!"}
    [request] = fake_openai.requests
    assert request.headers["authorization"] == "Bearer sk-config"


async def test_openai_key_from_configured_env_var(
    fake_openai: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-default-var")
    monkeypatch.setenv("MY_OPENAI_KEY", "sk-custom-var")
    config = parse_config(
        {
            "plugins": {
                "builtin": {
                    "type": "builtin",
                    "openai": {"baseUrl": fake_openai.base_url, "apiKeyEnv": "MY_OPENAI_KEY"},
                }
            },
            "routes": {"/builtin": [{"plugin": "builtin"}]},
        },
        "stepflow-config.yml",
        tmp_path,
    )
    assert ok_value(await run_one(openai_flow(), {"messages": MESSAGES}, config=config))
    assert fake_openai.requests[0].headers["authorization"] == "Bearer sk-custom-var"
    monkeypatch.delenv("MY_OPENAI_KEY")
    result = await run_one(openai_flow(), {"messages": MESSAGES}, config=config)
    assert failure(result) == (
        "INVALID_INPUT",
        "openai: no API key: set 'api_key' in the input or MY_OPENAI_KEY",
    )


@pytest.mark.parametrize(
    ("openai_settings", "where"),
    [
        ({"baseUrl": 5}, "plugins.builtin.openai.baseUrl"),
        ({"apiKey": ""}, "plugins.builtin.openai.apiKey"),
        ({"model": "x"}, "plugins.builtin.openai.model"),
        ("http://x", "plugins.builtin.openai"),
    ],
)
async def test_openai_config_errors_name_file_and_field(
    openai_settings: Any, where: str, tmp_path: Path
) -> None:
    config = parse_config(
        {
            "plugins": {"builtin": {"type": "builtin", "openai": openai_settings}},
            "routes": {"/builtin": [{"plugin": "builtin"}]},
        },
        "stepflow-config.yml",
        tmp_path,
    )
    with pytest.raises(UserError) as info:
        async with Runtime(config):
            pass
    assert info.value.where == f"stepflow-config.yml: {where}"


@pytest.mark.parametrize("content", [None, ""])
async def test_openai_empty_content_is_empty_response(
    content: Any, fake_openai: FakeOpenAI, config: Config
) -> None:
    fake_openai.replies.append(completion(content))
    result = await run_one(openai_flow(), {"messages": MESSAGES}, config=config)
    assert ok_value(result) == {"response": ""}


async def test_openai_no_choices_is_empty_response(fake_openai: FakeOpenAI, config: Config) -> None:
    fake_openai.replies.append(Reply(200, b'{"choices": []}'))
    result = await run_one(openai_flow(), {"messages": MESSAGES}, config=config)
    assert ok_value(result) == {"response": ""}


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "COMPONENT_FAILED"),
        (401, "COMPONENT_FAILED"),
        (404, "COMPONENT_FAILED"),
        (429, "RESOURCE_UNAVAILABLE"),
        (500, "RESOURCE_UNAVAILABLE"),
        (503, "RESOURCE_UNAVAILABLE"),
    ],
)
async def test_openai_http_error_is_clear_step_failure(
    status: int, code: str, fake_openai: FakeOpenAI, config: Config
) -> None:
    error_body = b'{"error": {"message": "Incorrect API key provided"}}'
    fake_openai.replies.append(Reply(status, error_body))
    recorder = AttemptRecorder()
    outcome = await run_flow(
        openai_flow(), [{"messages": MESSAGES}], config=config, observers=[recorder]
    )
    url = f"{fake_openai.base_url}/chat/completions"
    assert failure(outcome.results[0]) == (
        code,
        f"openai: {url} answered {status}: {error_body.decode()}",
    )
    # Not a transport failure: no retries without `onError: retry`.
    assert len(fake_openai.requests) == 1
    assert [s.attempt for s in recorder.starts] == [1]


async def test_openai_long_error_body_is_truncated(fake_openai: FakeOpenAI, config: Config) -> None:
    fake_openai.replies.append(Reply(400, b"x" * 5000, "text/plain"))
    code, message = failure(await run_one(openai_flow(), {"messages": MESSAGES}, config=config))
    assert code == "COMPONENT_FAILED"
    assert message.endswith("answered 400: " + "x" * 200)


async def test_openai_server_errors_are_retried_with_on_error_retry(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    config = builtin_config(tmp_path, retry={"backoff": {"type": "constant", "delayMs": 0}})
    fake_openai.replies += [Reply(503, b"busy"), Reply(500, b"oops"), completion("third time")]
    flow = openai_flow()
    flow["steps"][0]["onError"] = {"action": "retry", "maxRetries": 3}
    result = await run_one(flow, {"messages": MESSAGES}, config=config)
    assert ok_value(result) == {"response": "third time"}
    assert len(fake_openai.requests) == 3


async def test_openai_invalid_json_reply(fake_openai: FakeOpenAI, config: Config) -> None:
    fake_openai.replies.append(Reply(200, b"<html>not json</html>", "text/html"))
    result = await run_one(openai_flow(), {"messages": MESSAGES}, config=config)
    url = f"{fake_openai.base_url}/chat/completions"
    assert failure(result) == ("COMPONENT_FAILED", f"openai: {url} answered with invalid JSON")


@pytest.mark.parametrize(
    "body",
    [
        b"[1, 2]",
        b'"text"',
        b'{"choices": "none"}',
        b'{"choices": ["hi"]}',
        b'{"choices": [{"message": "hi"}]}',
        b'{"choices": [{"message": {"content": [{"type": "text"}]}}]}',
    ],
)
async def test_openai_unexpected_reply_shape_fails_cleanly(
    body: bytes, fake_openai: FakeOpenAI, config: Config
) -> None:
    fake_openai.replies.append(Reply(200, body))
    recorder = AttemptRecorder()
    outcome = await run_flow(
        openai_flow(), [{"messages": MESSAGES}], config=config, observers=[recorder]
    )
    url = f"{fake_openai.base_url}/chat/completions"
    assert failure(outcome.results[0]) == (
        "COMPONENT_FAILED",
        f"openai: {url} answered with an unexpected reply shape",
    )
    # A clean component failure, not a crash that transport retries would repeat.
    assert len(fake_openai.requests) == 1
    assert [s.attempt for s in recorder.starts] == [1]


@pytest.mark.parametrize(
    "body", [b"{}", b'{"choices": null}', b'{"choices": [{}]}', b'{"choices": [{"message": {}}]}']
)
async def test_openai_reply_without_content_is_empty_response(
    body: bytes, fake_openai: FakeOpenAI, config: Config
) -> None:
    fake_openai.replies.append(Reply(200, body))
    result = await run_one(openai_flow(), {"messages": MESSAGES}, config=config)
    assert ok_value(result) == {"response": ""}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_openai_unreachable_server_is_resource_unavailable(
    clean_env: pytest.MonkeyPatch, config: Config
) -> None:
    base = f"http://127.0.0.1:{_closed_port()}/v1"
    clean_env.setenv("OPENAI_BASE_URL", base)
    clean_env.setenv("OPENAI_API_KEY", "k")
    code, message = failure(await run_one(openai_flow(), {"messages": MESSAGES}, config=config))
    assert code == "RESOURCE_UNAVAILABLE"
    assert message.startswith(f"openai: request to {base}/chat/completions failed: ")


async def test_openai_without_any_key_is_invalid_input(
    fake_openai: FakeOpenAI, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    result = await run_one(openai_flow(), {"messages": MESSAGES}, config=config)
    assert failure(result) == (
        "INVALID_INPUT",
        "openai: no API key: set 'api_key' in the input or OPENAI_API_KEY",
    )
    assert fake_openai.requests == []


@pytest.mark.parametrize(
    ("step_input", "message"),
    [
        ({}, "openai: missing required field 'messages'"),
        ({"messages": "hi"}, "openai: field 'messages' must be array, got string"),
        (
            {"messages": [{"role": "robot", "content": "x"}]},
            "openai: messages[0] must be {role: system|user|assistant, content}",
        ),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "user"}]},
            "openai: messages[1] must be {role: system|user|assistant, content}",
        ),
        (
            {"messages": [{"role": "user", "content": "a"}], "max_tokens": "10"},
            "openai: field 'max_tokens' must be integer, got string",
        ),
        (
            {"messages": [{"role": "user", "content": "a"}], "temperature": "hot"},
            "openai: field 'temperature' must be number, got string",
        ),
        (
            {"messages": [{"role": "user", "content": "a"}], "model": 4},
            "openai: field 'model' must be string, got integer",
        ),
    ],
)
async def test_openai_rejects_bad_input_without_calling_the_server(
    step_input: dict[str, Any], message: str, fake_openai: FakeOpenAI, config: Config
) -> None:
    result = await run_one(step_flow("openai", {"$literal": step_input}), config=config)
    assert failure(result) == ("INVALID_INPUT", message)
    assert fake_openai.requests == []


async def test_create_messages_feeds_openai(fake_openai: FakeOpenAI, config: Config) -> None:
    flow = {
        "steps": [
            {
                "id": "msgs",
                "component": "/builtin/create_messages",
                "input": {"user_prompt": {"$input": "q"}, "system_instructions": "Be nice."},
            },
            {
                "id": "llm",
                "component": "/builtin/openai",
                "input": {"messages": {"$step": "msgs", "path": "messages"}, "max_tokens": 5},
            },
        ],
        "output": {"answer": {"$step": "llm", "path": "response"}},
    }
    fake_openai.replies.append(completion("Hi!"))
    assert ok_value(await run_one(flow, {"q": "Greet me"}, config=config)) == {"answer": "Hi!"}
    assert fake_openai.requests[0].body["messages"] == [
        {"role": "system", "content": "Be nice."},
        {"role": "user", "content": "Greet me"},
    ]
