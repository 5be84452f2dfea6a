"""The executor through `Runtime` (flows.md §3-§5, §7, §8): scheduling, laziness, failures,
onError and retries, the concurrency cap, batches, variables, overrides and sub-runs.

Ordering and concurrency are observed through `RunObserver` events and a probe plugin whose
components synchronise on asyncio events, never through wall-clock thresholds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from stepflow_mesh.runtime.config import Config, parse_config
from stepflow_mesh.runtime.engine import RunOutcome, Runtime
from stepflow_mesh.runtime.errors import FlowResult, PluginError, UserError
from stepflow_mesh.runtime.executor import RunExecution, RunObserver, TaskStart, _implements
from stepflow_mesh.runtime.expressions import Env
from stepflow_mesh.runtime.model import Flow, Step, parse_flow
from stepflow_mesh.runtime.overrides import apply_overrides, merge_patch
from stepflow_mesh.runtime.plugins import PLUGIN_TYPES
from stepflow_mesh.runtime.plugins.base import ComponentInfo, Plugin, StepCall
from stepflow_mesh.runtime.variables import env_variables, redact

GUARD = 10.0  # seconds; only ever reached when the behaviour under test is broken


# --- a probe plugin --------------------------------------------------------------------------


class ProbePlugin(Plugin):
    """Components whose calls are recorded, and which can fail, block or rendezvous on demand.

    `/echo`       returns its input.
    `/flaky`      fails `failures` times per task with `code`, then returns `{"attempt": n}`.
    `/gate`       counts in-flight calls and waits until the test opens `gate`.
    `/rendezvous` announces `me`, then waits for `other` (only possible if both run at once).
    `/explode`    raises an arbitrary exception (a plugin-level failure).
    """

    PATHS = ("/echo", "/flaky", "/gate", "/rendezvous", "/explode")

    def __init__(self, name: str, config: dict[str, Any], working_dir: Path) -> None:
        super().__init__(name, config, working_dir)
        self.calls: list[StepCall] = []
        self.prepare_retries = 0
        self.failures_seen: dict[str, int] = {}
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self.arrived: dict[str, asyncio.Event] = {}

    async def components(self) -> list[ComponentInfo]:
        return [ComponentInfo(p) for p in self.PATHS]

    async def prepare_retry(self) -> None:
        self.prepare_retries += 1

    def called(self, step_id: str) -> list[StepCall]:
        return [c for c in self.calls if c.step_id == step_id]

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        async def loop() -> None:
            while not predicate():
                self.entered.clear()
                await self.entered.wait()

        await asyncio.wait_for(loop(), GUARD)

    async def execute(self, call: StepCall) -> FlowResult:
        self.calls.append(call)
        data = call.input if isinstance(call.input, dict) else {}
        if call.component == "/echo":
            return FlowResult.success(call.input)
        if call.component == "/flaky":
            seen = self.failures_seen.get(call.task_id, 0)
            if seen < data.get("failures", 0):
                self.failures_seen[call.task_id] = seen + 1
                code, message = data.get("code", "COMPONENT_FAILED"), f"fail #{seen + 1}"
                if "data" in data:
                    return FlowResult.failure(code, message, data["data"])
                return FlowResult.failure(code, message)
            return FlowResult.success({"attempt": call.attempt})
        if call.component == "/gate":
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.entered.set()
            try:
                await self.gate.wait()
            finally:
                self.in_flight -= 1
            return FlowResult.success(call.input)
        if call.component == "/rendezvous":
            self.arrived.setdefault(data["me"], asyncio.Event()).set()
            other = self.arrived.setdefault(data["other"], asyncio.Event())
            try:
                await asyncio.wait_for(other.wait(), GUARD)
            except TimeoutError:
                return FlowResult.failure("COMPONENT_FAILED", f"{data['other']} never ran")
            return FlowResult.success(data["me"])
        if call.component == "/explode":
            raise RuntimeError("kaboom")
        raise PluginError(f"no such probe component {call.component}")


@pytest.fixture(autouse=True)
def _probe_plugin_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PLUGIN_TYPES, "probe", ProbePlugin)


# --- an observer ------------------------------------------------------------------------------


@dataclass
class Observed:
    kind: str  # "start" | "done" | "item" | "run"
    step_id: str | None = None
    item: int | None = None
    attempt: int | None = None
    task_id: str | None = None
    result: FlowResult | None = None
    at: int = field(default_factory=time.monotonic_ns)


class Recorder(RunObserver):
    def __init__(self) -> None:
        self.events: list[Observed] = []
        self.runs: list[RunExecution] = []

    async def run_started(self, run: RunExecution) -> None:
        self.runs.append(run)

    async def tasks_started(self, run: RunExecution, tasks: Sequence[TaskStart]) -> None:
        for t in tasks:
            self.events.append(Observed("start", t.step_id, t.item_index, t.attempt, t.task_id))

    async def task_completed(
        self, run: RunExecution, item_index: int, step: Step, result: FlowResult
    ) -> None:
        self.events.append(Observed("done", step.id, item_index, result=result))

    async def item_completed(self, run: RunExecution, item_index: int, result: FlowResult) -> None:
        self.events.append(Observed("item", item=item_index, result=result))

    async def run_completed(self, run: RunExecution, status: str) -> None:
        self.events.append(Observed("run", step_id=status))

    def of(self, kind: str, step_id: str | None = None, item: int | None = None) -> list[Observed]:
        return [
            e
            for e in self.events
            if e.kind == kind
            and (step_id is None or e.step_id == step_id)
            and (item is None or e.item == item)
        ]

    def first(self, kind: str, step_id: str, item: int = 0) -> Observed:
        found = self.of(kind, step_id, item)
        assert found, f"no {kind} event for {step_id}"
        return found[0]

    def index(self, kind: str, step_id: str, item: int = 0) -> int:
        return self.events.index(self.first(kind, step_id, item))

    def started(self) -> set[str]:
        return {e.step_id for e in self.of("start") if e.step_id}


# --- helpers ----------------------------------------------------------------------------------

FAST_RETRY = {"transportMaxRetries": 2, "backoff": {"type": "constant", "delayMs": 0}}


def make_config(extra: dict[str, Any] | None = None, retry: Any = FAST_RETRY) -> Config:
    doc: dict[str, Any] = {
        "plugins": {"builtin": {"type": "builtin"}, "probe": {"type": "probe"}},
        "routes": {"/builtin": [{"plugin": "builtin"}], "/probe": [{"plugin": "probe"}]},
        "retry": retry,
    }
    for key, value in (extra or {}).items():
        doc[key] = {**doc[key], **value}
    return parse_config(doc, "test-config.yml", Path.cwd())


@dataclass
class Harness:
    runtime: Runtime
    recorder: Recorder

    @property
    def probe(self) -> ProbePlugin:
        plugin = self.runtime.plugins["probe"]
        assert isinstance(plugin, ProbePlugin)
        return plugin

    def start(self, flow: dict[str, Any] | Flow, inputs: list[Any], **kw: Any) -> Awaitable[Any]:
        parsed = flow if isinstance(flow, Flow) else parse_flow(flow, "flow.yaml")
        return asyncio.ensure_future(
            asyncio.wait_for(self.runtime.run(parsed, inputs, **kw), GUARD)
        )

    async def run(self, flow: dict[str, Any] | Flow, inputs: list[Any], **kw: Any) -> RunOutcome:
        outcome: RunOutcome = await self.start(flow, inputs, **kw)
        return outcome

    async def run1(self, flow: dict[str, Any] | Flow, input: Any = None, **kw: Any) -> Any:
        """Run one item; return its FlowResult JSON."""
        outcome = await self.run(flow, [input], **kw)
        [result] = outcome.results
        return result.to_json()


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    recorder = Recorder()
    async with Runtime(make_config(), observers=[recorder]) as runtime:
        yield Harness(runtime, recorder)


def step(step_id: str, component: str, input: Any = None, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "component": component, "input": input, **extra}


def success(value: Any) -> dict[str, Any]:
    return {"outcome": "success", "result": value}


# --- concurrency and ordering -----------------------------------------------------------------


async def test_independent_sleeps_overlap(h: Harness) -> None:
    flow = {
        "steps": [
            step("first", "/builtin/sleep", {"duration_ms": 40, "passthrough": "a"}),
            step("second", "/builtin/sleep", {"duration_ms": 40, "passthrough": "b"}),
        ],
        "output": [{"$step": "first"}, {"$step": "second"}],
    }
    assert await h.run1(flow) == success(
        [{"duration_ms": 40, "passthrough": "a"}, {"duration_ms": 40, "passthrough": "b"}]
    )
    r = h.recorder
    for a, b in [("first", "second"), ("second", "first")]:
        assert r.first("start", b).at < r.first("done", a).at
        assert r.index("start", b) < r.index("done", a)


async def test_independent_steps_execute_at_the_same_time(h: Harness) -> None:
    # Each call waits for the other to arrive: this completes only if both are in flight at once.
    flow = {
        "steps": [
            step("a", "/probe/rendezvous", {"me": "a", "other": "b"}),
            step("b", "/probe/rendezvous", {"me": "b", "other": "a"}),
        ],
        "output": [{"$step": "a"}, {"$step": "b"}],
    }
    assert await h.run1(flow) == success(["a", "b"])


async def test_dependent_steps_run_in_dependency_order(h: Harness) -> None:
    flow = {
        "steps": [
            step("a", "/builtin/sleep", {"duration_ms": 5, "passthrough": {"$input": "v"}}),
            step("b", "/builtin/sleep", {"duration_ms": 1, "passthrough": {"$step": "a"}}),
            step("c", "/probe/echo", {"x": {"$step": "b", "path": "$.passthrough.passthrough"}}),
            step("d", "/probe/echo", [{"$step": "a", "path": "passthrough"}, {"$step": "c"}]),
        ],
        "output": {"$step": "d"},
    }
    assert await h.run1(flow, {"v": 42}) == success([42, {"x": 42}])
    r = h.recorder
    for before, after in [("a", "b"), ("b", "c"), ("c", "d"), ("a", "d")]:
        assert r.index("done", before) < r.index("start", after)
        assert r.first("done", before).at <= r.first("start", after).at
    assert [c.step_id for c in h.probe.calls] == ["c", "d"]


# --- laziness ---------------------------------------------------------------------------------


async def test_only_steps_needed_by_the_output_run(h: Harness) -> None:
    flow = {
        "steps": [
            step("base", "/probe/echo", "base"),
            step("used", "/probe/echo", {"b": {"$step": "base"}}),
            step("unused", "/probe/echo", "unused"),
            step("unused_dependant", "/probe/echo", {"$step": "base"}),
        ],
        "output": {"$step": "used"},
    }
    assert await h.run1(flow) == success({"b": "base"})
    assert [c.step_id for c in h.probe.calls] == ["base", "used"]
    assert h.recorder.started() == {"base", "used"}
    assert {e.step_id for e in h.recorder.of("done")} == {"base", "used"}


async def test_must_execute_steps_run_even_if_unreferenced(h: Harness) -> None:
    flow = {
        "steps": [
            step("side", "/probe/echo", "side effect", mustExecute=True),
            step("other", "/probe/echo", "not needed"),
            step("main", "/probe/echo", "main"),
        ],
        "output": {"$step": "main"},
    }
    assert await h.run1(flow) == success("main")
    assert sorted(c.step_id for c in h.probe.calls) == ["main", "side"]


async def test_no_output_runs_nothing_but_must_execute(h: Harness) -> None:
    flow = {
        "steps": [
            step("a", "/probe/echo", 1),
            step("dep", "/probe/echo", 0),
            step("b", "/probe/echo", {"$step": "dep"}, mustExecute=True),
        ]
    }
    assert await h.run1(flow) == success(None)
    assert sorted(c.step_id for c in h.probe.calls) == ["b", "dep"]


async def test_failed_unreferenced_must_execute_step_fails_the_item(h: Harness) -> None:
    flow = {
        "steps": [
            step("side", "/probe/flaky", {"failures": 1}, mustExecute=True),
            step("main", "/probe/echo", "main"),
        ],
        "output": {"$step": "main"},
    }
    assert await h.run1(flow) == {
        "outcome": "failed",
        "error": {"code": "COMPONENT_FAILED", "message": "fail #1"},
    }


@pytest.mark.parametrize(("flag", "ran", "value"), [(True, "yes", "Y"), (False, "no", "N")])
async def test_if_in_step_input_runs_only_the_chosen_branch(
    h: Harness, flag: bool, ran: str, value: str
) -> None:
    flow = {
        "steps": [
            step("yes", "/probe/echo", "Y"),
            step("no", "/probe/echo", "N"),
            step(
                "pick",
                "/probe/echo",
                {"$if": {"$input": "flag"}, "then": {"$step": "yes"}, "else": {"$step": "no"}},
            ),
        ],
        "output": {"$step": "pick"},
    }
    assert await h.run1(flow, {"flag": flag}) == success(value)
    assert [c.step_id for c in h.probe.calls] == [ran, "pick"]


@pytest.mark.parametrize(("cond", "ran", "value"), [(1, "then", "T"), (None, "else", "E")])
async def test_output_if_with_condition_from_a_step(
    h: Harness, cond: Any, ran: str, value: str
) -> None:
    flow = {
        "steps": [
            step("cond", "/probe/echo", {"$input": "c"}),
            step("then", "/probe/echo", "T"),
            step("else", "/probe/echo", "E"),
        ],
        "output": {"$if": {"$step": "cond"}, "then": {"$step": "then"}, "else": {"$step": "else"}},
    }
    assert await h.run1(flow, {"c": cond}) == success(value)
    assert [c.step_id for c in h.probe.calls] == ["cond", ran]
    assert h.recorder.index("done", "cond") < h.recorder.index("start", ran)


async def test_coalesce_runs_items_until_a_non_null_one(h: Harness) -> None:
    flow = {
        "steps": [
            step("first", "/probe/echo", None),
            step("second", "/probe/echo", {"$input": "second"}),
            step("third", "/probe/echo", "third"),
            step(
                "pick",
                "/probe/echo",
                {"$coalesce": [{"$step": n} for n in ("first", "second", "third")]},
            ),
        ],
        "output": {
            "picked": {"$step": "pick"},
            "again": {"$coalesce": [None, {"$step": "second"}]},
        },
    }
    assert await h.run1(flow, {"second": 0}) == success({"picked": 0, "again": 0})
    assert [c.step_id for c in h.probe.calls] == ["first", "second", "pick"]


async def test_output_coalesce_moves_past_null_steps(h: Harness) -> None:
    flow = {
        "steps": [step("n", "/probe/echo", None), step("v", "/probe/echo", "value")],
        "output": {"$coalesce": [{"$step": "n"}, {"$step": "v"}, {"$step": "n"}]},
    }
    assert await h.run1(flow) == success("value")
    assert [c.step_id for c in h.probe.calls] == ["n", "v"]


# --- failures ---------------------------------------------------------------------------------


async def test_failed_input_propagates_without_calling_the_component(h: Harness) -> None:
    flow = {
        "steps": [
            step("bad", "/probe/flaky", {"failures": 1, "code": "INVALID_INPUT", "data": [1]}),
            step(
                "dependant",
                "/probe/echo",
                {"x": [{"$step": "bad", "path": "deep"}]},
                onError={"action": "retry", "maxRetries": 3},
            ),
            step("unrelated", "/probe/echo", "fine"),
        ],
        "output": {"d": {"$step": "dependant"}, "u": {"$step": "unrelated"}},
    }
    expected_error = {"code": "INVALID_INPUT", "message": "fail #1", "data": [1]}
    assert await h.run1(flow) == {"outcome": "failed", "error": expected_error}
    assert sorted(c.step_id for c in h.probe.calls) == ["bad", "unrelated"]
    r = h.recorder
    assert "dependant" not in r.started()
    done = r.first("done", "dependant")
    assert done.result is not None and done.result.to_json()["error"] == expected_error


async def test_missing_input_path_fails_the_step_without_a_call(h: Harness) -> None:
    flow = {
        "steps": [step("s", "/probe/echo", {"$input": "$.a[3]"}, onError={"action": "useDefault"})],
        "output": {"$step": "s"},
    }
    assert await h.run1(flow, {"a": [1]}) == {
        "outcome": "failed",
        "error": {"code": "EXPRESSION_FAILURE", "message": "Input path $.a[3] not found"},
    }
    assert h.probe.calls == []


async def test_plugin_level_failure_shape(h: Harness) -> None:
    flow = {"steps": [step("boom", "/probe/explode", {})], "output": {"$step": "boom"}}
    result = await h.run1(flow)
    assert result == {
        "outcome": "failed",
        "error": {
            "code": "UNREACHABLE",
            "message": 'step "boom" failed',
            "data": {
                "stack": [
                    {
                        "error": 'step "boom" failed',
                        "attachments": [
                            "Component: /explode",
                            "Component execution failed for step 'boom'",
                            "kaboom",
                        ],
                    },
                    {"error": "error executing component"},
                ]
            },
        },
    }
    # UNREACHABLE is a transport code: 1 attempt + transportMaxRetries (2)
    assert len(h.probe.called("boom")) == 3
    assert h.probe.prepare_retries == 2


async def test_routing_failure_is_never_retried_or_defaulted(h: Harness) -> None:
    flow = {
        "steps": [
            step("s", "/nowhere/thing", {}, onError={"action": "useDefault", "defaultValue": 1})
        ],
        "output": {"$step": "s"},
    }
    result = await h.run1(flow)
    assert result["outcome"] == "failed"
    assert result["error"]["code"] == "ORCHESTRATOR_ERROR"
    assert result["error"]["message"] == "error routing component"
    attachments = result["error"]["data"]["stack"][0]["attachments"]
    assert attachments == ["No matching prefix for path: /nowhere/thing"]
    assert [e.attempt for e in h.recorder.of("start", "s")] == [1]


async def test_mock_plugin_results_and_missing_behaviour() -> None:
    config = make_config(
        {
            "plugins": {
                "mock": {
                    "type": "mock",
                    "components": {
                        "/m": {
                            "behaviors": {
                                "ok": {"outcome": "success", "result": {"v": 1}},
                                "bad": {
                                    "outcome": "failed",
                                    "error": {"code": "COMPONENT_FAILED", "message": "nope"},
                                },
                            }
                        }
                    },
                }
            },
            "routes": {"/mock": [{"plugin": "mock"}]},
        },
        retry={"transportMaxRetries": 0},
    )
    flow = parse_flow({"steps": [step("s", "/mock/m", {"$input": "$"})], "output": {"$step": "s"}})
    async with Runtime(config) as runtime:
        outcome = await runtime.run(flow, ["ok", "bad", "other"])
    assert outcome.status == "failed"
    ok, bad, missing = (r.to_json() for r in outcome.results)
    assert ok == success({"v": 1})
    assert bad == {"outcome": "failed", "error": {"code": "COMPONENT_FAILED", "message": "nope"}}
    assert missing["error"]["code"] == "UNREACHABLE"
    assert missing["error"]["data"]["stack"] == [
        {
            "error": 'step "s" failed',
            "attachments": [
                "Component: /m",
                "Component execution failed for step 's'",
                'No behavior defined for /m on "other"',
            ],
        },
        {"error": "error executing user-defined function"},
    ]


# --- onError ----------------------------------------------------------------------------------


async def test_on_error_fail_is_the_default_and_does_not_retry(h: Harness) -> None:
    flow = {
        "steps": [step("s", "/probe/flaky", {"failures": 1}, onError={"action": "fail"})],
        "output": {"$step": "s"},
    }
    assert await h.run1(flow) == {
        "outcome": "failed",
        "error": {"code": "COMPONENT_FAILED", "message": "fail #1"},
    }
    assert len(h.probe.calls) == 1


@pytest.mark.parametrize("code", ["COMPONENT_FAILED", "UNREACHABLE", "TIMEOUT", "INVALID_INPUT"])
async def test_use_default_with_default_value(h: Harness, code: str) -> None:
    literal = {"$step": "x", "nested": [{"$input": "y"}]}
    flow = {
        "steps": [
            step(
                "s",
                "/probe/flaky",
                {"failures": 5, "code": code},
                onError={"action": "useDefault", "defaultValue": literal},
            ),
            step("after", "/probe/echo", {"got": {"$step": "s"}}),
        ],
        "output": {"$step": "after"},
    }
    assert await h.run1(flow) == success({"got": literal})
    # applied before any retry, transport codes included
    assert len(h.probe.called("s")) == 1
    assert h.probe.prepare_retries == 0


async def test_use_default_without_default_value_is_null(h: Harness) -> None:
    flow = {
        "steps": [
            step("s", "/probe/explode", {}, onError={"action": "useDefault"}),
            step(
                "t",
                "/probe/flaky",
                {"failures": 1},
                onError={"action": "useDefault", "defaultValue": None},
            ),
        ],
        "output": [{"$step": "s"}, {"$step": "t"}],
    }
    assert await h.run1(flow) == success([None, None])


async def test_use_default_does_not_apply_to_a_failed_input(h: Harness) -> None:
    flow = {
        "steps": [
            step("bad", "/probe/flaky", {"failures": 1}),
            step("s", "/probe/echo", {"$step": "bad"}, onError={"action": "useDefault"}),
        ],
        "output": {"$step": "s"},
    }
    assert (await h.run1(flow))["error"] == {"code": "COMPONENT_FAILED", "message": "fail #1"}


@pytest.mark.parametrize("code", ["COMPONENT_FAILED", "RESOURCE_UNAVAILABLE"])
async def test_retry_until_success(h: Harness, code: str) -> None:
    flow = {
        "steps": [
            step(
                "s",
                "/probe/flaky",
                {"failures": 2, "code": code},
                onError={"action": "retry", "maxRetries": 3},
            )
        ],
        "output": {"$step": "s"},
    }
    assert await h.run1(flow) == success({"attempt": 3})
    calls = h.probe.called("s")
    assert [c.attempt for c in calls] == [1, 2, 3]
    assert len({c.task_id for c in calls}) == 1
    starts = h.recorder.of("start", "s")
    assert [e.attempt for e in starts] == [1, 2, 3]
    assert {e.task_id for e in starts} == {calls[0].task_id}
    assert h.probe.prepare_retries == 0  # component retries do not restart workers


class AttemptPairs(RunObserver):
    """Implements only the attempt hooks: what `attempt_started` returns must come back."""

    def __init__(self) -> None:
        self.pairs: list[tuple[int, int, bool]] = []  # (started attempt, finished attempt, ok)

    def attempt_started(self, run: RunExecution, call: StepCall) -> int:
        return call.attempt

    def attempt_finished(
        self, run: RunExecution, call: StepCall, result: FlowResult | None, started: Any
    ) -> None:
        self.pairs.append((started, call.attempt, result is not None and result.ok))


async def test_attempt_hooks_pair_up_per_attempt_and_only_implemented_hooks_are_called() -> None:
    pairs = AttemptPairs()
    flow = {
        "steps": [
            step("s", "/probe/flaky", {"failures": 2}, onError={"action": "retry", "maxRetries": 3})
        ],
        "output": {"$step": "s"},
    }
    async with Runtime(make_config(), observers=[pairs]) as runtime:
        outcome = await asyncio.wait_for(runtime.run(parse_flow(flow, "f.yaml"), [None]), GUARD)
        assert outcome.results[0].ok
    assert pairs.pairs == [(1, 1, False), (2, 2, False), (3, 3, True)]
    hooks = {"run_started", "steps_needed", "tasks_started", "tasks_completed", "run_completed"}
    assert not any(_implements(AttemptPairs, hook) for hook in hooks)
    assert _implements(AttemptPairs, "attempt_started")
    assert _implements(Recorder, "tasks_completed")  # through `task_completed`


class Scope(RunObserver):
    """Logs when it sees a root run start and end; `fail_at_end` raises from `run_completed`."""

    def __init__(self, name: str, log: list[str], fail_at_end: bool = False) -> None:
        self.name, self.log, self.fail_at_end = name, log, fail_at_end

    async def run_started(self, run: RunExecution) -> None:
        self.log.append(f"{self.name} start")

    async def run_completed(self, run: RunExecution, status: str) -> None:
        self.log.append(f"{self.name} end {status}")
        if self.fail_at_end:
            raise RuntimeError(f"{self.name} refused the end")


async def test_observers_hear_of_the_end_in_reverse_order_even_if_one_fails() -> None:
    """Nested like scopes (telemetry's run span covers the journal's final write), and an observer
    whose end fails (a refused final write) neither hides the end from the others nor is lost."""
    log: list[str] = []
    outer, middle = Scope("outer", log), Scope("middle", log, fail_at_end=True)
    flow = parse_flow({"steps": [step("s", "/probe/echo", 1)], "output": {"$step": "s"}}, "f.yaml")
    async with Runtime(make_config(), observers=[outer, middle, Scope("inner", log)]) as runtime:
        with pytest.raises(RuntimeError, match="middle refused the end"):
            await asyncio.wait_for(runtime.run(flow, [None]), GUARD)
    assert log == [
        "outer start", "middle start", "inner start",
        "inner end completed", "middle end completed", "outer end completed",
    ]  # fmt: skip


async def test_retry_gives_up_after_max_retries(h: Harness) -> None:
    flow = {
        "steps": [
            step("s", "/probe/flaky", {"failures": 9}, onError={"action": "retry", "maxRetries": 2})
        ],
        "output": {"$step": "s"},
    }
    assert await h.run1(flow) == {
        "outcome": "failed",
        "error": {"code": "COMPONENT_FAILED", "message": "fail #3"},
    }
    assert len(h.probe.called("s")) == 3


async def test_retry_default_max_retries_is_three(h: Harness) -> None:
    flow = {
        "steps": [
            step(
                "s",
                "/probe/flaky",
                {"failures": 9},
                onError={"action": "retry", "maxRetries": None},
            )
        ],
        "output": {"$step": "s"},
    }
    assert (await h.run1(flow))["error"]["message"] == "fail #4"
    assert len(h.probe.called("s")) == 4


async def test_retry_ignores_non_retryable_codes(h: Harness) -> None:
    flow = {
        "steps": [
            step(
                "s",
                "/probe/flaky",
                {"failures": 1, "code": "INVALID_INPUT"},
                onError={"action": "retry", "maxRetries": 5},
            )
        ],
        "output": {"$step": "s"},
    }
    assert (await h.run1(flow))["error"]["code"] == "INVALID_INPUT"
    assert len(h.probe.called("s")) == 1


async def test_transport_codes_retry_regardless_of_on_error(h: Harness) -> None:
    flow = {
        "steps": [step("s", "/probe/flaky", {"failures": 2, "code": "TIMEOUT"})],
        "output": {"$step": "s"},
    }
    assert await h.run1(flow) == success({"attempt": 3})
    assert h.probe.prepare_retries == 2
    # a third transport failure exceeds transportMaxRetries (2)
    flow["steps"][0]["input"]["failures"] = 3
    result = await h.run1(flow)
    assert result["error"] == {"code": "TIMEOUT", "message": "fail #3"}


async def test_transport_and_component_budgets_are_independent() -> None:
    config = make_config(
        retry={"transportMaxRetries": 1, "backoff": {"type": "constant", "delayMs": 0}}
    )
    flow = parse_flow(
        {
            "steps": [
                step(
                    "s",
                    "/probe/flaky",
                    {"failures": 3, "code": "RESOURCE_UNAVAILABLE"},
                    onError={"action": "retry", "maxRetries": 3},
                )
            ],
            "output": {"$step": "s"},
        }
    )
    async with Runtime(config) as runtime:
        outcome = await runtime.run(flow, [None])
    assert outcome.results[0].to_json() == success({"attempt": 4})


async def test_retry_backoff_uses_the_configured_delays(monkeypatch: pytest.MonkeyPatch) -> None:
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(seconds: float, *args: Any) -> Any:
        delays.append(seconds)
        return await real_sleep(0)

    config = make_config(
        retry={"transportMaxRetries": 0, "backoff": {"type": "fibonacci", "minDelayMs": 100}}
    )
    flow = parse_flow(
        {
            "steps": [
                step(
                    "s",
                    "/probe/flaky",
                    {"failures": 5},
                    onError={"action": "retry", "maxRetries": 5},
                )
            ],
            "output": {"$step": "s"},
        }
    )
    async with Runtime(config) as runtime:
        monkeypatch.setattr("stepflow_mesh.runtime.executor.asyncio.sleep", fake_sleep)
        outcome = await runtime.run(flow, [None])
    assert outcome.results[0].ok
    assert delays == [0.1, 0.1, 0.2, 0.3, 0.5]


# --- the concurrency cap ----------------------------------------------------------------------


async def test_max_concurrency_caps_in_flight_tasks(h: Harness) -> None:
    flow = {
        "steps": [step(f"g{i}", "/probe/gate", i) for i in range(5)],
        "output": [{"$step": f"g{i}"} for i in range(5)],
    }
    run = h.start(flow, [None], max_concurrency=2)
    probe = h.probe
    await probe.wait_until(lambda: probe.in_flight >= 2)
    # every task was dispatched, but only two reached the component
    assert len(h.recorder.of("start")) == 5
    assert probe.in_flight == 2 and len(probe.calls) == 2
    probe.gate.set()
    outcome = await run
    assert outcome.results[0].to_json() == success([0, 1, 2, 3, 4])
    assert probe.max_in_flight == 2
    assert len(probe.calls) == 5


async def test_max_concurrency_spans_batch_items(h: Harness) -> None:
    flow = {"steps": [step("g", "/probe/gate", {"$input": "$"})], "output": {"$step": "g"}}
    run = h.start(flow, [1, 2, 3, 4], max_concurrency=3)
    probe = h.probe
    await probe.wait_until(lambda: probe.in_flight >= 3)
    assert probe.in_flight == 3 and len(probe.calls) == 3
    probe.gate.set()
    outcome = await run
    assert [r.value for r in outcome.results] == [1, 2, 3, 4]
    assert probe.max_in_flight == 3


async def test_a_step_waiting_on_its_sub_run_does_not_hold_a_slot(h: Harness) -> None:
    inner = {"steps": [step("g", "/probe/gate", {"$input": "$"})], "output": {"$step": "g"}}
    flow = {
        "steps": [
            step("m", "/builtin/map", {"workflow": {"$literal": inner}, "items": [1, 2, 3, 4]})
        ],
        "output": {"$step": "m", "path": "successful"},
    }
    run = h.start(flow, [None], max_concurrency=2)
    probe = h.probe
    # the map step itself is waiting, yet two sub-run tasks are in flight under a cap of 2
    await probe.wait_until(lambda: probe.in_flight >= 2)
    assert probe.in_flight == 2
    probe.gate.set()
    outcome = await run
    assert outcome.results[0].to_json() == success(4)
    assert probe.max_in_flight == 2


async def test_cap_of_one_with_nested_sub_runs_does_not_deadlock(h: Harness) -> None:
    inner = {"steps": [step("e", "/probe/echo", {"$input": "$"})], "output": {"$step": "e"}}
    outer = {
        "steps": [
            step("m", "/builtin/map", {"workflow": {"$literal": inner}, "items": {"$input": "$"}})
        ],
        "output": {"$step": "m", "path": "results"},
    }
    flow = {
        "steps": [
            step("top", "/builtin/map", {"workflow": {"$literal": outer}, "items": [[1, 2], [3]]})
        ],
        "output": {"$step": "top", "path": "successful"},
    }
    assert await h.run1(flow, max_concurrency=1) == success(2)
    assert sorted(c.input for c in h.probe.calls) == [1, 2, 3]


async def test_map_max_concurrency_limits_its_sub_run(h: Harness) -> None:
    inner = {"steps": [step("g", "/probe/gate", {"$input": "$"})], "output": {"$step": "g"}}
    flow = {
        "steps": [
            step(
                "m",
                "/builtin/map",
                {"workflow": {"$literal": inner}, "items": [1, 2, 3], "max_concurrency": 1},
            )
        ],
        "output": {"$step": "m", "path": "successful"},
    }
    run = h.start(flow, [None], max_concurrency=10)
    probe = h.probe
    await probe.wait_until(lambda: probe.in_flight >= 1)
    assert len(probe.calls) == 1
    probe.gate.set()
    assert (await run).results[0].to_json() == success(3)
    assert probe.max_in_flight == 1


# --- batches ----------------------------------------------------------------------------------


async def test_batch_items_are_independent(h: Harness) -> None:
    flow = {
        "steps": [step("s", "/probe/echo", {"v": {"$input": "v"}})],
        "output": {"$step": "s", "path": "v"},
    }
    outcome = await h.run(flow, [{"v": 1}, {"nope": 0}, {"v": [3]}, {"v": None}])
    assert outcome.status == "failed"
    assert [r.to_json() for r in outcome.results] == [
        success(1),
        {
            "outcome": "failed",
            "error": {"code": "EXPRESSION_FAILURE", "message": "Input path $.v not found"},
        },
        success([3]),
        success(None),
    ]
    assert sorted(c.item_index for c in h.probe.calls) == [0, 2, 3]
    items = h.recorder.of("item")
    assert sorted(e.item for e in items if e.item is not None) == [0, 1, 2, 3]
    assert h.recorder.events[-1].kind == "run" and h.recorder.events[-1].step_id == "failed"


async def test_batch_all_successful_is_completed(h: Harness) -> None:
    flow = {"steps": [step("s", "/probe/echo", {"$input": "$"})], "output": {"$step": "s"}}
    inputs = list(range(6))
    outcome = await h.run(flow, inputs)
    assert outcome.status == "completed"
    assert [r.value for r in outcome.results] == inputs
    assert len({c.task_id for c in h.probe.calls}) == 6
    assert {c.run_id for c in h.probe.calls} == {outcome.run_id}
    assert h.recorder.runs[0].run_id == outcome.run_id


async def test_empty_batch(h: Harness) -> None:
    outcome = await h.run({"output": 1}, [])
    assert outcome.results == [] and outcome.status == "completed"


# --- variables --------------------------------------------------------------------------------

VARIABLE_SCHEMA = {
    "type": "object",
    "properties": {
        "variables": {
            "type": "object",
            "properties": {
                "model": {"type": "string", "default": "gpt-x"},
                "temperature": {"type": "number"},
                "verbose": {"type": "boolean"},
                "label": {"type": "string"},
                "maybe": {"type": ["string", "null"]},
                "api_key": {"type": "string", "is_secret": True},
                "limits": {"type": "object"},
            },
            "required": ["api_key", "label"],
        }
    },
}


async def test_variable_defaults_from_the_schema(h: Harness) -> None:
    flow = {
        "schemas": VARIABLE_SCHEMA,
        "steps": [step("s", "/probe/echo", {"model": {"$variable": "model"}})],
        "output": {
            "step": {"$step": "s"},
            "temperature": {"$variable": "temperature"},
            "verbose": {"$variable": "verbose"},
            "maybe": {"$variable": "maybe"},
            "limits": {"$variable": "limits", "default": {"max": 1}},
        },
    }
    assert await h.run1(flow) == success(
        {
            "step": {"model": "gpt-x"},
            "temperature": 0,
            "verbose": False,
            "maybe": None,
            "limits": {"max": 1},
        }
    )
    supplied = {"model": "m2", "temperature": 0.5, "limits": {"max": 9}}
    result = await h.run1(flow, variables=supplied)
    assert result["result"]["step"] == {"model": "m2"}
    assert result["result"]["temperature"] == 0.5
    assert result["result"]["limits"] == {"max": 9}


async def test_missing_required_variables_fail_only_where_referenced(h: Harness) -> None:
    flow = {
        "schemas": VARIABLE_SCHEMA,
        "steps": [
            step("needs_key", "/probe/echo", {"key": {"$variable": "api_key"}}),
            step("fine", "/probe/echo", {"model": {"$variable": "model"}}),
        ],
        "output": {"$step": "fine"},
    }
    # `api_key` and `label` are required and missing, but nothing the output needs uses them
    assert await h.run1(flow) == success({"model": "gpt-x"})
    flow["output"] = {"$step": "needs_key"}
    assert await h.run1(flow) == {
        "outcome": "failed",
        "error": {"code": "EXPRESSION_FAILURE", "message": "Undefined variable: api_key"},
    }
    assert [c.step_id for c in h.probe.calls] == ["fine"]
    flow["output"] = {"$variable": "label", "default": "fallback"}
    assert await h.run1(flow) == success("fallback")
    assert await h.run1(flow, variables={"label": "given", "api_key": "k"}) == success("given")


def test_env_variables_and_redaction(monkeypatch: pytest.MonkeyPatch) -> None:
    schema = {
        "type": "object",
        "properties": {
            "variables": {
                "properties": {
                    "model": {"type": "string"},
                    "limits": {"type": "object"},
                    "api_key": {"type": "string", "is_secret": True, "env_var": "MY_KEY"},
                    "given": {"type": "string"},
                }
            }
        },
    }
    flow = parse_flow({"schemas": schema})
    monkeypatch.setenv("STEPFLOW_VAR_MODEL", "plain text")
    monkeypatch.setenv("STEPFLOW_VAR_LIMITS", '{"max": 3}')
    monkeypatch.setenv("MY_KEY", "secret")
    monkeypatch.setenv("STEPFLOW_VAR_API_KEY", "not used: env_var wins")
    monkeypatch.setenv("STEPFLOW_VAR_GIVEN", "not used: supplied")
    found = env_variables(flow, {"given": "x"})
    assert found == {"model": "plain text", "limits": {"max": 3}, "api_key": "secret"}
    assert redact(flow, {**found, "other": 1}) == {
        "model": "plain text",
        "limits": {"max": 3},
        "api_key": "[REDACTED]",
        "other": 1,
    }


async def test_sub_runs_receive_no_variables(h: Harness) -> None:
    inner = {"output": {"$variable": "model", "default": "no variables here"}}
    flow = {
        "steps": [step("m", "/builtin/map", {"workflow": {"$literal": inner}, "items": [1]})],
        "output": {"outer": {"$variable": "model"}, "inner": {"$step": "m", "path": "results"}},
    }
    assert await h.run1(flow, variables={"model": "m1"}) == success(
        {"outer": "m1", "inner": [success("no variables here")]}
    )


# --- overrides --------------------------------------------------------------------------------

OVERRIDE_FLOW = {
    "name": "overridable",
    "steps": [
        step("a", "/probe/echo", {"greeting": "hello", "keep": [1, 2]}),
        step(
            "b",
            "/probe/flaky",
            {"failures": 1},
            onError={"action": "useDefault", "defaultValue": "d"},
        ),
    ],
    "output": {"a": {"$step": "a"}, "b": {"$step": "b"}},
}


def test_merge_patch_rfc7396() -> None:
    target = {"a": {"b": 1, "c": [1, 2]}, "d": "x", "e": None}
    patch = {"a": {"b": None, "c": [3], "n": {"m": 1}}, "d": {"z": None}, "f": 2}
    assert merge_patch(target, patch) == {
        "a": {"c": [3], "n": {"m": 1}},
        "d": {},
        "e": None,
        "f": 2,
    }
    assert target == {"a": {"b": 1, "c": [1, 2]}, "d": "x", "e": None}  # not mutated
    assert merge_patch({"a": 1}, [1]) == [1]
    assert merge_patch([1], {"a": None, "b": 1}) == {"b": 1}
    assert merge_patch({"a": 1}, {}) == {"a": 1}


async def test_overrides_change_input_component_and_on_error(h: Harness) -> None:
    flow = parse_flow(OVERRIDE_FLOW, "flow.yaml")
    assert await h.run1(flow) == success({"a": {"greeting": "hello", "keep": [1, 2]}, "b": "d"})
    patched = apply_overrides(
        flow,
        {
            "steps": {
                "a": {"value": {"input": {"greeting": "bonjour", "extra": {"$input": "x"}}}},
                "b": {
                    "$type": "merge_patch",
                    "value": {"onError": None, "component": "/probe/echo"},
                },
            }
        },
    )
    assert patched is not flow
    assert patched.steps_by_id["b"].component == "/probe/echo"
    assert patched.steps_by_id["b"].on_error.action == "fail"
    assert await h.run1(patched, {"x": 5}) == success(
        {"a": {"greeting": "bonjour", "keep": [1, 2], "extra": 5}, "b": {"failures": 1}}
    )
    # the original flow is untouched
    assert flow.steps_by_id["b"].component == "/probe/flaky"
    assert OVERRIDE_FLOW["steps"][0]["input"] == {"greeting": "hello", "keep": [1, 2]}


async def test_override_must_execute(h: Harness) -> None:
    flow = parse_flow({"steps": [step("x", "/probe/echo", 1)], "output": None}, "flow.yaml")
    patched = apply_overrides(flow, {"steps": {"x": {"value": {"mustExecute": True}}}})
    await h.run1(flow)
    assert h.probe.calls == []
    await h.run1(patched)
    assert [c.step_id for c in h.probe.calls] == ["x"]


def test_override_type_defaults_to_merge_patch() -> None:
    flow = parse_flow(OVERRIDE_FLOW, "flow.yaml")
    for override in ({"value": {"input": 1}}, {"$type": None, "value": {"input": 1}}):
        patched = apply_overrides(flow, {"steps": {"a": override}})
        assert patched.steps_by_id["a"].input.resolve(Env(None, {})).value == 1


def test_override_no_change_cases() -> None:
    flow = parse_flow(OVERRIDE_FLOW, "flow.yaml")
    assert apply_overrides(flow, None) is flow
    assert apply_overrides(flow, {}) is flow
    assert apply_overrides(flow, {"steps": {}}) is flow
    assert apply_overrides(flow, {"steps": None}) is flow


@pytest.mark.parametrize(
    ("overrides", "where", "message"),
    [
        (
            {"steps": {"zz": {"value": {}}}},
            "overrides: steps.zz",
            "Step 'zz' not found in workflow",
        ),
        (
            {"steps": {"a": {"$type": "json_patch", "value": {}}}},
            "overrides: steps.a",
            "json_patch",
        ),
        ({"steps": {"a": {"value": [1]}}}, "overrides: steps.a", "needs a 'value' object"),
        ({"steps": {"a": {}}}, "overrides: steps.a", "needs a 'value' object"),
        ({"steps": [1]}, "overrides: steps", "'steps' must map step ids"),
        ([1], "overrides", "overrides must be an object"),
    ],
)
def test_override_errors(overrides: Any, where: str, message: str) -> None:
    flow = parse_flow(OVERRIDE_FLOW, "flow.yaml")
    with pytest.raises(UserError) as info:
        apply_overrides(flow, overrides)
    assert info.value.where == where
    assert message in info.value.message


def test_override_that_breaks_the_step_names_the_field() -> None:
    flow = parse_flow(OVERRIDE_FLOW, "flow.yaml")
    with pytest.raises(UserError) as info:
        apply_overrides(flow, {"steps": {"b": {"value": {"onError": {"action": "explode"}}}}})
    assert info.value.where == "flow.yaml: steps[1] (step 'b').onError.action"


# --- sub-flow builtins --------------------------------------------------------------------------

DOUBLE = {  # a nested flow: echoes its input twice
    "steps": [step("e", "/probe/echo", {"$input": "$"})],
    "output": [{"$step": "e"}, {"$input": "$"}],
}


async def test_map_runs_a_nested_flow_per_item(h: Harness) -> None:
    picky = {
        "steps": [step("e", "/probe/echo", {"$input": "v"})],
        "output": {"$step": "e"},
    }
    flow = {
        "steps": [
            step(
                "m",
                "/builtin/map",
                {"workflow": {"$literal": DOUBLE}, "items": {"$input": "items"}},
            ),
            step(
                "p",
                "/builtin/map",
                {"workflow": {"$literal": picky}, "items": [{"v": 1}, {}, {"v": 3}]},
            ),
            step("empty", "/builtin/map", {"workflow": {"$literal": DOUBLE}, "items": []}),
        ],
        "output": {"m": {"$step": "m"}, "p": {"$step": "p"}, "empty": {"$step": "empty"}},
    }
    result = await h.run1(flow, {"items": ["a", {"b": 1}]})
    assert result == success(
        {
            "m": {
                "results": [success(["a", "a"]), success([{"b": 1}, {"b": 1}])],
                "successful": 2,
                "failed": 0,
            },
            "p": {
                "results": [
                    success(1),
                    {
                        "outcome": "failed",
                        "error": {
                            "code": "EXPRESSION_FAILURE",
                            "message": "Input path $.v not found",
                        },
                    },
                    success(3),
                ],
                "successful": 2,
                "failed": 1,
            },
            "empty": {"results": [], "successful": 0, "failed": 0},
        }
    )
    # sub-run calls belong to a child run of the same tree
    sub_calls = [c for c in h.probe.calls if c.step_id == "e"]
    assert len(sub_calls) == 4
    root_id = h.recorder.runs[0].run_id
    assert all(c.root_run_id == root_id and c.run_id != root_id for c in sub_calls)


async def test_map_rejects_an_invalid_workflow(h: Harness) -> None:
    flow = {
        "steps": [step("m", "/builtin/map", {"workflow": {"steps": "nope"}, "items": [1]})],
        "output": {"$step": "m"},
    }
    result = await h.run1(flow)
    assert result["error"]["code"] == "INVALID_INPUT"
    assert result["error"]["message"].startswith("map: field 'workflow' is not a valid flow")


async def test_eval_runs_a_stored_flow(h: Harness) -> None:
    failing = {"output": {"$input": "missing"}}
    flow = {
        "steps": [
            step("store", "/builtin/put_blob", {"data": {"$literal": DOUBLE}, "blob_type": "flow"}),
            step(
                "run",
                "/builtin/eval",
                {"flow_id": {"$step": "store", "path": "blob_id"}, "input": {"$input": "x"}},
            ),
            step(
                "store_bad",
                "/builtin/put_blob",
                {"data": {"$literal": failing}, "blob_type": "flow"},
            ),
            step(
                "run_bad",
                "/builtin/eval",
                {"flow_id": {"$step": "store_bad", "path": "blob_id"}, "input": {}},
            ),
        ],
        "output": {"ok": {"$step": "run"}, "bad": {"$step": "run_bad", "path": "result"}},
    }
    outcome = await h.run(flow, [{"x": 7}])
    [result] = outcome.results
    assert result.to_json() == success(
        {
            "ok": {"result": success([7, 7]), "run_id": outcome.run_id},
            # a nested failure is returned in `result`, not a step failure
            "bad": {
                "outcome": "failed",
                "error": {
                    "code": "EXPRESSION_FAILURE",
                    "message": "Input path $.missing not found",
                },
            },
        }
    )


async def test_iterate_until_result(h: Harness) -> None:
    body = {  # {stage: "a"} → next {stage: "b", seen: [a]} → next ... → result at "c"
        "steps": [step("e", "/probe/echo", {"$input": "$"})],
        "output": {
            "$if": {"$input": "done"},
            "then": {"result": {"$step": "e", "path": "trail"}},
            "else": {"next": {"$step": "e", "path": "next"}},
        },
    }
    flow = {
        "steps": [
            step(
                "it",
                "/builtin/iterate",
                {"flow": {"$literal": body}, "initial_input": {"$input": "$"}},
            )
        ],
        "output": {"$step": "it"},
    }
    start = {"next": {"next": {"done": True, "trail": ["a", "b"]}}}
    assert await h.run1(flow, start) == success(
        {"result": ["a", "b"], "iterations": 3, "terminated": False}
    )


async def test_iterate_limits_contract_and_failures(h: Harness) -> None:
    forever = {"output": {"next": {"$input": "$"}}}
    neither = {"output": {"other": 1}}
    broken = {"output": {"$input": "absent"}}
    flow = {
        "steps": [
            step(
                "cap",
                "/builtin/iterate",
                {"flow": {"$literal": forever}, "initial_input": 5, "max_iterations": 3},
            ),
            step("bad", "/builtin/iterate", {"flow": {"$literal": neither}, "initial_input": 0}),
            step("fail", "/builtin/iterate", {"flow": {"$literal": broken}, "initial_input": {}}),
        ],
        "output": {"$step": "cap"},
    }
    assert await h.run1(flow) == success({"result": 5, "iterations": 3, "terminated": True})
    flow["output"] = {"$step": "bad"}
    assert await h.run1(flow) == {
        "outcome": "failed",
        "error": {
            "code": "INVALID_INPUT",
            "message": "iterate: Workflow result must contain either 'result' or 'next' field",
        },
    }
    flow["output"] = {"$step": "fail"}
    assert await h.run1(flow) == {
        "outcome": "failed",
        "error": {"code": "EXPRESSION_FAILURE", "message": "Input path $.absent not found"},
    }


async def test_nested_map_inside_iterate(h: Harness) -> None:
    inner = {"output": {"$input": "$"}}
    body = {
        "steps": [
            step(
                "m", "/builtin/map", {"workflow": {"$literal": inner}, "items": {"$input": "items"}}
            )
        ],
        "output": {"result": {"$step": "m", "path": "successful"}},
    }
    flow = {
        "steps": [
            step(
                "it",
                "/builtin/iterate",
                {"flow": {"$literal": body}, "initial_input": {"items": [1, 2, 3]}},
            )
        ],
        "output": {"$step": "it", "path": "result"},
    }
    assert await h.run1(flow) == success(3)
